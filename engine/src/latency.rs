//! Latency recording: one set of histograms per recording stage, merged at the end.
//!
//! An order's latency runs from its **scheduled** arrival (`t_sched`) to the moment the
//! engine is done with it: for an accepted order, when egress hands its frame to ZeroMQ; for
//! a rejected one, when the journal has appended its record. The journal stage owns the
//! recorder for rejections, the egress stage the one for acceptances; neither shares it, so
//! recording is a plain, lock-free histogram increment. The breakdown splits the same span:
//!
//! ```text
//!  t_sched ── ingress wait ──► t_in ── risk ─────────────────────────► t_decided ── journal + egress ──► t_end
//!                                      └ ring A ► t_sent ─ round trip ┘
//!  engine = (t_end − t_sched) − round trip: the engine's own share of the latency
//! ```
//! Histograms are allocated at start-up with a fixed range ([`LATENCY_MAX_NS`]) so recording
//! never allocates; longer values saturate at the top of the range.

use std::io::{self, Write};
use std::sync::atomic::Ordering::Relaxed;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::limits::{LATENCY_MAX_NS, LATENCY_SIGFIGS, METRICS_PUBLISH_INTERVAL_NS};
use crate::metrics::LatencyGauges;

/// The histograms of one recording stage.
#[derive(Debug, Clone)]
pub struct LatencySet {
    /// `t_sched → t_end`.
    pub total: Histogram<u64>,
    /// `t_sched → t_in`.
    pub ingress_wait: Histogram<u64>,
    /// `t_in → t_decided`.
    pub risk: Histogram<u64>,
    /// `t_decided → t_end`.
    pub journal_egress: Histogram<u64>,
    /// `t_sent → t_decided`: the risk round trip of the order's batch.
    pub risk_round_trip: Histogram<u64>,
    /// `(t_end − t_sched) − (t_decided − t_sent)`: everything but the risk round trip.
    pub engine: Histogram<u64>,
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (1 ≤ low, high ≥ 2 × low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, LATENCY_MAX_NS, LATENCY_SIGFIGS)
        .unwrap_or_else(|e| panic!("latency histogram bounds are constants: {e}"))
}

impl Default for LatencySet {
    fn default() -> Self {
        LatencySet::new()
    }
}

impl LatencySet {
    /// Empty histograms.
    pub fn new() -> LatencySet {
        LatencySet {
            total: new_histogram(),
            ingress_wait: new_histogram(),
            risk: new_histogram(),
            journal_egress: new_histogram(),
            risk_round_trip: new_histogram(),
            engine: new_histogram(),
        }
    }

    /// Records one order whose risk request left at `t_in` (no queue before the round trip,
    /// as in a one-request-per-order client); times in ns on the engine's clock.
    #[inline]
    pub fn record(&mut self, t_sched: u64, t_in: u64, t_decided: u64, t_end: u64) {
        self.record_split(t_sched, t_in, t_in, t_decided, t_end);
    }

    /// Records one order, with `t_sent` the moment its risk batch was sent.
    #[inline]
    pub fn record_split(
        &mut self,
        t_sched: u64,
        t_in: u64,
        t_sent: u64,
        t_decided: u64,
        t_end: u64,
    ) {
        let values = split(t_sched, t_in, t_sent, t_decided, t_end);
        for (h, v) in self.histograms_mut().into_iter().zip(values) {
            h.saturating_record(v);
        }
    }

    /// The histograms in the order [`split`] gives their values.
    fn histograms_mut(&mut self) -> [&mut Histogram<u64>; SPLITS] {
        [
            &mut self.total,
            &mut self.ingress_wait,
            &mut self.risk,
            &mut self.journal_egress,
            &mut self.risk_round_trip,
            &mut self.engine,
        ]
    }

    /// Adds another set (same bounds, so it never fails).
    pub fn merge(&mut self, other: &LatencySet) {
        for (a, b) in [
            (&mut self.total, &other.total),
            (&mut self.ingress_wait, &other.ingress_wait),
            (&mut self.risk, &other.risk),
            (&mut self.journal_egress, &other.journal_egress),
            (&mut self.risk_round_trip, &other.risk_round_trip),
            (&mut self.engine, &other.engine),
        ] {
            // Same bounds on both sides: addition cannot fail.
            let _ = a.add(b);
        }
    }
}

/// Histograms of a [`LatencySet`].
const SPLITS: usize = 6;

