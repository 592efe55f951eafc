//! Issue 15 item 3: every binary logs through `tracing`. With `--log-format json` each stderr
//! line is one JSON object (timestamp, level, target, fields.message); `RUST_LOG=warn` drops the
//! info lines; the text format keeps the messages scripts grep; progress bars are drawn on a
//! terminal only, never into a pipe, and never into JSON logs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Each stderr line as a JSON object; panics (naming the line) on one that is not, or that
/// lacks a field every event carries.
fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\nall of it:\n{stderr}"));
            assert!(v.is_object(), "{l}");
            for field in ["timestamp", "level", "target"] {
                assert!(v[field].is_string(), "no {field} in {l}");
            }
            assert!(
                v["fields"]["message"].is_string(),
                "no fields.message in {l}"
            );
            v
        })
        .collect()
}

fn levels(lines: &[serde_json::Value]) -> Vec<&str> {
    lines.iter().map(|v| v["level"].as_str().unwrap()).collect()
}

fn messages(lines: &[serde_json::Value]) -> String {
    lines
        .iter()
        .map(|v| v["fields"]["message"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A 60-order CSV file with one malformed line (skipped with --max-errors 1: a WARN event).
fn order_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("orders.csv");
    write_orders(&file, &gen_orders(60, 7, 0));
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str("61,1,AAPL,BUY,ten,100.5,0,new\n");
    std::fs::write(&file, text).unwrap();
    file
}

fn replay(file: &Path, journal: &Path, format: &str, rust_log: Option<&str>) -> (String, String) {
    let mut cmd = Command::new(engine_bin());
    cmd.args(["--log-format", format, "replay"])
        .arg(file)
        .arg("--journal")
        .arg(journal)
        .args(["--risk", "inline", "--max-errors", "1", "--no-progress"]);
    match rust_log {
        Some(v) => cmd.env("RUST_LOG", v),
        None => cmd.env_remove("RUST_LOG"),
    };
    let out = run_with_timeout(cmd, LIMIT);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    (stdout, stderr)
}

#[test]
fn engine_replay_logs_json_lines_and_rust_log_sets_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let file = order_file(dir.path());

    let (stdout, stderr) = replay(&file, &dir.path().join("j1"), "json", None);
    let lines = json_lines(&stderr);
    let lv = levels(&lines);
    assert!(lv.contains(&"INFO") && lv.contains(&"WARN"), "{lv:?}");
    let text = messages(&lines);
    assert!(
        text.contains("skipped ") && text.contains("line 62"),
        "{text}"
    );
    assert!(text.contains("next: audit verify"), "{text}");
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "INFO" && v["target"] == "engine::app"),
        "{stderr}"
    );
    // The report is the product: still the table on stdout.
    assert!(stdout.contains("orders"), "{stdout}");

    // RUST_LOG=warn: the info lines are gone, the warning stays.
    let (_, stderr) = replay(&file, &dir.path().join("j2"), "json", Some("warn"));
    let lines = json_lines(&stderr);
    assert!(!lines.is_empty(), "the skipped line is a warning");
    assert!(levels(&lines).iter().all(|l| *l == "WARN"), "{stderr}");

    // RUST_LOG by target: the hints alone are hidden (scripts/bench.sh's nohint).
    let (_, stderr) = replay(&file, &dir.path().join("j3"), "json", Some("info,hint=off"));
    let text = messages(&json_lines(&stderr));
    assert!(!text.contains("next:"), "{text}");
    assert!(text.contains("threading "), "{text}");

    // The default text format: one line per event, level and message, no colour in a pipe.
    let (_, stderr) = replay(&file, &dir.path().join("j4"), "text", None);
    assert!(!stderr.contains('\x1b'), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("skipped ")),
        "{stderr}"
    );
    assert!(stderr.lines().any(|l| l.contains(" INFO ")), "{stderr}");
    let (_, stderr) = replay(&file, &dir.path().join("j5"), "text", Some("warn"));
    assert!(!stderr.contains(" INFO "), "{stderr}");
    assert!(stderr.contains(" WARN "), "{stderr}");
}

