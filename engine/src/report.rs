//! The run report: a table for people, JSON for scripts, and the HdrHistogram percentile file.
//!
//! JSON keys (stable; scripts and `docs/results.md` rely on them): `orders`, `accepted`,
//! `rejected`, `rejected_by_reason`, `elapsed_s`, `throughput_per_s`, `latency_us`
//! {`p50`,`p90`,`p99`,`p999`,`p9999`,`max`,`mean`} (all orders after warm-up, from
//! scheduled arrival to done), `latency_accepted_us`, `latency_rejected_us`, `stages_us`
//! {`ingress_wait`,`risk`,`journal_egress`}, `risk` {…}, `backpressure_waits` {…},
//! `egress` {…}, `journal` {`dir`,`records`,`head_hash`,`first_seq`,`last_seq`, …}, and the
//! settings the run used.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::latency::{LatencySet, Quantiles};
use crate::topology::PerStage;

/// Per-stage latency breakdown, µs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct StageBreakdown {
    /// `t_sched → t_in`: waiting to enter (schedule slip, full ring).
    pub ingress_wait: Quantiles,
    /// `t_in → t_decided`: ring A + risk round trip.
    pub risk: Quantiles,
    /// `t_decided → done`: ring B + journal append + ring C + egress send.
    pub journal_egress: Quantiles,
    /// `t_sent → t_decided`: the risk round trip of the order's batch.
    pub risk_round_trip: Quantiles,
    /// Total minus the risk round trip: the engine's own share.
    pub engine: Quantiles,
}

/// The risk stage's figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RiskReport {
    /// `embedded` or the endpoints.
    pub target: String,
    /// Configured timeout.
    pub timeout_ms: u64,
    /// `binary` (one request per batch) or `json` (the source design's: one request per
    /// order).
    pub protocol: String,
    /// What a request carries: `batch` or `one order (one round trip per order)`.
    pub round_trips: String,
    /// Requests sent.
    pub batches: u64,
    /// Mean orders per request.
    pub mean_batch: f64,
    /// Batches rejected `risk-timeout`.
    pub timeouts: u64,
    /// Batches rejected `risk-error`.
    pub failed_batches: u64,
    /// Moves to the next endpoint.
    pub failovers: u64,
    /// Longest single round trip (µs): never more than the timeout plus scheduling noise.
    pub wait_max_us: f64,
}

/// Back-pressure waits per stage (rounds a stage found its output full / not writable).
#[derive(Debug, Clone, Serialize, Default)]
pub struct Backpressure {
    /// Ingress: risk ring full.
    pub ingress: u64,
    /// Risk: journal ring full.
    pub risk: u64,
    /// Journal: egress ring full.
    pub journal: u64,
    /// Egress: downstream not writable.
    pub egress: u64,
}

/// Egress figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct EgressReport {
    /// `none` or the endpoint.
    pub target: String,
    /// Frames sent.
    pub frames: u64,
    /// Accepted orders sent.
    pub orders: u64,
}

/// Journal figures.
#[derive(Debug, Clone, Serialize, Default)]
pub struct JournalReport {
    /// Directory.
    pub dir: String,
    /// Records in the journal after the run (all runs).
    pub records: u64,
    /// Hash of the last record (hex), all zero for an empty journal.
    pub head_hash: String,
    /// Sequence number of this run's first record (0 if none).
    pub first_seq: u64,
    /// Sequence number of the last record (0 if none).
    pub last_seq: u64,
    /// Torn-tail bytes cut off when the journal was opened.
    pub recovered_truncated_bytes: u64,
    /// Durability policy.
    pub durability: String,
    /// Risk-state snapshot files written by this run.
    pub snapshots: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    /// `replay` or `run`.
    pub command: String,
    /// The order file (replay) or ingress endpoint (run).
    pub input: String,
    /// Schedule (`rate max`, `rate 100000/s`, `pace recorded:10`) or `live`.
    pub schedule: String,
    /// First input_seq of this run (resume point).
    pub start_index: u64,
    /// Whether the run continued an existing journal.
    pub resumed: bool,
    /// Orders decided in this run.
    pub orders: u64,
    /// Accepted.
    pub accepted: u64,
    /// Rejected.
    pub rejected: u64,
    /// Rejections by reason name.
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// Orders excluded from the histograms as warm-up.
    pub warmup: u64,
    /// Orders in the latency histograms.
    pub recorded: u64,
    /// First scheduled arrival → last completion, seconds.
    pub elapsed_s: f64,
    /// `orders / elapsed_s`.
    pub throughput_per_s: f64,
    /// All recorded orders, µs.
    pub latency_us: Quantiles,
    /// Accepted orders only, µs.
    pub latency_accepted_us: Quantiles,
    /// Rejected orders only, µs.
    pub latency_rejected_us: Quantiles,
    /// Per-stage breakdown of all recorded orders, µs.
    pub stages_us: StageBreakdown,
    /// Risk stage.
    pub risk: RiskReport,
    /// Back-pressure waits.
    pub backpressure_waits: Backpressure,
    /// Egress.
    pub egress: EgressReport,
    /// Journal.
    pub journal: JournalReport,
    /// Ingress messages refused (service) / file lines skipped under `--max-errors` (replay).
    pub bad_input: u64,
    /// Orders per unit of work bound.
    pub max_batch: usize,
    /// Ring slots.
    pub ring_capacity: usize,
    /// Idle strategy per stage.
    pub idle: PerStage<String>,
    /// Core per stage.
    pub cores: PerStage<Option<usize>>,
    /// The threading mode and the thread → stages → core map (absent for `bench baseline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threading: Option<crate::threading::Threading>,
    /// Stage failures.
    pub errors: Vec<String>,
}

