//! Tests against the real `risk-server` process over tcp / ipc.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use orders::{OrderKind, Reason, Side};
use risk::protocol::{decode_reply_header, encode_request, request_len_bytes, Status};
use risk::{BatchOutcome, RiskClient, StateSnapshot};

const AAPL: i64 = 5_853_300;
const MSFT: i64 = 300_000;
/// The client's time budget in these tests, and the slack allowed on top of it.
const TIMEOUT: Duration = Duration::from_millis(100);
const SLACK: Duration = Duration::from_millis(400);

fn snapshot(ctx: &zmq::Context, ep: &str) -> StateSnapshot {
    let v = admin(ctx, ep, r#"{"admin":"snapshot"}"#);
    assert_eq!(v["ok"], true, "{v}");
    serde_json::from_value(v["snapshot"].clone()).unwrap()
}

fn position(s: &StateSnapshot, account: u32, symbol: &str) -> (i64, u64, u64) {
    s.positions
        .iter()
        .find(|p| p.account == account && p.symbol == symbol)
        .map_or((0, 0, 0), |p| (p.position, p.open_buy_qty, p.open_sell_qty))
}

#[test]
fn json_binary_and_error_replies_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let server = start(dir.path(), &cfg, &["--max-batch", "4"], 1);
    let ctx = zmq::Context::new();
    let ep = server.endpoint().to_owned();
    assert!(ep.starts_with("tcp://127.0.0.1:"), "{ep}");

    // The source design's JSON mode.
    assert_eq!(
        request_text(
            &ctx,
            &ep,
            br#"{"symbol":"AAPL","quantity":100,"price":585.33}"#
        ),
        "OK"
    );
    assert_eq!(
        request_text(
            &ctx,
            &ep,
            br#"{"symbol":"AAPL","quantity":100,"price":700}"#
        ),
        "REJECT price-collar"
    );
    // Garbage, truncated JSON and empty frames get an error reply, never silence.
    for bad in [&b"garbage"[..], b"{\"symbol\":", b"", b"\x00\xff\x10"] {
        let t = request_text(&ctx, &ep, bad);
        assert!(t.starts_with("ERROR "), "{bad:?} → {t:?}");
    }

    // Binary batches through the client.
    let mut client =
        RiskClient::connect(&ctx, std::slice::from_ref(&ep), Duration::from_secs(5), 4).unwrap();
    let orders = [
        new_order(1, 1, "AAPL", Side::Buy, 1000, AAPL),
        new_order(2, 1, "AAPL", Side::Buy, 1001, AAPL),
        new_order(1, 1, "AAPL", Side::Buy, 10, AAPL),
        event(OrderKind::Cancel, 777, "AAPL", 1, 0),
    ];
    let mut out = [Reason::Accepted; 4];
    assert_eq!(
        client.check_batch(&orders, 1, &mut out),
        BatchOutcome::Replied
    );
    assert_eq!(
        out,
        [
            Reason::Accepted,
            Reason::MaxQty,
            Reason::DuplicateOrderId,
            Reason::UnknownOrder
        ]
    );

    // Oversized (5 orders, server max 4) and truncated binary frames: error replies.
    let five: Vec<_> = (10..15)
        .map(|i| new_order(i, 2, "MSFT", Side::Sell, 1, MSFT))
        .collect();
    let mut frame = vec![0u8; request_len_bytes(5)];
    encode_request(99, 0, &five, &mut frame);
    let s = ctx.socket(zmq::REQ).unwrap();
    s.set_rcvtimeo(10_000).unwrap();
    s.set_linger(0).unwrap();
    s.connect(&ep).unwrap();
    s.send(&frame[..], 0).unwrap();
    let reply = s.recv_bytes(0).unwrap();
    let h = decode_reply_header(&reply).unwrap();
    assert_eq!((h.status, h.batch_id), (Status::TooLarge, 99));
    let n = encode_request(100, 0, &five[..2], &mut frame);
    s.send(&frame[..n - 1], 0).unwrap();
    let reply = s.recv_bytes(0).unwrap();
    assert_eq!(
        decode_reply_header(&reply).unwrap().status,
        Status::Malformed
    );
    // A multi-part request is answered once, with an error.
    s.send_multipart([&b"{}"[..], b"{}"], 0).unwrap();
    assert!(String::from_utf8(s.recv_bytes(0).unwrap())
        .unwrap()
        .starts_with("ERROR multi-part"));
    // … and the server still works.
    assert_eq!(
        client.check_batch(&five[..4], 2, &mut out),
        BatchOutcome::Replied
    );
    assert!(out.iter().all(|r| r.is_accepted()), "{out:?}");

    let stats = admin(&ctx, &ep, r#"{"admin":"stats"}"#);
    assert_eq!(stats["stats"]["malformed"], 6, "{stats}");
    assert_eq!(stats["stats"]["too_large"], 1, "{stats}");
    assert_eq!(stats["stats"]["batches"], 2, "{stats}");
}

#[test]
fn stopped_server_gives_risk_timeout_within_budget_and_client_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let server = start(dir.path(), &cfg, &[], 1);
    let ctx = zmq::Context::new();
    let mut client =
        RiskClient::connect(&ctx, &[server.endpoint().to_owned()], TIMEOUT, 16).unwrap();
    let mut out = [Reason::Accepted; 2];
    let batch = |id| {
        [
            new_order(id, 1, "MSFT", Side::Buy, 1, MSFT),
            new_order(id + 1, 1, "MSFT", Side::Sell, 1, MSFT),
        ]
    };
    // The first batch may race the tcp connect on a busy box: give it a few tries.
    assert!(eventually(Duration::from_secs(20), || {
        client.check_batch(&batch(1_000 + client.stats().timeouts * 2), 1, &mut out)
            == BatchOutcome::Replied
    }));
    assert_eq!(out, [Reason::Accepted; 2]);

    server.signal(Signal::SIGSTOP);
    for round in 0..3u64 {
        let t = Instant::now();
        let r = client.check_batch(&batch(10 + 2 * round), 2, &mut out);
        let took = t.elapsed();
        assert_eq!(r, BatchOutcome::TimedOut);
        assert_eq!(out, [Reason::RiskTimeout; 2]);
        assert!(took >= TIMEOUT, "returned before the timeout: {took:?}");
        assert!(
            took < TIMEOUT + SLACK,
            "blocked {took:?}, budget {TIMEOUT:?}"
        );
    }
    assert_eq!(client.stats().timeouts, 3);
    assert_eq!(client.stats().failovers, 0, "one endpoint: no failover");

    server.signal(Signal::SIGCONT);
    // Fresh ids: the timed-out batches may have been applied once the server resumed.
    let mut id = 100;
    assert!(
        eventually(Duration::from_secs(20), || {
            id += 2;
            client.check_batch(&batch(id), 3, &mut out) == BatchOutcome::Replied
        }),
        "the client did not recover after SIGCONT"
    );
    assert_eq!(out, [Reason::Accepted; 2]);
    // And keeps working.
    assert_eq!(
        client.check_batch(&batch(500), 4, &mut out),
        BatchOutcome::Replied
    );
    assert_eq!(out, [Reason::Accepted; 2]);
}

