//! Faults with the real binaries: a risk server that stops answering (with and without a
//! second endpoint to fail over to), and a downstream that stops pulling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use orders::Reason;

const RUN_LIMIT: Duration = Duration::from_secs(120);
/// The risk timeout used by these tests.
const TIMEOUT_MS: u64 = 100;
/// Slack for a loaded 2-core machine on top of the timeout.
const SLACK_MS: u64 = 400;

/// Guarantee 4: a risk server stopped (SIGSTOP) mid-replay. The affected orders are rejected
/// risk-timeout, no risk round trip waits longer than the timeout, and the replay completes
/// with one record per order.
fn a_stopped_risk_server_costs_timeouts_not_a_hang(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    write_builtin_limits(&limits);
    let server = RiskServer::start(&limits);
    let file = dir.path().join("orders.csv");
    let flow = gen_orders(3_000, 0, 0);
    write_orders(&file, &flow);
    let journal = dir.path().join("journal");
    let rep = dir.path().join("r.json");
    // 3 000 orders at 3 000/s: ~1 s. The server is stopped after ~0.3 s, for good.
    let mut engine = replay_cmd_in(mode, &file, &journal, &rep)
        .args(["--rate", "3000", "--risk", &server.endpoint])
        .args(["--risk-timeout-ms", &TIMEOUT_MS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&server.child, Signal::SIGSTOP);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = engine.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < RUN_LIMIT, "the replay must complete");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let r = report(&rep);
    assert_eq!(r["orders"], 3_000, "every order decided");
    let timeouts = r["rejected_by_reason"]["risk-timeout"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        timeouts > 0,
        "orders after the stop are rejected risk-timeout: {r}"
    );
    assert!(
        r["accepted"].as_u64().unwrap() > 0,
        "orders before the stop were accepted"
    );
    assert!(r["risk"]["timeouts"].as_u64().unwrap() > 0);
    let wait_max_us = r["risk"]["wait_max_us"].as_f64().unwrap();
    assert!(
        wait_max_us <= ((TIMEOUT_MS + SLACK_MS) * 1_000) as f64,
        "no risk wait beyond the timeout: {wait_max_us} µs"
    );
    audit_verify(&journal);
    let ds = decisions(&journal);
    assert_eq!(ds.len(), 3_000);
    // Once the server stopped, no later order was accepted (only one endpoint).
    let first_timeout = ds
        .iter()
        .position(|(_, d)| d.reason == Reason::RiskTimeout)
        .unwrap();
    assert!(ds[first_timeout..]
        .iter()
        .all(|(_, d)| d.reason == Reason::RiskTimeout));
    assert!(ds
        .iter()
        .enumerate()
        .all(|(i, (_, d))| d.input_seq == i as u64));
}

in_each_threading_mode!(a_stopped_risk_server_costs_timeouts_not_a_hang);

/// With two endpoints, the client fails over: after the first server stops, orders are
/// decided by the second one again.
#[test]
fn a_second_risk_endpoint_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    write_builtin_limits(&limits);
    let first = RiskServer::start(&limits);
    let second = RiskServer::start(&limits);
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(3_000, 0, 0));
    let journal = dir.path().join("journal");
    let rep = dir.path().join("r.json");
    let mut engine = replay_cmd(&file, &journal, &rep)
        .args([
            "--rate",
            "3000",
            "--risk",
            &first.endpoint,
            &second.endpoint,
        ])
        .args(["--risk-timeout-ms", &TIMEOUT_MS.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    signal(&first.child, Signal::SIGSTOP);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = engine.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < RUN_LIMIT);
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let r = report(&rep);
    assert_eq!(r["orders"], 3_000);
    assert!(r["risk"]["failovers"].as_u64().unwrap() >= 1, "{r}");
    let ds = decisions(&journal);
    let first_timeout = ds
        .iter()
        .position(|(_, d)| d.reason == Reason::RiskTimeout)
        .expect("the stop cost at least one batch");
    let accepted_after = ds[first_timeout..]
        .iter()
        .filter(|(_, d)| d.reason.is_accepted())
        .count();
    assert!(
        accepted_after > 0,
        "the second server decides after the failover"
    );
    let wait_max_us = r["risk"]["wait_max_us"].as_f64().unwrap();
    assert!(wait_max_us <= ((TIMEOUT_MS + SLACK_MS) * 1_000) as f64);
    audit_verify(&journal);
}

/// A sink that stops pulling: the engine waits (back-pressure, counted), drops nothing, and
/// finishes once the sink resumes; every accepted order arrives exactly once.
fn a_stalled_sink_makes_the_engine_wait_and_lose_nothing(mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let n = 30_000u64;
    write_orders(&file, &gen_orders(n as usize, 0, 0));
    // ipc keeps kernel buffering small, so the stall reaches the engine quickly.
    let endpoint = format!("ipc://{}", dir.path().join("sink.ipc").display());
    let stall_ms = 1_500u64;
    let sink = Sink::start(
        &endpoint,
        &[
            "--expect",
            &n.to_string(),
            "--stall-after",
            "1000",
            "--stall-ms",
            &stall_ms.to_string(),
            "--rcvhwm",
            "2",
        ],
        dir.path().join("sink.json"),
    );
    let rep = dir.path().join("r.json");
    let t = Instant::now();
    let out = run_with_timeout(
        replay_cmd_in(mode, &file, &dir.path().join("journal"), &rep).args([
            "--out",
            &sink.endpoint,
            "--out-hwm",
            "2",
            "--max-batch",
            "16",
            "--ring-capacity",
            "256",
        ]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, s) = sink.finish(Duration::from_secs(60));
    assert!(status.success(), "{s}");
    let r = report(&rep);
    assert_eq!(r["orders"], n);
    assert_eq!(r["accepted"], n);
    assert_eq!(s["unique"], n, "every accepted order arrived");
    assert_eq!(s["duplicates"], 0);
    assert_eq!(s["out_of_order"], 0);
    assert!(
        r["backpressure_waits"]["egress"].as_u64().unwrap() > 0,
        "egress waited: {}",
        r["backpressure_waits"]
    );
    assert!(
        r["backpressure_waits"]["ingress"].as_u64().unwrap() > 0,
        "the wait reached the ingress: {}",
        r["backpressure_waits"]
    );
    assert!(
        t.elapsed() >= Duration::from_millis(stall_ms),
        "the engine finished only after the sink resumed"
    );
}

in_each_threading_mode!(a_stalled_sink_makes_the_engine_wait_and_lose_nothing);
