//! A ring hop across two threads: `rtrb` (what the engine's stages use) beside crossbeam's
//! `ArrayQueue` and `std::sync::mpsc::sync_channel`, all bounded to the same capacity and all
//! carrying the engine's 48-byte `Order`.
//!
//! Two groups:
//! - `ring_latency/<impl>`: one order ping-pongs between two threads over a pair of rings; the
//!   time reported per iteration is the one-way hop, i.e. the round trip / 2.
//! - `ring_throughput/<impl>`: a producer thread streams N orders through one ring to a consumer
//!   thread (N = criterion's iteration count); the time reported per iteration is the time per
//!   order, and criterion prints orders/s.
//!
//! Cross-thread work is timed with `iter_custom`: both threads meet at a `Barrier`, the clock
//! starts when they leave it (plus, for ping-pong, one untimed round trip so that both threads are
//! known to be running), and stops when the last order arrives. Thread start-up is never timed.
//!
//! The box these run on may have 2 cores shared with other work, so every wait is a bounded spin
//! followed by `yield_now` (never an unbounded busy-spin): on a quiet, isolated pair of cores the
//! spin phase is what gets measured; on a crowded box the yield keeps the other thread runnable.
//!
//! Run: `cargo bench -p bench --bench ring -- --warm-up-time 1 --measurement-time 3`
//! Smoke (each body once): `cargo test -p bench --bench ring`
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::sync::atomic::{fence, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam::queue::ArrayQueue;
use orders::{Order, Symbol};

/// Capacity of every ring under test, in orders (the same for all three implementations): the
/// engine's default (`engine::limits::RING_CAPACITY_ORDERS_DEFAULT`).
const RING_CAPACITY_ORDERS: usize = 8_192;
/// Spins (`std::hint::spin_loop`) before a waiting thread starts yielding its core.
const WAIT_SPINS_MAX: u32 = 256;

/// The other side of a ring went away (its thread ended or panicked): the bench is broken.
#[derive(Debug)]
struct Abandoned;

/// Sending half of a bounded single-producer single-consumer ring.
trait Tx: Send + 'static {
    /// Tries once; gives the order back when the ring is full.
    fn try_send(&mut self, order: Order) -> Result<(), Order>;
    /// Whether the receiving half is gone.
    fn abandoned(&self) -> bool;
}

/// Receiving half of a bounded single-producer single-consumer ring.
trait Rx: Send + 'static {
    /// Tries once; `Ok(None)` when the ring is empty.
    fn try_recv(&mut self) -> Result<Option<Order>, Abandoned>;
}

/// A ring implementation under test.
trait Ring {
    /// Name in the benchmark id.
    const NAME: &'static str;
    /// Sending half.
    type Tx: Tx;
    /// Receiving half.
    type Rx: Rx;
    /// A ring holding at most `capacity` orders.
    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx);
}

/// Bounded wait: spin a little (the other thread is probably about to act), then yield the core
/// (the other thread may need it to act at all).
struct Waiter {
    spins: u32,
}

impl Waiter {
    fn new() -> Self {
        Waiter { spins: 0 }
    }

