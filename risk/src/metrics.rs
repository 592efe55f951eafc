//! The service's counters and the OpenMetrics collector of `risk-server --metrics`.
//!
//! [`Service`](crate::Service) is the only writer of its [`ServiceCounters`]: it adds with a
//! relaxed load and store ([`metrics_endpoint::bump`]), no locked instruction and no lock, so a
//! verdict costs what a plain `+= 1` did. The metrics thread reads them when scraped; the admin
//! `stats` request reads them through [`ServiceCounters::snapshot`].
//!
//! Sample names (a counter family `risk_server_x` is sampled as `risk_server_x_total`; the
//! table in docs/monitoring.md is the reference):
//!
//! | sample | type | labels |
//! |---|---|---|
//! | `risk_server_requests_total` | counter | |
//! | `risk_server_batches_total` | counter | |
//! | `risk_server_orders_checked_total` | counter | `protocol` = `binary`, `json` |
//! | `risk_server_verdicts_total` | counter | `reason` (every reason, `accepted` included) |
//! | `risk_server_admin_requests_total` | counter | |
//! | `risk_server_bad_requests_total` | counter | `why` = `malformed`, `too-large` |
//! | `risk_server_send_errors_total` | counter | |
//! | `risk_server_reloads_total` | counter | `result` = `ok`, `failed` |
//! | `risk_server_void_requests_total` | counter | |
//! | `risk_server_void_batches_total` | counter | `outcome` = `voided`, `unknown`, `too-old` |
//! | `risk_server_refused_voided_batches_total` | counter | |
//! | `risk_server_hello_requests_total` | counter | |
//! | `risk_server_names_requests_total` | counter | |
//! | `risk_server_reconciled_batches_total` | counter | |
//! | `risk_server_reconcile_refusals_total` | counter | |
//! | `risk_server_order_id_table_slots` | gauge | |
//! | `risk_server_order_id_table_grows_total` | counter | |
//! | `risk_server_connections_total` | counter | `result` = `accepted`, `refused` |

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use metrics_endpoint::{counter, counter_family, gauge, Collector, DescriptorEncoder};
use orders::Reason;

use crate::service::ServiceStats;

/// Counters of a [`crate::Service`], written by it alone (see the module documentation).
#[derive(Debug)]
pub struct ServiceCounters {
    /// Requests received (every kind).
    pub requests: AtomicU64,
    /// Binary batches answered with verdicts.
    pub batches: AtomicU64,
    /// Orders checked in binary batches.
    pub batch_orders: AtomicU64,
    /// JSON single orders checked.
    pub json_orders: AtomicU64,
    /// Admin requests handled.
    pub admin_requests: AtomicU64,
    /// Requests answered with an error because they could not be read.
    pub malformed: AtomicU64,
    /// Requests answered with an error because they were too large.
    pub too_large: AtomicU64,
    /// Successful reloads of the limits file.
    pub reloads: AtomicU64,
    /// Failed reloads.
    pub reload_failures: AtomicU64,
    /// Replies the socket refused to send.
    pub send_errors: AtomicU64,
    /// Verdicts by reason code (binary and JSON orders).
    pub verdicts: [AtomicU64; Reason::ALL.len()],
    /// Void requests answered.
    pub void_requests: AtomicU64,
    /// Batches undone by void requests.
    pub voided_batches: AtomicU64,
    /// Batch ids a void named that the server had not applied.
    pub void_unknown: AtomicU64,
    /// Batch ids a void named that could no longer be undone.
    pub void_too_old: AtomicU64,
    /// Batches refused on arrival because a void had named them before.
    pub refused_voided_batches: AtomicU64,
    /// Hello requests answered.
    pub hello_requests: AtomicU64,
    /// Account-name requests (the engine's name table) received.
    pub names_requests: AtomicU64,
    /// Batches undone by the reconciliation of a hello.
    pub reconciled_batches: AtomicU64,
    /// Hellos whose reconciliation could not undo what it had to.
    pub reconcile_refusals: AtomicU64,
    /// Slots of the order-id table, as of the last request.
    pub order_id_table_slots: AtomicU64,
    /// Growths of the order-id table, as of the last request.
    pub order_id_table_grows: AtomicU64,
}

