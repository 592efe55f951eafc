//! Restart: one pass over the journal's tail gives the head, the newest decision, the risk
//! state and the orders to re-send.
//!
//! Before, start-up read the journal up to four times (a full verify on open, the newest
//! decision, a risk replay from record 1, the redelivery window), ~4 s at 14.7 M records and
//! growing. Now ([`recover`]):
//!
//! 1. with a risk state to rebuild (inline or embedded risk), the newest snapshot file
//!    (`NNNN.snap`, [`crate::snapshots`]) is read and restored under the current limits; one
//!    that does not restore (unreadable, other limits, malformed) is passed over with a
//!    warning naming it, for the one before;
//! 2. [`audit::Writer::open_tail`] reads and verifies only the segments from the one holding
//!    the first record needed — the snapshot's covered record, and the start of the redelivery
//!    window — to the head, every segment header besides, and hands each record to one
//!    visitor ([`Pass`]): decisions after the snapshot go into the checker, the newest
//!    decision is kept (the resume point), the accepted orders of the redelivery window are
//!    collected, and the snapshot record that names the file is found and compared with it;
//! 3. a snapshot whose record is not found or does not match (a file changed or swapped, or
//!    a record lost with a power loss) is not used: a warning names the file, and the state
//!    is rebuilt from the snapshot before it, or from the whole journal, by a second read
//!    (the slow path, loud).
//!
//! The full verify of every record is `audit verify`'s job (docs/formats/audit-log.md,
//! section 4, "Opening the tail only").

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use orders::{decode_decision, Decision};

use crate::frames::EgressEntry;

/// Decisions applied together ([`risk::Checker::apply_decisions`]: their cache misses overlap).
const APPLY_BATCH: usize = 256;

/// What to rebuild besides the head.
#[derive(Debug, Clone, Default)]
pub struct RecoverySpec {
    /// The limits of the inline or embedded risk checks: their state is rebuilt. `None`: a
    /// remote risk service keeps its own state.
    pub limits: Option<risk::Limits>,
    /// Journal records whose accepted orders are re-sent on resume
    /// ([`crate::limits::redelivery_window_records`]); 0: no downstream.
    pub redelivery_window: usize,
}

/// Where the risk state came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RiskSource {
    /// No risk state rebuilt (remote risk).
    None,
    /// An empty journal: a fresh state.
    Fresh,
    /// A snapshot file (covering records up to `covered_seq`), then the records after it.
    Snapshot {
        /// Its path.
        path: PathBuf,
        /// The last record it covers.
        covered_seq: u64,
    },
    /// Every decision of the journal (no usable snapshot).
    FullReplay,
}

/// What recovery found.
#[derive(Debug)]
pub struct Recovered {
    /// The journal, open for append.
    pub writer: audit::Writer,
    /// What opening it did.
    pub recovery: audit::Recovery,
    /// The newest decision record, if any: where a resume starts.
    pub last: Option<Decision>,
    /// Records in the journal when opened.
    pub records_before: u64,
    /// The rebuilt risk state (with [`RecoverySpec::limits`]).
    pub checker: Option<risk::Checker>,
    /// Where it came from.
    pub risk_source: RiskSource,
    /// Decisions applied to it from the journal (after the snapshot).
    pub decisions_replayed: u64,
    /// The record of the snapshot it was rebuilt from (the file matched it).
    pub snapshot_used: Option<audit::SnapshotRecord>,
    /// The accepted orders of the last `redelivery_window` records, in journal order.
    pub redelivery: Vec<EgressEntry>,
    /// Warnings to show (an unusable snapshot, named).
    pub warnings: Vec<String>,
    /// The account name table recorded in the journal (kind-4 records,
    /// [`crate::account_names`]): from the records the pass read (the last segment starts
    /// with the whole table, its prologue), or from every record when those did not hold it
    /// whole (a warning says so).
    pub account_names: orders::AccountNames,
    /// Time spent loading the snapshot (read, SHA-256, restore), and in the pass over the
    /// journal's tail (open, verify, replay), ms.
    pub load_ms: f64,
    /// See `load_ms`.
    pub tail_ms: f64,
}

