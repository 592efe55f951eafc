//! The risk stage: one request per batch, verdicts stamped, pushed to the journal ring.
//!
//! It takes everything waiting (at most `max_batch`, at most the journal ring's free room),
//! copies the orders into a buffer allocated at start-up, and asks the risk gate once. The
//! gate never blocks longer than its timeout: on a timeout every order of the batch is
//! rejected `risk-timeout` (the client closes and reopens its REQ socket and moves to the next
//! endpoint: Lazy Pirate). The round trip of every batch is measured; the longest is
//! published as `engine_risk_wait_max_us` and in the replay report, which is how the tests
//! prove that no stage waited longer than the timeout.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use orders::{Order, Reason};
use rtrb::{Consumer, Producer};

use crate::clock::Clock;
use crate::metrics::{bump, raise, Metrics};
use crate::stages::{chunk_items, Decided, Inbound, Stage, StageError, Step};
use crate::waitset::WaitSet;

/// How one batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOutcome {
    /// Verdicts arrived.
    Replied,
    /// No reply within the timeout: every verdict is `risk-timeout`.
    TimedOut,
    /// An error or unreadable reply: every verdict is `risk-error`.
    Failed,
    /// The service refused the batch for good (above its batch bound): the stage stops the
    /// engine with [`RiskGate::refusal`] instead of journaling the verdicts.
    Refused,
}

/// How a non-blocking step of a batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatePoll {
    /// In flight: the stage registers the gate's waits and polls again later.
    Pending,
    /// Ended: `out` holds the verdicts.
    Ready(GateOutcome),
}

/// Where verdicts come from: the risk client, the checker itself (inline), or a stand-in in
/// tests.
pub trait RiskGate: Send {
    /// One verdict per order in `out` (`out.len() == orders.len()`); never blocks longer
    /// than the configured timeout; never allocates per order.
    fn check_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GateOutcome;
    /// Endpoint changes so far.
    fn failovers(&self) -> u64;

    /// Whether the checks run in this call on the calling thread (`--risk inline`), rather
    /// than on a server's thread or process: what threading `auto` weighs
    /// ([`crate::threading::Workload`]).
    fn checks_inline(&self) -> bool {
        false
    }

    /// Starts a batch without blocking (the shared duty cycle). `Pending`: call
    /// [`RiskGate::poll_batch`] with the same `orders` and `out` until it is ready. The
    /// default runs [`RiskGate::check_batch`] (a gate that never waits, or a test stand-in).
    fn start_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GatePoll {
        GatePoll::Ready(self.check_batch(orders, now_ns, out))
    }

    /// Moves the batch in flight on without blocking. Only called after `start_batch`
    /// returned `Pending`; the default (for gates that never return it) fails the batch.
    fn poll_batch(&mut self, _orders: &[Order], out: &mut [Reason]) -> GatePoll {
        out.fill(Reason::RiskError);
        GatePoll::Ready(GateOutcome::Failed)
    }

    /// What the batch in flight waits for (its socket and its deadline).
    fn register_waits(&self, _w: &mut WaitSet, _clock: &Clock) {}

    /// The largest batch the gate takes, if below the stage's own (a remote server's bound,
    /// learned by the client's hello at start-up).
    fn max_batch(&self) -> Option<usize> {
        None
    }

    /// (session, newest batch whose verdicts came from the service, its number of orders)
    /// after the last batch, for the journal (see `Decided::risk_session`); zeros without a
    /// session.
    fn journal_point(&self) -> (u64, u64, u32) {
        (0, 0, 0)
    }

    /// Why the last batch was `Refused` (cold).
    fn refusal(&self) -> String {
        String::new()
    }

    /// The first 16 bytes of the reply behind the last [`Reason::RiskRefused`] verdict (the
    /// JSON protocol; zeros for the others).
    fn refused_reply(&self) -> [u8; orders::RISK_REPLY_LEN_BYTES] {
        [0; orders::RISK_REPLY_LEN_BYTES]
    }
}

