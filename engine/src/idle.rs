//! Idle strategies: what a stage does when it found no work.
//!
//! A stage loop is `let n = stage.do_work(); idle.idle(n);` (Agrona's `IdleStrategy`). Work
//! resets the strategy; each empty round moves it one step further:
//!
//! ```text
//!  spin     busy-poll with a spin-loop hint               (an isolated core per stage)
//!  yield    sched_yield                                   (a core shared with few threads)
//!  backoff  spin ×64 → yield ×8 → park 1 µs, 2 µs, … 50 µs (default: 4 stages on 2 cores)
//!           with a bell: spin ×64 → park ≤ 1 ms, unparked by a neighbour (no yields)
//!           socket-fed:  spin ×64 → yield ×8 → block on the socket ≤ 1 ms
//!                        ([`crate::stages::Stage::wait_for_input`])
//! ```
//!
//! `auto` resolves to `spin` only for a stage pinned to a core of its own with a core to spare
//! for ZeroMQ's I/O threads and the OS, and to `backoff` otherwise; see [`resolve`].
//!
//! **Hand-off** ([`crate::wake`]): a `backoff` strategy given a [`Bell`] ([`Idle::with_bell`])
//! parks on it instead of sleeping: after the spin phase it publishes "sleeping", re-checks its
//! rings (the `ready` closure) and parks for up to [`HANDOFF_PARK_MAX_NS`]; the neighbour that
//! gives it work unparks it. Parks then no longer need to be short to be responsive, so they go
//! straight to the long cap: fewer idle wake-ups on a shared core. It skips the yield phase:
//! with a neighbour to wake it, `sched_yield` only cost context switches (on 2 vCPUs each
//! yield hands the core to another thread and back) and measured worse at 100 k orders/s
//! (`docs/results.md`, "No yield phase for stages with a bell").
//!
//! **Deadline waits** ([`Idle::idle_until`]: the replay ingress waiting for an order's
//! scheduled time) never use the bell, since nobody rings for a deadline. `backoff`
//! sleeps until the deadline (at most [`HANDOFF_PARK_MAX_NS`] per call, with the stage
//! threads' 1 µs timer slack), but never less than [`SCHEDULE_SLEEP_QUANTUM_NS`], and spins
//! only when the deadline is within [`SCHEDULE_SLEEP_MIN_NS`] ([`deadline_sleep_ns`]). The
//! spin → yield → park sequence restarted after every order, so at 100 k orders/s the ingress
//! spun and yielded most of one of the two cores away from the stages and the risk server;
//! one timer sleep per order still cost a third of a core (`docs/results.md`, "the ingress
//! sleeps until an order is due" and "a 20 µs sleep quantum").

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::limits::{
    BACKOFF_PARK_MAX_NS, BACKOFF_PARK_MIN_NS, BACKOFF_SPINS_MAX, BACKOFF_YIELDS_MAX,
    HANDOFF_PARK_MAX_NS, SCHEDULE_SLEEP_MIN_NS, SCHEDULE_SLEEP_QUANTUM_NS, SCHEDULE_SPIN_WINDOW_NS,
};
use crate::topology::{PerStage, StageId};
use crate::wake::Bell;

/// An idle strategy as configured (before `auto` is resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleKind {
    /// Busy-poll.
    Spin,
    /// `sched_yield` between polls.
    Yield,
    /// Spin, then yield, then park for a growing time (default).
    #[default]
    Backoff,
    /// `spin` where the stage has a core of its own and one is left over, else `backoff`.
    Auto,
}

impl IdleKind {
    /// The config / CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdleKind::Spin => "spin",
            IdleKind::Yield => "yield",
            IdleKind::Backoff => "backoff",
            IdleKind::Auto => "auto",
        }
    }
}

impl fmt::Display for IdleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An idle strategy name that is not one of `spin`, `yield`, `backoff`, `auto`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown idle strategy {0:?} (expected spin, yield, backoff or auto)")]
pub struct IdleKindError(pub String);

impl FromStr for IdleKind {
    type Err = IdleKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "spin" => Ok(IdleKind::Spin),
            "yield" => Ok(IdleKind::Yield),
            "backoff" => Ok(IdleKind::Backoff),
            "auto" => Ok(IdleKind::Auto),
            other => Err(IdleKindError(other.to_owned())),
        }
    }
}

/// A resolved idle strategy (never `auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleMode {
    /// Busy-poll.
    Spin,
    /// `sched_yield` between polls.
    Yield,
    /// Spin, then yield, then park.
    Backoff,
}

