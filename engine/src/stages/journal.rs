//! The journal stage: the single writer of the audit log (Titanic: persist, then act).
//!
//! Per batch: for each decided order, encode the decision into a stack buffer, append it to
//! the hash-chained journal, and publish the record; then commit the batch (under
//! `--durability batch`, one msync: group commit) and flush the publisher, then hand the
//! accepted orders to egress, then record the latency of the rejected ones (their journey
//! ends here). An accepted order therefore never reaches egress before its record is in the
//! mapped file (and, under `batch`, on stable storage). A journal error (disk full, I/O error)
//! is fatal: the orders whose records are already appended are still handed on (they are
//! persisted) unless the commit failed, nothing after the failing record is decided, and the
//! stage returns the error so that the pipeline stops intake and the process exits non-zero.

use std::sync::Arc;

use orders::{
    encode_decision, encode_decision_with_reply, Decision, Reason, DECISION_LEN_BYTES,
    DECISION_V3_LEN_BYTES,
};
use rtrb::{Consumer, Producer};

use crate::clock::Clock;
use crate::latency::Recorder;
use crate::limits::JOURNAL_MAINTAIN_INTERVAL_NS;
use crate::metrics::{bump, Metrics};
use crate::snapshots::Snapshotter;
use crate::stages::{Decided, Outbound, Stage, StageError, Step};

/// Where decision records go: the audit journal (+ publisher), or a stand-in in tests.
pub trait DecisionLog: Send {
    /// Appends one decision record and publishes it; returns its sequence number.
    fn append(&mut self, ts_ns: u64, payload: &[u8]) -> Result<u64, StageError>;
    /// End of a batch, after its last append and before any of its orders is handed on:
    /// the group commit of `--durability batch` (one msync), then send what the publisher
    /// buffered. An error means the batch's records may not be durable: none of its orders is
    /// handed on.
    fn end_batch(&mut self) -> Result<(), StageError>;
    /// Periodic work when due (interval msync, time-based checkpoint).
    fn maintain(&mut self, now_ns: u64) -> Result<(), StageError>;
    /// Live-feed sends that failed so far (the records themselves are appended).
    fn publish_failures(&self) -> u64 {
        0
    }
    /// Before a batch of decisions: appends the account-name records the ingress sent
    /// ([`crate::account_names::IngressNames`]), so that each precedes the decisions using it.
    fn record_names(&mut self) -> Result<(), StageError> {
        Ok(())
    }
    /// Runs the log's background threads (the next segment's preparer) on `cpus` rather than
    /// on the appending thread's core: called when that thread is pinned.
    fn keep_background_threads_on(&mut self, _cpus: &[usize]) {}
}

/// The real decision log: the audit journal writer and its optional live publisher.
///
/// The disk is the source of truth: a live-feed send that fails after its record was appended
/// does not fail the append. The record counts, its accepted order is handed on, the failure
/// is counted (`engine_journal_publish_failures_total`) and logged once per burst, and PUB
/// subscribers recover the record through gap fill (`docs/formats/audit-feed.md`).
pub struct AuditLog {
    /// The journal writer.
    pub writer: audit::Writer,
    /// The live publisher, if configured.
    pub publisher: Option<audit::Publisher>,
    /// Live-feed sends that failed.
    pub publish_failures: u64,
    /// Failures not logged yet, and when the next log line may be written (ns).
    pub unlogged_publish_failures: u64,
    /// See `unlogged_publish_failures`.
    pub next_publish_log_ns: u64,
    /// Timestamp of the newest record appended (the clock of a batch's end).
    pub last_ts_ns: u64,
    /// The risk-state snapshot thread, whose snapshot records this log appends.
    pub snapshots: Option<Snapshotter>,
    /// Snapshot records appended.
    pub snapshots_recorded: u64,
    /// Account-name records from the ingress (`engine run`), appended before each batch.
    pub names_inbox: Option<crate::account_names::NamesInbox>,
}

impl AuditLog {
    /// A log writing to `writer` and publishing on `publisher`.
    pub fn new(writer: audit::Writer, publisher: Option<audit::Publisher>) -> AuditLog {
        AuditLog {
            writer,
            publisher,
            publish_failures: 0,
            unlogged_publish_failures: 0,
            next_publish_log_ns: 0,
            last_ts_ns: 0,
            snapshots: None,
            names_inbox: None,
            snapshots_recorded: 0,
        }
    }