#[test]
fn client_fails_over_to_the_second_server_when_the_first_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let mut first = start(dir.path(), &cfg, &[], 1);
    let second = start(dir.path(), &cfg, &[], 1);
    let ctx = zmq::Context::new();
    let eps = vec![first.endpoint().to_owned(), second.endpoint().to_owned()];
    let mut client = RiskClient::connect(&ctx, &eps, TIMEOUT, 16).unwrap();
    let mut out = [Reason::Accepted; 1];
    let o = |id| [new_order(id, 1, "MSFT", Side::Buy, 1, MSFT)];
    assert!(eventually(Duration::from_secs(20), || {
        client.endpoint() == eps[0]
            && client.check_batch(&o(1), 1, &mut out) == BatchOutcome::Replied
    }));
    assert_eq!(client.endpoint(), eps[0]);

    first.signal(Signal::SIGKILL);
    first.wait_exit(Duration::from_secs(10));
    let t = Instant::now();
    assert_eq!(
        client.check_batch(&o(2), 2, &mut out),
        BatchOutcome::TimedOut
    );
    assert!(t.elapsed() < TIMEOUT + SLACK, "{:?}", t.elapsed());
    assert_eq!(out, [Reason::RiskTimeout]);
    assert_eq!(client.endpoint(), eps[1]);
    assert_eq!(client.stats().failovers, 1);
    assert!(eventually(Duration::from_secs(20), || {
        client.check_batch(&o(3), 3, &mut out) == BatchOutcome::Replied
    }));
    assert_eq!(out, [Reason::Accepted]);
    let stats = admin(&ctx, &eps[1], r#"{"admin":"stats"}"#);
    assert_eq!(
        stats["stats"]["batch_orders"], 1,
        "the second server answered: {stats}"
    );
}

