//! Wiring: rings allocated at start-up, one named thread per stage (optionally pinned), the
//! supervising loop, and the orderly end.
//!
//! ```text
//!             ring A (Inbound)      ring B (Decided)       ring C (Outbound, accepted)
//!  ingress ─────────────────► risk ─────────────────► journal ─────────────────► egress
//!  file / PULL               REQ batch ≤ max_batch    append + publish, then     PUSH frame
//!                            timeout → risk-timeout   hand on (Titanic)          per batch
//! ```
//! The pipeline ends when the ingress is done (end of the replay file, or the stop flag set by
//! SIGINT/SIGTERM or by a failing stage): each stage then drains its input ring and ends when
//! its producer is gone, so everything in flight is decided, journaled and pushed. A stage
//! that fails sets the stop flag, so intake stops and the others drain.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rtrb::{Consumer, Producer, RingBuffer};

use crate::clock::Clock;
use crate::config::StageSettings;
use crate::idle::{resolve, Idle, IdleMode};
use crate::latency::{LatencySet, Recorder};
use crate::limits::{
    HANDOFF_PARK_MAX_NS, SCHEDULE_SLEEP_MIN_NS, SHARED_YIELD_WINDOW_NS, SUPERVISE_INTERVAL_MS,
};
use crate::metrics::Metrics;
use crate::schedule::Schedule;
use crate::stages::egress::EgressStage;
use crate::stages::ingress::{OrderSource, PullIngress, ReplayIngress};
use crate::stages::journal::{DecisionLog, JournalStage};
use crate::stages::risk::{RiskGate, RiskStage};
use crate::stages::{run_linked, Decided, Inbound, Outbound, Stage, StageError, Step};
use crate::threading::{
    self, cores_in_affinity_mask, Threading, ThreadingMode, Workload, SHARED_THREAD_NAME,
    SPLIT_BACK_THREAD_NAME, SPLIT_FRONT_THREAD_NAME,
};
use crate::topology::{PerStage, StageId};
use crate::waitset::WaitSet;
use crate::wake::{Bell, Links, Waker};

/// Where orders come from.
pub enum IngressSource {
    /// Replay `orders[start..]` on a schedule (input_seq = index).
    Replay {
        /// The orders.
        orders: Box<dyn OrderSource>,
        /// First index to send.
        start: usize,
        /// When to send each.
        schedule: Schedule,
    },
    /// A bound PULL socket; input_seq continues from `next_seq`.
    Pull {
        /// The socket.
        socket: zmq::Socket,
        /// input_seq of the first order taken.
        next_seq: u64,
        /// The account name table for JSON orders naming their account (`None`: refused).
        names: Option<crate::account_names::IngressNames>,
    },
}

impl IngressSource {
    /// What `auto` makes of this input checked inline (or not) ([`threading::choose`]): a
    /// replay at `--rate max` is bulk work, anything else paced.
    pub fn workload(&self, checks_inline: bool) -> Workload {
        match self {
            IngressSource::Replay { schedule, .. } => schedule.workload(checks_inline),
            IngressSource::Pull { .. } => Workload::Paced,
        }
    }
}

impl std::fmt::Debug for IngressSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IngressSource::Replay {
                start,
                schedule,
                orders,
            } => f
                .debug_struct("Replay")
                .field("start", start)
                .field("len", &orders.len())
                .field("schedule", schedule)
                .finish(),
            IngressSource::Pull { next_seq, .. } => {
                f.debug_struct("Pull").field("next_seq", next_seq).finish()
            }
        }
    }
}

/// How to run the stages.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Rings, batches, idle strategies, core map.
    pub stages: StageSettings,
    /// Orders with `input_seq` below this are not recorded in the latency histograms.
    pub warmup_until_seq: u64,
    /// Publish latency quantiles for the metrics endpoint.
    pub publish_latency: bool,
    /// Egress messages: per batch, or per order (`--out-format`).
    pub out_format: crate::out_format::OutFormat,
}

/// What a finished pipeline hands back.
pub struct PipelineResult<G, L> {
    /// The risk gate (to stop an embedded server), unless its thread died.
    pub gate: Option<G>,
    /// The decision log (to sync the journal and read its head), unless its thread died.
    pub log: Option<L>,
    /// The egress socket, kept open until the caller lets ZeroMQ deliver what it queued.
    pub egress_socket: Option<zmq::Socket>,
    /// Latency of accepted orders (egress).
    pub accepted: LatencySet,
    /// Latency of rejected orders (journal).
    pub rejected: LatencySet,
    /// When the first replayed order was scheduled (replay only).
    pub t0_ns: Option<u64>,
    /// When the last order completed (ns), if any did.
    pub last_end_ns: Option<u64>,
    /// The idle strategy each stage ran with.
    pub idle: PerStage<IdleMode>,
    /// The threading mode and its threads.
    pub threading: Threading,
    /// Stage failures, in the order they were seen.
    pub errors: Vec<(StageId, String)>,
}

impl<G, L> std::fmt::Debug for PipelineResult<G, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineResult")
            .field("t0_ns", &self.t0_ns)
            .field("last_end_ns", &self.last_end_ns)
            .field("idle", &self.idle)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

type Errors = Arc<Mutex<Vec<(StageId, String)>>>;

fn record_error(errors: &Errors, stage: StageId, e: &StageError, stop: &AtomicBool) {
    stop.store(true, Relaxed);
    if let Ok(mut v) = errors.lock() {
        v.push((stage, e.to_string()));
    }
}

