//! `bench sink` through the real binary (issue 13 item 17): a plain address in `--allow`, and
//! duplicate deliveries, which fail the run unless `--allow-duplicates` says they are expected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::frames::{EgressEntry, EgressFrameBuilder};
use orders::{Order, Symbol};

/// Starts `bench sink --bind tcp://127.0.0.1:* <extra>` and returns it with its bound endpoint.
fn start_sink(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["sink", "--bind", "tcp://127.0.0.1:*"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(ep) = line.trim().strip_prefix("sink: bound to ") else {
        let _ = child.kill();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!("bench sink {extra:?} did not start: {line:?} {err}");
    };
    (child, ep.to_owned())
}

/// Waits (bounded) for the sink to exit; returns its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench sink did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

/// Sends one egress frame per range of input_seq values.
fn push(endpoint: &str, frames: &[std::ops::Range<u64>]) {
    let ctx = zmq::Context::new();
    let push = ctx.socket(zmq::PUSH).unwrap();
    push.set_linger(5_000).unwrap();
    push.connect(endpoint).unwrap();
    let entry = |seq: u64| EgressEntry {
        input_seq: seq,
        journal_seq: seq + 1,
        order: Order {
            order_id: 100 + seq,
            qty: 1,
            price: 10_000,
            symbol: Symbol::new("AAPL").unwrap(),
            ..Order::default()
        },
    };
    for range in frames {
        let mut b = EgressFrameBuilder::new(8);
        for seq in range.clone() {
            b.push(&entry(seq));
        }
        push.send(b.finish(), 0).unwrap();
    }
}

/// input_seq 0..4, then 2..4 again (a resumed engine re-sending its journal's tail), then 4..6.
const RESENT_TAIL: [std::ops::Range<u64>; 3] = [0..4, 2..4, 4..6];

#[test]
fn a_plain_address_is_allowed() {
    // Refused before with "invalid IP address syntax"; now the host 127.0.0.1/32.
    let (child, ep) = start_sink(&["--allow", "127.0.0.1", "--expect", "6"]);
    push(&ep, &[0..3, 3..6]);
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    // And a malformed entry is refused with the shared parser's message.
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .args([
            "sink",
            "--bind",
            "tcp://127.0.0.1:*",
            "--allow",
            "localhost",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a network"), "{err}");
}

#[test]
fn duplicates_fail_the_run_unless_allowed() {
    let (child, ep) = start_sink(&["--expect", "6"]);
    push(&ep, &RESENT_TAIL);
    let (code, err) = finish(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("2 duplicates (a failure here;") && err.contains("--allow-duplicates"),
        "{err}"
    );
    assert!(err.contains("FAILED"), "{err}");

    let (child, ep) = start_sink(&["--expect", "6", "--allow-duplicates"]);
    push(&ep, &RESENT_TAIL);
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("6 distinct), 2 duplicates (allowed: --allow-duplicates), 0 out of order")
            && err.ends_with("OK\n"),
        "{err}"
    );
}
