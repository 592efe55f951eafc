//! `risk-server`: the pre-trade risk service on a ZeroMQ REP socket.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use risk::limits::{MAX_BATCH_ORDERS_DEFAULT, MAX_BATCH_ORDERS_MAX};
use risk::{replay_journal, Checker, JsonReplies, Limits, Server, Service, ServiceOptions};

/// Pre-trade risk checks over ZeroMQ REQ/REP.
///
/// Answers binary order batches (one verdict per order), the source design's JSON orders
/// ({"symbol":"AAPL","quantity":100,"price":185.25} → OK / REJECT <reason>) and JSON admin
/// requests ({"admin":"halt"|"reduce"|"resume"|"reload"|"stats"|"snapshot"}, optionally with
/// "account" or "symbol") on the same socket. Protocol: docs/formats/risk-protocol.md.
///
/// Prints "listening on <endpoint>" on stdout for every bound endpoint once it serves (and,
/// with --metrics, "metrics on http://<ip:port>/metrics").
/// SIGHUP reloads the limits file without dropping state (a bad file is logged and the old
/// limits stay); SIGINT / SIGTERM stop it cleanly (exit code 0). Logs go to stderr as text
/// or JSON lines (--log-format; levels: RUST_LOG=debug|info|warn, default info). Exit code 1: unusable limits file, journal or
/// endpoint; 2: bad command line.
#[derive(Debug, Parser)]
#[command(name = "risk-server", version, verbatim_doc_comment)]
struct Args {
    /// The limits file (TOML; annotated example: examples/limits.toml). Every problem in it is
    /// reported at once. Reloaded on SIGHUP and on the admin request {"admin":"reload"}.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,

    /// Endpoint to bind the REP socket to: tcp://HOST:PORT, tcp://HOST:* (a free port, printed
    /// on stdout) or ipc:///path/to/socket. Repeat the flag to bind several endpoints.
    #[arg(long, value_name = "ENDPOINT", default_value = "tcp://127.0.0.1:5555")]
    bind: Vec<String>,

    /// Before serving, rebuild positions, open orders and exposure, remembered order ids,
    /// throttle state, reference prices and halt events by replaying the decision records of
    /// the audit journal in JOURNAL_DIR (written by the engine). A missing or damaged journal
    /// is an error.
    #[arg(long, value_name = "JOURNAL_DIR")]
    recover_from: Option<PathBuf>,

    /// Largest batch (orders per request) accepted; larger requests get a too-large error
    /// reply. Clients must use a max batch no larger than this.
    #[arg(long, value_name = "ORDERS", default_value_t = MAX_BATCH_ORDERS_DEFAULT,
          value_parser = parse_max_batch)]
    max_batch: usize,

    /// Accept connections only from these networks (CIDR, e.g. 10.1.0.0/16) or addresses
    /// (127.0.0.1: that host); repeatable. Enables ZAP authentication on every endpoint.
    #[arg(long, value_name = "CIDR", value_parser = zauth::parse_allow)]
    allow: Vec<ipnet::IpNet>,

    /// Require PLAIN credentials from a file of USER:PASSWORD lines (mode 0600). PLAIN
    /// authenticates but does not encrypt (docs/security.md).
    #[arg(long, value_name = "FILE")]
    plain_credentials: Option<PathBuf>,

    /// How JSON orders are answered. detailed: OK, REJECT <reason> or ERROR <text>.
    /// short: exactly OK or REJECT (never longer than 6 bytes): the source design's C++ engine
    /// reads the reply into a fixed 16-byte buffer, and REJECT price-collar (19 bytes) or an
    /// ERROR text overflows it. In short mode a JSON request that is not a valid order also
    /// gets REJECT; the reason or error is logged (info) and counted in the admin stats.
    /// Binary batches and admin requests are not affected.
    #[arg(long, value_name = "MODE", default_value = "detailed", value_parser = parse_json_replies)]
    json_replies: JsonReplies,

    /// CURVE: this server's key pair file (`audit curve-keygen`, mode 0600). Clients must
    /// connect with its public key (the .curve.pub file); the link is encrypted.
    #[arg(long, value_name = "FILE")]
    curve_key: Option<PathBuf>,

    /// CURVE: accept only the clients whose public keys are listed in FILE (z85, one per
    /// line; their .curve.pub files concatenated). Needs --curve-key.
    #[arg(long, value_name = "FILE", requires = "curve_key")]
    curve_clients: Option<PathBuf>,

    /// Allow binding a non-loopback endpoint without any authentication (anyone who can reach
    /// it may send orders and admin requests). Refused without this flag.
    #[arg(long)]
    insecure: bool,

    /// Serve metrics over HTTP on this address (ip:port, e.g. 127.0.0.1:9101; port 0 picks
    /// one, printed on stdout as "metrics on http://ADDR/metrics") in the OpenMetrics text
    /// format: requests, orders checked, verdicts by reason, bad requests, voids, hellos,
    /// reloads, authenticated connections (docs/monitoring.md). Off by default. The endpoint
    /// has no authentication: bind it to loopback unless Prometheus runs elsewhere.
    #[arg(long, value_name = "ADDR", value_parser = metrics_endpoint::parse_addr)]
    metrics: Option<std::net::SocketAddr>,
    /// `--log-format text|json` (RUST_LOG sets the levels).
    #[command(flatten)]
    log: orders::logging::LogArgs,
}

