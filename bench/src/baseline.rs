//! `bench baseline`: the source design, reproduced so that every benchmark run can print our
//! figures beside it.
//!
//! Per order, exactly as the source design's C++ engine does it:
//! 1. build a JSON risk request `{"symbol":"AAPL","quantity":100,"price":185.25,…}` and send it
//!    on a REQ socket; wait at most the timeout (100 ms) for the reply; `OK` accepts, anything
//!    else (or a timeout) rejects. After a timeout the REQ socket is closed and reopened (it
//!    cannot send again before it receives);
//! 2. PUSH an accepted order downstream (`--out`, connects), one message per order: the order's
//!    JSON (the request's keys) with an `input_seq` key, its index in the file, so that `bench
//!    sink` counts it and checks for duplicates, gaps and order;
//! 3. PUBlish an audit event (`--audit-pub`, binds) for every order: a two-part message, the
//!    event's JSON (`order_id`, symbol, verdict, reason) and its own hex SHA-256, with no chain
//!    and no journal (`bench sink --audit-sub` checks the digests).
//!
//! One synchronous round trip per order caps throughput at 1/RTT: that is the point of the
//! comparison. `--rate N` runs open loop like the engine's replay: order k is due at
//! `t0 + k / N`, and latency is measured from that scheduled time (no coordinated omission) to
//! the moment the PUSH of the order returned (a rejected order: to its verdict), so the figures
//! compare with the engine's (scheduled arrival → PUSH). The PUB comes after and is not in the
//! latency, but its time delays the next orders, which the schedule shows. `--rate max` sends
//! each order as soon as the previous one is done. The report has the engine's JSON keys plus
//! `"baseline": true` and `"audit_events"`.

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
    /// Downstream PUSH endpoint for accepted orders (connects), or `none`: one message per
    /// order, its JSON with an `input_seq` key (what `bench sink` counts).
    #[arg(long, default_value = "none")]
    pub out: String,
    /// PUB endpoint for the audit events, one per order (binds), or `none`: two parts, the
    /// event's JSON and its hex SHA-256 (`bench sink --audit-sub` checks them).
    #[arg(long, default_value = "none")]
    pub audit_pub: String,
    /// Orders per second (open loop: latency counts from each order's scheduled time), or
    /// `max` (each order as soon as the previous one is done).
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
    /// Write the latency distribution (HdrHistogram text format, µs) here, and the histogram
    /// beside it with the extension .hdr (HdrHistogram's V2 compressed format, ns).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
}

pub(crate) fn parse_rate(s: &str) -> anyhow::Result<Option<u64>> {
    if s.eq_ignore_ascii_case("max") {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => bail!("--rate {s:?}: expected a positive number of orders per second, or `max`"),
    }
}

/// Nanoseconds per second.
const NS_PER_S: u128 = 1_000_000_000;
/// A scheduled wait longer than this sleeps; a shorter one yields until the order is due.
///
/// The source design's engine takes orders as they come; this harness paces them, and paces
/// so that its own lateness stays near zero (it yields the core for the last stretch rather
/// than sleep, as a sleep on this VM ends ~25 µs late). Sleeping all the way instead (as the
/// engine's replay does with `idle backoff`) was tried: at 10 k/s the baseline then fell behind
/// its schedule (a JSON round trip of ~87 µs plus ~28 µs of lateness exceed the 100 µs between
/// orders), and its latency became its own queue (docs/results.md, fourth session).
const PACE_SLEEP_MIN_NS: u64 = 200_000;
/// A sleep ends this long before the order is due (the kernel wakes late, not early).
const PACE_SLEEP_MARGIN_NS: u64 = 100_000;

/// When order `k` of an open-loop run at `per_s` orders per second is due: `t0 + k × 1e9 /
/// per_s` (exact, no drift from rounding each step; saturates instead of wrapping).
pub fn scheduled_ns(t0_ns: u64, k: u64, per_s: u64) -> u64 {
    let offset = u128::from(k) * NS_PER_S / u128::from(per_s.max(1));
    t0_ns.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// Nanoseconds still to wait at `now_ns` for a deadline `t_ns`; 0 once it has come or passed.
/// Never wraps: the clock may pass the deadline at any moment.
pub fn sleep_needed(now_ns: u64, t_ns: u64) -> u64 {
    t_ns.saturating_sub(now_ns)
}

/// One step of the wait for a scheduled order, decided from a single clock read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaceStep {
    /// The order is due: send it.
    Due,
    /// Far from due: sleep this long (a margin before the deadline).
    Sleep(Duration),
    /// Near: yield the core and look again.
    Yield,
}

/// What to do at `now_ns` while waiting for `t_ns`.
pub fn pace_step(now_ns: u64, t_ns: u64) -> PaceStep {
    match sleep_needed(now_ns, t_ns) {
        0 => PaceStep::Due,
        left if left > PACE_SLEEP_MIN_NS => PaceStep::Sleep(Duration::from_nanos(
            left.saturating_sub(PACE_SLEEP_MARGIN_NS),
        )),
        _ => PaceStep::Yield,
    }
}