/// A snapshot file restored, waiting for its record to be found.
struct Candidate {
    path: PathBuf,
    covered_seq: u64,
    len: u64,
    sha256: [u8; 32],
}

impl Candidate {
    /// The record that names this file with this content.
    fn record(&self) -> audit::SnapshotRecord {
        audit::SnapshotRecord {
            covered_seq: self.covered_seq,
            file_len: self.len,
            sha256: self.sha256,
        }
    }
}

/// A snapshot file loaded: the state it holds, its length and SHA-256.
type Loaded = (risk::Checker, u64, [u8; 32]);

/// Bytes of one chunk a snapshot file is read in ([`load_snapshot`]).
const SNAPSHOT_CHUNK_BYTES: usize = 256 << 10;
/// Chunks in flight between the reading (and decoding) thread and the hashing one: the
/// reader may run this far ahead of the hash.
const SNAPSHOT_CHUNKS: usize = 4;

/// Reads, hashes and restores a snapshot file in one pass: the file is read in chunks of
/// [`SNAPSHOT_CHUNK_BYTES`] that [`risk::Checker::restore_state_from`] decodes as they come,
/// and each chunk, once decoded, goes to a second thread that hashes it — the bytes hashed
/// are the bytes decoded, and no buffer of the whole file (35.6 MB for 2.7 M open orders in
/// version 2, 86 MB in version 1) is allocated. The hash is compared with the journal's
/// record by the caller before the state is used.
fn load_snapshot(path: &Path, limits: &risk::Limits) -> Result<Loaded, String> {
    load_snapshot_in(path, limits, SNAPSHOT_CHUNK_BYTES)
}

/// [`load_snapshot`] in chunks of `chunk_bytes`.
fn load_snapshot_in(
    path: &Path,
    limits: &risk::Limits,
    chunk_bytes: usize,
) -> Result<Loaded, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("snapshot file {} is missing", path.display()))
        }
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let len = file
        .metadata()
        .map_err(|e| format!("cannot read the metadata of {}: {e}", path.display()))?
        .len();
    if len > audit::limits::SNAPSHOT_FILE_BYTES_MAX {
        return Err(format!(
            "snapshot file {} is larger than {} bytes",
            path.display(),
            audit::limits::SNAPSHOT_FILE_BYTES_MAX
        ));
    }
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(SNAPSHOT_CHUNKS);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(SNAPSHOT_CHUNKS);
    let (hashed, restored) = std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            let mut total = 0u64;
            for (buf, n) in full_rx {
                h.update(&buf[..n]);
                total += n as u64;
                // The reader may be done with its chunks already.
                let _ = free_tx.try_send(buf);
            }
            (total, <[u8; 32]>::from(h.finalize()))
        });
        let mut chunks = HashedChunks {
            // One byte more than the metadata says: a file that grew is read to its new
            // length's first extra byte and refused (the restore wants exactly `len`).
            file: std::io::Read::take(file, len.saturating_add(1)),
            buf: Vec::new(),
            filled: 0,
            pos: 0,
            to_hash: full_tx,
            free: free_rx,
            made: 0,
            chunk_bytes: chunk_bytes.max(1),
        };
        // A restore that succeeds has read the file to its end (it wants exactly `len` bytes
        // and then the end of the file), so every byte of it went to the hash.
        let restored = risk::Checker::restore_state_from(limits.clone(), &mut chunks, len);
        // Closes the channel: the hashing thread finishes.
        drop(chunks);
        (hasher.join(), restored)
    });
    let (total, sha) = hashed.map_err(|_| "the hashing thread panicked".to_owned())?;
    let checker = restored.map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((checker, total, sha))
}

