//! The single writer of a journal: pre-allocated, memory-mapped segments, a SHA-256 chain,
//! a durability policy, signed checkpoints, and recovery of a torn tail on open.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ed25519_dalek::SigningKey;
use memmap2::MmapMut;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use crate::checkpoint::{newest_checkpoint, CheckpointWriter};
use crate::error::{DamageKind, JournalError};
use crate::format::{
    chain_hash_parts, padding_len, record_len_for, segment_file_name, RecordHeader, SegmentHeader,
    CHECKPOINT_FILE_NAME, GENESIS_HASH, HASH_LEN_BYTES, LOCK_FILE_NAME, RECORD_ALIGN_BYTES,
    RECORD_HEADER_LEN_BYTES, SEGMENT_HEADER_LEN_BYTES, SEGMENT_TMP_SUFFIX, SPARE_SEGMENT_FILE_NAME,
};
use crate::limits::{
    PAYLOAD_LEN_BYTES_MAX, SEGMENT_SIZE_ALIGN_BYTES, SEGMENT_SIZE_BYTES_DEFAULT,
    SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN, SPARE_PACE_PAUSE_US, SYNC_INTERVAL_MS_DEFAULT,
    SYNC_INTERVAL_RECORDS_DEFAULT, ZERO_FILL_CHUNK_BYTES,
};
use crate::mmap::{map_writable, Allocated};
use crate::scan::{
    empty_tail_segments, list_segments, scan_segment_visiting, segment_size_ok, RecordView,
    SegmentFile, SegmentScan, Step, VisitError, Walker,
};
use crate::verify::{check_chain, scan_all, Chain};

const NS_PER_MS: u64 = 1_000_000;

/// When appended records are forced to stable storage with `msync`.
///
/// | policy | survives a process crash (kill -9, panic) | survives a power loss / kernel crash |
/// |---|---|---|
/// | `none` | yes: the mapped pages are in the page cache | only what the kernel had written back |
/// | `interval` | yes | everything up to the last group commit (≤ N records or T ms old) |
/// | `batch` | yes | every record up to the last [`Writer::commit`] (the caller's batch) |
/// | `always` | yes | every record whose `append` returned |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Never msync; the kernel writes pages back on its own schedule.
    #[default]
    None,
    /// Group commit: msync once `records` records are unsynced, or once the oldest unsynced
    /// record's timestamp is `ms` older than the newest record's (checked in `append`) or than
    /// `now_ns` (checked in `maintain`).
    Interval {
        /// Unsynced records that trigger a sync (≥ 1).
        records: u64,
        /// Age of the oldest unsynced record that triggers a sync (ms, ≥ 1).
        ms: u64,
    },
    /// Group commit at the caller's batch boundary: nothing is synced in `append`; one msync
    /// of every record appended since the last one happens in [`Writer::commit`], which the
    /// caller runs after the last append of a batch and before acting on it. Segment creation
    /// is made durable as under `interval` and `always`.
    Batch,
    /// msync the pages of each record before `append` returns.
    Always,
}

impl FromStr for Durability {
    type Err = JournalError;

    /// `none`, `batch`, `always`, `interval` (defaults), or `interval:RECORDS:MS`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |detail: String| JournalError::Config {
            what: "durability",
            detail,
        };
        match s.trim() {
            "none" => Ok(Durability::None),
            "always" => Ok(Durability::Always),
            "batch" => Ok(Durability::Batch),
            "interval" => Ok(Durability::Interval {
                records: SYNC_INTERVAL_RECORDS_DEFAULT,
                ms: SYNC_INTERVAL_MS_DEFAULT,
            }),
            other => {
                let rest = other.strip_prefix("interval:").ok_or_else(|| {
                    bad(format!(
                        "{other:?}: expected none, batch, always, interval or interval:RECORDS:MS"
                    ))
                })?;
                let (r, m) = rest
                    .split_once(':')
                    .ok_or_else(|| bad(format!("{other:?}: expected interval:RECORDS:MS")))?;
                let records: u64 = r
                    .parse()
                    .map_err(|_| bad(format!("{other:?}: RECORDS {r:?} is not a number")))?;
                let ms: u64 = m
                    .parse()
                    .map_err(|_| bad(format!("{other:?}: MS {m:?} is not a number")))?;
                let d = Durability::Interval { records, ms };
                d.validate()?;
                Ok(d)
            }
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::None => f.write_str("none"),
            Durability::Always => f.write_str("always"),
            Durability::Batch => f.write_str("batch"),
            Durability::Interval { records, ms } => write!(f, "interval:{records}:{ms}"),
        }
    }
}

impl Durability {
    fn validate(&self) -> Result<(), JournalError> {
        if let Durability::Interval { records, ms } = *self {
            if records == 0 || ms == 0 {
                return Err(JournalError::Config {
                    what: "durability",
                    detail: format!("interval:{records}:{ms}: both numbers must be at least 1"),
                });
            }
        }
        Ok(())
    }

    fn syncs(&self) -> bool {
        !matches!(self, Durability::None)
    }
}

/// When the writer signs a checkpoint of its head.
#[derive(Clone)]
pub struct CheckpointPolicy {
    /// The journal's Ed25519 key (`audit keygen`, [`crate::load_signing_key`]).
    pub signing_key: SigningKey,
    /// Checkpoint after this many records since the last one (0 = not by count).
    pub every_records: u64,
    /// Checkpoint in `maintain(now_ns)` when the last one is this old and records were
    /// appended since (0 = not by time).
    pub every_ms: u64,
}

impl fmt::Debug for CheckpointPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointPolicy")
            .field("signing_key", &"<secret>")
            .field("every_records", &self.every_records)
            .field("every_ms", &self.every_ms)
            .finish()
    }
}

/// How a journal is opened for append.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Size of each segment file (a multiple of 4096, 4 KiB ..= 1 GiB). Only used for new
    /// segments; existing ones keep their size.
    pub segment_size_bytes: u64,
    /// When records are msync'ed.
    pub durability: Durability,
    /// Signed checkpoints, or none.
    pub checkpoint: Option<CheckpointPolicy>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            segment_size_bytes: SEGMENT_SIZE_BYTES_DEFAULT,
            durability: Durability::None,
            checkpoint: None,
        }
    }
}

/// What opening a journal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records in the journal (after cutting a torn tail).
    pub records: u64,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// Hash of the last record ([`GENESIS_HASH`] when empty).
    pub head_hash: [u8; HASH_LEN_BYTES],
    /// Bytes of a torn tail that were zeroed (0 when the journal ended cleanly).
    pub truncated_bytes: u64,
    /// The sequence number the torn tail would have had.
    pub truncated_from_seq: Option<u64>,
    /// Bytes of a partial checkpoint entry cut from the checkpoint file.
    pub checkpoint_bytes_cut: u64,
    /// Leftover `*.seg.tmp` files (interrupted segment creation) or empty, header-less last
    /// segments that were removed.
    pub removed_files: Vec<PathBuf>,
    /// The first sequence number whose segment was read and verified record by record: 1 for
    /// [`Writer::open`]; for [`Writer::open_tail`] the first record of the segment holding the
    /// first record its visitor asked for (the segments before it had their headers checked
    /// only).
    pub verified_from_seq: u64,
    /// Segment files read record by record.
    pub segments_verified: usize,
}

