//! Command-line flags of the `engine` binary (raw), turned into validated settings by
//! [`crate::app`].

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

use crate::limits::{
    EGRESS_SNDHWM_MESSAGES_DEFAULT, EGRESS_SNDHWM_MESSAGES_MAX, MAX_BATCH_ORDERS_DEFAULT,
    RING_CAPACITY_ORDERS_DEFAULT, RISK_TIMEOUT_MS_DEFAULT,
};
use crate::schedule::Rate;

/// The order engine: pinned stages on lock-free rings, risk over REQ, journal first, PUSH out.
#[derive(Debug, Parser)]
#[command(name = "engine", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// `--log-format text|json` (RUST_LOG sets the levels).
    #[command(flatten)]
    pub log: orders::logging::LogArgs,
}

/// The engine's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run as a long-lived service: orders in over ZeroMQ PULL, until SIGINT/SIGTERM.
    Run(RunArgs),
    /// Replay an order file (CSV, binary or LOBSTER) through the full pipeline and report
    /// its latency distribution.
    Replay(Box<ReplayArgs>),
}

/// `engine run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service configuration (TOML; see examples/engine.toml for every key).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,

    /// Encoding of the journal.pub_endpoint feed, overriding journal.pub_format: binary
    /// (batches of record entries) or json (one JSON object per record: order_id, seq,
    /// verdict, reason, chain hash; for the source design's audit service).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub audit_format: Option<AuditFormat>,
}

/// `--audit-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuditFormat {
    /// Batches of binary record entries.
    Binary,
    /// One JSON object per record.
    Json,
}

impl From<AuditFormat> for audit::FeedFormat {
    fn from(f: AuditFormat) -> audit::FeedFormat {
        match f {
            AuditFormat::Binary => audit::FeedFormat::Binary,
            AuditFormat::Json => audit::FeedFormat::Json,
        }
    }
}

/// A core for `--pin`: a core id, or `-` for "not pinned".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CoreSpec(pub Option<usize>);

impl FromStr for CoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "-" | "none" => Ok(CoreSpec(None)),
            t => t
                .parse::<usize>()
                .map(|c| CoreSpec(Some(c)))
                .map_err(|_| format!("{t:?} is not a core id or '-'")),
        }
    }
}

