//! The embedded mode: a risk server thread on `inproc://` sharing the caller's context.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use orders::{Order, OrderKind, Reason, Side, Symbol};
use risk::{spawn_embedded, BatchOutcome, Limits, RiskClient};

const LIMITS: &str = r#"
[defaults]
max_order_qty = 100
max_order_notional = 100000
max_long_qty = 1000
max_short_qty = 1000
credit_limit_notional = 1000000
"#;

fn order(id: u64, qty: u64) -> Order {
    Order {
        order_id: id,
        ts_ns: 0,
        price: 100_000,
        qty,
        account: 1,
        symbol: Symbol::new("XYZ").unwrap(),
        side: Side::Buy,
        kind: OrderKind::New,
    }
}

#[test]
fn embedded_server_answers_over_inproc_and_takes_new_limits() {
    let ctx = zmq::Context::new();
    let limits = Limits::from_toml_str(LIMITS, "embedded").unwrap();
    let risk = spawn_embedded(&ctx, limits, "inproc://risk-test").unwrap();
    assert_eq!(risk.endpoints(), ["inproc://risk-test".to_owned()]);
    let mut client = RiskClient::connect(
        &ctx,
        &["inproc://risk-test".to_owned()],
        Duration::from_secs(5),
        64,
    )
    .unwrap();
    let mut out = [Reason::Accepted; 2];
    assert_eq!(
        client.check_batch(&[order(1, 100), order(2, 101)], 1, &mut out),
        BatchOutcome::Replied
    );
    assert_eq!(out, [Reason::Accepted, Reason::MaxQty]);
    assert!(client.stats().last_rtt_ns > 0);

    risk.set_limits(
        Limits::from_toml_str(
            &LIMITS.replace("max_order_qty = 100", "max_order_qty = 5"),
            "new",
        )
        .unwrap(),
    );
    // The server installs new limits between requests: the next-but-one batch sees them.
    let mut seen = false;
    for id in 10..200 {
        assert_eq!(
            client.check_batch(&[order(id, 6)], 2, &mut out[..1]),
            BatchOutcome::Replied
        );
        if out[0] == Reason::MaxQty {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(seen, "new limits never took effect");
    // State survived: order 1 is still open (a duplicate).
    assert_eq!(
        client.check_batch(&[order(1, 1)], 3, &mut out[..1]),
        BatchOutcome::Replied
    );
    assert_eq!(out[0], Reason::DuplicateOrderId);
    let stats = risk.shutdown().unwrap();
    assert!(stats.batches >= 3, "{stats:?}");
    assert_eq!(stats.reloads, 1);
}

#[test]
fn client_rejects_bad_arguments_and_handles_empty_and_oversized_batches() {
    let ctx = zmq::Context::new();
    let eps = ["inproc://nobody".to_owned()];
    assert!(RiskClient::connect(&ctx, &[], Duration::from_millis(100), 8).is_err());
    assert!(RiskClient::connect(&ctx, &eps, Duration::ZERO, 8).is_err());
    assert!(RiskClient::connect(&ctx, &eps, Duration::from_millis(100), 0).is_err());
    assert!(RiskClient::connect(
        &ctx,
        &["tcp://a\0b".to_owned()],
        Duration::from_millis(100),
        8
    )
    .is_err());
    let mut c = RiskClient::connect(&ctx, &eps, Duration::from_millis(50), 2).unwrap();
    assert_eq!(c.check_batch(&[], 0, &mut []), BatchOutcome::Replied);
    let mut out = [Reason::Accepted; 3];
    // Above the client's own bound: refused loudly (the caller must not go on), not sent.
    assert_eq!(
        c.check_batch(&[order(1, 1), order(2, 1), order(3, 1)], 0, &mut out),
        BatchOutcome::Refused
    );
    assert_eq!(out, [Reason::RiskError; 3]);
    assert!(c.refusal().contains("3 orders"), "{}", c.refusal());
    // Nobody bound: the batch times out within the budget.
    let t = std::time::Instant::now();
    assert_eq!(
        c.check_batch(&[order(1, 1)], 0, &mut out[..1]),
        BatchOutcome::TimedOut
    );
    assert!(t.elapsed() < Duration::from_millis(50 + 400));
    assert_eq!(out[0], Reason::RiskTimeout);
}

#[test]
fn mismatched_replies_are_risk_errors() {
    // A fake server that answers with the wrong batch id, then with the wrong order id. The
    // server may have applied such a batch, so the client voids it before its next batch: the
    // fake answers the voids (and returns the batch ids they named).
    let ctx = zmq::Context::new();
    let rep = ctx.socket(zmq::REP).unwrap();
    rep.bind("inproc://fake-risk").unwrap();
    let fake = std::thread::spawn(move || {
        use risk::protocol::*;
        let mut voided = Vec::new();
        let mut round = 0;
        while round < 3 {
            let req = rep.recv_bytes(0).unwrap();
            let h = decode_request_header(&req, 16).unwrap();
            if h.kind == REQUEST_TYPE_VOID {
                let mut out = vec![0u8; reply_len_bytes(h.count as usize)];
                encode_reply_header(
                    &ReplyHeader {
                        status: Status::Ok,
                        batch_id: h.batch_id,
                        count: h.count,
                        text_len: 0,
                    },
                    &mut out,
                );
                for i in 0..h.count as usize {
                    let id = void_batch_id(&req, i);
                    voided.push(id);
                    encode_void_result(i, id, risk::VoidOutcome::Voided, &mut out);
                }
                rep.send(&out[..], 0).unwrap();
                continue;
            }
            let mut out = vec![0u8; reply_len_bytes(h.count as usize)];
            let batch_id = if round == 0 {
                h.batch_id + 1
            } else {
                h.batch_id
            };
            encode_reply_header(
                &ReplyHeader {
                    status: Status::Ok,
                    batch_id,
                    count: h.count,
                    text_len: 0,
                },
                &mut out,
            );
            for i in 0..h.count as usize {
                let id = raw_order_id(request_order(&req, i)) + if round == 1 { 1 } else { 0 };
                encode_verdict(i, id, Reason::Accepted, &mut out);
            }
            rep.send(&out[..], 0).unwrap();
            round += 1;
        }
        voided
    });
    let mut c = RiskClient::connect(
        &ctx,
        &["inproc://fake-risk".to_owned()],
        Duration::from_secs(5),
        4,
    )
    .unwrap();
    let mut out = [Reason::Accepted; 1];
    assert_eq!(
        c.check_batch(&[order(1, 1)], 0, &mut out),
        BatchOutcome::Failed
    );
    assert_eq!(out, [Reason::RiskError]);
    assert_eq!(
        c.check_batch(&[order(2, 1)], 0, &mut out),
        BatchOutcome::Failed
    );
    assert_eq!(
        c.check_batch(&[order(3, 1)], 0, &mut out),
        BatchOutcome::Replied
    );
    assert_eq!(out, [Reason::Accepted]);
    assert_eq!(c.stats().errors, 2);
    assert_eq!(c.stats().voided, 2, "both mismatched batches voided");
    assert_eq!(
        fake.join().unwrap(),
        [1, 3],
        "batch ids 1 and 3 (2 was the first void)"
    );
}