/// What [`Writer::open_tail`] reads, and who sees it.
pub trait TailVisitor {
    /// Called once, before any record is read, with the first sequence number of the last
    /// segment that holds records (the head is at or after `last_segment_first_seq - 1`):
    /// returns the first sequence number the caller needs to see. The open reads and verifies
    /// whole segments, from the one holding it to the end.
    fn first_seq_needed(&mut self, last_segment_first_seq: u64) -> u64;

    /// Each verified record from the start of that segment to the head, in order. An `Err`
    /// refuses the open (nothing is changed).
    fn visit(&mut self, record: RecordView<'_>) -> Result<(), VisitError>;
}

/// The result of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's sequence number.
    pub seq: u64,
    /// The record's chain hash.
    pub hash: [u8; HASH_LEN_BYTES],
}

/// The segment being appended to.
struct Active {
    index: u64,
    path: PathBuf,
    map: MmapMut,
    write_off: usize,
    synced_off: usize,
    _file: File,
}

impl fmt::Debug for Active {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Active")
            .field("index", &self.index)
            .field("path", &self.path)
            .field("write_off", &self.write_off)
            .field("synced_off", &self.synced_off)
            .finish()
    }
}

/// The single writer of a journal directory (an exclusive `flock` on `journal.lock` keeps
/// other writers out while it lives). Sequence numbers start at 1.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    segment_size_bytes: u64,
    durability: Durability,
    seg: Option<Active>,
    next_seq: u64,
    head: [u8; HASH_LEN_BYTES],
    hasher: Sha256,
    unsynced_records: u64,
    first_unsynced_ts_ns: Option<u64>,
    checkpoint: Option<CheckpointState>,
    /// The next segment, being prepared (allocated, zero-filled) on a background thread.
    spare: Option<Spare>,
    /// Whether the spare for the current segment was started (once per segment).
    spare_started: bool,
    /// Whether the spare was told to finish at full speed (three quarters of the segment
    /// filled; once per segment).
    spare_hurried: bool,
    /// Earlier segments whose pages may not be on stable storage yet (rolled over under
    /// `none`, or found on open); a checkpoint `fdatasync`s them first.
    pending_sync: Vec<PathBuf>,
    /// An error from work done after a record was already appended (a checkpoint), reported
    /// by the next `maintain`/`sync`.
    deferred: Option<JournalError>,
    /// `msync` calls made on appended records (for metrics and tests).
    msyncs: u64,
    lock: Flock<File>,
    /// Records written first in every new segment ([`Writer::push_prologue`]): kind, payload.
    prologue: Vec<(u16, Vec<u8>)>,
    /// Bytes the prologue takes in a segment.
    prologue_bytes: usize,
    /// CPUs the spare-segment thread runs on ([`Writer::set_background_cpus`]); empty: those
    /// of the thread that appends (a thread inherits its creator's affinity mask).
    background_cpus: Vec<usize>,
}

#[derive(Debug)]
struct CheckpointState {
    writer: CheckpointWriter,
    every_records: u64,
    every_ns: u64,
    last_ns: Option<u64>,
}

impl Writer {
    /// Opens the journal in `dir` for append, creating the directory (mode 0700) and the first
    /// segment when absent. Recovery: every segment is validated (headers, record structure,
    /// hash chain, links between segments); a torn tail of the last segment is cut off (zeroed)
    /// and reported; damage anywhere else refuses to open and names segment, offset and seq.
    ///
    /// Recovery decides before it writes: the whole journal is checked (segments, the newest
    /// checkpoint) by reading only, and only an open that will succeed removes leftovers
    /// (`*.seg.tmp`, all-zero last segments), cuts a torn tail or a partial checkpoint entry.
    /// A refused open leaves every journal file as it found it (it may create the empty
    /// `journal.lock` file, which holds no data).
    pub fn open(dir: &Path, opts: WriterOptions) -> Result<(Writer, Recovery), JournalError> {
        Self::open_scoped(dir, opts, None)
    }

    /// Opens the journal in `dir` for append as [`Writer::open`] does, but reads only its
    /// tail: every segment's header is checked (and the all-zero tail and leftovers as
    /// before), and only the segments from the one holding `visitor.first_seq_needed(..)` to
    /// the last are read, verified record by record (structure, hashes, the links between
    /// them) and handed to `visitor` in one pass: restart time then depends on how far back
    /// the caller needs to look (its newest snapshot, its redelivery window), not on the
    /// journal's length. Damage in the segments before is not looked for: that is
    /// `audit verify`'s job ([`crate::verify()`]).
    ///
    /// Everything else is as in [`Writer::open`]: a torn tail of the last segment is cut only
    /// when the open succeeds, a refusal (damage in what is read, a visitor's `Err`, a
    /// checkpoint past the end) changes nothing.
    pub fn open_tail(
        dir: &Path,
        opts: WriterOptions,
        visitor: &mut dyn TailVisitor,
    ) -> Result<(Writer, Recovery), JournalError> {
        Self::open_scoped(dir, opts, Some(visitor))
    }

