//! The four stages, the items their rings carry, and the loop that drives a stage.
//!
//! ```text
//!  ingress ──Inbound──► risk ──Decided──► journal ──Outbound──► egress
//!          ring A              ring B               ring C (accepted only)
//! ```
//! Every ring is an `rtrb` single-producer single-consumer ring of fixed capacity, allocated
//! at start-up. A stage owns exactly the ring ends it uses, so the topology is a fact of the
//! types. A stage takes at most `max_batch` items **and at most as many as its output ring can
//! take**, so it never holds items it cannot pass on: back-pressure is simply "the output ring
//! has no room, take nothing" and flows upstream ring by ring to the ingress, which then stops
//! reading (and ZeroMQ's high-water marks push back on the senders).
//!
//! Shutdown flows downstream the same way: a stage whose input ring is empty and whose
//! producer is gone (`is_abandoned`) is done; it drops its own producer, and so on to egress.

pub mod egress;
pub mod ingress;
pub mod journal;
pub mod risk;

use orders::{Order, Reason};

use std::time::Duration;

use crate::clock::Clock;
use crate::idle::Idle;
use crate::limits::HANDOFF_PARK_MAX_NS;
use crate::wake::Links;

/// Longest blocking wait of a socket-fed stage ([`Stage::wait_for_input`]): like a hand-off
/// park, it only bounds what nothing wakes the stage for (the stop flag, room on its ring).
const SOCKET_PARK_MAX: Duration = Duration::from_nanos(HANDOFF_PARK_MAX_NS);

/// ingress → risk: an order taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inbound {
    /// Position in the engine's input (dense, from 0; the file index in a replay).
    pub input_seq: u64,
    /// The order.
    pub order: Order,
    /// When it was scheduled to arrive (ns on the engine clock).
    pub t_sched_ns: u64,
    /// When the ingress pushed it.
    pub t_in_ns: u64,
}

/// risk → journal: an order with its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decided {
    /// The order as it came in.
    pub inbound: Inbound,
    /// Accepted, or why not.
    pub reason: Reason,
    /// When its batch was sent to the risk service.
    pub t_sent_ns: u64,
    /// When the verdict arrived.
    pub t_decided_ns: u64,
    /// The risk client's session (0: inline checks), the newest of its batches whose
    /// verdicts came from the risk service as of this verdict, and how many of that batch's
    /// orders up to this one (`orders::Decision`): the journal records them so that a restart
    /// can reconcile the server.
    ///
    /// For a [`Reason::RiskRefused`] verdict (the JSON risk protocol, which has no session)
    /// `risk_session` and `risk_batch` instead carry the service's reply, its first 16 bytes
    /// (little-endian words of `orders::RISK_REPLY_LEN_BYTES` bytes): the journal writes them
    /// as a version-3 decision with a zero session.
    pub risk_session: u64,
    /// See `risk_session`.
    pub risk_batch: u64,
    /// See `risk_session`.
    pub risk_batch_orders: u32,
}

/// journal → egress: an accepted order whose record is in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outbound {
    /// Position in the engine's input.
    pub input_seq: u64,
    /// Sequence number of its decision record.
    pub journal_seq: u64,
    /// The order.
    pub order: Order,
    /// Scheduled arrival.
    pub t_sched_ns: u64,
    /// Ingress time.
    pub t_in_ns: u64,
    /// When its risk batch was sent.
    pub t_sent_ns: u64,
    /// Decision time.
    pub t_decided_ns: u64,
}

const _: () = assert!(std::mem::size_of::<Inbound>() <= 128);
const _: () = assert!(std::mem::size_of::<Decided>() <= 128);
const _: () = assert!(std::mem::size_of::<Outbound>() <= 128);

/// What one call of [`Stage::do_work`] achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Handled this many items.
    Worked(usize),
    /// Nothing to do now.
    Idle,
    /// Nothing to do before this time (ns on the engine clock): a scheduled replay.
    WaitUntil(u64),
    /// Finished: input exhausted (or intake stopped) and everything passed on.
    Done,
}

