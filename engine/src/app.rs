//! The two commands, `replay` and `run`: validated settings in, a pipeline run, a report out.
//!
//! Both share the start-up (journal opened and recovered, resume point found, risk connected,
//! egress connected) and the end (journal synced, embedded risk stopped, report).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use orders::{Decision, Reason};

use crate::cli::{CoreSpec, ReplayArgs, RunArgs};
use crate::clock::Clock;
use crate::config::{
    check_endpoint, check_security, check_segment_size, CheckpointSettings, EgressTarget,
    JournalSettings, Problems, RiskSettings, RiskTarget, SecurityKeys, SecuritySettings,
    ServiceConfig, StageSettings, CHECKPOINT_EVERY_MS_DEFAULT, CHECKPOINT_EVERY_RECORDS_DEFAULT,
};
use crate::idle::IdleKind;
use crate::latency::write_hgrm;
use crate::limits::{
    EGRESS_LINGER_MS, EGRESS_SNDBUF_BYTES, EGRESS_SNDHWM_MESSAGES_DEFAULT,
    INGRESS_MESSAGE_BYTES_MAX, RISK_AUTH_PROBE_MS, RISK_HELLO_WAIT_MS, RISK_TIMEOUT_MS_MAX,
};
use crate::metrics::{Metrics, MetricsServer};
use crate::pipeline::{self, IngressSource, PipelineOptions, PipelineResult};
use crate::report::{hex, Backpressure, EgressReport, JournalReport, Report, RiskReport};
use crate::schedule::{Rate, Schedule};
use crate::stages::journal::{chain, AuditLog};
use crate::stages::risk::{Gate, InlineRisk};
use crate::topology::{parse_per_stage, PerStage};

/// An opened journal and where to resume.
struct OpenedJournal {
    log: AuditLog,
    recovery: audit::Recovery,
    /// The newest decision record, if any.
    last: Option<Decision>,
    /// Records in the journal when opened.
    records_before: u64,
    /// The risk state rebuilt from the journal (inline and embedded risk).
    checker: Option<risk::Checker>,
    /// The accepted orders of the journal's tail to re-send downstream.
    redelivery: Vec<crate::frames::EgressEntry>,
    /// The account name table (the journal's, and the names interned at start-up).
    account_names: orders::AccountNames,
}

/// What recovery rebuilds besides the head: the inline or embedded checks' state (under their
/// limits), and the redelivery window of a downstream.
fn recovery_spec(
    risk: &RiskSettings,
    egress: &EgressTarget,
    stages: &StageSettings,
) -> anyhow::Result<crate::recovery::RecoverySpec> {
    let limits = match &risk.target {
        RiskTarget::Inline { limits_file } | RiskTarget::Embedded { limits_file } => {
            Some(load_limits(limits_file.as_deref())?)
        }
        RiskTarget::Remote { .. } => None,
    };
    // The window from the egress socket's queue and buffer sizes (as configured: the socket
    // gets exactly these); the previous run is assumed to have used sizes no larger.
    let redelivery_window = match egress {
        EgressTarget::None => 0,
        EgressTarget::Push { sndhwm, .. } => crate::limits::redelivery_window_records(
            stages.ring_capacity,
            stages.max_batch,
            usize::try_from((*sndhwm).max(EGRESS_SNDHWM_MESSAGES_DEFAULT)).unwrap_or(usize::MAX),
            usize::try_from(EGRESS_SNDBUF_BYTES).unwrap_or(usize::MAX),
        ),
    };
    Ok(crate::recovery::RecoverySpec {
        limits,
        redelivery_window,
    })
}

/// Opens the journal and recovers from its tail in one pass ([`crate::recovery`]): the head
/// (a torn tail cut), the newest decision, the risk state (newest snapshot + the decisions
/// after it), the orders to re-send; starts the risk-state snapshot thread.
fn open_journal(
    ctx: &zmq::Context,
    s: &JournalSettings,
    auth: &zauth::ServerAuth,
    spec: &crate::recovery::RecoverySpec,
    file_names: Option<&orders::AccountNames>,
) -> anyhow::Result<OpenedJournal> {
    let checkpoint = match &s.checkpoint {
        None => None,
        Some(c) => Some(audit::CheckpointPolicy {
            signing_key: audit::load_signing_key(&c.key_file)
                .with_context(|| format!("cannot load checkpoint key {}", c.key_file.display()))?,
            every_records: c.every_records,
            every_ms: c.every_ms,
        }),
    };
    let opts = audit::WriterOptions {
        segment_size_bytes: s.segment_size_bytes,
        durability: s.durability,
        checkpoint,
    };
    let started = std::time::Instant::now();
    let mut r = crate::recovery::recover(&s.dir, opts, spec)?;
    let recovery = r.recovery;
    if recovery.truncated_bytes > 0 {
        tracing::warn!(
            "journal {}: cut a torn tail of {} bytes (from seq {:?}) left by a crash",
            s.dir.display(),
            recovery.truncated_bytes,
            recovery.truncated_from_seq
        );
    }
    for w in &r.warnings {
        tracing::warn!("{w}");
    }
    if r.records_before > 0 {
        tracing::info!(
            "recovered {} in {:.1} ms (snapshot {:.1} ms, journal tail {:.1} ms): {} \
             records, {} segment(s) from seq {} read and verified (`audit verify` checks the \
             rest); risk state {}",
            s.dir.display(),
            started.elapsed().as_secs_f64() * 1e3,
            r.load_ms,
            r.tail_ms,
            r.records_before,
            recovery.segments_verified,
            recovery.verified_from_seq,
            match &r.risk_source {
                crate::recovery::RiskSource::None => "kept by the risk service".to_owned(),
                crate::recovery::RiskSource::Fresh => "fresh".to_owned(),
                crate::recovery::RiskSource::Snapshot { path, .. } => format!(
                    "from snapshot {} + {} decisions after it",
                    path.display(),
                    r.decisions_replayed
                ),
                crate::recovery::RiskSource::FullReplay => format!(
                    "replayed from the whole journal ({} decisions)",
                    r.decisions_replayed
                ),
            }
        );
    }
    let publisher = match &s.pub_endpoint {
        None => None,
        Some(ep) => Some(
            audit::Publisher::open(
                ctx,
                ep,
                s.pub_format,
                s.json_pub_endpoint.as_deref(),
                audit::limits::PUB_SNDHWM_MESSAGES_DEFAULT,
                auth,
            )
            .with_context(|| format!("cannot open the audit publisher on {ep}"))?,
        ),
    };
    let mut log = AuditLog::new(r.writer, publisher);
    // The account name table: the journal's, then the limits file's names and the order
    // file's, each new one journaled before any decision (crate::account_names).
    let mut account_names = std::mem::take(&mut r.account_names);
    let mut limits = spec.limits.clone();
    let limit_names: Vec<String> = limits
        .iter()
        .flat_map(|l| l.account_names.keys().cloned())
        .collect();
    let new_names = crate::account_names::settle(
        &mut log,
        &mut account_names,
        s.max_account_names,
        limit_names.iter().map(String::as_str).chain(
            file_names
                .into_iter()
                .flat_map(|f| f.iter().map(|(_, n)| n)),
        ),
    )?;
    if new_names > 0 || !account_names.is_empty() {
        tracing::info!(
            "account names: {} in the table ({new_names} new, journaled), capacity {}",
            account_names.len(),
            account_names.capacity()
        );
    }
    if let Some(l) = &mut limits {
        if !l.account_names.is_empty() {
            l.resolve_account_names(|n| account_names.id(n))
                .map_err(anyhow::Error::msg)?;
            if let Some(c) = &mut r.checker {
                c.set_limits(l.clone());
            }
        }
    }
    if let (Some(limits), true) = (&limits, s.snapshots.enabled()) {
        let source = crate::snapshots::StateSource {
            limits: limits.clone(),
            snapshot: r.snapshot_used,
        };
        let snapshots = crate::snapshots::Snapshotter::spawn(
            s.dir.clone(),
            source,
            // The head now: the account-name records appended above included.
            log.writer.next_seq().saturating_sub(1),
            s.snapshots,
            s.durability != audit::Durability::None,
        )
        .context("cannot start the risk-state snapshot thread")?;
        log.snapshots = Some(snapshots);
    }
    Ok(OpenedJournal {
        log,
        recovery,
        last: r.last,
        records_before: r.records_before,
        checker: r.checker,
        redelivery: r.redelivery,
        account_names,
    })
}