impl Report {
    /// Fills the latency fields from the two recording stages' histograms.
    pub fn set_latency(&mut self, accepted: &LatencySet, rejected: &LatencySet) {
        let mut all = accepted.clone();
        all.merge(rejected);
        self.recorded = all.total.len();
        self.latency_us = Quantiles::of(&all.total);
        self.latency_accepted_us = Quantiles::of(&accepted.total);
        self.latency_rejected_us = Quantiles::of(&rejected.total);
        self.stages_us = StageBreakdown {
            ingress_wait: Quantiles::of(&all.ingress_wait),
            risk: Quantiles::of(&all.risk),
            journal_egress: Quantiles::of(&all.journal_egress),
            risk_round_trip: Quantiles::of(&all.risk_round_trip),
            engine: Quantiles::of(&all.engine),
        };
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        // `bench baseline` (the source design) prints its report with this table too.
        let program = if self.command == "baseline" {
            "bench"
        } else {
            "engine"
        };
        let _ = writeln!(
            s,
            "{program} {}: {} ({}, from input_seq {}{})",
            self.command,
            self.input,
            self.schedule,
            self.start_index,
            if self.resumed { ", resumed" } else { "" }
        );
        if let Some(t) = &self.threading {
            let _ = writeln!(s, "  {t}");
        }
        let _ = writeln!(s, "  orders        {:>12}", self.orders);
        let _ = writeln!(s, "  accepted      {:>12}", self.accepted);
        let _ = writeln!(s, "  rejected      {:>12}", self.rejected);
        for (reason, n) in &self.rejected_by_reason {
            let _ = writeln!(s, "    {reason:<20} {n:>8}");
        }
        let _ = writeln!(s, "  elapsed       {:>12.3} s", self.elapsed_s);
        let _ = writeln!(
            s,
            "  throughput    {:>12.0} orders/s",
            self.throughput_per_s
        );
        let _ = writeln!(
            s,
            "  latency (µs, scheduled arrival → journaled reject / pushed accept; {} recorded, {} warm-up)",
            self.recorded, self.warmup
        );
        let _ = writeln!(
            s,
            "    {:<16}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
        );
        let row = |s: &mut String, name: &str, q: &Quantiles| {
            let _ = writeln!(
                s,
                "    {:<16}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
                name, q.p50, q.p90, q.p99, q.p999, q.p9999, q.max, q.mean
            );
        };
        if self.schedule == "rate max" {
            let _ = writeln!(
                s,
                "    (--rate max: every order is due at the start, so these figures are the queue \
                 behind the orders before it, not latency; a fixed --rate measures latency)"
            );
        }
        row(&mut s, "all", &self.latency_us);
        row(&mut s, "accepted", &self.latency_accepted_us);
        row(&mut s, "rejected", &self.latency_rejected_us);
        let _ = writeln!(s, "  per stage (µs)");
        row(&mut s, "ingress wait", &self.stages_us.ingress_wait);
        row(&mut s, "risk", &self.stages_us.risk);
        row(&mut s, "journal+egress", &self.stages_us.journal_egress);
        row(&mut s, "risk round trip", &self.stages_us.risk_round_trip);
        row(&mut s, "engine (no rtt)", &self.stages_us.engine);
        let r = &self.risk;
        let _ = writeln!(
            s,
            "  risk          {} — {} batches (mean {:.1} orders), {} timeouts, {} failed, {} failovers, longest wait {:.1} µs (timeout {} ms)",
            r.target, r.batches, r.mean_batch, r.timeouts, r.failed_batches, r.failovers, r.wait_max_us, r.timeout_ms
        );
        if r.protocol == "json" {
            let _ = writeln!(
                s,
                "  risk protocol json: {} (the source design's; throughput capped at 1/RTT)",
                r.round_trips
            );
        }
        let b = &self.backpressure_waits;
        let _ = writeln!(
            s,
            "  back-pressure waits: ingress {}, risk {}, journal {}, egress {}",
            b.ingress, b.risk, b.journal, b.egress
        );
        let _ = writeln!(
            s,
            "  egress        {} — {} orders in {} frames",
            self.egress.target, self.egress.orders, self.egress.frames
        );
        let j = &self.journal;
        let this_run = if j.first_seq == 0 || j.first_seq > j.last_seq {
            "none this run".to_owned()
        } else {
            format!("this run {}..={}", j.first_seq, j.last_seq)
        };
        let _ = writeln!(
            s,
            "  journal       {} — {} records ({this_run}), durability {}, head {}",
            j.dir, j.records, j.durability, j.head_hash
        );
        if self.bad_input > 0 {
            let _ = writeln!(s, "  bad input     {} skipped", self.bad_input);
        }
        if !self.errors.is_empty() {
            // The text goes to stderr once, as `error: …` (the final error print, and into the
            // JSON report): printed in the table as well, every error showed twice wherever
            // stdout and stderr meet (a terminal, journald).
            let _ = writeln!(
                s,
                "  errors        {} (on stderr: error: …)",
                self.errors.len()
            );
        }
        s
    }
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Issue 16 item 7: an empty run says so instead of `this run 0..=N`; a --rate max run says
    /// that its latency figures are queueing.
    #[test]
    fn an_empty_run_and_a_max_rate_run_say_what_they_are() {
        let mut r = Report {
            schedule: "rate max".into(),
            ..Report::default()
        };
        r.journal.first_seq = 0;
        r.journal.last_seq = 1_000_000;
        r.journal.records = 1_000_000;
        let t = r.table();
        assert!(t.contains("(none this run)"), "{t}");
        assert!(!t.contains("0..=1000000"), "{t}");
        assert!(t.contains("not latency"), "{t}");
        r.journal.first_seq = 999_001;
        r.schedule = "rate 1000/s".into();
        let t = r.table();
        assert!(t.contains("this run 999001..=1000000"), "{t}");
        assert!(!t.contains("not latency"), "{t}");
    }