/// A fatal stage error. Everything handed downstream before it stays valid; the pipeline
/// stops intake and drains.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    /// The journal refused a record (disk full, I/O error): nothing after it is decided.
    #[error("journal append failed at input_seq {input_seq}: {message}")]
    Journal {
        /// The order whose record could not be written.
        input_seq: u64,
        /// The journal's error, with its chain.
        message: String,
    },
    /// The journal's periodic maintenance (msync, checkpoint) failed.
    #[error("journal maintenance failed: {0}")]
    JournalMaintenance(String),
    /// The audit publisher failed.
    #[error("audit publisher failed: {0}")]
    Publish(String),
    /// The risk service refused a batch in a way no later batch would fix (a batch above its
    /// `--max-batch`): the engine stops with the reason rather than reject every order.
    #[error("{0}")]
    RiskRefused(String),
    /// An invariant of the pipeline broke (a bug, never bad input): the engine stops with
    /// this message rather than drop or reorder an order.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// A ZeroMQ socket failed.
    #[error("{what}: {source}")]
    Zmq {
        /// What the stage was doing.
        what: &'static str,
        /// The ZeroMQ error.
        source: zmq::Error,
    },
}

/// A pipeline stage: `do_work` takes what is waiting (bounded), handles it, and says how much.
pub trait Stage {
    /// One unit of work; never blocks longer than its own bounded waits (risk timeout,
    /// egress poll interval).
    fn do_work(&mut self) -> Result<Step, StageError>;

    /// Whether `do_work` would find something to do now: items on the input ring and room on
    /// the output ring, or a ring end gone. Called right before a hand-off park, after the
    /// stage published that it is parking ([`crate::wake`]), so it must read the rings
    /// afresh. The default (`false`) suits a stage that nobody rings: its park is bounded.
    fn ready(&self) -> bool {
        false
    }

    /// For a stage whose input is a socket (nobody can ring a bell for it): blocks for at
    /// most `timeout` until input may be there, and returns `true`; `false` when the stage
    /// has no such wait now, so that the idle strategy's own park is used. Called instead of
    /// that park once a `backoff` strategy without a bell reaches its parking phase.
    fn wait_for_input(&mut self, _timeout: Duration) -> bool {
        false
    }

    /// For a thread that runs several stages ([`crate::threading`]'s `shared` mode): adds what
    /// this stage waits for when it has nothing to do now (its sockets, its deadlines) to `w`.
    /// Called after a round in which no stage of the thread did any work; the thread then
    /// blocks until one of them is ready. Rings need no entry: only the thread's own stages
    /// touch them, and they just ran.
    fn register_waits(&self, _w: &mut crate::waitset::WaitSet) {}
}

/// Drives a stage until it is done: `let n = stage.do_work(); idle.idle(n);`.
pub fn run_stage<S: Stage>(
    stage: &mut S,
    idle: &mut Idle,
    clock: &Clock,
) -> Result<(), StageError> {
    run_linked(stage, idle, clock, &Links::none())
}

/// [`run_stage`] with neighbours: after every batch it rings them (`links.wake()`: the
/// downstream stage for the items pushed, the upstream one for the room freed), and an idle
/// round parks on the stage's bell (if `idle` has one) until a neighbour rings or
/// [`stage.ready()`](Stage::ready) already says there is work.
pub fn run_linked<S: Stage>(
    stage: &mut S,
    idle: &mut Idle,
    clock: &Clock,
    links: &Links,
) -> Result<(), StageError> {
    loop {
        match stage.do_work()? {
            Step::Worked(n) => {
                links.wake();
                idle.idle(n);
            }
            Step::Idle => {
                if !(idle.parks_timed() && stage.wait_for_input(SOCKET_PARK_MAX)) {
                    idle.idle_or_park(0, || stage.ready());
                }
            }
            Step::WaitUntil(deadline_ns) => {
                idle.idle_until(deadline_ns.saturating_sub(clock.now_ns()));
            }
            Step::Done => return Ok(()),
        }
    }
}