    fn open_scoped(
        dir: &Path,
        opts: WriterOptions,
        visitor: Option<&mut dyn TailVisitor>,
    ) -> Result<(Writer, Recovery), JournalError> {
        validate_options(&opts)?;
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| JournalError::io("create directory", dir, e))?;
        }
        let lock = lock_dir(dir)?;
        // Decide first, write after: everything up to `plan` only reads, so a refusal leaves
        // every byte of the journal as it was found.
        let plan = plan_recovery(dir, visitor)?;
        let mut recovery = Recovery {
            records: plan.records,
            next_seq: plan.next_seq,
            head_hash: plan.head_hash,
            truncated_bytes: 0,
            truncated_from_seq: None,
            checkpoint_bytes_cut: 0,
            removed_files: Vec::new(),
            verified_from_seq: plan.verified_from_seq,
            segments_verified: plan.segments_verified,
        };
        let durable = opts.durability.syncs();
        // Map the last segment before changing anything (mapping changes no byte).
        let existing = match &plan.last {
            Some((seg, scan)) => Some((
                map_existing(seg, scan.header.segment_index, scan.file_len, &lock)?,
                scan,
            )),
            None => None,
        };
        for path in plan.tmp_files.iter().chain(&plan.empty_segments) {
            std::fs::remove_file(path).map_err(|e| JournalError::io("remove", path, e))?;
            recovery.removed_files.push(path.clone());
        }
        let active = match existing {
            None => create_segment(
                dir,
                0,
                1,
                &GENESIS_HASH,
                opts.segment_size_bytes,
                durable,
                &lock,
            )?,
            Some((mut active, last)) => {
                active.write_off = last.end.off as usize;
                if plan.torn_bytes > 0 {
                    let from = last.end.off as usize;
                    let to = last.nonzero_end as usize;
                    active.map[from..to].fill(0);
                    active
                        .map
                        .flush_range(from, to - from)
                        .map_err(|e| JournalError::io("msync", &active.path, e))?;
                    recovery.truncated_bytes = plan.torn_bytes;
                    recovery.truncated_from_seq = Some(last.end.next_seq);
                }
                if durable {
                    // Records a crashed process left in the page cache become durable now.
                    active
                        .map
                        .flush_range(0, active.write_off)
                        .map_err(|e| JournalError::io("msync", &active.path, e))?;
                }
                active.synced_off = active.write_off;
                active
            }
        };
        let checkpoint = match opts.checkpoint {
            None => None,
            Some(p) => {
                let prev = plan.newest_checkpoint_seq;
                let (writer, cut) = CheckpointWriter::open(dir, p.signing_key, durable, prev)?;
                recovery.checkpoint_bytes_cut = cut;
                Some(CheckpointState {
                    writer,
                    every_records: p.every_records,
                    every_ns: p.every_ms.saturating_mul(NS_PER_MS),
                    last_ns: None,
                })
            }
        };
        // With checkpoints, the segments before the last are synced before the first
        // checkpoint (a process under `none` may have left their pages unwritten).
        let pending_sync = if checkpoint.is_some() {
            plan.earlier_segments
        } else {
            Vec::new()
        };
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment_size_bytes: opts.segment_size_bytes,
            durability: opts.durability,
            seg: Some(active),
            next_seq: recovery.next_seq,
            head: recovery.head_hash,
            hasher: Sha256::new(),
            unsynced_records: 0,
            first_unsynced_ts_ns: None,
            checkpoint,
            spare: None,
            spare_started: false,
            spare_hurried: false,
            pending_sync,
            deferred: None,
            msyncs: 0,
            lock,
            prologue: Vec::new(),
            prologue_bytes: 0,
            background_cpus: Vec::new(),
        };
        Ok((writer, recovery))
    }

    /// Appends one record and returns its sequence number and chain hash. Allocates nothing
    /// (except when rolling over to a new segment). The record is in the mapped file (visible
    /// to readers, safe from a process crash) when this returns; the durability policy decides
    /// when it reaches stable storage.
    ///
    /// Errors: [`JournalError::RecordTooLarge`] (nothing written), [`JournalError::Full`] when
    /// a new segment cannot be allocated (nothing written; a later call retries),
    /// [`JournalError::Io`] from `msync` under `always`/`interval` (the record IS in the
    /// journal but may not be durable; the writer refuses further appends).
    pub fn append(
        &mut self,
        kind: u16,
        ts_ns: u64,
        payload: &[u8],
    ) -> Result<Appended, JournalError> {
        let payload_len = payload.len();
        let record_len = record_len_for(payload_len);
        let capacity = self.segment_size_bytes as usize - SEGMENT_HEADER_LEN_BYTES;
        if payload_len > PAYLOAD_LEN_BYTES_MAX as usize || record_len > capacity {
            return Err(JournalError::RecordTooLarge {
                payload_len,
                max: self.max_payload_len(),
            });
        }
        if record_len > capacity - self.prologue_bytes {
            // It would not fit after the prologue in a new segment.
            return Err(JournalError::RecordTooLarge {
                payload_len,
                max: self.max_payload_len(),
            });
        }
        let Some(seg) = self.seg.as_ref() else {
            return Err(JournalError::Poisoned);
        };
        if seg.write_off + record_len > seg.map.len() {
            self.roll()?;
            // The prologue first: a reader of this segment alone sees it.
            let prologue = std::mem::take(&mut self.prologue);
            let mut written = Ok(());
            for (kind, payload) in prologue.iter().rev() {
                if let Err(e) = self.write_record(*kind, ts_ns, payload) {
                    written = Err(e);
                    break;
                }
            }
            self.prologue = prologue;
            written?;
        }
        self.write_record(kind, ts_ns, payload)
    }

    /// Records to write first in every segment this writer creates from now on (a roll-over
    /// writes them before the record that caused it), e.g. a table that a reader of the last
    /// segment alone must know ([`crate::KIND_ACCOUNT_NAME`]). They are added to the records
    /// already pushed, and written **newest pushed first**: a crash in the middle of a
    /// prologue leaves the newest records, so a reader can tell from them (a table's length)
    /// that older ones are missing. Refused ([`JournalError::Config`], nothing pushed) when the prologue
    /// would take more than half of a segment.
    pub fn push_prologue(&mut self, kind: u16, payload: &[u8]) -> Result<(), JournalError> {
        let capacity = self.segment_size_bytes as usize - SEGMENT_HEADER_LEN_BYTES;
        let len = record_len_for(payload.len());
        if payload.len() > PAYLOAD_LEN_BYTES_MAX as usize
            || self.prologue_bytes + len > capacity / 2
        {
            return Err(JournalError::Config {
                what: "segment prologue",
                detail: format!(
                    "{} bytes of prologue records would take more than half of a {}-byte \
                     segment",
                    self.prologue_bytes + len,
                    self.segment_size_bytes
                ),
            });
        }
        self.prologue.push((kind, payload.to_vec()));
        self.prologue_bytes += len;
        Ok(())
    }

    /// Bytes the prologue records take at the start of each new segment.
    pub fn prologue_bytes(&self) -> usize {
        self.prologue_bytes
    }

    /// The largest total of prologue records [`Writer::push_prologue`] accepts.
    pub fn prologue_bytes_max(&self) -> usize {
        (self.segment_size_bytes as usize - SEGMENT_HEADER_LEN_BYTES) / 2
    }

    /// Appends one record at the write position, which has room for it.
    fn write_record(
        &mut self,
        kind: u16,
        ts_ns: u64,
        payload: &[u8],
    ) -> Result<Appended, JournalError> {
        let payload_len = payload.len();
        let record_len = record_len_for(payload_len);
        let Some(seg) = self.seg.as_ref() else {
            return Err(JournalError::Poisoned);
        };
        assert!(
            seg.write_off + record_len <= seg.map.len(),
            "journal writer: a record of {record_len} bytes at offset {} does not fit the segment",
            seg.write_off
        );
        let seq = self.next_seq;
        let mut header = [0u8; RECORD_HEADER_LEN_BYTES];
        RecordHeader {
            record_len: record_len as u32,
            payload_len: payload_len as u32,
            seq,
            ts_ns,
            kind,
        }
        .encode(&mut header);
        const ZEROS: [u8; RECORD_ALIGN_BYTES] = [0u8; RECORD_ALIGN_BYTES];
        let pad = padding_len(payload_len);
        let mut hash = [0u8; HASH_LEN_BYTES];
        chain_hash_parts(
            &mut self.hasher,
            &self.head,
            &header,
            payload,
            &ZEROS[..pad],
            &mut hash,
        );
        let Some(seg) = self.seg.as_mut() else {
            return Err(JournalError::Poisoned);
        };
        let off = seg.write_off;
        let rec = &mut seg.map[off..off + record_len];
        debug_assert!(rec[..4].iter().all(|&b| b == 0), "appending over data");
        let payload_end = RECORD_HEADER_LEN_BYTES + payload_len;
        rec[4..RECORD_HEADER_LEN_BYTES].copy_from_slice(&header[4..]);
        rec[RECORD_HEADER_LEN_BYTES..payload_end].copy_from_slice(payload);
        rec[payload_end..payload_end + pad].fill(0);
        rec[record_len - HASH_LEN_BYTES..].copy_from_slice(&hash);
        // The length word goes last: a crash before this store leaves 0 (end of data).
        fence(Ordering::Release);
        rec[..4].copy_from_slice(&header[..4]);
        seg.write_off = off + record_len;
        self.next_seq = seq + 1;
        self.head = hash;
        if self.spare_started && !self.spare_hurried && seg.write_off > seg.map.len() / 4 * 3 {
            // Three quarters full: the spare stops pacing itself (SPARE_PACE_PAUSE_US).
            self.spare_hurried = true;
            if let Some(sp) = &self.spare {
                sp.hurry.store(true, Ordering::Relaxed);
            }
        }
        if !self.spare_started && seg.write_off > seg.map.len() / 2 {
            self.spare_started = true;
            // Half full: prepare the next segment in the background (once per segment).
            self.spare = spawn_spare(
                &self.dir,
                self.segment_size_bytes,
                self.durability.syncs(),
                &self.background_cpus,
            );
        }

        match self.durability {
            Durability::None | Durability::Batch => {}
            Durability::Always => {
                let r = seg.map.flush_range(off, record_len);
                if let Err(e) = r {
                    return Err(self.poison_io("msync", e));
                }
                seg.synced_off = seg.write_off;
                self.msyncs += 1;
            }
            Durability::Interval { records, ms } => {
                self.unsynced_records += 1;
                let first = *self.first_unsynced_ts_ns.get_or_insert(ts_ns);
                if self.unsynced_records >= records
                    || ts_ns.saturating_sub(first) >= ms.saturating_mul(NS_PER_MS)
                {
                    self.sync_range()?;
                }
            }
        }
        if let Some(cp) = &self.checkpoint {
            if cp.every_records > 0 && seq - cp.writer.last_seq >= cp.every_records {
                if let Err(e) = self.checkpoint_now(ts_ns) {
                    // The record is appended; report the checkpoint failure later.
                    self.deferred = Some(e);
                }
            }
        }
        Ok(Appended { seq, hash })
    }

    /// The largest payload [`Writer::append`] accepts with this segment size.
    pub fn max_payload_len(&self) -> usize {
        let capacity = self.segment_size_bytes as usize - SEGMENT_HEADER_LEN_BYTES;
        let by_segment = capacity - RECORD_HEADER_LEN_BYTES - HASH_LEN_BYTES;
        (by_segment / RECORD_ALIGN_BYTES * RECORD_ALIGN_BYTES).min(PAYLOAD_LEN_BYTES_MAX as usize)
    }

    /// Runs the background work of later appends (the thread that prepares the next segment,
    /// zero-filling tens of MiB) on `cpus`; empty: on the appending thread's own CPUs, which
    /// a new thread inherits. A caller whose appending thread spins pinned on a core gives the
    /// process's other cores here, or the preparer would take that core's time slices from it
    /// (milliseconds per segment). Applies from the next spare on.
    pub fn set_background_cpus(&mut self, cpus: Vec<usize>) {
        self.background_cpus = cpus;
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Hash of the last record ([`GENESIS_HASH`] when the journal is empty).
    pub fn head_hash(&self) -> [u8; HASH_LEN_BYTES] {
        self.head
    }

    /// Bytes of the current segment written but not yet msync'ed (for metrics and tests).
    pub fn unsynced_bytes(&self) -> u64 {
        self.seg
            .as_ref()
            .map_or(0, |s| (s.write_off - s.synced_off.min(s.write_off)) as u64)
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment file being appended to.
    pub fn current_segment(&self) -> Option<&Path> {
        self.seg.as_ref().map(|s| s.path.as_path())
    }

    /// End of a batch of appends, before the caller acts on them (the group commit of
    /// [`Durability::Batch`]): under `batch`, one `msync` of every record appended since the
    /// last one, so that they are on stable storage when this returns; a no-op under the other
    /// policies. A failed msync poisons the writer (see [`Writer::sync`]).
    pub fn commit(&mut self) -> Result<(), JournalError> {
        if self.durability == Durability::Batch {
            self.sync_range()?;
        }
        Ok(())
    }

    /// `msync` calls this writer made on appended records so far (group commits, per-record
    /// syncs under `always`, syncs before a checkpoint or a roll-over).
    pub fn msync_count(&self) -> u64 {
        self.msyncs
    }

    /// msyncs every record written so far, whatever the policy; also reports a deferred
    /// checkpoint error.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.sync_range()?;
        match self.deferred.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Idle-time work, `now_ns` on the same clock as the records' `ts_ns`: the time-based
    /// group commit of `interval`, time-based checkpoints, and reporting a deferred error
    /// (a checkpoint that failed inside `append`).
    pub fn maintain(&mut self, now_ns: u64) -> Result<(), JournalError> {
        if let Durability::Interval { ms, .. } = self.durability {
            if let Some(first) = self.first_unsynced_ts_ns {
                if now_ns.saturating_sub(first) >= ms.saturating_mul(NS_PER_MS) {
                    self.sync_range()?;
                }
            }
        }
        if let Some(cp) = &mut self.checkpoint {
            let last = *cp.last_ns.get_or_insert(now_ns);
            let due = cp.every_ns > 0
                && self.next_seq - 1 > cp.writer.last_seq
                && now_ns.saturating_sub(last) >= cp.every_ns;
            if due {
                self.checkpoint_now(now_ns)?;
            }
        }
        match self.deferred.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Signs and stores a checkpoint of the current head now (after making the records durable).
    /// A no-op without a checkpoint policy or when the head is already checkpointed.
    pub fn checkpoint_now(&mut self, now_ns: u64) -> Result<(), JournalError> {
        let last_seq = self.next_seq - 1;
        match &self.checkpoint {
            Some(cp) if last_seq > cp.writer.last_seq => {}
            _ => return Ok(()),
        }
        // A checkpoint promises that the records it covers are on stable storage.
        self.sync_range()?;
        for path in &self.pending_sync {
            File::open(path)
                .and_then(|f| f.sync_data())
                .map_err(|e| JournalError::io("fdatasync", path, e))?;
        }
        self.pending_sync.clear();
        let head = self.head;
        if let Some(cp) = &mut self.checkpoint {
            cp.writer.write(last_seq, &head, now_ns)?;
            cp.last_ns = Some(now_ns);
        }
        Ok(())
    }

    /// Payload of the newest record of `kind` (for resuming after a restart). Cold path:
    /// walks the segments from the newest back, each up to the record before the next one's
    /// first (the newest up to the head). `Ok(None)` only when every record up to the head was
    /// read and none is of `kind`; a segment that cannot be read, or whose records are not all
    /// there and valid, is an error (never taken for "no such record").
    pub fn last_payload(&self, kind: u16) -> Result<Option<Vec<u8>>, JournalError> {
        let listing = list_segments(&self.dir)?;
        // The last sequence number the segment being read must hold.
        let mut upto = self.next_seq - 1;
        for (index, seg) in listing.segments.iter().enumerate().rev() {
            if upto == 0 {
                break;
            }
            if seg.first_seq > upto {
                // Holds no record up to the head (a segment just rolled over to).
                continue;
            }
            let mut walker = Walker::open(seg, Some(index as u64))?;
            let mut found = None;
            loop {
                match walker.step()? {
                    Step::Record(r) => {
                        if r.header.kind == kind {
                            found = Some(r.payload.to_vec());
                        }
                        if r.header.seq >= upto {
                            break;
                        }
                    }
                    Step::End => {
                        let pos = walker.pos();
                        return Err(JournalError::damaged(
                            walker.path(),
                            pos.off,
                            Some(pos.next_seq),
                            DamageKind::EndBeforeHead {
                                head_seq: self.next_seq - 1,
                            },
                        ));
                    }
                    Step::Invalid(what) => {
                        let pos = walker.pos();
                        return Err(JournalError::damaged(
                            walker.path(),
                            pos.off,
                            Some(pos.next_seq),
                            what,
                        ));
                    }
                }
            }
            if found.is_some() {
                return Ok(found);
            }
            upto = seg.first_seq - 1;
        }
        Ok(None)
    }

    /// msyncs what is written and not yet synced. A failed msync poisons the writer: after
    /// a write-back error the kernel may have dropped the dirty pages, so what is on disk is
    /// unknown and appending more would hide it (reopening re-verifies the files).
    fn sync_range(&mut self) -> Result<(), JournalError> {
        let Some(seg) = self.seg.as_mut() else {
            return Err(JournalError::Poisoned);
        };
        if seg.write_off > seg.synced_off {
            let (from, len) = (seg.synced_off, seg.write_off - seg.synced_off);
            if let Err(e) = seg.map.flush_range(from, len) {
                return Err(self.poison_io("msync", e));
            }
            let Some(seg) = self.seg.as_mut() else {
                return Err(JournalError::Poisoned);
            };
            seg.synced_off = seg.write_off;
            self.msyncs += 1;
        }
        self.unsynced_records = 0;
        self.first_unsynced_ts_ns = None;
        Ok(())
    }

    fn poison_io(&mut self, op: &'static str, e: std::io::Error) -> JournalError {
        let path = self
            .seg
            .take()
            .map(|s| s.path)
            .unwrap_or_else(|| self.dir.clone());
        JournalError::Io {
            op,
            path,
            source: e,
        }
    }

    /// Closes the current segment and starts the next one, from the spare prepared in the
    /// background when there is one. On failure the current segment stays active (a later
    /// append retries), so nothing is lost or damaged.
    fn roll(&mut self) -> Result<(), JournalError> {
        let durable = self.durability.syncs();
        if durable {
            // The old segment is complete on disk before the next one exists.
            self.sync_range()?;
        }
        let Some(seg) = self.seg.as_ref() else {
            return Err(JournalError::Poisoned);
        };
        let index = seg.index + 1;
        let spare = self.spare.take().map(|sp| {
            sp.hurry.store(true, Ordering::Relaxed);
            sp.handle.join().unwrap_or_else(|_| {
                Err(JournalError::io(
                    "prepare segment",
                    &self.dir,
                    std::io::Error::other("the segment preparer thread panicked"),
                ))
            })
        });
        let next = match spare {
            // The spare must have this journal's segment size (it always does: same options).
            Some(blank) => {
                let blank = blank?;
                install_segment(
                    &self.dir,
                    blank,
                    index,
                    self.next_seq,
                    &self.head,
                    durable,
                    &self.lock,
                )?
            }
            None => create_segment(
                &self.dir,
                index,
                self.next_seq,
                &self.head,
                self.segment_size_bytes,
                durable,
                &self.lock,
            )?,
        };
        let old = self.seg.replace(next);
        if let Some(old) = old {
            if !durable && self.checkpoint.is_some() {
                // Unsynced under `none`: the next checkpoint syncs it.
                self.pending_sync.push(old.path);
            }
        }
        self.spare_started = false;
        self.spare_hurried = false;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.durability.syncs() {
            // Best effort: an error here has no one to report to; `sync` reports it.
            let _ = self.sync_range();
        }
        if let Some(sp) = self.spare.take() {
            sp.cancel.store(true, Ordering::Relaxed);
            if let Ok(Ok(blank)) = sp.handle.join() {
                let _ = std::fs::remove_file(&blank.tmp);
            }
        }
    }
}

/// What opening a journal will do, decided by reading only (see [`Writer::open`]).
#[derive(Debug)]
struct RecoveryPlan {
    records: u64,
    next_seq: u64,
    head_hash: [u8; HASH_LEN_BYTES],
    /// The segment the chain ends in, with its scan; `None`: no record, start a new segment.
    last: Option<(SegmentFile, SegmentScan)>,
    /// The segments before it.
    earlier_segments: Vec<PathBuf>,
    /// Bytes of a torn tail to cut at the end of `last`.
    torn_bytes: u64,
    /// Leftovers of a segment creation to delete.
    tmp_files: Vec<PathBuf>,
    /// All-zero segments at the end to delete (a roll-over whose header never reached disk).
    empty_segments: Vec<PathBuf>,
    /// The newest checkpoint's sequence number (0 when none).
    newest_checkpoint_seq: u64,
    /// See [`Recovery::verified_from_seq`].
    verified_from_seq: u64,
    /// See [`Recovery::segments_verified`].
    segments_verified: usize,
}

/// Checks the journal in `dir` (all of it, or with a `visitor` its tail, see
/// [`Writer::open_tail`]) and decides what opening it for append does, reading only: `Err` is
/// a refusal, and nothing has been changed.
fn plan_recovery(
    dir: &Path,
    visitor: Option<&mut dyn TailVisitor>,
) -> Result<RecoveryPlan, JournalError> {
    let listing = list_segments(dir)?;
    let n_live = listing.segments.len() - empty_tail_segments(&listing.segments)?;
    let live = &listing.segments[..n_live];
    let mut plan = RecoveryPlan {
        records: 0,
        next_seq: 1,
        head_hash: GENESIS_HASH,
        last: None,
        earlier_segments: live[..n_live.saturating_sub(1)]
            .iter()
            .map(|s| s.path.clone())
            .collect(),
        torn_bytes: 0,
        tmp_files: listing.tmp_files.clone(),
        empty_segments: listing.segments[n_live..]
            .iter()
            .map(|s| s.path.clone())
            .collect(),
        newest_checkpoint_seq: 0,
        verified_from_seq: 1,
        segments_verified: 0,
    };
    if let Some(seg) = live.last() {
        let summary = match visitor {
            None => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                let scans = scan_all(live, &[], threads, &|_| {});
                plan.segments_verified = n_live;
                // All but the last segment must end cleanly; the last may have a torn tail.
                check_chain(scans, n_live - 1, false)?
            }
            Some(visitor) => {
                let want = visitor.first_seq_needed(seg.first_seq).max(1);
                let start = live
                    .partition_point(|s| s.first_seq <= want)
                    .saturating_sub(1);
                // The segments before are not read: their headers are checked.
                for (k, before) in live[..start].iter().enumerate() {
                    Walker::open(before, Some(k as u64))?;
                }
                plan.verified_from_seq = live[start].first_seq;
                plan.segments_verified = n_live - start;
                let mut chain = Chain::new(start as u64, None);
                let mut visit = |r: RecordView<'_>| visitor.visit(r);
                for (k, s) in live.iter().enumerate().skip(start) {
                    let scan = scan_segment_visiting(s, &[], &mut |_| {}, &mut visit)?;
                    let is_last = k + 1 == n_live;
                    chain.push(scan, !is_last, is_last, false)?;
                }
                chain.finish()?
            }
        };
        let last = summary.last_scan;
        plan.records = last.end.next_seq - 1;
        plan.next_seq = last.end.next_seq;
        plan.head_hash = last.end.prev_hash;
        plan.torn_bytes = match last.torn_tail_bytes() {
            Some(bytes) => bytes,
            None => {
                // Not the remains of one interrupted append: damage, refuse to open.
                if let Some(e) = last.trailing_damage(true) {
                    return Err(e);
                }
                0
            }
        };
        plan.last = Some((seg.clone(), last));
    }
    if let Some(e) = listing.out_of_range_damage() {
        return Err(e);
    }
    // A checkpoint past the recovered end means records it vouched for are gone.
    let last_seq = plan.next_seq - 1;
    if let Some((off, entry)) = newest_checkpoint(dir)? {
        let file = dir.join(CHECKPOINT_FILE_NAME);
        if entry.seq == 0 {
            return Err(JournalError::damaged(
                &file,
                off,
                Some(0),
                DamageKind::CheckpointSeqZero,
            ));
        }
        if entry.seq > last_seq {
            // The checkpoint covers the record where the chain stops: that record was on
            // stable storage whole, so a header that is there with a bad record is damage to
            // it, not an interrupted append. Name it, as `audit verify` does.
            if let Some((_, scan)) = &plan.last {
                if let Some(what) = &scan.invalid {
                    return Err(JournalError::damaged(
                        &scan.path,
                        scan.end.off,
                        Some(scan.end.next_seq),
                        what.clone(),
                    ));
                }
            }
            return Err(JournalError::damaged(
                &file,
                off,
                Some(entry.seq),
                DamageKind::TailCut { last_seq },
            ));
        }
        plan.newest_checkpoint_seq = entry.seq;
    }
    Ok(plan)
}

fn validate_options(opts: &WriterOptions) -> Result<(), JournalError> {
    let size = opts.segment_size_bytes;
    if !segment_size_ok(size) {
        return Err(JournalError::Config {
            what: "segment_size_bytes",
            detail: format!(
                "{size}: must be a multiple of {SEGMENT_SIZE_ALIGN_BYTES} between \
                 {SEGMENT_SIZE_BYTES_MIN} and {SEGMENT_SIZE_BYTES_MAX}"
            ),
        });
    }
    opts.durability.validate()?;
    if let Some(cp) = &opts.checkpoint {
        if cp.every_records == 0 && cp.every_ms == 0 {
            return Err(JournalError::Config {
                what: "checkpoint policy",
                detail: "every_records and every_ms are both 0: no checkpoint would be written"
                    .into(),
            });
        }
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<Flock<File>, JournalError> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| JournalError::io("open lock file", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            JournalError::Locked {
                dir: dir.to_path_buf(),
            }
        } else {
            JournalError::io("lock", &path, errno.into())
        }
    })
}

