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
    /// The accepted orders of the last `redelivery_window` records, in journal order.
    pub redelivery: Vec<EgressEntry>,
    /// Warnings to show (an unusable snapshot, named).
    pub warnings: Vec<String>,
}

/// A snapshot file restored, waiting for its record to be found.
struct Candidate {
    path: PathBuf,
    covered_seq: u64,
    len: u64,
    sha256: [u8; 32],
}

/// The visitor of the one pass (see the module docs).
struct Pass {
    window: u64,
    /// Apply decisions with a sequence number above this to `checker`.
    apply_after: u64,
    checker: Option<risk::Checker>,
    candidate: Option<Candidate>,
    /// Whether the candidate's record was found and matches the file.
    confirmed: bool,
    /// What was wrong with the candidate's record, when it was found and differs.
    mismatch: Option<String>,
    /// The newest snapshot record newer than the candidate (its file was not usable).
    newer: Option<audit::SnapshotRecord>,
    last: Option<Decision>,
    replayed: u64,
    redelivery: VecDeque<EgressEntry>,
}

impl audit::TailVisitor for Pass {
    fn first_seq_needed(&mut self, last_segment_first_seq: u64) -> u64 {
        // The head is at least `last_segment_first_seq - 1`: the window starts at or after
        // `head - window`, so this covers it; the snapshot's covered record is a decision, so
        // the newest decision is seen too.
        let window_start = last_segment_first_seq
            .saturating_sub(1)
            .saturating_sub(self.window)
            .max(1);
        if self.checker.is_some() {
            window_start.min(self.apply_after.max(1))
        } else {
            window_start
        }
    }

    fn visit(&mut self, r: audit::RecordView<'_>) -> Result<(), audit::VisitError> {
        match r.kind {
            audit::KIND_DECISION => {
                let d = decode_decision(r.payload).map_err(|e| {
                    format!("journal record {} is not a valid decision: {e}", r.seq)
                })?;
                if r.seq > self.apply_after {
                    if let Some(c) = &mut self.checker {
                        c.apply_decision(&d);
                        self.replayed += 1;
                    }
                }
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
                self.last = Some(d);
            }
            audit::KIND_SNAPSHOT if self.checker.is_some() => {
                let Some(rec) = audit::SnapshotRecord::decode(r.payload) else {
                    return Ok(());
                };
                if let Some(c) = &self.candidate {
                    if rec.covered_seq == c.covered_seq && !self.confirmed {
                        if rec.file_len == c.len && rec.sha256 == c.sha256 {
                            self.confirmed = true;
                            self.mismatch = None;
                        } else {
                            self.mismatch = Some(format!(
                                "its record (seq {}) says {} bytes, SHA-256 {}; the file has {} \
                                 bytes, SHA-256 {}",
                                r.seq,
                                rec.file_len,
                                hex(&rec.sha256),
                                c.len,
                                hex(&c.sha256)
                            ));
                        }
                    } else if rec.covered_seq > c.covered_seq {
                        self.newer = Some(rec);
                    }
                } else {
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

/// Restores the newest snapshot file of `dir` covering at most `below` that restores under
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
        let (bytes, sha256) = match audit::snapshot::read_snapshot_file(&path) {
            Ok(x) => x,
            Err(e) => {
                warnings.push(format!(
                    "risk snapshot {} not used: {e}; trying an older one",
                    path.display()
                ));
                continue;
            }
        };
        match risk::Checker::restore_state(limits.clone(), &bytes) {
            Ok(checker) => {
                let c = Candidate {
                    path,
                    covered_seq,
                    len: bytes.len() as u64,
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
pub fn recover(
    dir: &Path,
    opts: audit::WriterOptions,
    spec: &RecoverySpec,
) -> anyhow::Result<Recovered> {
    let mut warnings = Vec::new();
    let mut pass = Pass {
        window: spec.redelivery_window as u64,
        apply_after: 0,
        checker: None,
        candidate: None,
        confirmed: false,
        mismatch: None,
        newer: None,
        last: None,
        replayed: 0,
        redelivery: VecDeque::new(),
    };
    if let Some(limits) = &spec.limits {
        match newest_restorable(dir, limits, u64::MAX, &mut warnings)? {
            Some((c, checker)) => {
                pass.apply_after = c.covered_seq;
                pass.candidate = Some(c);
                pass.checker = Some(checker);
            }
            None => pass.checker = Some(risk::Checker::new(limits.clone())),
        }
    }
    let (writer, recovery) = audit::Writer::open_tail(dir, opts, &mut pass)
        .with_context(|| format!("cannot open the journal in {}", dir.display()))?;
    let records_before = writer.next_seq().saturating_sub(1);
    let mut last = pass.last;
    if last.is_none() && records_before > 0 {
        // No decision in the records read (a tail of other records): look further back.
        last = last_decision(&writer)?;
    }
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
    let (checker, risk_source, replayed) = match (pass.checker, pass.candidate) {
        (None, _) => (None, RiskSource::None, 0),
        (Some(c), None) if records_before == 0 => (Some(c), RiskSource::Fresh, 0),
        (Some(c), None) => (Some(c), RiskSource::FullReplay, pass.replayed),
        (Some(c), Some(cand)) if pass.confirmed => (
            Some(c),
            RiskSource::Snapshot {
                path: cand.path,
                covered_seq: cand.covered_seq,
            },
            pass.replayed,
        ),
        (Some(_), Some(cand)) => {
            let why = pass.mismatch.unwrap_or_else(|| {
                format!("no journal record names it (the records up to {records_before} were read)")
            });
            warnings.push(format!(
                "risk snapshot {} not used: {why}; rebuilding risk state from an older snapshot \
                 or the whole journal",
                cand.path.display()
            ));
            let limits = spec.limits.clone().context("limits")?;
            let (c, source, n) = rebuild_slowly(dir, &limits, cand.covered_seq, &mut warnings)?;
            (Some(c), source, n)
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
        redelivery,
        warnings,
    })
}

/// The slow path: older snapshots (below `below`), each confirmed by its record in a read
/// from it to the head, else every decision of the journal.
fn rebuild_slowly(
    dir: &Path,
    limits: &risk::Limits,
    mut below: u64,
    warnings: &mut Vec<String>,
) -> anyhow::Result<(risk::Checker, RiskSource, u64)> {
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
                    checker.apply_decision(&d);
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
        match cand {
            None => return Ok((checker, RiskSource::FullReplay, replayed)),
            Some(c) if confirmed => {
                return Ok((
                    checker,
                    RiskSource::Snapshot {
                        path: c.path,
                        covered_seq: c.covered_seq,
                    },
                    replayed,
                ))
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
