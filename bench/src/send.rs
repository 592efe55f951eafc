//! `bench send FILE --to ENDPOINT`: feed `engine run` from an order file.
//!
//! Connects a ZeroMQ PUSH socket to the engine's PULL ingress (`[ingress] bind` of its config)
//! and sends every order of the file (CSV, binary or LOBSTER, plain or gzipped), as the engine
//! reads them (`engine/src/frames.rs`, docs/formats/egress.md "Ingress frame"):
//!
//! - `--format binary` (default): binary ingress frames, `ORDS` header and up to `--batch`
//!   48-byte orders each (1..=1024);
//! - `--format json`: one JSON order per message,
//!   `{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":100,"price":185.25,"kind":"new"}`.
//!
//! `--rate N` paces the orders open loop (order k is due at `t0 + k / N`; a frame carries the
//! orders due by the time it is built, at most `--batch`); `--rate max` sends as fast as the
//! engine takes them. A send never blocks for ever: with no engine connected (or one that
//! pushes back) it waits, saying so after [`WAIT_REPORT_AFTER`] and then every
//! [`WAIT_REPORT_EVERY`] with the endpoint.
//! At the end the socket lingers until ZeroMQ has handed every message to the engine (at most
//! `--linger-ms`), so that the process ending does not drop the last frames.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use engine::frames::encode_ingress_frame;
use engine::limits::INGRESS_FRAME_ORDERS_MAX;
use orders::files::{LoadOptions, OrderFile};
use orders::{format_price_ticks, Order, Symbol};

use crate::baseline::{parse_rate, wait_until};

/// How often a send that is waiting for the engine says so again.
pub const WAIT_REPORT_EVERY: Duration = Duration::from_secs(5);
/// How long a wait lasts before it is first reported.
pub const WAIT_REPORT_AFTER: Duration = Duration::from_millis(500);
/// How often the progress line is redrawn on a terminal.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Poll interval while the engine does not take a message.
const WAIT_POLL_MS: i64 = 100;

/// Wire format of the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendFormat {
    /// Binary ingress frames (`ORDS`, up to --batch orders each).
    Binary,
    /// One JSON order per message.
    Json,
}

/// `bench send` arguments.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Order file (CSV, binary or LOBSTER, plain or gzipped).
    pub file: PathBuf,
    /// The engine's ingress endpoint (its config's `[ingress] bind`), e.g.
    /// tcp://127.0.0.1:5590. The PUSH socket connects to it.
    #[arg(long, value_name = "ENDPOINT")]
    pub to: String,
    /// Orders per second (open loop), or `max` (as fast as the engine takes them).
    #[arg(long, default_value = "max", value_name = "N|max")]
    pub rate: String,
    /// Message format: `binary` ingress frames or one `json` order per message.
    #[arg(long, value_enum, default_value_t = SendFormat::Binary)]
    pub format: SendFormat,
    /// Most orders per binary frame (1..=1024; ignored for json).
    #[arg(long, default_value_t = INGRESS_FRAME_ORDERS_MAX, value_name = "N")]
    pub batch: usize,
    /// Send only the first N orders of the file.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Symbol for LOBSTER files whose name does not carry one.
    #[arg(long)]
    pub symbol: Option<String>,
    /// Skip and count up to N bad input lines instead of stopping at the first.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_errors: u64,
    /// At the end, wait at most this long for ZeroMQ to hand the last messages to the engine.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub linger_ms: i32,
    /// No progress line even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// The JSON message of one order, in the keys the engine's ingress reads.
pub fn order_json(o: &Order) -> String {
    format!(
        r#"{{"order_id":{},"account":{},"symbol":"{}","side":"{}","qty":{},"price":{},"kind":"{}","ts_ns":{}}}"#,
        o.order_id,
        o.account,
        o.symbol,
        o.side.as_str(),
        o.qty,
        format_price_ticks(o.price),
        o.kind.as_str(),
        o.ts_ns
    )
}

/// Says when a send is waiting for the engine: first once it has waited [`WAIT_REPORT_AFTER`],
/// then every `every`.
#[derive(Debug)]
struct WaitReport {
    endpoint: String,
    every: Duration,
    last: Option<Instant>,
    since: Option<Instant>,
}

impl WaitReport {
    fn on_wait(&mut self, sent: u64, now: Instant) -> Option<String> {
        let since = *self.since.get_or_insert(now);
        // A connection being set up (a few ms) is not a missing engine.
        if now.saturating_duration_since(since) < WAIT_REPORT_AFTER {
            return None;
        }
        if self
            .last
            .is_some_and(|l| now.saturating_duration_since(l) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        Some(format!(
            "waiting for the engine at {} to take orders ({sent} sent so far, waiting \
             {} s): is `engine run` up, with this [ingress] bind?",
            self.endpoint,
            now.saturating_duration_since(since).as_secs()
        ))
    }

    fn taken(&mut self) {
        self.since = None;
        self.last = None;
    }
}

/// Offers one message until the engine takes it.
fn send_one(
    socket: &zmq::Socket,
    bytes: &[u8],
    sent: u64,
    wait: &mut WaitReport,
) -> anyhow::Result<()> {
    loop {
        match socket.send(bytes, zmq::DONTWAIT) {
            Ok(()) => {
                wait.taken();
                return Ok(());
            }
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                if let Some(line) = wait.on_wait(sent, Instant::now()) {
                    tracing::warn!("{line}");
                }
                match socket.poll(zmq::POLLOUT, WAIT_POLL_MS) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(e).context("poll on the PUSH socket"),
                }
            }
            Err(e) => return Err(e).context("send on the PUSH socket"),
        }
    }
}