/// Gives an order file's named accounts the ids of the journal's table (the file's own ids
/// are first-seen order in the file: the same unless the journal saw other names first).
fn map_file_accounts(
    file: &mut orders::OrderFile,
    table: &orders::AccountNames,
) -> anyhow::Result<()> {
    if let Some(map) = crate::account_names::file_map(file.account_names(), table)? {
        file.map_accounts(|a| {
            a.checked_sub(orders::NAMED_ACCOUNT_BASE)
                .and_then(|i| map.get(i as usize).copied())
                .unwrap_or(a)
        });
    }
    Ok(())
}

/// The built-in limits of the embedded risk service when no limits file is given: the
/// annotated `examples/limits.toml`, compiled in (so a fresh clone replays with the limits the
/// example order file was made for, from any directory).
pub const BUILT_IN_LIMITS_TOML: &str = include_str!("../../examples/limits.toml");
const BUILT_IN_LIMITS_ORIGIN: &str = "built-in default limits";

/// `--fresh`: deletes the journal files in `dir` (segments, checkpoints, risk-state snapshots
/// `<seq>.snap` and `<seq>.snap.tmp`, and the leftovers of a segment creation that a crash can
/// leave: `spare.seg.tmp`, `<first_seq>.seg.tmp`, the names audit's own listing deletes on
/// open), holding the journal's writer lock so that a live
/// writer is never pulled from under. Anything in `dir` that is not a journal file makes it
/// refuse, deleting nothing.
fn wipe_journal(dir: &Path) -> anyhow::Result<u64> {
    use audit::format::{
        is_segment_tmp_file_name, parse_segment_file_name, CHECKPOINT_FILE_NAME, LOCK_FILE_NAME,
    };
    if !dir.exists() {
        return Ok(0);
    }
    let mut doomed = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == LOCK_FILE_NAME {
            continue;
        }
        let journal_file = parse_segment_file_name(&name).is_some()
            || is_segment_tmp_file_name(&name)
            || audit::snapshot::is_snapshot_file_name(&name)
            || name == CHECKPOINT_FILE_NAME;
        if !journal_file {
            bail!(
                "--fresh refuses to wipe {}: it holds {name:?}, which is not a journal file",
                dir.display()
            );
        }
        doomed.push(entry.path());
    }
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK_FILE_NAME))
        .with_context(|| format!("cannot open the lock of {}", dir.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| {
            anyhow::anyhow!(
                "--fresh refuses to wipe {}: another process has the journal open ({e})",
                dir.display()
            )
        })?;
    for p in &doomed {
        std::fs::remove_file(p).with_context(|| format!("cannot delete {}", p.display()))?;
    }
    Ok(doomed.len() as u64)
}

/// Limits from `limits_file`, or the built-in ones.
fn load_limits(limits_file: Option<&Path>) -> anyhow::Result<risk::Limits> {
    match limits_file {
        Some(f) => {
            risk::Limits::from_file(f).with_context(|| format!("bad risk limits {}", f.display()))
        }
        None => risk::Limits::from_toml_str(BUILT_IN_LIMITS_TOML, BUILT_IN_LIMITS_ORIGIN)
            .context("the built-in default risk limits do not validate"),
    }
}

/// The checker recovery rebuilt from the journal (`journal`: its state is that of the
/// decisions already journaled, so a resumed run checks exactly as an uninterrupted one
/// would), or a fresh one under the limits from `limits_file` (or the built-in ones).
fn recovered_checker(
    limits_file: Option<&Path>,
    journal: Option<risk::Checker>,
) -> anyhow::Result<risk::Checker> {
    if let Some(checker) = journal {
        if checker.replay_skipped() > 0 {
            tracing::warn!(
                "risk state rebuilt from the journal: {} accepted decisions did not fit and \
                 were skipped",
                checker.replay_skipped()
            );
        }
        return Ok(checker);
    }
    Ok(risk::Checker::new(load_limits(limits_file)?))
}

/// The risk gate and, for the embedded service, its server thread. The embedded service and
/// the inline checks rebuild their state (positions, open orders, throttles, seen ids) from the
/// decisions already in the journal, so a resumed run checks exactly as an uninterrupted one
/// would.
fn connect_risk(
    ctx: &zmq::Context,
    s: &RiskSettings,
    max_batch: usize,
    checker: Option<risk::Checker>,
    journal: Option<&Path>,
    last: Option<&Decision>,
    client: &zauth::ClientAuth,
) -> anyhow::Result<(Gate, Option<risk::EmbeddedRisk>)> {
    match &s.target {
        RiskTarget::Inline { limits_file } => {
            let checker = recovered_checker(limits_file.as_deref(), checker)?;
            Ok((Gate::Inline(Box::new(InlineRisk::new(checker))), None))
        }
        RiskTarget::Embedded { limits_file } => {
            let checker = recovered_checker(limits_file.as_deref(), checker)?;
            let endpoint = format!("inproc://engine-risk-{}", std::process::id());
            let opts = risk::ServiceOptions {
                max_batch_orders: max_batch,
                config_path: limits_file.clone(),
            };
            let server =
                risk::spawn_embedded_with(ctx, checker, std::slice::from_ref(&endpoint), opts)
                    .context("cannot start the embedded risk service")?;
            let client = risk::RiskClient::connect(ctx, &[endpoint], s.timeout, max_batch)
                .context("cannot connect to the embedded risk service")?;
            Ok((Gate::Client(Box::new(client)), Some(server)))
        }
        RiskTarget::Remote { endpoints } if s.protocol == crate::config::RiskProtocol::Json => {
            probe_risk_handshakes(ctx, endpoints, client)?;
            // The old JSON service has no hello (no batch bound, no reconciliation): one
            // order per request, each bounded by the timeout.
            let client = risk::JsonRiskClient::connect(ctx, endpoints, s.timeout, client.clone())
                .with_context(|| {
                format!("cannot connect to JSON risk service {endpoints:?}")
            })?;
            tracing::info!(
                "--risk-protocol json: one round trip per order to {} (OK accepts, any \
                 other reply is risk-refused); throughput is capped at 1/RTT",
                endpoints.join(" ")
            );
            Ok((Gate::Json(Box::new(client)), None))
        }
        RiskTarget::Remote { endpoints } => {
            probe_risk_handshakes(ctx, endpoints, client)?;
            let mut client = risk::RiskClient::connect_with_auth(
                ctx,
                endpoints,
                s.timeout,
                max_batch,
                client.clone(),
            )
            .with_context(|| format!("cannot connect to risk service {endpoints:?}"))?;
            hello_risk(&mut client, endpoints, s.timeout, journal, last)?;
            Ok((Gate::Client(Box::new(client)), None))
        }
    }
}