/// `--risk-protocol json`: the source design's one order per request. Batches are of one
/// order ([`RiskGate::max_batch`] is 1), so the timeout bounds each wait as for a batch.
impl RiskGate for risk::JsonRiskClient {
    fn check_batch(&mut self, orders: &[Order], _now_ns: u64, out: &mut [Reason]) -> GateOutcome {
        match (orders, out) {
            ([], []) => GateOutcome::Replied,
            ([o], [r]) => gate_outcome(risk::JsonRiskClient::check_order(self, o, r)),
            (_, out) => {
                out.fill(Reason::RiskError);
                GateOutcome::Failed
            }
        }
    }
    fn failovers(&self) -> u64 {
        self.stats().failovers
    }
    fn start_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GatePoll {
        match (orders, out) {
            ([o], [r]) => gate_poll(risk::JsonRiskClient::start_order(self, o, r)),
            (orders, out) => GatePoll::Ready(self.check_batch(orders, now_ns, out)),
        }
    }
    fn poll_batch(&mut self, _orders: &[Order], out: &mut [Reason]) -> GatePoll {
        match out {
            [r] => gate_poll(risk::JsonRiskClient::poll_order(self, r)),
            out => {
                out.fill(Reason::RiskError);
                GatePoll::Ready(GateOutcome::Failed)
            }
        }
    }
    fn max_batch(&self) -> Option<usize> {
        Some(1)
    }
    fn refused_reply(&self) -> [u8; orders::RISK_REPLY_LEN_BYTES] {
        self.last_reply()
    }
    fn register_waits(&self, w: &mut WaitSet, clock: &Clock) {
        if let (Some(waiting), Some(socket)) = (self.waiting(), self.socket()) {
            w.socket(socket, waiting.events);
            let left = waiting
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            w.deadline(
                clock
                    .now_ns()
                    .saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)),
            );
        }
    }
}

fn gate_outcome(o: risk::BatchOutcome) -> GateOutcome {
    match o {
        risk::BatchOutcome::Replied => GateOutcome::Replied,
        risk::BatchOutcome::TimedOut => GateOutcome::TimedOut,
        risk::BatchOutcome::Failed => GateOutcome::Failed,
        risk::BatchOutcome::Refused => GateOutcome::Refused,
    }
}

fn gate_poll(p: risk::BatchPoll) -> GatePoll {
    match p {
        risk::BatchPoll::Pending => GatePoll::Pending,
        risk::BatchPoll::Ready(o) => GatePoll::Ready(gate_outcome(o)),
    }
}

impl RiskGate for risk::RiskClient {
    fn check_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GateOutcome {
        gate_outcome(risk::RiskClient::check_batch(self, orders, now_ns, out))
    }
    fn failovers(&self) -> u64 {
        self.stats().failovers
    }
    fn start_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GatePoll {
        gate_poll(risk::RiskClient::start_batch(self, orders, now_ns, out))
    }
    fn poll_batch(&mut self, orders: &[Order], out: &mut [Reason]) -> GatePoll {
        gate_poll(risk::RiskClient::poll_batch(self, orders, out))
    }
    fn max_batch(&self) -> Option<usize> {
        Some(risk::RiskClient::max_batch(self))
    }
    fn journal_point(&self) -> (u64, u64, u32) {
        let p = risk::RiskClient::journal_point(self);
        (p.prev_session, p.journaled_batch, p.journaled_orders)
    }
    fn refusal(&self) -> String {
        risk::RiskClient::refusal(self).to_owned()
    }
    fn register_waits(&self, w: &mut WaitSet, clock: &Clock) {
        if let (Some(waiting), Some(socket)) = (self.waiting(), self.socket()) {
            w.socket(socket, waiting.events);
            let left = waiting
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            w.deadline(
                clock
                    .now_ns()
                    .saturating_add(u64::try_from(left.as_nanos()).unwrap_or(u64::MAX)),
            );
        }
    }
}

/// `--risk inline`: the checks run on the engine's own thread, a direct call into the same
/// [`risk::Checker`] the embedded and remote services use (same limits, same state, same
/// reasons, recovered from the journal the same way). No server thread, no socket, no
/// timeout (a call takes microseconds): the INVOKER mode of risk.
#[derive(Debug)]
pub struct InlineRisk {
    checker: risk::Checker,
}

impl InlineRisk {
    /// Checks with `checker` (its state already recovered from the journal).
    pub fn new(checker: risk::Checker) -> InlineRisk {
        InlineRisk { checker }
    }

