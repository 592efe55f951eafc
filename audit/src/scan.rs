//! Reading segment files: listing, positional reads in chunks, and the record walker shared by
//! recovery, [`crate::Reader`], `verify` and the gap-fill server.
//!
//! Files are read with `pread` (never mapped), so a reader cannot be crashed by a file that
//! shrinks under it; every record is validated and its hash recomputed as it is read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{DamageKind, JournalError};
use crate::format::{
    chain_hash_stored, is_out_of_range_segment_file_name, is_segment_tmp_file_name,
    parse_segment_file_name, record_len_word, RecordHeader, SegmentHeader, HASH_LEN_BYTES,
    RECORD_HEADER_LEN_BYTES, SEGMENT_HEADER_LEN_BYTES,
};
use crate::format::{
    record_len_for, u32_at, u64_at, SH_FIRST_SEQ_OFFSET, SH_SEGMENT_INDEX_OFFSET,
    SH_SEGMENT_SIZE_OFFSET,
};
use crate::limits::{
    PAYLOAD_LEN_BYTES_MAX, READ_CHUNK_BYTES, RECORD_LEN_BYTES_MIN, SEGMENT_SIZE_ALIGN_BYTES,
    SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN, TORN_TAIL_WINDOW_BYTES,
};

/// One segment file found in a journal directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its path.
    pub path: PathBuf,
    /// The first sequence number, from its name.
    pub first_seq: u64,
}

/// The files of a journal directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segments in sequence order.
    pub segments: Vec<SegmentFile>,
    /// Leftovers of an interrupted segment creation (`spare.seg.tmp`, `<20 digits>.seg.tmp`).
    pub tmp_files: Vec<PathBuf>,
    /// Files named like a segment whose number is above `u64::MAX` (damage), sorted.
    pub out_of_range: Vec<PathBuf>,
}

/// Lists the segment files of `dir`, sorted by first sequence number, and the leftovers of a
/// segment creation. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> Result<Listing, JournalError> {
    let mut listing = Listing::default();
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_seq) = parse_segment_file_name(name) {
            listing.segments.push(SegmentFile {
                path: entry.path(),
                first_seq,
            });
        } else if is_segment_tmp_file_name(name) {
            listing.tmp_files.push(entry.path());
        } else if is_out_of_range_segment_file_name(name) {
            listing.out_of_range.push(entry.path());
        }
    }
    listing.segments.sort_by_key(|s| s.first_seq);
    listing.tmp_files.sort();
    listing.out_of_range.sort();
    Ok(listing)
}

impl Listing {
    /// The damage an out-of-range segment name is, when there is one.
    pub(crate) fn out_of_range_damage(&self) -> Option<JournalError> {
        self.out_of_range
            .first()
            .map(|p| JournalError::damaged(p, 0, None, DamageKind::SegmentName))
    }
}

/// Whether a file is entirely zero (or empty): a segment whose header never reached the disk.
pub(crate) fn is_all_zero(path: &Path) -> Result<bool, JournalError> {
    let mut cursor = Cursor::open(path)?;
    // Any segment with a header is not: decide from the first bytes without reading it all.
    let head = (cursor.len() as usize).min(SEGMENT_HEADER_LEN_BYTES);
    if cursor.bytes(0, head)?.iter().any(|&b| b != 0) {
        return Ok(false);
    }
    Ok(cursor.nonzero_end(0, &mut |_| {})? == 0)
}

