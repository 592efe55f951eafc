//! `engine run` after a crash, as systemd's `Restart=on-failure` does it (docs/operations.md):
//! the same command line, no resume flag. The real binary with a remote `risk-server` takes a
//! stream of orders, is killed with SIGKILL mid-stream, started again unchanged, takes more
//! orders and drains on SIGTERM. The journal continues (sequence and hash chain verified by
//! `audit verify`, the second start reports the records it found) and the risk server agrees
//! with it: its open orders are exactly the journal's accepted orders, which holds only if
//! the restart's hello undid the batches the server decided but the journal never recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use orders::Reason;

const START_LIMIT: Duration = Duration::from_secs(30);

/// Starts `engine run`; returns it, its start-up line and every stderr line before it.
fn start(config: &Path) -> (Child, String, Vec<String>) {
    let mut child = Command::new(engine_bin())
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines_of(child.stderr.take().unwrap());
    let mut before = Vec::new();
    let deadline = Instant::now() + START_LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = stderr.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no start-up line; stderr so far: {before:?}");
        };
        if line.contains("ingress bound to ") {
            // Keep draining stderr so the engine never blocks on a full pipe.
            std::thread::spawn(move || while stderr.recv().is_ok() {});
            return (child, line, before);
        }
        before.push(line);
    }
}

fn ingress_of(line: &str) -> String {
    line.split("ingress bound to ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// Pushes frames of 10 orders (ids from `first`) to `endpoint` until `stop`, one frame per
/// millisecond; returns the next unused id.
fn push_until(endpoint: &str, first: u64, stop: &AtomicBool, max: u64) -> u64 {
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(0).unwrap();
    push.connect(endpoint).unwrap();
    let mut id = first;
    while !stop.load(Ordering::Relaxed) && id < first + max {
        let mut batch = gen_orders(10, 0, id - 1);
        for o in &mut batch {
            o.ts_ns = 0;
        }
        push.send(engine::frames::encode_ingress_frame(&batch), 0)
            .unwrap();
        id += 10;
        std::thread::sleep(Duration::from_millis(1));
    }
    id
}

fn accepted(journal: &Path) -> u64 {
    decisions(journal)
        .iter()
        .filter(|(_, d)| d.reason == Reason::Accepted)
        .count() as u64
}

#[test]
fn a_crashed_engine_run_restarts_unchanged_continues_its_journal_and_agrees_with_risk() {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    write_builtin_limits(&limits);
    let server = RiskServer::start(&limits);
    let journal = dir.path().join("journal");
    let config = dir.path().join("engine.toml");
    std::fs::write(
        &config,
        format!(
            "[ingress]\nbind = \"tcp://127.0.0.1:*\"\n[risk]\nmode = \"remote\"\n\
             endpoints = [\"{}\"]\n[journal]\ndir = \"{}\"\n",
            server.endpoint,
            journal.display()
        ),
    )
    .unwrap();

    // First run: a stream of orders, SIGKILL in the middle of it.
    let (mut first, line, _err) = start(&config);
    assert!(line.contains("(0 records, next input_seq 0)"), "{line}");
    let ingress = ingress_of(&line);
    let stop = Arc::new(AtomicBool::new(false));
    let pusher = {
        let (ingress, stop) = (ingress.clone(), stop.clone());
        std::thread::spawn(move || push_until(&ingress, 1, &stop, 1_000_000))
    };
    let t = Instant::now();
    while decisions_or_empty(&journal) < 300 {
        assert!(t.elapsed() < START_LIMIT, "no decisions in the first run");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL, mid-stream
    first.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    let next_id = pusher.join().unwrap();
    let before = decisions(&journal).len();
    assert!(before >= 300, "{before}");

    // Second run: the same command line, no flag.
    let (mut second, line, earlier) = start(&config);
    assert!(
        line.contains(&format!("({before} records, next input_seq {before})")),
        "continues the journal: {line}"
    );
    // The hello carried the session the journal ends on: the server reconciled (undoing the
    // batches it decided that the journal does not hold, if the kill fell between them).
    assert!(
        earlier
            .iter()
            .any(|l| l.contains("reconciled with the journal (session")),
        "no reconciliation on the restart: {earlier:?}"
    );
    let ingress = ingress_of(&line);
    let never = AtomicBool::new(false);
    let end_id = push_until(&ingress, next_id, &never, 200);
    let t = Instant::now();
    loop {
        let d = decisions(&journal);
        if d.iter().any(|(_, x)| x.order.order_id == end_id - 1) {
            break;
        }
        assert!(
            t.elapsed() < START_LIMIT,
            "the second run decided {}",
            d.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&second, nix::sys::signal::Signal::SIGTERM);
    let status = second.wait().unwrap();
    assert!(status.success(), "drained and exited 0: {status}");

    audit_verify(&journal);
    let all = decisions(&journal);
    for (i, (seq, _)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1, "one chain, no gap");
    }
    let snapshot = server
        .admin(r#"{"admin":"snapshot"}"#, Duration::from_secs(10))
        .expect("the risk server answers");
    let open = snapshot["snapshot"]["open_orders"]
        .as_u64()
        .unwrap_or_else(|| panic!("open_orders in {snapshot}"));
    assert_eq!(
        open,
        accepted(&journal),
        "the server's open orders are the journal's accepted orders"
    );
}

/// The number of decisions in a journal that may not exist yet.
fn decisions_or_empty(journal: &Path) -> usize {
    if !journal.join("journal.lock").exists() {
        return 0;
    }
    audit::Reader::open(journal)
        .map(|r| r.iter_from(1).filter(|r| r.is_ok()).count())
        .unwrap_or(0)
}