fn now_epoch_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Reserves `len` bytes for `file`: `fallocate`, or zero-filling where it is not supported.
/// A full disk is reported here as [`JournalError::Full`], never later as `SIGBUS`.
fn allocate(file: &File, path: &Path, len: u64) -> Result<Allocated, JournalError> {
    let full = |e: std::io::Error| JournalError::Full {
        path: path.to_path_buf(),
        bytes: len,
        source: e,
    };
    let is_full = |errno: Errno| matches!(errno, Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG);
    match nix::fcntl::fallocate(
        file.as_raw_fd(),
        nix::fcntl::FallocateFlags::empty(),
        0,
        len as i64,
    ) {
        Ok(()) => Ok(Allocated { len }),
        Err(errno) if is_full(errno) => Err(full(errno.into())),
        Err(Errno::EOPNOTSUPP) | Err(Errno::ENOSYS) => {
            zero_fill_file(file, path, len, None, None)?;
            Ok(Allocated { len })
        }
        Err(errno) => Err(JournalError::io("fallocate", path, errno.into())),
    }
}

/// A blank segment file made ahead of time under a temporary name: allocated (and, for a
/// spare, zero-filled), waiting for its header.
#[derive(Debug)]
struct Blank {
    file: File,
    tmp: PathBuf,
    allocated: Allocated,
}

