//! The journal's filesystem fills mid-replay (a real tmpfs, mounted by the test; skipped with a
//! message where it cannot be mounted): the engine stops with a clear error and a non-zero exit,
//! no SIGBUS, no accepted order reaches the sink without its record, the journal verifies, and
//! after space is freed a resume continues the chain with every order decided exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const RUN_LIMIT: Duration = Duration::from_secs(120);

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_stops_the_engine_cleanly_and_a_resume_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        skip("full-disk test", "cannot mount a tmpfs here (needs root)");
        return;
    }
    let _guard = Mount(mnt.clone());

    // 3 MiB holds at most 3 segments of 1 MiB (~18,700 records of 168 bytes); 60,000 do not fit.
    let n = 60_000;
    let flow = gen_orders(n, 9, 0);
    let file = dir.path().join("orders.csv");
    write_orders(&file, &flow);
    let journal = mnt.join("journal");
    let sink = Sink::start(
        "tcp://127.0.0.1:*",
        &["--verify-journal", journal.to_str().unwrap()],
        dir.path().join("sink.json"),
    );
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r1.json")).args([
            "--segment-size-bytes",
            "1048576",
            "--out",
            &sink.endpoint,
        ]),
        RUN_LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a full journal must fail the run");
    assert_eq!(
        out.status.code(),
        Some(1),
        "an error exit, not a signal: {stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("full") || stderr.contains("No space"),
        "the error says the disk is full: {stderr}"
    );
    // Said once (issue 13 item 17): not in the table and on stderr, not twice in one line.
    let said = format!("{}{stderr}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        said.matches("No space left on device").count(),
        1,
        "the error is printed once: {said}"
    );
    let before = decisions(&journal);
    assert!(
        !before.is_empty() && before.len() < n,
        "stopped mid-stream ({} records)",
        before.len()
    );
    audit_verify(&journal);

    // Free space (grow the filesystem), then resume: the chain continues, nothing twice.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    let out = run_with_timeout(
        replay_cmd(&file, &journal, &dir.path().join("r2.json")).args([
            "--segment-size-bytes",
            "1048576",
            "--resume",
            "--out",
            &sink.endpoint,
        ]),
        RUN_LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    audit_verify(&journal);
    let all = decisions(&journal);
    assert_eq!(all.len(), n, "every order decided exactly once");
    for (i, (seq, d)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(d.input_seq, i as u64);
    }
    assert_eq!(
        &all[..before.len()],
        &before[..],
        "records before the full disk untouched"
    );

    // Nothing reached the sink before its record was in the journal.
    signal(&sink.child, nix::sys::signal::Signal::SIGINT);
    let (_status, report) = sink.finish(Duration::from_secs(30));
    let text = report.to_string();
    assert!(report["journal_checked"].as_u64().unwrap() > 0, "{text}");
    assert_eq!(
        report["journal_mismatches"], 0,
        "every pushed order had its record first: {text}"
    );
    assert_eq!(report["bad_frames"], 0, "{text}");
}

/// Called by the test below in a child process only.
#[test]
#[ignore = "run by a_missing_prerequisite_fails_under_ci_and_says_skip_elsewhere"]
fn skip_probe() {
    skip(
        "skip probe",
        "a prerequisite this probe pretends is missing",
    );
}

/// Issue 13 item 13: a missing prerequisite fails the test under `CI=true` and prints a
/// visible SKIP line elsewhere. Runs this test binary's `skip_probe` in a child with and
/// without `CI=true`.
#[test]
fn a_missing_prerequisite_fails_under_ci_and_says_skip_elsewhere() {
    let exe = std::env::current_exe().unwrap();
    let probe = |ci: Option<&str>| {
        let mut c = Command::new(&exe);
        c.args(["--exact", "skip_probe", "--ignored", "--test-threads", "1"]);
        c.env_remove("CI");
        if let Some(v) = ci {
            c.env("CI", v);
        }
        c.output().unwrap()
    };
    let under_ci = probe(Some("true"));
    assert!(!under_ci.status.success(), "CI=true: the probe fails");
    let elsewhere = probe(None);
    assert!(elsewhere.status.success());
    let err = String::from_utf8_lossy(&elsewhere.stderr);
    assert!(
        err.contains("SKIP skip probe:"),
        "a visible SKIP line: {err}"
    );
}
