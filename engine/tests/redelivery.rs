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
