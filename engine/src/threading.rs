//! Threading modes: how the four stages map onto threads (Aeron's media driver threading
//! modes over Agrona's agents).
//!
//! ```text
//!  dedicated   ingress │ risk │ journal │ egress      one thread per stage, each optionally
//!                                                     pinned; hops between stages cross
//!                                                     threads (a wake-up when the other parks)
//!  split       ingress → risk │ journal → egress      two threads, each a duty cycle of two
//!                                                     stages (Aeron's SHARED_NETWORK): the
//!                                                     checks and the hashing run on
//!                                                     different cores; one hop crosses
//!  shared      ingress → risk → journal → egress      one thread runs the four `do_work`s in
//!                                                     stage order (a composite duty cycle);
//!                                                     a hop is a ring push and pop
//!  auto        dedicated when the affinity mask has a core for every stage thread plus one
//!              for ZeroMQ's I/O thread (5); else split for a replay at `--rate max` with
//!              `--risk inline` and at least 2 cores; else shared
//! ```
//! Why `auto` splits only an as-fast-as-possible replay with inline checks: with a fixed rate
//! or live input the stages are idle between orders, and the hop between the two threads
//! wakes a parked one (tens of µs on a shared core), which `shared` avoids; at `--rate max` no
//! thread parks, the hop is a ring push and pop, and the two halves of each order's work
//! (the checks; the SHA-256 chain and the push) run on two cores at once. With embedded or
//! remote risk the checks already run on another thread (the server's), and a second busy
//! engine thread only competes with it: `shared` measured as fast or faster there
//! (docs/results.md, "Tenth session").
//! The rings stay in every mode: they are the stage boundaries and carry back-pressure. In
//! `shared` mode no stage blocks while another has work: the risk stage sends a batch and
//! polls for its verdicts, egress keeps a frame that downstream cannot take yet, and when no
//! stage has work the thread waits on the sockets its stages own and the earliest deadline
//! ([`crate::waitset`]).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::idle::IdleMode;
use crate::topology::{PerStage, StageId};

/// Threads `dedicated` needs besides ZeroMQ's I/O thread.
pub const DEDICATED_STAGE_THREADS: usize = StageId::ALL.len();
/// Cores `auto` wants before it picks `dedicated`: one per stage thread and one for ZeroMQ's
/// I/O thread.
pub const DEDICATED_CORES_MIN: usize = DEDICATED_STAGE_THREADS + 1;

/// The threading mode as configured (before `auto` is decided).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ThreadingKind {
    /// `dedicated` with a core for every stage thread and ZeroMQ's I/O thread; else `split`
    /// for `--rate max` with `--risk inline` on 2 or more cores; else `shared`.
    #[default]
    Auto,
    /// One thread per stage.
    Dedicated,
    /// Two threads: ingress and risk on one, journal and egress on the other.
    Split,
    /// All stages on one thread, in a duty cycle.
    Shared,
}

impl ThreadingKind {
    /// The config / CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadingKind::Auto => "auto",
            ThreadingKind::Dedicated => "dedicated",
            ThreadingKind::Split => "split",
            ThreadingKind::Shared => "shared",
        }
    }
}

impl fmt::Display for ThreadingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A threading mode name that is not `auto`, `dedicated`, `split` or `shared`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown threading mode {0:?} (expected auto, dedicated, split or shared)")]
pub struct ThreadingKindError(pub String);

impl FromStr for ThreadingKind {
    type Err = ThreadingKindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "auto" => Ok(ThreadingKind::Auto),
            "dedicated" => Ok(ThreadingKind::Dedicated),
            "split" => Ok(ThreadingKind::Split),
            "shared" => Ok(ThreadingKind::Shared),
            other => Err(ThreadingKindError(other.to_owned())),
        }
    }
}

/// A decided threading mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ThreadingMode {
    /// One thread per stage.
    Dedicated,
    /// Two threads: ingress and risk; journal and egress.
    Split,
    /// One thread for all stages.
    Shared,
}

impl ThreadingMode {
    /// The name, as in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadingMode::Dedicated => "dedicated",
            ThreadingMode::Split => "split",
            ThreadingMode::Shared => "shared",
        }
    }
}

impl fmt::Display for ThreadingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Cores `auto` wants before it picks `split` for a replay at `--rate max`.
pub const SPLIT_CORES_MIN: usize = 2;