/// How many segments at the end of `segments` are entirely zero (or empty): they hold nothing
/// (a roll-over whose rename reached the disk but whose header did not).
pub(crate) fn empty_tail_segments(segments: &[SegmentFile]) -> Result<usize, JournalError> {
    let mut n = 0;
    for seg in segments.iter().rev() {
        if !is_all_zero(&seg.path)? {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// Positional reads of one file through a chunk buffer.
#[derive(Debug)]
pub(crate) struct Cursor {
    file: File,
    path: PathBuf,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
    buf_len: usize,
}

impl Cursor {
    pub(crate) fn open(path: &Path) -> Result<Cursor, JournalError> {
        let file = File::open(path).map_err(|e| JournalError::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", path, e))?
            .len();
        Ok(Cursor {
            file,
            path: path.to_path_buf(),
            len,
            buf: Vec::new(),
            buf_start: 0,
            buf_len: 0,
        })
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Forgets buffered bytes so that the next read sees what was written since.
    pub(crate) fn invalidate(&mut self) {
        self.buf_len = 0;
    }

    /// `n` bytes at `off`; the caller guarantees `off + n <= len()`.
    pub(crate) fn bytes(&mut self, off: u64, n: usize) -> Result<&[u8], JournalError> {
        debug_assert!(off + n as u64 <= self.len);
        let in_buf =
            off >= self.buf_start && off + n as u64 <= self.buf_start + self.buf_len as u64;
        if !in_buf {
            let want = (self.len - off).min(n.max(READ_CHUNK_BYTES) as u64) as usize;
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            self.file
                .read_exact_at(&mut self.buf[..want], off)
                .map_err(|e| JournalError::io("read", &self.path, e))?;
            self.buf_start = off;
            self.buf_len = want;
        }
        let start = (off - self.buf_start) as usize;
        Ok(&self.buf[start..start + n])
    }

    /// Offset just past the last non-zero byte in `[from, len)`, or `from` when all are zero.
    pub(crate) fn nonzero_end(
        &mut self,
        from: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<u64, JournalError> {
        let mut end = from;
        let mut off = from;
        while off < self.len {
            let n = (self.len - off).min(READ_CHUNK_BYTES as u64) as usize;
            let chunk = self.bytes(off, n)?;
            // Compare whole blocks with a zero block (memcmp: fast even in debug builds), and
            // look byte by byte only inside the last block that is not zero.
            const BLOCK: usize = 4096;
            static ZERO_BLOCK: [u8; BLOCK] = [0u8; BLOCK];
            let mut block_end = chunk.len();
            while block_end > 0 {
                let block_start = (block_end - 1) / BLOCK * BLOCK;
                let block = &chunk[block_start..block_end];
                if block != &ZERO_BLOCK[..block.len()] {
                    if let Some(last) = block.iter().rposition(|&b| b != 0) {
                        end = off + (block_start + last) as u64 + 1;
                    }
                    break;
                }
                block_end = block_start;
            }
            off += n as u64;
            progress(n as u64);
        }
        Ok(end)
    }
}

/// A record as read from a file, borrowing the read buffer.
#[derive(Debug)]
pub(crate) struct RecordRef<'a> {
    /// Its header.
    pub header: RecordHeader,
    /// Its payload.
    pub payload: &'a [u8],
    /// Its (verified) chain hash.
    pub hash: [u8; HASH_LEN_BYTES],
}

/// What the walker found at its position.
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A valid record that continues the chain; the walker moved past it.
    Record(RecordRef<'a>),
    /// A zero `record_len` word, or no room for another record: end of data in this segment.
    End,
    /// Bytes at the position are not a valid next record (the walker does not move).
    Invalid(DamageKind),
}

/// Walks the records of one segment, validating each and checking the hash chain.
#[derive(Debug)]
pub(crate) struct Walker {
    cursor: Cursor,
    header: SegmentHeader,
    off: u64,
    next_seq: u64,
    prev_hash: [u8; HASH_LEN_BYTES],
    hasher: Sha256,
    /// Recompute each record's hash (always, except for a reader that follows what its own
    /// process just wrote: [`crate::Reader::without_hash_checks`]).
    check_hashes: bool,
}

/// Where a walk stands: enough to resume it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WalkPos {
    pub off: u64,
    pub next_seq: u64,
    pub prev_hash: [u8; HASH_LEN_BYTES],
}

/// Whether a segment size follows the size rule: a multiple of 4096, from 4 KiB to 1 GiB.
pub(crate) fn segment_size_ok(size: u64) -> bool {
    (SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&size)
        && size % SEGMENT_SIZE_ALIGN_BYTES == 0
}

impl Walker {
    /// Opens a segment and validates its header against the file: size rule, file size, name,
    /// and (when `expect_index` is given) its position. Damage is reported at the offset of
    /// the field that is wrong.
    pub(crate) fn open(
        seg: &SegmentFile,
        expect_index: Option<u64>,
    ) -> Result<Walker, JournalError> {
        let mut cursor = Cursor::open(&seg.path)?;
        let hdr_bytes = if cursor.len() >= SEGMENT_HEADER_LEN_BYTES as u64 {
            cursor.bytes(0, SEGMENT_HEADER_LEN_BYTES)?
        } else {
            &[][..]
        };
        let header = SegmentHeader::decode(hdr_bytes).map_err(|p| {
            JournalError::damaged(
                &seg.path,
                p.offset(),
                Some(seg.first_seq),
                DamageKind::Header(p),
            )
        })?;
        let damaged = |offset: usize, what| {
            JournalError::damaged(&seg.path, offset as u64, Some(seg.first_seq), what)
        };
        let field_err = |offset, field, found, expected| {
            damaged(
                offset,
                DamageKind::HeaderField {
                    field,
                    found,
                    expected,
                },
            )
        };
        if !segment_size_ok(header.segment_size_bytes) {
            return Err(damaged(
                SH_SEGMENT_SIZE_OFFSET,
                DamageKind::SegmentSize {
                    found: header.segment_size_bytes,
                },
            ));
        }
        if header.segment_size_bytes != cursor.len() {
            return Err(field_err(
                SH_SEGMENT_SIZE_OFFSET,
                "segment_size (file size)",
                header.segment_size_bytes,
                cursor.len(),
            ));
        }
        if header.first_seq != seg.first_seq {
            return Err(field_err(
                SH_FIRST_SEQ_OFFSET,
                "first_seq (file name)",
                header.first_seq,
                seg.first_seq,
            ));
        }
        if header.first_seq == 0 {
            return Err(field_err(SH_FIRST_SEQ_OFFSET, "first_seq", 0, 1));
        }
        if let Some(expect_index) = expect_index {
            if header.segment_index != expect_index {
                return Err(field_err(
                    SH_SEGMENT_INDEX_OFFSET,
                    "segment_index",
                    header.segment_index,
                    expect_index,
                ));
            }
        }
        Ok(Walker {
            cursor,
            header,
            off: SEGMENT_HEADER_LEN_BYTES as u64,
            next_seq: header.first_seq,
            prev_hash: header.prev_hash,
            hasher: Sha256::new(),
            check_hashes: true,
        })
    }

    /// Skips the hash recomputation (structure, sequence numbers and padding are still
    /// checked; each record's stored hash becomes the next `prev_hash`).
    pub(crate) fn skip_hash_checks(&mut self) {
        self.check_hashes = false;
    }

    pub(crate) fn header(&self) -> &SegmentHeader {
        &self.header
    }

    pub(crate) fn path(&self) -> &Path {
        self.cursor.path()
    }

    pub(crate) fn pos(&self) -> WalkPos {
        WalkPos {
            off: self.off,
            next_seq: self.next_seq,
            prev_hash: self.prev_hash,
        }
    }

    /// Resumes at a position reached earlier by a walk of the same segment.
    pub(crate) fn seek(&mut self, pos: WalkPos) {
        self.off = pos.off;
        self.next_seq = pos.next_seq;
        self.prev_hash = pos.prev_hash;
    }

    pub(crate) fn cursor(&mut self) -> &mut Cursor {
        &mut self.cursor
    }

    /// Reads the next step. At an end or an invalid record, re-reads the file once, so that a
    /// reader following a live journal sees records appended since its buffer was filled.
    pub(crate) fn step(&mut self) -> Result<Step<'_>, JournalError> {
        let first = self.probe()?;
        let kind = match first {
            Probe::Ok(len) => return self.take(len),
            Probe::End => None,
            Probe::Invalid(k) => Some(k),
        };
        self.cursor.invalidate();
        match self.probe()? {
            Probe::Ok(len) => self.take(len),
            Probe::End => Ok(Step::End),
            Probe::Invalid(k) => Ok(Step::Invalid(kind.unwrap_or(k))),
        }
    }

    fn probe(&mut self) -> Result<Probe, JournalError> {
        let seg_len = self.cursor.len();
        if self.off + RECORD_LEN_BYTES_MIN as u64 > seg_len {
            return Ok(Probe::End);
        }
        let head = self.cursor.bytes(self.off, RECORD_HEADER_LEN_BYTES)?;
        if record_len_word(head) == 0 {
            return Ok(Probe::End);
        }
        let header = match RecordHeader::decode(head) {
            Ok(h) => h,
            Err(p) => return Ok(Probe::Invalid(DamageKind::Record(p))),
        };
        let len = header.record_len as u64;
        if self.off + len > seg_len {
            return Ok(Probe::Invalid(DamageKind::RecordPastEnd {
                record_len: header.record_len,
            }));
        }
        if header.seq != self.next_seq {
            return Ok(Probe::Invalid(DamageKind::Seq { found: header.seq }));
        }
        let body = self.cursor.bytes(self.off, len as usize)?;
        let hash_off = len as usize - HASH_LEN_BYTES;
        let payload_end = RECORD_HEADER_LEN_BYTES + header.payload_len as usize;
        if body[payload_end..hash_off].iter().any(|&b| b != 0) {
            return Ok(Probe::Invalid(DamageKind::Padding));
        }
        if self.check_hashes {
            let computed = chain_hash_stored(&mut self.hasher, &self.prev_hash, &body[..hash_off]);
            if computed[..] != body[hash_off..] {
                return Ok(Probe::Invalid(DamageKind::Hash));
            }
        }
        Ok(Probe::Ok(header))
    }

    fn take(&mut self, header: RecordHeader) -> Result<Step<'_>, JournalError> {
        let off = self.off;
        let len = header.record_len as usize;
        let body = self.cursor.bytes(off, len)?;
        let mut hash = [0u8; HASH_LEN_BYTES];
        hash.copy_from_slice(&body[len - HASH_LEN_BYTES..]);
        self.off += len as u64;
        self.next_seq += 1;
        self.prev_hash = hash;
        let body = self.cursor.bytes(off, len)?;
        Ok(Step::Record(RecordRef {
            header,
            payload: &body
                [RECORD_HEADER_LEN_BYTES..RECORD_HEADER_LEN_BYTES + header.payload_len as usize],
            hash,
        }))
    }
}

enum Probe {
    Ok(RecordHeader),
    End,
    Invalid(DamageKind),
}

/// The result of walking a whole segment.
#[derive(Debug, Clone)]
pub(crate) struct SegmentScan {
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub file_len: u64,
    pub records: u64,
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// Where the valid chain stops.
    pub end: WalkPos,
    /// Why it stopped there, when an invalid record (not a zero word) stopped it.
    pub invalid: Option<DamageKind>,
    /// Just past the last non-zero byte at or after `end.off` (`== end.off` when none).
    pub nonzero_end: u64,
    /// How far past `end.off` an interrupted append could have written, judging by the bytes
    /// at `end.off` (see [`torn_extent`]).
    pub torn_extent: u64,
    /// Hashes of the wanted sequence numbers found in this segment.
    pub found: Vec<(u64, [u8; HASH_LEN_BYTES])>,
    /// Snapshot records of this segment (kind 3 with a snapshot record's payload).
    pub snapshots: Vec<SnapshotAt>,
}

/// A snapshot record found by a scan.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotAt {
    pub file: PathBuf,
    pub off: u64,
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl SegmentScan {
    /// Non-zero bytes after the end of the chain, when they can be the remains of one
    /// interrupted append (a torn tail); 0 when the segment ends cleanly or when they cannot.
    pub(crate) fn torn_tail_bytes(&self) -> Option<u64> {
        let bytes = self.nonzero_end.saturating_sub(self.end.off);
        (bytes > 0 && bytes <= self.torn_extent).then_some(bytes)
    }

    /// The damage the scan describes in a segment that must end cleanly: the invalid record
    /// where the chain stopped, or non-zero bytes after the end of data. In the last segment
    /// (`is_last`) such bytes may be a torn tail; in any other they are plain damage.
    pub(crate) fn trailing_damage(&self, is_last: bool) -> Option<JournalError> {
        let after = self.nonzero_end.saturating_sub(self.end.off);
        let what = match &self.invalid {
            Some(k) => k.clone(),
            None if after == 0 => return None,
            None if !is_last => DamageKind::DataAfterSegmentEnd { bytes: after },
            None => match self.torn_tail_bytes() {
                Some(bytes) => DamageKind::TornTail { bytes },
                None => DamageKind::DataAfterEnd { bytes: after },
            },
        };
        Some(JournalError::damaged(
            &self.path,
            self.end.off,
            Some(self.end.next_seq),
            what,
        ))
    }
}

/// Walks a whole segment: every record is validated and chained from the segment header's
/// `prev_hash`; then the bytes after the end of the chain are checked for being zero.
/// `wanted` (sorted) are sequence numbers whose hashes the caller needs (checkpoints).
/// `progress` receives the number of bytes read as the scan advances. The segment's position
/// (`segment_index`) is not checked here: the links, checked in order, do it.
pub(crate) fn scan_segment(
    seg: &SegmentFile,
    wanted: &[u64],
    progress: &mut dyn FnMut(u64),
) -> Result<SegmentScan, JournalError> {
    scan_segment_visiting(seg, wanted, progress, &mut |_| Ok(()))
}

/// A record as [`Visit`] sees it (recovery's one pass over the tail, `Writer::open_tail`).
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Timestamp given to `append`.
    pub ts_ns: u64,
    /// Kind given to `append`.
    pub kind: u16,
    /// Payload.
    pub payload: &'a [u8],
    /// Chain hash (verified).
    pub hash: [u8; HASH_LEN_BYTES],
}

/// What a visitor of the records says when it cannot go on (the open then refuses).
pub type VisitError = Box<dyn std::error::Error + Send + Sync>;

/// [`scan_segment`], handing each valid record to `visit` in order (an `Err` stops the scan
/// with [`JournalError::Visit`]).
pub(crate) fn scan_segment_visiting(
    seg: &SegmentFile,
    wanted: &[u64],
    progress: &mut dyn FnMut(u64),
    visit: &mut dyn FnMut(RecordView<'_>) -> Result<(), VisitError>,
) -> Result<SegmentScan, JournalError> {
    let mut w = Walker::open(seg, None)?;
    let mut records = 0u64;
    let mut first_ts_ns = None;
    let mut last_ts_ns = None;
    let mut found = Vec::new();
    let mut snapshots = Vec::new();
    let mut wanted_idx = wanted.partition_point(|&s| s < seg.first_seq);
    let mut since_progress = SEGMENT_HEADER_LEN_BYTES as u64;
    let invalid = loop {
        let off = w.pos().off;
        match w.step()? {
            Step::Record(r) => {
                let seq = r.header.seq;
                visit(RecordView {
                    seq,
                    ts_ns: r.header.ts_ns,
                    kind: r.header.kind,
                    payload: r.payload,
                    hash: r.hash,
                })
                .map_err(|source| JournalError::Visit { seq, source })?;
                if r.header.kind == crate::KIND_SNAPSHOT
                    && crate::snapshot::SnapshotRecord::decode(r.payload).is_some()
                {
                    snapshots.push(SnapshotAt {
                        file: seg.path.clone(),
                        off,
                        seq,
                        payload: r.payload.to_vec(),
                    });
                }
                records += 1;
                if first_ts_ns.is_none() {
                    first_ts_ns = Some(r.header.ts_ns);
                }
                last_ts_ns = Some(r.header.ts_ns);
                while wanted_idx < wanted.len() && wanted[wanted_idx] <= r.header.seq {
                    if wanted[wanted_idx] == r.header.seq {
                        found.push((r.header.seq, r.hash));
                    }
                    wanted_idx += 1;
                }
                since_progress += r.header.record_len as u64;
                if since_progress >= READ_CHUNK_BYTES as u64 {
                    progress(since_progress);
                    since_progress = 0;
                }
            }
            Step::End => break None,
            Step::Invalid(k) => break Some(k),
        }
    };
    progress(since_progress);
    let end = w.pos();
    let header = *w.header();
    let nonzero_end = w.cursor().nonzero_end(end.off, progress)?;
    let room = w.cursor().len() - end.off;
    let torn_extent = if nonzero_end > end.off && room >= RECORD_LEN_BYTES_MIN as u64 {
        let mut head = [0u8; RECORD_HEADER_LEN_BYTES];
        head.copy_from_slice(w.cursor().bytes(end.off, RECORD_HEADER_LEN_BYTES)?);
        torn_extent(&head, end.next_seq, room)
    } else {
        // Fewer than 64 bytes left: no record fits, so no append ever writes there.
        0
    };
    Ok(SegmentScan {
        path: seg.path.clone(),
        header,
        file_len: w.cursor().len(),
        records,
        first_ts_ns,
        last_ts_ns,
        end,
        invalid,
        nonzero_end,
        torn_extent,
        found,
        snapshots,
    })
}

/// How many bytes from the end of the chain an interrupted append of record `expected_seq`
/// could have written, judging by the 32 bytes there (`head`), with `room` bytes left in the
/// segment (at least one smallest record: with less, no append writes there). The writer
/// stores the header fields, payload and hash first and the `record_len` word last, so, in
/// this order (the first that applies wins):
/// - an all-zero header (its page was lost in a power loss, later bytes were not): one
///   largest record, [`TORN_TAIL_WINDOW_BYTES`] (this wins over the next case, which an
///   all-zero header also matches with `payload_len` 0);
/// - a header that decodes and carries `expected_seq` (its payload or hash did not reach the
///   disk: power loss): that record's length;
/// - a zero `record_len` word with the other header fields either written (`payload_len`
///   within the limit, `seq` = `expected_seq`) or still zero (process crash mid-append):
///   the length `payload_len` implies;
/// - anything else (a non-zero `record_len` that does not match, a wrong `seq`) is not what
///   an interrupted append leaves: 0.
///
/// A length from the second or third case that does not fit in `room` is 0 as well: the
/// writer starts a new segment for a record that does not fit.
pub(crate) fn torn_extent(
    head: &[u8; RECORD_HEADER_LEN_BYTES],
    expected_seq: u64,
    room: u64,
) -> u64 {
    if room < RECORD_LEN_BYTES_MIN as u64 {
        return 0;
    }
    if head.iter().all(|&b| b == 0) {
        return TORN_TAIL_WINDOW_BYTES;
    }
    let len = torn_record_len(head, expected_seq);
    if len > room {
        0
    } else {
        len
    }
}

fn torn_record_len(head: &[u8; RECORD_HEADER_LEN_BYTES], expected_seq: u64) -> u64 {
    match RecordHeader::decode(head) {
        Ok(h) if h.seq == expected_seq => h.record_len as u64,
        Ok(_) => 0,
        Err(_) => {
            let mut probe = *head;
            let seq = u64_at(head, 8);
            let payload_len = u32_at(head, 4);
            if record_len_word(head) != 0
                || payload_len > PAYLOAD_LEN_BYTES_MAX
                || (seq != 0 && seq != expected_seq)
            {
                return 0;
            }
            // With the length word filled in, the rest of the header must be well formed.
            probe[..4]
                .copy_from_slice(&(record_len_for(payload_len as usize) as u32).to_le_bytes());
            match RecordHeader::decode(&probe) {
                Ok(h) => h.record_len as u64,
                Err(_) => 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(record_len: u32, payload_len: u32, seq: u64) -> [u8; RECORD_HEADER_LEN_BYTES] {
        let mut h = [0u8; RECORD_HEADER_LEN_BYTES];
        RecordHeader {
            record_len,
            payload_len,
            seq,
            ts_ns: 9,
            kind: 1,
        }
        .encode(&mut h);
        h
    }

    #[test]
    fn torn_extent_follows_the_documented_cases() {
        let len = record_len_for(100) as u32;
        let room = 4096;
        // 1. A valid header with the expected seq: its record length.
        assert_eq!(torn_extent(&header(len, 100, 7), 7, room), len as u64);
        assert_eq!(torn_extent(&header(len, 100, 8), 7, room), 0);
        // 2. Length word still zero, other fields written (or not yet).
        assert_eq!(torn_extent(&header(0, 100, 7), 7, room), len as u64);
        assert_eq!(torn_extent(&header(0, 100, 0), 7, room), len as u64);
        assert_eq!(torn_extent(&header(0, 100, 6), 7, room), 0);
        let mut bad_flags = header(0, 100, 7);
        bad_flags[26] = 1;
        assert_eq!(torn_extent(&bad_flags, 7, room), 0);
        // 3. All zero: one largest record (case 3 wins over case 2, which a zero header
        // also matches with payload_len 0 and seq 0).
        assert_eq!(torn_extent(&[0u8; 32], 7, room), TORN_TAIL_WINDOW_BYTES);
        // 4. A length word that does not match: damage.
        assert_eq!(torn_extent(&header(len + 8, 100, 7), 7, room), 0);
        assert_eq!(
            torn_extent(&header(0, PAYLOAD_LEN_BYTES_MAX + 1, 7), 7, room),
            0
        );
        // A record that would not fit in the room left is not an interrupted append.
        assert_eq!(torn_extent(&header(len, 100, 7), 7, len as u64), len as u64);
        assert_eq!(torn_extent(&header(len, 100, 7), 7, len as u64 - 8), 0);
        assert_eq!(torn_extent(&header(0, 100, 7), 7, len as u64 - 8), 0);
        // Fewer than 64 bytes left: nothing is ever appended there.
        assert_eq!(torn_extent(&[0u8; 32], 7, 56), 0);
        assert_eq!(torn_extent(&header(0, 0, 7), 7, 56), 0);
    }

    #[test]
    fn nonzero_end_finds_the_last_non_zero_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut b = vec![0u8; 3 * READ_CHUNK_BYTES + 100];
        std::fs::write(&path, &b).expect("write");
        let mut c = Cursor::open(&path).expect("open");
        assert_eq!(c.nonzero_end(0, &mut |_| {}).expect("scan"), 0);
        assert_eq!(c.nonzero_end(10, &mut |_| {}).expect("scan"), 10);
        for at in [
            0,
            1,
            4095,
            4096,
            READ_CHUNK_BYTES - 1,
            READ_CHUNK_BYTES,
            b.len() - 1,
        ] {
            b.fill(0);
            b[at] = 1;
            b[at / 2] = 1;
            std::fs::write(&path, &b).expect("write");
            let mut c = Cursor::open(&path).expect("open");
            assert_eq!(c.nonzero_end(0, &mut |_| {}).expect("scan"), at as u64 + 1);
        }
    }
}
