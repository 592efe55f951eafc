//! Risk-state snapshots while the engine runs, so that a restart replays only the journal's
//! tail ([`crate::recovery`]).
//!
//! A thread of its own (`snapshots`) follows the journal as the journal stage writes it (an
//! [`audit::Reader`]: committed records only, read back from the page cache without hashing
//! them again, [`audit::Reader::without_hash_checks`]) and applies every decision to its
//! own copy of the risk state — exactly what a replay of the journal builds, whatever the live
//! checks did. It builds that copy itself, the way recovery did (the same snapshot file, checked
//! against its record again, and the decisions after it), once the run has appended its first
//! batch: off the restart's critical path, and not at all for a run that decides nothing. Every `every_records` decisions, or
//! `every_ms` after the last snapshot (with at least `min(every_records, 65536)` decisions since:
//! a smaller tail replays faster than a snapshot is made), and at a clean stop, it writes the
//! state ([`risk::Checker::encode_state`]) as `<covered_seq>.snap`
//! ([`audit::snapshot::write_snapshot_file`], synced under the durable policies) and hands the
//! snapshot record to the journal stage, which appends it between batches
//! ([`crate::stages::journal::AuditLog`]): the chain covers the record, the record covers the
//! file. Older files are pruned once two newer ones are recorded.
//!
//! Nothing of this is on the order path: the journal stage only polls a channel when it
//! maintains the writer (every millisecond at most) and appends one 56-byte record per
//! snapshot. A failure here (a full disk, an unreadable journal) stops the snapshots with a
//! warning, never the engine: restart then replays a longer tail.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::limits::{SNAPSHOT_MIN_RECORDS_MAX, SNAPSHOT_POLL_MS};

/// The snapshot thread's name.
pub const SNAPSHOT_THREAD_NAME: &str = "snapshots";

/// Puts the calling thread under `SCHED_IDLE`: it runs on a core nothing else wants and never
/// preempts a thread of a normal policy when it wakes up. The snapshot thread wakes every
/// [`SNAPSHOT_POLL_MS`] and applies what the journal gained meanwhile (~1,000 decisions at
/// 100 k/s, up to a millisecond of work); under the normal policy the scheduler put it on the
/// core of an unpinned spinning engine thread, whose orders then waited: `--risk inline
/// --idle spin --rate 100000` p99 278–515 µs with the normal policy against 10–21 µs in 5 of 6
/// runs under `SCHED_IDLE` (`SCHED_BATCH`, which only stops wake-up preemption: 19–271 µs;
/// docs/results.md, "Seventh session"). While the engine runs, a host busy for long stretches
/// delays snapshots (a restart then replays a longer tail), never orders; at stop the thread
/// asks for the normal policy back ([`normal_priority`]). A refusal (some container policies)
/// is logged and the thread goes on at its normal priority.
fn background_priority() {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadSchedulePolicy,
    };
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    ) {
        tracing::warn!(
            "risk-state snapshots run at normal priority: SCHED_IDLE refused ({e:?}); they may \
             take time slices from an unpinned engine thread"
        );
    }
}

/// Back to the normal policy (`SCHED_OTHER`, nice 0) for the catch-up at stop, so that a busy
/// host does not hold the engine's exit behind an idle-priority thread. Leaving `SCHED_IDLE`
/// needs `CAP_SYS_NICE` or an `RLIMIT_NICE` of 20 (`sched(7)`): without them the catch-up
/// stays at idle priority (it takes longer only while other processes keep every core busy).
/// Returns whether the thread has the normal policy and nice 0 now, as the kernel reports
/// them (`/proc/thread-self/stat`).
fn normal_priority() -> bool {
    use thread_priority::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    };
    // The crate maps 0..=99 onto nice -20..=19 (rounding down): 48 is nice 0.
    let nice_0 = ThreadPriorityValue::try_from(48u8).unwrap_or_default();
    if let Err(e) = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Crossplatform(nice_0),
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
    ) {
        tracing::info!(
            "risk-state snapshots catch up at idle priority at stop (leaving SCHED_IDLE \
             refused: {e:?})"
        );
        return false;
    }
    matches!(thread_sched("/proc/thread-self/stat"), Some((0, 0)))
}

