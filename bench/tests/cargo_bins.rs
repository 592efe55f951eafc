//! `scripts/cargo-bins.sh`, the way the suite scripts find the workspace's binaries: in the
//! directory cargo's own build messages name, so that `CARGO_TARGET_DIR`, a triple and any
//! cargo config are respected instead of a hard-coded (or derived) `target/release`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs `snippet` in bash at the workspace root after sourcing the helper.
fn run(snippet: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(format!(". scripts/cargo-bins.sh && {snippet}"))
        .current_dir(root())
        .output()
        .expect("bash runs")
}

fn stdout_line(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim_end().to_owned()
}

/// `cargo_bins_dir` builds and prints the directory cargo's own build messages name: here the
/// one this test's `bench` binary was built in, whatever the target directory (the README check
/// runs this suite with `CARGO_TARGET_DIR` outside the clone), triple and profile.
#[test]
fn the_bins_dir_is_the_one_cargo_built_them_in() {
    let profile = if cfg!(debug_assertions) {
        ""
    } else {
        "--release"
    };
    // The caller's CARGO_TARGET_DIR and CARGO_BUILD_TARGET are kept: they are what this test
    // binary was built with.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            ". scripts/cargo-bins.sh && cargo_bins_dir {profile} -p bench --bin bench"
        ))
        .current_dir(root())
        .output()
        .expect("bash runs");
    let built = Path::new(env!("CARGO_BIN_EXE_bench")).parent().unwrap();
    assert_eq!(Path::new(&stdout_line(&o)), built);
}

/// The directory is read from the "executable" fields of cargo's compiler-artifact messages
/// (null for libraries and build scripts), wherever they point; no executable, or
/// executables in two directories, is an error that says so.
#[test]
fn the_dir_comes_from_the_build_messages() {
    let messages = r#"{"reason":"compiler-artifact","target":{"name":"build-script-build"},"executable":null,"fresh":true}
{"reason":"compiler-artifact","target":{"name":"engine"},"executable":"/else where/x86_64-unknown-linux-gnu/release/engine","fresh":false}
{"reason":"compiler-artifact","target":{"name":"bench"},"executable":"/else where/x86_64-unknown-linux-gnu/release/bench","fresh":true}
{"reason":"build-finished","success":true}"#;
    let feed = |m: &str| {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(". scripts/cargo-bins.sh && bins_dir_of_messages")
            .current_dir(root())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), m.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    assert_eq!(
        stdout_line(&feed(messages)),
        "/else where/x86_64-unknown-linux-gnu/release"
    );
    let two = messages.replace("/release/bench", "/debug/bench");
    let o = feed(&two);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("more than one directory"));
    let o = feed(r#"{"reason":"compiler-artifact","executable":null}"#);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no executable"));
}

#[test]
fn missing_binaries_are_named() {
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().to_str().unwrap();
    let o = run(&format!("BIN='{dir}' && require_bins engine bench"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("not built in {dir}: engine bench")),
        "{err}"
    );
}

/// The scripts that run binaries go through the helper, none through a fixed path: every file
/// of `scripts/` (shell and Python alike) and CI's entry point.
#[test]
fn no_script_hard_codes_the_target_directory() {
    let mut scripts: Vec<String> = std::fs::read_dir(root().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh") || n.ends_with(".py"))
        .map(|n| format!("scripts/{n}"))
        .collect();
    scripts.sort();
    scripts.push(".ci/run".to_owned());
    assert!(scripts.len() >= 9, "{scripts:?}");
    for script in &scripts {
        let text = std::fs::read_to_string(root().join(script)).unwrap();
        for (i, l) in text.lines().enumerate() {
            for fixed in ["target/release", "target/debug"] {
                assert!(
                    !l.contains(fixed) || (script == "scripts/cargo-bins.sh" && l.starts_with('#')),
                    "{script}:{}: names {fixed}: {l}",
                    i + 1
                );
            }
            // Nor derives a profile directory itself: the helper takes cargo's word for it.
            for derived in ["/release", "/debug"] {
                assert!(
                    l.trim_start().starts_with('#') || !l.contains(derived),
                    "{script}:{}: builds a path ending in {derived}: {l}",
                    i + 1
                );
            }
        }
    }
    // Nor does a command the docs tell a reader to run.
    let mut docs = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "md") {
                docs.push(p);
            }
        }
    }
    assert!(docs.len() >= 10, "{docs:?}");
    for doc in &docs {
        let text = std::fs::read_to_string(doc).unwrap();
        for (i, l) in text.lines().enumerate() {
            for fixed in [
                "target/release",
                "target/debug",
                "CARGO_TARGET_DIR/release",
                "CARGO_TARGET_DIR/debug",
            ] {
                assert!(
                    !l.contains(fixed),
                    "{}:{}: names {fixed}: {l}",
                    doc.display(),
                    i + 1
                );
            }
        }
    }
    for script in [
        "bench.sh",
        "audit-crash-loop.sh",
        "restart-bench.sh",
        "durability-bench.sh",
        "multihost.sh",
        "readme-check.sh",
    ] {
        let text = std::fs::read_to_string(root().join("scripts").join(script)).unwrap();
        assert!(
            text.contains(". scripts/cargo-bins.sh"),
            "{script} sources the helper"
        );
    }
}