    fn wait(&mut self) {
        if self.spins < WAIT_SPINS_MAX {
            self.spins += 1;
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
}

fn send<T: Tx>(tx: &mut T, mut order: Order) -> Result<(), Abandoned> {
    let mut waiter = Waiter::new();
    loop {
        match tx.try_send(order) {
            Ok(()) => return Ok(()),
            Err(back) => {
                if tx.abandoned() {
                    return Err(Abandoned);
                }
                order = back;
                waiter.wait();
            }
        }
    }
}

fn recv<R: Rx>(rx: &mut R) -> Result<Order, Abandoned> {
    let mut waiter = Waiter::new();
    loop {
        if let Some(order) = rx.try_recv()? {
            return Ok(order);
        }
        waiter.wait();
    }
}

// ---- rtrb ----------------------------------------------------------------------------------

struct Rtrb;

impl Tx for rtrb::Producer<Order> {
    fn try_send(&mut self, order: Order) -> Result<(), Order> {
        self.push(order).map_err(|rtrb::PushError::Full(back)| back)
    }
    fn abandoned(&self) -> bool {
        self.is_abandoned()
    }
}

impl Rx for rtrb::Consumer<Order> {
    fn try_recv(&mut self) -> Result<Option<Order>, Abandoned> {
        if let Ok(order) = self.pop() {
            return Ok(Some(order));
        }
        if !self.is_abandoned() {
            return Ok(None);
        }
        // The producer may have pushed its last order between the pop and the check above:
        // look once more now that it is known to be gone (the fence makes what it did before
        // going visible, as for `QueueEnd`).
        fence(Ordering::Acquire);
        match self.pop() {
            Ok(order) => Ok(Some(order)),
            Err(rtrb::PopError::Empty) => Err(Abandoned),
        }
    }
}

impl Ring for Rtrb {
    const NAME: &'static str = "rtrb";
    type Tx = rtrb::Producer<Order>;
    type Rx = rtrb::Consumer<Order>;
    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(capacity)
    }
}

// ---- crossbeam ArrayQueue (an MPMC queue used here as SPSC) --------------------------------

struct CrossbeamArrayQueue;

/// One end of a shared `ArrayQueue`; the other end is gone when this is the only owner left.
struct QueueEnd(Arc<ArrayQueue<Order>>);

impl Tx for QueueEnd {
    fn try_send(&mut self, order: Order) -> Result<(), Order> {
        self.0.push(order)
    }
    fn abandoned(&self) -> bool {
        QueueEnd::other_end_gone(&self.0)
    }
}

impl QueueEnd {
    fn other_end_gone(queue: &Arc<ArrayQueue<Order>>) -> bool {
        let gone = Arc::strong_count(queue) == 1;
        // `strong_count` is a relaxed load; pair it with the other end's release on drop, so
        // that what it pushed before dropping is visible to the next pop.
        fence(Ordering::Acquire);
        gone
    }
}

impl Rx for QueueEnd {
    fn try_recv(&mut self) -> Result<Option<Order>, Abandoned> {
        if let Some(order) = self.0.pop() {
            return Ok(Some(order));
        }
        if !QueueEnd::other_end_gone(&self.0) {
            return Ok(None);
        }
        // The sender may have pushed its last order between the pop and the check above.
        self.0.pop().map(Some).ok_or(Abandoned)
    }
}

impl Ring for CrossbeamArrayQueue {
    const NAME: &'static str = "crossbeam-arrayqueue";
    type Tx = QueueEnd;
    type Rx = QueueEnd;
    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        let queue = Arc::new(ArrayQueue::new(capacity));
        (QueueEnd(Arc::clone(&queue)), QueueEnd(queue))
    }
}

// ---- std::sync::mpsc::sync_channel (bounded) -----------------------------------------------

struct StdSyncChannel;

/// `try_send` cannot tell "full" from "gone" without consuming the error, so remember it.
struct StdTx {
    tx: SyncSender<Order>,
    gone: bool,
}

impl Tx for StdTx {
    fn try_send(&mut self, order: Order) -> Result<(), Order> {
        match self.tx.try_send(order) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(back)) => Err(back),
            Err(TrySendError::Disconnected(back)) => {
                self.gone = true;
                Err(back)
            }
        }
    }
    fn abandoned(&self) -> bool {
        self.gone
    }
}

