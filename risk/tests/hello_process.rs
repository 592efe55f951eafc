//! The hello request against the real `risk-server` over tcp (issue 13, item 15): a client
//! that resumes a journal names the session the journal ends on, the last batch it holds and
//! how many of that batch's orders; the server undoes what came after, so that its state equals
//! that of a server rebuilt with `--recover-from` from the journal, and refuses the old
//! session's batches from then on. What it can no longer undo is `too-old`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use orders::{encode_decision, Decision, Order, Reason, Side, DECISION_LEN_BYTES};
use risk::{BatchOutcome, JournalPoint, RiskClient, VoidOutcome};

const AAPL: i64 = 5_853_300;
const MSFT: i64 = 300_000;
const WAIT: Duration = Duration::from_secs(10);

fn batch(first_id: u64, n: u64) -> Vec<Order> {
    (0..n)
        .map(|i| {
            let (sym, px) = if i % 2 == 0 {
                ("AAPL", AAPL)
            } else {
                ("MSFT", MSFT)
            };
            new_order(first_id + i, (i % 3) as u32 + 1, sym, Side::Buy, 10 + i, px)
        })
        .collect()
}

/// Writes the decisions a journal holds: `(order, reason)` at time `now` each.
fn write_journal(dir: &std::path::Path, held: &[(Order, Reason, u64)]) {
    let opts = audit::WriterOptions {
        segment_size_bytes: 1 << 20,
        ..Default::default()
    };
    let (mut w, _) = audit::Writer::open(dir, opts).unwrap();
    let mut buf = [0u8; DECISION_LEN_BYTES];
    for (i, (order, reason, now)) in held.iter().enumerate() {
        let d = Decision {
            input_seq: i as u64,
            order: *order,
            reason: *reason,
            t_in_ns: *now,
            t_decided_ns: *now,
            t_checked_ns: *now,
            ..Decision::default()
        };
        encode_decision(&d, &mut buf);
        w.append(audit::KIND_DECISION, *now, &buf).unwrap();
    }
    w.sync().unwrap();
}

fn snapshot(ctx: &zmq::Context, endpoint: &str) -> serde_json::Value {
    admin(ctx, endpoint, r#"{"admin":"snapshot"}"#)["snapshot"].clone()
}

/// Client A checks three batches and "dies" having journaled batch 1 and the first 2 orders
/// of batch 2 (the records of a batch can be cut by a crash). Client B's hello undoes the rest
/// of batch 2 and batch 3; the server then equals one recovered from that journal, A's late
/// batches are refused, and B is served.
#[test]
fn a_hello_undoes_what_the_journal_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let ctx = zmq::Context::new();
    let server = start(dir.path(), &cfg, &[], 1);
    let ep = vec![server.endpoint().to_owned()];
    let mut a = RiskClient::connect(&ctx, &ep, WAIT, 64).unwrap();
    let mut held = Vec::new();
    let mut point = JournalPoint::default();
    for (k, b) in [batch(1, 4), batch(10, 5), batch(20, 3)].iter().enumerate() {
        let now = 1_000_000_000 + k as u64 * 1_000_000;
        let mut out = vec![Reason::RiskError; b.len()];
        assert_eq!(a.check_batch(b, now, &mut out), BatchOutcome::Replied);
        assert!(out.iter().all(|r| r.is_accepted()), "{out:?}");
        let keep = match k {
            0 => b.len(),
            1 => 2,
            _ => 0,
        };
        held.extend(b.iter().zip(&out).take(keep).map(|(o, r)| (*o, *r, now)));
        if keep > 0 {
            point = keep_orders_of(a.journal_point(), keep);
        }
    }
    let journal = dir.path().join("journal");
    write_journal(&journal, &held);

    let mut b = RiskClient::connect(&ctx, &ep, WAIT, 64).unwrap();
    let r = b.hello(&ep[0], point, WAIT).unwrap();
    assert_eq!(
        (r.outcome, r.voided, r.max_batch),
        (VoidOutcome::Voided, 2, 1024)
    );
    let recovered = start(
        dir.path(),
        &cfg,
        &["--recover-from", journal.to_str().unwrap()],
        1,
    );
    assert_eq!(
        snapshot(&ctx, &ep[0]),
        snapshot(&ctx, recovered.endpoint()),
        "the server agrees with the journal"
    );
    // A (the dead client) is refused from now on; B is served.
    let late = batch(30, 2);
    let mut out = vec![Reason::Accepted; 2];
    assert_eq!(
        a.check_batch(&late, 2_000_000_000, &mut out),
        BatchOutcome::Failed
    );
    let resent = batch(10, 5);
    let mut out = vec![Reason::RiskError; 5];
    assert_eq!(
        b.check_batch(&resent[2..], 2_000_000_000, &mut out[2..]),
        BatchOutcome::Replied
    );
    assert!(out[2..].iter().all(|r| r.is_accepted()), "{out:?}");
    let stats = admin(&ctx, &ep[0], r#"{"admin":"stats"}"#)["stats"].clone();
    assert_eq!(stats["hello_requests"], 1, "{stats}");
    assert_eq!(stats["reconciled_batches"], 2, "{stats}");
    assert_eq!(stats["refused_voided_batches"], 1, "{stats}");
}

/// The point of a journal that holds the first `keep` orders of the client's last batch.
fn keep_orders_of(p: JournalPoint, keep: usize) -> JournalPoint {
    JournalPoint {
        journaled_orders: keep as u32,
        ..p
    }
}

/// A change outside a batch (an admin request) after batches the journal does not hold: the
/// server cannot undo them and answers `too-old` (restart it with `--recover-from`).
#[test]
fn a_hello_reports_what_the_server_can_no_longer_undo() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), LIMITS);
    let ctx = zmq::Context::new();
    let server = start(dir.path(), &cfg, &[], 1);
    let ep = vec![server.endpoint().to_owned()];
    let mut a = RiskClient::connect(&ctx, &ep, WAIT, 64).unwrap();
    let mut out = vec![Reason::RiskError; 3];
    assert_eq!(
        a.check_batch(&batch(1, 3), 1, &mut out),
        BatchOutcome::Replied
    );
    let point = a.journal_point();
    assert_eq!(
        a.check_batch(&batch(10, 3), 2, &mut out),
        BatchOutcome::Replied
    );
    let _ = admin(&ctx, &ep[0], r#"{"admin":"resume","symbol":"MSFT"}"#);
    let mut b = RiskClient::connect(&ctx, &ep, WAIT, 64).unwrap();
    let r = b.hello(&ep[0], point, WAIT).unwrap();
    assert_eq!((r.outcome, r.voided), (VoidOutcome::TooOld, 0));
    // A session the server never saw: nothing to reconcile.
    let unknown = JournalPoint {
        prev_session: 0x1234,
        journaled_batch: 7,
        journaled_orders: 1,
    };
    let mut c = RiskClient::connect(&ctx, &ep, WAIT, 64).unwrap();
    assert_eq!(
        c.hello(&ep[0], unknown, WAIT).unwrap().outcome,
        VoidOutcome::Unknown
    );
}