    /// The checker, for inspection.
    pub fn checker(&self) -> &risk::Checker {
        &self.checker
    }
}

impl RiskGate for InlineRisk {
    fn check_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GateOutcome {
        self.checker.check_batch(orders, now_ns, out);
        GateOutcome::Replied
    }
    fn failovers(&self) -> u64 {
        0
    }
}

/// The engine's risk gate: a REQ client (remote or embedded service) or the inline checker.
#[derive(Debug)]
pub enum Gate {
    /// Over ZeroMQ REQ.
    Client(Box<risk::RiskClient>),
    /// On the engine's thread.
    Inline(Box<InlineRisk>),
    /// An old JSON risk service over REQ, one order per request (`--risk-protocol json`).
    Json(Box<risk::JsonRiskClient>),
}

impl RiskGate for Gate {
    #[inline]
    fn check_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GateOutcome {
        match self {
            Gate::Client(c) => RiskGate::check_batch(c.as_mut(), orders, now_ns, out),
            Gate::Inline(i) => i.check_batch(orders, now_ns, out),
            Gate::Json(j) => RiskGate::check_batch(j.as_mut(), orders, now_ns, out),
        }
    }
    fn checks_inline(&self) -> bool {
        matches!(self, Gate::Inline(_))
    }
    fn failovers(&self) -> u64 {
        match self {
            Gate::Client(c) => RiskGate::failovers(c.as_ref()),
            Gate::Inline(_) => 0,
            Gate::Json(j) => RiskGate::failovers(j.as_ref()),
        }
    }
    #[inline]
    fn start_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GatePoll {
        match self {
            Gate::Client(c) => RiskGate::start_batch(c.as_mut(), orders, now_ns, out),
            Gate::Inline(i) => i.start_batch(orders, now_ns, out),
            Gate::Json(j) => RiskGate::start_batch(j.as_mut(), orders, now_ns, out),
        }
    }
    fn poll_batch(&mut self, orders: &[Order], out: &mut [Reason]) -> GatePoll {
        match self {
            Gate::Client(c) => RiskGate::poll_batch(c.as_mut(), orders, out),
            Gate::Inline(i) => i.poll_batch(orders, out),
            Gate::Json(j) => RiskGate::poll_batch(j.as_mut(), orders, out),
        }
    }
    fn register_waits(&self, w: &mut WaitSet, clock: &Clock) {
        match self {
            Gate::Client(c) => RiskGate::register_waits(c.as_ref(), w, clock),
            Gate::Json(j) => RiskGate::register_waits(j.as_ref(), w, clock),
            Gate::Inline(_) => {}
        }
    }
    fn max_batch(&self) -> Option<usize> {
        match self {
            Gate::Client(c) => RiskGate::max_batch(c.as_ref()),
            Gate::Inline(_) => None,
            Gate::Json(j) => RiskGate::max_batch(j.as_ref()),
        }
    }
    #[inline]
    fn journal_point(&self) -> (u64, u64, u32) {
        match self {
            Gate::Client(c) => RiskGate::journal_point(c.as_ref()),
            Gate::Inline(_) | Gate::Json(_) => (0, 0, 0),
        }
    }
    fn refusal(&self) -> String {
        match self {
            Gate::Client(c) => RiskGate::refusal(c.as_ref()),
            Gate::Inline(_) | Gate::Json(_) => String::new(),
        }
    }
    fn refused_reply(&self) -> [u8; orders::RISK_REPLY_LEN_BYTES] {
        match self {
            Gate::Json(j) => RiskGate::refused_reply(j.as_ref()),
            Gate::Client(_) | Gate::Inline(_) => [0; orders::RISK_REPLY_LEN_BYTES],
        }
    }
}

/// A batch whose verdicts are awaited (non-blocking mode).
#[derive(Debug, Clone, Copy)]
struct InFlight {
    n: usize,
    t_ask: u64,
}