    /// Appends (and publishes) the account-name records in `inbox`, each also made part of
    /// the segment prologue ([`crate::account_names`]).
    fn record_names_from(
        &mut self,
        inbox: &crate::account_names::NamesInbox,
    ) -> Result<(), StageError> {
        // Cold: a record only when a JSON order named an account new to the table.
        while let Ok(payload) = inbox.0.try_recv() {
            let fail = |e: audit::JournalError| StageError::Journal {
                input_seq: 0,
                message: format!("cannot journal an account name: {}", chain(&e)),
            };
            self.append_account_name(self.last_ts_ns, &payload)
                .map_err(fail)?;
            self.writer
                .push_prologue(audit::KIND_ACCOUNT_NAME, &payload)
                .map_err(fail)?;
        }
        Ok(())
    }

    /// Appends one account-name record (kind 4) and publishes it on the live feed; returns
    /// its sequence number. The caller makes it part of the segment prologue.
    pub fn append_account_name(
        &mut self,
        ts_ns: u64,
        payload: &[u8],
    ) -> Result<u64, audit::JournalError> {
        let a = self
            .writer
            .append(audit::KIND_ACCOUNT_NAME, ts_ns, payload)?;
        if let Some(p) = &mut self.publisher {
            if let Err(e) = p.publish(a.seq, &a.hash, audit::KIND_ACCOUNT_NAME, ts_ns, payload) {
                self.publish_failed(a.seq, ts_ns, &e);
            }
        }
        Ok(a.seq)
    }

    /// Appends the records of the snapshots the snapshot thread has made (between batches:
    /// from `maintain`), publishes and commits them.
    fn append_snapshot_records(&mut self, now_ns: u64) -> Result<(), audit::JournalError> {
        let mut appended = false;
        while let Some(rec) = self.snapshots.as_ref().and_then(|s| s.try_recv()) {
            self.append_snapshot_record(now_ns, &rec)?;
            appended = true;
        }
        if appended {
            self.writer.commit()?;
            if let Some(p) = &mut self.publisher {
                if let Err(e) = p.flush() {
                    let seq = self.writer.next_seq().saturating_sub(1);
                    self.publish_failed(seq, now_ns, &e);
                }
            }
        }
        Ok(())
    }

    fn append_snapshot_record(
        &mut self,
        now_ns: u64,
        rec: &audit::SnapshotRecord,
    ) -> Result<(), audit::JournalError> {
        let payload = rec.encode();
        let a = self.writer.append(audit::KIND_SNAPSHOT, now_ns, &payload)?;
        if let Some(p) = &mut self.publisher {
            if let Err(e) = p.publish(a.seq, &a.hash, audit::KIND_SNAPSHOT, now_ns, &payload) {
                self.publish_failed(a.seq, now_ns, &e);
            }
        }
        if let Some(s) = &self.snapshots {
            s.recorded(rec.covered_seq);
        }
        self.snapshots_recorded += 1;
        Ok(())
    }

    /// End of the run: stops the snapshot thread — with a last snapshot of the head when
    /// `final_snapshot` (a clean stop; enough decisions since the last one) — and appends
    /// the records of the snapshots it made since the journal stage last looked. Returns the
    /// snapshot files written by this run and why snapshots stopped early, if they did (not
    /// an error of the run: restart then replays more); `Err` when a record could not be
    /// appended (the journal failed).
    pub fn close_snapshots(
        &mut self,
        final_snapshot: bool,
        now_ns: u64,
    ) -> Result<(u64, Option<String>), String> {
        let Some(s) = self.snapshots.take() else {
            return Ok((0, None));
        };
        let done = s.stop(final_snapshot);
        if final_snapshot {
            for rec in &done.pending {
                self.append_snapshot_record(now_ns, rec)
                    .map_err(|e| format!("appending a snapshot record: {}", chain(&e)))?;
            }
            if let Some(p) = &mut self.publisher {
                let _ = p.flush();
            }
            if let Some(newest) = done.pending.last() {
                crate::snapshots::prune(self.writer.dir(), newest.covered_seq);
            }
        }
        Ok((done.written, done.error))
    }