/// The scheduling policy (0 `SCHED_OTHER`, 3 `SCHED_BATCH`, 5 `SCHED_IDLE`) and nice value of
/// the thread whose `stat` file this is (`proc(5)`: fields 41 and 19).
fn thread_sched(stat_path: &str) -> Option<(u32, i32)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after "(comm)" start at field 3.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let nice = rest.get(19 - 3)?.parse().ok()?;
    let policy = rest.get(41 - 3)?.parse().ok()?;
    Some((policy, nice))
}

/// Decisions applied together ([`risk::Checker::apply_decisions`]: their cache misses
/// overlap).
const APPLY_BATCH: usize = 256;

/// When risk-state snapshots are written (`--snapshot-every-records`, `--snapshot-every-ms`,
/// `journal.snapshot_every_records`, `journal.snapshot_every_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// A snapshot after this many decisions since the last one (0: no snapshots at all).
    pub every_records: u64,
    /// … or this long after the last one (0: not by time), with at least
    /// [`SnapshotSettings::min_records`] decisions since.
    pub every_ms: u64,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        SnapshotSettings {
            every_records: crate::limits::SNAPSHOT_EVERY_RECORDS_DEFAULT,
            every_ms: crate::limits::SNAPSHOT_EVERY_MS_DEFAULT,
        }
    }
}

impl SnapshotSettings {
    /// Whether snapshots are written at all.
    pub fn enabled(&self) -> bool {
        self.every_records > 0
    }

    /// Decisions since the last snapshot below which no snapshot is made by time or at stop:
    /// replaying that many is cheaper than making one.
    pub fn min_records(&self) -> u64 {
        self.every_records.clamp(1, SNAPSHOT_MIN_RECORDS_MAX)
    }
}

/// How the snapshot thread ended.
#[derive(Debug, Default)]
pub struct SnapshotsDone {
    /// Snapshot records made and not appended yet (the final one included), in order.
    pub pending: Vec<audit::SnapshotRecord>,
    /// Snapshot files written by this run.
    pub written: u64,
    /// Why snapshots stopped early, if they did.
    pub error: Option<String>,
    /// Whether the thread got the normal scheduling policy back for its catch-up at stop
    /// (`None`: it stopped with nothing to catch up).
    pub priority_restored: Option<bool>,
}

/// The snapshot thread (see the module docs).
#[derive(Debug)]
pub struct Snapshotter {
    stop: Arc<AtomicBool>,
    final_snapshot: Arc<AtomicBool>,
    recorded: Arc<AtomicU64>,
    appended: Arc<AtomicU64>,
    rx: mpsc::Receiver<audit::SnapshotRecord>,
    /// The thread; it returns everything of [`SnapshotsDone`] but `pending`.
    handle: Option<JoinHandle<SnapshotsDone>>,
}

/// Where the thread's copy of the risk state starts: what recovery rebuilt it from.
#[derive(Debug, Clone)]
pub struct StateSource {
    /// The limits of the checks.
    pub limits: risk::Limits,
    /// The snapshot recovery loaded (its record), or `None`: every decision from record 1.
    pub snapshot: Option<audit::SnapshotRecord>,
}

/// What the thread works with.
struct Follower {
    dir: PathBuf,
    source: StateSource,
    settings: SnapshotSettings,
    durable: bool,
    stop: Arc<AtomicBool>,
    final_snapshot: Arc<AtomicBool>,
    recorded: Arc<AtomicU64>,
    appended: Arc<AtomicU64>,
    tx: mpsc::Sender<audit::SnapshotRecord>,
    /// Set at the first sight of the stop flag with work left (see [`normal_priority`]).
    priority_restored: Option<bool>,
}