/// What the run is, as far as `auto` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workload {
    /// Orders as fast as they can be taken (`engine replay --rate max`), checked by the risk
    /// stage itself (`--risk inline`): throughput is the measure, no stage is idle between
    /// orders, and all of the CPU work is the stage threads'.
    BulkInline,
    /// Orders as fast as they can be taken, checked by a risk server's thread (embedded) or
    /// process (remote): that thread already works beside the stages.
    Bulk,
    /// Orders at their own pace (a fixed-rate or timed replay, live input): each order's
    /// latency is the measure, and the stages are idle between orders.
    #[default]
    Paced,
}

impl Workload {
    /// The workload of a run at `rate_max` (or not) whose checks are inline (or not).
    pub fn of(rate_max: bool, checks_inline: bool) -> Workload {
        match (rate_max, checks_inline) {
            (true, true) => Workload::BulkInline,
            (true, false) => Workload::Bulk,
            (false, _) => Workload::Paced,
        }
    }
}

/// Decides `auto` from the number of cores in the process's affinity mask and the workload:
/// `dedicated` only with [`DEDICATED_CORES_MIN`] of them (four stage threads on fewer cores
/// would hand orders between threads by wake-ups, each costing tens of µs on a shared core);
/// with fewer, `split` for a [`Workload::BulkInline`] run on at least [`SPLIT_CORES_MIN`] (no
/// thread parks, so the hop costs no wake-up, and the work is spread over two cores), else
/// `shared`.
pub fn choose(kind: ThreadingKind, cores_in_mask: usize, workload: Workload) -> ThreadingMode {
    match kind {
        ThreadingKind::Dedicated => ThreadingMode::Dedicated,
        ThreadingKind::Split => ThreadingMode::Split,
        ThreadingKind::Shared => ThreadingMode::Shared,
        ThreadingKind::Auto if cores_in_mask >= DEDICATED_CORES_MIN => ThreadingMode::Dedicated,
        ThreadingKind::Auto
            if workload == Workload::BulkInline && cores_in_mask >= SPLIT_CORES_MIN =>
        {
            ThreadingMode::Split
        }
        ThreadingKind::Auto => ThreadingMode::Shared,
    }
}

/// Cores in this process's CPU affinity mask (at least 1).
pub fn cores_in_affinity_mask() -> usize {
    core_affinity::get_core_ids().map_or(1, |v| v.len().max(1))
}

/// One thread of the plan: its name, the stages it runs (in duty-cycle order), its core and
/// its idle strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ThreadPlan {
    /// Thread name (`ps -L`, `top -H`).
    pub name: &'static str,
    /// Stages, in the order the thread runs them.
    pub stages: Vec<&'static str>,
    /// Core it is pinned to, if any.
    pub core: Option<usize>,
    /// Its idle strategy.
    pub idle: &'static str,
}

/// The mode and its threads, for the start-up line and the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Threading {
    /// The decided mode.
    pub mode: ThreadingMode,
    /// What was asked for (`auto`, or the mode itself).
    pub requested: &'static str,
    /// Cores in the affinity mask when it was decided.
    pub cores_in_mask: usize,
    /// The threads.
    pub threads: Vec<ThreadPlan>,
}

/// Name of the shared mode's one thread.
pub const SHARED_THREAD_NAME: &str = "engine";
/// Name of the split mode's thread that runs ingress and risk.
pub const SPLIT_FRONT_THREAD_NAME: &str = "front";
/// Name of the split mode's thread that runs journal and egress.
pub const SPLIT_BACK_THREAD_NAME: &str = "back";

/// The thread plan of `mode`: per-stage cores and idle strategies as given for `dedicated`;
/// for `shared`, the one thread takes the first stage's core that is set and the ingress
/// stage's idle strategy (a single `--idle`/`--pin` value applies to every stage, so to it);
/// for `split`, each thread takes the first core set of its two stages and its first stage's
/// idle strategy.
pub fn plan(
    mode: ThreadingMode,
    requested: ThreadingKind,
    cores_in_mask: usize,
    cores: &PerStage<Option<usize>>,
    idle: &PerStage<IdleMode>,
) -> Threading {
    let threads = match mode {
        ThreadingMode::Dedicated => StageId::ALL
            .into_iter()
            .map(|s| ThreadPlan {
                name: s.as_str(),
                stages: vec![s.as_str()],
                core: *cores.get(s),
                idle: idle.get(s).as_str(),
            })
            .collect(),
        ThreadingMode::Split => vec![
            ThreadPlan {
                name: SPLIT_FRONT_THREAD_NAME,
                stages: vec![StageId::Ingress.as_str(), StageId::Risk.as_str()],
                core: cores.ingress.or(cores.risk),
                idle: idle.ingress.as_str(),
            },
            ThreadPlan {
                name: SPLIT_BACK_THREAD_NAME,
                stages: vec![StageId::Journal.as_str(), StageId::Egress.as_str()],
                core: cores.journal.or(cores.egress),
                idle: idle.journal.as_str(),
            },
        ],
        ThreadingMode::Shared => vec![ThreadPlan {
            name: SHARED_THREAD_NAME,
            stages: StageId::ALL.into_iter().map(StageId::as_str).collect(),
            core: StageId::ALL.into_iter().find_map(|s| *cores.get(s)),
            idle: idle.ingress.as_str(),
        }],
    };
    Threading {
        mode,
        requested: requested.as_str(),
        cores_in_mask,
        threads,
    }
}