    /// Cold path: counts a failed live-feed send and logs at most once per interval.
    #[cold]
    fn publish_failed(&mut self, seq: u64, ts_ns: u64, e: &dyn std::error::Error) {
        self.publish_failures += 1;
        self.unlogged_publish_failures += 1;
        if ts_ns >= self.next_publish_log_ns {
            tracing::warn!(
                "audit live feed: {} send(s) failed since the last report, the latest at journal \
                 seq {seq}: {}; the records are in the journal and subscribers recover them by \
                 gap fill",
                self.unlogged_publish_failures,
                chain(e)
            );
            self.unlogged_publish_failures = 0;
            self.next_publish_log_ns =
                ts_ns.saturating_add(crate::limits::BAD_FRAME_LOG_INTERVAL_NS);
        }
    }
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("next_seq", &self.writer.next_seq())
            .field("publisher", &self.publisher.is_some())
            .finish()
    }
}

/// Formats an error with its source chain (cold path only). A source whose text the message
/// already ends with (a `{source}` in a thiserror message, as in the journal's errors) is not
/// repeated: "No space left on device" was printed twice.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        src = c.source();
    }
    s
}

impl DecisionLog for AuditLog {
    #[inline]
    fn append(&mut self, ts_ns: u64, payload: &[u8]) -> Result<u64, StageError> {
        let a = self
            .writer
            .append(audit::KIND_DECISION, ts_ns, payload)
            .map_err(|e| StageError::Journal {
                input_seq: payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0),
                message: chain(&e),
            })?;
        self.last_ts_ns = ts_ns;
        if let Some(p) = &mut self.publisher {
            if let Err(e) = p.publish(a.seq, &a.hash, audit::KIND_DECISION, ts_ns, payload) {
                self.publish_failed(a.seq, ts_ns, &e);
            }
        }
        Ok(a.seq)
    }

    fn keep_background_threads_on(&mut self, cpus: &[usize]) {
        self.writer.set_background_cpus(cpus.to_vec());
    }

    fn record_names(&mut self) -> Result<(), StageError> {
        let Some(inbox) = self.names_inbox.take() else {
            return Ok(());
        };
        let r = self.record_names_from(&inbox);
        self.names_inbox = Some(inbox);
        r
    }

    #[inline]
    fn end_batch(&mut self) -> Result<(), StageError> {
        // Group commit (`batch`; a no-op under the other policies): the batch's records are on
        // stable storage before egress sees any of its orders, and before the live feed.
        self.writer.commit().map_err(|e| StageError::Journal {
            input_seq: 0,
            message: format!("msync at the end of a batch: {}", chain(&e)),
        })?;
        if let Some(p) = &mut self.publisher {
            if let Err(e) = p.flush() {
                let seq = self.writer.next_seq().saturating_sub(1);
                self.publish_failed(seq, self.last_ts_ns, &e);
            }
        }
        if let Some(s) = &self.snapshots {
            s.appended(self.writer.next_seq().saturating_sub(1));
        }
        Ok(())
    }

    fn publish_failures(&self) -> u64 {
        self.publish_failures
    }

    fn maintain(&mut self, now_ns: u64) -> Result<(), StageError> {
        self.writer
            .maintain(now_ns)
            .map_err(|e| StageError::JournalMaintenance(chain(&e)))?;
        self.append_snapshot_records(now_ns)
            .map_err(|e| StageError::JournalMaintenance(format!("snapshot record: {}", chain(&e))))
    }
}

/// The journal stage.
pub struct JournalStage<L: DecisionLog> {
    log: L,
    input: Consumer<Decided>,
    out: Producer<Outbound>,
    accepted: Vec<Outbound>,
    max_batch: usize,
    clock: Clock,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    next_maintain_ns: u64,
    /// The input_seq the next decision must carry (dense input: one decision per order, in
    /// order), once the first is seen.
    next_input_seq: Option<u64>,
    /// The sequence number of the last record appended (rising).
    last_seq: u64,
}

impl<L: DecisionLog> std::fmt::Debug for JournalStage<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStage")
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl<L: DecisionLog> JournalStage<L> {
    /// A stage writing to `log`; `recorder` records the latency of rejections.
    pub fn new(
        log: L,
        input: Consumer<Decided>,
        out: Producer<Outbound>,
        max_batch: usize,
        clock: Clock,
        metrics: Arc<Metrics>,
        recorder: Recorder,
    ) -> JournalStage<L> {
        let max_batch = max_batch.max(1);
        JournalStage {
            log,
            input,
            out,
            accepted: Vec::with_capacity(max_batch),
            max_batch,
            clock,
            metrics,
            recorder,
            next_maintain_ns: 0,
            next_input_seq: None,
            last_seq: 0,
        }
    }

    /// The log and the rejection latencies, once the stage is done.
    pub fn finish(self) -> (L, Recorder) {
        (self.log, self.recorder)
    }
}

