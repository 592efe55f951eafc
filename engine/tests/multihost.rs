//! `scripts/multihost.sh` (docs/operations.md, "Multi-host rehearsal") with the binaries this
//! test was built with: four network namespaces, CURVE on every link, a replay delivered to the
//! sink and the journal fetched over CURVE by `audit tail`. Needs root (network namespaces):
//! elsewhere it skips with a message (and fails under CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn multihost_rehearsal_runs_over_curve_in_network_namespaces() {
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        skip(
            "multihost_rehearsal_runs_over_curve_in_network_namespaces",
            "needs root for ip netns",
        );
        return;
    }
    // The other binaries next to the engine: built with this test's profile.
    let bench = other_bin("bench");
    let bin = bench.parent().unwrap().to_owned();
    for name in ["engine", "risk-server", "audit"] {
        let p = if name == "engine" {
            engine_bin()
        } else {
            other_bin(name)
        };
        assert_eq!(p.parent().unwrap(), bin, "{name} beside bench");
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/multihost.sh");
    let out = run_with_timeout(
        Command::new("bash")
            .arg(&script)
            .args([
                "--orders", "3000", "--rate", "10000", "--delays", "0 50 150",
            ])
            .env("BIN", &bin),
        Duration::from_secs(120),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("SKIP multihost") {
        skip(
            "multihost_rehearsal_runs_over_curve_in_network_namespaces",
            "no ip/tc or network namespaces here",
        );
        return;
    }
    assert!(out.status.success(), "{text}");
    assert!(text.contains("namespaces: 5"), "{text}");
    assert!(text.contains("(CURVE, client list)"), "{text}");
    // Every accepted order reached the sink over CURVE, once.
    let line = text
        .lines()
        .find(|l| l.starts_with("delay   0 ms:"))
        .unwrap_or_else(|| panic!("no result line: {text}"));
    let accepted: u64 = line
        .split("accepted ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(accepted > 0, "{line}");
    assert!(
        line.contains(&format!("sink (CURVE): {accepted} orders, 0 duplicates")),
        "{line}"
    );
    // 50 ms one way (netem, or the relay where the kernel has none): inside the 100 ms
    // timeout, the same verdicts, larger batches. 150 ms: every batch times out within the
    // deadline and every order is rejected.
    let figure = |line: &str, key: &str| -> f64 {
        line.split(&format!("{key} "))
            .nth(1)
            .and_then(|s| s.split([',', ' ']).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {line}"))
    };
    let at = |d: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("delay {d:>3} ms")))
            .unwrap_or_else(|| panic!("no {d} ms line: {text}"))
            .to_owned()
    };
    let (wan, late) = (at("50"), at("150"));
    assert_eq!(figure(&wan, "accepted") as u64, accepted, "{wan}");
    assert_eq!(figure(&wan, "timeouts"), 0.0, "{wan}");
    assert!(
        figure(&wan, "mean batch") > figure(line, "mean batch"),
        "batches grow with the round trip: {line} / {wan}"
    );
    assert_eq!(figure(&late, "accepted"), 0.0, "{late}");
    assert_eq!(figure(&late, "rejected"), 3000.0, "{late}");
    assert!(figure(&late, "timeouts") > 0.0, "{late}");
    assert!(
        figure(&late, "max wait") < 150.0,
        "no wait much past the 100 ms timeout: {late}"
    );
    assert!(
        text.contains("chain verified to record 3000"),
        "audit tail over CURVE: {text}"
    );
    // The namespaces are gone.
    let prefix = text
        .split("prefix ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no prefix: {text}"))
        .to_owned();
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&prefix),
        "namespaces {prefix}* left behind"
    );
    // No service outlives the script (a kill of a backgrounded subshell once left the
    // risk-server and audit serve running, orphaned): none has its work dir on its command
    // line any more.
    let work = text
        .split("work dir: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no work dir: {text}"))
        .to_owned();
    let mut left = Vec::new();
    for _ in 0..50 {
        left = processes_mentioning(&work);
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// Command lines of the running processes that contain `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.parse::<u32>().is_ok());
        if !is_pid {
            continue;
        }
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(cmd);
            }
        }
    }
    found
}
