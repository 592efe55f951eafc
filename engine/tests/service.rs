//! `engine run` as a service with the real binary: binary frames and JSON orders over PULL,
//! garbage skipped and counted, Prometheus metrics, SIGTERM drains and exits 0, a restart
//! continues the journal; a bad config names its keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const START_LIMIT: Duration = Duration::from_secs(30);

struct Service {
    child: Child,
    ingress: String,
    metrics: String,
    stderr: Receiver<String>,
}

fn start_service(config: &Path) -> Service {
    let mut child = Command::new(engine_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let m = wait_for_line(&stderr, "metrics on http://", START_LIMIT);
    let metrics = m
        .split("http://")
        .nth(1)
        .unwrap()
        .trim_end_matches("/metrics")
        .to_owned();
    let i = wait_for_line(&stderr, "ingress bound to ", START_LIMIT);
    let ingress = i
        .split("ingress bound to ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    Service {
        child,
        ingress,
        metrics,
        stderr,
    }
}

fn scrape(addr: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn wait_metric(addr: &str, name: &str, want: u64) -> String {
    let t = Instant::now();
    loop {
        let text = scrape(addr);
        if metric(&text, name) >= want {
            return text;
        }
        assert!(
            t.elapsed() < START_LIMIT,
            "{name} never reached {want}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn stop(mut s: Service) -> (std::process::ExitStatus, Vec<String>) {
    signal(&s.child, Signal::SIGTERM);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < START_LIMIT, "SIGTERM must end the service");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<String> = s.stderr.iter().collect();
    (status, lines)
}

fn order(id: u64) -> orders::Order {
    orders::Order {
        order_id: id,
        ts_ns: 0,
        price: 1_852_500,
        qty: 100,
        account: 7,
        symbol: orders::Symbol::new("AAPL").unwrap(),
        side: orders::Side::Buy,
        kind: orders::OrderKind::New,
    }
}

/// Guarantee 6 (wire): garbage and bad JSON on the PULL socket are counted and skipped, good
/// orders flow, SIGTERM drains and exits 0, and a restart continues the journal.
#[test]
fn frames_and_json_in_garbage_skipped_sigterm_drains_restart_continues() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let sink = Sink::start(
        "tcp://127.0.0.1:*",
        &[
            "--verify-journal",
            journal.to_str().unwrap(),
            "--expect",
            "5",
        ],
        dir.path().join("sink.json"),
    );
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[journal]\ndir = \"{}\"\n[egress]\nconnect = \"{}\"\n[metrics]\nbind = \"127.0.0.1:0\"\n",
            journal.display(),
            sink.endpoint
        ),
    )
    .unwrap();

    let svc = start_service(&config);
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&svc.ingress).unwrap();
    push.send(
        engine::frames::encode_ingress_frame(&[order(1), order(2), order(3)]),
        0,
    )
    .unwrap();
    push.send("this is not an order", 0).unwrap();
    push.send(
        r#"{"order_id":4,"account":7,"symbol":"AAPL","side":"SIDEWAYS","qty":1,"price":1}"#,
        0,
    )
    .unwrap();
    push.send(r#"{"order_id":4,"account":7"#, 0).unwrap();
    let mut bad_frame = engine::frames::encode_ingress_frame(&[order(9)]);
    bad_frame[16 + 44] = 7; // side byte
    push.send(bad_frame, 0).unwrap();
    push.send(
        r#"{"order_id":4,"account":7,"symbol":"AAPL","side":"SELL","qty":5,"price":185.25,"kind":"new"}"#,
        0,
    )
    .unwrap();
    let text = wait_metric(&svc.metrics, "engine_journal_records_total", 4);
    let text = if metric(&text, "engine_ingress_bad_frames_total") < 4 {
        wait_metric(&svc.metrics, "engine_ingress_bad_frames_total", 4)
    } else {
        text
    };
    assert_eq!(
        metric(&text, "engine_ingress_bad_frames_total"),
        4,
        "{text}"
    );
    assert_eq!(metric(&text, "engine_ingress_orders_total"), 4);
    assert!(
        text.contains("engine_decisions_total{reason=\"accepted\"} 4"),
        "{text}"
    );
    assert!(text.contains("engine_ring_depth{ring=\"ingress_risk\"}"));
    let (status, lines) = stop(svc);
    assert!(status.success(), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("bad message")),
        "bad input is logged: {lines:#?}"
    );
    audit_verify(&journal);
    let ds = decisions(&journal);
    assert_eq!(
        ds.iter()
            .map(|(_, d)| (d.input_seq, d.order.order_id))
            .collect::<Vec<_>>(),
        vec![(0, 1), (1, 2), (2, 3), (3, 4)]
    );
    assert_eq!(ds[3].1.order.side, orders::Side::Sell);

    // Restart on the same journal: input_seq and the chain continue.
    let svc = start_service(&config);
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&svc.ingress).unwrap();
    push.send(engine::frames::encode_ingress_frame(&[order(5)]), 0)
        .unwrap();
    wait_metric(&svc.metrics, "engine_journal_records_total", 1);
    let (status, lines) = stop(svc);
    assert!(status.success(), "{lines:#?}");

    audit_verify(&journal);
    let ds = decisions(&journal);
    assert_eq!(ds.len(), 5);
    assert_eq!(ds[4].1.input_seq, 4);
    assert_eq!(ds[4].1.order.order_id, 5);
    // Every accepted order arrived, each matching its journal record; the restart re-sent the
    // accepted tail of the journal (input_seq 0..=3) once more, which the sink counts as
    // duplicates (so it exits 1): at-least-once across restarts, deduplicated by input_seq.
    let (_, s) = sink.finish(Duration::from_secs(30));
    assert_eq!(s["unique"], 5, "{s}");
    assert_eq!(s["journal_mismatches"], 0, "{s}");
    assert_eq!(s["bad_frames"], 0, "{s}");
    assert_eq!(
        s["duplicate_input_seqs"],
        serde_json::json!([0, 1, 2, 3]),
        "{s}"
    );
}

