//! Risk benchmarks (criterion):
//! - `check_set`: the full check set on accepted new orders (every check runs), per order, in
//!   batches of 1024 as the server runs it (`Checker::check_batch`, which prefetches), with
//!   ascending and with scattered order ids, one by one without the prefetch, and with the
//!   undo log recording each batch (as the server does, for `void` requests);
//! - `roundtrip_tcp/batch/N`: one REQ socket over tcp loopback to a REP server thread, batches
//!   of N new orders followed by N cancels (state stays bounded); per-order cost = time / 2N;
//! - `roundtrip_tcp/json_per_order`: the source design, one JSON request per order.
//!
//! Run: `cargo bench -p risk --bench risk -- --warm-up-time 1 --measurement-time 3`
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orders::{Order, OrderKind, Reason, Side, Symbol};
use risk::{Checker, Limits, RiskClient, Server, Service, ServiceOptions};

/// Sized like `examples/limits.toml` (65,536 remembered ids, 196,608 open orders); the
/// `check_set` cases vary the two table sizes.
const LIMITS: &str = r#"
[global]
duplicate_horizon_orders = 65536
[capacity]
max_open_orders = 196608
max_positions = 1024
[defaults]
max_order_qty = 100000
max_order_notional = 100000000
max_long_qty = 1000000000
max_short_qty = 1000000000
credit_limit_notional = 1000000000000
collar_bps = 1000
max_orders_per_s = 500000000
burst_orders = 1000000
[symbols.AAPL]
reference_price = 585.33
[symbols.MSFT]
reference_price = 30.0
[symbols.AMZN]
reference_price = 220.5
[symbols.GOOG]
reference_price = 570.0
"#;

const SYMBOLS: [(&str, i64); 4] = [
    ("AAPL", 5_853_300),
    ("MSFT", 300_000),
    ("AMZN", 2_205_000),
    ("GOOG", 5_700_000),
];

fn limits() -> Limits {
    Limits::from_toml_str(LIMITS, "bench").unwrap()
}

fn new_order(id: u64) -> Order {
    let (sym, px) = SYMBOLS[(id % 4) as usize];
    Order {
        order_id: id,
        ts_ns: 0,
        price: px + (id % 7) as i64 * 100,
        qty: 100 + id % 50,
        account: (id % 16) as u32 + 1,
        symbol: Symbol::new(sym).unwrap(),
        side: if id % 2 == 0 { Side::Buy } else { Side::Sell },
        kind: OrderKind::New,
    }
}

fn cancel_of(o: &Order) -> Order {
    Order {
        kind: OrderKind::Cancel,
        ..*o
    }
}

/// A bijection on u64 that scatters consecutive counters over the whole id space: ids with
/// no locality at all (the worst case for the order-id table).
fn scattered(n: u64) -> u64 {
    let mut z = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z ^= z >> 29;
    z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 32;
    z.max(1)
}

fn check_set(c: &mut Criterion) {
    const BATCH: usize = 1024;
    let mut g = c.benchmark_group("check_set");
    g.throughput(Throughput::Elements(BATCH as u64));
    // (name, ids, batched, duplicate horizon, open-order capacity, undo log recording)
    type Case = (&'static str, fn(u64) -> u64, bool, u64, u64, bool);
    let sequential: fn(u64) -> u64 = |n| n;
    let cases: [Case; 6] = [
        (
            "batch_1024/tables_1k/sequential_ids",
            sequential,
            true,
            1_024,
            1_024,
            false,
        ),
        (
            "batch_1024/tables_example/sequential_ids",
            sequential,
            true,
            65_536,
            196_608,
            false,
        ),
        (
            "batch_1024/tables_example/sequential_ids/undo_log",
            sequential,
            true,
            65_536,
            196_608,
            true,
        ),
        (
            "batch_1024/tables_example/scattered_ids",
            scattered,
            true,
            65_536,
            196_608,
            false,
        ),
        (
            "one_by_one/tables_example/sequential_ids",
            sequential,
            false,
            65_536,
            196_608,
            false,
        ),
        (
            "batch_1024/tables_256k/sequential_ids",
            sequential,
            true,
            262_144,
            262_144,
            false,
        ),
    ];
    for (name, id_of, batched, horizon, open, undo) in cases {
        let text = LIMITS
            .replace(
                "duplicate_horizon_orders = 65536",
                &format!("duplicate_horizon_orders = {horizon}"),
            )
            .replace(
                "max_open_orders = 196608",
                &format!("max_open_orders = {open}"),
            );
        let mut checker = Checker::new(Limits::from_toml_str(&text, "bench").unwrap());
        if undo {
            checker.enable_undo(BATCH);
        }
        let mut counter = 1u64;
        let mut now = 1_000_000_000u64;
        let mut batch = vec![Order::default(); BATCH];
        let mut cancels = vec![Order::default(); BATCH];
        let mut out = vec![Reason::Accepted; BATCH];
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for (o, c) in batch.iter_mut().zip(cancels.iter_mut()) {
                        *o = Order {
                            order_id: id_of(counter),
                            ..new_order(counter)
                        };
                        *c = cancel_of(o);
                        counter += 1;
                    }
                    now += 1_000_000;
                    let t = Instant::now();
                    if undo {
                        checker.begin_batch(1, counter);
                        checker.check_batch(black_box(&batch), now, &mut out);
                        checker.end_batch();
                    } else if batched {
                        checker.check_batch(black_box(&batch), now, &mut out);
                    } else {
                        for (o, r) in batch.iter().zip(out.iter_mut()) {
                            *r = checker.check(black_box(o), now);
                        }
                    }
                    black_box(&out);
                    total += t.elapsed();
                    debug_assert!(out.iter().all(|r| r.is_accepted()));
                    // Untimed: cancel them so that open exposure stays bounded.
                    checker.begin_batch(2, counter);
                    checker.check_batch(&cancels, now, &mut out);
                    checker.end_batch();
                    assert!(out.iter().all(|r| r.is_accepted()));
                }
                total
            })
        });
        // Verdict sanity outside the timed loop: every check ran and accepted.
        let o = Order {
            order_id: id_of(counter),
            ..new_order(counter)
        };
        assert_eq!(checker.check(&o, now + 1_000_000), Reason::Accepted);
        assert_eq!(checker.remembered_order_ids() as u64, horizon.min(counter));
    }
    g.finish();
}

