//! Counters the stages publish and the OpenMetrics endpoint that reads them when scraped.
//!
//! Each stage owns one cache-padded block of counters and is its only writer: it updates them
//! once per batch with a relaxed load + store (no locked instruction, no false sharing with
//! the next stage's block). The metrics thread and the progress bar only read them. Ring
//! depths need no counter of their own: the depth of a ring is what its producer pushed minus
//! what its consumer took.
//!
//! The endpoint encodes with `prometheus-client` (crate `metrics-endpoint`): a collector reads
//! the atomics at scrape time, so the stages pay nothing per scrape. Sample names (all prefixed
//! `engine_`; a counter family `engine_x` is sampled as `engine_x_total`):
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `engine_ingress_orders_total` | counter | | orders taken in (pushed to the risk ring) |
//! | `engine_ingress_bad_frames_total` | counter | | messages refused (bad binary frame or JSON) |
//! | `engine_ingress_backpressure_waits_total` | counter | | rounds the ingress found the risk ring full |
//! | `engine_risk_batches_total` | counter | | risk requests sent |
//! | `engine_risk_orders_total` | counter | | orders decided by the risk stage |
//! | `engine_risk_timeouts_total` | counter | | batches rejected `risk-timeout` |
//! | `engine_risk_failed_batches_total` | counter | | batches rejected `risk-error` |
//! | `engine_risk_failovers_total` | counter | | moves to the next risk endpoint |
//! | `engine_risk_backpressure_waits_total` | counter | | rounds the risk stage found the journal ring full |
//! | `engine_risk_wait_max_us` | gauge | | longest single risk round trip so far |
//! | `engine_journal_records_total` | counter | | decision records appended |
//! | `engine_decisions_total` | counter | `reason` | decisions by reason (`accepted`, `max-qty`, …) |
//! | `engine_journal_backpressure_waits_total` | counter | | rounds the journal found the egress ring full |
//! | `engine_journal_publish_failures_total` | counter | | live-feed sends that failed after the append (gap fill recovers them) |
//! | `engine_egress_orders_total` | counter | | accepted orders handed to ZeroMQ |
//! | `engine_egress_frames_total` | counter | | egress frames sent |
//! | `engine_egress_backpressure_waits_total` | counter | | times downstream was not writable |
//! | `engine_ring_depth` | gauge | `ring` | orders waiting in `ingress_risk`, `risk_journal`, `journal_egress` |
//! | `engine_latency_us` | gauge | `outcome`, `quantile` | recent latency quantiles (0.5 … 0.999, 1 = max) |
//! | `engine_latency_recorded_total` | counter | `outcome` | orders recorded in the latency histograms |

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::utils::CachePadded;
use orders::Reason;

use crate::limits::METRICS_POLL_MS;

/// Adds to a counter that only the calling stage writes (no read-modify-write instruction).
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Raises a single-writer gauge to `v` if it is larger.
#[inline]
pub fn raise(gauge: &AtomicU64, v: u64) {
    if v > gauge.load(Relaxed) {
        gauge.store(v, Relaxed);
    }
}

/// Written by the ingress stage.
#[derive(Debug, Default)]
pub struct IngressCounters {
    /// Orders pushed to the risk ring.
    pub orders: AtomicU64,
    /// Messages refused.
    pub bad_frames: AtomicU64,
    /// Rounds the risk ring was full.
    pub backpressure_waits: AtomicU64,
}

/// Written by the risk stage.
#[derive(Debug, Default)]
pub struct RiskCounters {
    /// Risk requests.
    pub batches: AtomicU64,
    /// Orders decided.
    pub orders: AtomicU64,
    /// Batches that timed out.
    pub timeouts: AtomicU64,
    /// Batches answered with an error.
    pub failed_batches: AtomicU64,
    /// Endpoint changes.
    pub failovers: AtomicU64,
    /// Rounds the journal ring was full.
    pub backpressure_waits: AtomicU64,
    /// Longest single risk round trip (ns).
    pub wait_max_ns: AtomicU64,
}

