//! `risk-server --recover-from JOURNAL_DIR` rebuilds the state a server that never stopped has.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use orders::{encode_decision, Decision, Order, OrderKind, Reason, Side, DECISION_LEN_BYTES};
use risk::{BatchOutcome, RiskClient};

const AAPL: i64 = 5_853_300;
const MSFT: i64 = 300_000;

/// A stream exercising every piece of state: open orders, fills into positions, partial
/// cancels, the throttle, a halt event, reference moves, rejections.
fn first_stream() -> Vec<Vec<Order>> {
    let mut batches = Vec::new();
    let mut b = Vec::new();
    for i in 0..40u64 {
        let side = if i % 3 == 0 { Side::Sell } else { Side::Buy };
        b.push(new_order(
            1 + i,
            (i % 4) as u32 + 1,
            if i % 2 == 0 { "AAPL" } else { "MSFT" },
            side,
            50 + i * 7,
            if i % 2 == 0 { AAPL } else { MSFT },
        ));
    }
    batches.push(b);
    batches.push(vec![
        event(OrderKind::Fill, 1, "AAPL", 30, AAPL + 1000),
        event(OrderKind::Fill, 2, "MSFT", 57, MSFT - 100),
        event(OrderKind::Cancel, 3, "AAPL", 10, 0),
        event(OrderKind::Cancel, 4, "MSFT", 1000, 0),
        event(OrderKind::Fill, 0, "MSFT", 5, MSFT + 500),
        event(OrderKind::Halt, 0, "AAPL", 0, 0),
        new_order(100, 1, "AAPL", Side::Buy, 1, AAPL), // halted
        new_order(101, 1, "MSFT", Side::Buy, 5000, MSFT), // max qty
        new_order(5, 1, "MSFT", Side::Buy, 1, MSFT),   // duplicate
        event(OrderKind::Cancel, 999, "MSFT", 1, 0),   // unknown
    ]);
    // Burst past the throttle (50 back to back) on account 9.
    batches.push(
        (0..60)
            .map(|i| new_order(200 + i, 9, "MSFT", Side::Buy, 1, MSFT))
            .collect(),
    );
    batches
}

fn second_stream() -> Vec<Vec<Order>> {
    vec![
        vec![
            new_order(1, 1, "AAPL", Side::Buy, 1, AAPL), // duplicate (still remembered)
            new_order(300, 1, "AAPL", Side::Buy, 1, AAPL), // still halted
            event(OrderKind::Resume, 0, "AAPL", 0, 0),
            new_order(301, 1, "AAPL", Side::Buy, 1, AAPL),
            event(OrderKind::Cancel, 1, "AAPL", 5, 0), // open order from before
            event(OrderKind::Fill, 5, "AAPL", 10, AAPL),
            new_order(302, 9, "MSFT", Side::Buy, 1, MSFT), // throttle remembers the burst
            new_order(303, 2, "MSFT", Side::Buy, 1000, MSFT),
            new_order(304, 2, "MSFT", Side::Buy, 1000, MSFT),
            new_order(305, 2, "MSFT", Side::Buy, 1000, MSFT), // position limit (3000)
            new_order(306, 2, "AAPL", Side::Buy, 1, 7_000_000), // collar
        ],
        (400..460)
            .map(|i| new_order(i, 3, "AAPL", Side::Sell, 40, AAPL))
            .collect(),
    ]
}

fn run(client: &mut RiskClient, batches: &[Vec<Order>], now0: u64) -> Vec<(Order, u64, Reason)> {
    let mut all = Vec::new();
    for (i, b) in batches.iter().enumerate() {
        let now = now0 + i as u64 * 1_000_000;
        let mut out = vec![Reason::Accepted; b.len()];
        assert_eq!(client.check_batch(b, now, &mut out), BatchOutcome::Replied);
        all.extend(b.iter().zip(out).map(|(o, r)| (*o, now, r)));
    }
    all
}

