//! The egress stage: accepted orders out over ZeroMQ PUSH, in batch frames.
//!
//! It takes everything waiting (at most `max_batch` per unit of work), encodes it as egress
//! frames ([`crate::frames`]; at most [`crate::limits::egress_frame_orders`] orders each) into
//! a buffer allocated at start-up and hands them to ZeroMQ without blocking. If downstream
//! cannot take a frame (no peer connected — the socket is `ZMQ_IMMEDIATE`,
//! so nothing queues for absent peers — or its high-water mark is reached), egress waits for
//! the socket to become writable, [`EGRESS_POLL_MS`] at a time, and tries again, counting each
//! wait in `engine_egress_backpressure_waits_total`. It never drops: while it waits its ring
//! fills, the journal stops, and so on back to the ingress. The latency of an accepted order
//! ends when its frame has been handed to ZeroMQ. With no downstream (`--out none`) egress
//! only records latency.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use rtrb::Consumer;

use crate::clock::Clock;
use crate::frames::EgressEntry;
use crate::latency::Recorder;
use crate::limits::EGRESS_POLL_MS;
use crate::metrics::{bump, Metrics};
use crate::out_format::{OutEncoder, OutFormat};
use crate::stages::{Outbound, Stage, StageError, Step};

/// Hands one frame to ZeroMQ without ever blocking for long: when downstream cannot take it
/// (no peer connected, or its high-water mark reached), waits for the socket to become
/// writable [`EGRESS_POLL_MS`] at a time and retries, counting each wait in `waits`. With
/// `stop`, gives up (returns `Ok(false)`, nothing sent) once the flag is set; without it,
/// waits until the frame is taken. Returns `Ok(true)` when the frame was handed over.
pub fn send_waiting(
    socket: &zmq::Socket,
    bytes: &[u8],
    waits: &AtomicU64,
    stop: Option<&AtomicBool>,
) -> Result<bool, StageError> {
    loop {
        match socket.send(bytes, zmq::DONTWAIT) {
            Ok(()) => return Ok(true),
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                if stop.is_some_and(|s| s.load(Relaxed)) {
                    return Ok(false);
                }
                bump(waits, 1);
                // Wait (bounded) for downstream to take something, then retry.
                if let Err(source) = socket.poll(zmq::POLLOUT, EGRESS_POLL_MS) {
                    if source != zmq::Error::EINTR {
                        return Err(StageError::Zmq {
                            what: "egress poll",
                            source,
                        });
                    }
                }
            }
            Err(source) => {
                return Err(StageError::Zmq {
                    what: "egress send",
                    source,
                })
            }
        }
    }
}

/// The egress stage.
pub struct EgressStage {
    socket: Option<zmq::Socket>,
    input: Consumer<Outbound>,
    /// One message: a batch frame, or one order (`--out-format`).
    frame: OutEncoder,
    /// Most orders in one frame (`--max-batch`, less where the send queue's orders bound it).
    max_batch: usize,
    /// Most orders one `do_work` sends, in as many frames as that takes (`--max-batch`).
    per_work: usize,
    /// Never wait for downstream inside `do_work` (shared duty cycle): a frame it cannot take
    /// yet is held, its orders stay on the ring, and the thread waits on the socket.
    nonblocking: bool,
    /// Orders (from the front of the ring) of the frame built but not taken by ZeroMQ yet.
    held: Option<usize>,
    clock: Clock,
    metrics: Arc<Metrics>,
    recorder: Recorder,
}

