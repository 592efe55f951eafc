//! `engine run` as a newcomer meets it (issue 16), with the real binaries:
//! - after an earlier run left a journal, a start with no downstream brings the metrics
//!   endpoint and the ingress up and says, at once and again, that it waits for the sink;
//! - `bench send FILE --to ENDPOINT` feeds the service (binary frames and JSON), and every
//!   order arrives: decided in the journal, the accepted ones at `bench sink`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

const LIMIT: Duration = Duration::from_secs(60);

struct Service {
    child: Child,
    stderr: Receiver<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path) -> Service {
    let mut child = Command::new(engine_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    Service { child, stderr }
}

fn after<'a>(line: &'a str, marker: &str) -> &'a str {
    line.split(marker).nth(1).unwrap()
}

fn scrape(addr: &str) -> String {
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    s
}

fn stop(mut s: Service) -> (std::process::ExitStatus, Vec<String>) {
    signal(&s.child, Signal::SIGTERM);
    let t = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < LIMIT, "SIGTERM must end the service");
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<String> = s.stderr.iter().collect();
    (status, lines)
}

/// Item 3: the README's `engine run` after a replay (a journal with accepted orders) and no
/// sink on the egress endpoint: metrics and ingress answer while the tail waits, and the wait
/// is reported at once and repeated, naming the endpoint.
#[test]
fn run_with_no_sink_answers_metrics_and_reports_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(50, 7, 0));
    let journal = dir.path().join("journal");
    let report = dir.path().join("r.json");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &report).args(["--out", "none"]),
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // Item 5/7: the replay says where its report went and what to do next.
    assert!(
        err.contains(&format!("report written to {}", report.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("next: audit verify {}", journal.display())),
        "{err}"
    );

    let nobody = format!("ipc://{}", dir.path().join("nobody.ipc").display());
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[journal]\ndir = \"{}\"\n[egress]\nconnect = \"{nobody}\"\n[metrics]\nbind = \"127.0.0.1:0\"\n",
            journal.display()
        ),
    )
    .unwrap();
    let svc = start(&config);
    let m = wait_for_line(&svc.stderr, "metrics on http://", LIMIT);
    let metrics = after(&m, "http://").trim_end_matches("/metrics").to_owned();
    let i = wait_for_line(&svc.stderr, "ingress bound to ", LIMIT);
    let ingress = after(&i, "ingress bound to ")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let t = Instant::now();
    let w = wait_for_line(&svc.stderr, "waiting for downstream", LIMIT);
    assert!(w.contains(&nobody), "the wait names the endpoint: {w}");
    assert!(w.contains("bench sink --bind"), "and what to do: {w}");
    // Metrics answer during the wait, and the wait shows in them.
    let text = scrape(&metrics);
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200"),
        "{text}"
    );
    assert!(
        text.contains("engine_egress_backpressure_waits_total"),
        "{text}"
    );
    // The ingress is bound: a sender connects (its messages queue until the pipeline runs).
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(0).unwrap();
    push.connect(&ingress).unwrap();
    // Said again while it keeps waiting.
    let again = wait_for_line(&svc.stderr, "waiting for downstream", LIMIT);
    assert!(again.contains(&nobody), "{again}");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    let (status, lines) = stop(svc);
    assert_eq!(status.code(), Some(0), "an orderly stop: {lines:#?}");
}

/// Item 4: run + `bench send` (binary frames, then JSON) + `bench sink`: every order sent is
/// decided in the journal, and every accepted one arrives at the sink exactly once.
#[test]
fn bench_send_feeds_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let binary = gen_orders(300, 7, 0);
    let json = gen_orders(40, 5, 10_000);
    let accepted = |o: &[orders::Order]| o.iter().filter(|o| o.qty < 1_000_000).count();
    let expect = accepted(&binary) + accepted(&json);
    let (f1, f2) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    write_orders(&f1, &binary);
    write_orders(&f2, &json);
    let sink = Sink::start(
        "tcp://127.0.0.1:*",
        &[
            "--verify-journal",
            journal.to_str().unwrap(),
            "--expect",
            &expect.to_string(),
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
    let svc = start(&config);
    let i = wait_for_line(&svc.stderr, "ingress bound to ", LIMIT);
    let ingress = after(&i, "ingress bound to ")
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    for (file, extra) in [
        (&f1, &["--batch", "64", "--rate", "5000"][..]),
        (&f2, &["--format", "json"][..]),
    ] {
        let out = run_with_timeout(
            Command::new(other_bin("bench"))
                .arg("send")
                .arg(file)
                .args(["--to", &ingress])
                .args(extra),
            LIMIT,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            err.contains(" INFO ") && err.contains(" orders in "),
            "{err}"
        );
        assert!(err.contains("next:"), "{err}");
    }
    let (status, s) = sink.finish(LIMIT);
    assert!(status.success(), "{s}");
    assert_eq!(s["unique"], expect as u64, "{s}");
    assert_eq!(s["journal_mismatches"], 0, "{s}");
    assert_eq!(s["bad_frames"], 0, "{s}");
    let (status, lines) = stop(svc);
    assert!(status.success(), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("bad message")),
        "{lines:#?}"
    );
    audit_verify(&journal);
    let ds = decisions(&journal);
    let ids: Vec<u64> = ds.iter().map(|(_, d)| d.order.order_id).collect();
    let sent: Vec<u64> = binary.iter().chain(&json).map(|o| o.order_id).collect();
    assert_eq!(ids, sent, "every order decided once, in the order sent");
    let prices: Vec<i64> = ds.iter().map(|(_, d)| d.order.price).collect();
    let sent_prices: Vec<i64> = binary.iter().chain(&json).map(|o| o.price).collect();
    assert_eq!(prices, sent_prices);
}

/// A fresh `engine run` (nothing to re-send) whose egress endpoint has no sink: once orders
/// come in and egress cannot hand them on, it says it waits for that downstream (not silence).
#[test]
fn run_says_when_egress_waits_for_an_absent_downstream() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let nobody = format!("ipc://{}", dir.path().join("nobody.ipc").display());
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[journal]\ndir = \"{}\"\n[egress]\nconnect = \"{nobody}\"\n",
            journal.display()
        ),
    )
    .unwrap();
    let svc = start(&config);
    let i = wait_for_line(&svc.stderr, "ingress bound to ", LIMIT);
    let ingress = after(&i, "ingress bound to ")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(0).unwrap();
    push.connect(&ingress).unwrap();
    let orders = gen_orders(20, 0, 0);
    push.send(engine::frames::encode_ingress_frame(&orders), 0)
        .unwrap();
    let w = wait_for_line(&svc.stderr, "waiting for downstream", LIMIT);
    assert!(w.contains(&nobody), "the wait names the endpoint: {w}");
    assert!(w.contains("bench sink --bind"), "and what to do: {w}");
    // Everything was decided and journaled first (persist, then act): only egress waits.
    drop(svc);
    assert_eq!(decisions(&journal).len(), orders.len());
}