impl Default for ServiceCounters {
    fn default() -> Self {
        ServiceCounters {
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_orders: AtomicU64::new(0),
            json_orders: AtomicU64::new(0),
            admin_requests: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            verdicts: std::array::from_fn(|_| AtomicU64::new(0)),
            void_requests: AtomicU64::new(0),
            voided_batches: AtomicU64::new(0),
            void_unknown: AtomicU64::new(0),
            void_too_old: AtomicU64::new(0),
            refused_voided_batches: AtomicU64::new(0),
            hello_requests: AtomicU64::new(0),
            names_requests: AtomicU64::new(0),
            reconciled_batches: AtomicU64::new(0),
            reconcile_refusals: AtomicU64::new(0),
            order_id_table_slots: AtomicU64::new(0),
            order_id_table_grows: AtomicU64::new(0),
        }
    }
}

impl ServiceCounters {
    /// The counters as the admin `stats` request reports them (verdicts by reason name,
    /// reasons never given left out).
    pub fn snapshot(&self) -> ServiceStats {
        let l = |a: &AtomicU64| a.load(Relaxed);
        ServiceStats {
            requests: l(&self.requests),
            batches: l(&self.batches),
            batch_orders: l(&self.batch_orders),
            json_orders: l(&self.json_orders),
            admin_requests: l(&self.admin_requests),
            malformed: l(&self.malformed),
            too_large: l(&self.too_large),
            reloads: l(&self.reloads),
            reload_failures: l(&self.reload_failures),
            send_errors: l(&self.send_errors),
            verdicts: Reason::ALL
                .iter()
                .zip(&self.verdicts)
                .map(|(r, n)| (r, l(n)))
                .filter(|(_, n)| *n > 0)
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect(),
            void_requests: l(&self.void_requests),
            voided_batches: l(&self.voided_batches),
            void_unknown: l(&self.void_unknown),
            void_too_old: l(&self.void_too_old),
            refused_voided_batches: l(&self.refused_voided_batches),
            hello_requests: l(&self.hello_requests),
            names_requests: l(&self.names_requests),
            reconciled_batches: l(&self.reconciled_batches),
            reconcile_refusals: l(&self.reconcile_refusals),
            order_id_table_slots: l(&self.order_id_table_slots),
            order_id_table_grows: l(&self.order_id_table_grows),
        }
    }
}

/// The collector of `risk-server --metrics`: reads a service's counters (and, when the server
/// authenticates, its ZAP handler's) at every scrape.
#[derive(Debug)]
pub struct RiskCollector {
    counters: Arc<ServiceCounters>,
    zap: Option<Arc<zauth::ZapStats>>,
}

impl RiskCollector {
    /// A collector over `counters` ([`crate::Service::counters`]) and the ZAP handler's
    /// counters, if one runs (without one, no connection is authenticated: both counts stay 0).
    pub fn new(counters: Arc<ServiceCounters>, zap: Option<Arc<zauth::ZapStats>>) -> Self {
        RiskCollector { counters, zap }
    }

    /// The exposition a scrape returns now (OpenMetrics text, `# EOF` included).
    pub fn render(self) -> String {
        metrics_endpoint::render(&metrics_endpoint::registry_of(self))
    }
}