impl Rx for Receiver<Order> {
    fn try_recv(&mut self) -> Result<Option<Order>, Abandoned> {
        match Receiver::try_recv(self) {
            Ok(order) => Ok(Some(order)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(Abandoned),
        }
    }
}

impl Ring for StdSyncChannel {
    const NAME: &'static str = "std-mpsc-sync_channel";
    type Tx = StdTx;
    type Rx = Receiver<Order>;
    fn with_capacity(capacity: usize) -> (Self::Tx, Self::Rx) {
        let (tx, rx) = mpsc::sync_channel(capacity);
        (StdTx { tx, gone: false }, rx)
    }
}

// ---- the benchmarks ------------------------------------------------------------------------

fn order(i: u64) -> Order {
    Order {
        order_id: i,
        ts_ns: i,
        price: 1_852_500,
        qty: 100,
        account: 7,
        symbol: Symbol::new("AAPL").expect("constant symbol is valid"),
        ..Order::default()
    }
}

/// Each implementation must be a bounded FIFO before its numbers mean anything.
fn check_is_bounded_fifo<R: Ring>() {
    let (mut tx, mut rx) = R::with_capacity(RING_CAPACITY_ORDERS);
    assert!(rx.try_recv().expect("sender alive").is_none());
    for i in 0..RING_CAPACITY_ORDERS as u64 {
        assert!(tx.try_send(order(i)).is_ok(), "{}: room for {i}", R::NAME);
    }
    assert!(
        tx.try_send(order(u64::MAX)).is_err(),
        "{}: bounded",
        R::NAME
    );
    for i in 0..RING_CAPACITY_ORDERS as u64 {
        let got = rx.try_recv().expect("sender alive").expect("not empty");
        assert_eq!(got.order_id, i, "{}: FIFO", R::NAME);
    }
    assert!(rx.try_recv().expect("sender alive").is_none());
    drop(tx);
    assert!(
        rx.try_recv().is_err(),
        "{}: a dropped sender is seen",
        R::NAME
    );
}

/// Round trip of one order, `iters` times; returns the one-way time (round trip / 2) in total.
fn ping_pong<R: Ring>(iters: u64) -> Duration {
    let (mut ping_tx, mut ping_rx) = R::with_capacity(RING_CAPACITY_ORDERS);
    let (mut pong_tx, mut pong_rx) = R::with_capacity(RING_CAPACITY_ORDERS);
    let barrier = Arc::new(Barrier::new(2));
    let echo = {
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || {
            barrier.wait();
            // One untimed warm-up round trip, then `iters` timed ones.
            for _ in 0..=iters {
                let o = recv(&mut ping_rx).expect("pinger alive");
                send(&mut pong_tx, o).expect("pinger alive");
            }
        })
    };
    barrier.wait();
    send(&mut ping_tx, order(u64::MAX)).expect("echo alive");
    recv(&mut pong_rx).expect("echo alive");
    let start = Instant::now();
    for i in 0..iters {
        send(&mut ping_tx, order(i)).expect("echo alive");
        let back = recv(&mut pong_rx).expect("echo alive");
        assert_eq!(back.order_id, i);
    }
    let elapsed = start.elapsed();
    echo.join().expect("echo thread finished");
    elapsed / 2
}

/// Streams `iters` orders from one thread to another; returns the time from the barrier to the
/// last order received.
fn stream<R: Ring>(iters: u64) -> Duration {
    let (mut tx, mut rx) = R::with_capacity(RING_CAPACITY_ORDERS);
    let barrier = Arc::new(Barrier::new(2));
    let producer = {
        let barrier = Arc::clone(&barrier);
        thread::spawn(move || {
            barrier.wait();
            let start = Instant::now();
            for i in 0..iters {
                send(&mut tx, order(i)).expect("consumer alive");
            }
            start
        })
    };
    barrier.wait();
    let consumer_start = Instant::now();
    for i in 0..iters {
        let o = recv(&mut rx).expect("producer alive");
        debug_assert_eq!(o.order_id, i);
        black_box(o);
    }
    let stop = Instant::now();
    let producer_start = producer.join().expect("producer thread finished");
    stop.duration_since(producer_start.min(consumer_start))
}

fn ring_latency(c: &mut Criterion) {
    check_is_bounded_fifo::<Rtrb>();
    check_is_bounded_fifo::<CrossbeamArrayQueue>();
    check_is_bounded_fifo::<StdSyncChannel>();
    let mut group = c.benchmark_group("ring_latency");
    group.bench_function(Rtrb::NAME, |b| b.iter_custom(ping_pong::<Rtrb>));
    group.bench_function(CrossbeamArrayQueue::NAME, |b| {
        b.iter_custom(ping_pong::<CrossbeamArrayQueue>)
    });
    group.bench_function(StdSyncChannel::NAME, |b| {
        b.iter_custom(ping_pong::<StdSyncChannel>)
    });
    group.finish();
}

fn ring_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_throughput");
    group.throughput(Throughput::Elements(1));
    group.bench_function(Rtrb::NAME, |b| b.iter_custom(stream::<Rtrb>));
    group.bench_function(CrossbeamArrayQueue::NAME, |b| {
        b.iter_custom(stream::<CrossbeamArrayQueue>)
    });
    group.bench_function(StdSyncChannel::NAME, |b| {
        b.iter_custom(stream::<StdSyncChannel>)
    });
    group.finish();
}

criterion_group!(benches, ring_latency, ring_throughput);
criterion_main!(benches);
