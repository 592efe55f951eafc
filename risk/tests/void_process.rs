//! Divergence after a timeout (issue #4): a slow (not dead) `risk-server` applies a batch the
//! client has already given up on. The client voids it on its next contact, and the server's
//! state then equals that of a server rebuilt with `--recover-from` from the engine's journal
//! (where those orders are `risk-timeout` rejections).
//!
//! The slowness comes from a small proxy between client and server (ROUTER facing the client,
//! DEALER facing the real `risk-server` over tcp) that holds one reply, or one request, for
//! 150 ms, beyond the client's 100 ms timeout. Real processes, real sockets.
//!
//! The same proxy also damages one reply of a batch the server has applied (issue 13, item 4):
//! a wrong batch id, bytes that are not a reply, or an extra frame (the client's socket is
//! reset). The client gives every order `risk-error` and must void the batch like a timed-out
//! one, or the server keeps orders the journal rejected.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use orders::{encode_decision, Decision, Order, OrderKind, Reason, Side, DECISION_LEN_BYTES};
use risk::{BatchOutcome, RiskClient};

const AAPL: i64 = 5_853_300;
const MSFT: i64 = 300_000;
const TIMEOUT: Duration = Duration::from_millis(100);
const HOLD: Duration = Duration::from_millis(150);

/// The delaying proxy. `hold_reply` / `hold_request`: hold the next reply (request) for
/// [`HOLD`], then forward it (a reply then finds its client gone and is dropped by ROUTER).
struct Proxy {
    endpoint: String,
    hold_reply: Arc<AtomicBool>,
    hold_request: Arc<AtomicBool>,
    /// Damage the next reply: see [`Damage`] (0: none).
    damage_reply: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(ctx: &zmq::Context, server: &str) -> Proxy {
        let front = ctx.socket(zmq::ROUTER).unwrap();
        front.set_linger(0).unwrap();
        front.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = front.get_last_endpoint().unwrap().unwrap();
        let back = ctx.socket(zmq::DEALER).unwrap();
        back.set_linger(0).unwrap();
        back.connect(server).unwrap();
        let hold_reply = Arc::new(AtomicBool::new(false));
        let hold_request = Arc::new(AtomicBool::new(false));
        let damage_reply = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (hr, hq, st) = (hold_reply.clone(), hold_request.clone(), stop.clone());
        let dr = damage_reply.clone();
        let handle = std::thread::spawn(move || {
            // (release time, to the server?, frames)
            let mut held: VecDeque<(Instant, bool, Vec<Vec<u8>>)> = VecDeque::new();
            while !st.load(Ordering::Acquire) {
                while held.front().is_some_and(|h| h.0 <= Instant::now()) {
                    let (_, to_server, frames) = held.pop_front().unwrap();
                    let sock = if to_server { &back } else { &front };
                    sock.send_multipart(frames, 0).unwrap();
                }
                let mut items = [
                    front.as_poll_item(zmq::POLLIN),
                    back.as_poll_item(zmq::POLLIN),
                ];
                zmq::poll(&mut items, 5).unwrap();
                if items[0].is_readable() {
                    let frames = front.recv_multipart(0).unwrap();
                    if hq.swap(false, Ordering::AcqRel) {
                        held.push_back((Instant::now() + HOLD, true, frames));
                    } else {
                        back.send_multipart(frames, 0).unwrap();
                    }
                }
                if items[1].is_readable() {
                    let mut frames = back.recv_multipart(0).unwrap();
                    damage(dr.swap(0, Ordering::AcqRel), &mut frames);
                    if hr.swap(false, Ordering::AcqRel) {
                        held.push_back((Instant::now() + HOLD, false, frames));
                    } else {
                        front.send_multipart(frames, 0).unwrap();
                    }
                }
            }
        });
        Proxy {
            endpoint,
            hold_reply,
            hold_request,
            damage_reply,
            stop,
            handle: Some(handle),
        }
    }
}

/// How the proxy damages a reply (the last frame of what the server sent).
#[derive(Debug, Clone, Copy)]
#[repr(u8)]
enum Damage {
    /// The batch id of another batch.
    WrongBatchId = 1,
    /// Bytes that are not a reply.
    Garbage = 2,
    /// The reply followed by a second frame: the client resets its socket.
    ExtraFrame = 3,
}

