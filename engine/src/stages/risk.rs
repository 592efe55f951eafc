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

/// How one batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOutcome {
    /// Verdicts arrived.
    Replied,
    /// No reply within the timeout: every verdict is `risk-timeout`.
    TimedOut,
    /// An error or unreadable reply: every verdict is `risk-error`.
    Failed,
}

/// Where verdicts come from: the risk client, or a stand-in in tests.
pub trait RiskGate: Send {
    /// One verdict per order in `out` (`out.len() == orders.len()`); never blocks longer
    /// than the configured timeout; never allocates per order.
    fn check_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GateOutcome;
    /// Endpoint changes so far.
    fn failovers(&self) -> u64;
}

impl RiskGate for risk::RiskClient {
    fn check_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> GateOutcome {
        match risk::RiskClient::check_batch(self, orders, now_ns, out) {
            risk::BatchOutcome::Replied => GateOutcome::Replied,
            risk::BatchOutcome::TimedOut => GateOutcome::TimedOut,
            risk::BatchOutcome::Failed => GateOutcome::Failed,
        }
    }
    fn failovers(&self) -> u64 {
        self.stats().failovers
    }
}

/// The risk stage.
pub struct RiskStage<G: RiskGate> {
    gate: G,
    input: Consumer<Inbound>,
    out: Producer<Decided>,
    orders: Vec<Order>,
    reasons: Vec<Reason>,
    max_batch: usize,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl<G: RiskGate> std::fmt::Debug for RiskStage<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiskStage")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<G: RiskGate> RiskStage<G> {
    /// A stage asking `gate` for batches of at most `max_batch` orders.
    pub fn new(
        gate: G,
        input: Consumer<Inbound>,
        out: Producer<Decided>,
        max_batch: usize,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> RiskStage<G> {
        let max_batch = max_batch.max(1);
        RiskStage {
            gate,
            input,
            out,
            orders: Vec::with_capacity(max_batch),
            reasons: vec![Reason::Accepted; max_batch],
            max_batch,
            clock,
            metrics,
        }
    }

    /// Gives the gate back (to stop an embedded server after the stage is done).
    pub fn into_gate(self) -> G {
        self.gate
    }
}

impl<G: RiskGate> Stage for RiskStage<G> {
    fn do_work(&mut self) -> Result<Step, StageError> {
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
        self.orders.clear();
        self.orders.extend(chunk_items(a, b).map(|x| x.order));
        let reasons = &mut self.reasons[..n];
        let t_ask = self.clock.now_ns();
        let outcome = self.gate.check_batch(&self.orders, t_ask, reasons);
        let t_decided = self.clock.now_ns();
        debug_assert!(
            outcome != GateOutcome::TimedOut || reasons.iter().all(|r| *r == Reason::RiskTimeout)
        );
        let Ok(out_chunk) = self.out.write_chunk_uninit(n) else {
            // Cannot happen: `n` ≤ free slots and only this stage pushes.
            return Ok(Step::Idle);
        };
        out_chunk.fill_from_iter(chunk_items(a, b).zip(reasons.iter()).map(
            |(inbound, &reason)| Decided {
                inbound,
                reason,
                t_sent_ns: t_ask,
                t_decided_ns: t_decided,
            },
        ));
        chunk.commit_all();
        let r = &self.metrics.risk;
        bump(&r.batches, 1);
        bump(&r.orders, n as u64);
        match outcome {
            GateOutcome::Replied => {}
            GateOutcome::TimedOut => bump(&r.timeouts, 1),
            GateOutcome::Failed => bump(&r.failed_batches, 1),
        }
        raise(&r.wait_max_ns, t_decided.saturating_sub(t_ask));
        r.failovers.store(self.gate.failovers(), Relaxed);
        Ok(Step::Worked(n))
    }

    fn ready(&self) -> bool {
        // Orders waiting and room for their verdicts, or a neighbour gone.
        (!self.input.is_empty() && (self.out.slots() > 0 || self.out.is_abandoned()))
            || self.input.is_abandoned()
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
        ip.push(inbound(4)).unwrap();
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
}