/// CPU ids in this process's affinity mask (as read on the calling thread).
pub fn affinity_mask_ids() -> Vec<usize> {
    core_affinity::get_core_ids()
        .map(|v| v.into_iter().map(|c| c.id).collect())
        .unwrap_or_default()
}

/// Keeps the process's other threads off the calling thread's core: every thread of the
/// process but the caller gets the affinity mask `others`; threads they create later inherit
/// it. Returns how many threads were moved. Used when a spinning shared thread is pinned
/// (`--pin`): on its core anything else waits for the spinner's time slice.
pub fn confine_other_threads(others: &[usize]) -> std::io::Result<usize> {
    use nix::sched::{sched_setaffinity, CpuSet};
    use nix::unistd::{gettid, Pid};
    let mut set = CpuSet::new();
    for &c in others {
        set.set(c).map_err(std::io::Error::from)?;
    }
    let me = gettid().as_raw();
    let mut moved = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Some(tid) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if tid == me {
            continue;
        }
        match sched_setaffinity(Pid::from_raw(tid), &set) {
            Ok(()) => moved += 1,
            // The thread ended meanwhile.
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(moved)
}

impl fmt::Display for Threading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "threading {}", self.mode)?;
        if self.requested == "auto" {
            write!(
                f,
                " (auto: {} core(s) in the affinity mask, dedicated needs {DEDICATED_CORES_MIN}",
                self.cores_in_mask
            )?;
            f.write_str(match self.mode {
                ThreadingMode::Split => "; split: a replay at --rate max, inline checks)",
                _ => ")",
            })?;
        }
        for t in &self.threads {
            write!(f, "; thread {} runs {} on ", t.name, t.stages.join("→"))?;
            match t.core {
                // The pipeline confines the other threads only when the mask has another core.
                Some(c)
                    if t.idle == "spin"
                        && self.mode == ThreadingMode::Shared
                        && self.cores_in_mask > 1 =>
                {
                    write!(f, "core {c} (the process's other threads kept off it)")?
                }
                Some(c) => write!(f, "core {c}")?,
                None => f.write_str("any core")?,
            }
            write!(f, ", idle {}", t.idle)?;
        }
        Ok(())
    }
}