/// Hands the accepted orders of a batch to egress (room was reserved before the batch). No
/// room is impossible (the batch was bounded by the egress ring's free room, and only this
/// stage pushes to it): it stops the engine with a message rather than drop the orders, which
/// are journaled and re-sent by the next start's redelivery.
fn hand_on(out: &mut Producer<Outbound>, accepted: &mut Vec<Outbound>) -> Result<(), StageError> {
    let n = accepted.len();
    if n == 0 {
        return Ok(());
    }
    match out.write_chunk_uninit(n) {
        Ok(chunk) => {
            chunk.fill_from_iter(accepted.drain(..));
            Ok(())
        }
        Err(_) => Err(StageError::Invariant(format!(
            "journal: no room on the egress ring for {n} accepted orders (first input_seq {}) \
             although it was reserved; they are journaled and the next start re-sends them",
            accepted.first().map_or(0, |o| o.input_seq)
        ))),
    }
}

impl<L: DecisionLog> Stage for JournalStage<L> {
    fn do_work(&mut self) -> Result<Step, StageError> {
        let now = self.clock.now_ns();
        if now >= self.next_maintain_ns {
            self.next_maintain_ns = now.saturating_add(JOURNAL_MAINTAIN_INTERVAL_NS);
            self.log.maintain(now)?;
        }
        let avail = self.input.slots();
        if avail == 0 {
            return Ok(if self.input.is_abandoned() && self.input.slots() == 0 {
                Step::Done
            } else {
                Step::Idle
            });
        }
        // The names the ingress interned before it pushed these orders (their records were
        // sent before the orders, and the orders' decisions are visible now).
        self.log.record_names()?;
        // Room for the whole batch downstream, so every accepted order can be handed on at
        // once. An abandoned egress (it failed) has room for everything: records still go to
        // the journal, which is the source of truth.
        let free = if self.out.is_abandoned() {
            self.max_batch
        } else {
            self.out.slots()
        };
        if free == 0 {
            bump(&self.metrics.journal.backpressure_waits, 1);
            return Ok(Step::Idle);
        }
        let n = avail.min(free).min(self.max_batch);
        let Ok(chunk) = self.input.read_chunk(n) else {
            return Ok(Step::Idle);
        };
        let (a, b) = chunk.as_slices();
        let mut buf = [0u8; DECISION_V3_LEN_BYTES];
        let mut failure = None;
        let mut done = 0;
        for d in a.iter().chain(b.iter()) {
            let input_seq = d.inbound.input_seq;
            if self.next_input_seq.is_some_and(|want| want != input_seq) {
                failure = Some(StageError::Invariant(format!(
                    "journal: decision for input_seq {input_seq} where {} was due (one \
                     decision per order, in order)",
                    self.next_input_seq.unwrap_or_default()
                )));
                break;
            }
            let decision = Decision {
                input_seq: d.inbound.input_seq,
                order: d.inbound.order,
                reason: d.reason,
                t_in_ns: d.inbound.t_in_ns,
                t_decided_ns: d.t_decided_ns,
                // The check's own time (the batch's `now_ns`): recovery rebuilds the throttle
                // and the duplicate horizon from it.
                t_checked_ns: d.t_sent_ns,
                risk_session: d.risk_session,
                risk_batch: d.risk_batch,
                risk_batch_orders: d.risk_batch_orders,
            };
            let len = if d.reason == Reason::RiskRefused {
                // The JSON risk service's reply (see `Decided::risk_session`): a version-3
                // decision, with no session.
                let mut reply = [0u8; 16];
                reply[..8].copy_from_slice(&d.risk_session.to_le_bytes());
                reply[8..].copy_from_slice(&d.risk_batch.to_le_bytes());
                let decision = Decision {
                    risk_session: 0,
                    risk_batch: 0,
                    risk_batch_orders: 0,
                    ..decision
                };
                encode_decision_with_reply(&decision, &reply, &mut buf);
                DECISION_V3_LEN_BYTES
            } else {
                encode_decision(&decision, &mut buf);
                DECISION_LEN_BYTES
            };
            let seq = match self.log.append(now, &buf[..len]) {
                Ok(seq) => seq,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            };
            assert!(
                seq > self.last_seq,
                "journal: record seq {seq} after {} (the chain must rise)",
                self.last_seq
            );
            self.last_seq = seq;
            self.next_input_seq = Some(input_seq + 1);
            done += 1;
            bump(&self.metrics.journal.by_reason[d.reason.code() as usize], 1);
            if d.reason.is_accepted() {
                self.accepted.push(Outbound {
                    input_seq: d.inbound.input_seq,
                    journal_seq: seq,
                    order: d.inbound.order,
                    t_sched_ns: d.inbound.t_sched_ns,
                    t_in_ns: d.inbound.t_in_ns,
                    t_sent_ns: d.t_sent_ns,
                    t_decided_ns: d.t_decided_ns,
                });
            }
        }
        // Commit (msync under `batch`) and publish what was appended (even on failure: those
        // records exist); only then hand the accepted orders on.
        let flushed = self.log.end_batch();
        let t_end = self.clock.now_ns();
        let handed = if self.out.is_abandoned() || flushed.is_err() {
            // Egress gone, or the records may not be durable: nothing moves on. The orders are
            // journaled; the next start re-sends the accepted ones (redelivery).
            self.accepted.clear();
            Ok(())
        } else {
            hand_on(&mut self.out, &mut self.accepted)
        };
        for d in a.iter().chain(b.iter()).take(done) {
            if !d.reason.is_accepted() {
                self.recorder.record(
                    d.inbound.input_seq,
                    d.inbound.t_sched_ns,
                    d.inbound.t_in_ns,
                    d.t_sent_ns,
                    d.t_decided_ns,
                    t_end,
                );
            }
        }
        chunk.commit(done);
        bump(&self.metrics.journal.records, done as u64);
        self.metrics.journal.publish_failures.store(
            self.log.publish_failures(),
            std::sync::atomic::Ordering::Relaxed,
        );
        self.recorder
            .maybe_publish(t_end, &self.metrics.latency_rejected);
        if let Some(e) = failure {
            return Err(e);
        }
        handed?;
        flushed?;
        Ok(Step::Worked(done))
    }