#[test]
fn the_final_error_is_plain_text_or_one_json_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.csv");
    let journal = dir.path().join("j");
    let run = |format: &str| {
        let out = run_with_timeout(
            Command::new(engine_bin())
                .args(["--log-format", format, "replay"])
                .arg(&missing)
                .arg("--journal")
                .arg(&journal)
                .env_remove("RUST_LOG"),
            LIMIT,
        );
        assert_eq!(out.status.code(), Some(2));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let text = run("text");
    assert!(
        text.starts_with("error: ") && text.contains("missing.csv"),
        "{text}"
    );
    let json = run("json");
    let lines = json_lines(&json);
    let last = lines.last().expect("an error line");
    assert_eq!(last["level"], "ERROR", "{json}");
    let msg = last["fields"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("error: ") && msg.contains("missing.csv"),
        "{json}"
    );

    // A RUST_LOG that does not parse is a usage error that names the variable.
    let out = run_with_timeout(
        Command::new(engine_bin())
            .arg("replay")
            .arg(&missing)
            .env("RUST_LOG", "engine=loud"),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RUST_LOG=\"engine=loud\""), "{err}");
    // And --log-format takes text or json only.
    let out = run_with_timeout(
        Command::new(engine_bin()).args(["--log-format", "xml", "replay", "x"]),
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("text") && err.contains("json"), "{err}");
}

/// A parent that closed its end of the stderr pipe: log lines are dropped, the run goes on and
/// ends with its own exit code (tracing-subscriber's fallback `eprintln!` panicked on the failed
/// write; in `audit serve` that killed the ZAP thread and left clients without an answer).
#[test]
fn a_closed_stderr_costs_the_log_lines_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = order_file(dir.path());
    let run = |args: &[&std::ffi::OsStr]| {
        let mut child = Command::new(engine_bin())
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(t.elapsed() < LIMIT, "the replay must end");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let j = dir.path().join("j");
    let status = run(&[
        "replay".as_ref(),
        file.as_os_str(),
        "--journal".as_ref(),
        j.as_os_str(),
        "--risk".as_ref(),
        "inline".as_ref(),
        "--max-errors".as_ref(),
        "1".as_ref(),
    ]);
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert_eq!(decisions(&j).len(), 60);
    // The final error too: exit code 2, not a panic's 101.
    let missing = dir.path().join("missing.csv");
    let status = run(&["replay".as_ref(), missing.as_os_str()]);
    assert_eq!(status.code(), Some(2), "{status:?}");
}

/// Starts a server that prints `needle` on stdout once bound; stops it with SIGTERM and
/// returns its stderr.
fn serve_then_stop(mut cmd: Command, needle: &str) -> String {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = lines_of(child.stdout.take().unwrap());
    let mut err_pipe = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    wait_for_line(&out, needle, LIMIT);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < LIMIT, "SIGTERM must stop it");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = errs.join().unwrap();
    assert!(status.success(), "{stderr}");
    stderr
}

#[test]
fn risk_server_logs_json_lines_and_rust_log_sets_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    write_builtin_limits(&limits);
    let risk = |rust_log: Option<&str>| {
        let mut cmd = Command::new(other_bin("risk-server"));
        cmd.arg("--config").arg(&limits).args([
            "--bind",
            "tcp://127.0.0.1:*",
            "--log-format",
            "json",
        ]);
        match rust_log {
            Some(v) => cmd.env("RUST_LOG", v),
            None => cmd.env_remove("RUST_LOG"),
        };
        serve_then_stop(cmd, "listening on ")
    };
    let stderr = risk(None);
    let lines = json_lines(&stderr);
    let stopped = lines
        .iter()
        .find(|v| v["fields"]["message"] == "risk-server stopped")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(stopped["level"], "INFO");
    // Structured fields stay fields.
    assert!(stopped["fields"]["requests"].is_u64(), "{stopped}");
    let stderr = risk(Some("warn"));
    assert!(
        json_lines(&stderr).iter().all(|v| v["level"] != "INFO"),
        "{stderr}"
    );
    assert!(!stderr.contains("risk-server stopped"), "{stderr}");
}

