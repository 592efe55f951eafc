//! Offline verification of a whole journal: every record, every link, every checkpoint.
//!
//! Segments are independent units of work: each is checked from its header's `prev_hash` in
//! a pool of threads; then the links between segments (sequence continuity, `prev_hash` equal
//! to the hash the previous segment ended on) are checked in order, then the checkpoints and
//! an expected head. The first problem in journal order is reported.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;

use crate::checkpoint::{check_signature, read_checkpoints, Checkpoints};
use crate::error::{DamageKind, JournalError};
use crate::format::{
    GENESIS_HASH, HASH_LEN_BYTES, SH_FIRST_SEQ_OFFSET, SH_PREV_HASH_OFFSET, SH_SEGMENT_INDEX_OFFSET,
};
use crate::scan::{
    empty_tail_segments, list_segments, scan_segment, SegmentFile, SegmentScan, SnapshotAt,
};
use crate::snapshot::{hash_snapshot_file, SnapshotProblem, SnapshotRecord};

/// What to check besides the chain.
#[derive(Default)]
pub struct VerifyOptions<'a> {
    /// Worker threads (0 = one per available core).
    pub threads: usize,
    /// Check checkpoint signatures with this key, and require at least one checkpoint.
    pub pubkey: Option<VerifyingKey>,
    /// An outside record of the head: the journal must contain this sequence number with
    /// this hash.
    pub expect_head: Option<(u64, [u8; HASH_LEN_BYTES])>,
    /// Accept a partial record after the last one whose length word is still zero (an append
    /// in progress: verifying a live journal); it is reported in `torn_tail_bytes`.
    pub allow_torn_tail: bool,
    /// Called with the number of bytes read as verification advances (from several threads).
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
}

impl std::fmt::Debug for VerifyOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyOptions")
            .field("threads", &self.threads)
            .field("pubkey", &self.pubkey)
            .field(
                "expect_head",
                &self.expect_head.map(|(s, h)| (s, hex::encode(h))),
            )
            .finish()
    }
}

/// What a successful verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files.
    pub segments: usize,
    /// Bytes of segment files read.
    pub bytes: u64,
    /// Records.
    pub records: u64,
    /// First sequence number (1), when there are records.
    pub first_seq: Option<u64>,
    /// Last sequence number, when there are records.
    pub last_seq: Option<u64>,
    /// Timestamp of the first record.
    pub first_ts_ns: Option<u64>,
    /// Timestamp of the last record.
    pub last_ts_ns: Option<u64>,
    /// Hash of the last record ([`GENESIS_HASH`] when empty).
    pub head_hash: [u8; HASH_LEN_BYTES],
    /// Checkpoints found (all were checked against the chain).
    pub checkpoints: usize,
    /// Whether their signatures were checked (a public key was given).
    pub checkpoints_signed: bool,
    /// The newest checkpoint's sequence number.
    pub newest_checkpoint_seq: Option<u64>,
    /// Bytes of a partial checkpoint entry at the end of the checkpoint file (ignored).
    pub checkpoint_torn_bytes: u64,
    /// Bytes after the last record of the last segment that are the remains of one
    /// interrupted append (a writer mid-append, or crashed and not yet reopened).
    pub torn_tail_bytes: u64,
    /// Whether `expect_head` was given and matched.
    pub expect_head_matched: bool,
    /// Snapshot records (kind 3 with a snapshot record's payload) in the journal.
    pub snapshots: usize,
    /// Of those, records whose snapshot file is present and was checked (length, SHA-256).
    pub snapshots_checked: usize,
    /// Of those, records whose file is gone (older snapshots are pruned: not damage).
    pub snapshots_missing: usize,
}

/// Sum of the sizes of the journal's segment files (for a progress bar).
pub fn journal_bytes(dir: &Path) -> Result<u64, JournalError> {
    let listing = list_segments(dir)?;
    let mut total = 0;
    for s in &listing.segments {
        total += std::fs::metadata(&s.path)
            .map_err(|e| JournalError::io("stat", &s.path, e))?
            .len();
    }
    Ok(total)
}