impl Collector for RiskCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let c = &*self.counters;
        let e = &mut enc;
        let l = |a: &AtomicU64| a.load(Relaxed);
        counter(
            e,
            "risk_server_requests",
            "Requests received (every kind).",
            l(&c.requests),
        )?;
        counter(
            e,
            "risk_server_batches",
            "Binary batches answered with verdicts.",
            l(&c.batches),
        )?;
        counter_family(
            e,
            "risk_server_orders_checked",
            "Orders checked, by protocol.",
            ["protocol"],
            [
                (["binary"], l(&c.batch_orders)),
                (["json"], l(&c.json_orders)),
            ],
        )?;
        counter_family(
            e,
            "risk_server_verdicts",
            "Verdicts by reason (binary and JSON orders).",
            ["reason"],
            Reason::ALL
                .iter()
                .zip(&c.verdicts)
                .map(|(r, n)| ([r.as_str()], l(n))),
        )?;
        counter(
            e,
            "risk_server_admin_requests",
            "JSON admin requests handled.",
            l(&c.admin_requests),
        )?;
        counter_family(
            e,
            "risk_server_bad_requests",
            "Requests answered with an error: unreadable (malformed) or too large.",
            ["why"],
            [
                (["malformed"], l(&c.malformed)),
                (["too-large"], l(&c.too_large)),
            ],
        )?;
        counter(
            e,
            "risk_server_send_errors",
            "Replies the socket refused to send.",
            l(&c.send_errors),
        )?;
        counter_family(
            e,
            "risk_server_reloads",
            "Reloads of the limits file (failed: the previous limits stayed in force).",
            ["result"],
            [(["ok"], l(&c.reloads)), (["failed"], l(&c.reload_failures))],
        )?;
        counter(
            e,
            "risk_server_void_requests",
            "Void requests answered.",
            l(&c.void_requests),
        )?;
        counter_family(
            e,
            "risk_server_void_batches",
            "Batch ids named by void requests, by outcome.",
            ["outcome"],
            [
                (["voided"], l(&c.voided_batches)),
                (["unknown"], l(&c.void_unknown)),
                (["too-old"], l(&c.void_too_old)),
            ],
        )?;
        counter(
            e,
            "risk_server_refused_voided_batches",
            "Batches refused on arrival because a void had named them before.",
            l(&c.refused_voided_batches),
        )?;
        counter(
            e,
            "risk_server_hello_requests",
            "Hello requests answered.",
            l(&c.hello_requests),
        )?;
        counter(
            e,
            "risk_server_names_requests",
            "Account-name requests (an engine's name table) received.",
            l(&c.names_requests),
        )?;
        counter(
            e,
            "risk_server_reconciled_batches",
            "Batches undone by the reconciliation of a hello.",
            l(&c.reconciled_batches),
        )?;
        counter(
            e,
            "risk_server_reconcile_refusals",
            "Hellos whose reconciliation found batches it could no longer undo.",
            l(&c.reconcile_refusals),
        )?;
        gauge(
            e,
            "risk_server_order_id_table_slots",
            "Slots of the order-id table.",
            l(&c.order_id_table_slots),
        )?;
        counter(
            e,
            "risk_server_order_id_table_grows",
            "Growths of the order-id table since start-up.",
            l(&c.order_id_table_grows),
        )?;
        let (accepted, refused) = self.zap.as_ref().map_or((0, 0), |z| {
            (z.accepted.load(Relaxed), z.refused.load(Relaxed))
        });
        counter_family(
            e,
            "risk_server_connections",
            "Connections authenticated by the ZAP handler (0 without authentication).",
            ["result"],
            [(["accepted"], accepted), (["refused"], refused)],
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use metrics_endpoint::bump;

    #[test]
    fn every_counter_is_exposed_and_the_snapshot_agrees() {
        let c = Arc::new(ServiceCounters::default());
        bump(&c.requests, 3);
        bump(&c.batch_orders, 5);
        bump(&c.json_orders, 1);
        bump(&c.verdicts[Reason::Accepted.code() as usize], 4);
        bump(&c.verdicts[Reason::MaxQty.code() as usize], 2);
        bump(&c.too_large, 1);
        bump(&c.void_too_old, 1);
        let zap = Arc::new(zauth::ZapStats::default());
        zap.refused.store(2, Relaxed);
        let text = RiskCollector::new(Arc::clone(&c), Some(zap)).render();
        let e = metrics_endpoint::exposition::parse(&text).unwrap();
        assert_eq!(e.value("risk_server_requests_total", &[]), Some(3.0));
        assert_eq!(e.sum("risk_server_orders_checked_total"), 6.0);
        assert_eq!(e.sum("risk_server_verdicts_total"), 6.0);
        assert_eq!(
            e.family("risk_server_verdicts").unwrap().samples.len(),
            Reason::ALL.len()
        );
        assert_eq!(
            e.value("risk_server_verdicts_total", &[("reason", "max-qty")]),
            Some(2.0)
        );
        assert_eq!(
            e.value("risk_server_bad_requests_total", &[("why", "too-large")]),
            Some(1.0)
        );
        assert_eq!(
            e.value("risk_server_void_batches_total", &[("outcome", "too-old")]),
            Some(1.0)
        );
        assert_eq!(
            e.value("risk_server_connections_total", &[("result", "refused")]),
            Some(2.0)
        );
        let s = c.snapshot();
        assert_eq!((s.requests, s.batch_orders, s.json_orders), (3, 5, 1));
        assert_eq!(s.verdicts.len(), 2, "reasons never given are left out");
        assert_eq!(s.verdicts["max-qty"], 2);
    }
}