impl std::fmt::Debug for EgressStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressStage")
            .field("push", &self.socket.is_some())
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl EgressStage {
    /// Egress to `socket` (a connected PUSH socket), or nowhere when `None`.
    pub fn new(
        socket: Option<zmq::Socket>,
        input: Consumer<Outbound>,
        max_batch: usize,
        clock: Clock,
        metrics: Arc<Metrics>,
        recorder: Recorder,
    ) -> EgressStage {
        let per_work = max_batch.max(1);
        // A frame carries at most the orders the send queue may hold per frame (the queue is
        // counted in frames; `limits::egress_frame_orders`).
        let max_batch = match &socket {
            Some(s) => crate::limits::egress_frame_orders(
                usize::try_from(s.get_sndhwm().unwrap_or(1)).unwrap_or(1),
                max_batch,
            ),
            None => max_batch,
        }
        .max(1);
        EgressStage {
            socket,
            input,
            frame: OutEncoder::new(OutFormat::Batch, max_batch),
            max_batch,
            per_work,
            nonblocking: false,
            held: None,
            clock,
            metrics,
            recorder,
        }
    }

    /// Sends accepted orders in `format` (default [`OutFormat::Batch`]): with `order` and
    /// `json`, one message per order, with the same back-pressure (a message downstream
    /// cannot take is held and its order stays on the ring).
    pub fn with_format(mut self, format: OutFormat) -> EgressStage {
        self.frame = OutEncoder::new(format, self.max_batch);
        self
    }

    /// Hands frames to ZeroMQ without ever waiting (see the `nonblocking` field).
    pub fn nonblocking(mut self) -> EgressStage {
        self.nonblocking = true;
        self
    }

    /// The acceptance latencies (and the socket, so its linger can deliver what is queued).
    pub fn finish(self) -> (Recorder, Option<zmq::Socket>) {
        (self.recorder, self.socket)
    }
}

impl EgressStage {
    /// The first `n` orders of the ring have left (handed to ZeroMQ, or no downstream):
    /// record their latency and free their slots.
    fn release(&mut self, n: usize) -> Result<Step, StageError> {
        let Ok(chunk) = self.input.read_chunk(n) else {
            return Err(StageError::Invariant(format!(
                "egress: {n} orders sent but fewer on the ring"
            )));
        };
        let t_end = self.clock.now_ns();
        let (a, b) = chunk.as_slices();
        for o in a.iter().chain(b.iter()) {
            self.recorder.record(
                o.input_seq,
                o.t_sched_ns,
                o.t_in_ns,
                o.t_sent_ns,
                o.t_decided_ns,
                t_end,
            );
        }
        chunk.commit_all();
        bump(&self.metrics.egress.orders, n as u64);
        self.recorder
            .maybe_publish(t_end, &self.metrics.latency_accepted);
        Ok(Step::Worked(n))
    }
}

impl EgressStage {
    /// Encodes the first `n` orders of the ring into one frame and hands it to ZeroMQ. The
    /// orders stay on the ring (the chunk is not committed) until ZeroMQ has taken the frame.
    /// Nonblocking: a frame downstream cannot take is held (`held`), to be retried — with
    /// whatever arrived meanwhile — once the socket is writable.
    fn send_front(&mut self, n: usize) -> Result<Step, StageError> {
        self.held = None;
        let Some(socket) = &self.socket else {
            return self.release(n);
        };
        let Ok(chunk) = self.input.read_chunk(n) else {
            return Err(StageError::Invariant(format!(
                "egress: {n} orders to send but fewer on the ring"
            )));
        };
        let (a, b) = chunk.as_slices();
        self.frame.clear();
        for o in a.iter().chain(b.iter()) {
            self.frame.push(&EgressEntry {
                input_seq: o.input_seq,
                journal_seq: o.journal_seq,
                order: o.order,
            });
        }
        let bytes = self.frame.finish();
        if self.nonblocking {
            match socket.send(bytes, zmq::DONTWAIT) {
                Ok(()) => {}
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                    bump(&self.metrics.egress.backpressure_waits, 1);
                    self.held = Some(n);
                    return Ok(Step::Idle);
                }
                Err(source) => {
                    return Err(StageError::Zmq {
                        what: "egress send",
                        source,
                    })
                }
            }
        } else {
            // Egress drains everything in flight, so it does not give up on a stop flag.
            send_waiting(socket, bytes, &self.metrics.egress.backpressure_waits, None)?;
        }
        bump(&self.metrics.egress.frames, 1);
        self.release(n)
    }
}