/// Start-up: the account name table to every remote risk service (after its hello), so that
/// its limits keyed by name apply to the journal's ids (`docs/formats/risk-protocol.md`,
/// "Account names"). Nothing is sent for an empty table. A server that refuses them (a
/// conflicting binding: another engine's table) stops the start; an older server that does not
/// know the request gets a warning (it has no limits keyed by name: it would have refused the
/// file). The client keeps the table: names `engine run` interns later go to the current
/// server before the first batch that uses them, and a reconnect sends the whole table again
/// ([`risk::RiskClient::learn_names`]).
fn send_account_names(
    client: &mut risk::RiskClient,
    endpoints: &[String],
    timeout: Duration,
    table: &orders::AccountNames,
) -> anyhow::Result<()> {
    if table.is_empty() {
        return Ok(());
    }
    let names: Vec<(u32, &str)> = table.iter().collect();
    // The client keeps its servers in step with the table from here on (a reconnect, names
    // interned later).
    let owned: Vec<(u32, String)> = names.iter().map(|(i, n)| (*i, (*n).to_owned())).collect();
    client.learn_names(&owned);
    let wait = timeout.max(Duration::from_millis(RISK_HELLO_WAIT_MS));
    for ep in endpoints {
        match client.send_account_names(ep, &names, wait) {
            Ok(()) => {
                client.names_held(ep, names.len());
                tracing::info!(
                    "risk service {ep}: sent the account name table ({} names)",
                    names.len()
                )
            }
            Err(risk::RiskError::Names { text, .. }) if text.starts_with("unsupported-type") => {
                client.names_held(ep, names.len());
                tracing::warn!(
                    "risk service {ep} does not take account names (an older risk-server): \
                     orders of named accounts get its [defaults]"
                );
            }
            Err(e) => return Err(e).context("cannot send the account name table"),
        }
    }
    Ok(())
}

/// Start-up hello with every remote risk service (`docs/formats/risk-protocol.md`, "Hello"):
/// each says its batch bound, and the client caps its batches to the lowest; on a resume each
/// undoes the batches of the session the journal ends on that the journal does not hold
/// (the engine was killed between the server's verdicts and their records). A server that can
/// no longer undo them stops the start-up: it must be restarted with `--recover-from`. A
/// server that does not answer stops a resume that has something to reconcile; otherwise the
/// run starts (its timeouts handle it, and a batch above its bound stops the engine).
fn hello_risk(
    client: &mut risk::RiskClient,
    endpoints: &[String],
    timeout: Duration,
    journal: Option<&Path>,
    last: Option<&Decision>,
) -> anyhow::Result<()> {
    let point = match (journal, last) {
        (Some(_), Some(d)) => risk::JournalPoint {
            prev_session: d.risk_session,
            journaled_batch: d.risk_batch,
            journaled_orders: d.risk_batch_orders,
        },
        _ => risk::JournalPoint::default(),
    };
    let dir = journal.map_or_else(|| "JOURNAL_DIR".into(), |p| p.display().to_string());
    let wait = timeout.max(Duration::from_millis(RISK_HELLO_WAIT_MS));
    let asked = client.max_batch();
    for ep in endpoints {
        let r = match client.hello(ep, point, wait) {
            Ok(r) => r,
            Err(risk::RiskError::HelloRefused {
                status: "unsupported-type",
                ..
            }) => {
                tracing::warn!(
                    "risk service {ep} does not speak the hello request (an \
                     older risk-server): its batch bound is not checked, and it is not \
                     reconciled with the journal (after a kill of the engine, restart it with \
                     --recover-from {dir})"
                );
                continue;
            }
            Err(e) if point.prev_session != 0 => bail!(
                "{e}: the journal in {dir} ends on batches that server may have applied \
                 without their records being written, and they cannot be reconciled. Start the \
                 risk service (if it was restarted, with --recover-from {dir}) and resume again"
            ),
            Err(e) => {
                tracing::warn!(
                    "{e}; starting anyway (risk timeouts until it answers; its \
                     batch bound is not known, and a batch above it stops the engine)"
                );
                continue;
            }
        };
        if (r.max_batch as usize) < asked {
            tracing::warn!(
                "risk service {ep} accepts batches of at most {} orders (its \
                 --max-batch); risk batches are capped at that (--max-batch here: {asked})",
                r.max_batch
            );
        }
        let session = point.prev_session;
        match r.outcome {
            risk::VoidOutcome::Voided if session != 0 => tracing::info!(
                "risk service {ep} reconciled with the journal (session {session:016x} \
                 through batch {}, order {} of it): {} batch(es) undone in whole or in part",
                point.journaled_batch,
                point.journaled_orders,
                r.voided
            ),
            risk::VoidOutcome::Voided => {}
            risk::VoidOutcome::Unknown => tracing::info!(
                "risk service {ep} has no record of session {session:016x}, on which the \
                 journal ends (restarted, recovered from the journal, or another server): \
                 nothing to reconcile"
            ),
            risk::VoidOutcome::TooOld => bail!(
                "risk service {ep} applied batches of session {session:016x} after batch {}, \
                 which the journal in {dir} does not hold, and can no longer undo them ({} \
                 undone): its state counts orders the journal never decided. Restart it with \
                 --recover-from {dir} and resume again",
                point.journaled_batch,
                r.voided
            ),
        }
    }
    Ok(())
}

/// Start-up check of the remote risk services' authentication: a throw-away REQ per endpoint
/// (sending nothing) with the engine's credentials, all waited for together for at most
/// [`RISK_AUTH_PROBE_MS`]. A server that refuses them, or wants credentials the engine does not
/// send, is a configuration error named here; once running, a refused REQ socket would only
/// show as `risk-timeout` on every order. A server that does not answer in time may just be
/// down: the run starts, and its timeouts and failover handle it.
fn probe_risk_handshakes(
    ctx: &zmq::Context,
    endpoints: &[String],
    client: &zauth::ClientAuth,
) -> anyhow::Result<()> {
    let mut probes = Vec::with_capacity(endpoints.len());
    for ep in endpoints {
        let s = ctx
            .socket(zmq::REQ)
            .context("cannot create the risk probe socket")?;
        s.set_linger(0).context("risk probe ZMQ_LINGER")?;
        client
            .apply(&s)
            .context("cannot set the risk credentials")?;
        let watch = zauth::HandshakeWatch::start(ctx, &s)
            .context("cannot monitor the risk probe socket")?;
        s.connect(ep)
            .with_context(|| format!("cannot connect to risk service {ep}"))?;
        probes.push((ep, s, watch));
    }
    let deadline = std::time::Instant::now() + Duration::from_millis(RISK_AUTH_PROBE_MS);
    for (ep, _socket, watch) in &probes {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match zauth::wait_decisive(watch, left)
            .with_context(|| format!("cannot watch the handshake with risk service {ep}"))?
        {
            None | Some(zauth::Handshake::Succeeded) => {}
            Some(refused) => bail!(
                "risk service {ep} {refused} (engine: [security] credentials or \
                 risk_server_key / curve_key in engine.toml, --credentials or --risk-server-key \
                 / --curve-key for replay)"
            ),
        }
    }
    Ok(())
}

/// Watches the egress socket's handshakes on a thread of its own. Egress never drops an
/// order: it waits for downstream, so a downstream that refuses the engine's credentials would
/// make the engine wait for ever. The refusal instead ends the process at once with exit code
/// 1 and a message naming the endpoint; every decision is in the journal (as after `kill -9`),
/// and a restart with the right credentials re-sends the journal's tail.
fn watch_egress(ctx: &zmq::Context, socket: &zmq::Socket, endpoint: &str) -> anyhow::Result<()> {
    let watch =
        zauth::HandshakeWatch::start(ctx, socket).context("cannot monitor the egress socket")?;
    let endpoint = endpoint.to_owned();
    std::thread::Builder::new()
        .name("egress-auth".into())
        .spawn(move || loop {
            match watch.next(-1) {
                // `Closed` is not final: libzmq retries, and a refusal shows on a later attempt.
                Ok(None | Some(zauth::Handshake::Succeeded | zauth::Handshake::Closed)) => {}
                Ok(Some(refused)) => {
                    tracing::error!(
                        endpoint = %endpoint,
                        "egress {endpoint} {refused}; accepted orders cannot be \
                         delivered, so the engine stops (exit 1). Every decision is in the \
                         journal: fix the credentials ([security] credentials or \
                         egress_server_key, --credentials or --egress-server-key) \
                         and restart (replay: --resume) to re-send the journal's tail"
                    );
                    std::process::exit(1);
                }
                // The context is ending: the run is over.
                Err(_) => return,
            }
        })
        .context("cannot start the egress handshake watcher")?;
    Ok(())
}

