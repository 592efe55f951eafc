//! `bench baseline`: the source design, reproduced so that every benchmark run can print our
//! figures beside it.
//!
//! Per order, exactly as the source design's C++ engine does it:
//! 1. build a JSON risk request `{"symbol":"AAPL","quantity":100,"price":185.25,…}` and send it
//!    on a REQ socket; wait at most the timeout (100 ms) for the reply; `OK` accepts, anything
//!    else (or a timeout) rejects. After a timeout the REQ socket is closed and reopened (it
//!    cannot send again before it receives);
//! 2. PUSH an accepted order downstream (as JSON);
//! 3. PUBlish an audit event (JSON with the `order_id`) carrying its own SHA-256, with no chain
//!    and no journal.
//!
//! One synchronous round trip per order caps throughput at 1/RTT: that is the point of the
//! comparison. Latency is measured like the engine's (from the scheduled send time, so the
//! figures compare), and the report has the engine's JSON keys plus `"baseline": true`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use engine::clock::Clock;
use engine::latency::{write_hgrm, LatencySet};
use engine::report::Report;
use orders::files::{LoadOptions, OrderFile};
use orders::{format_price_ticks, Order, Reason, Symbol};
use sha2::{Digest, Sha256};

/// The source design's risk timeout.
const RISK_TIMEOUT_MS_DEFAULT: u64 = 100;
/// How long a PUSH may wait for a slow or absent downstream before the order counts as
/// undeliverable (the source design blocks; we bound it so that a missing sink cannot hang a
/// benchmark run, and report it).
const PUSH_WAIT_MS: i32 = 1_000;

/// `bench baseline` arguments.
#[derive(Debug, clap::Args)]
pub struct BaselineArgs {
    /// Order file (CSV, binary or LOBSTER, plain or gzipped).
    pub file: PathBuf,
    /// Risk service endpoint (a `risk-server`, which answers the source design's JSON).
    #[arg(long)]
    pub risk: String,
    /// Downstream PUSH endpoint for accepted orders (connects), or `none`.
    #[arg(long, default_value = "none")]
    pub out: String,
    /// PUB endpoint for audit events (binds), or `none`.
    #[arg(long, default_value = "none")]
    pub audit_pub: String,
    /// Orders per second (open loop), or `max`.
    #[arg(long, default_value = "max")]
    pub rate: String,
    /// Risk reply timeout in milliseconds.
    #[arg(long, default_value_t = RISK_TIMEOUT_MS_DEFAULT)]
    pub timeout_ms: u64,
    /// Replay only the first N orders of the file (the baseline is slow by design).
    #[arg(long)]
    pub limit: Option<usize>,
    /// First N orders are not recorded in the latency histogram.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Symbol for LOBSTER files whose name does not carry one.
    #[arg(long)]
    pub symbol: Option<String>,
    /// Skip and count up to N bad input lines instead of stopping at the first.
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the latency distribution (HdrHistogram text format, µs) here.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
}

fn parse_rate(s: &str) -> anyhow::Result<Option<u64>> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => bail!("--rate {s:?}: expected a positive number of orders per second, or `max`"),
    }
}

fn risk_json(o: &Order) -> String {
    format!(
        r#"{{"symbol":"{}","quantity":{},"price":{},"account":{},"order_id":{},"side":"{}","kind":"{}"}}"#,
        o.symbol,
        o.qty,
        format_price_ticks(o.price),
        o.account,
        o.order_id,
        o.side.as_str(),
        o.kind.as_str()
    )
}

struct RiskReq {
    ctx: zmq::Context,
    endpoint: String,
    socket: zmq::Socket,
}

impl RiskReq {
    fn open(ctx: &zmq::Context, endpoint: &str) -> anyhow::Result<RiskReq> {
        let socket = Self::socket(ctx, endpoint)?;
        Ok(RiskReq {
            ctx: ctx.clone(),
            endpoint: endpoint.to_owned(),
            socket,
        })
    }