impl Stage for EgressStage {
    /// Sends frames until the ring is empty, downstream cannot take more, or `per_work`
    /// orders have gone. One frame per call would move at most one frame's orders (16 with
    /// the default send queue) per round of a shared duty cycle, and every stage before it
    /// would then work in batches of that size once the rings filled: at `--rate max`,
    /// batches of 16.6 orders on average, 1.1-1.5 M orders/s with a sink against 2.0-2.3 M
    /// without one (docs/results.md, "Seventh session").
    fn do_work(&mut self) -> Result<Step, StageError> {
        let mut sent = 0usize;
        loop {
            match self.send_some()? {
                Step::Worked(n) => {
                    sent = sent.saturating_add(n);
                    if sent >= self.per_work {
                        return Ok(Step::Worked(sent));
                    }
                }
                other if sent == 0 => return Ok(other),
                _ => return Ok(Step::Worked(sent)),
            }
        }
    }

    fn ready(&self) -> bool {
        // A held frame waits for room downstream, which `register_waits` polls for: the
        // orders behind it on the ring are no work until then (a thread that parks on its
        // bell would otherwise take them for work and spin).
        (self.held.is_none() && !self.input.is_empty()) || self.input.is_abandoned()
    }

    fn register_waits(&self, w: &mut crate::waitset::WaitSet) {
        if let (Some(_), Some(socket)) = (self.held, &self.socket) {
            w.socket(socket, zmq::POLLOUT);
        }
    }
}

impl EgressStage {
    /// One frame: the held one once downstream has room, or the front of the ring.
    fn send_some(&mut self) -> Result<Step, StageError> {
        if let Some(n) = self.held {
            // A frame downstream could not take. Ask libzmq first: a send that finds the pipe
            // full processes the I/O thread's commands (the "room again" one among them) at
            // most once per ~1 ms (its send path is throttled), so retrying sends alone held
            // frames for hundreds of µs. Reading ZMQ_EVENTS processes them at once.
            let Some(socket) = &self.socket else {
                return Err(StageError::Invariant(
                    "egress: a held frame without a socket".into(),
                ));
            };
            match socket.get_events() {
                Ok(ev) if ev.contains(zmq::POLLOUT) => {}
                Ok(_) => return Ok(Step::Idle),
                Err(source) => {
                    return Err(StageError::Zmq {
                        what: "egress events",
                        source,
                    })
                }
            }
            // Room again. The held orders are still at the front of the ring (uncommitted):
            // send them together with every order that arrived while they waited, as one
            // frame (up to `max_batch`). A downstream that lags then gets fewer, fuller
            // frames instead of a queue of one-order frames it must catch up on.
            let avail = self.input.slots();
            assert!(
                avail >= n,
                "egress: {n} held orders but only {avail} on the ring"
            );
            return self.send_front(avail.min(self.frame.capacity()));
        }
        let avail = self.input.slots();
        if avail == 0 {
            return Ok(if self.input.is_abandoned() && self.input.slots() == 0 {
                Step::Done
            } else {
                Step::Idle
            });
        }
        self.send_front(avail.min(self.frame.capacity()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::frames::EgressFrame;
    use rtrb::RingBuffer;

    /// An egress stage on `socket` reading `c`, counting into `m`, recording from input_seq 0.
    fn stage_on(
        socket: Option<zmq::Socket>,
        c: rtrb::Consumer<Outbound>,
        max_batch: usize,
        m: &Arc<Metrics>,
    ) -> EgressStage {
        EgressStage::new(
            socket,
            c,
            max_batch,
            Clock::new(),
            Arc::clone(m),
            Recorder::new(0, false),
        )
    }

    fn outbound(i: u64) -> Outbound {
        Outbound {
            input_seq: i,
            journal_seq: 10 + i,
            order: orders::Order {
                order_id: 500 + i,
                symbol: orders::Symbol::new("AAPL").unwrap(),
                ..orders::Order::default()
            },
            t_sched_ns: 1,
            t_in_ns: 2,
            t_sent_ns: 3,
            t_decided_ns: 3,
        }
    }

    #[test]
    fn sends_one_frame_per_batch_and_waits_for_a_peer() {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_immediate(true).unwrap();
        push.set_sndhwm(1).unwrap();
        // ipc, as in production: libzmq's inproc transport does not honour ZMQ_IMMEDIATE
        // when the peer binds after the connect.
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}", dir.path().join("egress.ipc").display());
        push.connect(&endpoint).unwrap();
        let (mut p, c) = RingBuffer::new(16);
        let m = Arc::new(Metrics::default());
        for i in 0..5 {
            p.push(outbound(i)).unwrap();
        }
        drop(p);
        let mut stage = stage_on(Some(push), c, 3, &m);
        // The sink binds only after a while: egress must wait, not drop.
        let ctx2 = ctx.clone();
        let endpoint2 = endpoint.clone();
        let sink = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            let pull = ctx2.socket(zmq::PULL).unwrap();
            pull.set_rcvtimeo(10_000).unwrap(); // fail, never hang
            pull.bind(&endpoint2).unwrap();
            let mut got = Vec::new();
            while got.len() < 5 {
                let msg = pull.recv_bytes(0).unwrap();
                let f = EgressFrame::parse(&msg).unwrap();
                got.extend(
                    f.iter()
                        .map(|e| (e.input_seq, e.journal_seq, e.order.order_id)),
                );
            }
            got
        });
        let clock = Clock::new();
        let mut idle = crate::idle::Idle::new(crate::idle::IdleMode::Backoff);
        crate::stages::run_stage(&mut stage, &mut idle, &clock).unwrap();
        let got = sink.join().unwrap();
        assert_eq!(
            got,
            (0..5).map(|i| (i, 10 + i, 500 + i)).collect::<Vec<_>>()
        );
        assert_eq!(m.egress.frames.load(Relaxed), 2, "batches of 3 + 2");
        assert_eq!(m.egress.orders.load(Relaxed), 5);
        assert!(
            m.egress.backpressure_waits.load(Relaxed) >= 1,
            "it waited for the peer"
        );
        let (rec, _) = stage.finish();
        assert_eq!(rec.finish().0.total.len(), 5);
    }

