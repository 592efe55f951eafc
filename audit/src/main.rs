//! `audit`: verify, dump, serve and follow the Titanic audit journal; make checkpoint keys.
//!
//! Exit codes: 0 success; 1 the journal (or a live feed) is damaged or fails verification;
//! 2 usage, I/O or configuration errors.
#![forbid(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use audit::{
    kind_name, parse_hash, record_json, CheckpointPolicy, Durability, JournalError, Reader,
    TailOptions, VerifyOptions, VerifyReport, Writer, WriterOptions, KIND_DECISION, KIND_ORDER,
};
use clap::{Args, Parser, Subcommand};
use orders::{decode_decision, decode_order, format_price_ticks, Order};

/// The Titanic audit journal: verify it offline, dump it, serve it for gap fill, follow it
/// live, and make the key pair that signs its checkpoints.
#[derive(Debug, Parser)]
#[command(name = "audit", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// `--log-format text|json` (RUST_LOG sets the levels).
    #[command(flatten)]
    log: orders::logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Verify every record's hash, the links between segments, sequence continuity and the
    /// checkpoints. Exit 0 when intact, 1 at the first bad record, 2 on usage/I/O errors.
    Verify(VerifyArgs),
    /// Print records (decisions and orders decoded by name, other payloads as hex). An account
    /// of the named range is shown with its name (`account_name=`), from the journal's
    /// account-name records (kind 4).
    Dump(DumpArgs),
    /// Make an Ed25519 key pair for checkpoints: PREFIX.key (secret, mode 0600), PREFIX.pub.
    Keygen(KeygenArgs),
    /// Make a CURVE key pair for the encrypted links (docs/security.md): PREFIX.curve (the
    /// pair, mode 0600) and PREFIX.curve.pub (the public key for peers and client lists).
    CurveKeygen(CurveKeygenArgs),
    /// Answer gap-fill requests (REP) with records read from the journal files.
    Serve(ServeArgs),
    /// Follow the live feed, fill sequence gaps from `audit serve`, verify the chain.
    Tail(TailArgs),
    /// Open the journal for append and close it: cuts a torn tail left by a crash (what the
    /// engine does on restart) and prints what recovery found. Refuses (exit 1) on damage.
    Recover(RecoverArgs),
    /// Load generator for tests: append deterministic records, print each seq once appended.
    #[command(hide = true)]
    AppendTest(AppendTestArgs),
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// Journal directory.
    dir: PathBuf,
    /// Public key file (from `audit keygen`): check every checkpoint's signature and require
    /// at least one checkpoint.
    #[arg(long, value_name = "FILE")]
    pubkey: Option<PathBuf>,
    /// An outside record of the head, `SEQ:HASH` (hex): the journal must hold record SEQ
    /// with that hash (catches a cut-off tail or a rewritten log without checkpoints).
    #[arg(long, value_name = "SEQ:HASH")]
    expect_head: Option<String>,
    /// Verification threads (0 = one per core); segments are verified in parallel.
    #[arg(long, default_value_t = 0, value_name = "N")]
    threads: usize,
    /// Accept a partial record after the last one whose length word is still zero (a writer
    /// appending right now); reported instead of failing.
    #[arg(long)]
    allow_torn_tail: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// Journal directory.
    dir: PathBuf,
    /// First sequence number to print.
    #[arg(long, default_value_t = 1, value_name = "SEQ")]
    from: u64,
    /// Last sequence number to print (inclusive; default: the last record).
    #[arg(long, value_name = "SEQ")]
    to: Option<u64>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Path prefix: writes PREFIX.key (secret, mode 0600) and PREFIX.pub.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
    /// Write the secret key even though PREFIX lies inside a git work tree (refused by
    /// default: one `git add -A` would commit it). Keep keys outside the repository instead,
    /// e.g. `--out ~/.titanic/audit`.
    #[arg(long)]
    in_work_tree: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Journal directory (it may not exist yet).
    dir: PathBuf,
    /// ZeroMQ endpoint to bind the REP socket to (`tcp://127.0.0.1:*` picks a free port; the
    /// bound endpoint is printed on the first line of stdout). An endpoint that is not
    /// loopback, ipc or inproc needs --allow or --plain-credentials, or --insecure.
    #[arg(long, value_name = "ENDPOINT")]
    bind: String,
    /// Serve metrics over HTTP on this address (ip:port, e.g. 127.0.0.1:9102; port 0 picks
    /// one, printed on stdout as "metrics on http://ADDR/metrics" after the listening line) in
    /// the OpenMetrics text format: requests answered, records and bytes sent, errors by
    /// status, the head sequence, authenticated connections (docs/monitoring.md). Off by
    /// default. The endpoint has no authentication: bind it to loopback unless Prometheus runs
    /// elsewhere.
    #[arg(long, value_name = "ADDR", value_parser = metrics_endpoint::parse_addr)]
    metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    security: ServerSecurityArgs,
}