struct TcpServer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    endpoint: String,
}

impl TcpServer {
    fn start(ctx: &zmq::Context) -> TcpServer {
        let service = Service::new(
            Checker::new(limits()),
            ServiceOptions {
                max_batch_orders: 1024,
                config_path: None,
            },
        );
        let mut server = Server::bind(ctx, &["tcp://127.0.0.1:*".to_owned()], service).unwrap();
        let endpoint = server.endpoints()[0].clone();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let reload = AtomicBool::new(false);
            server.run(&s, &reload).unwrap();
        });
        TcpServer {
            stop,
            handle: Some(handle),
            endpoint,
        }
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn roundtrip(c: &mut Criterion) {
    let ctx = zmq::Context::new();
    let server = TcpServer::start(&ctx);
    let mut g = c.benchmark_group("roundtrip_tcp");
    let mut client = RiskClient::connect(
        &ctx,
        std::slice::from_ref(&server.endpoint),
        Duration::from_secs(2),
        1024,
    )
    .unwrap();
    let mut next_id = 1u64;
    for n in [1usize, 16, 64, 256, 1024] {
        let mut news = vec![Order::default(); n];
        let mut cancels = vec![Order::default(); n];
        let mut out = vec![Reason::Accepted; n];
        g.throughput(Throughput::Elements(2 * n as u64));
        g.bench_with_input(BenchmarkId::new("batch_new_then_cancel", n), &n, |b, _| {
            b.iter(|| {
                for (o, c) in news.iter_mut().zip(cancels.iter_mut()) {
                    *o = new_order(next_id);
                    *c = cancel_of(o);
                    next_id += 1;
                }
                let r = client.check_batch(&news, next_id * 1_000, &mut out);
                assert_eq!(r, risk::BatchOutcome::Replied);
                debug_assert!(out.iter().all(|r| r.is_accepted()));
                let r = client.check_batch(&cancels, next_id * 1_000, &mut out);
                assert_eq!(r, risk::BatchOutcome::Replied);
            })
        });
    }
    // The source design: one JSON request per order, one REQ round trip each.
    let req = ctx.socket(zmq::REQ).unwrap();
    req.set_linger(0).unwrap();
    req.connect(&server.endpoint).unwrap();
    let mut msg = zmq::Message::new();
    g.throughput(Throughput::Elements(1));
    g.bench_function("json_per_order", |b| {
        b.iter(|| {
            let o = new_order(next_id);
            next_id += 1;
            let text = format!(
                r#"{{"symbol":"{}","quantity":{},"price":{},"order_id":{},"side":"{}","account":{}}}"#,
                o.symbol,
                o.qty,
                orders::format_price_ticks(o.price),
                o.order_id,
                o.side.as_str(),
                o.account
            );
            req.send(text.as_bytes(), 0).unwrap();
            req.recv(&mut msg, 0).unwrap();
            assert_eq!(&msg[..], b"OK");
        })
    });
    g.finish();
    drop(client);
    drop(req);
    drop(server);
}

criterion_group!(benches, check_set, roundtrip);
criterion_main!(benches);
