//! Rebuilding risk state from the audit journal: every decision record, in journal order,
//! through [`Checker::apply_decision`].

use std::path::Path;

use crate::checker::Checker;
use crate::error::RiskError;

/// What a replay read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records read (every kind).
    pub records: u64,
    /// Decision records replayed.
    pub decisions: u64,
    /// Of those, accepted ones (whose state effects were applied).
    pub accepted: u64,
    /// Accepted decisions that did not fit the state and were skipped.
    pub skipped: u64,
    /// Sequence number of the last record read (0 if none).
    pub last_seq: u64,
}

/// Replays every decision record of the journal in `dir` into `checker` (positions, open
/// orders and exposure, remembered order ids, throttle state, reference prices, halt events).
/// Records of other kinds are skipped. A damaged journal or an undecodable decision is an
/// error: recovery never guesses.
pub fn replay_journal(checker: &mut Checker, dir: &Path) -> Result<ReplayStats, RiskError> {
    let journal_err = |source| RiskError::Journal {
        dir: dir.to_owned(),
        source,
    };
    let reader = audit::Reader::open(dir).map_err(journal_err)?;
    let skipped_before = checker.replay_skipped();
    let mut stats = ReplayStats::default();
    for record in reader.iter_from(1) {
        let record = record.map_err(journal_err)?;
        stats.records += 1;
        stats.last_seq = record.seq;
        if record.kind != audit::KIND_DECISION {
            continue;
        }
        let d = orders::decode_decision(&record.payload).map_err(|source| {
            RiskError::JournalRecord {
                dir: dir.to_owned(),
                seq: record.seq,
                source,
            }
        })?;
        stats.decisions += 1;
        if d.reason.is_accepted() {
            stats.accepted += 1;
        }
        checker.apply_decision(&d);
    }
    stats.skipped = checker.replay_skipped() - skipped_before;
    Ok(stats)
}