/// One order's values for each histogram of a [`LatencySet`]: total, ingress wait, risk,
/// journal + egress, risk round trip, engine.
#[inline]
fn split(t_sched: u64, t_in: u64, t_sent: u64, t_decided: u64, t_end: u64) -> [u64; SPLITS] {
    let total = t_end.saturating_sub(t_sched);
    let round_trip = t_decided.saturating_sub(t_sent);
    [
        total,
        t_in.saturating_sub(t_sched),
        t_decided.saturating_sub(t_in),
        t_end.saturating_sub(t_decided),
        round_trip,
        total.saturating_sub(round_trip),
    ]
}

/// A recording stage's recorder: its histograms, the warm-up cut and the metrics gauges.
///
/// The orders of one batch share most of their times (taken in, sent, decided, often done),
/// so half of an order's values repeat the previous order's: each histogram's latest value is
/// held with a count, and recorded once with that count when another value comes (or before
/// the histograms are read). The histograms are the same as with one record per order; six
/// records per order were 7 % of the shared stage thread at `--rate max` (issue 12).
#[derive(Debug)]
pub struct Recorder {
    set: LatencySet,
    /// Each histogram's latest value and how many orders had it in a row, not yet recorded.
    runs: [(u64, u64); SPLITS],
    /// Orders with `input_seq` below this are warm-up and not recorded.
    warmup_until_seq: u64,
    /// First completion and last completion seen (for the elapsed time), ns.
    first_end_ns: u64,
    last_end_ns: u64,
    publish_every_ns: Option<u64>,
    next_publish_ns: u64,
}

impl Recorder {
    /// A recorder that skips `input_seq < warmup_until_seq` and, when `publish` is set,
    /// publishes quantiles into gauges every [`METRICS_PUBLISH_INTERVAL_NS`].
    pub fn new(warmup_until_seq: u64, publish: bool) -> Recorder {
        Recorder {
            set: LatencySet::new(),
            warmup_until_seq,
            first_end_ns: u64::MAX,
            last_end_ns: 0,
            publish_every_ns: publish.then_some(METRICS_PUBLISH_INTERVAL_NS),
            next_publish_ns: 0,
            runs: [(0, 0); SPLITS],
        }
    }

    /// Records the runs held back ([`Recorder`]).
    fn flush(&mut self) {
        for (h, run) in self.set.histograms_mut().into_iter().zip(&mut self.runs) {
            if run.1 > 0 {
                h.saturating_record_n(run.0, run.1);
                run.1 = 0;
            }
        }
    }

    /// Records one order unless it is warm-up.
    #[inline]
    pub fn record(
        &mut self,
        input_seq: u64,
        t_sched: u64,
        t_in: u64,
        t_sent: u64,
        t_decided: u64,
        t_end: u64,
    ) {
        if t_end > self.last_end_ns {
            self.last_end_ns = t_end;
        }
        if t_end < self.first_end_ns {
            self.first_end_ns = t_end;
        }
        if input_seq >= self.warmup_until_seq {
            let values = split(t_sched, t_in, t_sent, t_decided, t_end);
            let hs = self.set.histograms_mut();
            for ((h, run), v) in hs.into_iter().zip(&mut self.runs).zip(values) {
                if run.0 == v {
                    run.1 += 1;
                } else {
                    if run.1 > 0 {
                        h.saturating_record_n(run.0, run.1);
                    }
                    *run = (v, 1);
                }
            }
        }
    }

    /// Publishes quantiles into `gauges` when the interval has passed (call once per batch).
    /// Computing quantiles walks the histogram (tens of µs), hence the interval.
    #[inline]
    pub fn maybe_publish(&mut self, now_ns: u64, gauges: &LatencyGauges) {
        let Some(every) = self.publish_every_ns else {
            return;
        };
        if now_ns < self.next_publish_ns {
            return;
        }
        self.next_publish_ns = now_ns.saturating_add(every);
        self.flush();
        let h = &self.set.total;
        gauges.p50_ns.store(h.value_at_quantile(0.5), Relaxed);
        gauges.p90_ns.store(h.value_at_quantile(0.9), Relaxed);
        gauges.p99_ns.store(h.value_at_quantile(0.99), Relaxed);
        gauges.p999_ns.store(h.value_at_quantile(0.999), Relaxed);
        gauges.max_ns.store(h.max(), Relaxed);
        gauges.count.store(h.len(), Relaxed);
    }

    /// The histograms and the completion window `(first_end_ns, last_end_ns)`, if any order
    /// completed.
    pub fn finish(mut self) -> (LatencySet, Option<(u64, u64)>) {
        self.flush();
        let window = (self.last_end_ns != 0).then_some((self.first_end_ns, self.last_end_ns));
        (self.set, window)
    }
}