/// Makes a blank segment at `tmp`: allocated with `fallocate` (a full disk is reported here)
/// and, with `zero_fill`, written with zeros so that its blocks are ordinary written blocks:
/// the first write to each page through the mapping is then a cheap fault (on ext4 a page
/// of a merely pre-allocated, "unwritten" extent costs a journal transaction on first write).
/// `zero_fill`: with `cancel`, zero-filling stops early when it is set; with `hurry` (a spare),
/// it is paced until `hurry` is set ([`SPARE_PACE_PAUSE_US`]).
fn prepare_blank(
    tmp: PathBuf,
    size: u64,
    durable: bool,
    zero_fill: Option<ZeroFill<'_>>,
) -> Result<Blank, JournalError> {
    let _ = std::fs::remove_file(&tmp);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENOSPC) | Some(Errno::EDQUOT) => JournalError::Full {
                path: tmp.clone(),
                bytes: size,
                source: e,
            },
            _ => JournalError::io("create segment", &tmp, e),
        })?;
    let made = (|| {
        let allocated = allocate(&file, &tmp, size)?;
        if let Some(z) = zero_fill {
            zero_fill_file(&file, &tmp, size, z.cancel, z.hurry)?;
        }
        if durable {
            file.sync_all()
                .map_err(|e| JournalError::io("fsync", &tmp, e))?;
        }
        Ok(allocated)
    })();
    match made {
        Ok(allocated) => Ok(Blank {
            file,
            tmp,
            allocated,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// How a blank segment is zero-filled ([`prepare_blank`]).
#[derive(Debug, Clone, Copy)]
struct ZeroFill<'a> {
    /// Stop early when set (the writer closes); `None`: never.
    cancel: Option<&'a AtomicBool>,
    /// `Some`: paced until set (a spare); `None`: at full speed.
    hurry: Option<&'a AtomicBool>,
}

/// The next segment, being prepared on a background thread.
#[derive(Debug)]
struct Spare {
    handle: JoinHandle<Result<Blank, JournalError>>,
    /// Set when the writer closes: the preparer stops zero-filling and removes its file.
    cancel: Arc<AtomicBool>,
    /// Set when the writer will need the spare soon: the preparer stops pacing itself.
    hurry: Arc<AtomicBool>,
}

/// Prepares the next segment on a background thread while the current one fills; `None`
/// when no thread can be started (the roll-over then makes the segment itself).
/// With `cpus` non-empty the thread first moves itself onto those CPUs.
fn spawn_spare(dir: &Path, size: u64, durable: bool, cpus: &[usize]) -> Option<Spare> {
    let tmp = dir.join(SPARE_SEGMENT_FILE_NAME);
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&cancel);
    let hurry = Arc::new(AtomicBool::new(false));
    let hurry_here = Arc::clone(&hurry);
    let cpus = cpus.to_vec();
    let handle = std::thread::Builder::new()
        .name(SPARE_THREAD_NAME.into())
        .spawn(move || {
            if !cpus.is_empty() {
                if let Err(e) = set_own_affinity(&cpus) {
                    tracing::warn!(
                        "the spare-segment thread stays on its creator's CPUs ({e}); it may \
                         take time from a pinned thread"
                    );
                }
            }
            let z = ZeroFill {
                cancel: Some(&stop),
                hurry: Some(&hurry_here),
            };
            prepare_blank(tmp, size, durable, Some(z))
        })
        .ok()?;
    Some(Spare {
        handle,
        cancel,
        hurry,
    })
}

/// Name of the thread that prepares the next segment.
pub const SPARE_THREAD_NAME: &str = "audit-spare";

/// Sets the calling thread's affinity mask to `cpus`.
fn set_own_affinity(cpus: &[usize]) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cpus {
        set.set(c)?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// Gives a blank segment its header and its name (`first_seq`), then maps it. The header is
/// written and the file renamed only now, so a crash never leaves a half-made segment under a
/// segment name.
#[allow(clippy::too_many_arguments)]
fn install_segment(
    dir: &Path,
    blank: Blank,
    index: u64,
    first_seq: u64,
    prev_hash: &[u8; HASH_LEN_BYTES],
    durable: bool,
    lock: &Flock<File>,
) -> Result<Active, JournalError> {
    let Blank {
        file,
        tmp,
        allocated,
    } = blank;
    let path = dir.join(segment_file_name(first_seq));
    let made = (|| {
        if path.exists() {
            return Err(JournalError::io(
                "create segment",
                &path,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "segment already exists"),
            ));
        }
        let mut header = [0u8; SEGMENT_HEADER_LEN_BYTES];
        SegmentHeader {
            segment_size_bytes: allocated.len,
            segment_index: index,
            first_seq,
            created_ns: now_epoch_ns(),
            prev_hash: *prev_hash,
        }
        .encode(&mut header);
        file.write_all_at(&header, 0)
            .map_err(|e| JournalError::io("write segment header", &tmp, e))?;
        if durable {
            file.sync_data()
                .map_err(|e| JournalError::io("fsync", &tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| JournalError::io("rename", &tmp, e))?;
        if durable {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let mut active = map_file(file, &path, allocated, lock)?;
    active.index = index;
    active.write_off = SEGMENT_HEADER_LEN_BYTES;
    active.synced_off = if durable { SEGMENT_HEADER_LEN_BYTES } else { 0 };
    Ok(active)
}

/// Creates segment `index` starting at `first_seq` right now (no spare available).
fn create_segment(
    dir: &Path,
    index: u64,
    first_seq: u64,
    prev_hash: &[u8; HASH_LEN_BYTES],
    size: u64,
    durable: bool,
    lock: &Flock<File>,
) -> Result<Active, JournalError> {
    let name = segment_file_name(first_seq);
    let tmp = dir.join(format!(
        "{}{SEGMENT_TMP_SUFFIX}",
        name.trim_end_matches(crate::format::SEGMENT_SUFFIX)
    ));
    // Zero-filled like a spare: the pages are then in the page cache, and the appender's
    // first write to each is a cheap fault, not a read of the file (segments are mapped
    // without read-around, `mmap.rs`, so each such read would be one page per fault).
    let z = ZeroFill {
        cancel: None,
        hurry: None,
    };
    let blank = prepare_blank(tmp, size, durable, Some(z))?;
    install_segment(dir, blank, index, first_seq, prev_hash, durable, lock)
}

/// Writes `len` bytes of zeros to `file` in [`ZERO_FILL_CHUNK_BYTES`] blocks; stops with an
/// error once `cancel` is set; with `hurry`, pauses [`SPARE_PACE_PAUSE_US`] after each block
/// while `hurry` is unset. Returns the pauses taken.
fn zero_fill_file(
    file: &File,
    path: &Path,
    len: u64,
    cancel: Option<&AtomicBool>,
    hurry: Option<&AtomicBool>,
) -> Result<u64, JournalError> {
    let zeros = vec![0u8; ZERO_FILL_CHUNK_BYTES];
    let mut off = 0u64;
    let mut pauses = 0u64;
    while off < len {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(JournalError::io(
                "zero-fill",
                path,
                std::io::Error::new(std::io::ErrorKind::Interrupted, "cancelled"),
            ));
        }
        let n = (len - off).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], off).map_err(|e| {
            match e.raw_os_error().map(Errno::from_raw) {
                Some(Errno::ENOSPC) | Some(Errno::EDQUOT) | Some(Errno::EFBIG) => {
                    JournalError::Full {
                        path: path.to_path_buf(),
                        bytes: len,
                        source: e,
                    }
                }
                _ => JournalError::io("zero-fill", path, e),
            }
        })?;
        off += n as u64;
        if off < len && hurry.is_some_and(|h| !h.load(Ordering::Relaxed)) {
            std::thread::sleep(std::time::Duration::from_micros(SPARE_PACE_PAUSE_US));
            pauses += 1;
        }
    }
    Ok(pauses)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io("fsync directory", dir, e))
}

fn map_existing(
    seg: &SegmentFile,
    index: u64,
    len: u64,
    lock: &Flock<File>,
) -> Result<Active, JournalError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg.path)
        .map_err(|e| JournalError::io("open", &seg.path, e))?;
    // Existing segments were allocated when made, but a copy may be sparse: allocate again
    // (a no-op for allocated blocks) so that a write can never fault on a missing block.
    let allocated = allocate(&file, &seg.path, len)?;
    let mut active = map_file(file, &seg.path, allocated, lock)?;
    active.index = index;
    Ok(active)
}

