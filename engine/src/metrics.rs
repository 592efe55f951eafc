//! Counters the stages publish and the Prometheus text endpoint that reads them.
//!
//! Each stage owns one cache-padded block of counters and is its only writer: it updates them
//! once per batch with a relaxed load + store (no locked instruction, no false sharing with
//! the next stage's block). The metrics thread and the progress bar only read them. Ring
//! depths need no counter of their own: the depth of a ring is what its producer pushed minus
//! what its consumer took.
//!
//! Metric names (all prefixed `engine_`):
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
//! | `engine_latency_count` | counter | `outcome` | orders recorded in the latency histograms |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
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

    /// Renders every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let i = &self.ingress;
        counter(
            "engine_ingress_orders_total",
            "Orders taken in.",
            i.orders.load(Relaxed),
        );
        counter(
            "engine_ingress_bad_frames_total",
            "Ingress messages refused.",
            i.bad_frames.load(Relaxed),
        );
        counter(
            "engine_ingress_backpressure_waits_total",
            "Rounds the ingress found the risk ring full.",
            i.backpressure_waits.load(Relaxed),
        );
        let r = &self.risk;
        counter(
            "engine_risk_batches_total",
            "Risk requests sent.",
            r.batches.load(Relaxed),
        );
        counter(
            "engine_risk_orders_total",
            "Orders decided by the risk stage.",
            r.orders.load(Relaxed),
        );
        counter(
            "engine_risk_timeouts_total",
            "Risk batches rejected risk-timeout.",
            r.timeouts.load(Relaxed),
        );
        counter(
            "engine_risk_failed_batches_total",
            "Risk batches rejected risk-error.",
            r.failed_batches.load(Relaxed),
        );
        counter(
            "engine_risk_failovers_total",
            "Moves to the next risk endpoint.",
            r.failovers.load(Relaxed),
        );
        counter(
            "engine_risk_backpressure_waits_total",
            "Rounds the risk stage found the journal ring full.",
            r.backpressure_waits.load(Relaxed),
        );
        let j = &self.journal;
        counter(
            "engine_journal_records_total",
            "Decision records appended.",
            j.records.load(Relaxed),
        );
        counter(
            "engine_journal_backpressure_waits_total",
            "Rounds the journal found the egress ring full.",
            j.backpressure_waits.load(Relaxed),
        );
        counter(
            "engine_journal_publish_failures_total",
            "Live-feed sends that failed after their record was appended (gap fill recovers them).",
            j.publish_failures.load(Relaxed),
        );
        let e = &self.egress;
        counter(
            "engine_egress_orders_total",
            "Accepted orders handed to ZeroMQ.",
            e.orders.load(Relaxed),
        );
        counter(
            "engine_egress_frames_total",
            "Egress frames sent.",
            e.frames.load(Relaxed),
        );
        counter(
            "engine_egress_backpressure_waits_total",
            "Times downstream was not writable.",
            e.backpressure_waits.load(Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP engine_risk_wait_max_us Longest single risk round trip.\n# TYPE engine_risk_wait_max_us gauge\nengine_risk_wait_max_us {:.3}",
            r.wait_max_ns.load(Relaxed) as f64 / 1e3
        );
        let _ = writeln!(
            s,
            "# HELP engine_decisions_total Decisions by reason.\n# TYPE engine_decisions_total counter"
        );
        for reason in Reason::ALL {
            let _ = writeln!(
                s,
                "engine_decisions_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                j.by_reason[reason.code() as usize].load(Relaxed)
            );
        }
        let d = self.ring_depths();
        let _ = writeln!(
            s,
            "# HELP engine_ring_depth Orders waiting in a ring.\n# TYPE engine_ring_depth gauge\nengine_ring_depth{{ring=\"ingress_risk\"}} {}\nengine_ring_depth{{ring=\"risk_journal\"}} {}\nengine_ring_depth{{ring=\"journal_egress\"}} {}",
            d.ingress_risk, d.risk_journal, d.journal_egress
        );
        let _ = writeln!(
            s,
            "# HELP engine_latency_us Recent latency quantiles from scheduled arrival to journal (rejected) or egress send (accepted).\n# TYPE engine_latency_us gauge"
        );
        for (outcome, g) in [
            ("accepted", &self.latency_accepted),
            ("rejected", &self.latency_rejected),
        ] {
            for (q, v) in [
                ("0.5", &g.p50_ns),
                ("0.9", &g.p90_ns),
                ("0.99", &g.p99_ns),
                ("0.999", &g.p999_ns),
                ("1", &g.max_ns),
            ] {
                let _ = writeln!(
                    s,
                    "engine_latency_us{{outcome=\"{outcome}\",quantile=\"{q}\"}} {:.3}",
                    v.load(Relaxed) as f64 / 1e3
                );
            }
        }
        let _ = writeln!(
            s,
            "# HELP engine_latency_count Orders recorded in the latency histograms.\n# TYPE engine_latency_count counter"
        );
        for (outcome, g) in [
            ("accepted", &self.latency_accepted),
            ("rejected", &self.latency_rejected),
        ] {
            let _ = writeln!(
                s,
                "engine_latency_count{{outcome=\"{outcome}\"}} {}",
                g.count.load(Relaxed)
            );
        }
        s
    }
}

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {message}")]
pub struct MetricsError {
    /// The bind address.
    pub addr: String,
    /// Why.
    pub message: String,
}