#[test]
fn sighup_reload_changes_a_limit_without_losing_positions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let server = start(dir.path(), &cfg, &[], 1);
    let ctx = zmq::Context::new();
    let ep = server.endpoint().to_owned();
    let mut client =
        RiskClient::connect(&ctx, std::slice::from_ref(&ep), Duration::from_secs(5), 16).unwrap();
    let mut out = [Reason::Accepted; 3];
    let batch = [
        new_order(1, 1, "MSFT", Side::Buy, 500, MSFT),
        event(OrderKind::Fill, 1, "MSFT", 200, MSFT),
        new_order(2, 1, "MSFT", Side::Buy, 20, MSFT),
    ];
    assert_eq!(
        client.check_batch(&batch, 1, &mut out),
        BatchOutcome::Replied
    );
    assert_eq!(out, [Reason::Accepted; 3]);
    let before = snapshot(&ctx, &ep);
    assert_eq!(position(&before, 1, "MSFT"), (200, 320, 0));

    write_limits(
        dir.path(),
        &LIMITS.replace("max_order_qty = 1000", "max_order_qty = 10"),
    );
    server.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(20), || {
            admin(&ctx, &ep, r#"{"admin":"stats"}"#)["stats"]["reloads"] == 1
        }),
        "no reload seen; stderr:\n{}",
        server.stderr()
    );
    let after = snapshot(&ctx, &ep);
    assert_eq!(
        after.positions, before.positions,
        "positions survive the reload"
    );
    assert_eq!(
        after.accounts, before.accounts,
        "exposure survives the reload"
    );
    let mut out = [Reason::Accepted; 3];
    let batch = [
        new_order(3, 1, "MSFT", Side::Buy, 11, MSFT),
        new_order(4, 1, "MSFT", Side::Buy, 10, MSFT),
        new_order(1, 1, "MSFT", Side::Buy, 1, MSFT),
    ];
    assert_eq!(
        client.check_batch(&batch, 2, &mut out),
        BatchOutcome::Replied
    );
    assert_eq!(
        out,
        [Reason::MaxQty, Reason::Accepted, Reason::DuplicateOrderId]
    );

    // A broken file on SIGHUP: logged, the last good limits stay.
    write_limits(dir.path(), "[defaults]\nmax_order_qty = -1\n");
    server.signal(Signal::SIGHUP);
    assert!(eventually(Duration::from_secs(20), || {
        admin(&ctx, &ep, r#"{"admin":"stats"}"#)["stats"]["reload_failures"] == 1
    }));
    assert!(
        server.stderr().contains("defaults.max_order_qty"),
        "{}",
        server.stderr()
    );
    let mut out = [Reason::Accepted; 1];
    assert_eq!(
        client.check_batch(&[new_order(5, 1, "MSFT", Side::Buy, 11, MSFT)], 3, &mut out),
        BatchOutcome::Replied
    );
    assert_eq!(out, [Reason::MaxQty]);
}

#[test]
fn sigterm_and_sigint_stop_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = start(dir.path(), &cfg, &[], 1);
        server.signal(sig);
        let st = server.wait_exit(Duration::from_secs(10));
        assert!(st.success(), "{sig}: {st:?}\n{}", server.stderr());
        assert!(
            server.stderr().contains("risk-server stopped"),
            "{}",
            server.stderr()
        );
        // Issue 16: stderr is a pipe here, not a terminal: no colour codes in the log.
        assert!(
            !server.stderr().contains('\x1b'),
            "colour codes in a redirected log: {:?}",
            server.stderr()
        );
    }
}

#[test]
fn binds_ipc_and_several_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let ipc = format!("ipc://{}/risk.sock", dir.path().display());
    let server = start(
        dir.path(),
        &cfg,
        &["--bind", &ipc, "--bind", "tcp://127.0.0.1:*"],
        2,
    );
    assert_eq!(server.endpoints[0], ipc);
    assert!(server.endpoints[1].starts_with("tcp://127.0.0.1:"));
    let ctx = zmq::Context::new();
    for ep in &server.endpoints {
        assert_eq!(admin(&ctx, ep, r#"{"admin":"stats"}"#)["ok"], true);
    }
}

#[test]
fn bad_config_exits_non_zero_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(
        dir.path(),
        "[defaults]\nmax_order_qty = 0\nmax_order_notional = 1\nmax_long_qty = 1\nmax_short_qty = 1\ncredit_limit_notional = 1\n[accounts.7]\nmax_long_qty = -3\n",
    );
    let out = std::process::Command::new(bin())
        .args(["--config"])
        .arg(&cfg)
        .args(["--bind", "tcp://127.0.0.1:*"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("defaults.max_order_qty: must be > 0"), "{err}");
    assert!(
        err.contains("accounts.7.max_long_qty: must be in 0..="),
        "{err}"
    );
    assert!(err.contains("limits.toml"), "{err}");

    let out = std::process::Command::new(bin())
        .args(["--config", "/nonexistent/limits.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read limits file /nonexistent/limits.toml"),
        "{err}"
    );

    let good = write_limits(dir.path(), LIMITS);
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&good)
        .args([
            "--bind",
            "tcp://127.0.0.1:*",
            "--recover-from",
            "/nonexistent/journal",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("recovering risk state from /nonexistent/journal"),
        "{err}"
    );

    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&good)
        .args(["--bind", "nonsense://x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nonsense://x") && err.contains("binding"),
        "names the endpoint: {err}"
    );
}