/// A snapshot file as a [`std::io::Read`] of chunks, each handed to the hashing thread once
/// read past ([`load_snapshot`]).
struct HashedChunks {
    file: std::io::Take<std::fs::File>,
    /// The chunk being read from: `buf[pos..filled]` is left.
    buf: Vec<u8>,
    filled: usize,
    pos: usize,
    /// To the hashing thread (closed when this is dropped).
    to_hash: std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
    /// Chunks the hashing thread is done with.
    free: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Chunks allocated so far (at most [`SNAPSHOT_CHUNKS`]).
    made: usize,
    /// Bytes of a chunk.
    chunk_bytes: usize,
}

impl HashedChunks {
    /// Hands the current chunk to the hashing thread and fills the next one; `false` at the
    /// end of the file.
    fn next_chunk(&mut self) -> std::io::Result<bool> {
        let done = std::mem::take(&mut self.buf);
        let done_len = std::mem::replace(&mut self.filled, 0);
        self.pos = 0;
        let mut buf = if done_len == 0 && !done.is_empty() {
            // Nothing in it to hash (the end of the file was reached): read into it again.
            done
        } else {
            if done_len > 0 {
                self.to_hash
                    .send((done, done_len))
                    .map_err(|_| std::io::Error::other("the hashing thread is gone"))?;
            }
            if self.made < SNAPSHOT_CHUNKS {
                self.made += 1;
                vec![0u8; self.chunk_bytes]
            } else {
                self.free
                    .recv()
                    .map_err(|_| std::io::Error::other("the hashing thread is gone"))?
            }
        };
        let mut filled = 0;
        while filled < buf.len() {
            match std::io::Read::read(&mut self.file, &mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf = buf;
        self.filled = filled;
        Ok(filled > 0)
    }
}

impl std::io::Read for HashedChunks {
    #[inline]
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.filled && !self.next_chunk()? {
            return Ok(0);
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The risk state the pass builds.
enum RiskAcc {
    /// None to build (remote risk).
    None,
    /// Every decision after `apply_after` goes into this checker (in batches: `batch`).
    Direct(risk::Checker, Vec<Decision>),
    /// The snapshot is being loaded on another thread: decisions wait here until it is.
    Pending {
        rx: std::sync::mpsc::Receiver<Result<Loaded, String>>,
        waiting: Vec<Decision>,
    },
    /// The snapshot is loaded (its length and SHA-256 are compared with its record); the
    /// decisions after it go into its checker in batches.
    Loaded(Loaded, Vec<Decision>),
    /// It could not be loaded: why.
    Failed(String),
}

impl RiskAcc {
    /// Takes the loader's result if it is there (or waits for it with `block`).
    fn settle(&mut self, block: bool) {
        let RiskAcc::Pending { rx, waiting } = self else {
            return;
        };
        let got = if block {
            rx.recv()
                .map_err(|_| std::sync::mpsc::TryRecvError::Disconnected)
        } else {
            rx.try_recv()
        };
        let next = match got {
            Err(std::sync::mpsc::TryRecvError::Empty) => return,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                RiskAcc::Failed("the snapshot loader ended without a result".into())
            }
            Ok(Err(e)) => RiskAcc::Failed(e),
            Ok(Ok(mut loaded)) => {
                loaded.0.apply_decisions(waiting);
                RiskAcc::Loaded(loaded, Vec::with_capacity(APPLY_BATCH))
            }
        };
        *self = next;
    }

    fn apply(&mut self, d: Decision) {
        self.settle(false);
        match self {
            RiskAcc::Direct(c, batch) | RiskAcc::Loaded((c, _, _), batch) => {
                batch.push(d);
                if batch.len() == APPLY_BATCH {
                    c.apply_decisions(batch);
                    batch.clear();
                }
            }
            RiskAcc::Pending { waiting, .. } => waiting.push(d),
            RiskAcc::None | RiskAcc::Failed(_) => {}
        }
    }

    /// Waits for the loader, and applies what is batched.
    fn finish(&mut self) {
        self.settle(true);
        if let RiskAcc::Direct(c, batch) | RiskAcc::Loaded((c, _, _), batch) = self {
            c.apply_decisions(batch);
            batch.clear();
        }
    }

    fn wanted(&self) -> bool {
        !matches!(self, RiskAcc::None | RiskAcc::Failed(_))
    }
}

/// The visitor of the one pass (see the module docs).
struct Pass {
    window: u64,
    /// Apply decisions with a sequence number above this to the risk state.
    apply_after: u64,
    risk: RiskAcc,
    /// The snapshot's own record (the one naming `apply_after`), when found.
    seen: Option<(u64, audit::SnapshotRecord)>,
    /// The newest snapshot record newer than the snapshot (its file was not usable).
    newer: Option<audit::SnapshotRecord>,
    /// The newest decision's payload (decoded once, at the end).
    last: Vec<u8>,
    /// The last record visited (sequence number, hash): the pass must end on the head the
    /// writer continues from.
    visited: Option<(u64, [u8; 32])>,
    replayed: u64,
    redelivery: VecDeque<EgressEntry>,
    /// The account names the records read bind.
    names: crate::account_names::NameCollector,
}

impl audit::TailVisitor for Pass {
    fn first_seq_needed(&mut self, last_segment_first_seq: u64) -> u64 {
        // The head is at least `last_segment_first_seq - 1`: the window starts at or after
        // `head - window`, so this covers it (without a window, the last segment is enough);
        // the snapshot's covered record is a decision, so the newest decision is seen too.
        let window_start = if self.window > 0 {
            last_segment_first_seq
                .saturating_sub(1)
                .saturating_sub(self.window)
                .max(1)
        } else {
            last_segment_first_seq
        };
        if self.risk.wanted() {
            window_start.min(self.apply_after.max(1))
        } else {
            window_start
        }
    }

    fn visit(&mut self, r: audit::RecordView<'_>) -> Result<(), audit::VisitError> {
        // Cheap invariants (release builds too): the records come dense, in order.
        if let Some((prev, _)) = self.visited {
            assert!(
                r.seq == prev + 1,
                "recovery: journal record {} after {prev}: sequence numbers must be dense",
                r.seq
            );
        }
        self.visited = Some((r.seq, r.hash));
        match r.kind {
            audit::KIND_DECISION => {
                let replay = r.seq > self.apply_after && self.risk.wanted();
                if replay || self.window > 0 {
                    let d = decode_decision(r.payload).map_err(|e| {
                        format!("journal record {} is not a valid decision: {e}", r.seq)
                    })?;
                    if self.window > 0 && d.reason.is_accepted() {
                        self.redelivery.push_back(EgressEntry {
                            input_seq: d.input_seq,
                            journal_seq: r.seq,
                            order: d.order,
                        });
                        // Bounded: nothing older than the window of the newest record.
                        let keep_from = r.seq.saturating_sub(self.window);
                        while self
                            .redelivery
                            .front()
                            .is_some_and(|e| e.journal_seq < keep_from)
                        {
                            self.redelivery.pop_front();
                        }
                    }
                    if replay {
                        self.risk.apply(d);
                        self.replayed += 1;
                    }
                }
                self.last.clear();
                self.last.extend_from_slice(r.payload);
            }
            audit::KIND_ACCOUNT_NAME => self.names.visit(r.seq, r.payload)?,
            audit::KIND_SNAPSHOT if self.risk.wanted() => {
                let Some(rec) = audit::SnapshotRecord::decode(r.payload) else {
                    return Ok(());
                };
                if rec.covered_seq == self.apply_after && self.apply_after > 0 {
                    if self.seen.is_none() {
                        self.seen = Some((r.seq, rec));
                    }
                } else if rec.covered_seq > self.apply_after {
                    self.newer = Some(rec);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Restores the newest snapshot file of `dir` covering less than `below` that restores under
/// `limits`; files passed over are named in `warnings`.
fn newest_restorable(
    dir: &Path,
    limits: &risk::Limits,
    below: u64,
    warnings: &mut Vec<String>,
) -> anyhow::Result<Option<(Candidate, risk::Checker)>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let files = audit::snapshot::list_snapshots(dir)
        .with_context(|| format!("cannot list the snapshots in {}", dir.display()))?;
    for (covered_seq, path) in files.into_iter().rev() {
        if covered_seq >= below {
            continue;
        }
        match load_snapshot(&path, limits) {
            Ok((checker, len, sha256)) => {
                let c = Candidate {
                    path,
                    covered_seq,
                    len,
                    sha256,
                };
                return Ok(Some((c, checker)));
            }
            Err(e) => warnings.push(format!(
                "risk snapshot {} not used: {e}; trying an older one",
                path.display()
            )),
        }
    }
    Ok(None)
}

/// Opens the journal in `dir` and recovers from its tail in one pass (see the module docs).
/// The newest snapshot file is read, hashed and restored on other threads while the pass
/// reads the journal's tail; the decisions after it wait for it.
pub fn recover(
    dir: &Path,
    opts: audit::WriterOptions,
    spec: &RecoverySpec,
) -> anyhow::Result<Recovered> {
    let mut warnings = Vec::new();
    let newest = match (&spec.limits, dir.is_dir()) {
        (Some(_), true) => audit::snapshot::list_snapshots(dir)
            .with_context(|| format!("cannot list the snapshots in {}", dir.display()))?
            .pop(),
        _ => None,
    };
    let mut pass = Pass {
        window: spec.redelivery_window as u64,
        apply_after: newest.as_ref().map_or(0, |n| n.0),
        risk: RiskAcc::None,
        seen: None,
        newer: None,
        last: Vec::new(),
        visited: None,
        replayed: 0,
        redelivery: VecDeque::new(),
        names: crate::account_names::NameCollector::default(),
    };
    let t0 = std::time::Instant::now();
    let opened = std::thread::scope(|s| {
        let loading = match (&spec.limits, &newest) {
            (None, _) => None,
            (Some(limits), None) => {
                pass.risk = RiskAcc::Direct(
                    risk::Checker::new(limits.clone()),
                    Vec::with_capacity(APPLY_BATCH),
                );
                None
            }
            (Some(limits), Some((_, path))) => {
                let (tx, rx) = std::sync::mpsc::channel();
                pass.risk = RiskAcc::Pending {
                    rx,
                    waiting: Vec::new(),
                };
                Some(s.spawn(move || {
                    let t = std::time::Instant::now();
                    let _ = tx.send(load_snapshot(path, limits));
                    t.elapsed().as_secs_f64() * 1e3
                }))
            }
        };
        let opened = audit::Writer::open_tail(dir, opts, &mut pass);
        let tail_ms = t0.elapsed().as_secs_f64() * 1e3;
        let load_ms = loading.map_or(0.0, |h| h.join().unwrap_or(0.0));
        (opened, load_ms, tail_ms)
    });
    let (opened, load_ms, tail_ms) = opened;
    let (writer, recovery) =
        opened.with_context(|| format!("cannot open the journal in {}", dir.display()))?;
    pass.risk.finish();
    let records_before = writer.next_seq().saturating_sub(1);
    if let Some((seq, hash)) = pass.visited {
        // The chain the writer continues is the one the pass read, to its last record.
        assert!(
            seq == records_before && hash == writer.head_hash(),
            "recovery: the pass ended at record {seq}, the journal's head is {records_before} \
             (the chain must be continuous to the head)"
        );
    }
    let mut last = if pass.last.is_empty() {
        None
    } else {
        Some(decode_decision(&pass.last).with_context(|| {
            format!(
                "the newest decision record in {} does not decode",
                dir.display()
            )
        })?)
    };
    if last.is_none() && records_before > 0 {
        // No decision in the records read (a tail of other records): look further back.
        last = last_decision(&writer)?;
    }
    let account_names = match pass.names.finish() {
        Ok(table) => table,
        Err(missing) => {
            warnings.push(format!(
                "the journal's tail does not hold the whole account name table ({missing}): \
                 reading every record for it"
            ));
            crate::account_names::read_all(dir)?
        }
    };
    let keep_from = records_before.saturating_sub(pass.window).max(1);
    let redelivery: Vec<EgressEntry> = pass
        .redelivery
        .into_iter()
        .filter(|e| pass.window > 0 && e.journal_seq >= keep_from)
        .collect();
    if let Some(rec) = &pass.newer {
        warnings.push(format!(
            "risk snapshot {} (named by journal record covering seq {}) was not used: it is \
             missing or does not restore",
            rec.path(dir).display(),
            rec.covered_seq
        ));
    }
    let replayed = pass.replayed;
    let (checker, risk_source, replayed, snapshot_used) = match (pass.risk, newest) {
        (RiskAcc::None, _) => (None, RiskSource::None, 0, None),
        (RiskAcc::Direct(c, _), _) if records_before == 0 => (Some(c), RiskSource::Fresh, 0, None),
        (RiskAcc::Direct(c, _), _) => (Some(c), RiskSource::FullReplay, replayed, None),
        (RiskAcc::Loaded((c, len, sha256), _), Some((covered_seq, path))) => {
            let cand = Candidate {
                path,
                covered_seq,
                len,
                sha256,
            };
            match pass.seen {
                Some((_, rec)) if rec == cand.record() => (
                    Some(c),
                    RiskSource::Snapshot {
                        path: cand.path.clone(),
                        covered_seq,
                    },
                    replayed,
                    Some(cand.record()),
                ),
                seen => {
                    let why = match seen {
                        Some((seq, rec)) => format!(
                            "its record (seq {seq}) says {} bytes, SHA-256 {}; the file has {} \
                             bytes, SHA-256 {}",
                            rec.file_len,
                            hex(&rec.sha256),
                            len,
                            hex(&sha256)
                        ),
                        None => format!(
                            "no journal record names it (the records up to {records_before} \
                             were read)"
                        ),
                    };
                    warnings.push(format!(
                        "risk snapshot {} not used: {why}; rebuilding risk state from an older \
                         snapshot or the whole journal",
                        cand.path.display()
                    ));
                    slowly(dir, spec, covered_seq, &mut warnings)?
                }
            }
        }
        (RiskAcc::Failed(e), Some((covered_seq, path))) => {
            warnings.push(format!(
                "risk snapshot {} not used: {e}; trying an older one",
                path.display()
            ));
            slowly(dir, spec, covered_seq, &mut warnings)?
        }
        (RiskAcc::Loaded(..) | RiskAcc::Failed(_) | RiskAcc::Pending { .. }, _) => {
            anyhow::bail!("risk state recovery ended in an impossible state")
        }
    };
    Ok(Recovered {
        writer,
        recovery,
        last,
        records_before,
        checker,
        risk_source,
        decisions_replayed: replayed,
        snapshot_used,
        redelivery,
        warnings,
        account_names,
        load_ms,
        tail_ms,
    })
}

/// [`rebuild_slowly`] under the spec's limits.
#[allow(clippy::type_complexity)]
fn slowly(
    dir: &Path,
    spec: &RecoverySpec,
    below: u64,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(
    Option<risk::Checker>,
    RiskSource,
    u64,
    Option<audit::SnapshotRecord>,
)> {
    let limits = spec.limits.as_ref().context("no risk limits")?;
    let (c, source, n, used) = rebuild_slowly(dir, limits, below, warnings)?;
    Ok((Some(c), source, n, used))
}

/// The slow path: older snapshots (below `below`), each confirmed by its record in a read
/// from it to the head, else every decision of the journal.
#[allow(clippy::type_complexity)]
fn rebuild_slowly(
    dir: &Path,
    limits: &risk::Limits,
    mut below: u64,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(
    risk::Checker,
    RiskSource,
    u64,
    Option<audit::SnapshotRecord>,
)> {
    let reader = audit::Reader::open(dir)
        .with_context(|| format!("cannot read the journal in {}", dir.display()))?;
    loop {
        let found = newest_restorable(dir, limits, below, warnings)?;
        let (cand, mut checker, after) = match found {
            Some((c, checker)) => {
                let after = c.covered_seq;
                (Some(c), checker, after)
            }
            None => (None, risk::Checker::new(limits.clone()), 0),
        };
        let mut confirmed = cand.is_none();
        let mut replayed = 0u64;
        let mut batch = Vec::with_capacity(APPLY_BATCH);
        for rec in reader.iter_from(after + 1) {
            let rec = rec.with_context(|| {
                format!(
                    "cannot read the journal in {} to rebuild risk state",
                    dir.display()
                )
            })?;
            match rec.kind {
                audit::KIND_DECISION => {
                    let d = decode_decision(&rec.payload).with_context(|| {
                        format!("journal record {} is not a valid decision", rec.seq)
                    })?;
                    batch.push(d);
                    if batch.len() == APPLY_BATCH {
                        checker.apply_decisions(&batch);
                        batch.clear();
                    }
                    replayed += 1;
                }
                audit::KIND_SNAPSHOT => {
                    if let (Some(r), Some(c)) = (audit::SnapshotRecord::decode(&rec.payload), &cand)
                    {
                        if r.covered_seq == c.covered_seq {
                            confirmed = r.file_len == c.len && r.sha256 == c.sha256;
                        }
                    }
                }
                _ => {}
            }
        }
        checker.apply_decisions(&batch);
        match cand {
            None => return Ok((checker, RiskSource::FullReplay, replayed, None)),
            Some(c) if confirmed => {
                let used = c.record();
                return Ok((
                    checker,
                    RiskSource::Snapshot {
                        path: c.path,
                        covered_seq: c.covered_seq,
                    },
                    replayed,
                    Some(used),
                ));
            }
            Some(c) => {
                warnings.push(format!(
                    "risk snapshot {} not used: no journal record names it with this content; \
                     trying an older one",
                    c.path.display()
                ));
                below = c.covered_seq;
            }
        }
    }
}

/// The newest decision in the journal: where a resume starts. A journal that cannot be read
/// here is an error, never "no decision" (which would restart from input_seq 0 and decide
/// every order a second time).
pub(crate) fn last_decision(writer: &audit::Writer) -> anyhow::Result<Option<Decision>> {
    let dir = writer.dir();
    let payload = writer.last_payload(audit::KIND_DECISION).with_context(|| {
        format!(
            "cannot read the newest decision record in {}: the resume point is unknown",
            dir.display()
        )
    })?;
    payload
        .map(|p| {
            decode_decision(&p).with_context(|| {
                format!(
                    "the newest decision record in {} does not decode",
                    dir.display()
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A snapshot file read in chunks (many more than the buffers in flight, so that they are
    /// recycled): the state, length and SHA-256 are those of the file read whole; a byte more
    /// or less, or a missing file, is refused.
    #[test]
    fn a_snapshot_loads_in_chunks_with_the_hash_of_the_whole_file() {
        let limits =
            risk::Limits::from_toml_str(crate::app::BUILT_IN_LIMITS_TOML, "built-in").unwrap();
        let bytes = risk::Checker::new(limits.clone()).state_bytes();
        assert!(bytes.len() > 16 * SNAPSHOT_CHUNKS, "{} bytes", bytes.len());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.snap");
        std::fs::write(&path, &bytes).unwrap();
        for chunk in [1, 16, 100, SNAPSHOT_CHUNK_BYTES] {
            let (c, len, sha) = load_snapshot_in(&path, &limits, chunk).unwrap();
            assert_eq!(len, bytes.len() as u64);
            assert_eq!(sha, audit::snapshot::sha256(&bytes), "chunks of {chunk}");
            assert_eq!(c.state_bytes(), bytes);
        }
        let mut longer = bytes.clone();
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        let e = load_snapshot_in(&path, &limits, 16)
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("length"), "{e}");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let e = load_snapshot_in(&path, &limits, 16)
            .map(|_| ())
            .unwrap_err();
        assert!(e.contains("length"), "{e}");
        std::fs::remove_file(&path).unwrap();
        let e = load_snapshot(&path, &limits).map(|_| ()).unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