#[test]
fn audit_verify_and_serve_log_json_lines_and_rust_log_sets_the_level() {
    let dir = tempfile::tempdir().unwrap();
    let file = order_file(dir.path());
    let journal = dir.path().join("journal");
    replay(&file, &journal, "text", Some("warn"));

    let verify = |rust_log: Option<&str>| {
        let mut cmd = Command::new(other_bin("audit"));
        cmd.args(["verify", "--log-format", "json"]).arg(&journal);
        match rust_log {
            Some(v) => cmd.env("RUST_LOG", v),
            None => cmd.env_remove("RUST_LOG"),
        };
        let out = run_with_timeout(cmd, LIMIT);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        // The verdict is the product, on stdout.
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
        stderr
    };
    let stderr = verify(None);
    let lines = json_lines(&stderr);
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "INFO" && v["target"] == "hint"),
        "{stderr}"
    );
    assert_eq!(verify(Some("warn")), "", "nothing at warn");

    let serve = |rust_log: Option<&str>| {
        let mut cmd = Command::new(other_bin("audit"));
        cmd.args(["--log-format", "json", "serve"])
            .arg(&journal)
            .args(["--bind", "tcp://127.0.0.1:*"]);
        match rust_log {
            Some(v) => cmd.env("RUST_LOG", v),
            None => cmd.env_remove("RUST_LOG"),
        };
        serve_then_stop(cmd, "listening ")
    };
    let stderr = serve(None);
    let text = messages(&json_lines(&stderr));
    assert!(text.contains("stopped after 0 requests"), "{text}");
    let stderr = serve(Some("warn"));
    assert!(
        json_lines(&stderr).iter().all(|v| v["level"] != "INFO"),
        "{stderr}"
    );
    assert!(!stderr.contains("stopped after"), "{stderr}");
}

#[test]
fn bench_logs_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_timeout(
        Command::new(other_bin("bench"))
            .args(["gen", "--orders", "50", "--log-format", "json", "--out"])
            .arg(dir.path().join("o.csv"))
            .env_remove("RUST_LOG"),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("wrote 50 events"),
        "the product stays on stdout"
    );
    let text = messages(&json_lines(&stderr));
    assert!(text.contains("next: engine replay"), "{text}");
}

/// `bench gen` of 70 000 events moves its bar at 65 536. Into a pipe: nothing but log lines;
/// on a terminal (a pty from `script`): the bar, unless the logs are JSON.
#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |out: &str, format: &str| {
        vec![
            other_bin("bench").display().to_string(),
            "--log-format".into(),
            format.into(),
            "gen".into(),
            "--orders".into(),
            "70000".into(),
            "--out".into(),
            dir.path().join(out).display().to_string(),
        ]
    };
    // A pipe.
    let args = gen("a.bin", "text");
    let out = run_with_timeout(
        Command::new(&args[0])
            .args(&args[1..])
            .env_remove("RUST_LOG"),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("events ["),
        "{stderr:?}"
    );
    // engine replay without --no-progress, into a pipe.
    let file = order_file(dir.path());
    let out = run_with_timeout(
        Command::new(engine_bin())
            .arg("replay")
            .arg(&file)
            .arg("--journal")
            .arg(dir.path().join("j"))
            .args(["--risk", "inline", "--max-errors", "1"])
            .env_remove("RUST_LOG"),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains('\r') && !stderr.contains("orders ("),
        "{stderr:?}"
    );

    // A terminal: `script` runs the command on a pty and copies what it wrote.
    let has_script = Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_script {
        skip(
            "progress_is_drawn_on_a_terminal_only",
            "no `script` (util-linux) for a pty",
        );
        return;
    }
    let on_pty = |args: Vec<String>| {
        let out = run_with_timeout(
            Command::new("script")
                .args(["-q", "-e", "-c", &args.join(" "), "/dev/null"])
                .env_remove("RUST_LOG")
                .stdin(Stdio::null()),
            LIMIT,
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tty = on_pty(gen("b.bin", "text"));
    assert!(tty.contains("bench gen: 65536/70000 events"), "{tty:?}");
    let tty = on_pty(gen("c.bin", "json"));
    assert!(
        !tty.contains("65536/70000"),
        "no bar with JSON logs: {tty:?}"
    );
    assert!(tty.contains("\"level\":\"INFO\""), "{tty:?}");
}