fn connect_egress(
    ctx: &zmq::Context,
    target: &EgressTarget,
    client: &zauth::ClientAuth,
) -> anyhow::Result<Option<zmq::Socket>> {
    let EgressTarget::Push {
        endpoint, sndhwm, ..
    } = target
    else {
        return Ok(None);
    };
    let s = ctx
        .socket(zmq::PUSH)
        .context("cannot create the egress socket")?;
    client
        .apply(&s)
        .context("cannot set the egress credentials")?;
    watch_egress(ctx, &s, endpoint)?;
    // Queue nothing for peers that are not connected: egress waits instead.
    s.set_immediate(true).context("egress ZMQ_IMMEDIATE")?;
    s.set_sndhwm(*sndhwm).context("egress ZMQ_SNDHWM")?;
    // A known kernel buffer: the redelivery window covers it (limits::EGRESS_SNDBUF_BYTES).
    s.set_sndbuf(EGRESS_SNDBUF_BYTES)
        .context("egress ZMQ_SNDBUF")?;
    s.set_linger(EGRESS_LINGER_MS)
        .context("egress ZMQ_LINGER")?;
    s.connect(endpoint)
        .with_context(|| format!("cannot connect egress to {endpoint}"))?;
    Ok(Some(s))
}

/// The egress message format of a target (batch without a downstream).
fn out_format_of(egress: &EgressTarget) -> crate::out_format::OutFormat {
    match egress {
        EgressTarget::Push { format, .. } => *format,
        EgressTarget::None => crate::out_format::OutFormat::Batch,
    }
}

/// What `replay` and `run` set up between opening the journal and starting the pipeline.
struct Links {
    gate: Gate,
    embedded: Option<risk::EmbeddedRisk>,
    egress: Option<zmq::Socket>,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// The accepted orders of the journal's tail to re-send ([`crate::redelivery::on_start`]).
    tail: Vec<crate::frames::EgressEntry>,
}

impl Links {
    /// Re-sends the journal's tail downstream ([`crate::redelivery::on_start`]); `false` when a
    /// signal stopped it.
    fn redeliver(
        &mut self,
        egress: &EgressTarget,
        records_before: u64,
        max_batch: usize,
    ) -> anyhow::Result<bool> {
        let endpoint = match egress {
            EgressTarget::Push { endpoint, .. } => endpoint.as_str(),
            EgressTarget::None => "",
        };
        let tail = std::mem::take(&mut self.tail);
        crate::redelivery::on_start(
            self.egress.as_ref().map(|s| (s, endpoint)),
            &tail,
            records_before,
            out_format_of(egress),
            max_batch,
            &self.stop,
            &self.metrics.egress.backpressure_waits,
        )
    }

    /// After a stop during the redelivery: the embedded risk service is stopped.
    fn abandon(self) {
        drop(self.gate);
        if let Some(server) = self.embedded {
            server.stop();
        }
    }
}

/// Connects the risk service (starting the embedded one, recovered from the journal when it has
/// records) and the egress socket, and installs the signal handlers (before the redelivery of
/// the journal's tail, [`Links::redeliver`], which may wait for an absent downstream).
fn connect_links(
    ctx: &zmq::Context,
    risk: &RiskSettings,
    egress: &EgressTarget,
    stages: &StageSettings,
    security: &SecuritySettings,
    journal_dir: &Path,
    opened: &mut OpenedJournal,
) -> anyhow::Result<Links> {
    let records_before = opened.records_before;
    let resume_dir = (records_before > 0).then_some(journal_dir);
    let last = opened.last;
    let (gate, embedded) = connect_risk(
        ctx,
        risk,
        stages.max_batch,
        opened.checker.take(),
        resume_dir,
        last.as_ref(),
        &security.client,
    )?;
    let mut gate = gate;
    if let (RiskTarget::Remote { endpoints }, Gate::Client(client)) = (&risk.target, &mut gate) {
        send_account_names(client, endpoints, risk.timeout, &opened.account_names)?;
    }
    let egress = connect_egress(ctx, egress, &security.egress_client)?;
    // Signals before the redelivery, which may wait for an absent downstream.
    let stop = Arc::new(AtomicBool::new(false));
    install_signals(&stop)?;
    let metrics = Arc::new(Metrics::default());
    Ok(Links {
        gate,
        embedded,
        egress,
        stop,
        metrics,
        tail: std::mem::take(&mut opened.redelivery),
    })
}