/// Runs `bench send`.
pub fn run(args: SendArgs) -> anyhow::Result<ExitCode> {
    let rate = parse_rate(&args.rate)?;
    if args.batch == 0 || args.batch > INGRESS_FRAME_ORDERS_MAX {
        bail!(
            "--batch {}: expected 1..={INGRESS_FRAME_ORDERS_MAX} orders per frame",
            args.batch
        );
    }
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
        .with_context(|| format!("cannot load the order file {}", args.file.display()))?;
    for line in file.skipped_report() {
        tracing::warn!("skipped {line}");
    }
    let orders = &file.orders()[..args.limit.unwrap_or(usize::MAX).min(file.len())];

    let ctx = zmq::Context::new();
    let push = ctx
        .socket(zmq::PUSH)
        .context("cannot create the PUSH socket")?;
    // Queue nothing for an engine that is not connected: the wait is seen and reported.
    push.set_immediate(true).context("ZMQ_IMMEDIATE")?;
    push.set_linger(args.linger_ms).context("ZMQ_LINGER")?;
    push.connect(&args.to)
        .with_context(|| format!("cannot connect to {}", args.to))?;
    tracing::info!(
        "{} orders from {} to {} ({}, rate {})",
        orders.len(),
        args.file.display(),
        args.to,
        match args.format {
            SendFormat::Binary => format!("binary frames of up to {} orders", args.batch),
            SendFormat::Json => "one JSON order per message".to_owned(),
        },
        args.rate
    );

    // A progress bar on a terminal only, with text logs (orders::logging).
    let progress = (!args.no_progress && orders::logging::progress_on_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(orders.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "bench send: {pos}/{len} orders ({per_sec}) [{bar:30}]",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut wait = WaitReport {
        endpoint: args.to.clone(),
        every: WAIT_REPORT_EVERY,
        last: None,
        since: None,
    };
    let t0 = Instant::now();
    let now_ns = || u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    let due_ns = |k: usize| -> u64 {
        rate.map_or(0, |r| {
            u64::try_from((k as u128).saturating_mul(1_000_000_000) / u128::from(r))
                .unwrap_or(u64::MAX)
        })
    };
    let mut last_progress = t0;
    let mut messages = 0u64;
    let mut k = 0usize;
    while k < orders.len() {
        wait_until(
            due_ns(k),
            now_ns,
            std::thread::sleep,
            std::thread::yield_now,
        );
        let n = match args.format {
            SendFormat::Json => {
                send_one(
                    &push,
                    order_json(&orders[k]).as_bytes(),
                    k as u64,
                    &mut wait,
                )?;
                1
            }
            SendFormat::Binary => {
                // The orders due by now, at most --batch of them (all of them at --rate max).
                let now = now_ns();
                let mut end = k + 1;
                while end < orders.len() && end - k < args.batch && due_ns(end) <= now {
                    end += 1;
                }
                send_one(
                    &push,
                    &encode_ingress_frame(&orders[k..end]),
                    k as u64,
                    &mut wait,
                )?;
                end - k
            }
        };
        k += n;
        messages += 1;
        if let Some(bar) = &progress {
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                bar.set_position(k as u64);
            }
        }
    }
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let took = t0.elapsed();
    tracing::info!(
        "handing the last messages to the engine (at most {} ms)",
        args.linger_ms
    );
    drop(push);
    drop(ctx);
    tracing::info!(
        "sent {} orders in {messages} messages to {} in {:.3} s ({:.0} orders/s)",
        orders.len(),
        args.to,
        took.as_secs_f64(),
        orders.len() as f64 / took.as_secs_f64().max(1e-9)
    );
    tracing::info!(
        target: "hint",
        "next: the engine's metrics (engine_ingress_orders_total, engine_egress_orders_total) on \
         its [metrics] bind, e.g. `curl -s http://127.0.0.1:9100/metrics | grep _total`; the \
         decisions with `audit dump DIR` (its [journal] dir)"
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use orders::{OrderKind, Side};

    #[test]
    fn a_json_order_is_what_the_engine_ingress_parses() {
        let o = Order {
            order_id: 42,
            ts_ns: 9,
            price: 1_852_500,
            qty: 100,
            account: 7,
            symbol: Symbol::new("AAPL").unwrap_or_default(),
            side: Side::Sell,
            kind: OrderKind::Cancel,
        };
        let back =
            engine::frames::parse_json_order(order_json(&o).as_bytes()).map_err(|e| e.to_string());
        assert_eq!(back, Ok(o));
    }

    #[test]
    fn the_wait_is_reported_after_half_a_second_then_every_period() {
        let mut w = WaitReport {
            endpoint: "tcp://127.0.0.1:5590".into(),
            every: Duration::from_secs(5),
            last: None,
            since: None,
        };
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        assert_eq!(w.on_wait(3, t0), None);
        let first = w.on_wait(3, ms(500)).unwrap_or_default();
        assert!(
            first.contains("tcp://127.0.0.1:5590") && first.contains("3 sent"),
            "{first}"
        );
        assert_eq!(w.on_wait(3, ms(1_500)), None);
        assert!(w.on_wait(3, ms(5_500)).is_some());
        w.taken();
        assert_eq!(w.on_wait(4, ms(6_000)), None);
        assert!(w.on_wait(4, ms(6_500)).is_some());
    }
}
