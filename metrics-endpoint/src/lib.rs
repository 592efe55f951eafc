//! The `/metrics` endpoint of `engine`, `risk-server` and `audit serve`.
//!
//! Each binary keeps its counters where it already updates them (single-writer atomics, no
//! lock and no formatting on the hot path) and registers a [`Collector`] that reads them when
//! scraped. This crate encodes the collectors with `prometheus-client` in the OpenMetrics text
//! format (`# TYPE` before every family, counters' samples named `<family>_total`, a final
//! `# EOF`) and serves the text over HTTP from a thread of its own with `tiny_http`.
//!
//! [`exposition`] reads the text back (strictly, for the subset written here): the tests of
//! every binary use it to check what a running process serves.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use prometheus_client;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::encoding::DescriptorEncoder;
pub use prometheus_client::registry::Registry;

use prometheus_client::encoding::{EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

pub mod exposition;

/// The `Content-Type` of every answer: the OpenMetrics text format, version 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How often an idle metrics thread wakes to notice [`MetricsServer::stop`], unless the
/// caller chooses otherwise.
pub const POLL_INTERVAL_DEFAULT: Duration = Duration::from_millis(100);

/// Checks a metrics bind address: `ip:port` (`127.0.0.1:9100`, `[::1]:9100`; port 0 picks a
/// free one). Host names are refused. The same rule and message for every binary's
/// `--metrics` flag and the engine's `metrics.bind` key.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .map_err(|_| format!("{text:?} is not ip:port"))
}

/// Adds `n` to a counter that only the calling thread writes: a relaxed load and store, no
/// read-modify-write instruction (readers see a value at most one update old).
#[inline]
pub fn bump(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One counter family without labels; its sample is `<name>_total`.
pub fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    let m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

/// One gauge family without labels.
pub fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: V,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    let m = enc.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

/// One counter family with one sample per label set: `labels` are the label names, each item
/// of `samples` the label values (in the same order) and the count.
pub fn counter_family<'a, const N: usize>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: [&str; N],
    samples: impl IntoIterator<Item = ([&'a str; N], u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (values, n) in samples {
        let set: [(&str, &str); N] = std::array::from_fn(|i| (labels[i], values[i]));
        let f = m.encode_family(&set)?;
        ConstCounter::new(n).encode(f)?;
    }
    Ok(())
}

/// One gauge family with one sample per label set (see [`counter_family`]).
pub fn gauge_family<'a, V: EncodeGaugeValue, const N: usize>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: [&str; N],
    samples: impl IntoIterator<Item = ([&'a str; N], V)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (values, v) in samples {
        let set: [(&str, &str); N] = std::array::from_fn(|i| (labels[i], values[i]));
        let f = m.encode_family(&set)?;
        ConstGauge::new(v).encode(f)?;
    }
    Ok(())
}

/// A registry holding `collector` alone.
pub fn registry_of(collector: impl Collector) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(collector));
    r
}

/// The registry's metrics in the OpenMetrics text format, `# EOF` included.
pub fn render(registry: &Registry) -> String {
    let mut s = String::with_capacity(8192);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut s, registry) {
        // Writing to a String cannot fail; a collector that fails is a bug: say so in the
        // answer rather than serving a truncated exposition as if it were whole.
        s.clear();
        let _ = writeln!(s, "# encoding failed: {e}");
    }
    s
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

/// The HTTP thread answering every `GET` (any path) with the registry's exposition.
#[derive(Debug)]
pub struct MetricsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    addr: String,
    scrapes: Arc<AtomicU64>,
}