/// Written by the journal stage.
#[derive(Debug)]
pub struct JournalCounters {
    /// Decision records appended by this process.
    pub records: AtomicU64,
    /// Decisions by reason code.
    pub by_reason: [AtomicU64; Reason::ALL.len()],
    /// Rounds the egress ring was full.
    pub backpressure_waits: AtomicU64,
    /// Live-feed sends that failed after the record was appended (the record counts; PUB
    /// subscribers recover it through gap fill).
    pub publish_failures: AtomicU64,
}

impl Default for JournalCounters {
    fn default() -> Self {
        JournalCounters {
            records: AtomicU64::new(0),
            by_reason: std::array::from_fn(|_| AtomicU64::new(0)),
            backpressure_waits: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
        }
    }
}

impl JournalCounters {
    /// Accepted decisions.
    pub fn accepted(&self) -> u64 {
        self.by_reason[Reason::Accepted.code() as usize].load(Relaxed)
    }
}

/// Written by the egress stage.
#[derive(Debug, Default)]
pub struct EgressCounters {
    /// Accepted orders handed to ZeroMQ (or, with no downstream, taken by egress).
    pub orders: AtomicU64,
    /// Frames sent.
    pub frames: AtomicU64,
    /// Times downstream was not writable.
    pub backpressure_waits: AtomicU64,
}

/// Recent latency quantiles of one recording stage, in ns, published every
/// [`crate::limits::METRICS_PUBLISH_INTERVAL_NS`].
#[derive(Debug, Default)]
pub struct LatencyGauges {
    /// Median.
    pub p50_ns: AtomicU64,
    /// 90th percentile.
    pub p90_ns: AtomicU64,
    /// 99th percentile.
    pub p99_ns: AtomicU64,
    /// 99.9th percentile.
    pub p999_ns: AtomicU64,
    /// Maximum.
    pub max_ns: AtomicU64,
    /// Orders recorded.
    pub count: AtomicU64,
}

/// Every stage's counters, each in its own cache line pair.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ingress.
    pub ingress: CachePadded<IngressCounters>,
    /// Risk.
    pub risk: CachePadded<RiskCounters>,
    /// Journal.
    pub journal: CachePadded<JournalCounters>,
    /// Egress.
    pub egress: CachePadded<EgressCounters>,
    /// Latency of accepted orders (egress).
    pub latency_accepted: CachePadded<LatencyGauges>,
    /// Latency of rejected orders (journal).
    pub latency_rejected: CachePadded<LatencyGauges>,
}

/// Orders waiting in each ring, derived from the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingDepths {
    /// ingress → risk.
    pub ingress_risk: u64,
    /// risk → journal.
    pub risk_journal: u64,
    /// journal → egress.
    pub journal_egress: u64,
}

impl Metrics {
    /// Orders in each ring now (approximate while the stages run).
    pub fn ring_depths(&self) -> RingDepths {
        // Read consumers before producers so a depth is never negative by a racing push.
        let egress = self.egress.orders.load(Relaxed);
        let accepted = self.journal.accepted();
        let records = self.journal.records.load(Relaxed);
        let risk = self.risk.orders.load(Relaxed);
        let ingress = self.ingress.orders.load(Relaxed);
        RingDepths {
            ingress_risk: ingress.saturating_sub(risk),
            risk_journal: risk.saturating_sub(records),
            journal_egress: accepted.saturating_sub(egress),
        }
    }

    /// Every metric in the OpenMetrics text format, as the endpoint serves it.
    pub fn render_openmetrics(self: &Arc<Self>) -> String {
        metrics_endpoint::render(&registry(Arc::clone(self)))
    }
}

/// A registry whose one collector reads `metrics` at every scrape.
pub fn registry(metrics: Arc<Metrics>) -> metrics_endpoint::Registry {
    metrics_endpoint::registry_of(Collect(metrics))
}

/// The collector: reads every counter and gauge when scraped (on the metrics thread; the
/// stages never wait for it).
#[derive(Debug)]
struct Collect(Arc<Metrics>);

const QUANTILES: [&str; 5] = ["0.5", "0.9", "0.99", "0.999", "1"];

fn quantiles(g: &LatencyGauges) -> [&AtomicU64; 5] {
    [&g.p50_ns, &g.p90_ns, &g.p99_ns, &g.p999_ns, &g.max_ns]
}