    fn ready(&self) -> bool {
        // Decisions waiting and room for the accepted ones, or a neighbour gone.
        (!self.input.is_empty() && (self.out.slots() > 0 || self.out.is_abandoned()))
            || self.input.is_abandoned()
    }

    fn register_waits(&self, w: &mut crate::waitset::WaitSet) {
        w.deadline(self.next_maintain_ns);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::stages::Inbound;
    use orders::{decode_decision, Order, Reason};
    use rtrb::RingBuffer;
    use std::sync::atomic::Ordering::Relaxed;

    /// In-memory log that fails after `fail_after` records.
    #[derive(Default)]
    struct MemLog {
        records: Vec<Vec<u8>>,
        fail_after: Option<usize>,
        batches_flushed: usize,
    }

    impl DecisionLog for MemLog {
        fn append(&mut self, _ts: u64, payload: &[u8]) -> Result<u64, StageError> {
            if self.fail_after == Some(self.records.len()) {
                return Err(StageError::Journal {
                    input_seq: 0,
                    message: "No space left on device".into(),
                });
            }
            self.records.push(payload.to_vec());
            Ok(self.records.len() as u64)
        }
        fn end_batch(&mut self) -> Result<(), StageError> {
            self.batches_flushed += 1;
            Ok(())
        }
        fn maintain(&mut self, _now: u64) -> Result<(), StageError> {
            Ok(())
        }
    }

    fn decided(i: u64, reason: Reason) -> Decided {
        Decided {
            inbound: Inbound {
                input_seq: i,
                order: Order {
                    order_id: 100 + i,
                    symbol: orders::Symbol::new("MSFT").unwrap(),
                    ..Order::default()
                },
                t_sched_ns: 10,
                t_in_ns: 20,
            },
            reason,
            t_sent_ns: 25,
            t_decided_ns: 30,
            risk_session: 0x5e55,
            risk_batch: i / 4,
            risk_batch_orders: (i % 4) as u32 + 1,
        }
    }

    fn reason_of(i: u64) -> Reason {
        if i % 3 == 0 {
            Reason::PriceCollar
        } else {
            Reason::Accepted
        }
    }

    #[test]
    fn journals_in_order_then_hands_accepted_on() {
        let (mut ip, ic) = RingBuffer::new(32);
        let (op, mut oc) = RingBuffer::new(32);
        let m = Arc::new(Metrics::default());
        let mut s = JournalStage::new(
            MemLog::default(),
            ic,
            op,
            16,
            Clock::new(),
            Arc::clone(&m),
            Recorder::new(0, false),
        );
        for i in 0..10 {
            ip.push(decided(i, reason_of(i))).unwrap();
        }
        assert_eq!(s.do_work().unwrap(), Step::Worked(10));
        let out: Vec<Outbound> = std::iter::from_fn(|| oc.pop().ok()).collect();
        assert_eq!(
            out.iter().map(|o| o.input_seq).collect::<Vec<_>>(),
            vec![1, 2, 4, 5, 7, 8]
        );
        // journal_seq points at the record of that very order.
        let (log, rec) = {
            drop(ip);
            assert_eq!(s.do_work().unwrap(), Step::Done);
            s.finish()
        };
        for o in &out {
            let d = decode_decision(&log.records[o.journal_seq as usize - 1]).unwrap();
            assert_eq!(d.input_seq, o.input_seq);
            assert_eq!(d.order, o.order);
            assert!(d.reason.is_accepted());
            // The record keeps the time the risk check used (the batch's send time), not only
            // the time the verdict arrived.
            assert_eq!((d.t_checked_ns, d.t_decided_ns), (25, 30));
            assert_eq!(
                (d.risk_session, d.risk_batch, d.risk_batch_orders),
                (0x5e55, d.input_seq / 4, (d.input_seq % 4) as u32 + 1)
            );
        }
        let seqs: Vec<u64> = log
            .records
            .iter()
            .map(|r| decode_decision(r).unwrap().input_seq)
            .collect();
        assert_eq!(
            seqs,
            (0..10).collect::<Vec<_>>(),
            "one record each, in order"
        );
        assert_eq!(m.journal.records.load(Relaxed), 10);
        assert_eq!(m.journal.accepted(), 6);
        assert_eq!(
            m.journal.by_reason[Reason::PriceCollar.code() as usize].load(Relaxed),
            4
        );
        assert_eq!(log.batches_flushed, 1);
        let (set, _) = rec.finish();
        assert_eq!(set.total.len(), 4, "rejections recorded here");
    }

    #[test]
    fn waits_for_room_downstream() {
        let (mut ip, ic) = RingBuffer::new(32);
        let (op, mut oc) = RingBuffer::new(4);
        let m = Arc::new(Metrics::default());
        let mut s = JournalStage::new(
            MemLog::default(),
            ic,
            op,
            16,
            Clock::new(),
            Arc::clone(&m),
            Recorder::new(0, false),
        );
        for i in 0..10 {
            ip.push(decided(i, Reason::Accepted)).unwrap();
        }
        assert_eq!(s.do_work().unwrap(), Step::Worked(4));
        assert_eq!(s.do_work().unwrap(), Step::Idle);
        assert_eq!(m.journal.backpressure_waits.load(Relaxed), 1);
        assert_eq!(
            m.journal.records.load(Relaxed),
            4,
            "nothing journaled ahead of room"
        );
        oc.pop().unwrap();
        assert_eq!(s.do_work().unwrap(), Step::Worked(1));
    }

    #[test]
    fn a_journal_error_is_fatal_and_nothing_unrecorded_moves_on() {
        let (mut ip, ic) = RingBuffer::new(32);
        let (op, mut oc) = RingBuffer::new(32);
        let m = Arc::new(Metrics::default());
        let log = MemLog {
            fail_after: Some(3),
            ..MemLog::default()
        };
        let mut s = JournalStage::new(
            log,
            ic,
            op,
            16,
            Clock::new(),
            Arc::clone(&m),
            Recorder::new(0, false),
        );
        for i in 0..6 {
            ip.push(decided(i, Reason::Accepted)).unwrap();
        }
        let e = s.do_work().unwrap_err();
        assert!(e.to_string().contains("No space left"), "{e}");
        // The three recorded orders went on; the others did not.
        let out: Vec<u64> = std::iter::from_fn(|| oc.pop().ok())
            .map(|o| o.input_seq)
            .collect();
        assert_eq!(out, vec![0, 1, 2]);
        assert_eq!(m.journal.records.load(Relaxed), 3);
        let (log, _) = s.finish();
        assert_eq!(log.records.len(), 3);
    }

    /// Issue 13 item 7: the disk is the source of truth. The live feed's context is terminated
    /// mid-run (every PUB send then fails with ETERM): the records are still appended, the
    /// accepted orders still handed on, the stage returns no error, and the failures are
    /// counted.
    #[test]
    fn a_failing_live_feed_does_not_stop_order_flow() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = audit::Writer::open(
            &dir.path().join("j"),
            audit::WriterOptions {
                segment_size_bytes: 1 << 20,
                ..audit::WriterOptions::default()
            },
        )
        .unwrap();
        let ctx = zmq::Context::new();
        let endpoint = format!("ipc://{}", dir.path().join("feed.ipc").display());
        let publisher = audit::Publisher::bind(&ctx, &endpoint, None).unwrap();
        let log = AuditLog::new(writer, Some(publisher));
        let (mut ip, ic) = RingBuffer::new(64);
        let (op, mut oc) = RingBuffer::new(64);
        let m = Arc::new(Metrics::default());
        let mut s = JournalStage::new(
            log,
            ic,
            op,
            16,
            Clock::new(),
            Arc::clone(&m),
            Recorder::new(0, false),
        );
        for i in 0..8 {
            ip.push(decided(i, reason_of(i))).unwrap();
        }
        assert_eq!(s.do_work().unwrap(), Step::Worked(8), "live feed up");
        assert_eq!(m.journal.publish_failures.load(Relaxed), 0);
        // zmq_ctx_term blocks until the publisher's socket closes; meanwhile every operation
        // on it fails with ETERM.
        let mut term = ctx.clone();
        let terminator = std::thread::spawn(move || term.destroy());
        std::thread::sleep(std::time::Duration::from_millis(100));
        for i in 8..20 {
            ip.push(decided(i, reason_of(i))).unwrap();
        }
        assert_eq!(s.do_work().unwrap(), Step::Worked(12), "order flow goes on");
        assert!(m.journal.publish_failures.load(Relaxed) > 0, "counted");
        let mut handed = 0;
        while let Ok(o) = oc.pop() {
            assert!(o.journal_seq > 0);
            handed += 1;
        }
        assert_eq!(
            handed,
            (0..20).filter(|&i| reason_of(i).is_accepted()).count()
        );
        drop(ip);
        assert_eq!(s.do_work().unwrap(), Step::Done);
        let (log, _) = s.finish();
        assert_eq!(log.writer.next_seq(), 21, "every record appended");
        drop(log); // closes the publisher's socket: the context can end
        terminator.join().unwrap().unwrap();
    }

