//! The codecs on every order's path: the 48-byte order, the 80-byte decision record, decimal
//! price parsing (CSV input, JSON risk requests), and the risk protocol's binary batch
//! (request encode on the engine, decode on the server, reply encode and decode) for a batch of
//! the engine's default size.
//!
//! Run: `cargo bench -p bench --bench codec -- --warm-up-time 1 --measurement-time 3`
//! Smoke (each body once): `cargo test -p bench --bench codec`
#![forbid(unsafe_code)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orders::{
    decode_decision, decode_order, encode_decision, encode_order, parse_price_ticks, Decision,
    Order, OrderKind, Reason, Side, Symbol, DECISION_LEN_BYTES, ORDER_LEN_BYTES,
};
use risk::protocol::{
    decode_reply_header, decode_request_header, decode_verdict, encode_reply_header,
    encode_request, encode_verdict, reply_len_bytes, request_len_bytes, request_order, ReplyHeader,
    Status,
};

/// Orders in one risk batch: the engine's default `max_batch`
/// (`engine::limits::MAX_BATCH_ORDERS_DEFAULT`).
const RISK_BATCH_ORDERS: usize = 256;

fn sample_order() -> Order {
    Order {
        order_id: 16_113_575,
        ts_ns: 34_200_017_459_000,
        price: 5_853_300,
        qty: 18,
        account: 3,
        symbol: Symbol::new("AAPL").expect("constant symbol is valid"),
        side: Side::Buy,
        kind: OrderKind::New,
    }
}

fn sample_decision() -> Decision {
    Decision {
        input_seq: 41,
        order: sample_order(),
        reason: Reason::PriceCollar,
        t_in_ns: 1_700_000_000_000_000_000,
        t_decided_ns: 1_700_000_000_000_012_345,
        t_checked_ns: 1_700_000_000_000_000_100,
        risk_session: 0x5eed,
        risk_batch: 7,
        risk_batch_orders: 3,
    }
}

fn order_codec(c: &mut Criterion) {
    let order = sample_order();
    let mut buf = [0u8; ORDER_LEN_BYTES];
    encode_order(&order, &mut buf);
    assert_eq!(decode_order(&buf).expect("round trip"), order);

    let mut group = c.benchmark_group("order_codec");
    group.throughput(Throughput::Bytes(ORDER_LEN_BYTES as u64));
    group.bench_function("encode_order", |b| {
        b.iter(|| encode_order(black_box(&order), black_box(&mut buf)))
    });
    group.bench_function("decode_order", |b| b.iter(|| decode_order(black_box(&buf))));
    group.finish();
}

fn decision_codec(c: &mut Criterion) {
    let decision = sample_decision();
    let mut buf = [0u8; DECISION_LEN_BYTES];
    encode_decision(&decision, &mut buf);
    assert_eq!(decode_decision(&buf).expect("round trip"), decision);

    let mut group = c.benchmark_group("decision_codec");
    group.throughput(Throughput::Bytes(DECISION_LEN_BYTES as u64));
    group.bench_function("encode_decision", |b| {
        b.iter(|| encode_decision(black_box(&decision), black_box(&mut buf)))
    });
    group.bench_function("decode_decision", |b| {
        b.iter(|| decode_decision(black_box(&buf)))
    });
    group.finish();
}

fn price_parse(c: &mut Criterion) {
    // Typical LOBSTER-style prices, a whole number and a negative one.
    let texts = ["585.33", "3355.2100", "185.25", "42", "-0.0001"];
    let expected = [5_853_300, 33_552_100, 1_852_500, 420_000, -1];
    for (t, e) in texts.iter().zip(expected) {
        assert_eq!(parse_price_ticks(t), Ok(e), "{t}");
    }

    let mut group = c.benchmark_group("price");
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("parse_price_ticks", |b| {
        b.iter(|| {
            for t in texts {
                let _ = black_box(parse_price_ticks(black_box(t)));
            }
        })
    });
    group.finish();
}

/// What the engine's risk stage and the risk server do to one batch, besides checking it.
fn risk_batch(c: &mut Criterion) {
    let orders: Vec<Order> = (0..RISK_BATCH_ORDERS as u64)
        .map(|i| Order {
            order_id: 1_000 + i,
            qty: 1 + i % 500,
            ..sample_order()
        })
        .collect();
    let mut request = vec![0u8; request_len_bytes(RISK_BATCH_ORDERS)];
    let mut reply = vec![0u8; reply_len_bytes(RISK_BATCH_ORDERS)];
    let mut decoded = vec![Order::default(); RISK_BATCH_ORDERS];
    let mut reasons = vec![Reason::Accepted; RISK_BATCH_ORDERS];

    let encode_req = |request: &mut [u8]| encode_request(42, 7, &orders, request);
    let decode_req = |request: &[u8], decoded: &mut [Order]| {
        let h = decode_request_header(request, RISK_BATCH_ORDERS).expect("valid request");
        for (i, slot) in decoded.iter_mut().enumerate().take(h.count as usize) {
            *slot = decode_order(request_order(request, i)).expect("valid order");
        }
        h.count
    };
    let encode_rep = |reply: &mut [u8]| {
        let header = ReplyHeader {
            status: Status::Ok,
            batch_id: 42,
            count: RISK_BATCH_ORDERS as u32,
            text_len: 0,
        };
        encode_reply_header(&header, reply);
        for (i, o) in orders.iter().enumerate() {
            let reason = if o.qty > 200 {
                Reason::MaxQty
            } else {
                Reason::Accepted
            };
            encode_verdict(i, o.order_id, reason, reply);
        }
    };
    let decode_rep = |reply: &[u8], reasons: &mut [Reason]| {
        let h = decode_reply_header(reply).expect("valid reply");
        for (i, slot) in reasons.iter_mut().enumerate().take(h.count as usize) {
            *slot = decode_verdict(reply, i).expect("valid verdict").1;
        }
        h.count
    };

    // Round trip once before timing, so the numbers are of a codec that works.
    assert_eq!(encode_req(&mut request), request.len());
    assert_eq!(decode_req(&request, &mut decoded), RISK_BATCH_ORDERS as u32);
    assert_eq!(decoded, orders);
    encode_rep(&mut reply);
    assert_eq!(decode_rep(&reply, &mut reasons), RISK_BATCH_ORDERS as u32);
    assert_eq!(reasons[250], Reason::MaxQty);
    assert_eq!(reasons[0], Reason::Accepted);

    let mut group = c.benchmark_group("risk_batch_256");
    group.throughput(Throughput::Elements(RISK_BATCH_ORDERS as u64));
    group.bench_function("encode_request", |b| {
        b.iter(|| encode_req(black_box(&mut request)))
    });
    group.bench_function("decode_request", |b| {
        b.iter(|| decode_req(black_box(&request), black_box(&mut decoded)))
    });
    group.bench_function("encode_reply", |b| {
        b.iter(|| encode_rep(black_box(&mut reply)))
    });
    group.bench_function("decode_reply", |b| {
        b.iter(|| decode_rep(black_box(&reply), black_box(&mut reasons)))
    });
    group.finish();
}

criterion_group!(
    benches,
    order_codec,
    decision_codec,
    price_parse,
    risk_batch
);
criterion_main!(benches);