/// `engine replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The order file: CSV, binary (.bin) or a LOBSTER message file (.csv named
    /// `*_message_*`); the format is detected from the name and content unless --format.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Open-loop send rate in orders per second (`100000`, `100k`, `1.2M`), or `max` to send
    /// as fast as the pipeline takes them.
    #[arg(long, default_value = "max", value_name = "N|max")]
    pub rate: Rate,

    /// Send at the file's own timestamps (`recorded`), optionally sped up
    /// (`recorded:10` = ten times faster). Overrides --rate.
    #[arg(long, value_name = "recorded[:SPEEDUP]", value_parser = crate::schedule::parse_pace)]
    pub pace: Option<f64>,

    /// Risk service: `embedded` (a server thread in this process over inproc), `inline` (the
    /// same checks as a direct call on the engine's thread: no server, no socket, no timeout;
    /// for one-host deployments and for measuring the engine's own cost) or one or more
    /// risk-server endpoints, tried in order on failure (`tcp://127.0.0.1:5560 tcp://...`).
    #[arg(long, num_args = 1.., default_value = "embedded", value_name = "embedded|inline|ENDPOINT")]
    pub risk: Vec<String>,

    /// Limits file for the embedded or inline risk checks (TOML). Without it the built-in
    /// limits apply: examples/limits.toml as it was when the engine was built.
    #[arg(long, value_name = "FILE")]
    pub limits: Option<PathBuf>,

    /// Longest wait for one risk batch; on timeout the whole batch is rejected risk-timeout.
    #[arg(long, default_value_t = RISK_TIMEOUT_MS_DEFAULT, value_name = "MS")]
    pub risk_timeout_ms: u64,

    /// Protocol to the remote risk service (--risk ENDPOINT). binary: ours, one request per
    /// batch. json: the source design's, for an old JSON risk service during a migration:
    /// {"symbol","quantity","price"} per order, OK accepts and any other reply rejects with
    /// reason risk-refused (its first 16 bytes kept in the journal record). It costs ONE
    /// ROUND TRIP PER ORDER (batches of 1: throughput is capped at 1/RTT); the same timeout,
    /// Lazy Pirate reconnect and failover apply per order. No hello or void (the old service
    /// has none). docs/migration.md.
    #[arg(long, value_enum, default_value_t = crate::config::RiskProtocol::Binary, value_name = "PROTOCOL")]
    pub risk_protocol: crate::config::RiskProtocol,

    /// Journal directory (created if absent). A non-empty journal needs --resume.
    #[arg(long, default_value = crate::config::JOURNAL_DIR_DEFAULT, value_name = "DIR")]
    pub journal: PathBuf,

    /// Journal durability: `none` (page cache; survives a process crash), `batch` (one msync
    /// per batch, before its orders go downstream: survives a power loss), `interval`,
    /// `interval:RECORDS:MS` (msync every N records or T ms) or `always` (msync per record).
    /// docs/reliability.md has what each survives.
    #[arg(long, default_value = "none", value_name = "POLICY")]
    pub durability: String,

    /// Size of each pre-allocated journal segment in bytes.
    #[arg(long, default_value_t = crate::config::SEGMENT_SIZE_BYTES_DEFAULT, value_name = "BYTES")]
    pub segment_size_bytes: u64,

    /// Most account names (`ACC11` in a CSV file's account column) the journal's name table
    /// may hold; each gets an id from 2^31 up, recorded in the journal before its first use.
    /// A name beyond it is an error. Default 65536, or what half a journal segment holds
    /// (the table is restated at the start of every segment). docs/formats/audit-log.md.
    #[arg(long, value_name = "N")]
    pub max_account_names: Option<usize>,

    /// Risk-state snapshot (inline and embedded risk) after this many decisions, so that a
    /// restart replays only the journal after it (0: no snapshots). docs/engine.md, "Resume".
    #[arg(long, default_value_t = crate::limits::SNAPSHOT_EVERY_RECORDS_DEFAULT, value_name = "N")]
    pub snapshot_every_records: u64,

    /// … or this long after the last one, with at least min(N, 65536) decisions since
    /// (0: not by time).
    #[arg(long, default_value_t = crate::limits::SNAPSHOT_EVERY_MS_DEFAULT, value_name = "MS")]
    pub snapshot_every_ms: u64,

    /// Sign checkpoints of the journal head with this ed25519 key file (`audit keygen`).
    #[arg(long, value_name = "FILE")]
    pub checkpoint_key: Option<PathBuf>,

    /// Publish every journal record live on this PUB endpoint. A non-loopback endpoint needs
    /// --allow or --plain-credentials (or --insecure). connect:tcp://HOST:PORT connects the
    /// PUB socket to a subscriber that binds (the source design's audit service binds its
    /// SUB) instead of binding.
    #[arg(long, value_name = "ENDPOINT")]
    pub audit_pub: Option<String>,

    /// Encoding of the --audit-pub feed. binary: batches of record entries (audit tail).
    /// json: one JSON object per record (order_id, seq, verdict, reason, the record's chain
    /// hash and the order's fields), for the source design's audit service; a subscriber
    /// that missed some gap-fills with audit serve + audit tail --json (docs/migration.md).
    #[arg(long, value_enum, default_value_t = AuditFormat::Binary, value_name = "FORMAT")]
    pub audit_format: AuditFormat,

    /// Log in to the risk-servers (--risk ENDPOINT) and the downstream (--out) with the PLAIN
    /// credentials in FILE: its first USER:PASSWORD line; the file must be mode 0600. Needed
    /// when they run with --plain-credentials. Never printed.
    #[arg(long, value_name = "FILE")]
    pub credentials: Option<PathBuf>,

    /// Accept audit feed (--audit-pub) subscribers only from these networks (CIDR, e.g.
    /// 10.1.0.0/16, or one address; repeatable). Turns on ZAP authentication.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,

    /// Audit feed subscribers must log in with PLAIN credentials listed in FILE (USER:PASSWORD
    /// lines, mode 0600). PLAIN authenticates; it does not encrypt (docs/security.md).
    #[arg(long, value_name = "FILE")]
    pub plain_credentials: Option<PathBuf>,

    /// Allow a non-loopback --audit-pub endpoint without authentication (anyone who reaches it
    /// reads every decision).
    #[arg(long)]
    pub insecure: bool,

    /// CURVE: the engine's key pair file (`audit curve-keygen`, mode 0600). The --audit-pub
    /// feed becomes a CURVE server with it (subscribers give its .curve.pub), and the risk and
    /// egress connections use it as their client key (else a fresh pair per run).
    #[arg(long, value_name = "FILE")]
    pub curve_key: Option<PathBuf>,

    /// CURVE: accept on --audit-pub only the subscribers whose public keys are in FILE (z85,
    /// one per line). Needs --curve-key.
    #[arg(long, value_name = "FILE")]
    pub curve_clients: Option<PathBuf>,

    /// CURVE: the risk-servers' public key file (their .curve.pub): the risk link is
    /// encrypted, and a server without the matching secret key is refused at start-up.
    #[arg(long, value_name = "FILE")]
    pub risk_server_key: Option<PathBuf>,

    /// CURVE: the downstream's (--out) public key file: the egress link is encrypted.
    #[arg(long, value_name = "FILE")]
    pub egress_server_key: Option<PathBuf>,

    /// Where accepted orders go: a PUSH endpoint to connect to (e.g. a `bench sink`), or
    /// `none` to only measure.
    #[arg(long, default_value = "none", value_name = "ENDPOINT|none")]
    pub out: String,

    /// Send high-water mark of the egress PUSH socket, in frames (1..=16384). A frame carries
    /// at most 65536 / this many orders (and at most --max-batch), so ZeroMQ's queue holds
    /// at most 64 Ki orders whatever the value: frames queued in ZeroMQ are lost if the engine
    /// is killed, and `--resume` re-sends a journal tail that covers them. A short queue of
    /// big frames fills while ZeroMQ's I/O thread is slow to wake (back-pressure at 100 k/s);
    /// a long one of small frames absorbs that.
    #[arg(long, default_value_t = EGRESS_SNDHWM_MESSAGES_DEFAULT, value_name = "FRAMES",
          value_parser = clap::value_parser!(i32).range(1..=EGRESS_SNDHWM_MESSAGES_MAX as i64))]
    pub out_hwm: i32,

    /// Egress messages for --out. batch: one binary frame per batch of up to --max-batch
    /// orders (the default; docs/formats/egress.md). order: one binary frame per order (the
    /// same layout, count 1), for consumers that count one message per order. json: one JSON
    /// object per accepted order, {"order_id","symbol","quantity","price","side"} (the source
    /// design's fields plus order_id and side). Back-pressure and the --resume redelivery
    /// (re-sent in the same format) are the same in each.
    #[arg(long, value_enum, default_value_t = crate::out_format::OutFormat::Batch, value_name = "FORMAT")]
    pub out_format: crate::out_format::OutFormat,

    /// Leave the first N orders of this run out of the latency histograms.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub warmup: u64,

    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,

    /// Write the latency percentile distribution here (HdrHistogram text format, µs), and
    /// the histogram itself beside it with the extension .hdr (HdrHistogram's V2 compressed
    /// format, ns; what `bench plot` reads).
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,

    /// Continue the journal in --journal: start after the last order it decided.
    #[arg(long, conflicts_with = "fresh")]
    pub resume: bool,

    /// Start a new journal in --journal: delete the journal files already there (segments,
    /// checkpoints) first. Refused if the directory holds any other file or another process
    /// has the journal open.
    #[arg(long)]
    pub fresh: bool,

    /// Skip up to N malformed lines of the order file (each is reported) instead of failing.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_errors: u64,

    /// Symbol for LOBSTER files (default: from the file name, e.g. AAPL_2012-06-21_...).
    #[arg(long, value_name = "SYM")]
    pub symbol: Option<String>,

    /// Accounts to spread LOBSTER orders over.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub lobster_accounts: u32,

    /// Order file format (default: detect from the name and content).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<FormatArg>,

    /// Most orders a stage handles as one unit (one risk request, one egress frame).
    #[arg(long, default_value_t = MAX_BATCH_ORDERS_DEFAULT, value_name = "N")]
    pub max_batch: usize,

    /// Slots of each ring between stages.
    #[arg(long, default_value_t = RING_CAPACITY_ORDERS_DEFAULT, value_name = "N")]
    pub ring_capacity: usize,

    /// Idle strategy: spin, yield, backoff or auto, for all stages (`backoff`), in stage order
    /// (`spin,backoff,backoff,backoff`) or by name (`ingress=spin,risk=yield`).
    #[arg(long, default_value = "backoff", value_name = "STRATEGY")]
    pub idle: String,

    /// Pin stages to cores: in stage order ingress,risk,journal,egress (`0,1,1,0`; `-` = not
    /// pinned) or by name (`ingress=0,journal=1`). With --threading shared the one thread
    /// takes the first core given.
    #[arg(long, value_name = "CORES")]
    pub pin: Option<String>,

    /// How stages map onto threads: `dedicated` (one thread per stage, for a tuned host with a
    /// core for each), `split` (ingress and risk on one thread, journal and egress on another:
    /// the checks and the SHA-256 chain on two cores), `shared` (all four stages in one duty
    /// cycle on one thread: a hop between stages is a ring push and pop, no wake-up) or `auto`
    /// (dedicated when the CPU affinity mask has a core for every stage thread plus one for
    /// ZeroMQ's I/O thread; else split for --rate max with --risk inline on 2 or more cores;
    /// else shared). With `shared`, --idle's ingress strategy is the thread's; with `split`,
    /// each thread takes its first stage's.
    #[arg(long, value_enum, default_value_t = crate::threading::ThreadingKind::Auto, value_name = "MODE")]
    pub threading: crate::threading::ThreadingKind,

    /// Lock all of the process's memory (mlockall) before the replay starts, so that no page
    /// of a ring or the journal is paged out (needs RLIMIT_MEMLOCK or CAP_IPC_LOCK).
    #[arg(long)]
    pub lock_memory: bool,

    /// Serve metrics over HTTP on this address (ip:port, e.g. `127.0.0.1:9100`; port 0 picks
    /// one) during the replay, in the OpenMetrics text format that Prometheus scrapes
    /// (docs/monitoring.md). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// No progress bar even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// The project's CSV (docs/formats/orders.md).
    Csv,
    /// The memory-mapped binary format (`bench gen --out FILE.bin`).
    #[value(alias = "bin")]
    Binary,
    /// A LOBSTER message file, plain or gzipped.
    Lobster,
}

impl From<FormatArg> for orders::files::Format {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Csv => orders::files::Format::Csv,
            FormatArg::Binary => orders::files::Format::Binary,
            FormatArg::Lobster => orders::files::Format::Lobster,
        }
    }
}