/// The HTTP thread serving `GET /metrics` (any path answers the same text).
#[derive(Debug)]
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: String,
}

impl MetricsServer {
    /// Binds `addr` (`host:port`; port 0 picks one) and serves `metrics` from a thread of its
    /// own, off the hot path.
    pub fn start(addr: &str, metrics: Arc<Metrics>) -> Result<MetricsServer, MetricsError> {
        let server = tiny_http::Server::http(addr).map_err(|e| MetricsError {
            addr: addr.to_owned(),
            message: e.to_string(),
        })?;
        let bound = server.server_addr().to_string();
        let content_type =
            tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/plain; version=0.0.4"[..])
                .map_err(|()| MetricsError {
                    addr: addr.to_owned(),
                    message: "bad content-type header".into(),
                })?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                while !stop2.load(Relaxed) {
                    match server.recv_timeout(Duration::from_millis(METRICS_POLL_MS)) {
                        Ok(Some(req)) => {
                            let body = metrics.render_prometheus();
                            let resp = tiny_http::Response::from_string(body)
                                .with_header(content_type.clone());
                            if let Err(e) = req.respond(resp) {
                                tracing::debug!("metrics client went away: {e}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("metrics endpoint: {e}");
                            std::thread::sleep(Duration::from_millis(METRICS_POLL_MS));
                        }
                    }
                }
            })
            .map_err(|e| MetricsError {
                addr: addr.to_owned(),
                message: e.to_string(),
            })?;
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// The bound address (`ip:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Stops and joins the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{Read, Write};

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
    fn prometheus_text_has_every_family() {
        let m = Metrics::default();
        bump(&m.journal.by_reason[Reason::RiskTimeout.code() as usize], 2);
        let t = m.render_prometheus();
        for needle in [
            "engine_ingress_orders_total 0",
            "engine_decisions_total{reason=\"risk-timeout\"} 2",
            "engine_ring_depth{ring=\"journal_egress\"} 0",
            "engine_latency_us{outcome=\"accepted\",quantile=\"0.99\"}",
            "# TYPE engine_egress_backpressure_waits_total counter",
        ] {
            assert!(t.contains(needle), "missing {needle}");
        }
        // Every sample line is `name{labels} value`.
        for line in t.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            v.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn serves_over_http() {
        let m = Arc::new(Metrics::default());
        bump(&m.egress.frames, 42);
        let server = MetricsServer::start("127.0.0.1:0", Arc::clone(&m)).unwrap();
        let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
        conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        conn.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.0 200"), "{body}");
        assert!(body.contains("engine_egress_frames_total 42"));
        server.stop();
    }
}
