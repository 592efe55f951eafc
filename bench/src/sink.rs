//! `bench sink`: the downstream end of the engine for tests and benchmarks.
//!
//! Binds a ZeroMQ PULL socket, takes the engine's egress frames (`docs/formats/egress.md`) and
//! the source design's one-JSON-order-per-message PUSH (`bench baseline --out`: the order's JSON
//! with an `input_seq` key), and checks what arrives:
//! - **duplicates**: an `input_seq` seen twice (the order ids involved are reported too). After
//!   an engine restart with `--resume`, re-sent orders are the documented at-least-once
//!   behaviour: `--allow-duplicates` counts and lists them without failing the run;
//! - **order**: `journal_seq` must strictly increase across everything received (the engine
//!   sends in decision order), a regression is counted as out of order (with
//!   `--allow-duplicates`, a duplicate is not checked for order: a re-sent tail goes back); for
//!   JSON orders, which have no journal, `input_seq` must strictly increase instead;
//! - **missing**: with `--expect N`, fewer than N distinct orders by the end;
//! - **journal first** (`--verify-journal DIR`): when an order arrives, its decision record
//!   `journal_seq` must already be in the journal, with the same input_seq and order, accepted.
//!   This is the observable side of "an accepted order is pushed only after its record is in
//!   the journal".
//!
//! A JSON order has no journal record, so with `--verify-journal` it counts as a mismatch.
//!
//! `--audit-sub ENDPOINT` also SUBscribes to the source design's audit events (`bench baseline
//! --audit-pub`: two-part messages, the event's JSON and its hex SHA-256), counts them and checks
//! each digest, as the source design's audit service does. PUB drops what a subscriber misses
//! (before it connected, or beyond its high-water mark), so a shortfall there is reported, not
//! failed.
//!
//! `--stall-after N --stall-ms MS` stops pulling for a while after N orders (a slow
//! downstream), so that the engine's back-pressure can be tested. It prints
//! `sink: bound to ENDPOINT` on stdout once it listens, a summary on stderr at the end, and
//! writes a JSON report with `--report`. Exit status 0 when every check passed, 1 otherwise,
//! 2 on usage or socket errors.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use engine::frames::{EgressEntry, EgressFrame};
use serde::Serialize;

/// How often the receive loop wakes to check its exit conditions.
const SINK_POLL_MS: i64 = 50;
/// Frames taken one after the other without a poll, at most (see the receive loop).
const SINK_RECVS_PER_POLL: usize = 64;
/// Duplicates / mismatches listed in the report at most (the counts are exact).
const SINK_LISTED_MAX: usize = 100;
/// input_seq values below this are tracked in a bitset; larger ones in a hash set.
const SINK_BITSET_SEQ_MAX: u64 = 1 << 32;