/// Issue 13 item 10: the PULL ingress has `ZMQ_MAXMSGSIZE` (the largest ingress frame), as
/// the other sockets do: libzmq drops a peer announcing a larger message before allocating
/// it, so a 4 MiB message never reaches the engine (no bad frame is counted, no memory is
/// taken), and the service goes on taking orders from others.
#[test]
fn an_oversized_ingress_message_is_dropped_by_libzmq_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[journal]\ndir = \"{}\"\n[metrics]\nbind = \"127.0.0.1:0\"\n",
            journal.display(),
        ),
    )
    .unwrap();
    let svc = start_service(&config);
    let ctx = zmq::Context::new();
    let big = ctx.socket(zmq::PUSH).unwrap();
    big.set_linger(0).unwrap();
    big.connect(&svc.ingress).unwrap();
    big.send(vec![7u8; 4 << 20], 0).unwrap();
    // Give libzmq time to receive (and refuse) it before the good frame comes.
    std::thread::sleep(Duration::from_millis(500));
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.connect(&svc.ingress).unwrap();
    push.send(engine::frames::encode_ingress_frame(&[order(1)]), 0)
        .unwrap();
    let text = wait_metric(&svc.metrics, "engine_journal_records_total", 1);
    assert_eq!(
        metric(&text, "engine_ingress_bad_frames_total"),
        0,
        "the oversized message never reached the engine: {text}"
    );
    let (status, lines) = stop(svc);
    assert!(status.success(), "{lines:#?}");
    assert_eq!(decisions(&journal).len(), 1);
}

/// Guarantee 6 (config): every problem is reported with its key, the exit status is non-zero,
/// and nothing is created.
#[test]
fn a_bad_config_names_every_key_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"127.0.0.1:5555\"\n[risk]\ntimeout_ms = 0\n[journal]\ndir = \"{}\"\ndurability = \"sometimes\"\n[pipeline]\nmax_batch = 0\n",
            journal.display()
        ),
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(engine_bin())
            .arg("run")
            .arg("--config")
            .arg(&config),
        START_LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "ingress.bind",
        "risk.timeout_ms",
        "journal.durability",
        "pipeline.max_batch",
    ] {
        assert!(err.contains(key), "{key} missing from {err}");
    }
    assert!(!journal.exists(), "nothing created");

    std::fs::write(
        &config,
        "[ingress]\nbind = \"tcp://127.0.0.1:*\"\nthreads = 4\n",
    )
    .unwrap();
    let out = run_with_timeout(
        Command::new(engine_bin())
            .arg("run")
            .arg("--config")
            .arg(&config),
        START_LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("threads"), "unknown key named: {err}");

    let out = run_with_timeout(
        Command::new(engine_bin())
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("missing.toml")),
        START_LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}
