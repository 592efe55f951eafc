//! `scripts/cargo-bins.sh`, the way the suite scripts find the workspace's binaries: through
//! cargo's own idea of the target directory, so that `CARGO_TARGET_DIR` (and a triple in
//! `CARGO_BUILD_TARGET`) is respected instead of a hard-coded `target/release`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs `snippet` in bash at the workspace root after sourcing the helper, with `env` set and
/// cargo's own target variables cleared first.
fn run(snippet: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(". scripts/cargo-bins.sh && {snippet}"))
        .current_dir(root())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("bash runs")
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

#[test]
fn the_release_dir_follows_cargo_target_dir() {
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().to_str().unwrap();
    let o = run("cargo_release_dir", &[("CARGO_TARGET_DIR", dir)]);
    assert_eq!(stdout_line(&o), format!("{dir}/release"));

    let o = run(
        "cargo_release_dir",
        &[
            ("CARGO_TARGET_DIR", dir),
            ("CARGO_BUILD_TARGET", "x86_64-unknown-linux-gnu"),
        ],
    );
    assert_eq!(
        stdout_line(&o),
        format!("{dir}/x86_64-unknown-linux-gnu/release")
    );
}

#[test]
fn without_cargo_target_dir_it_is_the_workspace_target() {
    let o = run("cargo_release_dir", &[]);
    let got = stdout_line(&o);
    // No cargo config of the repository moves it; a user-level one could, so compare with
    // what cargo itself says rather than assume `target`.
    let meta = Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&meta.stdout).unwrap();
    let target = v["target_directory"].as_str().unwrap();
    assert_eq!(got, format!("{target}/release"));
}

#[test]
fn missing_binaries_are_named() {
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().to_str().unwrap();
    let o = run(
        "BIN=$(cargo_release_dir) && require_bins engine bench",
        &[("CARGO_TARGET_DIR", dir)],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("not built in {dir}/release: engine bench")),
        "{err}"
    );
}

/// The scripts that run binaries go through the helper, none through a fixed path.
#[test]
fn no_script_hard_codes_the_target_directory() {
    let mut scripts: Vec<String> = std::fs::read_dir(root().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sh"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 6, "{scripts:?}");
    for script in &scripts {
        let text = std::fs::read_to_string(root().join("scripts").join(script)).unwrap();
        for (i, l) in text.lines().enumerate() {
            for fixed in ["target/release", "target/debug"] {
                assert!(
                    !l.contains(fixed) || (script == "cargo-bins.sh" && l.starts_with('#')),
                    "{script}:{}: names {fixed}: {l}",
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