fn parse_json_replies(text: &str) -> Result<JsonReplies, String> {
    JsonReplies::parse(text).ok_or_else(|| format!("{text:?} is not short or detailed"))
}

fn parse_max_batch(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number: {e}"))?;
    if n == 0 || n > MAX_BATCH_ORDERS_MAX {
        return Err(format!("must be in 1..={MAX_BATCH_ORDERS_MAX}"));
    }
    Ok(n)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = orders::logging::init(&args.log) {
        orders::logging::print_final_error(&format!("risk-server: error: {e}"));
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            orders::logging::print_final_error(&format!("risk-server: error: {e:#}"));
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let limits = Limits::from_file(&args.config).context("loading the limits")?;
    if !limits.account_names.is_empty() {
        // The name table is the engine's: it sends it (names requests) after its hello. Until
        // a name is bound, orders of named accounts this server cannot name are refused
        // `unknown-account`, never checked under other limits.
        tracing::info!(
            names = limits.account_names.len(),
            "limits keyed by account name apply once a client sends its account name table"
        );
    }
    let mut checker = Checker::new(limits);
    if let Some(dir) = &args.recover_from {
        let stats = replay_journal(&mut checker, dir)
            .with_context(|| format!("recovering risk state from {}", dir.display()))?;
        tracing::info!(
            records = stats.records,
            decisions = stats.decisions,
            accepted = stats.accepted,
            skipped = stats.skipped,
            last_seq = stats.last_seq,
            open_orders = checker.open_orders(),
            "risk state recovered from the journal"
        );
        if stats.skipped > 0 {
            tracing::warn!(
                skipped = stats.skipped,
                "accepted journal events did not fit the rebuilt state and were skipped"
            );
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())
            .with_context(|| format!("installing the handler for signal {sig}"))?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing the SIGHUP handler")?;

    let ctx = zmq::Context::new();
    let mut service = Service::new(
        checker,
        ServiceOptions {
            max_batch_orders: args.max_batch,
            config_path: Some(args.config.clone()),
        },
    );
    service.set_json_replies(args.json_replies);
    if args.json_replies == JsonReplies::Short {
        tracing::info!("--json-replies short: JSON orders are answered exactly OK or REJECT");
    }
    let auth = zauth::ServerAuth {
        allow: args.allow.clone(),
        plain_credentials: args.plain_credentials.clone(),
        curve_key: args.curve_key.clone(),
        curve_clients: args.curve_clients.clone(),
        insecure: args.insecure,
    };
    if args.insecure {
        tracing::warn!("--insecure: remote endpoints accept unauthenticated peers");
    }
    let zap = zauth::ZapHandler::start(&ctx, &auth).context("starting ZAP authentication")?;
    let counters = service.counters();
    let mut server =
        Server::bind_secure(&ctx, &args.bind, service, &auth).context("binding the REP socket")?;
    let metrics = match args.metrics {
        None => None,
        Some(addr) => {
            let collector = risk::metrics::RiskCollector::new(
                counters,
                zap.as_ref().map(zauth::ZapHandler::shared_stats),
            );
            Some(
                metrics_endpoint::MetricsServer::start(
                    &addr.to_string(),
                    metrics_endpoint::registry_of(collector),
                    metrics_endpoint::POLL_INTERVAL_DEFAULT,
                )
                .context("--metrics")?,
            )
        }
    };
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        for ep in server.endpoints() {
            writeln!(out, "listening on {ep}").context("writing to stdout")?;
        }
        if let Some(m) = &metrics {
            writeln!(out, "metrics on http://{}/metrics", m.addr()).context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")?;
    }
    // systemd (Type=notify, deploy/systemd/): bound and recovered. A no-op without
    // $NOTIFY_SOCKET.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd of readiness: {e}");
    }
    server.run(&stop, &reload).context("serving")?;
    let stats = server.service().stats();
    tracing::info!(
        requests = stats.requests,
        batches = stats.batches,
        batch_orders = stats.batch_orders,
        json_orders = stats.json_orders,
        admin = stats.admin_requests,
        malformed = stats.malformed,
        too_large = stats.too_large,
        reloads = stats.reloads,
        "risk-server stopped"
    );
    Ok(ExitCode::SUCCESS)
}