fn map_file(
    file: File,
    path: &Path,
    allocated: Allocated,
    lock: &Flock<File>,
) -> Result<Active, JournalError> {
    let map =
        map_writable(&file, allocated, lock).map_err(|e| JournalError::io("mmap", path, e))?;
    Ok(Active {
        index: 0,
        path: path.to_path_buf(),
        map,
        write_off: SEGMENT_HEADER_LEN_BYTES,
        synced_off: 0,
        _file: file,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn with_checkpoints(durability: Durability) -> WriterOptions {
        WriterOptions {
            segment_size_bytes: 4096,
            durability,
            checkpoint: Some(CheckpointPolicy {
                signing_key: crate::checkpoint::generate_signing_key(),
                every_records: 0,
                every_ms: 1000,
            }),
        }
    }

    #[test]
    fn checkpoints_under_none_sync_the_segments_rolled_since_the_last_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let (mut w, _) = Writer::open(&dir, with_checkpoints(Durability::None)).unwrap();
        for i in 0..200 {
            w.append(1, i, &[3u8; 100]).unwrap();
        }
        let rolled = crate::scan::list_segments(&dir).unwrap().segments.len() - 1;
        assert!(rolled >= 3);
        assert_eq!(w.pending_sync.len(), rolled);
        w.checkpoint_now(1).unwrap();
        assert!(w.pending_sync.is_empty());
        assert_eq!(w.unsynced_bytes(), 0);
        drop(w);
        // Reopened, the earlier segments are pending again (their state is unknown).
        let (w, _) = Writer::open(&dir, with_checkpoints(Durability::None)).unwrap();
        assert_eq!(w.pending_sync.len(), rolled);
        // Durable policies sync each segment before rolling: nothing pending.
        let (mut w, _) =
            Writer::open(&tmp.path().join("k"), with_checkpoints(Durability::Always)).unwrap();
        for i in 0..200 {
            w.append(1, i, &[3u8; 100]).unwrap();
        }
        assert!(w.pending_sync.is_empty());
    }

    /// `batch`: appends never msync; `commit` msyncs once what the batch appended (and nothing
    /// when nothing is new); the other policies ignore `commit`.
    #[test]
    fn batch_durability_syncs_once_per_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = |durability| WriterOptions {
            segment_size_bytes: 1 << 20,
            durability,
            checkpoint: None,
        };
        let (mut w, _) = Writer::open(&tmp.path().join("b"), opts(Durability::Batch)).unwrap();
        for batch in 1..=3u64 {
            for i in 0..10 {
                w.append(1, i, &[5u8; 80]).unwrap();
            }
            assert!(w.unsynced_bytes() > 0, "append does not sync under batch");
            assert_eq!(w.msync_count(), batch - 1);
            w.commit().unwrap();
            assert_eq!(w.unsynced_bytes(), 0);
            assert_eq!(w.msync_count(), batch, "one msync per batch");
        }
        w.commit().unwrap();
        assert_eq!(w.msync_count(), 3, "an empty batch syncs nothing");
        let (mut w, _) = Writer::open(&tmp.path().join("n"), opts(Durability::None)).unwrap();
        w.append(1, 1, &[5u8; 80]).unwrap();
        w.commit().unwrap();
        assert_eq!((w.msync_count(), w.unsynced_bytes() > 0), (0, true));
    }

    #[test]
    fn durability_round_trips_through_text() {
        for d in [
            Durability::None,
            Durability::Batch,
            Durability::Always,
            Durability::Interval { records: 3, ms: 9 },
        ] {
            assert_eq!(d.to_string().parse::<Durability>().unwrap(), d);
        }
        let err = "interval:x:1"
            .parse::<Durability>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("RECORDS"), "{err}");
    }
}