    fn socket(ctx: &zmq::Context, endpoint: &str) -> anyhow::Result<zmq::Socket> {
        let s = ctx
            .socket(zmq::REQ)
            .context("cannot create the REQ socket")?;
        s.set_linger(0).context("cannot set LINGER")?;
        s.connect(endpoint)
            .with_context(|| format!("cannot connect to the risk service at {endpoint}"))?;
        Ok(s)
    }

    /// One synchronous round trip: the verdict, or `RiskTimeout` after `timeout_ms`.
    fn check(&mut self, request: &str, timeout_ms: u64) -> anyhow::Result<Reason> {
        let sent = self.socket.send(request, zmq::DONTWAIT).is_ok();
        let answered = sent
            && self
                .socket
                .poll(zmq::POLLIN, timeout_ms as i64)
                .context("poll on the risk socket")?
                > 0;
        if !answered {
            // Lazy Pirate: a REQ socket cannot send again before it receives.
            self.socket = Self::socket(&self.ctx, &self.endpoint)?;
            return Ok(Reason::RiskTimeout);
        }
        let reply = self
            .socket
            .recv_bytes(0)
            .context("recv on the risk socket")?;
        Ok(match reply.as_slice() {
            b"OK" => Reason::Accepted,
            r => r
                .strip_prefix(b"REJECT ")
                .and_then(|name| std::str::from_utf8(name).ok())
                .and_then(Reason::parse)
                .unwrap_or(Reason::RiskError),
        })
    }
}