/// Prints [`crate::topology::placement_warnings`] for the stages' cores and idle strategies.
fn warn_placement(stages: &crate::config::StageSettings) {
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated").unwrap_or_default();
    let isolated = crate::topology::parse_cpu_list(&isolated);
    for w in crate::topology::placement_warnings(&stages.cores, &stages.idle, &isolated) {
        tracing::warn!("{w}");
    }
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)` when asked: rings, buffers and the journal mapping stay
/// resident.
fn lock_memory(wanted: bool) -> anyhow::Result<()> {
    if wanted {
        use nix::sys::mman::{mlockall, MlockAllFlags};
        mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).context(
            "mlockall failed: raise the memlock limit (ulimit -l, LimitMEMLOCK=infinity) or grant \
             CAP_IPC_LOCK (docs/tuning.md)",
        )?;
    }
    Ok(())
}

/// SIGINT/SIGTERM: the first sets `stop` (drain and exit 0); a second one while draining exits
/// at once with status 1 (the journal is safe: what is appended is in the page cache).
fn install_signals(stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(stop))
            .context("cannot install signal handlers")?;
        signal_hook::flag::register(sig, Arc::clone(stop))
            .context("cannot install signal handlers")?;
    }
    Ok(())
}

/// The end of a run common to both commands: sync, stop embedded risk, fill the report.
fn finish(
    result: PipelineResult<Gate, AuditLog>,
    embedded: Option<risk::EmbeddedRisk>,
    metrics: &Metrics,
    report: &mut Report,
) -> anyhow::Result<()> {
    let PipelineResult {
        gate,
        log,
        egress_socket,
        accepted,
        rejected,
        t0_ns,
        last_end_ns,
        idle,
        threading,
        errors,
    } = result;
    report.threading = Some(threading);
    report.errors = errors
        .iter()
        .map(|(stage, e)| format!("{stage} stage: {e}"))
        .collect();
    report.idle = idle.map(|m| m.as_str().to_owned());
    if let Some(mut log) = log {
        // A last risk-state snapshot of the head on a clean stop (restart then replays
        // nothing); after a failure only the snapshot thread is stopped.
        let clean = report.errors.is_empty();
        match log.close_snapshots(clean, Clock::new().now_ns()) {
            Ok((written, problem)) => {
                report.journal.snapshots = written;
                if let Some(p) = problem {
                    tracing::warn!("risk-state snapshots stopped: {p}");
                }
            }
            Err(e) => report.errors.push(format!("final snapshot record: {e}")),
        }
        if let Err(e) = log.writer.sync() {
            report
                .errors
                .push(format!("final journal sync: {}", chain(&e)));
        }
        // Anchor the final head (a no-op without a checkpoint key or when already anchored).
        if let Err(e) = log.writer.checkpoint_now(Clock::new().now_ns()) {
            report
                .errors
                .push(format!("final checkpoint: {}", chain(&e)));
        }
        let next = log.writer.next_seq();
        report.journal.records = next.saturating_sub(1);
        report.journal.last_seq = next.saturating_sub(1);
        report.journal.head_hash = hex(&log.writer.head_hash());
    }
    drop(gate);
    if let Some(server) = embedded {
        server.stop();
    }
    // Closing the egress socket lets ZeroMQ deliver what it accepted (bounded by its linger).
    drop(egress_socket);

    let j = &metrics.journal;
    report.orders = j.records.load(Relaxed);
    report.accepted = j.accepted();
    report.rejected = report.orders - report.accepted.min(report.orders);
    report.rejected_by_reason = Reason::ALL
        .iter()
        .filter(|r| !r.is_accepted())
        .filter_map(|r| {
            let n = j.by_reason[r.code() as usize].load(Relaxed);
            (n > 0).then(|| (r.as_str().to_owned(), n))
        })
        .collect::<BTreeMap<_, _>>();
    if report.orders == 0 {
        // Set at open to the first sequence number this run appends.
        report.journal.first_seq = 0;
    }
    report.set_latency(&accepted, &rejected);
    if let (Some(t0), Some(end)) = (t0_ns, last_end_ns) {
        report.elapsed_s = end.saturating_sub(t0) as f64 / 1e9;
    }
    if report.elapsed_s > 0.0 {
        report.throughput_per_s = report.orders as f64 / report.elapsed_s;
    }
    let r = &metrics.risk;
    let batches = r.batches.load(Relaxed);
    report.risk.batches = batches;
    report.risk.mean_batch = if batches > 0 {
        r.orders.load(Relaxed) as f64 / batches as f64
    } else {
        0.0
    };
    report.risk.timeouts = r.timeouts.load(Relaxed);
    report.risk.failed_batches = r.failed_batches.load(Relaxed);
    report.risk.failovers = r.failovers.load(Relaxed);
    report.risk.wait_max_us = r.wait_max_ns.load(Relaxed) as f64 / 1e3;
    report.backpressure_waits = Backpressure {
        ingress: metrics.ingress.backpressure_waits.load(Relaxed),
        risk: r.backpressure_waits.load(Relaxed),
        journal: j.backpressure_waits.load(Relaxed),
        egress: metrics.egress.backpressure_waits.load(Relaxed),
    };
    report.egress.frames = metrics.egress.frames.load(Relaxed);
    report.egress.orders = metrics.egress.orders.load(Relaxed);
    Ok(())
}

fn write_outputs(
    report: &Report,
    json: Option<&Path>,
    hgrm: Option<(&Path, &crate::latency::LatencySet)>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report).context("cannot encode the report")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the report {}", path.display()))?;
        tracing::info!("report written to {}", path.display());
    }
    if let Some((path, set)) = hgrm {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        );
        write_hgrm(&set.total, &mut f)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::flush(&mut f)
            .with_context(|| format!("cannot write {}", path.display()))?;
        tracing::info!(
            "latency distribution (HdrHistogram percentiles, µs) written to {}",
            path.display()
        );
        // The same histogram in HdrHistogram's V2 compressed format, beside it.
        let hdr = crate::latency::hdr_path_beside(path);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&hdr)
                .with_context(|| format!("cannot create {}", hdr.display()))?,
        );
        crate::latency::write_hdr(&set.total, &mut f)
            .with_context(|| format!("cannot write {}", hdr.display()))?;
        std::io::Write::flush(&mut f).with_context(|| format!("cannot write {}", hdr.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// replay

/// Validated `engine replay` settings.
#[derive(Debug)]
struct ReplaySettings {
    schedule: Schedule,
    risk: RiskSettings,
    journal: JournalSettings,
    egress: EgressTarget,
    stages: StageSettings,
    format: Option<orders::files::Format>,
    symbol: Option<orders::Symbol>,
    security: SecuritySettings,
}

/// The replay flags of the security settings, for problems.
const SECURITY_FLAG_KEYS: SecurityKeys = SecurityKeys {
    credentials: "--credentials",
    allow: "--allow",
    plain_credentials: "--plain-credentials",
    insecure: "--insecure",
    curve_key: "--curve-key",
    curve_clients: "--curve-clients",
    risk_server_key: "--risk-server-key",
    egress_server_key: "--egress-server-key",
};

fn validate_replay(a: &ReplayArgs) -> anyhow::Result<ReplaySettings> {
    let mut p = Problems::default();
    let schedule = match (a.pace, a.rate) {
        (Some(speedup), _) => Schedule::Recorded { speedup },
        (None, Rate::Max) => Schedule::Max,
        (None, Rate::PerSecond(per_s)) => Schedule::Rate { per_s },
    };
    let target = if a.risk.len() == 1 && a.risk[0] == "embedded" {
        RiskTarget::Embedded {
            limits_file: a.limits.clone(),
        }
    } else if a.risk.len() == 1 && a.risk[0] == "inline" {
        RiskTarget::Inline {
            limits_file: a.limits.clone(),
        }
    } else {
        for e in &a.risk {
            if e == "embedded" || e == "inline" {
                p.add("--risk", format!("`{e}` cannot be mixed with endpoints"));
            } else if let Err(m) = check_endpoint(e) {
                p.add("--risk", m);
            }
        }
        if a.limits.is_some() {
            p.add(
                "--limits",
                "only for --risk embedded (a risk-server has its own limits)",
            );
        }
        RiskTarget::Remote {
            endpoints: a.risk.clone(),
        }
    };
    if a.risk_timeout_ms == 0 || a.risk_timeout_ms > RISK_TIMEOUT_MS_MAX {
        p.add(
            "--risk-timeout-ms",
            format!("{} is outside 1..={RISK_TIMEOUT_MS_MAX}", a.risk_timeout_ms),
        );
    }
    let durability = match a.durability.parse::<audit::Durability>() {
        Ok(d) => d,
        Err(e) => {
            p.add("--durability", e.to_string());
            audit::Durability::None
        }
    };
    if let Some(ep) = &a.audit_pub {
        if let Err(m) = check_endpoint(ep.strip_prefix(audit::CONNECT_PREFIX).unwrap_or(ep)) {
            p.add("--audit-pub", m);
        }
    }
    check_segment_size(&mut p, "--segment-size-bytes", a.segment_size_bytes);
    // A `connect:` endpoint listens nowhere: nothing to authenticate.
    let bound: Vec<(&str, &str)> = a
        .audit_pub
        .iter()
        .filter(|ep| !ep.starts_with(audit::CONNECT_PREFIX))
        .map(|ep| ("--audit-pub", ep.as_str()))
        .collect();
    let security = check_security(
        &mut p,
        SECURITY_FLAG_KEYS,
        a.credentials.as_deref(),
        &a.allow,
        a.plain_credentials.as_deref(),
        a.insecure,
        crate::config::CurveFiles {
            key: a.curve_key.as_deref(),
            clients: a.curve_clients.as_deref(),
            risk_server_key: a.risk_server_key.as_deref(),
            egress_server_key: a.egress_server_key.as_deref(),
        },
        &bound,
    );
    let egress = if a.out == "none" {
        EgressTarget::None
    } else {
        if let Err(m) = check_endpoint(&a.out) {
            p.add("--out", m);
        }
        if a.out_hwm < 1 {
            p.add("--out-hwm", "must be ≥ 1 (0 would queue without bound)");
        }
        EgressTarget::Push {
            endpoint: a.out.clone(),
            sndhwm: a.out_hwm,
            format: a.out_format,
        }
    };
    let idle = match parse_per_stage::<IdleKind>(&a.idle, IdleKind::Backoff) {
        Ok(v) => v,
        Err(e) => {
            p.add("--idle", e.to_string());
            PerStage::all(IdleKind::Backoff)
        }
    };
    let cores = match &a.pin {
        None => PerStage::all(None),
        Some(text) => match parse_per_stage::<CoreSpec>(text, CoreSpec(None)) {
            Ok(v) => v.map(|c| c.0),
            Err(e) => {
                p.add("--pin", e.to_string());
                PerStage::all(None)
            }
        },
    };
    let stages = StageSettings {
        ring_capacity: a.ring_capacity,
        max_batch: a.max_batch,
        idle,
        cores,
        lock_memory: a.lock_memory,
        threading: a.threading,
    };
    crate::config::check_stages(&mut p, &crate::config::STAGE_FLAG_KEYS, &stages, false);
    let risk = RiskSettings {
        target,
        timeout: Duration::from_millis(a.risk_timeout_ms),
        protocol: a.risk_protocol,
    };
    crate::config::check_risk_protocol(&mut p, &crate::config::STAGE_FLAG_KEYS, &risk);
    let format = a.format.map(orders::files::Format::from);
    let symbol = match a.symbol.as_deref().map(orders::Symbol::new) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            p.add("--symbol", e.to_string());
            None
        }
    };
    if let Some(addr) = &a.metrics {
        if let Err(e) = metrics_endpoint::parse_addr(addr) {
            p.add("--metrics", e);
        }
    }
    if let Some(n) = a.max_account_names {
        if let Err(e) = crate::account_names::check_capacity(n, a.segment_size_bytes) {
            p.add("--max-account-names", e.to_string());
        }
    }
    if !p.0.is_empty() {
        let lines: Vec<String> = p.0.iter().map(|x| x.to_string()).collect();
        bail!("invalid arguments:\n  {}", lines.join("\n  "));
    }
    Ok(ReplaySettings {
        schedule,
        risk,
        journal: JournalSettings {
            dir: a.journal.clone(),
            durability,
            segment_size_bytes: a.segment_size_bytes,
            checkpoint: a.checkpoint_key.clone().map(|key_file| CheckpointSettings {
                key_file,
                every_records: CHECKPOINT_EVERY_RECORDS_DEFAULT,
                every_ms: CHECKPOINT_EVERY_MS_DEFAULT,
            }),
            pub_endpoint: a.audit_pub.clone(),
            json_pub_endpoint: None,
            pub_format: a.audit_format.into(),
            max_account_names: a
                .max_account_names
                .unwrap_or_else(|| crate::account_names::default_capacity(a.segment_size_bytes)),
            snapshots: crate::snapshots::SnapshotSettings {
                every_records: a.snapshot_every_records,
                every_ms: a.snapshot_every_ms,
            },
        },
        egress,
        stages,
        format,
        symbol,
        security,
    })
}

/// What one risk request carries, for the report.
fn risk_round_trips(p: crate::config::RiskProtocol) -> &'static str {
    match p {
        crate::config::RiskProtocol::Binary => "one request per batch",
        crate::config::RiskProtocol::Json => "one round trip per order",
    }
}

fn risk_target_name(t: &RiskTarget) -> String {
    match t {
        RiskTarget::Inline { limits_file: None } => "inline (built-in examples/limits.toml)".into(),
        RiskTarget::Inline {
            limits_file: Some(f),
        } => format!("inline ({})", f.display()),
        RiskTarget::Embedded { limits_file: None } => {
            "embedded (built-in examples/limits.toml)".into()
        }
        RiskTarget::Embedded {
            limits_file: Some(f),
        } => format!("embedded ({})", f.display()),
        RiskTarget::Remote { endpoints } => endpoints.join(" "),
    }
}

/// `engine replay`.
pub fn replay(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let s = validate_replay(&a)?;
    let opts = orders::files::LoadOptions {
        format: s.format,
        symbol: s.symbol,
        max_errors: a.max_errors,
        lobster_accounts: a.lobster_accounts,
        ..orders::files::LoadOptions::default()
    };
    let load_context = || format!("cannot load the order file {}", a.file.display());
    let opened_file =
        orders::files::OrderFile::open_deferred(&a.file, &opts).with_context(load_context)?;
    // A fresh run reads and validates every order before it touches the journal. A resume of
    // a plain binary file has had its header checked; its records are read from the resume
    // point once the journal says where that is (those before it were decided already):
    // the restart does not grow with the input already replayed (docs/results.md, "Restart
    // time"). Text and gzipped files were read whole by `open_deferred`.
    let (mut loaded, deferred) = if a.resume && opened_file.is_deferred() {
        (None, Some(opened_file))
    } else {
        let file = opened_file.load_from(0).with_context(load_context)?;
        for line in file.skipped_report() {
            tracing::warn!("skipped {line}");
        }
        (Some(file), None)
    };
    if a.fresh {
        let n = wipe_journal(&s.journal.dir)?;
        if n > 0 {
            tracing::info!(
                "--fresh: deleted {n} journal file(s) in {}",
                s.journal.dir.display()
            );
        }
    }
    let ctx = zmq::Context::new();
    let server_auth = s.security.server_auth();
    // One ZAP handler for the context, before any socket binds (none without authentication).
    let _zap =
        zauth::ZapHandler::start(&ctx, &server_auth).context("cannot start ZAP authentication")?;
    let spec = recovery_spec(&s.risk, &s.egress, &s.stages)?;
    let mut opened = open_journal(
        &ctx,
        &s.journal,
        &server_auth,
        &spec,
        loaded.as_ref().map(|f| f.account_names()),
    )?;
    if let Some(file) = &mut loaded {
        map_file_accounts(file, &opened.account_names)?;
    }
    if let Some(d) = deferred {
        // From the newest decision's input (it is compared with the journal below).
        let from = match (&opened.last, a.resume) {
            (Some(last), true) => last.input_seq,
            _ => 0,
        };
        let t = std::time::Instant::now();
        let file = d.load_from(from).with_context(load_context)?;
        tracing::info!(
            "read orders {from}..{} of {} in {:.1} ms (the {from} before were decided \
             already: not read)",
            file.len(),
            file.path().display(),
            t.elapsed().as_secs_f64() * 1e3
        );
        loaded = Some(file);
    }
    let Some(file) = loaded else {
        bail!("the order file {} was not loaded", a.file.display());
    };
    if file.account_names().is_empty() && !opened.account_names.is_empty() {
        // Account numbers of the named range would be taken for names.
        if let Some(o) = file.iter().find(|o| orders::is_named_account(o.account)) {
            bail!(
                "the order file {} uses account number {} (order_id {}), an id of the \
                 journal's account names (from {}): give the account by name",
                a.file.display(),
                o.account,
                o.order_id,
                orders::NAMED_ACCOUNT_BASE
            );
        }
    }
    let skipped = file.skipped();
    let start = match (&opened.last, a.resume) {
        (None, _) if opened.records_before == 0 => 0,
        (_, false) => bail!(
            "the journal in {} already holds {} records{}; pass --resume to continue it, --fresh \
             to delete it and start over, or --journal with another directory",
            s.journal.dir.display(),
            opened.records_before,
            opened
                .last
                .map(|d| format!(" (last decided input_seq {})", d.input_seq))
                .unwrap_or_default()
        ),
        (None, true) => 0,
        (Some(last), true) => {
            let i = usize::try_from(last.input_seq).unwrap_or(usize::MAX);
            if i >= file.len() || file.get(i) != last.order {
                bail!(
                    "the journal in {} was not written from {}: its last decision (input_seq {}, \
                     order_id {}) does not match the file",
                    s.journal.dir.display(),
                    a.file.display(),
                    last.input_seq,
                    last.order.order_id
                );
            }
            i + 1
        }
    };
    let mut links = connect_links(
        &ctx,
        &s.risk,
        &s.egress,
        &s.stages,
        &s.security,
        &s.journal.dir,
        &mut opened,
    )?;
    if !links.redeliver(&s.egress, opened.records_before, s.stages.max_batch)? {
        links.abandon();
        return Ok(ExitCode::SUCCESS);
    }
    let Links {
        gate,
        embedded,
        egress,
        stop,
        metrics,
        ..
    } = links;
    warn_placement(&s.stages);
    tracing::info!(
        "{}",
        pipeline::threading_plan(
            &s.stages,
            s.schedule
                .workload(matches!(s.risk.target, RiskTarget::Inline { .. }))
        )
    );
    lock_memory(s.stages.lock_memory)?;
    let metrics_server = match &a.metrics {
        None => None,
        Some(addr) => {
            let m = MetricsServer::start(addr, Arc::clone(&metrics))?;
            tracing::info!("metrics on http://{}/metrics", m.addr());
            Some(m)
        }
    };
    let total = file.len();
    let to_send = total.saturating_sub(start) as u64;
    // A bar on a terminal only, with text logs (orders::logging::progress_on_terminal).
    let progress = (!a.no_progress && orders::logging::progress_on_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(to_send);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} orders ({per_sec}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        pb
    });
    let mut report = Report {
        command: "replay".into(),
        input: a.file.display().to_string(),
        schedule: s.schedule.to_string(),
        start_index: start as u64,
        resumed: a.resume && opened.records_before > 0,
        warmup: a.warmup.min(to_send),
        bad_input: skipped,
        max_batch: s.stages.max_batch,
        ring_capacity: s.stages.ring_capacity,
        cores: s.stages.cores,
        risk: RiskReport {
            target: risk_target_name(&s.risk.target),
            timeout_ms: s.risk.timeout.as_millis() as u64,
            protocol: s.risk.protocol.as_str().to_owned(),
            round_trips: risk_round_trips(s.risk.protocol).to_owned(),
            ..RiskReport::default()
        },
        egress: EgressReport {
            target: a.out.clone(),
            ..EgressReport::default()
        },
        journal: JournalReport {
            dir: s.journal.dir.display().to_string(),
            first_seq: opened.records_before + 1,
            recovered_truncated_bytes: opened.recovery.truncated_bytes,
            durability: a.durability.clone(),
            ..JournalReport::default()
        },
        ..Report::default()
    };
    let popts = PipelineOptions {
        stages: s.stages.clone(),
        warmup_until_seq: (start as u64).saturating_add(a.warmup),
        publish_latency: metrics_server.is_some(),
        out_format: out_format_of(&s.egress),
    };
    if report.resumed {
        // The restart time (docs/results.md, "Restart time"): from the command's start to
        // the pipeline taking its first order.
        tracing::info!(
            "restart: ready to decide input_seq {start} after {:.1} ms (journal \
             recovery, order file, links)",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let m2 = Arc::clone(&metrics);
    let watch = crate::downstream_watch::start_for(&s.egress, &metrics)?;
    let result = pipeline::run(
        IngressSource::Replay {
            orders: Box::new(file),
            start,
            schedule: s.schedule,
        },
        gate,
        opened.log,
        egress,
        &popts,
        Clock::new(),
        Arc::clone(&stop),
        Arc::clone(&metrics),
        || {
            if let Some(pb) = &progress {
                pb.set_position(m2.journal.records.load(Relaxed));
            }
        },
    )?;
    drop(watch);
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut all = result.accepted.clone();
    all.merge(&result.rejected);
    finish(result, embedded, &metrics, &mut report)?;
    if let Some(m) = metrics_server {
        m.stop();
    }
    print!("{}", report.table());
    write_outputs(
        &report,
        a.report.as_deref(),
        a.hgrm.as_deref().map(|p| (p, &all)),
    )?;
    if !report.errors.is_empty() {
        // The command's final error print, one line per stage error.
        for e in &report.errors {
            orders::logging::print_final_error(&format!("error: {e}"));
        }
        return Ok(ExitCode::FAILURE);
    }
    if stop.load(Relaxed) {
        tracing::info!(
            "stopped by signal after {} orders; continue with --resume",
            report.orders
        );
    }
    // The `next:` hints, one event per line, under target `hint` (RUST_LOG=info,hint=off
    // hides them).
    let hint = crate::hints::after_replay(
        &s.journal.dir,
        s.journal.checkpoint.is_some(),
        a.report.as_deref(),
        a.hgrm.as_deref(),
    );
    for line in hint.lines() {
        tracing::info!(target: "hint", "{line}");
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------------
// run

/// Tells systemd the service is ready (`READY=1` to `$NOTIFY_SOCKET`; nothing without it).
fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot notify systemd of readiness: {e}");
    }
}

/// `engine run --config FILE`.
pub fn serve(a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = ServiceConfig::from_file(&a.config)?;
    if let Some(f) = a.audit_format {
        cfg.journal.pub_format = f.into();
        if cfg.journal.pub_format == audit::FeedFormat::Json
            && cfg.journal.json_pub_endpoint.is_some()
        {
            bail!(
                "--audit-format json makes journal.pub_endpoint a JSON feed: drop \
                 journal.json_pub_endpoint from {}",
                a.config.display()
            );
        }
    }
    let ctx = zmq::Context::new();
    let server_auth = cfg.security.server_auth();
    // One ZAP handler for the context, before any socket binds (none without authentication).
    let _zap =
        zauth::ZapHandler::start(&ctx, &server_auth).context("cannot start ZAP authentication")?;
    let spec = recovery_spec(&cfg.risk, &cfg.egress, &cfg.stages)?;
    let mut opened = open_journal(&ctx, &cfg.journal, &server_auth, &spec, None)?;
    let next_seq = opened.last.map_or(0, |d| d.input_seq + 1);
    let mut links = connect_links(
        &ctx,
        &cfg.risk,
        &cfg.egress,
        &cfg.stages,
        &cfg.security,
        &cfg.journal.dir,
        &mut opened,
    )?;
    let metrics = Arc::clone(&links.metrics);
    let pull = ctx
        .socket(zmq::PULL)
        .context("cannot create the ingress socket")?;
    pull.set_rcvhwm(cfg.ingress.rcvhwm)
        .context("ingress ZMQ_RCVHWM")?;
    pull.set_linger(0).context("ingress ZMQ_LINGER")?;
    // libzmq drops a peer announcing a larger message before allocating it.
    pull.set_maxmsgsize(i64::try_from(INGRESS_MESSAGE_BYTES_MAX).unwrap_or(i64::MAX))
        .context("ingress ZMQ_MAXMSGSIZE")?;
    // Under [security]: a remote endpoint needs an allow-list or PLAIN credentials (checked by
    // the ZAP handler started above), or `insecure` (docs/security.md).
    let bound = zauth::bind(&ctx, &pull, &cfg.ingress.bind, &server_auth)
        .with_context(|| format!("cannot bind the ingress on {}", cfg.ingress.bind))?;
    if cfg.security.insecure && zauth::scope(&bound).ok() == Some(zauth::Scope::Remote) {
        tracing::warn!("security.insecure: ingress {bound} accepts unauthenticated peers");
    }
    warn_placement(&cfg.stages);
    tracing::info!(
        "{}",
        pipeline::threading_plan(&cfg.stages, crate::threading::Workload::Paced)
    );
    lock_memory(cfg.stages.lock_memory)?;
    let metrics_server = match &cfg.metrics_bind {
        None => None,
        Some(addr) => {
            let m = MetricsServer::start(addr, Arc::clone(&metrics))?;
            tracing::info!("metrics on http://{}/metrics", m.addr());
            Some(m)
        }
    };
    tracing::info!(
        "ingress bound to {bound}; journal {} ({} records, next input_seq {next_seq}); risk {}; egress {}",
        cfg.journal.dir.display(),
        opened.records_before,
        risk_target_name(&cfg.risk.target),
        match &cfg.egress {
            EgressTarget::None => "none".to_owned(),
            EgressTarget::Push { endpoint, .. } => endpoint.clone(),
        }
    );
    // The journal's tail goes downstream before new input, while the ingress (bound: senders
    // connect, ZeroMQ queues up to rcvhwm) and the metrics endpoint already answer; a missing
    // downstream is reported at once and then periodically (crate::redelivery).
    if !links.redeliver(&cfg.egress, opened.records_before, cfg.stages.max_batch)? {
        links.abandon();
        if let Some(m) = metrics_server {
            m.stop();
        }
        return Ok(ExitCode::SUCCESS);
    }
    let Links {
        mut gate,
        embedded,
        egress,
        stop,
        ..
    } = links;
    // systemd (Type=notify, deploy/systemd/): the ingress and metrics are bound, the journal
    // recovered, the risk service reconciled and the journal's tail re-sent. A no-op without
    // $NOTIFY_SOCKET.
    notify_ready();
    let mut report = Report {
        command: "run".into(),
        input: bound,
        schedule: "live".into(),
        start_index: next_seq,
        resumed: opened.records_before > 0,
        max_batch: cfg.stages.max_batch,
        ring_capacity: cfg.stages.ring_capacity,
        cores: cfg.stages.cores,
        risk: RiskReport {
            target: risk_target_name(&cfg.risk.target),
            timeout_ms: cfg.risk.timeout.as_millis() as u64,
            protocol: cfg.risk.protocol.as_str().to_owned(),
            round_trips: risk_round_trips(cfg.risk.protocol).to_owned(),
            ..RiskReport::default()
        },
        egress: EgressReport {
            target: match &cfg.egress {
                EgressTarget::None => "none".to_owned(),
                EgressTarget::Push { endpoint, .. } => endpoint.clone(),
            },
            ..EgressReport::default()
        },
        journal: JournalReport {
            dir: cfg.journal.dir.display().to_string(),
            first_seq: opened.records_before + 1,
            recovered_truncated_bytes: opened.recovery.truncated_bytes,
            durability: cfg.journal.durability.to_string(),
            ..JournalReport::default()
        },
        ..Report::default()
    };
    let popts = PipelineOptions {
        stages: cfg.stages.clone(),
        warmup_until_seq: 0,
        publish_latency: metrics_server.is_some(),
        out_format: out_format_of(&cfg.egress),
    };
    let clock = Clock::new();
    let t_start = clock.now_ns();
    let watch = crate::downstream_watch::start_for(&cfg.egress, &metrics)?;
    // JSON orders may name their account: the ingress interns new names and the journal
    // stage records them before the decisions that use them (crate::account_names).
    let (mut names, inbox) =
        crate::account_names::ingress_channel(std::mem::take(&mut opened.account_names));
    if let (Gate::Client(client), None) = (&mut gate, &embedded) {
        // A remote server learns the names interned from here on before their first batch
        // (an embedded one checks with limits the engine bound to its table at start-up).
        let (tx, rx) = std::sync::mpsc::channel();
        names.also_to_risk(tx);
        client.feed_names_from(rx);
    }
    let mut log = opened.log;
    log.names_inbox = Some(inbox);
    let result = pipeline::run(
        IngressSource::Pull {
            socket: pull,
            next_seq,
            names: Some(names),
        },
        gate,
        log,
        egress,
        &popts,
        clock,
        Arc::clone(&stop),
        Arc::clone(&metrics),
        || {},
    )?;
    drop(watch);
    let mut result = result;
    result.t0_ns = Some(t_start);
    finish(result, embedded, &metrics, &mut report)?;
    report.bad_input = metrics.ingress.bad_frames.load(Relaxed);
    if let Some(m) = metrics_server {
        m.stop();
    }
    // The run's report, on stdout as `engine replay`'s: the command's product, not a log line.
    print!("{}", report.table());
    if !report.errors.is_empty() {
        // The command's final error print, one line per stage error.
        for e in &report.errors {
            orders::logging::print_final_error(&format!("error: {e}"));
        }
        return Ok(ExitCode::FAILURE);
    }
    tracing::info!("stopped cleanly; journal synced");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::last_decision;

    #[test]
    fn built_in_limits_validate() {
        if let Err(e) = risk::Limits::from_toml_str(BUILT_IN_LIMITS_TOML, BUILT_IN_LIMITS_ORIGIN) {
            panic!("{e}");
        }
    }

    /// A journal as a kill -9 leaves it: segments, checkpoints, the lock, and the leftovers of
    /// a segment creation in progress (the spare, a `<first_seq>.seg.tmp`).
    fn crashed_journal(dir: &Path) -> Vec<std::path::PathBuf> {
        use audit::format::{segment_file_name, SPARE_SEGMENT_FILE_NAME};
        let opts = audit::WriterOptions {
            segment_size_bytes: 4096,
            ..audit::WriterOptions::default()
        };
        let (mut w, _) = audit::Writer::open(dir, opts).expect("open");
        for i in 0..40u64 {
            w.append(audit::KIND_ORDER, i, &[7u8; 100]).expect("append");
        }
        drop(w);
        let leftovers = vec![
            dir.join(SPARE_SEGMENT_FILE_NAME),
            dir.join(format!("{}.tmp", segment_file_name(41))),
            dir.join(audit::snapshot::snapshot_file_name(30)),
            dir.join(format!("{}.tmp", audit::snapshot::snapshot_file_name(40))),
        ];
        for p in &leftovers {
            std::fs::write(p, vec![0u8; 4096]).expect("write leftover");
        }
        std::fs::write(dir.join(audit::format::CHECKPOINT_FILE_NAME), []).expect("checkpoints");
        leftovers
    }

    #[test]
    fn fresh_wipes_the_leftovers_of_a_crash() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let leftovers = crashed_journal(&dir);
        let n = wipe_journal(&dir).expect("--fresh after a crash");
        assert!(n >= 4, "{n} files deleted");
        for p in &leftovers {
            assert!(!p.exists(), "{} left behind", p.display());
        }
        let left: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, vec![audit::format::LOCK_FILE_NAME.to_owned()]);
    }

    #[test]
    fn fresh_still_refuses_other_files_and_deletes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let leftovers = crashed_journal(&dir);
        // Only the names audit itself makes: not any file that ends in `.seg.tmp`.
        std::fs::write(dir.join("notes.seg.tmp"), "mine").expect("write");
        let err = wipe_journal(&dir).expect_err("a file that is not the journal's");
        assert!(err.to_string().contains("notes.seg.tmp"), "{err}");
        for p in &leftovers {
            assert!(p.exists(), "{} deleted by a refusal", p.display());
        }
    }

    #[test]
    fn an_unreadable_journal_is_an_error_not_no_decision() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        let (mut w, _) = audit::Writer::open(&dir, audit::WriterOptions::default()).expect("open");
        let d = Decision {
            input_seq: 41,
            order: orders::Order {
                order_id: 7,
                price: 1_000_000,
                qty: 10,
                symbol: orders::Symbol::new("MSFT").expect("symbol"),
                ..orders::Order::default()
            },
            reason: Reason::Accepted,
            t_in_ns: 1,
            t_decided_ns: 2,
            ..Decision::default()
        };
        let mut buf = [0u8; orders::DECISION_LEN_BYTES];
        orders::encode_decision(&d, &mut buf);
        w.append(audit::KIND_DECISION, 1, &buf).expect("append");
        assert_eq!(
            last_decision(&w).expect("read").map(|d| d.input_seq),
            Some(41)
        );
        // The segment becomes unreadable after the open verified it (an I/O error on read):
        // replaced by something `pread` fails on.
        let seg = w.current_segment().expect("segment").to_path_buf();
        std::fs::rename(&seg, tmp.path().join("moved.seg")).expect("move");
        std::fs::create_dir(&seg).expect("mkdir");
        let err = last_decision(&w).expect_err("an unreadable journal");
        let text = format!("{err:#}");
        assert!(text.contains("resume point is unknown"), "{text}");
        assert!(text.contains(&seg.display().to_string()), "{text}");
    }
}