/// CPUs for the journal's background threads when the journal stage runs pinned on `core`:
/// the affinity mask (`mask`) without any pinned stage's core (`pinned`), or without `core` alone when
/// that leaves nothing; empty (no change) when the journal stage is not pinned or the mask has
/// no other CPU. A thread inherits its creator's mask, so without this the segment preparer
/// would run on the pinned core and take its time slices (issue 12: stalls of 4–15 ms).
fn background_cpus(core: Option<usize>, pinned: &[Option<usize>], mask: Vec<usize>) -> Vec<usize> {
    let Some(core) = core else {
        return Vec::new();
    };
    let free: Vec<usize> = mask
        .iter()
        .copied()
        .filter(|c| !pinned.contains(&Some(*c)))
        .collect();
    if !free.is_empty() {
        return free;
    }
    mask.into_iter().filter(|&c| c != core).collect()
}

/// Thread set-up common to all stages: pinning and a fine timer slack.
fn prepare_thread(stage: &str, core: Option<usize>) {
    if let Some(id) = core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            tracing::warn!("could not pin the {stage} thread to core {id}; running unpinned");
        }
    }
    // Parks of a few µs would otherwise be rounded up to the default 50 µs timer slack.
    if let Err(e) = nix::sys::prctl::set_timerslack(1_000) {
        tracing::debug!("timer slack unchanged for {stage}: {e}");
    }
}

fn spawn<T: Send + 'static>(
    stage: StageId,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(stage.as_str().to_owned())
        .spawn(f)
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the {stage} thread: {source}")]
pub struct SpawnError {
    /// The stage.
    pub stage: StageId,
    /// The OS error.
    pub source: std::io::Error,
}

/// The threading mode and threads `opts` give on this host for `workload` (what [`run`] will
/// use).
pub fn threading_plan(st: &StageSettings, workload: Workload) -> Threading {
    let cores_in_mask = cores_in_affinity_mask();
    let mode = threading::choose(st.threading, cores_in_mask, workload);
    let idle = resolve(&st.idle, &st.cores, cores_in_mask);
    threading::plan(mode, st.threading, cores_in_mask, &st.cores, &idle)
}

/// Runs the pipeline to its end in the threading mode of `opts` ([`threading_plan`]).
/// `supervise` is called on the calling thread every [`SUPERVISE_INTERVAL_MS`] while the
/// stages run (progress bar, signal checks).
#[allow(clippy::too_many_arguments)]
pub fn run<G, L>(
    ingress: IngressSource,
    gate: G,
    log: L,
    egress_socket: Option<zmq::Socket>,
    opts: &PipelineOptions,
    clock: Clock,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    supervise: impl FnMut(),
) -> Result<PipelineResult<G, L>, SpawnError>
where
    G: RiskGate + 'static,
    L: DecisionLog + 'static,
{
    let plan = threading_plan(&opts.stages, ingress.workload(gate.checks_inline()));
    let parts = Parts {
        ingress,
        gate,
        log,
        egress_socket,
        clock,
        stop,
        metrics,
    };
    match plan.mode {
        ThreadingMode::Dedicated => run_dedicated(parts, opts, supervise, plan),
        ThreadingMode::Split => run_split(parts, opts, supervise, plan),
        ThreadingMode::Shared => run_shared(parts, opts, supervise, plan),
    }
}

/// What every threading mode's runner takes apart into its threads' stages.
struct Parts<G, L> {
    ingress: IngressSource,
    gate: G,
    log: L,
    egress_socket: Option<zmq::Socket>,
    clock: Clock,
    stop: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
}

/// The three rings of a run, `capacity` slots each, allocated at start-up: A (ingress → risk),
/// B (risk → journal), C (journal → egress, accepted orders).
#[allow(clippy::type_complexity)]
fn rings(
    capacity: usize,
) -> (
    (Producer<Inbound>, Consumer<Inbound>),
    (Producer<Decided>, Consumer<Decided>),
    (Producer<Outbound>, Consumer<Outbound>),
) {
    (
        RingBuffer::new(capacity),
        RingBuffer::new(capacity),
        RingBuffer::new(capacity),
    )
}

/// Calls `supervise` every [`SUPERVISE_INTERVAL_MS`] until `finished()`, then once more.
fn supervise_until(finished: impl Fn() -> bool, supervise: &mut impl FnMut()) {
    while !finished() {
        supervise();
        std::thread::sleep(Duration::from_millis(SUPERVISE_INTERVAL_MS));
    }
    supervise();
}