fn us(ns: &AtomicU64) -> f64 {
    ns.load(Relaxed) as f64 / 1e3
}

impl metrics_endpoint::Collector for Collect {
    fn encode(&self, mut enc: metrics_endpoint::DescriptorEncoder) -> std::fmt::Result {
        use metrics_endpoint::{counter, counter_family, gauge, gauge_family};
        let m = &*self.0;
        let e = &mut enc;
        let i = &m.ingress;
        counter(
            e,
            "engine_ingress_orders",
            "Orders taken in.",
            i.orders.load(Relaxed),
        )?;
        counter(
            e,
            "engine_ingress_bad_frames",
            "Ingress messages refused.",
            i.bad_frames.load(Relaxed),
        )?;
        counter(
            e,
            "engine_ingress_backpressure_waits",
            "Rounds the ingress found the risk ring full.",
            i.backpressure_waits.load(Relaxed),
        )?;
        let r = &m.risk;
        counter(
            e,
            "engine_risk_batches",
            "Risk requests sent.",
            r.batches.load(Relaxed),
        )?;
        counter(
            e,
            "engine_risk_orders",
            "Orders decided by the risk stage.",
            r.orders.load(Relaxed),
        )?;
        counter(
            e,
            "engine_risk_timeouts",
            "Risk batches rejected risk-timeout.",
            r.timeouts.load(Relaxed),
        )?;
        counter(
            e,
            "engine_risk_failed_batches",
            "Risk batches rejected risk-error.",
            r.failed_batches.load(Relaxed),
        )?;
        counter(
            e,
            "engine_risk_failovers",
            "Moves to the next risk endpoint.",
            r.failovers.load(Relaxed),
        )?;
        counter(
            e,
            "engine_risk_backpressure_waits",
            "Rounds the risk stage found the journal ring full.",
            r.backpressure_waits.load(Relaxed),
        )?;
        let j = &m.journal;
        counter(
            e,
            "engine_journal_records",
            "Decision records appended.",
            j.records.load(Relaxed),
        )?;
        counter(
            e,
            "engine_journal_backpressure_waits",
            "Rounds the journal found the egress ring full.",
            j.backpressure_waits.load(Relaxed),
        )?;
        counter(
            e,
            "engine_journal_publish_failures",
            "Live-feed sends that failed after their record was appended (gap fill recovers them).",
            j.publish_failures.load(Relaxed),
        )?;
        let o = &m.egress;
        counter(
            e,
            "engine_egress_orders",
            "Accepted orders handed to ZeroMQ.",
            o.orders.load(Relaxed),
        )?;
        counter(
            e,
            "engine_egress_frames",
            "Egress frames sent.",
            o.frames.load(Relaxed),
        )?;
        counter(
            e,
            "engine_egress_backpressure_waits",
            "Times downstream was not writable.",
            o.backpressure_waits.load(Relaxed),
        )?;
        gauge(
            e,
            "engine_risk_wait_max_us",
            "Longest single risk round trip.",
            us(&r.wait_max_ns),
        )?;
        counter_family(
            e,
            "engine_decisions",
            "Decisions by reason.",
            ["reason"],
            Reason::ALL.iter().map(|reason| {
                (
                    [reason.as_str()],
                    j.by_reason[reason.code() as usize].load(Relaxed),
                )
            }),
        )?;
        let d = m.ring_depths();
        gauge_family(
            e,
            "engine_ring_depth",
            "Orders waiting in a ring.",
            ["ring"],
            [
                (["ingress_risk"], d.ingress_risk),
                (["risk_journal"], d.risk_journal),
                (["journal_egress"], d.journal_egress),
            ],
        )?;
        let outcomes = [
            ("accepted", &*m.latency_accepted),
            ("rejected", &*m.latency_rejected),
        ];
        gauge_family(
            e,
            "engine_latency_us",
            "Recent latency quantiles from scheduled arrival to journal (rejected) or egress send (accepted).",
            ["outcome", "quantile"],
            outcomes.iter().flat_map(|(outcome, g)| {
                QUANTILES
                    .iter()
                    .zip(quantiles(g))
                    .map(move |(q, v)| ([*outcome, *q], us(v)))
            }),
        )?;
        counter_family(
            e,
            "engine_latency_recorded",
            "Orders recorded in the latency histograms.",
            ["outcome"],
            outcomes
                .iter()
                .map(|(outcome, g)| ([*outcome], g.count.load(Relaxed))),
        )
    }
}

