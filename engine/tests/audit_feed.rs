//! The live audit feed (`--audit-pub`) end to end with the real binaries: a replay publishes
//! its decision records on a PUB socket over tcp; a real subscriber (`audit tail`, with gap fill
//! from `audit serve` for what the feed missed, e.g. before the subscription took hold) sees
//! every record exactly once, in sequence, with the journal's own hashes, and ends on the
//! journal's head hash.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const RUN_LIMIT: Duration = Duration::from_secs(120);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A loopback port nobody listens on right now (the engine binds it a moment later).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_subscriber_sees_every_decision_once_and_ends_on_the_head_hash() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let n = 4_000;
    let flow = gen_orders(n, 9, 0);
    write_orders(&file, &flow);
    let journal = dir.path().join("journal");
    let feed = format!("tcp://127.0.0.1:{}", free_port());

    // Gap fill from the journal's files (the directory does not exist yet).
    let mut serve = Command::new(other_bin("audit"))
        .arg("serve")
        .arg(&journal)
        .args(["--bind", "tcp://127.0.0.1:*"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let serve_out = lines_of(serve.stdout.take().unwrap());
    let serve = Killed(serve);
    let line = wait_for_line(&serve_out, "listening ", Duration::from_secs(30));
    let serve_ep = line.trim_start_matches("listening ").trim().to_owned();

    // The subscriber, started before the engine binds the feed (it connects when it can).
    let mut tail = Command::new(other_bin("audit"))
        .args(["tail", "--sub", &feed, "--serve", &serve_ep, "--json"])
        .args(["--until-seq", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tail_out = lines_of(tail.stdout.take().unwrap());
    let tail_err = lines_of(tail.stderr.take().unwrap());

    // 4 000 orders at 2 000/s: 2 s of live feed, most of it after the subscription (at
    // 10 000/s a loaded 2-core runner sometimes finished before the subscriber connected).
    let rep = dir.path().join("report.json");
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &rep).args(["--rate", "2000", "--audit-pub", &feed]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&rep);
    assert_eq!(r["journal"]["records"].as_u64(), Some(n as u64));
    let head_hash = r["journal"]["head_hash"].as_str().unwrap().to_owned();

    // The tail ends by itself once record n is verified.
    let t = Instant::now();
    let status = loop {
        if let Some(s) = tail.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(60) {
            let _ = tail.kill();
            let err: Vec<String> = tail_err.try_iter().collect();
            panic!("audit tail did not reach seq {n}: {err:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err: Vec<String> = tail_err.try_iter().collect();
    assert!(status.success(), "audit tail failed: {err:?}");
    drop(serve);

    let mut records = Vec::new();
    let mut summary = None;
    while let Ok(l) = tail_out.recv_timeout(Duration::from_secs(5)) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        if v.get("head_seq").is_some() {
            summary = Some(v);
        } else {
            records.push(v);
        }
    }
    let summary = summary.expect("a summary line");

    // Every decision record exactly once, in sequence, as the journal holds it.
    let reader = audit::Reader::open(&journal).unwrap();
    let journaled: Vec<audit::Record> = reader.iter_from(1).map(|r| r.unwrap()).collect();
    assert_eq!(journaled.len(), n);
    assert_eq!(records.len(), n, "each record once: {summary}");
    for (got, want) in records.iter().zip(&journaled) {
        let d = orders::decode_decision(&want.payload).unwrap();
        assert_eq!(got["seq"].as_u64(), Some(want.seq));
        assert_eq!(got["hash"].as_str(), Some(hex(&want.hash).as_str()));
        assert_eq!(got["kind"].as_u64(), Some(u64::from(audit::KIND_DECISION)));
        assert_eq!(got["input_seq"].as_u64(), Some(d.input_seq));
        assert_eq!(got["order_id"].as_u64(), Some(d.order.order_id));
        assert_eq!(got["reason"].as_str(), Some(d.reason.as_str()));
    }

    // It ends on the journal's head, and the live feed carried most of it.
    assert_eq!(summary["head_seq"].as_u64(), Some(n as u64));
    assert_eq!(summary["head_hash"].as_str(), Some(head_hash.as_str()));
    let live = summary["live_records"].as_u64().unwrap();
    let fetched = summary["fetched_records"].as_u64().unwrap();
    assert_eq!(live + fetched, n as u64, "{summary}");
    assert!(live > 0, "the live feed delivered records: {summary}");
    audit_verify(&journal);
}