/// One thread per stage.
fn run_dedicated<G, L>(
    parts: Parts<G, L>,
    opts: &PipelineOptions,
    mut supervise: impl FnMut(),
    threading: Threading,
) -> Result<PipelineResult<G, L>, SpawnError>
where
    G: RiskGate + 'static,
    L: DecisionLog + 'static,
{
    let Parts {
        ingress,
        gate,
        log,
        egress_socket,
        clock,
        stop,
        metrics,
    } = parts;
    let st = &opts.stages;
    let idle = resolve(&st.idle, &st.cores, threading.cores_in_mask);
    let ((a_tx, a_rx), (b_tx, b_rx), (c_tx, c_rx)) = rings(st.ring_capacity);
    let errors: Errors = Arc::new(Mutex::new(Vec::new()));
    let max_batch = st.max_batch;

    // Hand-off bells: a `backoff` stage parks on its bell and its neighbours unpark it
    // (`crate::wake`); `spin` and `yield` stages never park and get none. The PULL ingress
    // waits on a socket, which no neighbour can ring for, so it keeps timed parks.
    let replay = matches!(ingress, IngressSource::Replay { .. });
    let bells = PerStage {
        ingress: (replay && idle.ingress == IdleMode::Backoff).then(Bell::new),
        risk: (idle.risk == IdleMode::Backoff).then(Bell::new),
        journal: (idle.journal == IdleMode::Backoff).then(Bell::new),
        egress: (idle.egress == IdleMode::Backoff).then(Bell::new),
    };
    let stage_idle = |stage: StageId| {
        let i = Idle::new(*idle.get(stage));
        match bells.get(stage) {
            Some(b) => i.with_bell(Arc::clone(b)),
            None => i,
        }
    };
    // Each thread waits for its neighbours' wakers, sent once every thread exists.
    let (egress_links_tx, egress_links) = mpsc::channel::<Links>();
    let (journal_links_tx, journal_links) = mpsc::channel::<Links>();
    let (risk_links_tx, risk_links) = mpsc::channel::<Links>();
    let (ingress_links_tx, ingress_links) = mpsc::channel::<Links>();

    // Downstream first, so that consumers are running when orders arrive.
    let egress = {
        let (metrics, stop, errors) =
            (Arc::clone(&metrics), Arc::clone(&stop), Arc::clone(&errors));
        let recorder = Recorder::new(opts.warmup_until_seq, opts.publish_latency);
        let out_format = opts.out_format;
        let (core, mut idle) = (st.cores.egress, stage_idle(StageId::Egress));
        spawn(StageId::Egress, move || {
            prepare_thread(StageId::Egress.as_str(), core);
            let links = egress_links.recv().unwrap_or_default();
            let mut s = EgressStage::new(egress_socket, c_rx, max_batch, clock, metrics, recorder)
                .with_format(out_format);
            if let Err(e) = run_linked(&mut s, &mut idle, &clock, &links) {
                record_error(&errors, StageId::Egress, &e, &stop);
            }
            let out = s.finish();
            links.wake_now();
            out
        })
        .map_err(|source| SpawnError {
            stage: StageId::Egress,
            source,
        })?
    };
    let journal = {
        let (metrics, stop, errors) =
            (Arc::clone(&metrics), Arc::clone(&stop), Arc::clone(&errors));
        let recorder = Recorder::new(opts.warmup_until_seq, opts.publish_latency);
        let (core, mut idle) = (st.cores.journal, stage_idle(StageId::Journal));
        let background = background_cpus(
            core,
            &StageId::ALL.map(|s| *st.cores.get(s)),
            threading::affinity_mask_ids(),
        );
        let mut log = log;
        spawn(StageId::Journal, move || {
            prepare_thread(StageId::Journal.as_str(), core);
            if !background.is_empty() {
                log.keep_background_threads_on(&background);
            }
            let links = journal_links.recv().unwrap_or_default();
            let mut s = JournalStage::new(log, b_rx, c_tx, max_batch, clock, metrics, recorder);
            if let Err(e) = run_linked(&mut s, &mut idle, &clock, &links) {
                record_error(&errors, StageId::Journal, &e, &stop);
            }
            let out = s.finish();
            links.wake_now();
            out
        })
        .map_err(|source| SpawnError {
            stage: StageId::Journal,
            source,
        })?
    };
    let risk = {
        let (metrics, stop, errors) =
            (Arc::clone(&metrics), Arc::clone(&stop), Arc::clone(&errors));
        let (core, mut idle) = (st.cores.risk, stage_idle(StageId::Risk));
        spawn(StageId::Risk, move || {
            prepare_thread(StageId::Risk.as_str(), core);
            let links = risk_links.recv().unwrap_or_default();
            let mut s = RiskStage::new(gate, a_rx, b_tx, max_batch, clock, metrics);
            if let Err(e) = run_linked(&mut s, &mut idle, &clock, &links) {
                record_error(&errors, StageId::Risk, &e, &stop);
            }
            let gate = s.into_gate();
            links.wake_now();
            gate
        })
        .map_err(|source| SpawnError {
            stage: StageId::Risk,
            source,
        })?
    };
    let ingress = {
        let (metrics, stop2, errors) =
            (Arc::clone(&metrics), Arc::clone(&stop), Arc::clone(&errors));
        let (core, mut idle) = (st.cores.ingress, stage_idle(StageId::Ingress));
        spawn(StageId::Ingress, move || {
            prepare_thread(StageId::Ingress.as_str(), core);
            let links = ingress_links.recv().unwrap_or_default();
            let mut s = AnyIngress::new(ingress, a_tx, max_batch, clock, &stop2, metrics);
            if let Err(e) = run_linked(&mut s, &mut idle, &clock, &links) {
                record_error(&errors, StageId::Ingress, &e, &stop2);
            }
            let t0 = s.t0_ns();
            drop(s);
            // The stage (and its producer end of ring A) is gone: let risk notice at once.
            links.wake_now();
            t0
        })
        .map_err(|source| SpawnError {
            stage: StageId::Ingress,
            source,
        })?
    };
    let waker = |stage: StageId, thread: &std::thread::Thread| {
        bells
            .get(stage)
            .as_ref()
            .map(|b| Waker::new(Arc::clone(b), thread.clone()))
    };
    let (w_ingress, w_risk, w_journal, w_egress) = (
        waker(StageId::Ingress, ingress.thread()),
        waker(StageId::Risk, risk.thread()),
        waker(StageId::Journal, journal.thread()),
        waker(StageId::Egress, egress.thread()),
    );
    // A thread that already ended (it failed at once) has dropped its receiver: nothing to do.
    let _ = ingress_links_tx.send(Links {
        upstream: None,
        downstream: w_risk.clone(),
    });
    let _ = risk_links_tx.send(Links {
        upstream: w_ingress,
        downstream: w_journal.clone(),
    });
    let _ = journal_links_tx.send(Links {
        upstream: w_risk,
        downstream: w_egress,
    });
    let _ = egress_links_tx.send(Links {
        upstream: w_journal,
        downstream: None,
    });

    supervise_until(
        || {
            ingress.is_finished()
                && risk.is_finished()
                && journal.is_finished()
                && egress.is_finished()
        },
        &mut supervise,
    );

    let mut panics = Vec::new();
    let t0_ns = ingress.join().unwrap_or_else(|_| {
        panics.push((StageId::Ingress, "stage thread panicked".to_owned()));
        None
    });
    let gate = risk
        .join()
        .map_err(|_| panics.push((StageId::Risk, "stage thread panicked".to_owned())))
        .ok();
    let journal = journal
        .join()
        .map_err(|_| panics.push((StageId::Journal, "stage thread panicked".to_owned())))
        .ok();
    let egress = egress
        .join()
        .map_err(|_| panics.push((StageId::Egress, "stage thread panicked".to_owned())))
        .ok();
    Ok(assemble(
        t0_ns, gate, journal, egress, errors, panics, idle, threading,
    ))
}