/// Copies the (up to two) slices of a ring chunk into `out` without allocating (`out` has the
/// capacity of a batch).
#[inline]
pub(crate) fn chunk_items<'a, T: Copy>(a: &'a [T], b: &'a [T]) -> impl Iterator<Item = T> + 'a {
    a.iter().chain(b.iter()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idle::IdleMode;

    struct Countdown {
        left: usize,
        calls: usize,
        clock: Clock,
    }

    impl Stage for Countdown {
        fn do_work(&mut self) -> Result<Step, StageError> {
            self.calls += 1;
            Ok(match self.left {
                0 => Step::Done,
                n if n % 3 == 0 => {
                    self.left -= 1;
                    Step::Idle
                }
                n if n % 3 == 1 => {
                    self.left -= 1;
                    Step::WaitUntil(self.clock.now_ns() + 1_000)
                }
                _ => {
                    self.left -= 1;
                    Step::Worked(2)
                }
            })
        }
    }

    #[test]
    fn run_stage_drives_until_done() {
        let clock = Clock::new();
        let mut s = Countdown {
            left: 10,
            calls: 0,
            clock,
        };
        let mut idle = Idle::new(IdleMode::Backoff);
        run_stage(&mut s, &mut idle, &clock).expect("no error");
        assert_eq!(s.calls, 11);
    }

    /// Pushes one item every 20 ms, `left` times.
    struct Feeder {
        out: rtrb::Producer<Outbound>,
        left: u64,
        next_at: std::time::Instant,
    }

    impl Stage for Feeder {
        fn do_work(&mut self) -> Result<Step, StageError> {
            if self.left == 0 {
                return Ok(Step::Done);
            }
            if std::time::Instant::now() < self.next_at {
                return Ok(Step::Idle);
            }
            let _ = self.out.push(Outbound {
                input_seq: self.left,
                ..Outbound::default()
            });
            self.left -= 1;
            self.next_at = std::time::Instant::now() + std::time::Duration::from_millis(20);
            Ok(Step::Worked(1))
        }
    }

    /// `run_linked` rings the downstream stage after each batch and at the end: a consumer that
    /// parks for up to 10 s each time its ring is empty still takes five items spaced 20 ms
    /// apart, and ends, in well under its park cap (without the hand-off: 50 s).
    #[test]
    fn run_linked_wakes_a_parked_downstream_stage_per_batch_and_at_the_end() {
        use crate::latency::Recorder;
        use crate::metrics::Metrics;
        use crate::wake::{Bell, Waker};
        use std::sync::atomic::Ordering::Relaxed;
        use std::sync::Arc;
        use std::time::{Duration, Instant};

        let (tx, rx) = rtrb::RingBuffer::<Outbound>::new(8);
        let metrics = Arc::new(Metrics::default());
        let bell = Bell::new();
        let consumer = {
            let (metrics, bell) = (Arc::clone(&metrics), Arc::clone(&bell));
            std::thread::spawn(move || {
                let clock = Clock::new();
                let mut s =
                    egress::EgressStage::new(None, rx, 8, clock, metrics, Recorder::new(0, false));
                let mut idle = Idle::with_bounds(IdleMode::Backoff, 4, 0, 1_000, 1_000)
                    .with_bell_park(bell, 10_000_000_000);
                run_linked(&mut s, &mut idle, &clock, &Links::none())
            })
        };
        let links = Links {
            upstream: None,
            downstream: Some(Waker::new(Arc::clone(&bell), consumer.thread().clone())),
        };
        let t = Instant::now();
        let clock = Clock::new();
        let mut feeder = Feeder {
            out: tx,
            left: 5,
            next_at: Instant::now() + Duration::from_millis(50),
        };
        run_linked(
            &mut feeder,
            &mut Idle::new(IdleMode::Backoff),
            &clock,
            &links,
        )
        .expect("feeder runs");
        drop(feeder); // the producer end goes: the consumer's input is abandoned
        links.wake_now();
        consumer.join().expect("joins").expect("consumer runs");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "woken by the hand-off: {:?}",
            t.elapsed()
        );
        assert_eq!(metrics.egress.orders.load(Relaxed), 5);
        assert!(bell.wakeups() >= 1, "at least one wake-up was a hand-off");
    }

    #[test]
    fn ring_items_are_small() {
        // A ring slot is at most two cache lines.
        assert!(std::mem::size_of::<Decided>() <= 128);
        let (a, b) = ([1, 2], [3]);
        assert_eq!(chunk_items(&a, &b).collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