/// Verifies the journal in `dir`. `Err(JournalError::Damaged)` names the first bad place
/// (file, offset, sequence number, what); other errors are I/O or usage problems.
///
/// A directory without segment files is not a journal ([`JournalError::NoJournal`]), unless
/// its checkpoint file holds an entry: then records existed and are gone (damage). Entirely
/// zero segments at the end (an interrupted roll-over, which opening for append deletes) are
/// damage ([`DamageKind::EmptySegment`]), reported after the chain before them is checked.
pub fn verify(dir: &Path, opts: &VerifyOptions<'_>) -> Result<VerifyReport, JournalError> {
    let listing = list_segments(dir)?;
    let checkpoints = read_checkpoints(dir)?;
    let empty_tail = empty_tail_segments(&listing.segments)?;
    let live = &listing.segments[..listing.segments.len() - empty_tail];
    if live.is_empty() {
        // Nothing holds a record: report, in journal order, an all-zero segment, a segment
        // name out of range, then a checkpoint (which names a record that is not there).
        if let Some(seg) = listing.segments.first() {
            return Err(JournalError::damaged(
                &seg.path,
                0,
                Some(1),
                DamageKind::EmptySegment,
            ));
        }
        if let Some(e) = listing.out_of_range_damage() {
            return Err(e);
        }
        if checkpoints.entries.is_empty() {
            return Err(JournalError::NoJournal {
                dir: dir.to_path_buf(),
            });
        }
        check_checkpoints(&checkpoints, 0, &|_| None, opts.pubkey.as_ref())?;
        return Err(JournalError::NoJournal {
            dir: dir.to_path_buf(),
        });
    }
    let mut wanted: Vec<u64> = checkpoints
        .entries
        .iter()
        .filter_map(|(_, e)| e.map(|e| e.seq))
        .chain(opts.expect_head.map(|(s, _)| s))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let noop = |_: u64| {};
    let progress: &(dyn Fn(u64) + Sync) = opts.progress.unwrap_or(&noop);
    let scans = scan_all(live, &wanted, threads, progress);
    let n = scans.len();
    let summary = check_chain(scans, n, opts.allow_torn_tail)?;
    let last_seq = summary.last_scan.end.next_seq - 1;
    if let Some(seg) = listing.segments.get(n) {
        return Err(JournalError::damaged(
            &seg.path,
            0,
            Some(last_seq + 1),
            DamageKind::EmptySegment,
        ));
    }
    if let Some(e) = listing.out_of_range_damage() {
        return Err(e);
    }
    let found = |seq: u64| {
        summary
            .found
            .binary_search_by_key(&seq, |(s, _)| *s)
            .ok()
            .map(|i| summary.found[i].1)
    };
    let newest = check_checkpoints(&checkpoints, last_seq, &found, opts.pubkey.as_ref())?;
    if opts.pubkey.is_some() && checkpoints.entries.is_empty() {
        return Err(JournalError::damaged(
            &checkpoints.path,
            0,
            None,
            DamageKind::NoCheckpoint,
        ));
    }
    let (snapshots_checked, snapshots_missing) = check_snapshots(dir, &summary.snapshots)?;
    let mut expect_head_matched = false;
    if let Some((seq, hash)) = opts.expect_head {
        let path = &summary.last_scan.path;
        if seq > last_seq {
            return Err(JournalError::damaged(
                path,
                summary.last_scan.end.off,
                Some(seq),
                DamageKind::ExpectedHeadMissing { last_seq },
            ));
        }
        let ok = if seq == 0 {
            hash == GENESIS_HASH
        } else {
            found(seq) == Some(hash)
        };
        if !ok {
            return Err(JournalError::damaged(
                path,
                0,
                Some(seq),
                DamageKind::ExpectedHeadHash,
            ));
        }
        expect_head_matched = true;
    }
    Ok(VerifyReport {
        segments: n,
        bytes: summary.bytes,
        records: summary.records,
        first_seq: (summary.records > 0).then_some(1),
        last_seq: (summary.records > 0).then_some(last_seq),
        first_ts_ns: summary.first_ts_ns,
        last_ts_ns: summary.last_ts_ns,
        head_hash: summary.last_scan.end.prev_hash,
        checkpoints: checkpoints.entries.len(),
        checkpoints_signed: opts.pubkey.is_some(),
        newest_checkpoint_seq: newest,
        checkpoint_torn_bytes: checkpoints.torn_bytes,
        torn_tail_bytes: if summary.last_scan.invalid.is_none() {
            summary.last_scan.torn_tail_bytes().unwrap_or(0)
        } else {
            0
        },
        expect_head_matched,
        snapshots: summary.snapshots.len(),
        snapshots_checked,
        snapshots_missing,
    })
}