/// The replay or the PULL ingress, as one stage type (both threading modes).
enum AnyIngress {
    Replay(ReplayIngress),
    Pull(PullIngress),
}

impl AnyIngress {
    /// The ingress stage for `source`, pushing to ring A.
    fn new(
        source: IngressSource,
        out: rtrb::Producer<Inbound>,
        max_batch: usize,
        clock: Clock,
        stop: &Arc<AtomicBool>,
        metrics: Arc<Metrics>,
    ) -> AnyIngress {
        match source {
            IngressSource::Replay {
                orders,
                start,
                schedule,
            } => AnyIngress::Replay(ReplayIngress::new(
                orders,
                start,
                schedule,
                out,
                max_batch,
                clock,
                Arc::clone(stop),
                metrics,
            )),
            IngressSource::Pull {
                socket,
                next_seq,
                names,
            } => {
                let ingress =
                    PullIngress::new(socket, next_seq, out, clock, Arc::clone(stop), metrics);
                AnyIngress::Pull(match names {
                    Some(n) => ingress.with_account_names(n),
                    None => ingress,
                })
            }
        }
    }

    fn t0_ns(&self) -> Option<u64> {
        match self {
            AnyIngress::Replay(s) => s.t0_ns(),
            AnyIngress::Pull(_) => None,
        }
    }
}

impl Stage for AnyIngress {
    #[inline]
    fn do_work(&mut self) -> Result<Step, StageError> {
        match self {
            AnyIngress::Replay(s) => s.do_work(),
            AnyIngress::Pull(s) => s.do_work(),
        }
    }
    fn ready(&self) -> bool {
        match self {
            AnyIngress::Replay(s) => s.ready(),
            AnyIngress::Pull(s) => s.ready(),
        }
    }
    fn wait_for_input(&mut self, timeout: Duration) -> bool {
        match self {
            AnyIngress::Replay(s) => s.wait_for_input(timeout),
            AnyIngress::Pull(s) => s.wait_for_input(timeout),
        }
    }
    fn register_waits(&self, w: &mut WaitSet) {
        match self {
            AnyIngress::Replay(s) => s.register_waits(w),
            AnyIngress::Pull(s) => s.register_waits(w),
        }
    }
}

/// What the shared thread hands back.
struct SharedOut<G, L> {
    t0_ns: Option<u64>,
    gate: Option<G>,
    journal: Option<(L, Recorder)>,
    egress: Option<(Recorder, Option<zmq::Socket>)>,
}

/// Runs one stage of the shared duty cycle: adds its work to `worked`, its deadline to
/// `deadline`, and on `Done` or an error ends it (`end` gets the stage, so that its ring ends
/// are dropped and its neighbours see it gone).
#[inline]
fn duty<S: Stage>(
    slot: &mut Option<S>,
    id: StageId,
    worked: &mut usize,
    deadline: &mut u64,
    errors: &Errors,
    stop: &AtomicBool,
    end: impl FnOnce(S),
) {
    let Some(s) = slot.as_mut() else {
        return;
    };
    match s.do_work() {
        Ok(Step::Worked(n)) => *worked += n.max(1),
        Ok(Step::Idle) => {}
        Ok(Step::WaitUntil(t)) => *deadline = (*deadline).min(t),
        Ok(Step::Done) => {
            if let Some(s) = slot.take() {
                end(s);
            }
            // A stage ending changes what its neighbours see: run the cycle again.
            *worked += 1;
        }
        Err(e) => {
            record_error(errors, id, &e, stop);
            if let Some(s) = slot.take() {
                end(s);
            }
            *worked += 1;
        }
    }
}