/// `bench sink` flags.
#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Endpoint to bind the PULL socket to (`tcp://127.0.0.1:*` picks a free port; the bound
    /// endpoint is printed as `sink: bound to ENDPOINT`).
    #[arg(long, value_name = "ENDPOINT")]
    pub bind: String,

    /// Stop once this many distinct orders have arrived; fewer at the end count as missing.
    #[arg(long, value_name = "N")]
    pub expect: Option<u64>,

    /// Stop when nothing has arrived for this long (0: wait until --expect or a signal). The
    /// clock starts at bind time.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub idle_exit_ms: u64,

    /// After this many orders, stop pulling for --stall-ms (a slow downstream).
    #[arg(long, value_name = "N", requires = "stall_ms")]
    pub stall_after: Option<u64>,

    /// How long to stop pulling after --stall-after orders.
    #[arg(long, value_name = "MS")]
    pub stall_ms: Option<u64>,

    /// Receive high-water mark in frames (small values make back-pressure reach the engine
    /// sooner).
    #[arg(long, default_value_t = 1000, value_name = "FRAMES")]
    pub rcvhwm: i32,

    /// Kernel receive buffer of the socket in bytes (`ZMQ_RCVBUF`; 0: the OS default and
    /// autotuning). Small values bound what a stalled sink's kernel holds.
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub rcvbuf: i32,

    /// Check each arriving order against the journal in DIR: its decision record must
    /// already be there.
    #[arg(long, value_name = "DIR")]
    pub verify_journal: Option<PathBuf>,

    /// Write every received order as CSV `input_seq,journal_seq,order_id` here.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,

    /// Accept connections only from these networks (CIDR, e.g. 10.1.0.0/16) or addresses
    /// (127.0.0.1: that host); repeatable. Enables ZAP authentication on the endpoint.
    #[arg(long, value_name = "CIDR", value_parser = zauth::parse_allow)]
    pub allow: Vec<ipnet::IpNet>,

    /// Require PLAIN credentials from a file of USER:PASSWORD lines (mode 0600), as the
    /// engine's `[security] credentials` sends them (docs/security.md).
    #[arg(long, value_name = "FILE")]
    pub plain_credentials: Option<PathBuf>,

    /// CURVE: the sink's key pair file (`audit curve-keygen`, mode 0600); the engine's egress
    /// connects with its public key (`security.egress_server_key`, `--egress-server-key`).
    #[arg(long, value_name = "FILE")]
    pub curve_key: Option<PathBuf>,

    /// CURVE: accept only the clients whose public keys are listed in FILE (z85, one per
    /// line). Needs --curve-key.
    #[arg(long, value_name = "FILE", requires = "curve_key")]
    pub curve_clients: Option<PathBuf>,

    /// Allow binding a non-loopback endpoint without any authentication. Refused without
    /// this flag.
    #[arg(long)]
    pub insecure: bool,

    /// Also subscribe (connect a SUB socket) to the source design's audit events published
    /// here (`bench baseline --audit-pub`), count them and check each one's SHA-256.
    #[arg(long, value_name = "ENDPOINT")]
    pub audit_sub: Option<String>,

    /// Duplicate deliveries (an `input_seq` seen before) are counted and listed but do not fail
    /// the run: what an engine restarted with `--resume` does on purpose (at-least-once: it
    /// re-sends the accepted orders of its journal's tail).
    #[arg(long)]
    pub allow_duplicates: bool,

    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
}

/// The sink's report (JSON keys as the field names).
#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkReport {
    /// The bound endpoint.
    pub endpoint: String,
    /// Frames received.
    pub frames: u64,
    /// Orders received (with duplicates).
    pub orders: u64,
    /// Distinct input_seq values.
    pub unique: u64,
    /// Orders whose input_seq was already seen.
    pub duplicates: u64,
    /// `--allow-duplicates`: duplicates do not fail the run.
    pub duplicates_allowed: bool,
    /// Some duplicated input_seq values.
    pub duplicate_input_seqs: Vec<u64>,
    /// Their order ids.
    pub duplicate_order_ids: Vec<u64>,
    /// Times journal_seq did not increase.
    pub out_of_order: u64,
    /// First journal_seq received (0: none).
    pub first_journal_seq: u64,
    /// Last journal_seq received.
    pub last_journal_seq: u64,
    /// Messages that were neither valid egress frames nor JSON orders with an `input_seq`.
    pub bad_frames: u64,
    /// Messages that were one JSON order each (the source design's PUSH), included in `orders`.
    pub json_orders: u64,
    /// Audit events received on `--audit-sub`.
    pub audit_events: u64,
    /// Audit events whose second part is not the hex SHA-256 of the first (or that are not
    /// two-part).
    pub audit_bad_digests: u64,
    /// `--expect`, if given.
    pub expected: Option<u64>,
    /// `expected − unique` when positive.
    pub missing: u64,
    /// Orders checked against the journal.
    pub journal_checked: u64,
    /// Orders whose record was absent or different when they arrived.
    pub journal_mismatches: u64,
    /// The first mismatches, described.
    pub journal_mismatch_examples: Vec<String>,
    /// Time spent stalled on purpose.
    pub stalled_ms: u64,
    /// First frame → last frame, seconds.
    pub elapsed_s: f64,
    /// `orders / elapsed_s`.
    pub throughput_per_s: f64,
    /// Every check passed.
    pub ok: bool,
}

/// Distinct input_seq tracking: a bitset for the usual dense range, a set beyond.
#[derive(Debug, Default)]
struct SeenSet {
    bits: Vec<u64>,
    far: HashSet<u64>,
}

impl SeenSet {
    /// Marks `seq`; false if it was already marked.
    fn insert(&mut self, seq: u64) -> bool {
        if seq >= SINK_BITSET_SEQ_MAX {
            return self.far.insert(seq);
        }
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize((word + 1).next_power_of_two(), 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        fresh
    }
}

/// Follows the journal forward as orders arrive (journal_seq increases, so one pass). The
/// journal is opened when the first order arrives: its record is written before the order is
/// sent, so the journal exists by then even if the sink started first.
struct JournalCheck {
    dir: PathBuf,
    reader: Option<audit::Reader>,
    pos: Option<audit::Position>,
}

impl std::fmt::Debug for JournalCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalCheck").finish_non_exhaustive()
    }
}