/// The risk stage.
pub struct RiskStage<G: RiskGate> {
    gate: G,
    input: Consumer<Inbound>,
    out: Producer<Decided>,
    /// The batch being checked (taken off ring A).
    batch: Vec<Inbound>,
    orders: Vec<Order>,
    reasons: Vec<Reason>,
    max_batch: usize,
    /// Send, then poll (shared duty cycle), instead of waiting for the verdicts.
    nonblocking: bool,
    in_flight: Option<InFlight>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl<G: RiskGate> std::fmt::Debug for RiskStage<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiskStage")
            .field("max_batch", &self.max_batch)
            .field("nonblocking", &self.nonblocking)
            .finish_non_exhaustive()
    }
}

impl<G: RiskGate> RiskStage<G> {
    /// A stage asking `gate` for batches of at most `max_batch` orders (or the gate's own
    /// bound, if lower: [`RiskGate::max_batch`]), waiting for each batch's verdicts (a thread
    /// of its own).
    pub fn new(
        gate: G,
        input: Consumer<Inbound>,
        out: Producer<Decided>,
        max_batch: usize,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> RiskStage<G> {
        let max_batch = max_batch.min(gate.max_batch().unwrap_or(max_batch)).max(1);
        RiskStage {
            gate,
            input,
            out,
            batch: Vec::with_capacity(max_batch),
            orders: Vec::with_capacity(max_batch),
            reasons: vec![Reason::Accepted; max_batch],
            max_batch,
            nonblocking: false,
            in_flight: None,
            clock,
            metrics,
        }
    }

    /// Sends a batch and returns, then polls for its verdicts on later calls (a thread that
    /// runs other stages too). Deadline and verdicts are the same.
    pub fn nonblocking(mut self) -> RiskStage<G> {
        self.nonblocking = true;
        self
    }

    /// Gives the gate back (to stop an embedded server after the stage is done).
    pub fn into_gate(self) -> G {
        self.gate
    }

    /// The batch has its verdicts: decided orders onto ring B.
    fn complete(&mut self, f: InFlight, outcome: GateOutcome) -> Result<Step, StageError> {
        let n = f.n;
        if outcome == GateOutcome::Refused {
            // Nothing was applied and nothing is journaled: the orders are decided again
            // after a restart with a batch bound that fits.
            return Err(StageError::RiskRefused(self.gate.refusal()));
        }
        let t_decided = self.clock.now_ns();
        // The batch's orders are journaled in order: the record of its i-th order says that
        // the first i + 1 of a batch the service answered are in the journal (all of the
        // previous answered batch, when this one was not answered).
        let (risk_session, risk_batch, batch_orders) = self.gate.journal_point();
        let replied = outcome == GateOutcome::Replied;
        let reasons = &self.reasons[..n];
        debug_assert!(
            outcome != GateOutcome::TimedOut || reasons.iter().all(|r| *r == Reason::RiskTimeout)
        );
        let Ok(out_chunk) = self.out.write_chunk_uninit(n) else {
            // Room for `n` was there when the batch was taken, and only this stage pushes.
            return Err(StageError::Invariant(format!(
                "risk: no room on the journal ring for a batch of {n} decided orders \
                 (input_seq {}..)",
                self.batch.first().map_or(0, |b| b.input_seq)
            )));
        };
        let refused_reply = self.gate.refused_reply();
        out_chunk.fill_from_iter(self.batch.iter().zip(reasons.iter()).zip(1u32..).map(
            |((&inbound, &reason), position)| {
                if reason == Reason::RiskRefused {
                    // A JSON risk service's refusal: its reply rides in the session fields,
                    // which that protocol has no use for (see `Decided::risk_session`).
                    let (a, b) = refused_reply.split_at(8);
                    let word = |x: &[u8]| {
                        let mut w = [0u8; 8];
                        w.copy_from_slice(x);
                        u64::from_le_bytes(w)
                    };
                    return Decided {
                        inbound,
                        reason,
                        t_sent_ns: f.t_ask,
                        t_decided_ns: t_decided,
                        risk_session: word(a),
                        risk_batch: word(b),
                        risk_batch_orders: 0,
                    };
                }
                Decided {
                    inbound,
                    reason,
                    t_sent_ns: f.t_ask,
                    t_decided_ns: t_decided,
                    risk_session,
                    risk_batch,
                    risk_batch_orders: if replied { position } else { batch_orders },
                }
            },
        ));
        let r = &self.metrics.risk;
        bump(&r.batches, 1);
        bump(&r.orders, n as u64);
        match outcome {
            GateOutcome::Replied => {}
            GateOutcome::TimedOut => bump(&r.timeouts, 1),
            GateOutcome::Failed => bump(&r.failed_batches, 1),
            GateOutcome::Refused => {}
        }
        raise(&r.wait_max_ns, t_decided.saturating_sub(f.t_ask));
        r.failovers.store(self.gate.failovers(), Relaxed);
        Ok(Step::Worked(n))
    }
}

impl<G: RiskGate> Stage for RiskStage<G> {
    fn do_work(&mut self) -> Result<Step, StageError> {
        if let Some(f) = self.in_flight {
            if self.out.is_abandoned() {
                return Ok(Step::Done);
            }
            let outcome = match self.gate.poll_batch(&self.orders, &mut self.reasons[..f.n]) {
                GatePoll::Pending => return Ok(Step::Idle),
                GatePoll::Ready(outcome) => outcome,
            };
            self.in_flight = None;
            let decided = match self.complete(f, outcome)? {
                Step::Worked(n) => n,
                other => return Ok(other),
            };
            // Send the next batch at once, before the duty cycle runs the journal and egress
            // for this one: they then work while the next request is on its way, instead of
            // the request waiting for them (at --rate max, ~0.3 ms of journal work per batch
            // of 1024 sat between a reply and the next request).
            return Ok(match self.start_next()? {
                Step::Worked(m) => Step::Worked(decided.saturating_add(m)),
                Step::Idle | Step::WaitUntil(_) | Step::Done => Step::Worked(decided),
            });
        }
        self.start_next()
    }

