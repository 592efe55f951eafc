//! Issue 15 item 4: `risk-server --metrics` and `audit serve --metrics`, with the real binaries.
//! A real engine replay drives the risk server and writes a journal; a real ZeroMQ REQ client
//! asks `audit serve` for its records. Each endpoint is scraped over HTTP; its answer must be
//! valid OpenMetrics (`metrics_endpoint::exposition::parse`: `# EOF`, a `# TYPE` for every
//! sample, ...) with the OpenMetrics content type, and its counters must equal what was sent:
//! verdicts by reason equal the decisions the engine journaled, records served equal the
//! records asked for.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use metrics_endpoint::exposition::{parse, scrape, Exposition};

const LIMIT: Duration = Duration::from_secs(60);

/// A loopback port nobody listens on right now (the server binds it a moment later).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Scrapes `addr` until it answers (the server may still be starting), checks the content
/// type, parses the body strictly, and has the reference parser read it too (same families).
fn scrape_valid(test: &str, addr: &str) -> Exposition {
    let t = Instant::now();
    let s = loop {
        match scrape(addr, Duration::from_secs(10)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(t.elapsed() < LIMIT, "{addr} never answered: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(s.content_type, metrics_endpoint::CONTENT_TYPE);
    assert!(s.body.ends_with("# EOF\n"), "{}", s.body);
    let e = parse(&s.body).unwrap_or_else(|e| panic!("not OpenMetrics: {e}\n{}", s.body));
    if let Some(theirs) = reference_openmetrics_families(test, &s.body) {
        let ours: Vec<String> = e
            .families
            .iter()
            .map(|f| format!("{} {}", f.name, f.kind))
            .collect();
        assert_eq!(theirs, ours, "the reference parser reads the same families");
    }
    e
}

fn value(e: &Exposition, name: &str, labels: &[(&str, &str)]) -> u64 {
    e.value(name, labels)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {e:#?}")) as u64
}

/// `--metrics` takes ip:port only, with the engine's message; a bad one exits 2 (usage).
fn refuses_a_bad_address(cmd: &mut Command) {
    let out = run_with_timeout(cmd.args(["--metrics", "localhost:9100"]), LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("\"localhost:9100\" is not ip:port"), "{err}");
}

#[test]
fn risk_server_metrics_count_what_an_engine_replay_sent() {
    const TEST: &str = "risk_server_metrics_count_what_an_engine_replay_sent";
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    write_builtin_limits(&limits);
    refuses_a_bad_address(
        Command::new(other_bin("risk-server"))
            .arg("--config")
            .arg(&limits),
    );

    let metrics = format!("127.0.0.1:{}", free_port());
    let server = RiskServer::start_with(
        &limits,
        "tcp://127.0.0.1:*",
        &["--metrics".as_ref(), metrics.as_ref()],
        None,
    );
    let before = scrape_valid(TEST, &metrics);
    assert_eq!(before.sum("risk_server_verdicts_total"), 0.0);
    assert_eq!(
        before.family("risk_server_verdicts").unwrap().samples.len(),
        orders::Reason::ALL.len(),
        "every reason is exported, zero or not"
    );

    // A real engine replay against it: 1 200 orders, every 7th over the max-qty limit.
    let n = 1_200;
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(n, 7, 0));
    let journal = dir.path().join("journal");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json")).args([
            "--rate",
            "20000",
            "--risk",
            &server.endpoint,
        ]),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut journaled: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (_, d) in decisions(&journal) {
        *journaled.entry(d.reason.as_str()).or_default() += 1;
    }
    assert_eq!(journaled.values().sum::<u64>(), n as u64);
    assert!(journaled["max-qty"] > 0 && journaled["accepted"] > 0);

    let e = scrape_valid(TEST, &metrics);
    assert_eq!(
        value(
            &e,
            "risk_server_orders_checked_total",
            &[("protocol", "binary")]
        ),
        n as u64
    );
    assert_eq!(
        value(
            &e,
            "risk_server_orders_checked_total",
            &[("protocol", "json")]
        ),
        0
    );
    // One verdict per order checked, and by reason exactly what the engine journaled.
    assert_eq!(e.sum("risk_server_verdicts_total") as u64, n as u64);
    for r in orders::Reason::ALL {
        assert_eq!(
            value(&e, "risk_server_verdicts_total", &[("reason", r.as_str())]),
            journaled.get(r.as_str()).copied().unwrap_or(0),
            "reason {}",
            r.as_str()
        );
    }
    let batches = value(&e, "risk_server_batches_total", &[]);
    assert!((1..=n as u64).contains(&batches), "{batches} batches");
    let hellos = value(&e, "risk_server_hello_requests_total", &[]);
    assert!(hellos >= 1, "the engine says hello before its first batch");
    let requests = value(&e, "risk_server_requests_total", &[]);
    assert!(requests >= batches + hellos, "{requests} requests");
    assert!(value(&e, "risk_server_order_id_table_slots", &[]) > 0);
    assert_eq!(e.sum("risk_server_bad_requests_total"), 0.0);

    // A real ZeroMQ client: garbage, one JSON order and one admin request.
    let ctx = zmq::Context::new();
    let ask = |msg: &[u8]| {
        let s = ctx.socket(zmq::REQ).unwrap();
        s.set_linger(0).unwrap();
        s.set_rcvtimeo(10_000).unwrap();
        s.connect(&server.endpoint).unwrap();
        s.send(msg, 0).unwrap();
        s.recv_bytes(0).expect("the risk server answers")
    };
    assert!(ask(b"garbage").starts_with(b"ERROR"));
    let reply = ask(br#"{"symbol":"AAPL","quantity":10,"price":100.5,"account":1}"#);
    let reply = String::from_utf8(reply).unwrap();
    let reason = match reply.as_str() {
        "OK" => "accepted",
        r => r
            .strip_prefix("REJECT ")
            .unwrap_or_else(|| panic!("a verdict, not {r:?}")),
    };
    ask(br#"{"admin":"stats"}"#);
    let after = scrape_valid(TEST, &metrics);
    assert_eq!(
        value(
            &after,
            "risk_server_bad_requests_total",
            &[("why", "malformed")]
        ),
        1
    );
    assert_eq!(
        value(
            &after,
            "risk_server_orders_checked_total",
            &[("protocol", "json")]
        ),
        1
    );
    assert_eq!(
        value(&after, "risk_server_verdicts_total", &[("reason", reason)]),
        journaled.get(reason).copied().unwrap_or(0) + 1,
        "the JSON order's verdict {reason} is counted"
    );
    assert_eq!(after.sum("risk_server_verdicts_total") as u64, n as u64 + 1);
    assert_eq!(value(&after, "risk_server_admin_requests_total", &[]), 1);
    assert_eq!(
        value(&after, "risk_server_requests_total", &[]),
        requests + 3
    );
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn audit_serve_metrics_count_the_records_a_client_fetched() {
    const TEST: &str = "audit_serve_metrics_count_the_records_a_client_fetched";
    let dir = tempfile::tempdir().unwrap();
    refuses_a_bad_address(
        Command::new(other_bin("audit"))
            .arg("serve")
            .arg(dir.path())
            .args(["--bind", "tcp://127.0.0.1:*"]),
    );

    // A journal of n decisions from a real replay.
    let n = 900u64;
    let file = dir.path().join("orders.csv");
    write_orders(&file, &gen_orders(n as usize, 5, 0));
    let journal = dir.path().join("journal");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r.json")),
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let metrics = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(other_bin("audit"))
        .arg("serve")
        .arg(&journal)
        .args(["--bind", "tcp://127.0.0.1:*", "--metrics", &metrics])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let child = Killed(child);
    let line = wait_for_line(&stdout, "listening ", LIMIT);
    let endpoint = line.trim_start_matches("listening ").trim().to_owned();
    let m = wait_for_line(&stdout, "metrics on http://", LIMIT);
    assert_eq!(m, format!("metrics on http://{metrics}/metrics"));

    let before = scrape_valid(TEST, &metrics);
    assert_eq!(value(&before, "audit_serve_requests_total", &[]), 0);

    // A real ZeroMQ client fetches the whole journal in pages of 100 records.
    let ctx = zmq::Context::new();
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_linger(0).unwrap();
    req.set_rcvtimeo(10_000).unwrap();
    req.connect(&endpoint).unwrap();
    let (mut next, mut requests, mut bytes) = (1u64, 0u64, 0u64);
    while next <= n {
        let r = audit::wire::GapRequest {
            from_seq: next,
            to_seq: u64::MAX,
            max_records: 100,
        };
        req.send(&r.encode()[..], 0).unwrap();
        let reply = req.recv_bytes(0).expect("audit serve answers");
        let (h, _) = audit::wire::GapReplyHeader::decode(&reply).unwrap();
        assert_eq!(h.status, audit::wire::STATUS_OK);
        assert_eq!(h.head_seq, n);
        assert!(h.count > 0);
        next += u64::from(h.count);
        requests += 1;
        bytes += reply.len() as u64;
    }
    assert_eq!(requests, n.div_ceil(100));
    // And one request that is not a gap request.
    req.send(&b"short"[..], 0).unwrap();
    let reply = req.recv_bytes(0).unwrap();
    let (h, _) = audit::wire::GapReplyHeader::decode(&reply).unwrap();
    assert_eq!(h.status, audit::wire::STATUS_BAD_REQUEST);
    bytes += reply.len() as u64;

    let e = scrape_valid(TEST, &metrics);
    assert_eq!(value(&e, "audit_serve_requests_total", &[]), requests + 1);
    assert_eq!(value(&e, "audit_serve_records_total", &[]), n);
    assert_eq!(value(&e, "audit_serve_reply_bytes_total", &[]), bytes);
    assert_eq!(
        value(&e, "audit_serve_errors_total", &[("status", "bad-request")]),
        1
    );
    assert_eq!(
        value(
            &e,
            "audit_serve_errors_total",
            &[("status", "journal-error")]
        ),
        0
    );
    assert_eq!(value(&e, "audit_serve_head_seq", &[]), n);
    assert_eq!(
        value(
            &e,
            "audit_serve_connections_total",
            &[("result", "refused")]
        ),
        0
    );
    drop(child);
}