    /// Issue 13 item 8: no accepted order is dropped in silence. A full egress ring where room
    /// was reserved is an invariant violation: an error that stops the engine, with the orders
    /// kept (they are journaled; the next start re-sends them).
    #[test]
    fn no_room_for_accepted_orders_is_an_invariant_error_not_a_drop() {
        let (mut op, _oc) = RingBuffer::<Outbound>::new(2);
        op.push(Outbound::default()).unwrap();
        op.push(Outbound::default()).unwrap();
        let mut accepted = vec![
            Outbound {
                input_seq: 7,
                ..Outbound::default()
            };
            3
        ];
        let e = hand_on(&mut op, &mut accepted).unwrap_err();
        assert!(matches!(e, StageError::Invariant(_)), "{e}");
        assert!(e.to_string().contains("input_seq 7"), "{e}");
        assert_eq!(accepted.len(), 3, "nothing dropped");
    }

    /// A decision log over a real journal that, at each end of batch, notes what egress had
    /// been handed so far, then commits, then notes the writer's msync count and what is left
    /// unsynced.
    struct CommitProbe {
        inner: AuditLog,
        egress: Arc<std::sync::Mutex<rtrb::Consumer<Outbound>>>,
        /// Per end of batch: (orders on the egress ring before the commit, msyncs after it,
        /// bytes unsynced after it).
        seen: Vec<(usize, u64, u64)>,
    }