fn damage(how: u8, frames: &mut Vec<Vec<u8>>) {
    let Some(reply) = frames.last_mut() else {
        return;
    };
    match how {
        1 => reply[8] ^= 0x55,
        2 => *reply = b"ERROR this is not a reply".to_vec(),
        3 => frames.push(b"extra".to_vec()),
        _ => {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The engine's view: every event with the verdict it journals.
struct Engine {
    client: RiskClient,
    decided: Vec<(Order, u64, Reason)>,
}

impl Engine {
    fn batch(&mut self, orders: &[Order], now: u64) -> BatchOutcome {
        let mut out = vec![Reason::Accepted; orders.len()];
        let r = self.client.check_batch(orders, now, &mut out);
        self.decided
            .extend(orders.iter().zip(out).map(|(o, r)| (*o, now, r)));
        r
    }

    fn write_journal(&self, dir: &std::path::Path) {
        let opts = audit::WriterOptions {
            segment_size_bytes: 1 << 20,
            ..Default::default()
        };
        let (mut w, _) = audit::Writer::open(dir, opts).unwrap();
        let mut buf = [0u8; DECISION_LEN_BYTES];
        for (i, (order, now, reason)) in self.decided.iter().enumerate() {
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
        }
        w.sync().unwrap();
    }
}

fn opening() -> Vec<Order> {
    let mut b: Vec<Order> = (0..20u64)
        .map(|i| {
            let (sym, px) = if i % 2 == 0 {
                ("AAPL", AAPL)
            } else {
                ("MSFT", MSFT)
            };
            new_order(1 + i, (i % 3) as u32 + 1, sym, Side::Buy, 100 + i, px)
        })
        .collect();
    b.push(event(OrderKind::Fill, 1, "AAPL", 50, AAPL + 500));
    b
}

/// The batch the server applies late: new orders (ids, exposure, throttle tokens, a new
/// position), a cancel, a fill that moves a reference price and a position, a halt event.
fn slow_batch(first_id: u64) -> Vec<Order> {
    let mut b: Vec<Order> = (0..30u64)
        .map(|i| new_order(first_id + i, 9, "MSFT", Side::Buy, 90, MSFT))
        .collect();
    b.push(new_order(first_id + 30, 2, "AAPL", Side::Sell, 900, AAPL));
    b.push(event(OrderKind::Cancel, 2, "MSFT", 40, 0));
    b.push(event(OrderKind::Fill, 3, "AAPL", 60, AAPL + 9_000));
    b.push(event(OrderKind::Halt, 0, "MSFT", 0, 0));
    b
}

/// Orders whose verdicts depend on everything the slow batch would have changed.
fn probe(slow_first_id: u64) -> Vec<Order> {
    let mut b: Vec<Order> = (0..31u64)
        .map(|i| new_order(slow_first_id + i, 9, "MSFT", Side::Buy, 90, MSFT))
        .collect();
    b.push(new_order(500, 2, "AAPL", Side::Sell, 2_500, AAPL));
    b.push(new_order(501, 1, "AAPL", Side::Buy, 1, AAPL + 600_000));
    b.push(event(OrderKind::Cancel, 2, "MSFT", 1_000, 0));
    b
}

fn snapshot(ctx: &zmq::Context, endpoint: &str) -> serde_json::Value {
    admin(ctx, endpoint, r#"{"admin":"snapshot"}"#)["snapshot"].clone()
}

fn stats(ctx: &zmq::Context, endpoint: &str) -> serde_json::Value {
    admin(ctx, endpoint, r#"{"admin":"stats"}"#)["stats"].clone()
}

/// Throttle: 50 back to back, then 1000/s (common::LIMITS).
fn limits() -> String {
    LIMITS.to_owned()
}

#[test]
fn a_batch_applied_after_the_timeout_is_voided_and_the_state_matches_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), &limits());
    let ctx = zmq::Context::new();
    let server = start(dir.path(), &cfg, &[], 1);
    let proxy = Proxy::start(&ctx, server.endpoint());
    let client =
        RiskClient::connect(&ctx, std::slice::from_ref(&proxy.endpoint), TIMEOUT, 64).unwrap();
    let mut engine = Engine {
        client,
        decided: Vec::new(),
    };
    assert_eq!(
        engine.batch(&opening(), 1_000_000_000),
        BatchOutcome::Replied
    );

    // The server answers, the proxy holds the reply past the timeout.
    proxy.hold_reply.store(true, Ordering::Release);
    let t = Instant::now();
    let slow = slow_batch(100);
    assert_eq!(engine.batch(&slow, 1_001_000_000), BatchOutcome::TimedOut);
    assert!(t.elapsed() < TIMEOUT + Duration::from_millis(400));
    assert_eq!(engine.client.pending_voids().len(), 1);
    // The server did apply it (that is the divergence).
    assert!(eventually(Duration::from_secs(10), || {
        stats(&ctx, server.endpoint())["batches"] == 2
    }));
    let diverged = snapshot(&ctx, server.endpoint());

    // The next batch voids it first.
    let next = [new_order(200, 1, "AAPL", Side::Buy, 10, AAPL)];
    assert_eq!(engine.batch(&next, 1_002_000_000), BatchOutcome::Replied);
    let cs = engine.client.stats();
    assert_eq!(
        (cs.void_requests, cs.voided, cs.timeouts),
        (1, 1, 1),
        "{cs:?}"
    );
    assert!(engine.client.pending_voids().is_empty());
    let st = stats(&ctx, server.endpoint());
    assert_eq!(st["voided_batches"], 1, "{st}");
    // Let the held reply go out (to a client socket that is gone).
    std::thread::sleep(HOLD);

    // A server rebuilt from the engine's journal has the same state...
    let journal = dir.path().join("journal");
    engine.write_journal(&journal);
    let recovered = start(
        dir.path(),
        &cfg,
        &["--recover-from", journal.to_str().unwrap()],
        1,
    );
    let live = snapshot(&ctx, server.endpoint());
    assert_eq!(
        live,
        snapshot(&ctx, recovered.endpoint()),
        "state after void"
    );
    assert_ne!(
        live, diverged,
        "the slow batch changed the state (test has teeth)"
    );

    // ... and gives the same verdicts.
    let mut rec = RiskClient::connect(
        &ctx,
        &[recovered.endpoint().to_owned()],
        Duration::from_secs(10),
        64,
    )
    .unwrap();
    let p = probe(100);
    let (mut a, mut b) = (
        vec![Reason::Accepted; p.len()],
        vec![Reason::Accepted; p.len()],
    );
    assert_eq!(
        engine.client.check_batch(&p, 1_003_000_000, &mut a),
        BatchOutcome::Replied
    );
    assert_eq!(
        rec.check_batch(&p, 1_003_000_000, &mut b),
        BatchOutcome::Replied
    );
    assert_eq!(a, b);
    assert!(a.iter().filter(|r| r.is_accepted()).count() >= 31, "{a:?}");
    assert_eq!(
        snapshot(&ctx, server.endpoint()),
        snapshot(&ctx, recovered.endpoint())
    );
}

#[test]
fn a_batch_that_arrives_after_its_void_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), &limits());
    let ctx = zmq::Context::new();
    let server = start(dir.path(), &cfg, &[], 1);
    let proxy = Proxy::start(&ctx, server.endpoint());
    let client =
        RiskClient::connect(&ctx, std::slice::from_ref(&proxy.endpoint), TIMEOUT, 64).unwrap();
    let mut engine = Engine {
        client,
        decided: Vec::new(),
    };
    assert_eq!(
        engine.batch(&opening(), 1_000_000_000),
        BatchOutcome::Replied
    );
    let before = snapshot(&ctx, server.endpoint());

    // The request itself is late: the void overtakes it.
    proxy.hold_request.store(true, Ordering::Release);
    assert_eq!(
        engine.batch(&slow_batch(100), 1_001_000_000),
        BatchOutcome::TimedOut
    );
    let next = [new_order(200, 1, "AAPL", Side::Buy, 10, AAPL)];
    assert_eq!(engine.batch(&next, 1_002_000_000), BatchOutcome::Replied);
    assert_eq!(engine.client.stats().void_unknown, 1);
    // The held request reaches the server and is refused.
    assert!(eventually(Duration::from_secs(10), || {
        stats(&ctx, server.endpoint())["refused_voided_batches"] == 1
    }));
    let after = snapshot(&ctx, server.endpoint());
    assert_eq!(
        after["open_orders"],
        before["open_orders"].as_u64().unwrap() + 1
    );

    let journal = dir.path().join("journal");
    engine.write_journal(&journal);
    let recovered = start(
        dir.path(),
        &cfg,
        &["--recover-from", journal.to_str().unwrap()],
        1,
    );
    assert_eq!(after, snapshot(&ctx, recovered.endpoint()));
}