#[test]
fn restart_with_recover_from_gives_the_same_verdicts_as_a_server_that_never_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let ctx = zmq::Context::new();
    let live = start(dir.path(), &cfg, &[], 1);
    let mut live_client = RiskClient::connect(
        &ctx,
        &[live.endpoint().to_owned()],
        Duration::from_secs(10),
        128,
    )
    .unwrap();
    let decided = run(&mut live_client, &first_stream(), 1_000_000_000);
    let reasons: Vec<Reason> = decided.iter().map(|d| d.2).collect();
    for want in [
        Reason::Accepted,
        Reason::Halted,
        Reason::MaxQty,
        Reason::DuplicateOrderId,
        Reason::UnknownOrder,
        Reason::RateThrottle,
    ] {
        assert!(
            reasons.contains(&want),
            "the first stream should produce {want:?}: {reasons:?}"
        );
    }

    // The engine's journal: one decision record per event, as the engine writes them.
    let journal = dir.path().join("journal");
    {
        let opts = audit::WriterOptions {
            segment_size_bytes: 1 << 20,
            ..Default::default()
        };
        let (mut w, _) = audit::Writer::open(&journal, opts).unwrap();
        let mut buf = [0u8; DECISION_LEN_BYTES];
        for (i, (order, now, reason)) in decided.iter().enumerate() {
            let d = Decision {
                input_seq: i as u64,
                order: *order,
                reason: *reason,
                t_in_ns: *now,
                // The verdict arrives a round trip after the check: recovery must use the
                // check's time (the batch's `now_ns`), not this one.
                t_decided_ns: *now + 350_000,
                t_checked_ns: *now,
                ..Decision::default()
            };
            encode_decision(&d, &mut buf);
            w.append(audit::KIND_DECISION, *now, &buf).unwrap();
            if i % 10 == 0 {
                // Records of other kinds are skipped by recovery.
                w.append(audit::KIND_ORDER, *now, &buf[8..56]).unwrap();
            }
        }
        w.sync().unwrap();
    }

    let restarted = start(
        dir.path(),
        &cfg,
        &["--recover-from", journal.to_str().unwrap()],
        1,
    );
    let live_snap = admin(&ctx, live.endpoint(), r#"{"admin":"snapshot"}"#);
    let rec_snap = admin(&ctx, restarted.endpoint(), r#"{"admin":"snapshot"}"#);
    assert_eq!(
        rec_snap["snapshot"], live_snap["snapshot"],
        "recovered state differs"
    );
    assert!(
        restarted.stderr().contains("risk state recovered"),
        "{}",
        restarted.stderr()
    );

    let mut rec_client = RiskClient::connect(
        &ctx,
        &[restarted.endpoint().to_owned()],
        Duration::from_secs(10),
        128,
    )
    .unwrap();
    let a = run(&mut live_client, &second_stream(), 1_003_000_000);
    let b = run(&mut rec_client, &second_stream(), 1_003_000_000);
    assert_eq!(
        a, b,
        "verdicts after recovery differ from a server that never stopped"
    );
    let reasons: Vec<Reason> = a.iter().map(|d| d.2).collect();
    for want in [
        Reason::DuplicateOrderId,
        Reason::Halted,
        Reason::PositionLimit,
        Reason::PriceCollar,
        Reason::Accepted,
    ] {
        assert!(
            reasons.contains(&want),
            "the second stream should produce {want:?}: {reasons:?}"
        );
    }
    // A server without the journal would decide differently (the test has teeth).
    let fresh = start(dir.path(), &cfg, &[], 1);
    let mut fresh_client = RiskClient::connect(
        &ctx,
        &[fresh.endpoint().to_owned()],
        Duration::from_secs(10),
        128,
    )
    .unwrap();
    let c = run(&mut fresh_client, &second_stream(), 1_003_000_000);
    assert_ne!(a, c);
}

#[test]
fn damaged_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let journal = dir.path().join("journal");
    {
        let (mut w, _) = audit::Writer::open(
            &journal,
            audit::WriterOptions {
                segment_size_bytes: 1 << 20,
                ..Default::default()
            },
        )
        .unwrap();
        // A decision record whose payload is not a decision.
        w.append(audit::KIND_DECISION, 1, b"not a decision")
            .unwrap();
        w.sync().unwrap();
    }
    let out = std::process::Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .args(["--bind", "tcp://127.0.0.1:*", "--recover-from"])
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("journal record 1") && err.contains("is not a valid decision"),
        "{err}"
    );
}