/// Quantiles of one histogram in microseconds, as in the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// 99.99th percentile.
    pub p9999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Quantiles {
    /// Reads the quantiles of `h` (ns) in µs; all zero for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        if h.is_empty() {
            return Quantiles::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Quantiles {
            p50: us(h.value_at_quantile(0.5)),
            p90: us(h.value_at_quantile(0.9)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            p9999: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
            mean: h.mean() / 1e3,
        }
    }
}

/// Writes the percentile distribution of `h` (recorded in ns) in the standard HdrHistogram
/// text format (`outputPercentileDistribution`, 5 ticks per half distance), values in µs.
/// The output loads in the HdrHistogram plotter.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    const SCALE: f64 = 1e3; // ns → µs
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    if !h.is_empty() {
        let mut total: u64 = 0;
        for v in h.iter_quantiles(5) {
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            total += v.count_since_last_iteration();
            if q < 1.0 {
                writeln!(
                    out,
                    "{:12.3} {:2.12} {:10} {:14.2}",
                    value,
                    q,
                    total,
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{:12.3} {:2.12} {:10}", value, q, total)?;
            }
        }
    }
    let mean = if h.is_empty() { 0.0 } else { h.mean() / SCALE };
    let stdev = if h.is_empty() { 0.0 } else { h.stdev() / SCALE };
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        mean, stdev
    )?;
    writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / SCALE,
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    )?;
    Ok(())
}

/// Writes `h` (recorded in ns) in HdrHistogram's own binary format: the V2 encoding, DEFLATE
/// compressed (`V2DeflateSerializer`, cookie `0x1c849314`), readable by every HdrHistogram
/// implementation (Java's `Histogram.decodeFromCompressedByteBuffer`, HdrHistogram_c, the
/// `hdrhistogram` crate's `Deserializer`). Values stay in ns; `bench plot` reads these files.
pub fn write_hdr(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    use hdrhistogram::serialization::{Serializer as _, V2DeflateSerializer};
    V2DeflateSerializer::new()
        .serialize(h, out)
        .map(|_| ())
        .map_err(|e| io::Error::other(format!("serializing the histogram: {e:?}")))
}