/// Errors of the metrics endpoint.
pub use metrics_endpoint::MetricsError;

/// The HTTP thread serving `GET /metrics` (any path answers the same text) in the OpenMetrics
/// format.
#[derive(Debug)]
pub struct MetricsServer(metrics_endpoint::MetricsServer);

impl MetricsServer {
    /// Binds `addr` (`ip:port`; port 0 picks one) and serves `metrics` from a thread of its
    /// own, off the hot path: the counters are read when scraped.
    pub fn start(addr: &str, metrics: Arc<Metrics>) -> Result<MetricsServer, MetricsError> {
        metrics_endpoint::MetricsServer::start(
            addr,
            registry(metrics),
            Duration::from_millis(METRICS_POLL_MS),
        )
        .map(MetricsServer)
    }

    /// The bound address (`ip:port`).
    pub fn addr(&self) -> &str {
        self.0.addr()
    }

    /// Stops and joins the thread.
    pub fn stop(self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn depths_come_from_counters() {
        let m = Metrics::default();
        bump(&m.ingress.orders, 10);
        bump(&m.risk.orders, 7);
        bump(&m.journal.records, 5);
        bump(&m.journal.by_reason[0], 4);
        bump(&m.journal.by_reason[Reason::MaxQty.code() as usize], 1);
        bump(&m.egress.orders, 3);
        assert_eq!(
            m.ring_depths(),
            RingDepths {
                ingress_risk: 3,
                risk_journal: 2,
                journal_egress: 1
            }
        );
        raise(&m.risk.wait_max_ns, 5);
        raise(&m.risk.wait_max_ns, 3);
        assert_eq!(m.risk.wait_max_ns.load(Relaxed), 5);
    }

    #[test]
    fn openmetrics_text_has_every_family_and_reads_the_counters() {
        let m = Arc::new(Metrics::default());
        bump(&m.journal.by_reason[Reason::RiskTimeout.code() as usize], 2);
        bump(&m.ingress.orders, 5);
        raise(&m.risk.wait_max_ns, 1_500);
        m.latency_accepted.p99_ns.store(2_250, Relaxed);
        bump(&m.latency_rejected.count, 9);
        let t = m.render_openmetrics();
        for needle in [
            "# TYPE engine_egress_backpressure_waits counter\n",
            "engine_ingress_orders_total 5\n",
            "engine_decisions_total{reason=\"risk-timeout\"} 2\n",
            "engine_ring_depth{ring=\"ingress_risk\"} 5\n",
            "engine_risk_wait_max_us 1.5\n",
            "engine_latency_us{outcome=\"accepted\",quantile=\"0.99\"} 2.25\n",
            "engine_latency_recorded_total{outcome=\"rejected\"} 9\n",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        assert!(t.ends_with("# EOF\n"));
        let e = metrics_endpoint::exposition::parse(&t).unwrap();
        // Every reason is present, zero or not.
        assert_eq!(
            e.family("engine_decisions").unwrap().samples.len(),
            Reason::ALL.len()
        );
        assert_eq!(e.sum("engine_decisions_total"), 2.0);
        assert_eq!(e.family("engine_latency_us").unwrap().samples.len(), 10);
    }

    #[test]
    fn serves_over_http() {
        let m = Arc::new(Metrics::default());
        bump(&m.egress.frames, 42);
        let server = MetricsServer::start("127.0.0.1:0", Arc::clone(&m)).unwrap();
        let s =
            metrics_endpoint::exposition::scrape(server.addr(), Duration::from_secs(10)).unwrap();
        assert_eq!(s.content_type, metrics_endpoint::CONTENT_TYPE);
        assert!(
            s.body.contains("engine_egress_frames_total 42\n"),
            "{}",
            s.body
        );
        server.stop();
    }
}
