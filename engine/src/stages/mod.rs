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

use crate::clock::Clock;
use crate::idle::Idle;

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
}

/// Drives a stage until it is done: `let n = stage.do_work(); idle.idle(n);`.
pub fn run_stage<S: Stage>(
    stage: &mut S,
    idle: &mut Idle,
    clock: &Clock,
) -> Result<(), StageError> {
    loop {
        match stage.do_work()? {
            Step::Worked(n) => idle.idle(n),
            Step::Idle => idle.idle(0),
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

    #[test]
    fn ring_items_are_small() {
        // A ring slot is at most two cache lines.
        assert!(std::mem::size_of::<Decided>() <= 128);
        let (a, b) = ([1, 2], [3]);
        assert_eq!(chunk_items(&a, &b).collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