/// All four stages on one thread, as a composite duty cycle in stage order
/// ([`crate::threading`]). The risk stage sends a batch and polls for its verdicts, egress
/// holds a frame downstream cannot take yet, so no stage blocks while another has work. A
/// round in which no stage worked is followed by the thread's idle strategy: `spin` and
/// `yield` poll again; `backoff` yields while the next order is due within
/// [`SHARED_YIELD_WINDOW_NS`], and otherwise blocks in one `ppoll` on the
/// sockets its stages wait for and the earliest deadline (an order due, a risk timeout,
/// journal maintenance), at most [`HANDOFF_PARK_MAX_NS`] so that a stop flag is seen.
fn run_shared<G, L>(
    parts: Parts<G, L>,
    opts: &PipelineOptions,
    mut supervise: impl FnMut(),
    threading: Threading,
) -> Result<PipelineResult<G, L>, SpawnError>
where
    G: RiskGate + 'static,
    L: DecisionLog + 'static,
{
    let Parts {
        ingress,
        gate,
        log,
        egress_socket,
        clock,
        stop,
        metrics,
    } = parts;
    let st = &opts.stages;
    let idle = resolve(&st.idle, &st.cores, threading.cores_in_mask);
    let mode = threading::shared_idle(&idle);
    let core = threading.threads.first().and_then(|t| t.core);
    // A pinned thread that spins: the process's other threads (ZeroMQ's I/O threads, the
    // snapshot and main threads) go to the mask's other cores, or they would wait for its
    // time slice (docs/tuning.md, "The spinning shared thread needs the core to itself").
    let others: Vec<usize> = threading::affinity_mask_ids()
        .into_iter()
        .filter(|&c| Some(c) != core)
        .collect();
    let confine = core.is_some() && mode == IdleMode::Spin && !others.is_empty();
    let ((a_tx, a_rx), (b_tx, b_rx), (c_tx, c_rx)) = rings(st.ring_capacity);
    let errors: Errors = Arc::new(Mutex::new(Vec::new()));
    let max_batch = st.max_batch;
    let accepted_rec = Recorder::new(opts.warmup_until_seq, opts.publish_latency);
    let rejected_rec = Recorder::new(opts.warmup_until_seq, opts.publish_latency);
    let out_format = opts.out_format;
    let mut log = log;
    let handle = {
        let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
        std::thread::Builder::new()
            .name(SHARED_THREAD_NAME.to_owned())
            .spawn(move || {
                prepare_thread(SHARED_THREAD_NAME, core);
                if confine {
                    if let Err(e) = threading::confine_other_threads(&others) {
                        tracing::warn!(
                            "could not keep the other threads off the spinning thread's core: {e}"
                        );
                    }
                }
                if core.is_some() && !others.is_empty() {
                    log.keep_background_threads_on(&others);
                }
                let mut ingress = Some(AnyIngress::new(
                    ingress,
                    a_tx,
                    max_batch,
                    clock,
                    &stop,
                    Arc::clone(&metrics),
                ));
                let mut risk = Some(
                    RiskStage::new(gate, a_rx, b_tx, max_batch, clock, Arc::clone(&metrics))
                        .nonblocking(),
                );
                let mut journal = Some(JournalStage::new(
                    log,
                    b_rx,
                    c_tx,
                    max_batch,
                    clock,
                    Arc::clone(&metrics),
                    rejected_rec,
                ));
                let mut egress = Some(
                    EgressStage::new(
                        egress_socket,
                        c_rx,
                        max_batch,
                        clock,
                        Arc::clone(&metrics),
                        accepted_rec,
                    )
                    .with_format(out_format)
                    .nonblocking(),
                );
                let mut out = SharedOut {
                    t0_ns: None,
                    gate: None,
                    journal: None,
                    egress: None,
                };
                let mut waits = WaitSet::new(0);
                loop {
                    let mut worked = 0usize;
                    let mut deadline = u64::MAX;
                    duty(
                        &mut ingress,
                        StageId::Ingress,
                        &mut worked,
                        &mut deadline,
                        &errors,
                        &stop,
                        |s| {
                            out.t0_ns = s.t0_ns();
                        },
                    );
                    duty(
                        &mut risk,
                        StageId::Risk,
                        &mut worked,
                        &mut deadline,
                        &errors,
                        &stop,
                        |s| {
                            out.gate = Some(s.into_gate());
                        },
                    );
                    duty(
                        &mut journal,
                        StageId::Journal,
                        &mut worked,
                        &mut deadline,
                        &errors,
                        &stop,
                        |s| {
                            out.journal = Some(s.finish());
                        },
                    );
                    duty(
                        &mut egress,
                        StageId::Egress,
                        &mut worked,
                        &mut deadline,
                        &errors,
                        &stop,
                        |s| {
                            out.egress = Some(s.finish());
                        },
                    );
                    if ingress.is_none() && risk.is_none() && journal.is_none() && egress.is_none()
                    {
                        break;
                    }
                    if worked > 0 {
                        continue;
                    }
                    match mode {
                        IdleMode::Spin => std::hint::spin_loop(),
                        IdleMode::Yield => std::thread::yield_now(),
                        IdleMode::Backoff => backoff_round(
                            &clock,
                            deadline,
                            &mut waits,
                            |w| {
                                register(&ingress, w);
                                register(&risk, w);
                                register(&journal, w);
                                register(&egress, w);
                            },
                            |w| w.wait(&clock),
                        ),
                    }
                }
                out
            })
            .map_err(|source| SpawnError {
                stage: StageId::Ingress,
                source,
            })?
    };
    supervise_until(|| handle.is_finished(), &mut supervise);
    let mut panics = Vec::new();
    let out = handle.join().unwrap_or_else(|_| {
        for s in StageId::ALL {
            panics.push((s, "the shared stage thread panicked".to_owned()));
        }
        SharedOut {
            t0_ns: None,
            gate: None,
            journal: None,
            egress: None,
        }
    });
    Ok(assemble(
        out.t0_ns,
        out.gate,
        out.journal,
        out.egress,
        errors,
        panics,
        idle,
        threading,
    ))
}

/// Adds what the stage in `slot` (if it still runs) waits for to `w`.
#[inline]
fn register<S: Stage>(slot: &Option<S>, w: &mut WaitSet) {
    if let Some(s) = slot {
        s.register_waits(w);
    }
}

/// The idle round of a duty-cycle thread (`shared`, `split`) in `backoff`, after a round in
/// which none of its stages worked; `deadline` is the earliest one they returned.
///
/// No spin phase: spinning could only catch sockets and time, and polling a ZeroMQ socket is
/// a system call (a non-blocking receive polls its mailbox). Instead: yield while the next
/// order is due within [`SHARED_YIELD_WINDOW_NS`] (a risk reply awaited or not), otherwise
/// `register` the stages' sockets and deadlines and `block` on them (see that constant for
/// why), at most [`HANDOFF_PARK_MAX_NS`] so that a stop flag is seen.
#[inline]
fn backoff_round(
    clock: &Clock,
    deadline: u64,
    waits: &mut WaitSet,
    register: impl FnOnce(&mut WaitSet),
    block: impl FnOnce(&mut WaitSet),
) {
    let now = clock.now_ns();
    let until_due = deadline.saturating_sub(now);
    if until_due <= SCHEDULE_SLEEP_MIN_NS {
        std::hint::spin_loop();
        return;
    }
    // Wake up a window before the next order is due, and yield through the window.
    let wake = deadline.saturating_sub(SHARED_YIELD_WINDOW_NS);
    waits.clear(wake.min(now.saturating_add(HANDOFF_PARK_MAX_NS)));
    register(waits);
    if waits.ready_now() {
        return;
    }
    if until_due <= SHARED_YIELD_WINDOW_NS {
        std::thread::yield_now();
        return;
    }
    block(waits);
}