/// Waits until `now()` reaches `t_ns`, reading the clock once per step (a comparison and a
/// subtraction on two different reads is how the old loop wrapped and slept for centuries).
pub fn wait_until(
    t_ns: u64,
    mut now: impl FnMut() -> u64,
    mut sleep: impl FnMut(Duration),
    mut yield_now: impl FnMut(),
) {
    loop {
        match pace_step(now(), t_ns) {
            PaceStep::Due => return,
            PaceStep::Sleep(d) => sleep(d),
            PaceStep::Yield => yield_now(),
        }
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

/// What `--out` receives for an accepted order: the request's JSON with `input_seq` first.
fn pushed_json(input_seq: u64, request: &str) -> String {
    let keys = request.strip_prefix('{').unwrap_or(request);
    format!(r#"{{"input_seq":{input_seq},{keys}"#)
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
        tracing::warn!("skipped {line}");
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

    // As the engine's stage threads (engine/src/pipeline.rs): a sleep until an order is due
    // ends within 1 µs instead of the default 50 µs timer slack.
    if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
        tracing::warn!("timer slack unchanged ({e}); sleeps may end up to 50 µs late");
    }
    let clock = Clock::new();
    let mut accepted_set = LatencySet::new();
    let mut rejected_set = LatencySet::new();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let (mut accepted, mut undeliverable, mut audit_events) = (0u64, 0u64, 0u64);
    let t0 = clock.now_ns();
    let mut last_end = t0;
    for k in 0..n {
        let order = file.get(k);
        let t_sched = match rate {
            None => clock.now_ns(),
            Some(per_s) => {
                let t = scheduled_ns(t0, k as u64, per_s);
                wait_until(
                    t,
                    || clock.now_ns(),
                    std::thread::sleep,
                    std::thread::yield_now,
                );
                t
            }
        };
        let t_in = clock.now_ns();
        let request = risk_json(&order);
        let reason = risk.check(&request, args.timeout_ms)?;
        let t_decided = clock.now_ns();
        let t_end = if reason.is_accepted() {
            accepted += 1;
            if let Some(push) = &push {
                if push
                    .send(pushed_json(k as u64, &request).as_bytes(), 0)
                    .is_err()
                {
                    undeliverable += 1;
                }
            }
            clock.now_ns()
        } else {
            *by_reason.entry(reason.as_str().to_owned()).or_default() += 1;
            t_decided
        };
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
            audit_events += 1;
        }
        last_end = clock.now_ns();
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
            map.insert("audit_events".into(), audit_events.into());
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
        // The histogram in HdrHistogram's V2 compressed format, beside it (`bench plot`).
        let hdr = engine::latency::hdr_path_beside(path);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&hdr)
                .with_context(|| format!("cannot create {}", hdr.display()))?,
        );
        engine::latency::write_hdr(&all.total, &mut f)
            .and_then(|()| f.flush())
            .with_context(|| format!("cannot write {}", hdr.display()))?;
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
    fn the_push_is_the_order_with_its_input_seq() {
        let pushed = pushed_json(41, r#"{"symbol":"AAPL","quantity":100}"#);
        assert_eq!(pushed, r#"{"input_seq":41,"symbol":"AAPL","quantity":100}"#);
        let v: serde_json::Value = serde_json::from_str(&pushed).expect("JSON");
        assert_eq!(v["input_seq"], 41);
    }

    #[test]
    fn a_deadline_already_passed_needs_no_sleep() {
        // The old arithmetic (`t - now`) wraps here to ~584 years.
        assert_eq!(sleep_needed(1_000_001, 1_000_000), 0);
        assert_eq!(sleep_needed(u64::MAX, 0), 0);
        assert_eq!(sleep_needed(1_000_000, 1_000_000), 0);
        assert_eq!(sleep_needed(999_000, 1_000_000), 1_000);
        assert_eq!(pace_step(1_000_001, 1_000_000), PaceStep::Due);
        assert_eq!(pace_step(999_999, 1_000_000), PaceStep::Yield);
        assert_eq!(
            pace_step(0, 1_000_000),
            PaceStep::Sleep(Duration::from_nanos(900_000))
        );
    }

    #[test]
    fn the_clock_passing_the_deadline_between_steps_ends_the_wait() {
        // A clock that is 1 ns early at one read and 5 µs late at the next: the race that made
        // `bench baseline --rate N` sleep for ever (check on one read, subtract on another).
        let t = 10_000_000u64;
        let reads = [t - 300_000, t - 1, t + 5_000];
        let mut i = 0;
        let mut slept = Duration::ZERO;
        let mut yields = 0;
        wait_until(
            t,
            || {
                let v = reads[i.min(reads.len() - 1)];
                i += 1;
                v
            },
            |d| slept += d,
            || yields += 1,
        );
        assert_eq!(i, 3, "one clock read per step");
        assert_eq!(
            slept,
            Duration::from_nanos(200_000),
            "never past the deadline"
        );
        assert_eq!(yields, 1);
    }

    #[test]
    fn schedule_is_exact_and_saturates() {
        assert_eq!(scheduled_ns(5, 0, 10_000), 5);
        assert_eq!(scheduled_ns(5, 3, 10_000), 300_005);
        assert_eq!(scheduled_ns(0, 3, 3), 1_000_000_000);
        assert_eq!(scheduled_ns(u64::MAX - 1, 10, 1), u64::MAX);
        assert_eq!(scheduled_ns(0, u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("max").expect("max"), None);
        assert_eq!(parse_rate("1000").expect("n"), Some(1000));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