/// The `.hdr` file written beside a `.hgrm` one: the same path with the extension `hdr`
/// (`report.hgrm` → `report.hdr`).
pub fn hdr_path_beside(hgrm: &std::path::Path) -> std::path::PathBuf {
    hgrm.with_extension("hdr")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hdr_round_trips_through_the_crates_deserializer() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for v in [1_000u64, 2_000, 2_000, 50_000, 7_000_000] {
            h.record(v).unwrap();
        }
        let mut bytes = Vec::new();
        write_hdr(&h, &mut bytes).unwrap();
        // The V2 compressed cookie, big-endian, opens the file.
        assert_eq!(&bytes[..4], &0x1c84_9314u32.to_be_bytes());
        let back: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(back, h);
        assert_eq!(
            hdr_path_beside(std::path::Path::new("r/x.hgrm")),
            std::path::PathBuf::from("r/x.hdr")
        );
    }

    /// Held-back runs of equal values give the histograms one record per order gives:
    /// batches that share their times, orders that do not, a value of 0, and reads of the
    /// histograms (publishing) in the middle of a run.
    #[test]
    fn runs_of_equal_values_record_as_single_orders_do() {
        let gauges = LatencyGauges::default();
        let mut r = Recorder::new(3, true);
        let mut each = LatencySet::new();
        let mut x = 12345u64;
        let mut seq = 0;
        for batch in 0..400u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = 1 + (x >> 60);
            let (t_in, t_sent) = (batch * 1_000, batch * 1_000 + (x >> 62));
            let t_decided = t_sent + 300 + (x >> 55) % 3;
            for i in 0..size {
                let t_sched = t_in.saturating_sub(i * 7 % 5);
                let t_end = if batch % 3 == 0 {
                    t_decided
                } else {
                    t_decided + 50 + i
                };
                r.record(seq, t_sched, t_in, t_sent, t_decided, t_end);
                if seq >= 3 {
                    each.record_split(t_sched, t_in, t_sent, t_decided, t_end);
                }
                seq += 1;
            }
            if batch % 97 == 0 {
                r.maybe_publish(batch * 1_000_000_000, &gauges);
            }
        }
        let (set, _) = r.finish();
        let recorded = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        };
        let (mut a, mut b) = (set, each);
        for (x, y) in a.histograms_mut().into_iter().zip(b.histograms_mut()) {
            assert_eq!(x.len(), y.len());
            assert_eq!(recorded(x), recorded(y));
        }
        assert!(a.total.len() > 1_000);
    }

    #[test]
    fn records_breakdown_and_skips_warmup() {
        let mut r = Recorder::new(2, false);
        // seq 0 and 1 are warm-up.
        r.record(0, 0, 10, 15, 20, 30);
        r.record(1, 0, 10, 15, 20, 30);
        r.record(2, 1_000, 1_100, 1_200, 1_600, 2_000);
        let (set, window) = r.finish();
        assert_eq!(set.total.len(), 1);
        assert_eq!(set.total.max(), set.total.highest_equivalent(1_000));
        assert_eq!(set.ingress_wait.max(), 100);
        assert_eq!(set.risk.max(), set.risk.highest_equivalent(500));
        assert_eq!(
            set.journal_egress.max(),
            set.journal_egress.highest_equivalent(400)
        );
        assert_eq!(
            set.risk_round_trip.max(),
            set.risk_round_trip.highest_equivalent(400)
        );
        assert_eq!(
            set.engine.max(),
            set.engine.highest_equivalent(600),
            "1000 − 400"
        );
        assert_eq!(
            window,
            Some((30, 2_000)),
            "warm-up still counts for elapsed time"
        );
    }

    #[test]
    fn saturates_instead_of_failing() {
        let mut s = LatencySet::new();
        s.record(0, 0, 0, u64::MAX);
        assert_eq!(s.total.len(), 1);
        // Clock skew between stages never panics or underflows.
        s.record_split(100, 50, 45, 40, 30);
        assert_eq!(s.total.len(), 2);
    }

    #[test]
    fn merge_and_quantiles() {
        let mut a = LatencySet::new();
        let mut b = LatencySet::new();
        for v in 1..=1000u64 {
            a.record(0, 0, 0, v * 1_000);
            b.record(0, 0, 0, v * 1_000);
        }
        a.merge(&b);
        assert_eq!(a.total.len(), 2000);
        let q = Quantiles::of(&a.total);
        assert!((q.p50 - 500.0).abs() < 1.0, "{q:?}");
        assert!((q.max - 1000.0).abs() < 1.0, "{q:?}");
        assert!(q.p99 <= q.p999 && q.p999 <= q.p9999 && q.p9999 <= q.max);
        assert_eq!(
            Quantiles::of(&LatencySet::new().total),
            Quantiles::default()
        );
    }

    #[test]
    fn publishes_on_interval() {
        let g = LatencyGauges::default();
        let mut r = Recorder::new(0, true);
        r.record(0, 0, 0, 0, 0, 5_000);
        r.maybe_publish(10, &g);
        assert_eq!(g.count.load(Relaxed), 1);
        r.record(1, 0, 0, 0, 0, 9_000);
        r.maybe_publish(20, &g); // within the interval: not yet
        assert_eq!(g.count.load(Relaxed), 1);
        r.maybe_publish(10 + METRICS_PUBLISH_INTERVAL_NS, &g);
        assert_eq!(g.count.load(Relaxed), 2);
        let mut quiet = Recorder::new(0, false);
        quiet.record(0, 0, 0, 0, 0, 1);
        quiet.maybe_publish(u64::MAX, &g);
        assert_eq!(g.count.load(Relaxed), 2);
    }

    #[test]
    fn hgrm_has_the_standard_shape() {
        let mut s = LatencySet::new();
        for v in 1..=10_000u64 {
            s.record(0, 0, 0, v * 100);
        }
        let mut out = Vec::new();
        write_hgrm(&s.total, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(header.contains("Value") && header.contains("1/(1-Percentile)"));
        assert!(text.contains("#[Mean    ="));
        assert!(text.contains("Total count    =        10000]"));
        // Data lines: value, percentile, cumulative count; percentiles non-decreasing, last = 1.
        let rows: Vec<Vec<f64>> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains("Value"))
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        assert!(rows.len() > 10);
        assert!(rows.windows(2).all(|w| w[0][1] <= w[1][1]));
        let last = rows.last().unwrap();
        assert_eq!(last[1], 1.0);
        assert_eq!(last[2], 10_000.0);
        assert!((last[0] - 1000.0).abs() < 1.0);
        // Empty histograms still produce a valid file.
        let mut out = Vec::new();
        write_hgrm(&LatencySet::new().total, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("Total count    =            0]"));
    }
}