/// Checks every snapshot record: its payload is a snapshot record covering a sequence number
/// before its own, and the file it names, when present, has the length and SHA-256 it says.
/// Returns (files checked, files missing).
fn check_snapshots(dir: &Path, snapshots: &[SnapshotAt]) -> Result<(usize, usize), JournalError> {
    let (mut checked, mut missing) = (0, 0);
    for s in snapshots {
        let bad_record = |detail: String| {
            JournalError::damaged(
                &s.file,
                s.off,
                Some(s.seq),
                DamageKind::SnapshotRecord { detail },
            )
        };
        // The scan keeps only payloads that decode (other kind-3 payloads are opaque).
        let Some(r) = SnapshotRecord::decode(&s.payload) else {
            continue;
        };
        if r.covered_seq >= s.seq {
            return Err(bad_record(format!(
                "it covers sequence {}, not before its own",
                r.covered_seq
            )));
        }
        let path = r.path(dir);
        let file_damage = |detail: String| {
            JournalError::damaged(
                &path,
                0,
                Some(s.seq),
                DamageKind::SnapshotFile {
                    record_seq: s.seq,
                    detail,
                },
            )
        };
        match hash_snapshot_file(&path) {
            Ok((len, sha)) if len == r.file_len && sha == r.sha256 => checked += 1,
            Ok((len, sha)) => {
                return Err(file_damage(format!(
                    "{len} bytes, SHA-256 {}; the record says {} bytes, SHA-256 {}",
                    hex::encode(sha),
                    r.file_len,
                    hex::encode(r.sha256)
                )))
            }
            Err(SnapshotProblem::Missing { .. }) => missing += 1,
            Err(SnapshotProblem::Io(e)) => return Err(e),
            Err(other) => return Err(file_damage(other.to_string())),
        }
    }
    Ok((checked, missing))
}

/// Checks the checkpoints in file order against a journal whose last record is `last_seq`
/// (`found` gives the hash of a wanted record); returns the newest checkpoint's seq.
fn check_checkpoints(
    checkpoints: &Checkpoints,
    last_seq: u64,
    found: &dyn Fn(u64) -> Option<[u8; HASH_LEN_BYTES]>,
    pubkey: Option<&VerifyingKey>,
) -> Result<Option<u64>, JournalError> {
    let mut prev_seq = 0u64;
    let mut newest = None;
    for (off, entry) in &checkpoints.entries {
        let damaged =
            |what| JournalError::damaged(&checkpoints.path, *off, entry.map(|e| e.seq), what);
        let Some(e) = entry else {
            return Err(damaged(DamageKind::CheckpointEntry));
        };
        if let Some(key) = pubkey {
            check_signature(e, key).map_err(damaged)?;
        }
        if e.seq == 0 {
            return Err(damaged(DamageKind::CheckpointSeqZero));
        }
        if e.seq <= prev_seq {
            return Err(damaged(DamageKind::CheckpointOrder));
        }
        prev_seq = e.seq;
        if e.seq > last_seq {
            return Err(damaged(DamageKind::TailCut { last_seq }));
        }
        if found(e.seq) != Some(e.head_hash) {
            return Err(damaged(DamageKind::CheckpointHash));
        }
        newest = Some(e.seq);
    }
    Ok(newest)
}

/// Scans every segment with `threads` workers; results are in segment order.
pub(crate) fn scan_all(
    segments: &[SegmentFile],
    wanted: &[u64],
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<SegmentScan, JournalError>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<SegmentScan, JournalError>>>> =
        Mutex::new((0..segments.len()).map(|_| None).collect());
    let work = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= segments.len() {
            break;
        }
        let r = scan_segment(&segments[i], wanted, &mut |n| progress(n));
        if let Ok(mut slots) = results.lock() {
            slots[i] = Some(r);
        }
    };
    let workers = threads.clamp(1, segments.len().max(1));
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    let slots = results.into_inner().unwrap_or_else(|p| p.into_inner());
    slots
        .into_iter()
        .zip(segments)
        .map(|(r, seg)| {
            r.unwrap_or_else(|| {
                Err(JournalError::io(
                    "scan",
                    &seg.path,
                    std::io::Error::other("segment scan did not complete"),
                ))
            })
        })
        .collect()
}

/// The chain across all segments, when every check passed.
#[derive(Debug)]
pub(crate) struct ChainSummary {
    pub records: u64,
    pub bytes: u64,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    pub found: Vec<(u64, [u8; HASH_LEN_BYTES])>,
    pub snapshots: Vec<SnapshotAt>,
    pub last_scan: SegmentScan,
}

/// Checks the links between segment scans in order: each segment starts at the sequence
/// number after the previous one's last (damage at its `first_seq`, offset 32, naming the
/// sequence number expected there: a missing segment), sits at its position (`segment_index`,
/// offset 24) and chains from the previous one's last hash (`prev_hash`, offset 48). Segments
/// `0..clean_upto` must also end cleanly (only zeros after their last record). Returns the
/// first problem in journal order.
pub(crate) fn check_chain(
    scans: Vec<Result<SegmentScan, JournalError>>,
    clean_upto: usize,
    tolerate_torn_tail: bool,
) -> Result<ChainSummary, JournalError> {
    let n = scans.len();
    let mut chain = Chain::new(0, None);
    for (k, scan) in scans.into_iter().enumerate() {
        chain.push(scan?, k < clean_upto, k + 1 == n, tolerate_torn_tail)?;
    }
    chain.finish()
}