impl IdleMode {
    /// The name, as in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            IdleMode::Spin => "spin",
            IdleMode::Yield => "yield",
            IdleMode::Backoff => "backoff",
        }
    }
}

/// Resolves `auto` for every stage: `spin` for a stage pinned to a core no other stage is
/// pinned to, as long as the exclusively pinned stages leave at least one core of
/// `cores_available` free (for ZeroMQ's I/O threads and the OS); `backoff` otherwise.
/// Explicit choices are kept as given.
pub fn resolve(
    kinds: &PerStage<IdleKind>,
    cores: &PerStage<Option<usize>>,
    cores_available: usize,
) -> PerStage<IdleMode> {
    let exclusive = |s: StageId| match cores.get(s) {
        Some(c) => StageId::ALL
            .into_iter()
            .filter(|&o| o != s)
            .all(|o| *cores.get(o) != Some(*c)),
        None => false,
    };
    let exclusive_count = StageId::ALL.into_iter().filter(|&s| exclusive(s)).count();
    let spare = cores_available > exclusive_count;
    let mut out = PerStage::all(IdleMode::Backoff);
    for s in StageId::ALL {
        *out.get_mut(s) = match kinds.get(s) {
            IdleKind::Spin => IdleMode::Spin,
            IdleKind::Yield => IdleMode::Yield,
            IdleKind::Backoff => IdleMode::Backoff,
            IdleKind::Auto if exclusive(s) && spare => IdleMode::Spin,
            IdleKind::Auto => IdleMode::Backoff,
        };
    }
    out
}

/// Where a backoff strategy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Busy-spinning (count of empty rounds so far).
    Spinning(u32),
    /// Yielding (count of yields so far).
    Yielding(u32),
    /// Parking; the next park lasts this many nanoseconds.
    Parking(u64),
}

/// The per-thread idle state. Cheap to call; never allocates.
#[derive(Debug, Clone)]
pub struct Idle {
    mode: IdleMode,
    phase: Phase,
    spins_max: u32,
    yields_max: u32,
    park_min_ns: u64,
    park_max_ns: u64,
    /// With a bell, parks are hand-off parks of `bell_park_ns` (see the module docs).
    bell: Option<Arc<Bell>>,
    bell_park_ns: u64,
}

impl Idle {
    /// A strategy with the default backoff bounds of [`crate::limits`].
    pub fn new(mode: IdleMode) -> Idle {
        Idle::with_bounds(
            mode,
            BACKOFF_SPINS_MAX,
            BACKOFF_YIELDS_MAX,
            BACKOFF_PARK_MIN_NS,
            BACKOFF_PARK_MAX_NS,
        )
    }

    /// A strategy with explicit backoff bounds (`park_min_ns ≤ park_max_ns`, both > 0).
    pub fn with_bounds(
        mode: IdleMode,
        spins_max: u32,
        yields_max: u32,
        park_min_ns: u64,
        park_max_ns: u64,
    ) -> Idle {
        let park_min_ns = park_min_ns.max(1);
        let park_max_ns = park_max_ns.max(park_min_ns);
        Idle {
            mode,
            phase: Phase::Spinning(0),
            spins_max,
            yields_max,
            park_min_ns,
            park_max_ns,
            bell: None,
            bell_park_ns: HANDOFF_PARK_MAX_NS,
        }
    }

    /// Parks on `bell` (woken by a neighbour) for up to [`HANDOFF_PARK_MAX_NS`] instead of
    /// sleeping for growing times, straight after the spin phase (no yields: see the module
    /// docs). Only `backoff` parks; `spin` and `yield` ignore the bell.
    pub fn with_bell(mut self, bell: Arc<Bell>) -> Idle {
        self.yields_max = 0;
        self.with_bell_park(bell, HANDOFF_PARK_MAX_NS)
    }

    /// [`Idle::with_bell`] with an explicit park cap (> 0), for tests.
    pub fn with_bell_park(mut self, bell: Arc<Bell>, park_ns: u64) -> Idle {
        self.bell = Some(bell);
        self.bell_park_ns = park_ns.max(1);
        self
    }

    /// Whether parks are hand-off parks.
    pub fn has_bell(&self) -> bool {
        self.bell.is_some()
    }

    /// Whether the next empty round would be a timed park: `backoff` without a bell, past
    /// its spin and yield phases. A socket-fed stage then blocks on its socket instead
    /// ([`crate::stages::Stage::wait_for_input`]).
    pub fn parks_timed(&self) -> bool {
        self.mode == IdleMode::Backoff
            && self.bell.is_none()
            && matches!(self.phase, Phase::Parking(_))
    }

