//! Drop-in migration from the source design (issue 14): the real binaries against Python
//! stand-ins for the source design's components (`tests/legacy/*.py`, pyzmq), one test per
//! migration step. They only know the source design's message shapes, never our binary
//! formats. Without python3 + pyzmq each test skips with a message (fails under `CI=true`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A `python3` that can `import zmq`, or `None` after a skip message.
fn legacy_python(test: &str) -> Option<PathBuf> {
    match Command::new("python3")
        .args([
            "-c",
            "import zmq, sys; sys.exit(0 if hasattr(zmq.Socket, 'recv_into') else 3)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Some(PathBuf::from("python3")),
        Ok(s) if s.code() == Some(3) => {
            skip(
                test,
                "pyzmq is older than 26.4 (no Socket.recv_into): python3 -m pip install -U pyzmq",
            );
            None
        }
        Ok(_) => {
            skip(test, "python3 has no pyzmq: python3 -m pip install pyzmq");
            None
        }
        Err(e) => {
            skip(test, &format!("python3 is not runnable ({e})"));
            None
        }
    }
}

/// A stand-in script of `tests/legacy/`.
fn legacy_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/legacy")
        .join(name)
}

const LIMITS: &str = r#"
[defaults]
max_order_qty = 1000
max_order_notional = 1000000000
max_long_qty = 1000000
max_short_qty = 1000000
credit_limit_notional = 100000000000
collar_bps = 100
[symbols.AAPL]
reference_price = 185.25
[symbols.MSFT]
reference_price = 30.0
"#;

/// The old client's requests: `n` orders; every 5th outside the 1 % collar (`REJECT
/// price-collar`, 19 bytes detailed), every 7th above max_order_qty (`REJECT max-qty`), every
/// 11th with an unknown field (an `ERROR …` detailed); the rest accepted.
/// Returns (requests, expected OK count).
fn old_client_requests(n: usize) -> (String, usize) {
    let mut text = String::new();
    let mut ok = 0;
    for i in 0..n {
        let (sym, px) = if i % 2 == 0 {
            ("AAPL", "185.25")
        } else {
            ("MSFT", "30.1")
        };
        let line = if i % 11 == 10 {
            format!(r#"{{"symbol":"{sym}","quantity":10,"price":{px},"venue":"X"}}"#)
        } else if i % 7 == 6 {
            format!(r#"{{"symbol":"{sym}","quantity":5000,"price":{px}}}"#)
        } else if i % 5 == 4 {
            format!(r#"{{"symbol":"{sym}","quantity":10,"price":999.5}}"#)
        } else {
            ok += 1;
            format!(r#"{{"symbol":"{sym}","quantity":10,"price":{px}}}"#)
        };
        text.push_str(&line);
        text.push('\n');
    }
    (text, ok)
}

/// Step 2 of the migration (the risk service replaced, the old engine kept): the source
/// design's C++ client reads the reply into a 16-byte buffer. With `--json-replies short`
/// every reply is `OK` or `REJECT` and every order is decided once, and the server still
/// counts and logs the reasons; with the default `detailed` replies the same client overflows
/// on `REJECT price-collar`, which is what the flag is for.
#[test]
fn short_json_replies_fit_an_old_clients_16_byte_buffer() {
    let test = "short_json_replies_fit_an_old_clients_16_byte_buffer";
    let Some(python) = legacy_python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let limits = dir.path().join("limits.toml");
    std::fs::write(&limits, LIMITS).unwrap();
    let n = 200;
    let (requests, want_ok) = old_client_requests(n);
    let orders = dir.path().join("orders.jsonl");
    std::fs::write(&orders, requests).unwrap();

    let mut server_err = None;
    let server = RiskServer::start_with(
        &limits,
        "tcp://127.0.0.1:*",
        &["--json-replies".as_ref(), "short".as_ref()],
        Some(&mut server_err),
    );
    let out = run_with_timeout(
        Command::new(&python)
            .arg(legacy_script("old_risk_client.py"))
            .arg(&server.endpoint)
            .arg(&orders)
            .arg("5000"),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "old client failed: {stderr}");
    let counts: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(counts["sent"], n, "{counts}");
    assert_eq!(counts["overflow"], 0, "{counts}");
    assert_eq!(counts["timeout"], 0, "{counts}");
    assert_eq!(counts["ok"], want_ok, "{counts}");
    assert_eq!(counts["reject"], n - want_ok, "{counts}");
    let replies = counts["replies"].as_object().unwrap();
    assert_eq!(
        replies.keys().collect::<Vec<_>>(),
        ["OK", "REJECT"],
        "only OK and REJECT: {counts}"
    );

    // The server decided every order once and kept the reasons.
    let stats = server
        .admin(r#"{"admin":"stats"}"#, Duration::from_secs(10))
        .unwrap();
    let stats = &stats["stats"];
    let malformed = (0..n).filter(|i| i % 11 == 10).count();
    let max_qty = (0..n).filter(|i| i % 11 != 10 && i % 7 == 6).count();
    let collar = (0..n)
        .filter(|i| i % 11 != 10 && i % 7 != 6 && i % 5 == 4)
        .count();
    assert_eq!(stats["malformed"], malformed, "{stats}");
    assert_eq!(stats["json_orders"], n - malformed, "{stats}");
    assert_eq!(stats["verdicts"]["accepted"], want_ok, "{stats}");
    assert_eq!(stats["verdicts"]["max-qty"], max_qty, "{stats}");
    assert_eq!(stats["verdicts"]["price-collar"], collar, "{stats}");
    let err = server_err.unwrap();
    let logged = wait_for_line(&err, "price-collar", Duration::from_secs(10));
    assert!(logged.contains("JSON order rejected"), "{logged}");
    drop(server);

    // The default detailed replies overflow the old client's buffer.
    let server = RiskServer::start(&limits);
    let out = run_with_timeout(
        Command::new(&python)
            .arg(legacy_script("old_risk_client.py"))
            .arg(&server.endpoint)
            .arg(&orders)
            .arg("5000"),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "detailed replies must overflow 16 bytes"
    );
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["overflow"], 1, "{counts}");
}