/// The link checks of [`check_chain`], one segment at a time, from any segment: a chain that
/// starts at segment `first_index > 0` takes that segment's header (`first_seq`, `prev_hash`)
/// as given (the segments before it are not read: recovery's tail-only open).
#[derive(Debug)]
pub(crate) struct Chain {
    next_index: u64,
    /// What the next segment must start with; `None` before the first one of a chain that
    /// starts mid-journal (trusted from its header).
    expect: Option<(u64, [u8; HASH_LEN_BYTES])>,
    records: u64,
    bytes: u64,
    first_ts_ns: Option<u64>,
    last_ts_ns: Option<u64>,
    found: Vec<(u64, [u8; HASH_LEN_BYTES])>,
    snapshots: Vec<SnapshotAt>,
    last_scan: Option<SegmentScan>,
}

impl Chain {
    /// A chain starting at segment `first_index`: from record 1 and GENESIS when it is 0,
    /// else from what that segment's header says (or `start`, when given).
    pub(crate) fn new(first_index: u64, start: Option<(u64, [u8; HASH_LEN_BYTES])>) -> Chain {
        Chain {
            next_index: first_index,
            expect: start.or((first_index == 0).then_some((1, GENESIS_HASH))),
            records: 0,
            bytes: 0,
            first_ts_ns: None,
            last_ts_ns: None,
            found: Vec::new(),
            snapshots: Vec::new(),
            last_scan: None,
        }
    }

    /// Checks the next segment's links (and, with `must_end_clean`, its end: only zeros after
    /// the last record, or, for the last segment with `tolerate_torn_tail`, a torn tail).
    pub(crate) fn push(
        &mut self,
        scan: SegmentScan,
        must_end_clean: bool,
        is_last: bool,
        tolerate_torn_tail: bool,
    ) -> Result<(), JournalError> {
        let k = self.next_index;
        let h = &scan.header;
        let first = self.last_scan.is_none();
        let (expect_seq, expect_hash) = self.expect.unwrap_or((h.first_seq, h.prev_hash));
        let damaged = |offset: usize, what| {
            JournalError::damaged(&scan.path, offset as u64, Some(expect_seq), what)
        };
        if h.first_seq != expect_seq {
            let what = if first && k == 0 {
                DamageKind::MissingStart {
                    first_seq: h.first_seq,
                }
            } else {
                DamageKind::SegmentSeq {
                    found: h.first_seq,
                    expected: expect_seq,
                }
            };
            return Err(damaged(SH_FIRST_SEQ_OFFSET, what));
        }
        if h.segment_index != k {
            return Err(damaged(
                SH_SEGMENT_INDEX_OFFSET,
                DamageKind::HeaderField {
                    field: "segment_index",
                    found: h.segment_index,
                    expected: k,
                },
            ));
        }
        if h.prev_hash != expect_hash {
            return Err(damaged(SH_PREV_HASH_OFFSET, DamageKind::Link));
        }
        let tolerated = is_last
            && tolerate_torn_tail
            && scan.invalid.is_none()
            && scan.torn_tail_bytes().is_some();
        if must_end_clean && !tolerated {
            if let Some(e) = scan.trailing_damage(is_last) {
                return Err(e);
            }
        }
        self.records += scan.records;
        self.bytes += scan.file_len;
        if self.first_ts_ns.is_none() {
            self.first_ts_ns = scan.first_ts_ns;
        }
        if scan.last_ts_ns.is_some() {
            self.last_ts_ns = scan.last_ts_ns;
        }
        self.found.extend_from_slice(&scan.found);
        self.snapshots.extend(scan.snapshots.iter().cloned());
        self.expect = Some((scan.end.next_seq, scan.end.prev_hash));
        self.next_index = k + 1;
        self.last_scan = Some(scan);
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<ChainSummary, JournalError> {
        let last_scan = self.last_scan.ok_or_else(|| {
            JournalError::io(
                "verify",
                Path::new("."),
                std::io::Error::other("no segment to verify"),
            )
        })?;
        Ok(ChainSummary {
            records: self.records,
            bytes: self.bytes,
            first_ts_ns: self.first_ts_ns,
            last_ts_ns: self.last_ts_ns,
            found: self.found,
            snapshots: self.snapshots,
            last_scan,
        })
    }
}