    fn ready(&self) -> bool {
        if self.in_flight.is_some() {
            // Its verdicts come through the socket (and its deadline), which `register_waits`
            // polls for: the orders on the ring are no work until then (a thread that parks
            // on its bell, `split` mode's, would otherwise take them for work and spin).
            return false;
        }
        // Orders waiting and room for their verdicts, or a neighbour gone.
        (!self.input.is_empty() && (self.out.slots() > 0 || self.out.is_abandoned()))
            || self.input.is_abandoned()
    }

    fn register_waits(&self, w: &mut WaitSet) {
        if self.in_flight.is_some() {
            self.gate.register_waits(w, &self.clock);
        }
    }
}

impl<G: RiskGate> RiskStage<G> {
    /// Takes the orders waiting (at most `max_batch`, at most the room for their verdicts)
    /// and checks them as one batch: decided at once (blocking gate), or sent and in flight.
    fn start_next(&mut self) -> Result<Step, StageError> {
        let avail = self.input.slots();
        if avail == 0 {
            // Check abandonment after emptiness: a producer that pushed and then left is seen.
            return Ok(if self.input.is_abandoned() && self.input.slots() == 0 {
                Step::Done
            } else {
                Step::Idle
            });
        }
        if self.out.is_abandoned() {
            return Ok(Step::Done);
        }
        let free = self.out.slots();
        if free == 0 {
            bump(&self.metrics.risk.backpressure_waits, 1);
            return Ok(Step::Idle);
        }
        let n = avail.min(free).min(self.max_batch);
        let Ok(chunk) = self.input.read_chunk(n) else {
            return Ok(Step::Idle);
        };
        let (a, b) = chunk.as_slices();
        self.batch.clear();
        self.batch.extend(chunk_items(a, b));
        chunk.commit_all();
        // Dense input: the ingress numbers orders consecutively and nothing else pushes.
        assert!(
            self.batch
                .windows(2)
                .all(|w| w[1].input_seq == w[0].input_seq + 1),
            "risk: input_seq not dense within a batch starting at {}",
            self.batch[0].input_seq
        );
        self.orders.clear();
        self.orders.extend(self.batch.iter().map(|x| x.order));
        let reasons = &mut self.reasons[..n];
        let t_ask = self.clock.now_ns();
        let f = InFlight { n, t_ask };
        let poll = if self.nonblocking {
            self.gate.start_batch(&self.orders, t_ask, reasons)
        } else {
            GatePoll::Ready(self.gate.check_batch(&self.orders, t_ask, reasons))
        };
        match poll {
            GatePoll::Ready(outcome) => self.complete(f, outcome),
            GatePoll::Pending => {
                self.in_flight = Some(f);
                // Orders moved off ring A (room for the ingress): that is progress.
                Ok(Step::Worked(n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rtrb::RingBuffer;

    /// Accepts even order ids, rejects odd ones max-qty; records batch sizes.
    struct FakeGate {
        batches: Vec<usize>,
        timeout_next: bool,
    }

    impl RiskGate for FakeGate {
        fn check_batch(&mut self, orders: &[Order], _now: u64, out: &mut [Reason]) -> GateOutcome {
            assert_eq!(orders.len(), out.len());
            self.batches.push(orders.len());
            if self.timeout_next {
                out.fill(Reason::RiskTimeout);
                return GateOutcome::TimedOut;
            }
            for (o, r) in orders.iter().zip(out.iter_mut()) {
                *r = if o.order_id % 2 == 0 {
                    Reason::Accepted
                } else {
                    Reason::MaxQty
                };
            }
            GateOutcome::Replied
        }
        fn failovers(&self) -> u64 {
            3
        }
    }

    fn inbound(i: u64) -> Inbound {
        Inbound {
            input_seq: i,
            order: Order {
                order_id: i,
                ..Order::default()
            },
            t_sched_ns: 1,
            t_in_ns: 2,
        }
    }

    #[test]
    fn batches_grow_with_the_backlog_and_respect_both_rings() {
        let (mut ip, ic) = RingBuffer::new(64);
        let (op, mut oc) = RingBuffer::new(10);
        let m = Arc::new(Metrics::default());
        let gate = FakeGate {
            batches: vec![],
            timeout_next: false,
        };
        let mut s = RiskStage::new(gate, ic, op, 8, Clock::new(), Arc::clone(&m));
        assert_eq!(s.do_work().unwrap(), Step::Idle);
        ip.push(inbound(0)).unwrap();
        assert_eq!(s.do_work().unwrap(), Step::Worked(1), "idle: batch of one");
        for i in 1..=20 {
            ip.push(inbound(i)).unwrap();
        }
        assert_eq!(
            s.do_work().unwrap(),
            Step::Worked(8),
            "backlog: capped by max_batch"
        );
        assert_eq!(
            s.do_work().unwrap(),
            Step::Worked(1),
            "capped by the output ring's room"
        );
        assert_eq!(s.do_work().unwrap(), Step::Idle, "output full: waits");
        assert_eq!(m.risk.backpressure_waits.load(Relaxed), 1);
        let got: Vec<Decided> = (0..10).map(|_| oc.pop().unwrap()).collect();
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d.inbound.input_seq, i as u64, "order kept");
            assert_eq!(d.reason.is_accepted(), i % 2 == 0);
            assert!(d.t_decided_ns > 0);
        }
        while s.do_work().unwrap() != Step::Idle {}
        drop(ip);
        while oc.pop().is_ok() {}
        loop {
            match s.do_work().unwrap() {
                Step::Done => break,
                _ => while oc.pop().is_ok() {},
            }
        }
        assert_eq!(m.risk.orders.load(Relaxed), 21);
        assert_eq!(m.risk.failovers.load(Relaxed), 3);
        let gate = s.into_gate();
        assert_eq!(gate.batches[..3], [1, 8, 1]);
    }

    #[test]
    fn timeouts_are_counted_and_become_verdicts() {
        let (mut ip, ic) = RingBuffer::new(8);
        let (op, mut oc) = RingBuffer::new(8);
        let m = Arc::new(Metrics::default());
        let gate = FakeGate {
            batches: vec![],
            timeout_next: true,
        };
        let mut s = RiskStage::new(gate, ic, op, 8, Clock::new(), Arc::clone(&m));
        ip.push(inbound(2)).unwrap();
        ip.push(inbound(3)).unwrap();
        assert_eq!(s.do_work().unwrap(), Step::Worked(2));
        assert_eq!(oc.pop().unwrap().reason, Reason::RiskTimeout);
        assert_eq!(oc.pop().unwrap().reason, Reason::RiskTimeout);
        assert_eq!(m.risk.timeouts.load(Relaxed), 1);
    }

    #[test]
    fn ends_when_downstream_is_gone() {
        let (mut ip, ic) = RingBuffer::new(8);
        let (op, oc) = RingBuffer::new(8);
        let gate = FakeGate {
            batches: vec![],
            timeout_next: false,
        };
        let mut s = RiskStage::new(gate, ic, op, 8, Clock::new(), Arc::new(Metrics::default()));
        ip.push(inbound(1)).unwrap();
        drop(oc);
        assert_eq!(s.do_work().unwrap(), Step::Done);
    }

    /// A gate that only answers when told: `start_batch` is always pending, `poll_batch`
    /// answers (accepting everything) once `answers` allows one more batch; the blocking
    /// call is never allowed in non-blocking mode.
    struct ManualGate {
        answers: Arc<std::sync::atomic::AtomicU32>,
        started: u32,
    }

    impl RiskGate for ManualGate {
        fn check_batch(&mut self, _: &[Order], _: u64, _: &mut [Reason]) -> GateOutcome {
            panic!("a non-blocking risk stage must not make a blocking call");
        }
        fn failovers(&self) -> u64 {
            0
        }
        fn start_batch(&mut self, _: &[Order], _: u64, _: &mut [Reason]) -> GatePoll {
            self.started += 1;
            GatePoll::Pending
        }
        fn poll_batch(&mut self, _: &[Order], out: &mut [Reason]) -> GatePoll {
            if self.answers.load(Relaxed) == 0 {
                return GatePoll::Pending;
            }
            self.answers.fetch_sub(1, Relaxed);
            out.fill(Reason::Accepted);
            GatePoll::Ready(GateOutcome::Replied)
        }
    }

    /// Item 2 of the threading issue: in non-blocking mode the stage sends a batch and returns
    /// at once; while the verdicts are awaited it takes nothing more (one request in flight)
    /// and never blocks, so the thread's other stages keep working; the verdicts, when they
    /// come, go out in order with the send time of their batch.
    #[test]
    fn a_nonblocking_stage_returns_while_its_batch_is_in_flight() {
        let (mut ip, ic) = RingBuffer::new(64);
        let (op, mut oc) = RingBuffer::new(64);
        let answers = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let gate = ManualGate {
            answers: Arc::clone(&answers),
            started: 0,
        };
        let m = Arc::new(Metrics::default());
        let mut s = RiskStage::new(gate, ic, op, 8, Clock::new(), Arc::clone(&m)).nonblocking();
        for i in 0..3 {
            ip.push(inbound(i)).unwrap();
        }
        assert_eq!(
            s.do_work().unwrap(),
            Step::Worked(3),
            "sent, not waited for"
        );
        assert_eq!(
            ip.slots(),
            64,
            "the batch left ring A: room for the ingress"
        );
        for i in 3..5 {
            ip.push(inbound(i)).unwrap();
        }
        for _ in 0..10 {
            assert_eq!(s.do_work().unwrap(), Step::Idle, "pending: nothing decided");
        }
        assert!(oc.is_empty());
        assert!(
            !s.ready(),
            "orders on ring A are no work while a batch is in flight (a parking thread would spin)"
        );
        answers.store(1, Relaxed);
        assert_eq!(
            s.do_work().unwrap(),
            Step::Worked(3 + 2),
            "verdicts in, and the next batch (orders 3, 4) sent in the same call"
        );
        let first: Vec<Decided> = (0..3).map(|_| oc.pop().unwrap()).collect();
        assert_eq!(
            first
                .iter()
                .map(|d| d.inbound.input_seq)
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(first.iter().all(|d| d.t_decided_ns >= d.t_sent_ns));
        // That batch is in flight: nothing more until its verdicts.
        assert_eq!(s.do_work().unwrap(), Step::Idle);
        assert_eq!(ip.slots(), 64, "orders 3 and 4 left ring A");
        answers.store(1, Relaxed);
        assert_eq!(s.do_work().unwrap(), Step::Worked(2));
        assert_eq!(oc.pop().unwrap().inbound.input_seq, 3);
        assert_eq!(m.risk.batches.load(Relaxed), 2);
        // Input gone while a batch is in flight: the stage waits for it before it is done.
        ip.push(inbound(5)).unwrap();
        assert_eq!(s.do_work().unwrap(), Step::Worked(1));
        drop(ip);
        assert_eq!(s.do_work().unwrap(), Step::Idle, "in flight: not done yet");
        answers.store(1, Relaxed);
        assert_eq!(s.do_work().unwrap(), Step::Worked(1));
        assert_eq!(s.do_work().unwrap(), Step::Done);
        assert_eq!(s.into_gate().started, 3);
    }

    /// A gate with a session: answers, times out or refuses as told, and reports its journal
    /// point like the risk client (the newest answered batch and its size).
    struct PointGate {
        next: GateOutcome,
        batch: u64,
        answered: (u64, u32),
    }

    impl RiskGate for PointGate {
        fn check_batch(&mut self, orders: &[Order], _: u64, out: &mut [Reason]) -> GateOutcome {
            self.batch += 1;
            let r = match self.next {
                GateOutcome::Replied => {
                    self.answered = (self.batch, orders.len() as u32);
                    Reason::Accepted
                }
                GateOutcome::TimedOut => Reason::RiskTimeout,
                _ => Reason::RiskError,
            };
            out.fill(r);
            self.next
        }
        fn failovers(&self) -> u64 {
            0
        }
        fn max_batch(&self) -> Option<usize> {
            Some(3)
        }
        fn journal_point(&self) -> (u64, u64, u32) {
            (77, self.answered.0, self.answered.1)
        }
        fn refusal(&self) -> String {
            "refused: too large".into()
        }
    }

    /// Each decided order carries the gate's journal point: its own position in a batch the
    /// service answered, the previous answered batch (whole) for a timed-out one. The stage
    /// takes batches no larger than the gate's bound, and a refusal stops it with the gate's
    /// reason, deciding nothing.
    #[test]
    fn decided_orders_carry_the_journal_point_and_a_refusal_stops_the_stage() {
        let (mut ip, ic) = RingBuffer::new(64);
        let (op, mut oc) = RingBuffer::new(64);
        let gate = PointGate {
            next: GateOutcome::Replied,
            batch: 0,
            answered: (0, 0),
        };
        let mut s = RiskStage::new(gate, ic, op, 8, Clock::new(), Arc::new(Metrics::default()));
        for i in 0..5 {
            ip.push(inbound(i)).unwrap();
        }
        assert_eq!(
            s.do_work().unwrap(),
            Step::Worked(3),
            "capped at the gate's 3"
        );
        s.gate.next = GateOutcome::TimedOut;
        assert_eq!(s.do_work().unwrap(), Step::Worked(2));
        let got: Vec<(u64, u64, u32, Reason)> = std::iter::from_fn(|| oc.pop().ok())
            .map(|d| (d.risk_session, d.risk_batch, d.risk_batch_orders, d.reason))
            .collect();
        assert_eq!(
            got,
            [
                (77, 1, 1, Reason::Accepted),
                (77, 1, 2, Reason::Accepted),
                (77, 1, 3, Reason::Accepted),
                (77, 1, 3, Reason::RiskTimeout),
                (77, 1, 3, Reason::RiskTimeout),
            ]
        );
        s.gate.next = GateOutcome::Refused;
        ip.push(inbound(5)).unwrap();
        match s.do_work() {
            Err(StageError::RiskRefused(why)) => assert_eq!(why, "refused: too large"),
            other => panic!("{other:?}"),
        }
        assert!(oc.is_empty(), "nothing decided");
    }

    #[test]
    fn inline_risk_checks_with_the_checker_and_never_waits() {
        let limits =
            risk::Limits::from_toml_str(crate::app::BUILT_IN_LIMITS_TOML, "built-in").unwrap();
        let mut gate = InlineRisk::new(risk::Checker::new(limits));
        let orders = [
            Order {
                order_id: 1,
                qty: 10,
                price: 1_000_000,
                account: 1,
                symbol: orders::Symbol::new("AAPL").unwrap(),
                ..Order::default()
            },
            Order {
                order_id: 2,
                qty: 5_000_000,
                price: 1_000_000,
                account: 1,
                symbol: orders::Symbol::new("AAPL").unwrap(),
                ..Order::default()
            },
        ];
        let mut out = [Reason::RiskError; 2];
        assert_eq!(
            gate.start_batch(&orders, 1, &mut out),
            GatePoll::Ready(GateOutcome::Replied)
        );
        assert_eq!(out, [Reason::Accepted, Reason::MaxQty]);
    }
}