/// Item 4 of issue 13: a batch the server applied whose reply the client cannot use (a wrong
/// batch id, garbage, a multi-part reply that resets the socket) is journaled `risk-error`; the
/// client voids it on its next contact, so the server's state then equals that of a server
/// rebuilt from the journal, and the verdicts of a probe stream agree.
fn a_batch_applied_with_a_damaged_reply_is_voided(how: Damage) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_limits(dir.path(), &limits());
    let ctx = zmq::Context::new();
    let server = start(dir.path(), &cfg, &[], 1);
    let proxy = Proxy::start(&ctx, server.endpoint());
    let client =
        RiskClient::connect(&ctx, std::slice::from_ref(&proxy.endpoint), TIMEOUT, 64).unwrap();
    let mut engine = Engine {
        client,
        decided: Vec::new(),
    };
    assert_eq!(
        engine.batch(&opening(), 1_000_000_000),
        BatchOutcome::Replied
    );
    proxy.damage_reply.store(how as u8, Ordering::Release);
    assert_eq!(
        engine.batch(&slow_batch(100), 1_001_000_000),
        BatchOutcome::Failed,
        "{how:?}"
    );
    assert!(engine
        .decided
        .iter()
        .rev()
        .take(slow_batch(100).len())
        .all(|(_, _, r)| *r == Reason::RiskError));
    assert_eq!(
        engine.client.pending_voids().len(),
        1,
        "{how:?}: queued for a void"
    );
    // The server applied it (the divergence the void takes back).
    assert_eq!(stats(&ctx, server.endpoint())["batches"], 2);
    let diverged = snapshot(&ctx, server.endpoint());

    let next = [new_order(200, 1, "AAPL", Side::Buy, 10, AAPL)];
    assert_eq!(engine.batch(&next, 1_002_000_000), BatchOutcome::Replied);
    let cs = engine.client.stats();
    assert_eq!((cs.void_requests, cs.voided), (1, 1), "{how:?}: {cs:?}");
    assert!(engine.client.pending_voids().is_empty());

    let journal = dir.path().join("journal");
    engine.write_journal(&journal);
    let recovered = start(
        dir.path(),
        &cfg,
        &["--recover-from", journal.to_str().unwrap()],
        1,
    );
    let live = snapshot(&ctx, server.endpoint());
    assert_eq!(live, snapshot(&ctx, recovered.endpoint()), "{how:?}");
    assert_ne!(live, diverged, "the damaged batch changed the state");
    let mut rec = RiskClient::connect(
        &ctx,
        &[recovered.endpoint().to_owned()],
        Duration::from_secs(10),
        64,
    )
    .unwrap();
    let p = probe(100);
    let (mut a, mut b) = (
        vec![Reason::Accepted; p.len()],
        vec![Reason::Accepted; p.len()],
    );
    assert_eq!(
        engine.client.check_batch(&p, 1_003_000_000, &mut a),
        BatchOutcome::Replied
    );
    assert_eq!(
        rec.check_batch(&p, 1_003_000_000, &mut b),
        BatchOutcome::Replied
    );
    assert_eq!(a, b, "{how:?}");
}

#[test]
fn a_reply_with_a_wrong_batch_id_is_voided() {
    a_batch_applied_with_a_damaged_reply_is_voided(Damage::WrongBatchId);
}

#[test]
fn a_garbage_reply_is_voided() {
    a_batch_applied_with_a_damaged_reply_is_voided(Damage::Garbage);
}

#[test]
fn a_socket_reset_after_the_send_is_voided() {
    a_batch_applied_with_a_damaged_reply_is_voided(Damage::ExtraFrame);
}
