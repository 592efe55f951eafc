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
}

/// The snapshot thread (see the module docs).
#[derive(Debug)]
pub struct Snapshotter {
    stop: Arc<AtomicBool>,
    final_snapshot: Arc<AtomicBool>,
    recorded: Arc<AtomicU64>,
    appended: Arc<AtomicU64>,
    rx: mpsc::Receiver<audit::SnapshotRecord>,
    handle: Option<JoinHandle<(u64, Option<String>)>>,
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
        };
        let handle = std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || f.run(head))?;
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
                Ok((written, error)) => {
                    done.written = written;
                    done.error = error;
                }
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
    /// The thread: returns the files written and why it stopped early, if it did.
    fn run(mut self, head: u64) -> (u64, Option<String>) {
        let mut written = 0;
        match self.follow(head, &mut written) {
            Ok(()) => (written, None),
            Err(e) => {
                tracing::warn!(
                    "risk-state snapshots stopped: {e}; the engine goes on, and a restart \
                     replays the journal from the last snapshot"
                );
                (written, Some(e))
            }
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
                return Ok(());
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