    /// The resolved mode.
    pub fn mode(&self) -> IdleMode {
        self.mode
    }

    /// Where the backoff stands (always `Spinning` for `spin` and `yield`).
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Back to the first step: call when work was done.
    #[inline]
    pub fn reset(&mut self) {
        self.phase = Phase::Spinning(0);
    }

    /// Called after each unit of work with how much was done: resets on work, otherwise
    /// waits one step.
    #[inline]
    pub fn idle(&mut self, work: usize) {
        self.idle_or_park(work, || false);
    }

    /// [`Idle::idle`] for a stage with a bell: `ready` says whether work has arrived (its
    /// rings re-checked); it is called right before a hand-off park, after "sleeping" is
    /// published, and the park is skipped when it returns true.
    #[inline]
    pub fn idle_or_park(&mut self, work: usize, ready: impl FnOnce() -> bool) {
        if work > 0 {
            self.reset();
            return;
        }
        self.step(ready);
    }

    /// Nothing to do for `remaining_ns` (a scheduled deadline): waits one step. In `spin`
    /// mode it busy-spins; in `yield` mode it yields until the deadline is near, then spins;
    /// in `backoff` mode it sleeps for [`deadline_sleep_ns`] (up to the deadline, at least a
    /// quantum, at most [`HANDOFF_PARK_MAX_NS`] so that a stop flag is seen), or spins when the
    /// deadline is within [`SCHEDULE_SLEEP_MIN_NS`].
    #[inline]
    pub fn idle_until(&mut self, remaining_ns: u64) {
        if remaining_ns == 0 {
            return;
        }
        match self.mode {
            IdleMode::Spin => std::hint::spin_loop(),
            IdleMode::Yield if remaining_ns <= SCHEDULE_SPIN_WINDOW_NS => std::hint::spin_loop(),
            IdleMode::Yield => std::thread::yield_now(),
            IdleMode::Backoff => match deadline_sleep_ns(remaining_ns) {
                Some(ns) => std::thread::sleep(Duration::from_nanos(ns)),
                None => std::hint::spin_loop(),
            },
        }
    }

    /// One step of the strategy while the stage waits for work.
    fn step(&mut self, ready: impl FnOnce() -> bool) {
        match self.mode {
            IdleMode::Spin => std::hint::spin_loop(),
            IdleMode::Yield => std::thread::yield_now(),
            IdleMode::Backoff => match self.phase {
                Phase::Spinning(n) => {
                    std::hint::spin_loop();
                    self.phase = if n + 1 < self.spins_max {
                        Phase::Spinning(n + 1)
                    } else if self.yields_max == 0 {
                        Phase::Parking(self.park_min_ns)
                    } else {
                        Phase::Yielding(0)
                    };
                }
                Phase::Yielding(n) => {
                    std::thread::yield_now();
                    self.phase = if n + 1 >= self.yields_max {
                        Phase::Parking(self.park_min_ns)
                    } else {
                        Phase::Yielding(n + 1)
                    };
                }
                Phase::Parking(ns) => match &self.bell {
                    // With a bell: a neighbour rings when work comes.
                    Some(bell) => {
                        bell.park(Duration::from_nanos(self.bell_park_ns), ready);
                    }
                    // No bell: a bounded sleep, growing.
                    None => {
                        std::thread::sleep(Duration::from_nanos(ns));
                        self.phase = Phase::Parking(ns.saturating_mul(2).min(self.park_max_ns));
                    }
                },
            },
        }
    }
}