impl JournalCheck {
    fn new(dir: &Path) -> JournalCheck {
        JournalCheck {
            dir: dir.to_owned(),
            reader: None,
            pos: None,
        }
    }

    /// Checks the entries of one frame (journal_seq increasing) in one forward pass over the
    /// journal; returns a description of each failure.
    fn check_frame(&mut self, entries: &[EgressEntry]) -> Vec<String> {
        let mut fails = Vec::new();
        let mut pending = entries;
        for attempt in 0..2 {
            if pending.is_empty() {
                break;
            }
            let reader = match &mut self.reader {
                Some(r) => {
                    if attempt == 1 {
                        // A new segment may have appeared since the listing.
                        if let Err(e) = r.refresh() {
                            fails.push(format!("cannot list the journal: {e}"));
                            return fails;
                        }
                    }
                    r
                }
                None => match audit::Reader::open(&self.dir) {
                    Ok(r) => self.reader.insert(r),
                    Err(e) => {
                        fails.extend(pending.iter().map(|x| {
                            format!(
                                "record {} cannot be read: journal {}: {e}",
                                x.journal_seq,
                                self.dir.display()
                            )
                        }));
                        return fails;
                    }
                },
            };
            let first = pending[0].journal_seq;
            let mut it = match self.pos {
                Some(p) if p.next_seq() <= first => reader.records_at(p),
                _ => reader.iter_from(first),
            };
            let mut i = 0;
            while i < pending.len() {
                match it.next() {
                    None => break,
                    Some(Err(e)) => {
                        fails.extend(
                            pending[i..]
                                .iter()
                                .map(|x| format!("record {}: journal damaged: {e}", x.journal_seq)),
                        );
                        self.pos = None;
                        return fails;
                    }
                    Some(Ok(r)) => {
                        self.pos = it.position();
                        while i < pending.len() && pending[i].journal_seq <= r.seq {
                            if pending[i].journal_seq == r.seq {
                                if let Err(why) = check_record(&r, &pending[i]) {
                                    fails.push(why);
                                }
                            } else {
                                fails.push(format!(
                                    "record {} lies behind the journal position (duplicate or out of order)",
                                    pending[i].journal_seq
                                ));
                            }
                            i += 1;
                        }
                    }
                }
            }
            pending = &pending[i..];
        }
        fails.extend(
            pending
                .iter()
                .map(|x| format!("record {} is not in the journal yet", x.journal_seq)),
        );
        fails
    }
}

/// The record of a pushed order must be its accepted decision.
fn check_record(r: &audit::Record, e: &EgressEntry) -> Result<(), String> {
    if r.kind != audit::KIND_DECISION {
        return Err(format!(
            "record {} is of kind {}, not a decision",
            r.seq, r.kind
        ));
    }
    let d = orders::decode_decision(&r.payload)
        .map_err(|err| format!("record {} does not decode: {err}", r.seq))?;
    if d.input_seq != e.input_seq || d.order != e.order {
        return Err(format!(
            "record {} holds input_seq {} order_id {}, the frame input_seq {} order_id {}",
            r.seq, d.input_seq, d.order.order_id, e.input_seq, e.order.order_id
        ));
    }
    if !d.reason.is_accepted() {
        return Err(format!(
            "record {} is a rejection ({}), yet the order was pushed",
            r.seq, d.reason
        ));
    }
    Ok(())
}