#[cfg(test)]
mod prologue_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn small() -> WriterOptions {
        WriterOptions {
            segment_size_bytes: 4096,
            durability: Durability::None,
            checkpoint: None,
        }
    }

    #[test]
    fn every_new_segment_starts_with_the_prologue() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let (mut w, _) = Writer::open(&dir, small()).unwrap();
        w.append(1, 1, &[1u8; 100]).unwrap();
        w.push_prologue(4, b"first").unwrap();
        w.push_prologue(4, b"second").unwrap();
        for i in 0..100 {
            w.append(1, i, &[1u8; 100]).unwrap();
        }
        drop(w);
        let listing = crate::scan::list_segments(&dir).unwrap();
        assert!(listing.segments.len() >= 3, "rolled over");
        let reader = crate::Reader::open(&dir).unwrap();
        let all: Vec<_> = reader.iter_from(1).map(|r| r.unwrap()).collect();
        for seg in &listing.segments[1..] {
            let i = (seg.first_seq - 1) as usize;
            // Newest pushed first.
            assert_eq!((all[i].kind, &all[i].payload[..]), (4, &b"second"[..]));
            assert_eq!(
                (all[i + 1].kind, &all[i + 1].payload[..]),
                (4, &b"first"[..])
            );
            assert_eq!(all[i + 2].kind, 1);
        }
        // Only there: 101 records of kind 1, two prologue records per rolled segment.
        assert_eq!(all.iter().filter(|r| r.kind == 1).count(), 101);
        assert_eq!(
            all.iter().filter(|r| r.kind == 4).count(),
            2 * (listing.segments.len() - 1)
        );
        let report = crate::verify(&dir, &crate::VerifyOptions::default()).unwrap();
        assert_eq!(report.records, all.len() as u64);
    }

    #[test]
    fn a_prologue_over_half_a_segment_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut w, _) = Writer::open(&tmp.path().join("q"), small()).unwrap();
        let max = w.prologue_bytes_max();
        let mut pushed = 0;
        while w.push_prologue(4, &[7u8; 40]).is_ok() {
            pushed += 1;
        }
        assert!(pushed > 0 && w.prologue_bytes() <= max);
        assert!(matches!(
            w.push_prologue(4, &[7u8; 40]),
            Err(JournalError::Config { .. })
        ));
        // A record that cannot fit after the prologue in a new segment is refused up front.
        let room = 4096 - SEGMENT_HEADER_LEN_BYTES - w.prologue_bytes();
        let too_big = vec![0u8; room - 64 + 8];
        assert!(matches!(
            w.append(1, 0, &too_big),
            Err(JournalError::RecordTooLarge { .. })
        ));
    }
}