#[test]
fn help_explains_every_flag() {
    let out = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--bind",
        "--recover-from",
        "--max-batch",
        "SIGHUP",
        "listening on",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn remote_bind_without_authentication_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["--bind", "tcp://0.0.0.0:*"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "must refuse to start");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure"), "names the way out: {err}");
}

#[test]
fn plain_credentials_refuse_wrong_passwords_and_serve_right_ones() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let creds = dir.path().join("users");
    std::fs::write(&creds, "engine:correct-horse\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let server = start(
        dir.path(),
        &cfg,
        &["--plain-credentials", creds.to_str().unwrap()],
        1,
    );
    let ctx = zmq::Context::new();
    let ask = |user: &str, pass: &str| -> Option<String> {
        let s = ctx.socket(zmq::REQ).unwrap();
        s.set_linger(0).unwrap();
        zauth::ClientAuth {
            plain: Some((user.into(), pass.into())),
            ..zauth::ClientAuth::default()
        }
        .apply(&s)
        .unwrap();
        s.connect(server.endpoint()).unwrap();
        s.send(&br#"{"symbol":"AAPL","quantity":1,"price":185.25}"#[..], 0)
            .unwrap();
        (s.poll(zmq::POLLIN, 1_500).unwrap() > 0)
            .then(|| String::from_utf8(s.recv_bytes(0).unwrap()).unwrap())
    };
    assert_eq!(
        ask("engine", "battery-staple"),
        None,
        "wrong password refused"
    );
    let reply = ask("engine", "correct-horse").expect("right password served");
    assert!(reply == "OK" || reply.starts_with("REJECT"), "{reply}");
}

/// Item 5 of issue 13: a client whose batches may be larger than the server's `--max-batch`
/// learns the bound from a hello and lowers its own; a batch above the bound (a client that
/// did not ask, or ignored it) is `Refused`, never a silent `risk-error`, with a text naming
/// both bounds, and nothing is applied.
#[test]
fn the_batch_bound_is_learned_by_a_hello_and_a_larger_batch_is_refused_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let server = start(dir.path(), &cfg, &["--max-batch", "4"], 1);
    let ep = server.endpoint().to_owned();
    let ctx = zmq::Context::new();
    let six: Vec<_> = (1..=6)
        .map(|i| new_order(i, 1, "AAPL", Side::Buy, 1, AAPL))
        .collect();
    let mut out = [Reason::Accepted; 6];

    let mut blind =
        RiskClient::connect(&ctx, std::slice::from_ref(&ep), Duration::from_secs(5), 16).unwrap();
    assert_eq!(blind.check_batch(&six, 1, &mut out), BatchOutcome::Refused);
    let why = blind.refusal();
    assert!(
        why.contains("6 orders") && why.contains("(4 orders)") && why.contains("up to 16"),
        "{why}"
    );
    assert_eq!(snapshot(&ctx, &ep).open_orders, 0, "nothing applied");

    let mut client =
        RiskClient::connect(&ctx, std::slice::from_ref(&ep), Duration::from_secs(5), 16).unwrap();
    let hello = client
        .hello(&ep, risk::JournalPoint::default(), Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        (hello.max_batch, hello.outcome, hello.voided),
        (4, risk::VoidOutcome::Voided, 0)
    );
    assert_eq!(client.max_batch(), 4);
    assert_eq!(
        client.check_batch(&six, 2, &mut out),
        BatchOutcome::Refused,
        "above the learned bound: refused before sending"
    );
    for chunk in six.chunks(client.max_batch()) {
        let mut out = vec![Reason::RiskError; chunk.len()];
        assert_eq!(
            client.check_batch(chunk, 3, &mut out),
            BatchOutcome::Replied
        );
        assert!(out.iter().all(|r| r.is_accepted()), "{out:?}");
    }
    assert_eq!(snapshot(&ctx, &ep).open_orders, 6);
    let stats = admin(&ctx, &ep, r#"{"admin":"stats"}"#);
    assert_eq!(stats["stats"]["hello_requests"], 1, "{stats}");
    assert_eq!(stats["stats"]["too_large"], 1, "{stats}");
}
