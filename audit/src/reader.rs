//! A read-only view of a journal directory: what is committed now, every record validated and
//! its hash recomputed as it is read. Safe to use while the writer appends (it reads files with
//! `pread`; a record is visible once its length word is stored, which the writer does last).

use std::path::{Path, PathBuf};

use crate::error::{DamageKind, JournalError};
use crate::format::{GENESIS_HASH, HASH_LEN_BYTES, SH_FIRST_SEQ_OFFSET, SH_PREV_HASH_OFFSET};
use crate::scan::{list_segments, SegmentFile, Step, WalkPos, Walker};

/// One record, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number.
    pub seq: u64,
    /// Timestamp given to `append`.
    pub ts_ns: u64,
    /// Kind given to `append`.
    pub kind: u16,
    /// Payload.
    pub payload: Vec<u8>,
    /// Chain hash (verified).
    pub hash: [u8; HASH_LEN_BYTES],
}

/// A read-only view of a journal directory.
#[derive(Debug, Clone)]
pub struct Reader {
    dir: PathBuf,
    segments: Vec<SegmentFile>,
    check_hashes: bool,
}

/// Where an iteration stands (the next record's place); resume with [`Reader::records_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    segment: usize,
    walk: WalkPos,
}

impl Position {
    /// The sequence number of the record at this position.
    pub fn next_seq(&self) -> u64 {
        self.walk.next_seq
    }

    /// The hash of the record before this position.
    pub fn prev_hash(&self) -> [u8; HASH_LEN_BYTES] {
        self.walk.prev_hash
    }
}

impl Reader {
    /// Opens the journal in `dir` (lists its segments).
    pub fn open(dir: &Path) -> Result<Reader, JournalError> {
        let listing = list_segments(dir)?;
        if listing.segments.is_empty() {
            return Err(JournalError::NoJournal {
                dir: dir.to_path_buf(),
            });
        }
        Ok(Reader {
            dir: dir.to_path_buf(),
            segments: listing.segments,
            check_hashes: true,
        })
    }

    /// The same reader, but records' hashes are not recomputed (their structure, sequence
    /// numbers, padding and the links between segments still are). Only for a reader in the
    /// writer's own process following records it has just written (the engine's risk-state
    /// snapshot thread): it reads them back from the page cache, where nothing can change them,
    /// and hashing every record again would cost as much as the rest of its work. Never for a
    /// journal from elsewhere.
    pub fn without_hash_checks(mut self) -> Reader {
        self.check_hashes = false;
        self
    }

    /// Lists the segments again (a live writer may have rolled over).
    pub fn refresh(&mut self) -> Result<(), JournalError> {
        self.segments = list_segments(&self.dir)?.segments;
        Ok(())
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files, in order.
    pub fn segments(&self) -> &[SegmentFile] {
        &self.segments
    }

    /// Records with `seq >= from_seq`, in order, each verified (hash chained from the start of
    /// the segment that holds `from_seq`; links between the segments walked are checked).
    /// Ends at the end of committed data; yields one `Err` and stops at damage.
    pub fn iter_from(&self, from_seq: u64) -> Records<'_> {
        let from_seq = from_seq.max(1);
        let segment = self
            .segments
            .partition_point(|s| s.first_seq <= from_seq)
            .saturating_sub(1);
        Records {
            reader: self,
            from_seq,
            start: Start::Segment(segment),
            cur: None,
            done: false,
        }
    }

    /// Records from a position an earlier iteration reached ([`Records::position`]).
    pub fn records_at(&self, pos: Position) -> Records<'_> {
        Records {
            reader: self,
            from_seq: pos.walk.next_seq,
            start: Start::Position(pos),
            cur: None,
            done: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Segment(usize),
    Position(Position),
}

/// Iterator over verified records (see [`Reader::iter_from`]).
#[derive(Debug)]
pub struct Records<'a> {
    reader: &'a Reader,
    from_seq: u64,
    start: Start,
    cur: Option<(usize, Walker)>,
    done: bool,
}