    /// One `do_work` sends up to `max_batch` orders in as many frames as the send queue's
    /// frame size needs (64 orders with the default high-water mark), not one frame: in a
    /// shared duty cycle one frame per round throttled every stage to batches of one frame.
    #[test]
    fn one_unit_of_work_sends_up_to_max_batch_orders_in_several_frames() {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}", dir.path().join("egress.ipc").display());
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.set_rcvtimeo(10_000).unwrap(); // fail, never hang
        pull.bind(&endpoint).unwrap();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_sndhwm(crate::limits::EGRESS_SNDHWM_MESSAGES_DEFAULT)
            .unwrap();
        push.connect(&endpoint).unwrap();
        let (mut p, c) = RingBuffer::new(512);
        for i in 0..300 {
            p.push(outbound(i)).unwrap();
        }
        let m = Arc::new(Metrics::default());
        let mut stage = stage_on(Some(push), c, 256, &m).nonblocking();
        let per_frame = crate::limits::egress_frame_orders(
            crate::limits::EGRESS_SNDHWM_MESSAGES_DEFAULT as usize,
            256,
        );
        assert_eq!(per_frame, 64);
        // The peer is connected once a frame can be sent (the PUSH connects in the background).
        let step = loop {
            match stage.do_work().unwrap() {
                Step::Idle => std::thread::sleep(std::time::Duration::from_millis(1)),
                s => break s,
            }
        };
        assert_eq!(
            step,
            Step::Worked(256),
            "max_batch orders in one unit of work"
        );
        assert_eq!(m.egress.frames.load(Relaxed), 4, "frames of 64");
        assert_eq!(stage.do_work().unwrap(), Step::Worked(44), "the rest");
        assert_eq!(m.egress.frames.load(Relaxed), 5, "4 × 64 + 44");
        assert_eq!(stage.do_work().unwrap(), Step::Idle, "nothing left");
        let mut got = 0;
        while got < 300 {
            let msg = pull.recv_bytes(0).unwrap();
            let f = EgressFrame::parse(&msg).unwrap();
            assert!(f.iter().count() <= per_frame);
            got += f.iter().count();
        }
        assert_eq!(got, 300);
    }

    #[test]
    fn a_send_with_no_peer_waits_bounded_and_gives_up_on_stop() {
        let ctx = zmq::Context::new();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_immediate(true).unwrap();
        push.set_linger(0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        push.connect(&format!(
            "ipc://{}",
            dir.path().join("nobody.ipc").display()
        ))
        .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let setter = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            stop2.store(true, Relaxed);
        });
        let waits = AtomicU64::new(0);
        let t = std::time::Instant::now();
        let sent = send_waiting(&push, b"frame", &waits, Some(&stop)).unwrap();
        setter.join().unwrap();
        assert!(!sent, "nobody took it: not sent");
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        assert!(waits.load(Relaxed) >= 1, "each wait is counted");
    }

    #[test]
    fn a_held_frame_goes_out_with_the_orders_that_arrived_meanwhile() {
        let ctx = zmq::Context::new();
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}", dir.path().join("held.ipc").display());
        let pull = ctx.socket(zmq::PULL).unwrap();
        pull.set_rcvhwm(1).unwrap();
        pull.set_rcvbuf(4096).unwrap();
        pull.set_rcvtimeo(10_000).unwrap();
        pull.bind(&endpoint).unwrap();
        let push = ctx.socket(zmq::PUSH).unwrap();
        push.set_sndhwm(1).unwrap();
        push.set_sndbuf(4096).unwrap();
        push.connect(&endpoint).unwrap();
        let (mut p, c) = RingBuffer::new(4096);
        let m = Arc::new(Metrics::default());
        let mut stage = stage_on(Some(push), c, 8, &m).nonblocking();
        // One order at a time until downstream (not reading) cannot take a frame.
        let mut next = 0u64;
        let t0 = std::time::Instant::now();
        while m.egress.backpressure_waits.load(Relaxed) == 0 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(10),
                "never full"
            );
            p.push(outbound(next)).unwrap();
            next += 1;
            let _ = stage.do_work().unwrap();
        }
        let held_at = next - 1;
        assert_eq!(stage.held, Some(1), "the one-order frame is held");
        // Three more orders arrive while it waits.
        for _ in 0..3 {
            p.push(outbound(next)).unwrap();
            next += 1;
        }
        assert!(
            !stage.ready(),
            "orders behind a held frame are no work until downstream has room (a parking \
             thread would spin)"
        );
        // Downstream reads (ZeroMQ's I/O thread may already have made room): the held order
        // and the three go out as one frame, not as the held one-order frame and three more.
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while got.len() < next as usize {
            let _ = stage.do_work().unwrap();
            while let Ok(msg) = pull.recv_bytes(zmq::DONTWAIT) {
                let f = EgressFrame::parse(&msg).unwrap();
                sizes.push(f.iter().count());
                got.extend(f.iter().map(|e| e.input_seq));
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "stuck");
        }
        assert_eq!(
            got,
            (0..next).collect::<Vec<_>>(),
            "each order once, in order"
        );
        let last = *sizes.last().unwrap();
        assert_eq!(
            last, 4,
            "frames {sizes:?}: the held order {held_at} and the 3 after it"
        );
        assert_eq!(m.egress.orders.load(Relaxed), next);
    }

    #[test]
    fn no_downstream_only_records() {
        let (mut p, c) = RingBuffer::new(4);
        let m = Arc::new(Metrics::default());
        p.push(outbound(0)).unwrap();
        let mut stage = EgressStage::new(
            None,
            c,
            8,
            Clock::new(),
            Arc::clone(&m),
            Recorder::new(1, false),
        );
        assert_eq!(stage.do_work().unwrap(), Step::Worked(1));
        assert_eq!(stage.do_work().unwrap(), Step::Idle);
        drop(p);
        assert_eq!(stage.do_work().unwrap(), Step::Done);
        assert_eq!(m.egress.frames.load(Relaxed), 0);
        let (rec, _) = stage.finish();
        assert_eq!(rec.finish().0.total.len(), 0, "input_seq 0 is warm-up");
    }
}