/// How long a `backoff` deadline wait sleeps when the deadline is `remaining_ns` away: `None`
/// (spin) within [`SCHEDULE_SLEEP_MIN_NS`]; otherwise the remaining time, raised to
/// [`SCHEDULE_SLEEP_QUANTUM_NS`] and capped at [`HANDOFF_PARK_MAX_NS`].
pub fn deadline_sleep_ns(remaining_ns: u64) -> Option<u64> {
    (remaining_ns > SCHEDULE_SLEEP_MIN_NS)
        .then(|| remaining_ns.clamp(SCHEDULE_SLEEP_QUANTUM_NS, HANDOFF_PARK_MAX_NS))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Instant;

    #[test]
    fn names_round_trip() {
        for k in [
            IdleKind::Spin,
            IdleKind::Yield,
            IdleKind::Backoff,
            IdleKind::Auto,
        ] {
            assert_eq!(k.as_str().parse::<IdleKind>(), Ok(k));
        }
        assert!("busy".parse::<IdleKind>().is_err());
        assert_eq!(IdleKind::default(), IdleKind::Backoff);
    }

    #[test]
    fn backoff_spins_then_yields_then_parks_growing_and_bounded() {
        let mut idle = Idle::with_bounds(IdleMode::Backoff, 3, 2, 1_000, 4_000);
        assert_eq!(idle.phase(), Phase::Spinning(0));
        idle.idle(0);
        idle.idle(0);
        assert_eq!(idle.phase(), Phase::Spinning(2));
        idle.idle(0);
        assert_eq!(idle.phase(), Phase::Yielding(0));
        idle.idle(0);
        idle.idle(0);
        assert_eq!(idle.phase(), Phase::Parking(1_000));
        idle.idle(0);
        assert_eq!(idle.phase(), Phase::Parking(2_000));
        idle.idle(0);
        assert_eq!(idle.phase(), Phase::Parking(4_000));
        idle.idle(0);
        assert_eq!(idle.phase(), Phase::Parking(4_000), "park is capped");
        idle.idle(1);
        assert_eq!(idle.phase(), Phase::Spinning(0), "work resets");
    }

    #[test]
    fn backoff_parks_for_real() {
        let mut idle = Idle::with_bounds(IdleMode::Backoff, 0, 0, 2_000_000, 2_000_000);
        idle.idle(0); // spinning → parking (no spins, no yields)
        assert_eq!(idle.phase(), Phase::Parking(2_000_000));
        let t = Instant::now();
        idle.idle(0);
        assert!(t.elapsed() >= Duration::from_millis(2));
    }

    /// Voluntary context switches of the calling thread so far (each sleep is one).
    fn voluntary_switches() -> i64 {
        use nix::sys::resource::{getrusage, UsageWho};
        getrusage(UsageWho::RUSAGE_THREAD)
            .expect("getrusage")
            .voluntary_context_switches()
    }

    #[test]
    fn a_backoff_deadline_wait_sleeps_at_once_instead_of_spinning_and_yielding() {
        // Fresh strategy (spinning phase): the old behaviour spun 64 rounds and yielded 8
        // before its first (1 µs) sleep, restarting after every order.
        let mut idle = Idle::new(IdleMode::Backoff);
        let before = voluntary_switches();
        let t = Instant::now();
        idle.idle_until(3_000_000);
        // One call slept to the per-call cap (the OS sleeps at least that long).
        assert!(t.elapsed() >= Duration::from_nanos(HANDOFF_PARK_MAX_NS));
        assert!(voluntary_switches() > before, "the wait was a sleep");
        // A deadline nearer than the sleep threshold is spun for: no sleep.
        let before = voluntary_switches();
        idle.idle_until(SCHEDULE_SLEEP_MIN_NS);
        assert_eq!(voluntary_switches(), before);
    }

    #[test]
    fn deadline_sleeps_are_quantised_and_capped() {
        assert_eq!(deadline_sleep_ns(1), None, "spun for");
        assert_eq!(deadline_sleep_ns(SCHEDULE_SLEEP_MIN_NS), None);
        // A 5 µs wait sleeps the 20 µs quantum: fewer timer wake-ups, a little lateness.
        assert_eq!(deadline_sleep_ns(5_000), Some(SCHEDULE_SLEEP_QUANTUM_NS));
        assert_eq!(
            deadline_sleep_ns(300_000),
            Some(300_000),
            "until the deadline"
        );
        assert_eq!(deadline_sleep_ns(5_000_000_000), Some(HANDOFF_PARK_MAX_NS));
    }

    #[test]
    fn idle_until_sleeps_for_the_deadline_not_for_the_idle_park() {
        let mut idle = Idle::with_bounds(IdleMode::Backoff, 0, 0, 5_000_000_000, 5_000_000_000);
        idle.idle(0); // no spins, no yields: straight to parking
        assert_eq!(idle.phase(), Phase::Parking(5_000_000_000));
        let t = Instant::now();
        idle.idle_until(1_000_000);
        // Parked at most ~1 ms (the cap), nowhere near the 5 s park; the bound is generous.
        assert!(t.elapsed() < Duration::from_secs(2));
        idle.idle_until(0); // due now: returns at once
    }

    #[test]
    fn a_backoff_with_a_bell_parks_until_rung_not_until_its_cap() {
        use crate::wake::{Bell, Waker};
        let bell = Bell::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let stage = {
            let bell = std::sync::Arc::clone(&bell);
            std::thread::spawn(move || {
                // One spin, one yield, then 10 s hand-off parks.
                let mut idle = Idle::with_bounds(IdleMode::Backoff, 1, 1, 1_000, 1_000)
                    .with_bell_park(bell, 10_000_000_000);
                idle.idle(0);
                assert_eq!(idle.phase(), Phase::Yielding(0));
                idle.idle(0);
                assert_eq!(idle.phase(), Phase::Parking(1_000));
                let _ = tx.send(());
                let t = Instant::now();
                idle.idle_or_park(0, || false);
                t.elapsed()
            })
        };
        let waker = Waker::new(std::sync::Arc::clone(&bell), stage.thread().clone());
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        // Ring until the stage is woken (it may not be parked yet when we first ring).
        let t = Instant::now();
        while !stage.is_finished() && t.elapsed() < Duration::from_secs(20) {
            waker.wake();
            std::thread::sleep(Duration::from_millis(20));
        }
        let parked = stage.join().unwrap();
        assert!(parked < Duration::from_secs(2), "woken early: {parked:?}");
        assert!(bell.wakeups() >= 1);
    }

    #[test]
    fn a_stage_with_a_bell_parks_right_after_spinning_without_yielding() {
        let mut idle = Idle::new(IdleMode::Backoff).with_bell(crate::wake::Bell::new());
        for _ in 0..BACKOFF_SPINS_MAX - 1 {
            idle.idle(0);
        }
        assert_eq!(idle.phase(), Phase::Spinning(BACKOFF_SPINS_MAX - 1));
        idle.idle(0);
        // Without a bell the next phase would be `Yielding(0)` (8 rounds of sched_yield).
        assert!(
            matches!(idle.phase(), Phase::Parking(_)),
            "{:?}",
            idle.phase()
        );
        let mut plain = Idle::new(IdleMode::Backoff);
        for _ in 0..BACKOFF_SPINS_MAX {
            plain.idle(0);
        }
        assert_eq!(plain.phase(), Phase::Yielding(0));
    }

    #[test]
    fn deadline_waits_never_park_on_the_bell() {
        let bell = crate::wake::Bell::new();
        let mut idle = Idle::with_bounds(IdleMode::Backoff, 1, 1, 1_000, 1_000)
            .with_bell_park(bell, 10_000_000_000);
        assert!(idle.has_bell());
        for _ in 0..3 {
            let t = Instant::now();
            idle.idle_until(1_000_000); // 1 ms deadline: a bounded sleep, not a 10 s park
            assert!(t.elapsed() < Duration::from_secs(2));
        }
        // A deadline wait is not an empty round: the backoff for work waits is untouched.
        assert_eq!(idle.phase(), Phase::Spinning(0));
        // Work already there: the hand-off park is skipped.
        let t = Instant::now();
        idle.idle_or_park(0, || true);
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn spin_and_yield_do_not_advance_phase() {
        for mode in [IdleMode::Spin, IdleMode::Yield] {
            let mut idle = Idle::new(mode);
            for _ in 0..1000 {
                idle.idle(0);
            }
            assert_eq!(idle.phase(), Phase::Spinning(0));
            idle.idle_until(10);
        }
    }

    #[test]
    fn auto_spins_only_with_an_exclusive_core_and_one_to_spare() {
        let kinds = PerStage::all(IdleKind::Auto);
        // Nothing pinned: backoff everywhere.
        let r = resolve(&kinds, &PerStage::all(None), 2);
        assert_eq!(r, PerStage::all(IdleMode::Backoff));
        // 2 cores, ingress alone on core 0, the rest share core 1: ingress spins.
        let cores = PerStage {
            ingress: Some(0),
            risk: Some(1),
            journal: Some(1),
            egress: Some(1),
        };
        let r = resolve(&kinds, &cores, 2);
        assert_eq!(r.ingress, IdleMode::Spin);
        assert_eq!(r.risk, IdleMode::Backoff);
        // 2 cores, two stages each on a core of their own: none spare, nobody spins.
        let cores = PerStage {
            ingress: Some(0),
            risk: Some(1),
            journal: None,
            egress: None,
        };
        assert_eq!(resolve(&kinds, &cores, 2), PerStage::all(IdleMode::Backoff));
        // 8 cores, four exclusive pins: all spin.
        let cores = PerStage {
            ingress: Some(1),
            risk: Some(2),
            journal: Some(3),
            egress: Some(4),
        };
        assert_eq!(resolve(&kinds, &cores, 8), PerStage::all(IdleMode::Spin));
        // Explicit choices are kept.
        let mut kinds = PerStage::all(IdleKind::Auto);
        kinds.risk = IdleKind::Yield;
        assert_eq!(resolve(&kinds, &cores, 8).risk, IdleMode::Yield);
    }
}