impl Snapshotter {
    /// Starts following the journal in `dir`, whose last record is `head` now, with a risk
    /// state it builds from `source` once records beyond `head` appear. `durable`: sync the
    /// files (the journal's policy syncs).
    pub fn spawn(
        dir: PathBuf,
        source: StateSource,
        head: u64,
        settings: SnapshotSettings,
        durable: bool,
    ) -> std::io::Result<Snapshotter> {
        let stop = Arc::new(AtomicBool::new(false));
        let final_snapshot = Arc::new(AtomicBool::new(false));
        let recorded = Arc::new(AtomicU64::new(head));
        let appended = Arc::new(AtomicU64::new(head));
        let (tx, rx) = mpsc::channel();
        let f = Follower {
            dir,
            source,
            settings,
            durable,
            stop: Arc::clone(&stop),
            final_snapshot: Arc::clone(&final_snapshot),
            recorded: Arc::clone(&recorded),
            appended: Arc::clone(&appended),
            tx,
            priority_restored: None,
        };
        let handle = std::thread::Builder::new()
            .name(SNAPSHOT_THREAD_NAME.into())
            .spawn(move || {
                background_priority();
                f.run(head)
            })?;
        Ok(Snapshotter {
            stop,
            final_snapshot,
            recorded,
            appended,
            rx,
            handle: Some(handle),
        })
    }

    /// The journal's last record is `seq` now (the journal stage, once per batch).
    pub fn appended(&self, seq: u64) {
        self.appended.store(seq, Ordering::Release);
    }

    /// A snapshot record ready to be appended, if any (never blocks).
    pub fn try_recv(&self) -> Option<audit::SnapshotRecord> {
        self.rx.try_recv().ok()
    }

    /// The record of the snapshot covering `covered_seq` is appended: older files may go.
    pub fn recorded(&self, covered_seq: u64) {
        self.recorded.fetch_max(covered_seq, Ordering::Release);
    }

