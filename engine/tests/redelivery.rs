//! Redelivery of the journal's tail on a restart (at-least-once), with the real binaries: a
//! restart with no downstream connected waits for it without hanging the process: SIGTERM
//! ends it promptly (exit 0, a clear message, the journal untouched), and a later restart with
//! a downstream delivers every accepted order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const RUN_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_resume_with_no_downstream_waits_and_sigterm_ends_it_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let flow = gen_orders(400, 7, 0);
    write_orders(&file, &flow);
    let journal = dir.path().join("journal");

    // A complete run without downstream: every order decided, accepted ones only journaled.
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r1.json")).args(["--out", "none"]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = decisions(&journal);
    assert_eq!(before.len(), flow.len());
    let accepted: HashSet<u64> = before
        .iter()
        .filter(|(_, d)| d.reason.is_accepted())
        .map(|(_, d)| d.input_seq)
        .collect();
    assert!(!accepted.is_empty() && accepted.len() < flow.len());

    // Resume towards a downstream that is not there (nobody binds this ipc path).
    let nobody = format!("ipc://{}", dir.path().join("nobody.ipc").display());
    let mut child = replay_cmd(&file, &journal, &dir.path().join("r2.json"))
        .args(["--resume", "--out", &nobody])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = lines_of(child.stderr.take().unwrap());
    // The signal handlers are in place before this line (the redelivery starts after it).
    wait_for_line(
        &err,
        "re-sending the accepted orders",
        Duration::from_secs(60),
    );
    // It waits (no downstream) rather than finishing.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "nothing to deliver to: it waits"
    );
    let t = Instant::now();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "SIGTERM did not end the waiting redelivery"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    // Promptly: one egress poll interval (10 ms) plus the exit, with a generous margin.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let stderr: Vec<String> = err.try_iter().collect();
    assert_eq!(status.code(), Some(0), "an orderly stop: {stderr:?}");
    assert!(
        stderr.iter().any(
            |l| l.contains("stopped by signal while re-sending the journal's tail")
                && l.contains("nothing is lost")
        ),
        "{stderr:?}"
    );

    // The journal is untouched: same records, still verifies.
    assert_eq!(decisions(&journal), before);
    audit_verify(&journal);

    // A later restart with a downstream delivers every accepted order.
    let dump = dir.path().join("sink.csv");
    let sink = Sink::start(
        "tcp://127.0.0.1:*",
        &["--dump", dump.to_str().unwrap()],
        dir.path().join("sink.json"),
    );
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r3.json")).args([
            "--resume",
            "--out",
            &sink.endpoint,
        ]),
        RUN_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("re-sent {} accepted orders", accepted.len())),
        "{stderr}"
    );
    signal(&sink.child, nix::sys::signal::Signal::SIGINT);
    let (_status, report) = sink.finish(Duration::from_secs(30));
    assert_eq!(report["duplicates"].as_u64(), Some(0), "{report}");
    let text = std::fs::read_to_string(&dump).unwrap();
    let got: HashSet<u64> = text
        .lines()
        .filter(|l| !l.starts_with("input_seq"))
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, accepted, "every accepted order arrived");
    assert_eq!(decisions(&journal), before, "nothing decided twice");
}

/// `kill -9` while the downstream is stalled, so that accepted orders sit in every buffer
/// between the journal and the sink process (the egress ring, ZeroMQ's send queue, the
/// kernel's send buffer), then `--resume`: the redelivery window covers all of them, and every
/// accepted order reaches the sink (`limits::redelivery_window_records`). With a window of only
/// the ring and a few frames, the orders in ZeroMQ's queue were lost.
#[test]
fn a_kill_while_the_downstream_is_stalled_loses_nothing_after_resume() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orders.csv");
    let n = 40_000;
    let flow = gen_orders(n, 0, 0);
    write_orders(&file, &flow);
    let journal = dir.path().join("journal");
    // The sink takes 1,000 orders, then pulls nothing for 6 s; its kernel buffer is small.
    let sink = Sink::start(
        "tcp://127.0.0.1:*",
        &[
            "--rcvhwm",
            "4",
            "--rcvbuf",
            "65536",
            "--stall-after",
            "1000",
            "--stall-ms",
            "6000",
            "--expect",
            &n.to_string(),
        ],
        dir.path().join("sink.json"),
    );
    let args = [
        "--out",
        &sink.endpoint,
        "--out-hwm",
        "256",
        "--max-batch",
        "64",
        "--ring-capacity",
        "1024",
    ];
    let mut first = replay_cmd(&file, &journal, &dir.path().join("r1.json"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the engine is held up by the stalled sink with its buffers full: the journal
    // stops growing (or 4 s pass).
    let t = Instant::now();
    let mut last = 0;
    let mut still_since = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(100));
        let now = audit::Reader::open(&journal)
            .map(|r| r.iter_from(1).count())
            .unwrap_or(0);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if now > 0 && still_since.elapsed() > Duration::from_millis(500) {
            break;
        }
    }
    signal(&first, nix::sys::signal::Signal::SIGKILL);
    let _ = first.wait();
    let journaled = decisions(&journal).len();
    eprintln!("killed with {journaled} orders journaled, the sink stalled after 1,000");

    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r2.json"))
            .arg("--resume")
            .args(args),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, report) = sink.finish(RUN_LIMIT);
    assert_eq!(decisions(&journal).len(), n, "one decision per order");
    assert_eq!(
        report["unique"], n as u64,
        "every accepted order reached the sink: {report}"
    );
    // Repeats (and so journal_seq going back) are expected after a resume; nothing else.
    assert_eq!(report["missing"], 0u64, "{report}");
    assert_eq!(report["bad_frames"], 0u64, "{report}");
    eprintln!(
        "sink exit {status}: {} orders, {} unique, {} duplicates",
        report["orders"], report["unique"], report["duplicates"]
    );
}