impl MetricsServer {
    /// Binds `addr` (`ip:port`; port 0 picks one) and serves `registry` from a thread named
    /// `metrics`, waking every `poll` to notice [`MetricsServer::stop`]. The collectors run on
    /// that thread, once per scrape.
    pub fn start(
        addr: &str,
        registry: Registry,
        poll: Duration,
    ) -> Result<MetricsServer, MetricsError> {
        let fail = |message: String| MetricsError {
            addr: addr.to_owned(),
            message,
        };
        parse_addr(addr).map_err(fail)?;
        let server = tiny_http::Server::http(addr).map_err(|e| fail(e.to_string()))?;
        let bound = server.server_addr().to_string();
        let content_type = tiny_http::Header::from_bytes(&b"Content-Type"[..], CONTENT_TYPE)
            .map_err(|()| fail("bad content-type header".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let scrapes = Arc::new(AtomicU64::new(0));
        let (stop2, scrapes2) = (Arc::clone(&stop), Arc::clone(&scrapes));
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                while !stop2.load(Relaxed) {
                    match server.recv_timeout(poll) {
                        Ok(Some(req)) => {
                            let body = render(&registry);
                            scrapes2.fetch_add(1, Relaxed);
                            let resp = tiny_http::Response::from_string(body)
                                .with_header(content_type.clone());
                            if let Err(e) = req.respond(resp) {
                                tracing::debug!("metrics client went away: {e}");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("metrics endpoint: {e}");
                            std::thread::sleep(poll);
                        }
                    }
                }
            })
            .map_err(|e| fail(e.to_string()))?;
        Ok(MetricsServer {
            stop,
            thread: Some(thread),
            addr: bound,
            scrapes,
        })
    }

    /// The bound address (`ip:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Scrapes answered so far.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Relaxed)
    }

    /// Stops and joins the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, Default)]
    struct Demo {
        hits: AtomicU64,
    }

    impl Collector for Demo {
        fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
            counter(&mut enc, "demo_hits", "Hits.", self.hits.load(Relaxed))?;
            gauge(&mut enc, "demo_wait_max_us", "Longest wait.", 1.5f64)?;
            counter_family(
                &mut enc,
                "demo_verdicts",
                "Verdicts by reason.",
                ["reason"],
                [(["accepted"], 3), (["max-qty"], 1)],
            )?;
            gauge_family(
                &mut enc,
                "demo_latency_us",
                "Latency quantiles.",
                ["outcome", "quantile"],
                [(["accepted", "0.5"], 2.0f64), (["accepted", "1"], 9.25)],
            )
        }
    }

    #[test]
    fn addresses_are_ip_and_port() {
        assert!(parse_addr("127.0.0.1:9100").is_ok());
        assert!(parse_addr("[::1]:0").is_ok());
        for bad in ["localhost:9100", "127.0.0.1", "9100", "", "127.0.0.1:99999"] {
            assert_eq!(
                parse_addr(bad).unwrap_err(),
                format!("{bad:?} is not ip:port")
            );
        }
    }

    #[test]
    fn renders_openmetrics_that_reads_back() {
        let d = Arc::new(Demo::default());
        bump(&d.hits, 41);
        bump(&d.hits, 1);
        let text = render(&registry_of(Arc::clone(&d)));
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE demo_hits counter\ndemo_hits_total 42\n"),
            "{text}"
        );
        let e = exposition::parse(&text).unwrap();
        assert_eq!(e.value("demo_hits_total", &[]), Some(42.0));
        assert_eq!(e.value("demo_wait_max_us", &[]), Some(1.5));
        assert_eq!(
            e.value("demo_verdicts_total", &[("reason", "max-qty")]),
            Some(1.0)
        );
        assert_eq!(e.sum("demo_verdicts_total"), 4.0);
        assert_eq!(
            e.value(
                "demo_latency_us",
                &[("outcome", "accepted"), ("quantile", "1")]
            ),
            Some(9.25)
        );
        assert_eq!(e.family_type("demo_verdicts"), Some("counter"));
    }

    #[test]
    fn serves_over_http_with_the_openmetrics_type() {
        let d = Arc::new(Demo::default());
        bump(&d.hits, 7);
        let server = MetricsServer::start(
            "127.0.0.1:0",
            registry_of(Arc::clone(&d)),
            Duration::from_millis(20),
        )
        .unwrap();
        let s = exposition::scrape(server.addr(), Duration::from_secs(10)).unwrap();
        assert_eq!(s.content_type, CONTENT_TYPE);
        let e = exposition::parse(&s.body).unwrap();
        assert_eq!(e.value("demo_hits_total", &[]), Some(7.0));
        // Values are read at scrape time.
        bump(&d.hits, 3);
        let s = exposition::scrape(server.addr(), Duration::from_secs(10)).unwrap();
        let e = exposition::parse(&s.body).unwrap();
        assert_eq!(e.value("demo_hits_total", &[]), Some(10.0));
        assert_eq!(server.scrapes(), 2);
        server.stop();
    }

    #[test]
    fn a_bad_address_is_refused_before_binding() {
        let e = MetricsServer::start(
            "localhost:0",
            registry_of(Arc::new(Demo::default())),
            POLL_INTERVAL_DEFAULT,
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not ip:port"), "{e}");
    }
}