/// Who may connect to a server socket (ZeroMQ ZAP); see docs/security.md.
#[derive(Debug, Args)]
struct ServerSecurityArgs {
    /// Accept connections only from this network (CIDR, e.g. 10.1.0.0/16) or address
    /// (127.0.0.1: that host); repeat for several. Checked by a ZAP handler on every connection.
    #[arg(long = "allow", value_name = "CIDR", value_parser = zauth::parse_allow)]
    allow: Vec<ipnet::IpNet>,
    /// Require PLAIN credentials: a file of USER:PASSWORD lines (mode 0600, `#` comments).
    /// PLAIN authenticates but does not encrypt: the password crosses the network in clear.
    #[arg(long, value_name = "FILE")]
    plain_credentials: Option<PathBuf>,
    /// CURVE: this server's key pair file (`audit curve-keygen`, mode 0600). Clients must
    /// connect with its public key (the .curve.pub file); the link is encrypted.
    #[arg(long, value_name = "FILE")]
    curve_key: Option<PathBuf>,
    /// CURVE: accept only the clients whose public keys are listed in FILE (z85, one per
    /// line; their .curve.pub files concatenated). Needs --curve-key.
    #[arg(long, value_name = "FILE", requires = "curve_key")]
    curve_clients: Option<PathBuf>,
    /// Bind a remote endpoint without any authentication (anyone who can reach it may read
    /// the journal). Without this flag such a bind refuses to start.
    #[arg(long)]
    insecure: bool,
}

impl ServerSecurityArgs {
    fn policy(&self) -> zauth::ServerAuth {
        zauth::ServerAuth {
            allow: self.allow.clone(),
            plain_credentials: self.plain_credentials.clone(),
            curve_key: self.curve_key.clone(),
            curve_clients: self.curve_clients.clone(),
            insecure: self.insecure,
        }
    }
}