/// Runs the baseline and prints its table.
pub fn run(args: BaselineArgs) -> anyhow::Result<ExitCode> {
    let rate = parse_rate(&args.rate)?;
    let symbol = match &args.symbol {
        Some(s) => Some(Symbol::new(s).with_context(|| format!("--symbol {s:?}"))?),
        None => None,
    };
    let opts = LoadOptions {
        symbol,
        max_errors: args.max_errors,
        ..LoadOptions::default()
    };
    let file = OrderFile::open(&args.file, &opts)
        .with_context(|| format!("cannot load {}", args.file.display()))?;
    for line in file.skipped_report() {
        eprintln!("bench baseline: skipped {line}");
    }
    let n = args.limit.unwrap_or(usize::MAX).min(file.len());

    let ctx = zmq::Context::new();
    let mut risk = RiskReq::open(&ctx, &args.risk)?;
    let push = if args.out == "none" {
        None
    } else {
        let s = ctx
            .socket(zmq::PUSH)
            .context("cannot create the PUSH socket")?;
        s.set_sndtimeo(PUSH_WAIT_MS).context("SNDTIMEO")?;
        s.set_linger(1_000).context("LINGER")?;
        s.connect(&args.out)
            .with_context(|| format!("cannot connect PUSH to {}", args.out))?;
        Some(s)
    };
    let publisher = if args.audit_pub == "none" {
        None
    } else {
        let s = ctx
            .socket(zmq::PUB)
            .context("cannot create the PUB socket")?;
        s.bind(&args.audit_pub)
            .with_context(|| format!("cannot bind PUB on {}", args.audit_pub))?;
        Some(s)
    };

    let clock = Clock::new();
    let mut accepted_set = LatencySet::new();
    let mut rejected_set = LatencySet::new();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let (mut accepted, mut undeliverable) = (0u64, 0u64);
    let t0 = clock.now_ns();
    let mut last_end = t0;
    for k in 0..n {
        let order = file.get(k);
        let t_sched = match rate {
            None => clock.now_ns(),
            Some(per_s) => {
                let t = t0 + (k as u128 * 1_000_000_000 / per_s as u128) as u64;
                while clock.now_ns() < t {
                    let left = t - clock.now_ns();
                    if left > 200_000 {
                        std::thread::sleep(Duration::from_nanos(left - 100_000));
                    } else {
                        std::thread::yield_now();
                    }
                }
                t
            }
        };
        let t_in = clock.now_ns();
        let request = risk_json(&order);
        let reason = risk.check(&request, args.timeout_ms)?;
        let t_decided = clock.now_ns();
        if reason.is_accepted() {
            accepted += 1;
            if let Some(push) = &push {
                if push.send(request.as_bytes(), 0).is_err() {
                    undeliverable += 1;
                }
            }
        } else {
            *by_reason.entry(reason.as_str().to_owned()).or_default() += 1;
        }
        if let Some(publisher) = &publisher {
            let event = format!(
                r#"{{"order_id":{},"symbol":"{}","verdict":"{}","reason":"{}"}}"#,
                order.order_id,
                order.symbol,
                if reason.is_accepted() {
                    "accept"
                } else {
                    "reject"
                },
                reason.as_str()
            );
            let digest = hex::encode(Sha256::digest(event.as_bytes()));
            publisher
                .send_multipart([event.as_bytes(), digest.as_bytes()], 0)
                .context("PUB send")?;
        }
        let t_end = clock.now_ns();
        last_end = t_end;
        if (k as u64) >= args.warmup {
            let set = if reason.is_accepted() {
                &mut accepted_set
            } else {
                &mut rejected_set
            };
            set.record(t_sched, t_in, t_decided, t_end);
        }
    }

    let orders = n as u64;
    let elapsed_s = (last_end.saturating_sub(t0)) as f64 / 1e9;
    let mut report = Report {
        command: "baseline".into(),
        input: args.file.display().to_string(),
        schedule: match rate {
            None => "rate max".into(),
            Some(r) => format!("rate {r}/s"),
        },
        orders,
        accepted,
        rejected: orders - accepted,
        rejected_by_reason: by_reason,
        warmup: args.warmup.min(orders),
        elapsed_s,
        throughput_per_s: if elapsed_s > 0.0 {
            orders as f64 / elapsed_s
        } else {
            0.0
        },
        bad_input: file.skipped(),
        max_batch: 1,
        ..Report::default()
    };
    report.risk.target = args.risk.clone();
    report.risk.timeout_ms = args.timeout_ms;
    report.risk.batches = orders;
    report.risk.mean_batch = 1.0;
    report.egress.target = args.out.clone();
    report.egress.orders = accepted - undeliverable;
    report.set_latency(&accepted_set, &rejected_set);
    print!("{}", report.table());
    println!("  (baseline: one synchronous JSON REQ per order, PUSH, PUB with a per-message SHA-256, no journal)");
    if undeliverable > 0 {
        println!("  {undeliverable} accepted orders could not be pushed within {PUSH_WAIT_MS} ms");
    }

    if let Some(path) = &args.report {
        let mut value = serde_json::to_value(&report).context("report to JSON")?;
        if let Some(map) = value.as_object_mut() {
            map.insert("baseline".into(), serde_json::Value::Bool(true));
        }
        let text = serde_json::to_string_pretty(&value).context("report to JSON")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.hgrm {
        let mut all = accepted_set;
        all.merge(&rejected_set);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        write_hgrm(&all.total, &mut f)
            .and_then(|()| f.flush())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orders::{OrderKind, Side};

    #[test]
    fn json_request_is_the_source_designs() {
        let o = Order {
            order_id: 9,
            price: 1_852_500,
            qty: 100,
            account: 3,
            symbol: Symbol::new("AAPL").expect("symbol"),
            side: Side::Sell,
            kind: OrderKind::New,
            ts_ns: 0,
        };
        assert_eq!(
            risk_json(&o),
            r#"{"symbol":"AAPL","quantity":100,"price":185.25,"account":3,"order_id":9,"side":"SELL","kind":"new"}"#
        );
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max").expect("max"), None);
        assert_eq!(parse_rate("1000").expect("n"), Some(1000));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
