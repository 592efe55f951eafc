//! `bench baseline` as the suite runs it: the source design against a risk service over tcp,
//! PUSHing each accepted order to a `bench sink` process and PUBlishing an audit event per order
//! that the sink subscribes to, at a fixed open-loop rate.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ORDERS: u64 = 2_000;
const RATE: u64 = 5_000;
/// Far more than the run needs (0.4 s at the rate): past it the baseline hung.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bench"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `child` at most `limit`; kills it and fails if it is still running then.
fn wait_within(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn fixed_rate_baseline_pushes_to_the_sink_and_publishes_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let orders = dir.path().join("orders.bin");
    let st = bench()
        .args(["gen", "--orders", &ORDERS.to_string(), "--accounts", "16"])
        .args(["--symbols", "20", "--seed", "7", "--out"])
        .arg(&orders)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());

    let limits_toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/limits.toml");
    let limits = risk::Limits::from_toml_str(
        &std::fs::read_to_string(&limits_toml).unwrap(),
        "examples/limits.toml",
    )
    .unwrap();
    let ctx = zmq::Context::new();
    let risk_server = risk::spawn_embedded(&ctx, limits, "tcp://127.0.0.1:*").unwrap();
    let risk_ep = risk_server.endpoints()[0].clone();

    let audit_ep = format!("tcp://127.0.0.1:{}", free_port());
    let sink_report = dir.path().join("sink.json");
    let mut sink = bench()
        .args([
            "sink",
            "--bind",
            "tcp://127.0.0.1:*",
            "--audit-sub",
            &audit_ep,
        ])
        .arg("--report")
        .arg(&sink_report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(sink.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let sink_ep = first
        .trim()
        .strip_prefix("sink: bound to ")
        .unwrap_or_else(|| panic!("sink said {first:?}"))
        .to_owned();

    let report = dir.path().join("baseline.json");
    let t = Instant::now();
    let mut baseline = bench()
        .arg("baseline")
        .arg(&orders)
        .args([
            "--risk",
            &risk_ep,
            "--out",
            &sink_ep,
            "--audit-pub",
            &audit_ep,
        ])
        .args(["--rate", &RATE.to_string(), "--report"])
        .arg(&report)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_within(&mut baseline, RUN_LIMIT, "bench baseline --rate");
    assert!(status.success(), "{status:?}");
    let took = t.elapsed();
    // Open loop: order k is due at k / RATE, so the run cannot be shorter than the schedule.
    assert!(
        took >= Duration::from_millis(ORDERS * 1_000 / RATE - 1),
        "paced: {took:?}"
    );

    // Let the last messages arrive, then stop the sink as the suite does.
    std::thread::sleep(Duration::from_millis(300));
    let st = Command::new("kill")
        .args(["-INT", &sink.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = wait_within(&mut sink, Duration::from_secs(10), "bench sink");
    risk_server.stop();

    let b = json(&report);
    assert_eq!(b["baseline"], true);
    assert_eq!(b["schedule"], format!("rate {RATE}/s"));
    assert_eq!(b["orders"], ORDERS);
    assert_eq!(b["audit_events"], ORDERS);
    let accepted = b["accepted"].as_u64().unwrap();
    assert!(
        accepted > ORDERS / 2,
        "most generated orders pass: {accepted}"
    );
    assert!(b["latency_us"]["p50"].as_f64().unwrap() > 0.0);
    assert_eq!(b["egress"]["orders"], accepted);

    let s = json(&sink_report);
    assert!(status.success(), "sink report: {s}");
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(s["json_orders"], accepted, "one message per accepted order");
    assert_eq!(s["unique"], accepted);
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["out_of_order"], 0);
    assert_eq!(s["bad_frames"], 0);
    // PUB drops what was sent before the subscription took effect; the rest must all check.
    let events = s["audit_events"].as_u64().unwrap();
    assert!(events > 0 && events <= ORDERS, "{events}");
    assert_eq!(s["audit_bad_digests"], 0);
}