/// The idle strategy of the shared thread, from the per-stage ones (see [`plan`]).
pub fn shared_idle(idle: &PerStage<IdleMode>) -> IdleMode {
    idle.ingress
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_dedicated_only_with_a_core_per_stage_thread_and_one_for_zeromq() {
        for workload in [Workload::Paced, Workload::Bulk, Workload::BulkInline] {
            for cores in [DEDICATED_CORES_MIN, 6, 16, 128] {
                assert_eq!(
                    choose(ThreadingKind::Auto, cores, workload),
                    ThreadingMode::Dedicated,
                    "{cores} cores, {workload:?}"
                );
            }
        }
        for cores in 1..DEDICATED_CORES_MIN {
            for workload in [Workload::Paced, Workload::Bulk] {
                assert_eq!(
                    choose(ThreadingKind::Auto, cores, workload),
                    ThreadingMode::Shared,
                    "{cores} cores, {workload:?}"
                );
            }
        }
    }

    #[test]
    fn auto_splits_a_bulk_inline_replay_below_dedicated_when_there_are_two_cores() {
        assert_eq!(
            choose(ThreadingKind::Auto, 1, Workload::BulkInline),
            ThreadingMode::Shared,
            "one core: nothing to split over"
        );
        for cores in SPLIT_CORES_MIN..DEDICATED_CORES_MIN {
            assert_eq!(
                choose(ThreadingKind::Auto, cores, Workload::BulkInline),
                ThreadingMode::Split,
                "{cores} cores"
            );
        }
    }

    #[test]
    fn the_workload_is_bulk_only_at_rate_max_and_inline_only_with_inline_checks() {
        assert_eq!(Workload::of(true, true), Workload::BulkInline);
        assert_eq!(Workload::of(true, false), Workload::Bulk);
        assert_eq!(Workload::of(false, true), Workload::Paced);
        assert_eq!(Workload::of(false, false), Workload::Paced);
    }

    #[test]
    fn an_explicit_mode_is_kept_whatever_the_cores() {
        for cores in [1, 2, 5, 64] {
            for workload in [Workload::Paced, Workload::Bulk, Workload::BulkInline] {
                assert_eq!(
                    choose(ThreadingKind::Dedicated, cores, workload),
                    ThreadingMode::Dedicated
                );
                assert_eq!(
                    choose(ThreadingKind::Split, cores, workload),
                    ThreadingMode::Split
                );
                assert_eq!(
                    choose(ThreadingKind::Shared, cores, workload),
                    ThreadingMode::Shared
                );
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for k in [
            ThreadingKind::Auto,
            ThreadingKind::Dedicated,
            ThreadingKind::Split,
            ThreadingKind::Shared,
        ] {
            assert_eq!(k.as_str().parse::<ThreadingKind>(), Ok(k));
        }
        assert!("both".parse::<ThreadingKind>().is_err());
    }

    #[test]
    fn the_plan_maps_stages_to_threads_and_cores() {
        let cores = PerStage {
            ingress: None,
            risk: Some(3),
            journal: Some(4),
            egress: None,
        };
        let idle = PerStage::all(IdleMode::Backoff);
        let d = plan(
            ThreadingMode::Dedicated,
            ThreadingKind::Dedicated,
            8,
            &cores,
            &idle,
        );
        assert_eq!(d.threads.len(), 4);
        assert_eq!(d.threads[1].stages, vec!["risk"]);
        assert_eq!(d.threads[1].core, Some(3));
        let s = plan(ThreadingMode::Shared, ThreadingKind::Auto, 2, &cores, &idle);
        assert_eq!(s.threads.len(), 1);
        assert_eq!(
            s.threads[0].stages,
            vec!["ingress", "risk", "journal", "egress"]
        );
        assert_eq!(s.threads[0].core, Some(3), "the first core that is set");
        let line = s.to_string();
        assert!(line.contains("threading shared (auto: 2 core(s)"), "{line}");
        assert!(
            line.contains("ingress→risk→journal→egress on core 3"),
            "{line}"
        );
        assert!(!line.contains("kept off"), "backoff moves nothing: {line}");
        let p = plan(ThreadingMode::Split, ThreadingKind::Auto, 2, &cores, &idle);
        assert_eq!(p.threads.len(), 2);
        assert_eq!(p.threads[0].stages, vec!["ingress", "risk"]);
        assert_eq!(p.threads[0].core, Some(3), "risk's core: ingress has none");
        assert_eq!(p.threads[1].stages, vec!["journal", "egress"]);
        assert_eq!(p.threads[1].core, Some(4));
        let line = p.to_string();
        assert!(line.contains("threading split (auto: 2 core(s)"), "{line}");
        assert!(
            line.contains("a replay at --rate max, inline checks"),
            "{line}"
        );
        assert!(
            line.contains("thread front runs ingress→risk on core 3"),
            "{line}"
        );
        assert!(
            line.contains("thread back runs journal→egress on core 4"),
            "{line}"
        );
    }

    #[test]
    fn the_start_up_line_says_other_threads_are_kept_off_only_when_they_can_be() {
        let cores = PerStage::all(Some(1));
        let idle = PerStage::all(IdleMode::Spin);
        let two = plan(ThreadingMode::Shared, ThreadingKind::Auto, 2, &cores, &idle);
        assert!(
            two.to_string()
                .contains("core 1 (the process's other threads kept off it)"),
            "{two}"
        );
        // One core in the mask: there is nowhere else for them to go.
        let one = plan(ThreadingMode::Shared, ThreadingKind::Auto, 1, &cores, &idle);
        let line = one.to_string();
        assert!(line.contains("on core 1, idle spin"), "{line}");
        assert!(!line.contains("kept off"), "{line}");
    }
}