impl Records<'_> {
    /// The position of the next record (after the last one returned). `None` before the
    /// first call to `next` or after an error.
    pub fn position(&self) -> Option<Position> {
        if self.done {
            return None;
        }
        match (&self.cur, self.start) {
            (Some((segment, w)), _) => Some(Position {
                segment: *segment,
                walk: w.pos(),
            }),
            (None, Start::Position(p)) => Some(p),
            (None, Start::Segment(_)) => None,
        }
    }

    fn open_segment(&self, index: usize) -> Result<Walker, JournalError> {
        let seg = &self.reader.segments[index];
        let mut w = Walker::open(seg, Some(index as u64))?;
        if !self.reader.check_hashes {
            w.skip_hash_checks();
        }
        Ok(w)
    }

    fn fail(&mut self, e: JournalError) -> Option<Result<crate::Record, JournalError>> {
        self.done = true;
        Some(Err(e))
    }

    /// Moves to segment `index` after the current walk ended at `end`, checking the link.
    fn link_to(&mut self, index: usize, end: WalkPos) -> Result<(), JournalError> {
        let w = self.open_segment(index)?;
        let h = *w.header();
        if h.first_seq != end.next_seq {
            return Err(JournalError::damaged(
                w.path(),
                SH_FIRST_SEQ_OFFSET as u64,
                Some(end.next_seq),
                DamageKind::SegmentSeq {
                    found: h.first_seq,
                    expected: end.next_seq,
                },
            ));
        }
        if h.prev_hash != end.prev_hash {
            return Err(JournalError::damaged(
                w.path(),
                SH_PREV_HASH_OFFSET as u64,
                Some(end.next_seq),
                DamageKind::Link,
            ));
        }
        self.cur = Some((index, w));
        Ok(())
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.cur.is_none() {
            let opened = match self.start {
                Start::Segment(i) => self.open_segment(i).and_then(|w| {
                    let h = *w.header();
                    if i == 0 && (h.first_seq != 1 || h.prev_hash != GENESIS_HASH) {
                        let (offset, what) = if h.first_seq != 1 {
                            (
                                SH_FIRST_SEQ_OFFSET,
                                DamageKind::MissingStart {
                                    first_seq: h.first_seq,
                                },
                            )
                        } else {
                            (SH_PREV_HASH_OFFSET, DamageKind::Link)
                        };
                        return Err(JournalError::damaged(
                            w.path(),
                            offset as u64,
                            Some(1),
                            what,
                        ));
                    }
                    Ok((i, w))
                }),
                Start::Position(p) => self.open_segment(p.segment).map(|mut w| {
                    w.seek(p.walk);
                    (p.segment, w)
                }),
            };
            match opened {
                Ok(c) => self.cur = Some(c),
                Err(e) => return self.fail(e),
            }
        }
        loop {
            let (index, walker) = self.cur.as_mut()?;
            let index = *index;
            let step = walker.step();
            match step {
                Err(e) => return self.fail(e),
                Ok(Step::Record(r)) => {
                    if r.header.seq < self.from_seq {
                        continue;
                    }
                    return Some(Ok(Record {
                        seq: r.header.seq,
                        ts_ns: r.header.ts_ns,
                        kind: r.header.kind,
                        payload: r.payload.to_vec(),
                        hash: r.hash,
                    }));
                }
                Ok(Step::End) => {
                    if index + 1 >= self.reader.segments.len() {
                        // End of committed data; a later `next` looks again (live journal).
                        return None;
                    }
                    let end = walker.pos();
                    if let Err(e) = self.link_to(index + 1, end) {
                        return self.fail(e);
                    }
                }
                Ok(Step::Invalid(what)) => {
                    let pos = walker.pos();
                    let e = JournalError::damaged(walker.path(), pos.off, Some(pos.next_seq), what);
                    return self.fail(e);
                }
            }
        }
    }
}