    /// Issue 13 item 17: a full disk's error reached the user twice (in the table and on
    /// stderr), each time with "No space left on device" twice (the journal error's message
    /// holds its source, and the chain appended it again).
    #[test]
    fn a_stage_error_is_shown_once() {
        let full = audit::JournalError::Full {
            path: "j/spare.seg.tmp".into(),
            bytes: 1 << 20,
            source: std::io::Error::from_raw_os_error(28),
        };
        let text = crate::stages::journal::chain(&full);
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
        let r = Report {
            errors: vec![format!("journal stage: {text}")],
            ..Report::default()
        };
        let table = r.table();
        assert!(!table.contains("No space"), "{table}");
        assert!(
            table.contains("errors        1 (on stderr: error: …)"),
            "{table}"
        );
    }

    #[test]
    fn json_has_the_required_keys() {
        let mut r = Report {
            orders: 3,
            accepted: 2,
            rejected: 1,
            ..Report::default()
        };
        let mut a = LatencySet::new();
        a.record_split(0, 1_000, 1_500, 2_000, 5_000);
        r.set_latency(&a, &LatencySet::new());
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        for k in [
            "orders",
            "accepted",
            "rejected",
            "elapsed_s",
            "throughput_per_s",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        for k in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
            assert!(v["latency_us"].get(k).is_some(), "latency_us.{k}");
        }
        assert!(v["journal"].get("records").is_some());
        assert!(v["journal"].get("head_hash").is_some());
        assert!((v["latency_us"]["max"].as_f64().unwrap() - 5.0).abs() < 0.01);
        assert!((v["stages_us"]["ingress_wait"]["max"].as_f64().unwrap() - 1.0).abs() < 0.01);
        let rtt = v["stages_us"]["risk_round_trip"]["max"].as_f64().unwrap();
        assert!((rtt - 0.5).abs() < 0.01, "{rtt}");
        let engine = v["stages_us"]["engine"]["max"].as_f64().unwrap();
        assert!((engine - 4.5).abs() < 0.01, "{engine}");
        assert_eq!(r.recorded, 1);
        let t = r.table();
        assert!(t.contains("p99.99") && t.contains("journal+egress"), "{t}");
        assert!(t.starts_with("engine "), "{t}");
        r.command = "baseline".into();
        assert!(r.table().starts_with("bench baseline: "), "{}", r.table());
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
    }
}