/// `bench sink`.
pub fn run(args: SinkArgs) -> anyhow::Result<ExitCode> {
    let ctx = zmq::Context::new();
    let pull = ctx
        .socket(zmq::PULL)
        .context("cannot create the PULL socket")?;
    pull.set_rcvhwm(args.rcvhwm).context("ZMQ_RCVHWM")?;
    if args.rcvbuf > 0 {
        pull.set_rcvbuf(args.rcvbuf).context("ZMQ_RCVBUF")?;
    }
    pull.set_linger(0).context("ZMQ_LINGER")?;
    let auth = zauth::ServerAuth {
        allow: args.allow.clone(),
        plain_credentials: args.plain_credentials.clone(),
        curve_key: args.curve_key.clone(),
        curve_clients: args.curve_clients.clone(),
        insecure: args.insecure,
    };
    // A ZAP handler runs only when the sink authenticates; `zauth::bind` refuses a remote
    // endpoint without authentication (unless --insecure).
    let _zap = zauth::ZapHandler::start(&ctx, &auth).context("starting ZAP authentication")?;
    let endpoint = zauth::bind(&ctx, &pull, &args.bind, &auth)
        .with_context(|| format!("cannot bind {}", args.bind))?;
    println!("sink: bound to {endpoint}");
    std::io::stdout().flush().context("stdout")?;

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let sub = match &args.audit_sub {
        None => None,
        Some(ep) => {
            let s = ctx
                .socket(zmq::SUB)
                .context("cannot create the SUB socket")?;
            s.set_linger(0).context("ZMQ_LINGER")?;
            s.set_subscribe(b"").context("ZMQ_SUBSCRIBE")?;
            s.connect(ep)
                .with_context(|| format!("cannot connect SUB to {ep}"))?;
            Some(s)
        }
    };
    let mut check = args.verify_journal.as_deref().map(JournalCheck::new);
    let mut dump = match &args.dump {
        None => None,
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
    };

    let mut rep = SinkReport {
        endpoint,
        expected: args.expect,
        duplicates_allowed: args.allow_duplicates,
        ..SinkReport::default()
    };
    let mut seen = SeenSet::default();
    let mut stalled = false;
    let mut last_arrival = Instant::now();
    let mut first_frame: Option<Instant> = None;
    let mut last_frame = Instant::now();
    let mut msg = zmq::Message::new();
    let mut recvs_since_poll = 0usize;
    let mut last_json_seq: Option<u64> = None;
    let mut entries: Vec<EgressEntry> =
        Vec::with_capacity(engine::frames::EGRESS_FRAME_ENTRIES_MAX);
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if args.expect.is_some_and(|n| rep.unique >= n) {
            break;
        }
        if args.idle_exit_ms > 0
            && last_arrival.elapsed() >= Duration::from_millis(args.idle_exit_ms)
        {
            break;
        }
        if !stalled {
            if let (Some(after), Some(ms)) = (args.stall_after, args.stall_ms) {
                if rep.orders >= after {
                    stalled = true;
                    tracing::info!("stalling for {ms} ms after {} orders", rep.orders);
                    std::thread::sleep(Duration::from_millis(ms));
                    rep.stalled_ms = ms;
                    last_arrival = Instant::now();
                    tracing::info!("pulling again");
                }
            }
        }
        // While frames keep coming, take the next one without polling first (a poll is a
        // system call per frame, and at `--rate max` the sink shares the cores with the
        // engine it measures); poll the sockets again every SINK_RECVS_PER_POLL frames (the
        // audit SUB) and once the PULL socket is empty.
        let backlog = recvs_since_poll > 0 && recvs_since_poll < SINK_RECVS_PER_POLL;
        let (pull_ready, sub_ready) = if backlog {
            (true, false)
        } else {
            recvs_since_poll = 0;
            let mut items = [
                pull.as_poll_item(zmq::POLLIN),
                match &sub {
                    Some(sub) => sub.as_poll_item(zmq::POLLIN),
                    None => pull.as_poll_item(zmq::POLLIN),
                },
            ];
            let n = if sub.is_some() { 2 } else { 1 };
            match zmq::poll(&mut items[..n], SINK_POLL_MS) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(e).context("poll"),
            }
            (items[0].is_readable(), n == 2 && items[1].is_readable())
        };
        if let (true, Some(sub)) = (sub_ready, &sub) {
            drain_audit_events(sub, &mut rep)?;
        }
        if !pull_ready {
            continue;
        }
        match pull.recv(&mut msg, zmq::DONTWAIT) {
            Ok(()) => recvs_since_poll += 1,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                recvs_since_poll = 0;
                continue;
            }
            Err(e) => return Err(e).context("receive"),
        }
        let now = Instant::now();
        last_arrival = now;
        entries.clear();
        let json = msg.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{');
        if json {
            match parse_pushed_json(&msg) {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    rep.bad_frames += 1;
                    tracing::warn!("bad JSON order of {} bytes: {e}", msg.len());
                    continue;
                }
            }
            rep.json_orders += 1;
        } else {
            match EgressFrame::parse(&msg) {
                Ok(frame) => entries.extend(frame.iter()),
                Err(e) => {
                    rep.bad_frames += 1;
                    tracing::warn!("bad frame of {} bytes: {e}", msg.len());
                    continue;
                }
            }
        }
        first_frame.get_or_insert(now);
        last_frame = now;
        rep.frames += 1;
        if let Some(c) = &mut check {
            rep.journal_checked += entries.len() as u64;
            let fails = if json {
                entries
                    .iter()
                    .map(|e| {
                        format!(
                            "input_seq {} arrived as a JSON order, which has no journal record",
                            e.input_seq
                        )
                    })
                    .collect()
            } else {
                c.check_frame(&entries)
            };
            for why in fails {
                rep.journal_mismatches += 1;
                if rep.journal_mismatch_examples.len() < SINK_LISTED_MAX {
                    rep.journal_mismatch_examples.push(why);
                }
            }
        }
        for e in &entries {
            rep.orders += 1;
            if seen.insert(e.input_seq) {
                rep.unique += 1;
            } else {
                rep.duplicates += 1;
                if rep.duplicate_input_seqs.len() < SINK_LISTED_MAX {
                    rep.duplicate_input_seqs.push(e.input_seq);
                    rep.duplicate_order_ids.push(e.order.order_id);
                }
                if args.allow_duplicates {
                    // A re-sent order: its journal_seq is behind by design.
                    if let Some(d) = &mut dump {
                        writeln!(d, "{},{},{}", e.input_seq, e.journal_seq, e.order.order_id)
                            .context("cannot write the dump")?;
                    }
                    continue;
                }
            }
            if json {
                // No journal: the sender's input order is the only order there is.
                if last_json_seq.is_some_and(|last| e.input_seq <= last) {
                    rep.out_of_order += 1;
                }
                last_json_seq = Some(last_json_seq.map_or(e.input_seq, |l| l.max(e.input_seq)));
            } else {
                if rep.first_journal_seq == 0 {
                    rep.first_journal_seq = e.journal_seq;
                } else if e.journal_seq <= rep.last_journal_seq {
                    rep.out_of_order += 1;
                }
                rep.last_journal_seq = rep.last_journal_seq.max(e.journal_seq);
            }
            if let Some(d) = &mut dump {
                writeln!(d, "{},{},{}", e.input_seq, e.journal_seq, e.order.order_id)
                    .context("cannot write the dump")?;
            }
        }
    }
    if let Some(sub) = &sub {
        // What is already queued counts too.
        drain_audit_events(sub, &mut rep)?;
    }
    if let Some(mut d) = dump {
        d.flush().context("cannot write the dump")?;
    }
    if let Some(first) = first_frame {
        rep.elapsed_s = last_frame.duration_since(first).as_secs_f64();
        if rep.elapsed_s > 0.0 {
            rep.throughput_per_s = rep.orders as f64 / rep.elapsed_s;
        }
    }
    rep.missing = args.expect.map_or(0, |n| n.saturating_sub(rep.unique));
    rep.ok = (rep.duplicates == 0 || args.allow_duplicates)
        && rep.out_of_order == 0
        && rep.bad_frames == 0
        && rep.audit_bad_digests == 0
        && rep.missing == 0
        && rep.journal_mismatches == 0;
    if args.audit_sub.is_some() {
        tracing::info!(
            "{} audit events, {} with a wrong SHA-256",
            rep.audit_events,
            rep.audit_bad_digests
        );
    }
    let summary = format!(
        "{} orders in {} frames ({} distinct), {} duplicates{}, {} out of order, {} missing, {} bad frames, journal checks {}/{} failed — {}",
        rep.orders,
        rep.frames,
        rep.unique,
        rep.duplicates,
        duplicates_note(rep.duplicates, args.allow_duplicates),
        rep.out_of_order,
        rep.missing,
        rep.bad_frames,
        rep.journal_mismatches,
        rep.journal_checked,
        if rep.ok { "OK" } else { "FAILED" }
    );
    // The counts are in the line (ending on the verdict) and in --report's JSON.
    if rep.ok {
        tracing::info!("{summary}");
    } else {
        tracing::warn!("{summary}");
    }
    for m in &rep.journal_mismatch_examples {
        tracing::warn!("journal check: {m}");
    }
    if let Some(p) = &args.report {
        let text = serde_json::to_string_pretty(&rep).context("cannot encode the report")?;
        std::fs::write(p, text + "\n").with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(if rep.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Most audit events taken per wake-up (the PULL side is served in between).
const SINK_AUDIT_DRAIN_MAX: usize = 1024;

/// Takes the queued audit events of the source design (`[event JSON, hex SHA-256 of it]`),
/// counting them and the ones whose digest does not match.
fn drain_audit_events(sub: &zmq::Socket, rep: &mut SinkReport) -> anyhow::Result<()> {
    for _ in 0..SINK_AUDIT_DRAIN_MAX {
        let parts = match sub.recv_multipart(zmq::DONTWAIT) {
            Ok(p) => p,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(()),
            Err(e) => return Err(e).context("receive on the SUB socket"),
        };
        rep.audit_events += 1;
        if !audit_digest_ok(&parts) {
            rep.audit_bad_digests += 1;
        }
    }
    Ok(())
}

/// Whether a source-design audit event is two parts, the second the hex SHA-256 of the first.
fn audit_digest_ok(parts: &[Vec<u8>]) -> bool {
    use sha2::{Digest, Sha256};
    match parts {
        [event, digest] => hex::encode(Sha256::digest(event)).as_bytes() == digest.as_slice(),
        _ => false,
    }
}

/// One JSON order as `bench baseline --out` pushes it: the order's keys (those of an ingress
/// JSON order, `docs/formats/egress.md`) plus `input_seq`, its position in the sender's input.
fn parse_pushed_json(bytes: &[u8]) -> Result<EgressEntry, String> {
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let input_seq = map
        .remove("input_seq")
        .ok_or("no `input_seq` key")?
        .as_u64()
        .ok_or("`input_seq` is not a whole number >= 0")?;
    let rest = serde_json::to_vec(&serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
    let order = engine::frames::parse_json_order(&rest).map_err(|e| e.to_string())?;
    Ok(EgressEntry {
        input_seq,
        journal_seq: 0,
        order,
    })
}

/// What the summary says after the duplicate count.
fn duplicates_note(duplicates: u64, allowed: bool) -> &'static str {
    match (duplicates, allowed) {
        (0, _) => "",
        (_, true) => " (allowed: --allow-duplicates)",
        (_, false) => {
            " (a failure here; re-sent orders after an engine --resume are at-least-once \
             delivery: pass --allow-duplicates to accept them)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_set_spots_duplicates_near_and_far() {
        let mut s = SeenSet::default();
        assert!(s.insert(0));
        assert!(s.insert(1_000_000));
        assert!(!s.insert(0));
        assert!(!s.insert(1_000_000));
        assert!(s.insert(SINK_BITSET_SEQ_MAX + 5));
        assert!(!s.insert(SINK_BITSET_SEQ_MAX + 5));
        assert!(s.insert(63) && s.insert(64));
    }

    #[test]
    fn pushed_json_orders_carry_their_input_seq() {
        let e = parse_pushed_json(
            br#"{"input_seq":7,"symbol":"AAPL","quantity":100,"price":185.25,"account":3,"order_id":9,"side":"SELL","kind":"new"}"#,
        )
        .expect("valid");
        assert_eq!((e.input_seq, e.journal_seq), (7, 0));
        assert_eq!(e.order.order_id, 9);
        assert_eq!(e.order.qty, 100);
        assert_eq!(e.order.price, 1_852_500);
        let no_seq = parse_pushed_json(
            br#"{"symbol":"AAPL","quantity":100,"price":185.25,"account":3,"order_id":9,"side":"SELL"}"#,
        );
        assert!(no_seq.is_err_and(|e| e.contains("input_seq")));
        let bad = parse_pushed_json(br#"{"input_seq":1,"symbol":"AAPL","side":"SELL"}"#);
        assert!(bad.is_err());
        assert!(parse_pushed_json(b"{not json").is_err());
    }

    #[test]
    fn audit_digests_are_checked() {
        use sha2::{Digest, Sha256};
        let event = br#"{"order_id":1,"verdict":"accept"}"#.to_vec();
        let good = hex::encode(Sha256::digest(&event)).into_bytes();
        assert!(audit_digest_ok(&[event.clone(), good.clone()]));
        let mut bad = good.clone();
        bad[0] = if bad[0] == b'0' { b'1' } else { b'0' };
        assert!(!audit_digest_ok(&[event.clone(), bad]));
        assert!(!audit_digest_ok(&[event]));
    }
}