#[derive(Debug, Args)]
struct TailArgs {
    /// The journal's binary PUB feed to subscribe to.
    #[arg(long, value_name = "ENDPOINT")]
    sub: String,
    /// The gap-fill service (`audit serve`) to fetch missing records from.
    #[arg(long, value_name = "ENDPOINT")]
    serve: String,
    /// First sequence number to deliver (the chain is verified from genesis when 1, or from
    /// the served hash of record SEQ-1).
    #[arg(long, default_value_t = 1, value_name = "SEQ")]
    from: u64,
    /// Stop once record N is verified and print the head (otherwise run until SIGINT/SIGTERM).
    #[arg(long, value_name = "N")]
    until_seq: Option<u64>,
    /// Print records and the summary as JSON lines.
    #[arg(long)]
    json: bool,
    /// Print only the summary line, not each record.
    #[arg(long)]
    quiet: bool,
    /// Receive high-water mark of the SUB socket in messages (small values provoke drops).
    #[arg(long, default_value_t = audit::limits::TAIL_RCVHWM_MESSAGES_DEFAULT, value_name = "N")]
    rcvhwm: i32,
    /// With no live message for this long, ask the server for records past the last one (ms).
    #[arg(long, default_value_t = audit::limits::TAIL_IDLE_POLL_MS_DEFAULT, value_name = "MS")]
    idle_poll_ms: u64,
    /// Timeout of one gap-fill request before the REQ socket is reopened (ms; 3 attempts,
    /// then exit 2): bounds how long a tail waits on a silent or unreachable server.
    #[arg(long, default_value_t = audit::limits::TAIL_REQUEST_TIMEOUT_MS, value_name = "MS")]
    request_timeout_ms: u64,
    /// PLAIN credentials for servers that require them: a file whose first line is
    /// USER:PASSWORD (mode 0600). Used on both the feed and the gap-fill connection; a server
    /// that refuses them ends the tail at once (exit 2).
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// CURVE: the server's public key file (a .curve.pub from `audit curve-keygen`). Used on
    /// both the feed and the gap-fill connection (give the engine and the `audit serve` beside
    /// it the same key pair); a server with another key drops the handshake and the tail ends.
    #[arg(long, value_name = "FILE")]
    curve_server_key: Option<PathBuf>,
    /// CURVE: this client's key pair file (mode 0600), for servers that accept only listed
    /// client keys (--curve-clients). Without it a fresh key pair is made for the run.
    #[arg(long, value_name = "FILE", requires = "curve_server_key")]
    curve_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CurveKeygenArgs {
    /// Path prefix: writes PREFIX.curve (the key pair, z85, mode 0600) and PREFIX.curve.pub
    /// (the public key, mode 0644). Refused inside a git work tree (see --in-work-tree).
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
    /// Write the secret key even though PREFIX lies inside a git work tree (refused by
    /// default: one `git add -A` would commit it).
    #[arg(long)]
    in_work_tree: bool,
}

#[derive(Debug, Args)]
struct RecoverArgs {
    /// Journal directory.
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct AppendTestArgs {
    /// Journal directory.
    dir: PathBuf,
    /// Records to append.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Payload bytes per record (the maximum with --vary).
    #[arg(long, default_value_t = 80)]
    payload_bytes: usize,
    /// Vary the payload length between 0 and --payload-bytes, by sequence number.
    #[arg(long)]
    vary: bool,
    /// Durability policy: none, batch, always, interval, interval:RECORDS:MS (`batch`: each
    /// record is a batch of one, synced before it is reported).
    #[arg(long, default_value = "none")]
    durability: String,
    /// Segment size in bytes.
    #[arg(long, default_value_t = audit::limits::SEGMENT_SIZE_BYTES_DEFAULT)]
    segment_size_bytes: u64,
    /// Secret key file: write checkpoints signed with it.
    #[arg(long, value_name = "FILE")]
    checkpoint_key: Option<PathBuf>,
    /// Checkpoint every N records (with --checkpoint-key).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = orders::logging::init(&cli.log) {
        orders::logging::print_final_error(&format!("audit: error: {e}"));
        return ExitCode::from(2);
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            orders::logging::print_final_error(&format!("audit: error: {e:#}"));
            let damaged = e.chain().any(|c| {
                c.downcast_ref::<JournalError>()
                    .is_some_and(|j| j.is_damage())
            });
            ExitCode::from(if damaged { 1 } else { 2 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Cmd::Verify(a) => cmd_verify(a),
        Cmd::Dump(a) => cmd_dump(a),
        Cmd::Keygen(a) => cmd_keygen(a),
        Cmd::CurveKeygen(a) => cmd_curve_keygen(a),
        Cmd::Serve(a) => cmd_serve(a),
        Cmd::Tail(a) => cmd_tail(a),
        Cmd::Recover(a) => cmd_recover(a),
        Cmd::AppendTest(a) => cmd_append_test(a),
    }
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

fn parse_expect_head(text: &str) -> anyhow::Result<(u64, [u8; 32])> {
    let (seq, hash) = text
        .split_once(':')
        .with_context(|| format!("--expect-head {text:?}: expected SEQ:HASH"))?;
    let seq: u64 = seq
        .parse()
        .with_context(|| format!("--expect-head {text:?}: SEQ {seq:?} is not a number"))?;
    let hash = parse_hash(hash).with_context(|| format!("--expect-head {text:?}"))?;
    Ok((seq, hash))
}

fn cmd_verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let pubkey = match &a.pubkey {
        Some(p) => Some(audit::load_verifying_key(p).context("--pubkey")?),
        None => None,
    };
    let expect_head = a
        .expect_head
        .as_deref()
        .map(parse_expect_head)
        .transpose()?;
    if !a.dir.is_dir() {
        bail!("{}: not a directory", a.dir.display());
    }
    // A bar on a terminal only, with text logs (orders::logging::progress_on_terminal).
    let bar = if orders::logging::progress_on_terminal() && !a.json {
        let total = audit::journal_bytes(&a.dir).unwrap_or(0);
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} verifying [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Some(bar)
    } else {
        None
    };
    let progress = |n: u64| {
        if let Some(b) = &bar {
            b.inc(n);
        }
    };
    let opts = VerifyOptions {
        threads: a.threads,
        pubkey,
        expect_head,
        allow_torn_tail: a.allow_torn_tail,
        progress: Some(&progress),
    };
    let started = Instant::now();
    let result = audit::verify(&a.dir, &opts);
    let secs = started.elapsed().as_secs_f64();
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    match result {
        Ok(report) => {
            if a.json {
                println!("{}", verify_json(&a, &report, secs));
            } else {
                print_verify(&a, &report, secs, opts.pubkey.as_ref());
                tracing::info!(
                    target: "hint",
                    "next: audit dump {} --from 1 --to 10    (read the records)",
                    a.dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(JournalError::Damaged(d)) => {
            if a.json {
                let v = serde_json::json!({
                    "ok": false,
                    "dir": a.dir.display().to_string(),
                    "error": {
                        "file": d.file.display().to_string(),
                        "offset": d.offset,
                        "seq": d.seq,
                        "what": d.what.to_string(),
                    }
                });
                println!("{v}");
            } else {
                println!("audit verify: FAILED");
                println!("journal      {}", a.dir.display());
                println!("first bad    file {}", d.file.display());
                println!("             offset {}", d.offset);
                match d.seq {
                    Some(s) => println!("             seq {s}"),
                    None => println!("             seq -"),
                }
                println!("             {}", d.what);
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e).with_context(|| format!("verifying {}", a.dir.display())),
    }
}

fn verify_json(a: &VerifyArgs, r: &VerifyReport, secs: f64) -> serde_json::Value {
    serde_json::json!({
        "ok": true,
        "dir": a.dir.display().to_string(),
        "segments": r.segments,
        "bytes": r.bytes,
        "records": r.records,
        "first_seq": r.first_seq,
        "last_seq": r.last_seq,
        "first_ts_ns": r.first_ts_ns,
        "last_ts_ns": r.last_ts_ns,
        "head_hash": hex::encode(r.head_hash),
        "checkpoints": r.checkpoints,
        "checkpoints_signed": r.checkpoints_signed,
        "newest_checkpoint_seq": r.newest_checkpoint_seq,
        "checkpoint_torn_bytes": r.checkpoint_torn_bytes,
        "torn_tail_bytes": r.torn_tail_bytes,
        "expect_head_matched": r.expect_head_matched,
        "snapshots": r.snapshots,
        "snapshots_checked": r.snapshots_checked,
        "snapshots_missing": r.snapshots_missing,
        "seconds": secs,
    })
}

fn print_verify(
    a: &VerifyArgs,
    r: &VerifyReport,
    secs: f64,
    key: Option<&ed25519_dalek::VerifyingKey>,
) {
    println!("audit verify: OK");
    println!("journal      {}", a.dir.display());
    println!("segments     {} ({} bytes)", r.segments, r.bytes);
    match (r.first_seq, r.last_seq) {
        (Some(f), Some(l)) => println!("records      {} (seq {f} ..= {l})", r.records),
        _ => println!("records      0"),
    }
    if let Some(t) = r.first_ts_ns {
        println!("first time   {}", describe_ns(t));
    }
    if let Some(t) = r.last_ts_ns {
        println!("last time    {}", describe_ns(t));
    }
    println!("head hash    {}", hex::encode(r.head_hash));
    match (r.checkpoints, key) {
        (0, _) => println!(
            "checkpoints  none: the records chain to each other, but nothing outside the journal \
             vouches for its head, so a cut-off tail or a log rewritten from scratch would still \
             verify. Anchor it: a key pair (`audit keygen --out ~/.titanic/audit`), the writer \
             signing checkpoints (engine replay --checkpoint-key ~/.titanic/audit.key, or \
             [journal] checkpoint_key), then `audit verify DIR --pubkey ~/.titanic/audit.pub`; \
             or --expect-head SEQ:HASH from a record kept elsewhere"
        ),
        (n, Some(k)) => println!(
            "checkpoints  {n} verified, signed by key {} (newest at seq {})",
            hex::encode(audit::key_id(k)),
            r.newest_checkpoint_seq.unwrap_or(0)
        ),
        (n, None) => println!(
            "checkpoints  {n} match the chain (newest at seq {}); signatures not checked: \
             give --pubkey",
            r.newest_checkpoint_seq.unwrap_or(0)
        ),
    }
    if r.checkpoint_torn_bytes > 0 {
        println!(
            "             ({} bytes of a partial checkpoint entry at the end ignored)",
            r.checkpoint_torn_bytes
        );
    }
    if r.snapshots > 0 {
        println!(
            "snapshots    {} records: {} files match them (length, SHA-256), {} pruned",
            r.snapshots, r.snapshots_checked, r.snapshots_missing
        );
    }
    if r.torn_tail_bytes > 0 {
        println!(
            "torn tail    {} bytes of a record being appended (allowed by --allow-torn-tail)",
            r.torn_tail_bytes
        );
    }
    if let Some(h) = &a.expect_head {
        println!("expect-head  {h} matches");
    }
    let rate = if secs > 0.0 {
        r.records as f64 / secs
    } else {
        0.0
    };
    println!("took         {:.3} s ({:.2} M records/s)", secs, rate / 1e6);
}

/// `N ns`, plus the UTC date when N looks like a time since the Unix epoch.
fn describe_ns(ns: u64) -> String {
    const YEAR_2000_NS: u64 = 946_684_800 * 1_000_000_000;
    if ns < YEAR_2000_NS {
        return format!("{ns} ns");
    }
    let secs = ns / 1_000_000_000;
    let nanos = ns % 1_000_000_000;
    let (days, sod) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{ns} ns ({y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z)",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

// ---------------------------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------------------------

fn order_text(o: &Order) -> String {
    format!(
        "order_id={} order_kind={} side={} symbol={} qty={} price={} account={} order_ts_ns={}",
        o.order_id,
        o.kind.as_str(),
        o.side.as_str(),
        o.symbol,
        o.qty,
        format_price_ticks(o.price),
        o.account,
        o.ts_ns
    )
}

/// The name of a decision's or order's account, from the account-name records read so far.
fn account_name_of(kind: u16, payload: &[u8], names: &orders::AccountNames) -> Option<String> {
    let account = match kind {
        KIND_DECISION => decode_decision(payload).ok()?.order.account,
        KIND_ORDER => decode_order(payload).ok()?.account,
        _ => return None,
    };
    names.name(account).map(str::to_owned)
}

/// Takes a kind-4 record into the table; a record that does not decode or contradicts the
/// table is left to `audit dump`'s line for it (undecodable) and `audit verify`.
fn learn_account_name(kind: u16, payload: &[u8], names: &mut orders::AccountNames) {
    if kind == audit::KIND_ACCOUNT_NAME {
        if let Ok(r) = orders::decode_account_name_record(payload) {
            let _ = names.insert_recorded(r.id, r.name);
        }
    }
}

fn record_text(seq: u64, hash: &[u8; 32], kind: u16, ts_ns: u64, payload: &[u8]) -> String {
    let head = format!(
        "seq={seq} ts_ns={ts_ns} kind={} hash={}",
        kind_name(kind),
        hex::encode(hash)
    );
    let body = match kind {
        KIND_DECISION => decode_decision(payload).map(|d| {
            format!(
                "input_seq={} {} verdict={} reason={} t_in_ns={} t_decided_ns={} t_checked_ns={} \
                 risk_session={} risk_batch={} risk_batch_orders={}",
                d.input_seq,
                order_text(&d.order),
                if d.reason.is_accepted() {
                    "accepted"
                } else {
                    "rejected"
                },
                d.reason.as_str(),
                d.t_in_ns,
                d.t_decided_ns,
                d.t_checked_ns,
                d.risk_session,
                d.risk_batch,
                d.risk_batch_orders
            ) + &orders::decision_risk_reply(payload)
                .map(|r| format!(" risk_reply={:?}", String::from_utf8_lossy(r)))
                .unwrap_or_default()
        }),
        KIND_ORDER => decode_order(payload).map(|o| order_text(&o)),
        audit::KIND_ACCOUNT_NAME => match orders::decode_account_name_record(payload) {
            Ok(r) => Ok(format!(
                "account={} account_name={} table_len={}",
                r.id, r.name, r.table_len
            )),
            Err(e) => return format!("{head} undecodable ({e}) payload={}", hex::encode(payload)),
        },
        _ => Ok(format!("payload={}", hex::encode(payload))),
    };
    match body {
        Ok(b) => format!("{head} {b}"),
        Err(e) => format!("{head} undecodable ({e}) payload={}", hex::encode(payload)),
    }
}

/// Writes a line; a closed pipe (`audit dump | head`) ends the command quietly.
fn emit(out: &mut impl Write, line: &str) -> anyhow::Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

fn cmd_dump(a: DumpArgs) -> anyhow::Result<ExitCode> {
    let reader = Reader::open(&a.dir).with_context(|| format!("opening {}", a.dir.display()))?;
    let to = a.to.unwrap_or(u64::MAX);
    if to < a.from {
        bail!("--to {to} is before --from {}", a.from);
    }
    // The account names bound before --from (kind-4 records), so that the records printed
    // show them too.
    let mut names = orders::AccountNames::with_capacity(0);
    if a.from > 1 {
        for r in reader.iter_from(1) {
            let r = r.context("reading the journal")?;
            if r.seq >= a.from {
                break;
            }
            learn_account_name(r.kind, &r.payload, &mut names);
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for r in reader.iter_from(a.from) {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                let _ = out.flush();
                return Err(e).context("reading the journal");
            }
        };
        if r.seq > to {
            break;
        }
        learn_account_name(r.kind, &r.payload, &mut names);
        let name = account_name_of(r.kind, &r.payload, &names);
        let line = if a.json {
            let mut v = record_json(r.seq, &r.hash, r.kind, r.ts_ns, &r.payload);
            if let (Some(n), Some(m)) = (name, v.as_object_mut()) {
                m.insert("account_name".into(), serde_json::Value::String(n));
            }
            v.to_string()
        } else {
            let mut line = record_text(r.seq, &r.hash, r.kind, r.ts_ns, &r.payload);
            if let Some(n) = name {
                line.push_str(" account_name=");
                line.push_str(&n);
            }
            line
        };
        if !emit(&mut out, &line)? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(ExitCode::SUCCESS),
    }
}

// ---------------------------------------------------------------------------------------------
// keygen
// ---------------------------------------------------------------------------------------------

fn cmd_curve_keygen(a: CurveKeygenArgs) -> anyhow::Result<ExitCode> {
    let (secret, _) = zauth::key_pair_paths(&a.out);
    if let Some(root) = zauth::check_secret_location(&secret, a.in_work_tree)? {
        tracing::warn!(
            "{} is inside the git work tree {} (--in-work-tree): \
             never commit it",
            secret.display(),
            root.display()
        );
    }
    let key = zauth::CurveKeyPair::generate().context("making a CURVE key pair")?;
    let (secret, public) = zauth::write_key_pair(&a.out, &key, a.force)
        .with_context(|| format!("writing {}.curve and .curve.pub", a.out.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "secret key pair: {} (mode 0600)", secret.display())?;
    writeln!(out, "public key:      {}", public.display())?;
    writeln!(out, "public key z85:  {}", key.public_z85())?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_keygen(a: KeygenArgs) -> anyhow::Result<ExitCode> {
    let secret = audit::key_file_paths(&a.out).0;
    let dir = match secret.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        // A private directory for the keys (e.g. ~/.titanic): only the owner may list it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    // The workspace's one work-tree check (zauth), as `audit curve-keygen` uses.
    if let Some(root) = zauth::git_work_tree(&dir) {
        if a.in_work_tree {
            tracing::warn!(
                "{} is inside the git work tree {} (--in-work-tree); \
                 never commit it",
                secret.display(),
                root.display()
            );
        } else {
            bail!(
                "refusing to write the secret key {} inside the git work tree {}: one \
                 `git add -A` would commit it. Write it outside the repository (e.g. \
                 `audit keygen --out ~/.titanic/audit`), or pass --in-work-tree if you really \
                 mean it",
                secret.display(),
                root.display()
            );
        }
    }
    let key = audit::generate_signing_key();
    let (secret, public) = audit::write_key_pair(&a.out, &key, a.force)
        .with_context(|| format!("writing key pair {}.{{key,pub}}", a.out.display()))?;
    println!(
        "secret key   {} (mode 0600: keep it with the writer only)",
        secret.display()
    );
    println!("public key   {}", public.display());
    println!(
        "key id       {}",
        hex::encode(audit::key_id(&key.verifying_key()))
    );
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// serve / tail
// ---------------------------------------------------------------------------------------------

fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("installing the signal handler")?;
    }
    Ok(stop)
}

fn cmd_serve(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_flag()?;
    let ctx = zmq::Context::new();
    let policy = a.security.policy();
    // A remote endpoint without authentication is refused by `serve_secure` (exit 2) unless
    // --insecure; then say so.
    let scope = zauth::scope(&a.bind).context("--bind")?;
    if scope == zauth::Scope::Remote && !policy.is_configured() && policy.insecure {
        tracing::warn!("--insecure: {} accepts unauthenticated peers", a.bind);
    }
    // One ZAP handler for this process's context, started before the bind.
    let zap = zauth::ZapHandler::start(&ctx, &policy).context("starting the ZAP handler")?;
    let counters = Arc::new(audit::ServeCounters::default());
    let metrics = match a.metrics {
        None => None,
        Some(addr) => {
            let collector = audit::ServeCollector::new(
                Arc::clone(&counters),
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
    let mut on_bound = |ep: &str| {
        println!("listening {ep}");
        if let Some(m) = &metrics {
            println!("metrics on http://{}/metrics", m.addr());
        }
        let _ = std::io::stdout().flush();
        // systemd (Type=notify, deploy/systemd/): bound. A no-op without $NOTIFY_SOCKET.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!("cannot notify systemd of readiness: {e}");
        }
    };
    let stats = audit::serve_counted(
        &ctx,
        &a.dir,
        &a.bind,
        &policy,
        &stop,
        &mut on_bound,
        &counters,
    )
    .with_context(|| format!("serving {} on {}", a.dir.display(), a.bind))?;
    tracing::info!(
        "stopped after {} requests, {} records sent, {} errors",
        stats.requests,
        stats.records,
        stats.errors
    );
    if let Some(zap) = &zap {
        use std::sync::atomic::Ordering::Relaxed;
        tracing::info!(
            "authentication: {} connections accepted, {} refused",
            zap.stats().accepted.load(Relaxed),
            zap.stats().refused.load(Relaxed)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_tail(a: TailArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_flag()?;
    let ctx = zmq::Context::new();
    let mut opts = TailOptions::new(&a.sub, &a.serve);
    opts.from_seq = a.from;
    opts.until_seq = a.until_seq;
    opts.rcvhwm = a.rcvhwm;
    opts.idle_poll_ms = a.idle_poll_ms;
    opts.request_timeout_ms = a.request_timeout_ms;
    if let Some(path) = &a.credentials {
        opts.client_auth = zauth::ClientAuth::from_file(path).context("--credentials")?;
    }
    if let Some(server_key) = &a.curve_server_key {
        opts.client_auth = std::mem::take(&mut opts.client_auth)
            .with_curve(server_key, a.curve_key.as_deref())
            .context("--curve-server-key / --curve-key")?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_err: Option<std::io::Error> = None;
    let mut on_record = |r: &audit::TailRecord<'_>| {
        if a.quiet || write_err.is_some() {
            return;
        }
        let e = &r.entry;
        let line = if a.json {
            record_json(e.seq, &e.hash, e.kind, e.ts_ns, e.payload).to_string()
        } else {
            record_text(e.seq, &e.hash, e.kind, e.ts_ns, e.payload)
        };
        if let Err(err) = writeln!(out, "{line}") {
            write_err = Some(err);
        }
    };
    let result = audit::tail(&ctx, &opts, &stop, &mut on_record);
    if let Some(e) = write_err {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e).context("writing to stdout");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let stats = result.with_context(|| format!("following {} (gap fill {})", a.sub, a.serve))?;
    let summary = if a.json {
        serde_json::json!({
            "head_seq": stats.last_seq,
            "head_hash": hex::encode(stats.head_hash),
            "live_records": stats.live_records,
            "fetched_records": stats.fetched_records,
            "gaps": stats.gaps,
            "duplicates": stats.duplicates,
            "requests": stats.requests,
        })
        .to_string()
    } else {
        format!(
            "head seq={} hash={} live={} fetched={} gaps={} duplicates={} requests={}",
            stats.last_seq,
            hex::encode(stats.head_hash),
            stats.live_records,
            stats.fetched_records,
            stats.gaps,
            stats.duplicates,
            stats.requests
        )
    };
    let _ = emit(&mut out, &summary)?;
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// recover
// ---------------------------------------------------------------------------------------------

fn cmd_recover(a: RecoverArgs) -> anyhow::Result<ExitCode> {
    if !a.dir.is_dir() {
        bail!("{}: not a directory", a.dir.display());
    }
    // Only an existing journal: opening an empty directory would create one. A directory
    // whose segments are all gone but whose checkpoints remain is a journal cut off entirely:
    // the open below refuses it and says so.
    match Reader::open(&a.dir) {
        Ok(_) => {}
        Err(JournalError::NoJournal { .. })
            if !audit::read_checkpoints(&a.dir)
                .with_context(|| format!("recovering {}", a.dir.display()))?
                .entries
                .is_empty() => {}
        Err(e) => return Err(e).with_context(|| format!("recovering {}", a.dir.display())),
    }
    let (w, rec) = Writer::open(&a.dir, WriterOptions::default())
        .with_context(|| format!("recovering {}", a.dir.display()))?;
    drop(w);
    println!("records      {}", rec.records);
    println!("next seq     {}", rec.next_seq);
    println!("head hash    {}", hex::encode(rec.head_hash));
    match rec.truncated_from_seq {
        Some(s) => println!(
            "torn tail    {} bytes cut (the record that would have been seq {s})",
            rec.truncated_bytes
        ),
        None => println!("torn tail    none"),
    }
    for f in &rec.removed_files {
        println!("removed      {}", f.display());
    }
    if rec.checkpoint_bytes_cut > 0 {
        println!(
            "checkpoints  {} bytes of a partial entry cut",
            rec.checkpoint_bytes_cut
        );
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// append-test (hidden)
// ---------------------------------------------------------------------------------------------

fn cmd_append_test(a: AppendTestArgs) -> anyhow::Result<ExitCode> {
    let durability: Durability = a.durability.parse().context("--durability")?;
    let checkpoint = match &a.checkpoint_key {
        Some(p) => Some(CheckpointPolicy {
            signing_key: audit::load_signing_key(p).context("--checkpoint-key")?,
            every_records: a.checkpoint_every,
            every_ms: 0,
        }),
        None => None,
    };
    let opts = WriterOptions {
        segment_size_bytes: a.segment_size_bytes,
        durability,
        checkpoint,
    };
    let (mut w, rec) = Writer::open(&a.dir, opts)
        .with_context(|| format!("opening {} for append", a.dir.display()))?;
    tracing::info!(
        "recovered records={} next_seq={} truncated_bytes={} truncated_from_seq={}",
        rec.records,
        rec.next_seq,
        rec.truncated_bytes,
        rec.truncated_from_seq.map_or("-".into(), |s| s.to_string())
    );
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for _ in 0..a.count {
        let seq = w.next_seq();
        let len = if a.vary {
            audit::testing::payload_len_for(seq, a.payload_bytes)
        } else {
            a.payload_bytes
        };
        let payload = audit::testing::payload_for(seq, len);
        let appended = w
            .append(7, seq, &payload)
            .with_context(|| format!("appending seq {seq}"))?;
        // Each record is a batch of one (`batch`: synced here; other policies: no-op).
        w.commit()
            .with_context(|| format!("committing seq {seq}"))?;
        // Reported only once `append` returned: the parent checks every reported seq survives.
        writeln!(out, "{}", appended.seq).context("writing to stdout")?;
    }
    out.flush().context("writing to stdout")?;
    w.sync().context("final sync")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_epoch_times() {
        assert_eq!(describe_ns(5), "5 ns");
        assert_eq!(
            describe_ns(1_700_000_000_123_456_789),
            "1700000000123456789 ns (2023-11-14T22:13:20.123456789Z)"
        );
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn expect_head_parses() {
        let h = "ab".repeat(32);
        assert_eq!(parse_expect_head(&format!("5:{h}")).expect("valid").0, 5);
        assert!(parse_expect_head("5").is_err());
        assert!(parse_expect_head("x:00").is_err());
        assert!(parse_expect_head("5:00").is_err());
    }
}