/// Runs two stages as one thread's duty cycle (a thread of `split` mode) until both are done,
/// in order: `a` then `b`, like the shared thread's four. `end_a` and `end_b` take each stage
/// when it ends (its ring ends dropped). After a round with work the thread rings the other
/// thread (`links`); after a round without, `spin`/`yield` poll again and `backoff` waits on
/// its stages' sockets, their earliest deadline and its `bell`, which the other thread rings
/// after each of its rounds with work (so after it pushed onto or freed room on the ring
/// between them).
#[allow(clippy::too_many_arguments)]
fn run_pair<A: Stage, B: Stage>(
    mut a: Option<A>,
    a_id: StageId,
    mut end_a: impl FnMut(A),
    mut b: Option<B>,
    b_id: StageId,
    mut end_b: impl FnMut(B),
    mode: IdleMode,
    bell: &Bell,
    links: &Links,
    clock: &Clock,
    errors: &Errors,
    stop: &AtomicBool,
) {
    let mut waits = WaitSet::new(0);
    loop {
        let mut worked = 0usize;
        let mut deadline = u64::MAX;
        duty(
            &mut a,
            a_id,
            &mut worked,
            &mut deadline,
            errors,
            stop,
            &mut end_a,
        );
        duty(
            &mut b,
            b_id,
            &mut worked,
            &mut deadline,
            errors,
            stop,
            &mut end_b,
        );
        if a.is_none() && b.is_none() {
            break;
        }
        if worked > 0 {
            links.wake();
            continue;
        }
        match mode {
            IdleMode::Spin => std::hint::spin_loop(),
            IdleMode::Yield => std::thread::yield_now(),
            IdleMode::Backoff => backoff_round(
                clock,
                deadline,
                &mut waits,
                |w| {
                    register(&a, w);
                    register(&b, w);
                },
                |w| {
                    bell.park_polling(w, clock, || {
                        a.as_ref().is_some_and(Stage::ready) || b.as_ref().is_some_and(Stage::ready)
                    });
                },
            ),
        }
    }
    // Both stages are gone (their ring ends dropped): let the other thread notice at once.
    links.wake_now();
}

/// Two threads, each a duty cycle of two stages ([`crate::threading`], `split`): `front`
/// runs ingress → risk, `back` runs journal → egress. Ring B crosses between them; rings A and
/// C stay inside a thread. The risk stage and egress are non-blocking as in `shared`, so that
/// neither stage of a thread blocks while the other has work.
fn run_split<G, L>(
    parts: Parts<G, L>,
    opts: &PipelineOptions,
    mut supervise: impl FnMut(),
    threading: Threading,
) -> Result<PipelineResult<G, L>, SpawnError>
where
    G: RiskGate + 'static,
    L: DecisionLog + 'static,
{
    let Parts {
        ingress,
        gate,
        log,
        egress_socket,
        clock,
        stop,
        metrics,
    } = parts;
    let st = &opts.stages;
    let idle = resolve(&st.idle, &st.cores, threading.cores_in_mask);
    let (front_core, back_core) = (threading.threads[0].core, threading.threads[1].core);
    let (front_idle, back_idle) = (idle.ingress, idle.journal);
    let ((a_tx, a_rx), (b_tx, b_rx), (c_tx, c_rx)) = rings(st.ring_capacity);
    let errors: Errors = Arc::new(Mutex::new(Vec::new()));
    let max_batch = st.max_batch;
    let bell = |stage: StageId| Bell::with_eventfd().map_err(|source| SpawnError { stage, source });
    let (front_bell, back_bell) = (bell(StageId::Ingress)?, bell(StageId::Journal)?);
    // Each thread waits for the other's waker, sent once both exist.
    let (back_links_tx, back_links) = mpsc::channel::<Links>();
    let (front_links_tx, front_links) = mpsc::channel::<Links>();

    // Downstream first, so that it runs when the first decisions arrive.
    let back = {
        let (metrics, stop, errors) =
            (Arc::clone(&metrics), Arc::clone(&stop), Arc::clone(&errors));
        let rejected_rec = Recorder::new(opts.warmup_until_seq, opts.publish_latency);
        let accepted_rec = Recorder::new(opts.warmup_until_seq, opts.publish_latency);
        let out_format = opts.out_format;
        let background = background_cpus(
            back_core,
            &[front_core, back_core],
            threading::affinity_mask_ids(),
        );
        let bell = Arc::clone(&back_bell);
        let mut log = log;
        std::thread::Builder::new()
            .name(SPLIT_BACK_THREAD_NAME.to_owned())
            .spawn(move || {
                prepare_thread(SPLIT_BACK_THREAD_NAME, back_core);
                if !background.is_empty() {
                    log.keep_background_threads_on(&background);
                }
                let links = back_links.recv().unwrap_or_default();
                let journal = JournalStage::new(
                    log,
                    b_rx,
                    c_tx,
                    max_batch,
                    clock,
                    Arc::clone(&metrics),
                    rejected_rec,
                );
                let egress = EgressStage::new(
                    egress_socket,
                    c_rx,
                    max_batch,
                    clock,
                    Arc::clone(&metrics),
                    accepted_rec,
                )
                .with_format(out_format)
                .nonblocking();
                let (mut journal_out, mut egress_out) = (None, None);
                run_pair(
                    Some(journal),
                    StageId::Journal,
                    |s: JournalStage<L>| journal_out = Some(s.finish()),
                    Some(egress),
                    StageId::Egress,
                    |s: EgressStage| egress_out = Some(s.finish()),
                    back_idle,
                    &bell,
                    &links,
                    &clock,
                    &errors,
                    &stop,
                );
                (journal_out, egress_out)
            })
            .map_err(|source| SpawnError {
                stage: StageId::Journal,
                source,
            })?
    };
    let front = {
        let (metrics, stop, errors) =
            (Arc::clone(&metrics), Arc::clone(&stop), Arc::clone(&errors));
        let bell = Arc::clone(&front_bell);
        std::thread::Builder::new()
            .name(SPLIT_FRONT_THREAD_NAME.to_owned())
            .spawn(move || {
                prepare_thread(SPLIT_FRONT_THREAD_NAME, front_core);
                let links = front_links.recv().unwrap_or_default();
                let ingress =
                    AnyIngress::new(ingress, a_tx, max_batch, clock, &stop, Arc::clone(&metrics));
                let risk = RiskStage::new(gate, a_rx, b_tx, max_batch, clock, Arc::clone(&metrics))
                    .nonblocking();
                let (mut t0_ns, mut gate) = (None, None);
                run_pair(
                    Some(ingress),
                    StageId::Ingress,
                    |s: AnyIngress| t0_ns = s.t0_ns(),
                    Some(risk),
                    StageId::Risk,
                    |s: RiskStage<G>| gate = Some(s.into_gate()),
                    front_idle,
                    &bell,
                    &links,
                    &clock,
                    &errors,
                    &stop,
                );
                (t0_ns, gate)
            })
            .map_err(|source| SpawnError {
                stage: StageId::Ingress,
                source,
            })?
    };
    // A thread that already ended (it failed at once) has dropped its receiver: nothing to do.
    let _ = front_links_tx.send(Links {
        upstream: None,
        downstream: Some(Waker::new(back_bell, back.thread().clone())),
    });
    let _ = back_links_tx.send(Links {
        upstream: Some(Waker::new(front_bell, front.thread().clone())),
        downstream: None,
    });
    supervise_until(|| front.is_finished() && back.is_finished(), &mut supervise);
    let mut panics = Vec::new();
    let (t0_ns, gate) = front.join().unwrap_or_else(|_| {
        for s in [StageId::Ingress, StageId::Risk] {
            panics.push((s, "the split mode's front thread panicked".to_owned()));
        }
        (None, None)
    });
    let (journal, egress) = back.join().unwrap_or_else(|_| {
        for s in [StageId::Journal, StageId::Egress] {
            panics.push((s, "the split mode's back thread panicked".to_owned()));
        }
        (None, None)
    });
    Ok(assemble(
        t0_ns, gate, journal, egress, errors, panics, idle, threading,
    ))
}