    impl DecisionLog for CommitProbe {
        fn append(&mut self, ts_ns: u64, payload: &[u8]) -> Result<u64, StageError> {
            self.inner.append(ts_ns, payload)
        }
        fn end_batch(&mut self) -> Result<(), StageError> {
            let handed = self.egress.lock().unwrap().slots();
            self.inner.end_batch()?;
            let w = &self.inner.writer;
            self.seen
                .push((handed, w.msync_count(), w.unsynced_bytes()));
            Ok(())
        }
        fn maintain(&mut self, now_ns: u64) -> Result<(), StageError> {
            self.inner.maintain(now_ns)
        }
    }

    /// Issue 13 item 6: under `--durability batch` the journal stage msyncs exactly once per
    /// batch, after the batch's last append and before any of its orders reaches egress; the
    /// orders are handed on after it, and nothing is left unsynced.
    #[test]
    fn batch_durability_msyncs_once_per_batch_before_hand_on() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, _) = audit::Writer::open(
            &dir.path().join("j"),
            audit::WriterOptions {
                segment_size_bytes: 1 << 20,
                durability: audit::Durability::Batch,
                checkpoint: None,
            },
        )
        .unwrap();
        let (mut ip, ic) = RingBuffer::new(64);
        let (op, oc) = RingBuffer::new(64);
        let egress = Arc::new(std::sync::Mutex::new(oc));
        let log = CommitProbe {
            inner: AuditLog::new(writer, None),
            egress: Arc::clone(&egress),
            seen: Vec::new(),
        };
        let mut s = JournalStage::new(
            log,
            ic,
            op,
            8,
            Clock::new(),
            Arc::new(Metrics::default()),
            Recorder::new(0, false),
        );
        let mut handed_total = 0;
        for batch in 0..4u64 {
            for i in batch * 8..batch * 8 + 8 {
                ip.push(decided(i, reason_of(i))).unwrap();
            }
            assert_eq!(s.do_work().unwrap(), Step::Worked(8));
            let mut egress = egress.lock().unwrap();
            let accepted = (batch * 8..batch * 8 + 8)
                .filter(|&i| reason_of(i).is_accepted())
                .count();
            assert_eq!(egress.slots(), accepted, "handed on after the commit");
            while egress.pop().is_ok() {
                handed_total += 1;
            }
        }
        let (log, _) = {
            drop(ip);
            assert_eq!(s.do_work().unwrap(), Step::Done);
            s.finish()
        };
        assert_eq!(
            handed_total,
            (0..32).filter(|&i| reason_of(i).is_accepted()).count()
        );
        assert_eq!(log.seen.len(), 4);
        for (k, &(handed, msyncs, unsynced)) in log.seen.iter().enumerate() {
            assert_eq!(handed, 0, "batch {k}: egress saw orders before the msync");
            assert_eq!(msyncs, k as u64 + 1, "batch {k}: one msync per batch");
            assert_eq!(unsynced, 0, "batch {k}: records left unsynced");
        }
    }

    /// A log whose commit fails: the batch's records may not be durable, so none of its
    /// orders is handed on, and the stage stops with the error.
    #[test]
    fn a_failed_commit_hands_nothing_on() {
        struct FailingCommit(MemLog);
        impl DecisionLog for FailingCommit {
            fn append(&mut self, ts: u64, payload: &[u8]) -> Result<u64, StageError> {
                self.0.append(ts, payload)
            }
            fn end_batch(&mut self) -> Result<(), StageError> {
                Err(StageError::Journal {
                    input_seq: 0,
                    message: "msync: Input/output error".into(),
                })
            }
            fn maintain(&mut self, _now: u64) -> Result<(), StageError> {
                Ok(())
            }
        }
        let (mut ip, ic) = RingBuffer::new(16);
        let (op, mut oc) = RingBuffer::new(16);
        let mut s = JournalStage::new(
            FailingCommit(MemLog::default()),
            ic,
            op,
            16,
            Clock::new(),
            Arc::new(Metrics::default()),
            Recorder::new(0, false),
        );
        for i in 0..4 {
            ip.push(decided(i, Reason::Accepted)).unwrap();
        }
        let e = s.do_work().unwrap_err();
        assert!(e.to_string().contains("msync"), "{e}");
        assert!(
            oc.pop().is_err(),
            "an order left before its batch was durable"
        );
    }

    /// One decision per order, in order: a gap in input_seq stops the stage with an
    /// invariant error after journaling what came before it.
    #[test]
    fn a_gap_in_input_seq_is_an_invariant_error() {
        let (mut ip, ic) = RingBuffer::new(16);
        let (op, _oc) = RingBuffer::new(16);
        let mut s = JournalStage::new(
            MemLog::default(),
            ic,
            op,
            16,
            Clock::new(),
            Arc::new(Metrics::default()),
            Recorder::new(0, false),
        );
        ip.push(decided(0, Reason::Accepted)).unwrap();
        ip.push(decided(1, Reason::Accepted)).unwrap();
        ip.push(decided(3, Reason::Accepted)).unwrap();
        let e = s.do_work().unwrap_err();
        assert!(e.to_string().contains("input_seq 3 where 2 was due"), "{e}");
        let (log, _) = s.finish();
        assert_eq!(log.records.len(), 2, "the two before the gap are journaled");
    }
}