    /// Stops the thread once it has read every record committed so far, with a last snapshot
    /// of them when `final_snapshot` (and enough decisions since the last one); returns what
    /// is still to be appended.
    pub fn stop(mut self, final_snapshot: bool) -> SnapshotsDone {
        self.final_snapshot.store(final_snapshot, Ordering::Release);
        self.stop.store(true, Ordering::Release);
        let mut done = SnapshotsDone::default();
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            match h.join() {
                Ok(ended) => done = ended,
                Err(_) => done.error = Some("the snapshot thread panicked".into()),
            }
        }
        done.pending = self.rx.try_iter().collect();
        done
    }
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Follower {
    /// The thread: returns the files written, why it stopped early if it did, and whether
    /// its catch-up had the normal policy back (`pending` is left to [`Snapshotter::stop`]).
    fn run(mut self, head: u64) -> SnapshotsDone {
        let mut written = 0;
        let error = self.follow(head, &mut written).err();
        if let Some(e) = &error {
            tracing::warn!(
                "risk-state snapshots stopped: {e}; the engine goes on, and a restart replays \
                 the journal from the last snapshot"
            );
        }
        SnapshotsDone {
            pending: Vec::new(),
            written,
            error,
            priority_restored: self.priority_restored,
        }
    }

    /// The risk state `source` names: the snapshot file (checked against its record again)
    /// or a fresh one; returns it and the last record it covers.
    fn initial_state(&self) -> Result<(risk::Checker, u64), String> {
        let limits = self.source.limits.clone();
        match &self.source.snapshot {
            None => Ok((risk::Checker::new(limits), 0)),
            Some(rec) => {
                let bytes = audit::snapshot::check_snapshot_file(&self.dir, rec)
                    .map_err(|e| e.to_string())?;
                let checker = risk::Checker::restore_state(limits, &bytes)
                    .map_err(|e| format!("{}: {e}", rec.path(&self.dir).display()))?;
                Ok((checker, rec.covered_seq))
            }
        }
    }

    fn follow(&mut self, head: u64, written: &mut u64) -> Result<(), String> {
        // Nothing to do until the run appends something (a run that decides nothing never
        // builds the state: a restart with nothing to do stays quick).
        while self.appended.load(Ordering::Acquire) <= head {
            if self.stop.load(Ordering::Acquire) {
                // Records appended just before the stop (stored before the flag) are still
                // to be covered by the final snapshot.
                if self.appended.load(Ordering::Acquire) <= head {
                    return Ok(());
                }
                break;
            }
            std::thread::park_timeout(Duration::from_millis(SNAPSHOT_POLL_MS));
        }
        let (mut checker, from) = self.initial_state()?;
        let dir = self.dir.clone();
        // Records this process has just written, read back from the page cache: not hashed
        // again (the restart and `audit verify` check them from the disk).
        let mut reader = audit::Reader::open(&dir)
            .map_err(|e| e.to_string())?
            .without_hash_checks();
        let mut next = from + 1;
        let mut pos: Option<audit::Position> = None;
        let mut since = 0u64;
        let mut covered = from;
        let mut last_snapshot = Instant::now();
        let mut buf = Vec::new();
        let mut batch = Vec::with_capacity(APPLY_BATCH);
        let mut pruned_at = 0;
        let every_ms = Duration::from_millis(self.settings.every_ms);
        loop {
            let stopping = self.stop.load(Ordering::Acquire);
            if stopping && self.priority_restored.is_none() {
                // The engine waits for this catch-up: at normal priority, if allowed.
                self.priority_restored = Some(normal_priority());
            }
            // Only what the journal stage has published (end of a batch, Release): a record
            // read past that could still be being written (the length word stored, a copy of
            // the page taken before the rest), and no hash is recomputed here to notice.
            let limit = self.appended.load(Ordering::Acquire);
            let mut due_by_count = false;
            if limit >= next {
                reader.refresh().map_err(|e| e.to_string())?;
                let mut it = match pos {
                    Some(p) => reader.records_at(p),
                    None => reader.iter_from(next),
                };
                let mut at_limit = false;
                loop {
                    let before = it.position();
                    let Some(rec) = it.next() else { break };
                    let rec = rec.map_err(|e| format!("reading the journal: {e}"))?;
                    if rec.seq < next {
                        continue;
                    }
                    if rec.seq > limit {
                        // Not published yet: read it again next time, from here.
                        pos = before;
                        at_limit = true;
                        break;
                    }
                    assert!(
                        rec.seq == next,
                        "snapshots: journal record {} where {next} was due (dense sequence)",
                        rec.seq
                    );
                    next = rec.seq + 1;
                    if rec.kind != audit::KIND_DECISION {
                        continue;
                    }
                    let d = orders::decode_decision(&rec.payload).map_err(|e| {
                        format!("journal record {} is not a valid decision: {e}", rec.seq)
                    })?;
                    batch.push(d);
                    if batch.len() == APPLY_BATCH {
                        checker.apply_decisions(&batch);
                        batch.clear();
                        // SCHED_IDLE is not enough on its own: EEVDF still picks this
                        // thread on a spinner's CPU whenever the spinner's vruntime makes it
                        // ineligible (perf sched: the spinner preempted in state R for
                        // 0.5-0.9 ms at a time). A yield after every batch of 256 decisions
                        // gives the CPU back between batches; on a free CPU it returns at
                        // once (p99 <= 100 µs in 13 of 14 runs against 11 of 14,
                        // docs/results.md).
                        std::thread::yield_now();
                    }
                    covered = rec.seq;
                    since += 1;
                    if since >= self.settings.every_records {
                        due_by_count = true;
                        break;
                    }
                }
                if !at_limit {
                    pos = it.position();
                }
            }
            let caught_up = next > limit && !due_by_count;
            checker.apply_decisions(&batch);
            batch.clear();
            let due_by_time = !every_ms.is_zero()
                && last_snapshot.elapsed() >= every_ms
                && since >= self.settings.min_records();
            let due_at_stop = stopping
                && caught_up
                && self.final_snapshot.load(Ordering::Acquire)
                && since >= self.settings.min_records();
            if due_by_count || due_by_time || due_at_stop {
                buf.clear();
                checker.encode_state(&mut buf);
                let rec = audit::snapshot::write_snapshot_file(&dir, covered, &buf, self.durable)
                    .map_err(|e| format!("writing a snapshot: {e}"))?;
                *written += 1;
                since = 0;
                last_snapshot = Instant::now();
                // The receiver is gone only when the engine is past its end.
                let _ = self.tx.send(rec);
            }
            self.prune(&mut pruned_at);
            if stopping && caught_up {
                return Ok(());
            }
            if caught_up {
                std::thread::park_timeout(Duration::from_millis(SNAPSHOT_POLL_MS));
            }
        }
    }

    /// Keeps the two newest recorded snapshots (the newest, and one to fall back to) and every
    /// one not recorded yet; deletes older ones. Best effort (a failure only keeps files).
    fn prune(&self, pruned_at: &mut u64) {
        let recorded = self.recorded.load(Ordering::Acquire);
        if recorded != *pruned_at {
            *pruned_at = recorded;
            prune(&self.dir, recorded);
        }
    }
}