/// The result of a finished run, from what its stages handed back.
#[allow(clippy::too_many_arguments)]
fn assemble<G, L>(
    t0_ns: Option<u64>,
    gate: Option<G>,
    journal: Option<(L, Recorder)>,
    egress: Option<(Recorder, Option<zmq::Socket>)>,
    errors: Errors,
    panics: Vec<(StageId, String)>,
    idle: PerStage<IdleMode>,
    threading: Threading,
) -> PipelineResult<G, L> {
    let (log, rejected_rec) = match journal {
        Some((l, r)) => (Some(l), Some(r)),
        None => (None, None),
    };
    let (accepted_rec, egress_socket) = match egress {
        Some((r, s)) => (Some(r), s),
        None => (None, None),
    };
    let mut errors = match Arc::try_unwrap(errors) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(shared) => shared.lock().map(|v| v.clone()).unwrap_or_default(),
    };
    errors.extend(panics);
    let mut last_end_ns = None;
    let mut take = |rec: Option<Recorder>| -> LatencySet {
        match rec {
            Some(r) => {
                let (set, window) = r.finish();
                if let Some((_, last)) = window {
                    last_end_ns = Some(last_end_ns.map_or(last, |x: u64| x.max(last)));
                }
                set
            }
            None => LatencySet::new(),
        }
    };
    let accepted = take(accepted_rec);
    let rejected = take(rejected_rec);
    PipelineResult {
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
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::stages::risk::GateOutcome;
    use crate::threading::ThreadingKind;
    use orders::{decode_decision, Order, Reason, Symbol};

    /// The journal's background threads go where no pinned stage runs; when every CPU of the
    /// mask is pinned, anywhere but the journal stage's own core; unpinned, nowhere special.
    #[test]
    fn background_cpus_avoid_pinned_cores() {
        assert!(background_cpus(None, &[None; 4], vec![0, 1]).is_empty());
        // Shared thread pinned on 1 of 0-1.
        assert_eq!(background_cpus(Some(1), &[Some(1)], vec![0, 1]), [0]);
        // Dedicated on 0-5, stages on 2,3,4,5: the journal's helpers on 0-1.
        let pins = [Some(2), Some(3), Some(4), Some(5)];
        assert_eq!(background_cpus(Some(4), &pins, (0..6).collect()), [0, 1]);
        // Every CPU pinned: off the journal's core at least.
        let pins = [Some(0), Some(1), Some(2), Some(3)];
        assert_eq!(background_cpus(Some(2), &pins, vec![0, 1, 2, 3]), [0, 1, 3]);
        // A one-CPU mask: nothing to move to.
        assert!(background_cpus(Some(0), &[Some(0)], vec![0]).is_empty());
    }

    /// Rejects every 5th order (max-qty), accepts the rest; optionally slow.
    struct Gate {
        delay: Duration,
    }
    impl RiskGate for Gate {
        fn check_batch(&mut self, orders: &[Order], _now: u64, out: &mut [Reason]) -> GateOutcome {
            std::thread::sleep(self.delay);
            for (o, r) in orders.iter().zip(out.iter_mut()) {
                *r = if o.order_id % 5 == 0 {
                    Reason::MaxQty
                } else {
                    Reason::Accepted
                };
            }
            GateOutcome::Replied
        }
        fn failovers(&self) -> u64 {
            0
        }
    }

    /// In-memory log that fails at record `fail_at` (1-based) if set.
    #[derive(Default)]
    struct Log {
        records: Vec<Vec<u8>>,
        fail_at: Option<usize>,
    }
    impl DecisionLog for Log {
        fn append(&mut self, _ts: u64, payload: &[u8]) -> Result<u64, StageError> {
            if self.fail_at == Some(self.records.len() + 1) {
                return Err(StageError::Journal {
                    input_seq: 0,
                    message: "disk full".into(),
                });
            }
            self.records.push(payload.to_vec());
            Ok(self.records.len() as u64)
        }
        fn end_batch(&mut self) -> Result<(), StageError> {
            Ok(())
        }
        fn maintain(&mut self, _now: u64) -> Result<(), StageError> {
            Ok(())
        }
    }

    fn flow(n: usize) -> Vec<Order> {
        (0..n)
            .map(|i| Order {
                order_id: i as u64 + 1,
                symbol: Symbol::new("AAPL").unwrap(),
                price: 100,
                qty: 1,
                ..Order::default()
            })
            .collect()
    }

    const MODES: [ThreadingKind; 3] = [
        ThreadingKind::Dedicated,
        ThreadingKind::Split,
        ThreadingKind::Shared,
    ];

    fn opts(ring: usize, batch: usize, threading: ThreadingKind) -> PipelineOptions {
        PipelineOptions {
            stages: StageSettings {
                ring_capacity: ring,
                max_batch: batch,
                threading,
                ..StageSettings::default()
            },
            warmup_until_seq: 0,
            publish_latency: true,
            out_format: crate::out_format::OutFormat::Batch,
        }
    }

    #[test]
    fn every_order_is_decided_once_in_order_through_small_rings() {
        for mode in MODES {
            let metrics = Arc::new(Metrics::default());
            let r = run(
                IngressSource::Replay {
                    orders: Box::new(flow(10_000)),
                    start: 0,
                    schedule: Schedule::Max,
                },
                Gate {
                    delay: Duration::ZERO,
                },
                Log::default(),
                None,
                &opts(64, 16, mode),
                Clock::new(),
                Arc::new(AtomicBool::new(false)),
                Arc::clone(&metrics),
                || {},
            )
            .unwrap();
            assert!(r.errors.is_empty(), "{:?}", r.errors);
            let log = r.log.unwrap();
            assert_eq!(log.records.len(), 10_000);
            for (i, rec) in log.records.iter().enumerate() {
                assert_eq!(decode_decision(rec).unwrap().input_seq, i as u64);
            }
            assert_eq!(r.accepted.total.len(), 8_000);
            assert_eq!(r.rejected.total.len(), 2_000);
            assert!(r.t0_ns.is_some() && r.last_end_ns.is_some());
            assert_eq!(metrics.egress.orders.load(Relaxed), 8_000);
            assert_eq!(metrics.ring_depths(), crate::metrics::RingDepths::default());
            assert!(
                metrics.latency_accepted.count.load(Relaxed) > 0,
                "published"
            );
            assert_eq!(r.idle, PerStage::all(IdleMode::Backoff));
            assert_eq!(r.threading.mode.as_str(), mode.as_str());
        }
    }

    #[test]
    fn the_stop_flag_stops_intake_and_drains_what_was_taken() {
        for mode in MODES {
            let metrics = Arc::new(Metrics::default());
            let stop = Arc::new(AtomicBool::new(false));
            let stop2 = Arc::clone(&stop);
            let m2 = Arc::clone(&metrics);
            let r = run(
                IngressSource::Replay {
                    orders: Box::new(flow(1_000_000)),
                    start: 0,
                    schedule: Schedule::Rate { per_s: 20_000 },
                },
                Gate {
                    delay: Duration::ZERO,
                },
                Log::default(),
                None,
                &opts(256, 32, mode),
                Clock::new(),
                Arc::clone(&stop),
                Arc::clone(&metrics),
                move || {
                    if m2.ingress.orders.load(Relaxed) >= 500 {
                        stop2.store(true, Relaxed);
                    }
                },
            )
            .unwrap();
            let taken = metrics.ingress.orders.load(Relaxed);
            assert!((500..1_000_000).contains(&taken), "{taken}");
            assert_eq!(
                r.log.unwrap().records.len() as u64,
                taken,
                "all taken in are decided"
            );
        }
    }

    #[test]
    fn a_journal_failure_stops_the_pipeline_with_the_error() {
        for mode in MODES {
            let metrics = Arc::new(Metrics::default());
            let stop = Arc::new(AtomicBool::new(false));
            let r = run(
                IngressSource::Replay {
                    orders: Box::new(flow(100_000)),
                    start: 0,
                    schedule: Schedule::Max,
                },
                Gate {
                    delay: Duration::from_micros(50),
                },
                Log {
                    fail_at: Some(1_000),
                    ..Log::default()
                },
                None,
                &opts(128, 16, mode),
                Clock::new(),
                Arc::clone(&stop),
                Arc::clone(&metrics),
                || {},
            )
            .unwrap();
            assert!(stop.load(Relaxed), "intake stopped");
            assert_eq!(r.errors.len(), 1);
            assert_eq!(r.errors[0].0, StageId::Journal);
            assert!(r.errors[0].1.contains("disk full"));
            assert_eq!(r.log.unwrap().records.len(), 999);
            // Nothing beyond the failing record reached egress.
            assert!(metrics.egress.orders.load(Relaxed) <= 999);
            assert!(metrics.ingress.orders.load(Relaxed) < 100_000);
        }
    }
}