#[cfg(test)]
mod spare_pacing_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A spare's zero-fill pauses after every paced block until it is told to hurry; a segment
    /// made when it is needed (no `hurry`) never pauses.
    #[test]
    fn a_spare_zero_fill_is_paced_until_hurried() {
        let tmp = tempfile::tempdir().unwrap();
        let len = 4 * ZERO_FILL_CHUNK_BYTES as u64;
        let f = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(tmp.path().join(name))
                .unwrap()
        };
        let never = AtomicBool::new(false);
        let calm = AtomicBool::new(false);
        let paced = zero_fill_file(&f("a"), tmp.path(), len, Some(&never), Some(&calm)).unwrap();
        assert_eq!(paced, 3, "a pause after every block but the last");
        let hurried = AtomicBool::new(true);
        let fast = zero_fill_file(&f("b"), tmp.path(), len, Some(&never), Some(&hurried)).unwrap();
        assert_eq!(fast, 0);
        let unpaced = zero_fill_file(&f("c"), tmp.path(), len, Some(&never), None).unwrap();
        assert_eq!(unpaced, 0);
        for name in ["a", "b", "c"] {
            let bytes = std::fs::read(tmp.path().join(name)).unwrap();
            assert_eq!(bytes.len() as u64, len);
            assert!(bytes.iter().all(|&b| b == 0));
        }
    }

    /// The writer tells the spare to hurry once three quarters of the segment are written
    /// (it was started at half), not before.
    #[test]
    fn the_writer_hurries_the_spare_at_three_quarters() {
        let tmp = tempfile::tempdir().unwrap();
        let size = 4u64 << 20;
        let opts = WriterOptions {
            segment_size_bytes: size,
            durability: Durability::None,
            checkpoint: None,
        };
        let (mut w, _) = Writer::open(tmp.path(), opts).unwrap();
        let payload = [5u8; 4000];
        let fill = |w: &Writer| w.seg.as_ref().unwrap().write_off as u64 * 100 / size;
        while fill(&w) <= 55 {
            w.append(crate::KIND_DECISION, 1, &payload).unwrap();
        }
        let hurry = Arc::clone(&w.spare.as_ref().expect("spare started at half").hurry);
        assert!(
            !hurry.load(Ordering::Relaxed),
            "not hurried at {}%",
            fill(&w)
        );
        while fill(&w) <= 76 {
            w.append(crate::KIND_DECISION, 1, &payload).unwrap();
        }
        assert!(hurry.load(Ordering::Relaxed), "hurried at {}%", fill(&w));
    }
}