/// Keeps the two newest snapshot files whose records are appended (`recorded`: the newest
/// covered sequence number recorded; the newest, and one to fall back to) and every newer one;
/// deletes older ones. Best effort: a failure only keeps files.
pub fn prune(dir: &std::path::Path, recorded: u64) {
    let Ok(files) = audit::snapshot::list_snapshots(dir) else {
        return;
    };
    // Sorted ascending: the second newest recorded one is the oldest to keep.
    let recorded_files: Vec<u64> = files
        .iter()
        .map(|f| f.0)
        .filter(|&c| c <= recorded)
        .collect();
    if let [.., keep_from, _newest] = recorded_files[..] {
        let _ = audit::snapshot::prune_snapshots(dir, keep_from);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The scheduling policy and nice value of each thread of this process named `name`.
    fn threads_named(name: &str) -> Vec<(u32, i32)> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc/self/task").into_iter().flatten() {
            let Ok(e) = e else { continue };
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            if comm.trim_end() != name {
                continue;
            }
            if let Some(s) = thread_sched(&e.path().join("stat").to_string_lossy()) {
                v.push(s);
            }
        }
        v
    }

    fn spawn_on(dir: &std::path::Path, head: u64) -> Snapshotter {
        let limits =
            risk::Limits::from_toml_str(crate::app::BUILT_IN_LIMITS_TOML, "built-in").unwrap();
        Snapshotter::spawn(
            dir.to_path_buf(),
            StateSource {
                limits,
                snapshot: None,
            },
            head,
            SnapshotSettings::default(),
            false,
        )
        .unwrap()
    }

    /// The snapshot thread never preempts the engine's threads while they run: it is under
    /// `SCHED_IDLE` (see [`background_priority`]; with the normal policy an unpinned spinner's
    /// p99 at 100 k/s was 278–515 µs instead of 10–21 µs).
    #[test]
    fn the_snapshot_thread_runs_under_sched_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = audit::Writer::open(dir.path(), audit::WriterOptions::default()).unwrap();
        let s = spawn_on(dir.path(), w.next_seq().saturating_sub(1));
        // The thread sets its policy first thing; other tests' snapshot threads may be
        // alive in this process too (all of them must be idle, or back to normal at stop).
        let t = Instant::now();
        let mut seen = threads_named(SNAPSHOT_THREAD_NAME);
        while !seen.iter().any(|&(p, _)| p == 5) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
            seen = threads_named(SNAPSHOT_THREAD_NAME);
        }
        let done = s.stop(false);
        assert!(done.error.is_none(), "{:?}", done.error);
        assert!(
            seen.iter().any(|&(p, _)| p == 5),
            "scheduling policies of the snapshot threads: {seen:?} (5 = SCHED_IDLE)"
        );
    }

    /// At stop, with decisions left to apply, the thread takes the normal policy back for its
    /// catch-up (the engine waits for it), where the process may (root or CAP_SYS_NICE).
    #[test]
    fn the_catch_up_at_stop_runs_at_normal_priority() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = audit::Writer::open(dir.path(), audit::WriterOptions::default()).unwrap();
        let head = w.next_seq().saturating_sub(1);
        let s = spawn_on(dir.path(), head);
        let mut payload = [0u8; orders::DECISION_LEN_BYTES];
        orders::encode_decision(
            &orders::Decision {
                order: orders::Order {
                    order_id: 1,
                    symbol: orders::Symbol::new("AAPL").unwrap(),
                    ..orders::Order::default()
                },
                ..orders::Decision::default()
            },
            &mut payload,
        );
        let a = w.append(audit::KIND_DECISION, 1, &payload).unwrap();
        s.appended(a.seq);
        let done = s.stop(true);
        assert!(done.error.is_none(), "{:?}", done.error);
        // Effective uid 0 (the second field of `Uid:` in /proc/self/status).
        let privileged = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|u| u.split_whitespace().nth(1).map(|e| e == "0"))
            .unwrap_or(false);
        if privileged {
            assert_eq!(done.priority_restored, Some(true));
        } else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "prerequisite missing under CI=true: root, to leave SCHED_IDLE"
            );
            eprintln!("SKIP the_catch_up_at_stop_runs_at_normal_priority: not root");
        }
    }
}
