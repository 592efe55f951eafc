//! `engine run --config engine.toml`: the raw TOML (serde, unknown keys refused), then
//! validation into [`ServiceConfig`], reporting every problem at once with its key.
//!
//! The shared pieces ([`StageSettings`], [`RiskSettings`], [`JournalSettings`],
//! [`EgressTarget`], [`SecuritySettings`]) are also what `engine replay` builds from its flags,
//! so both commands run the same pipeline. `examples/engine.toml` documents every key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::idle::IdleKind;
use crate::limits::{
    EGRESS_SNDHWM_MESSAGES_DEFAULT, EGRESS_SNDHWM_MESSAGES_MAX, INGRESS_FRAME_ORDERS_MAX,
    INGRESS_RCVHWM_MESSAGES_DEFAULT, MAX_BATCH_ORDERS_DEFAULT, MAX_BATCH_ORDERS_MAX,
    RING_CAPACITY_ORDERS_DEFAULT, RING_CAPACITY_ORDERS_MAX, RING_CAPACITY_ORDERS_MIN,
    RISK_TIMEOUT_MS_DEFAULT, RISK_TIMEOUT_MS_MAX,
};
use crate::threading::ThreadingKind;
use crate::topology::{PerStage, StageId};

/// Default journal directory.
pub const JOURNAL_DIR_DEFAULT: &str = "./journal";
/// Default journal segment size: 64 MiB.
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 << 20;
/// Default checkpoint interval in records.
pub const CHECKPOINT_EVERY_RECORDS_DEFAULT: u64 = 100_000;
/// Default checkpoint interval in milliseconds.
pub const CHECKPOINT_EVERY_MS_DEFAULT: u64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Validated settings (used by both `run` and `replay`).

/// Rings, batches, idle strategies and the core map.
#[derive(Debug, Clone, PartialEq)]
pub struct StageSettings {
    /// Slots of each inter-stage ring.
    pub ring_capacity: usize,
    /// Most orders a stage handles as one unit.
    pub max_batch: usize,
    /// Idle strategy of each stage (`auto` resolved at start).
    pub idle: PerStage<IdleKind>,
    /// Core each stage is pinned to, if any.
    pub cores: PerStage<Option<usize>>,
    /// `mlockall` before the stages start.
    pub lock_memory: bool,
    /// How stages map onto threads (`auto` decided at start, [`crate::threading`]).
    pub threading: ThreadingKind,
}

impl Default for StageSettings {
    fn default() -> Self {
        StageSettings {
            ring_capacity: RING_CAPACITY_ORDERS_DEFAULT,
            max_batch: MAX_BATCH_ORDERS_DEFAULT,
            idle: PerStage::all(IdleKind::Backoff),
            cores: PerStage::all(None),
            lock_memory: false,
            threading: ThreadingKind::Auto,
        }
    }
}

/// Where risk verdicts come from.
#[derive(Debug, Clone, PartialEq)]
pub enum RiskTarget {
    /// A server thread in this process over `inproc://`, with limits from a file (or the
    /// built-in defaults).
    Embedded {
        /// The limits file.
        limits_file: Option<PathBuf>,
    },
    /// The same checks on the engine's own thread, a direct call (no server, no socket).
    Inline {
        /// The limits file.
        limits_file: Option<PathBuf>,
    },
    /// Remote `risk-server`s over REQ, in failover order.
    Remote {
        /// ZeroMQ endpoints.
        endpoints: Vec<String>,
    },
}

/// The wire protocol to a remote risk service (`--risk-protocol`, `risk.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RiskProtocol {
    /// Our batches (`docs/formats/risk-protocol.md`): one request per batch of up to
    /// `max_batch` orders, void, hello.
    #[default]
    Binary,
    /// The source design's JSON, for an old JSON risk service: **one round trip per order**
    /// (`{"symbol","quantity","price"}`; `OK` accepts, any other reply is `risk-refused`).
    Json,
}

impl RiskProtocol {
    /// `binary` / `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskProtocol::Binary => "binary",
            RiskProtocol::Json => "json",
        }
    }
}

/// The risk stage's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskSettings {
    /// Where verdicts come from.
    pub target: RiskTarget,
    /// Longest wait for one batch's verdicts.
    pub timeout: Duration,
    /// The protocol to a remote service.
    pub protocol: RiskProtocol,
}

/// Checkpoint signing.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointSettings {
    /// File holding the ed25519 signing key.
    pub key_file: PathBuf,
    /// Sign a checkpoint at least every this many records.
    pub every_records: u64,
    /// … or every this many milliseconds.
    pub every_ms: u64,
}

/// The journal's settings.
#[derive(Debug, Clone)]
pub struct JournalSettings {
    /// Directory of segment files.
    pub dir: PathBuf,
    /// msync policy.
    pub durability: audit::Durability,
    /// Size of each pre-allocated segment.
    pub segment_size_bytes: u64,
    /// Signed checkpoints, if configured.
    pub checkpoint: Option<CheckpointSettings>,
    /// Live PUB endpoint of the audit publisher (binary records), if any.
    pub pub_endpoint: Option<String>,
    /// Optional second PUB endpoint with JSON records.
    pub json_pub_endpoint: Option<String>,
    /// Encoding of the `pub_endpoint` feed (`--audit-format`, `journal.pub_format`).
    pub pub_format: audit::FeedFormat,
    /// Risk-state snapshots (inline and embedded risk).
    pub snapshots: crate::snapshots::SnapshotSettings,
    /// Capacity of the account name table (`--max-account-names`,
    /// `journal.max_account_names`; [`crate::account_names`]).
    pub max_account_names: usize,
}

/// Where accepted orders go.
#[derive(Debug, Clone, PartialEq)]
pub enum EgressTarget {
    /// Nowhere: egress only records latency (benchmarks).
    None,
    /// A ZeroMQ PUSH socket connected to `endpoint`.
    Push {
        /// Downstream endpoint (the PUSH socket connects to it).
        endpoint: String,
        /// Send high-water mark in messages (> 0: ZeroMQ then pushes back).
        sndhwm: i32,
        /// One message per batch or per order (`--out-format`, `egress.format`).
        format: crate::out_format::OutFormat,
    },
}

/// The ingress of the service: a PULL socket.
#[derive(Debug, Clone, PartialEq)]
pub struct PullSettings {
    /// Endpoint the PULL socket binds.
    pub bind: String,
    /// Receive high-water mark in messages.
    pub rcvhwm: i32,
}

/// Authentication of the engine's network links (`[security]`, docs/security.md).
///
/// Client side: the risk REQ and egress PUSH sockets log in with PLAIN credentials read from
/// `credentials` (kept as a [`zauth::ClientAuth`], whose `Debug` never prints the password).
/// Server side: the bound sockets (the `engine run` ingress PULL, the audit PUB feeds) go
/// through [`zauth::bind`] under [`SecuritySettings::server_auth`]: a remote endpoint needs an
/// allow-list or PLAIN credentials, or `insecure`.
#[derive(Debug, Clone, Default)]
pub struct SecuritySettings {
    /// The credentials file the client sockets log in with, if any.
    pub credentials_file: Option<PathBuf>,
    /// Its first `USER:PASSWORD` line (empty when no file).
    pub client: zauth::ClientAuth,
    /// Peer networks the bound sockets accept (empty: any).
    pub allow: Vec<ipnet::IpNet>,
    /// `USER:PASSWORD` file (mode 0600) the bound sockets' peers must log in with.
    pub plain_credentials: Option<PathBuf>,
    /// The engine's CURVE key pair file: the bound sockets are CURVE servers with it, and the
    /// client sockets use it as their own key.
    pub curve_key: Option<PathBuf>,
    /// Client public keys the bound sockets accept over CURVE.
    pub curve_clients: Option<PathBuf>,
    /// The egress PUSH socket's credentials: `client`'s PLAIN login, or CURVE with the
    /// downstream's public key (`egress_server_key`); `client` itself carries the risk
    /// server's key.
    pub egress_client: zauth::ClientAuth,
    /// Accept unauthenticated peers on remote endpoints.
    pub insecure: bool,
}

/// The CURVE files of the security settings (docs/security.md, "CURVE").
#[derive(Debug, Clone, Copy, Default)]
pub struct CurveFiles<'a> {
    /// The engine's key pair (`curve_key`).
    pub key: Option<&'a Path>,
    /// Client public keys its bound sockets accept (`curve_clients`).
    pub clients: Option<&'a Path>,
    /// The risk-servers' public key (`risk_server_key`).
    pub risk_server_key: Option<&'a Path>,
    /// The downstream's public key (`egress_server_key`).
    pub egress_server_key: Option<&'a Path>,
}

impl SecuritySettings {
    /// The policy of the bound sockets.
    pub fn server_auth(&self) -> zauth::ServerAuth {
        zauth::ServerAuth {
            allow: self.allow.clone(),
            plain_credentials: self.plain_credentials.clone(),
            curve_key: self.curve_key.clone(),
            curve_clients: self.curve_clients.clone(),
            insecure: self.insecure,
        }
    }
}

/// The names of the security settings in the config file or on the command line, for
/// problems.
#[derive(Debug, Clone, Copy)]
pub struct SecurityKeys {
    /// Client credentials file.
    pub credentials: &'static str,
    /// Allow-list.
    pub allow: &'static str,
    /// Server PLAIN credentials file.
    pub plain_credentials: &'static str,
    /// Insecure flag.
    pub insecure: &'static str,
    /// The engine's CURVE key pair.
    pub curve_key: &'static str,
    /// CURVE client-key list.
    pub curve_clients: &'static str,
    /// The risk-servers' CURVE public key.
    pub risk_server_key: &'static str,
    /// The downstream's CURVE public key.
    pub egress_server_key: &'static str,
}

/// The `[security]` keys of engine.toml.
pub const SECURITY_TOML_KEYS: SecurityKeys = SecurityKeys {
    credentials: "security.credentials",
    allow: "security.allow",
    plain_credentials: "security.plain_credentials",
    insecure: "security.insecure",
    curve_key: "security.curve_key",
    curve_clients: "security.curve_clients",
    risk_server_key: "security.risk_server_key",
    egress_server_key: "security.egress_server_key",
};

/// Validates security settings: the client credentials file is read (mode 0600, a
/// `USER:PASSWORD` line), the server credentials file too, every allow-list entry is a
/// network, and each bound endpoint in `bound` (`(key, endpoint)`) that is remote has
/// authentication or `insecure`.
#[allow(clippy::too_many_arguments)] // one per setting, named at each call site
pub fn check_security(
    p: &mut Problems,
    keys: SecurityKeys,
    credentials: Option<&Path>,
    allow: &[String],
    plain_credentials: Option<&Path>,
    insecure: bool,
    curve: CurveFiles<'_>,
    bound: &[(&str, &str)],
) -> SecuritySettings {
    let client = match credentials {
        None => zauth::ClientAuth::default(),
        Some(f) => zauth::ClientAuth::from_file(f).unwrap_or_else(|e| {
            p.add(keys.credentials, e.to_string());
            zauth::ClientAuth::default()
        }),
    };
    let mut nets = Vec::with_capacity(allow.len());
    for (i, a) in allow.iter().enumerate() {
        match zauth::parse_allow(a) {
            Ok(n) => nets.push(n),
            Err(e) => p.add(format!("{}[{i}]", keys.allow), e.to_string()),
        }
    }
    if let Some(f) = plain_credentials {
        match zauth::read_credentials(f) {
            Ok(users) if users.is_empty() => p.add(
                keys.plain_credentials,
                format!("{} holds no USER:PASSWORD line", f.display()),
            ),
            Ok(_) => {}
            Err(e) => p.add(keys.plain_credentials, e.to_string()),
        }
    }
    if let Some(f) = curve.key {
        if let Err(e) = zauth::read_key_pair(f) {
            p.add(keys.curve_key, e.to_string());
        }
    }
    if let Some(f) = curve.clients {
        match zauth::read_public_keys(f) {
            Ok(k) if k.is_empty() => p.add(
                keys.curve_clients,
                format!("{} holds no public key", f.display()),
            ),
            Ok(_) => {}
            Err(e) => p.add(keys.curve_clients, e.to_string()),
        }
        if curve.key.is_none() {
            p.add(
                keys.curve_clients,
                format!("needs {} (the engine's own key pair)", keys.curve_key),
            );
        }
    }
    if curve.key.is_some() && plain_credentials.is_some() {
        p.add(
            keys.plain_credentials,
            format!(
                "and {} are both set: a socket uses one mechanism",
                keys.curve_key
            ),
        );
    }
    // The client sockets: CURVE towards a server whose public key is given, with the engine's
    // key pair (or a fresh one); PLAIN otherwise.
    let with_server_key = |p: &mut Problems, key_name: &str, server_key: Option<&Path>| {
        let Some(server_key) = server_key else {
            return client.clone();
        };
        if client.plain.is_some() {
            p.add(
                key_name,
                format!(
                    "and {} are both set: a socket uses one mechanism",
                    keys.credentials
                ),
            );
            return client.clone();
        }
        client
            .clone()
            .with_curve(server_key, curve.key)
            .unwrap_or_else(|e| {
                p.add(key_name, e.to_string());
                client.clone()
            })
    };
    let risk_client = with_server_key(p, keys.risk_server_key, curve.risk_server_key);
    let egress_client = with_server_key(p, keys.egress_server_key, curve.egress_server_key);
    let s = SecuritySettings {
        credentials_file: credentials.map(Path::to_path_buf),
        client: risk_client,
        allow: nets,
        plain_credentials: plain_credentials.map(Path::to_path_buf),
        curve_key: curve.key.map(Path::to_path_buf),
        curve_clients: curve.clients.map(Path::to_path_buf),
        egress_client,
        insecure,
    };
    let auth = s.server_auth();
    for (key, endpoint) in bound {
        if let Ok(zauth::Scope::Remote) = zauth::scope(endpoint) {
            if !auth.is_configured() && !insecure {
                p.add(
                    *key,
                    format!(
                        "{endpoint} is not loopback or ipc: bound sockets there need \
                         authentication ({}, {} or {}), or {} to accept anyone",
                        keys.allow, keys.plain_credentials, keys.curve_clients, keys.insecure
                    ),
                );
            }
        }
    }
    s
}

/// Checks a journal segment size against the journal writer's bounds (whole pages,
/// [`audit::limits::SEGMENT_SIZE_BYTES_MIN`]..=[`audit::limits::SEGMENT_SIZE_BYTES_MAX`]).
pub fn check_segment_size(p: &mut Problems, key: &str, bytes: u64) {
    use audit::limits::{SEGMENT_SIZE_ALIGN_BYTES, SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN};
    if !(SEGMENT_SIZE_BYTES_MIN..=SEGMENT_SIZE_BYTES_MAX).contains(&bytes)
        || bytes % SEGMENT_SIZE_ALIGN_BYTES != 0
    {
        p.add(
            key,
            format!(
                "{bytes} is not a multiple of {SEGMENT_SIZE_ALIGN_BYTES} in \
                 {SEGMENT_SIZE_BYTES_MIN}..={SEGMENT_SIZE_BYTES_MAX}"
            ),
        );
    }
}

/// Everything `engine run` needs, validated.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The file it came from.
    pub origin: String,
    /// Ingress PULL socket.
    pub ingress: PullSettings,
    /// Risk stage.
    pub risk: RiskSettings,
    /// Journal and audit publisher.
    pub journal: JournalSettings,
    /// Egress.
    pub egress: EgressTarget,
    /// Rings, batches, idle strategies, core map.
    pub stages: StageSettings,
    /// Prometheus endpoint (`host:port`), if any.
    pub metrics_bind: Option<String>,
    /// Authentication of the network links.
    pub security: SecuritySettings,
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// One problem of a configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key (`risk.timeout_ms`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, or a key of the wrong type / unknown key (the message names it).
    #[error("config {origin}: {message}")]
    Parse {
        /// The file.
        origin: String,
        /// The TOML error, with line and key.
        message: String,
    },
    /// Parsed, but values are invalid.
    #[error("config {origin} has {} problem(s):\n  {}", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// The file.
        origin: String,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

// ---------------------------------------------------------------------------------------------
// Raw TOML.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ingress: Option<RawIngress>,
    risk: Option<RawRisk>,
    journal: Option<RawJournal>,
    egress: Option<RawEgress>,
    pipeline: Option<RawPipeline>,
    stages: Option<RawStages>,
    metrics: Option<RawMetrics>,
    security: Option<RawSecurity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecurity {
    credentials: Option<PathBuf>,
    allow: Option<Vec<String>>,
    plain_credentials: Option<PathBuf>,
    insecure: Option<bool>,
    curve_key: Option<PathBuf>,
    curve_clients: Option<PathBuf>,
    risk_server_key: Option<PathBuf>,
    egress_server_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngress {
    bind: Option<String>,
    rcvhwm: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRisk {
    mode: Option<String>,
    protocol: Option<String>,
    limits: Option<PathBuf>,
    endpoints: Option<Vec<String>>,
    timeout_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournal {
    dir: Option<PathBuf>,
    durability: Option<String>,
    segment_size_bytes: Option<i64>,
    checkpoint_key: Option<PathBuf>,
    checkpoint_every_records: Option<i64>,
    checkpoint_every_ms: Option<i64>,
    pub_endpoint: Option<String>,
    json_pub_endpoint: Option<String>,
    pub_format: Option<String>,
    snapshot_every_records: Option<i64>,
    snapshot_every_ms: Option<i64>,
    max_account_names: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgress {
    connect: Option<String>,
    sndhwm: Option<i64>,
    format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPipeline {
    ring_capacity: Option<i64>,
    max_batch: Option<i64>,
    idle: Option<String>,
    lock_memory: Option<bool>,
    threading: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStages {
    ingress: Option<RawStage>,
    risk: Option<RawStage>,
    journal: Option<RawStage>,
    egress: Option<RawStage>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    core: Option<i64>,
    idle: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    bind: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Validation helpers (shared with the replay flags).

/// Collects problems while validating.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<ConfigProblem>);

impl Problems {
    /// Records a problem.
    pub fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// Checks a ZeroMQ endpoint's shape (`tcp://host:port`, `ipc://path`, `inproc://name`).
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some((transport, rest)) = endpoint.split_once("://") else {
        return Err(format!(
            "{endpoint:?} is not a ZeroMQ endpoint (tcp://host:port, ipc://path, inproc://name)"
        ));
    };
    match transport {
        "tcp" => {
            let port = rest.rsplit_once(':').map(|(_, p)| p);
            match port {
                Some("*") => Ok(()),
                Some(p) if p.parse::<u16>().is_ok() => Ok(()),
                _ => Err(format!("{endpoint:?}: tcp endpoints need host:port")),
            }
        }
        "ipc" | "inproc" if !rest.is_empty() => Ok(()),
        _ => Err(format!(
            "{endpoint:?}: transport must be tcp, ipc or inproc with an address"
        )),
    }
}

fn int_in<T: TryFrom<i64>>(
    p: &mut Problems,
    key: &str,
    v: Option<i64>,
    default: T,
    min: i64,
    max: i64,
) -> T {
    match v {
        None => default,
        Some(x) if x < min || x > max => {
            p.add(key, format!("{x} is outside {min}..={max}"));
            default
        }
        Some(x) => T::try_from(x).unwrap_or(default),
    }
}

/// Validates ring capacity and batch size together.
pub fn check_ring_and_batch(
    p: &mut Problems,
    ring_key: &str,
    ring_capacity: usize,
    batch_key: &str,
    max_batch: usize,
) {
    if !(RING_CAPACITY_ORDERS_MIN..=RING_CAPACITY_ORDERS_MAX).contains(&ring_capacity) {
        p.add(
            ring_key,
            format!(
                "{ring_capacity} is outside {RING_CAPACITY_ORDERS_MIN}..={RING_CAPACITY_ORDERS_MAX}"
            ),
        );
    }
    if !(1..=MAX_BATCH_ORDERS_MAX).contains(&max_batch) {
        p.add(
            batch_key,
            format!("{max_batch} is outside 1..={MAX_BATCH_ORDERS_MAX}"),
        );
    } else if max_batch > ring_capacity {
        p.add(
            batch_key,
            format!("{max_batch} is larger than the ring capacity {ring_capacity}"),
        );
    }
}

/// Validates a core map against the cores of this host.
pub fn check_cores(p: &mut Problems, key_prefix: &str, cores: &PerStage<Option<usize>>) {
    let available = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect::<Vec<_>>())
        .unwrap_or_default();
    for s in StageId::ALL {
        if let Some(c) = cores.get(s) {
            if !available.contains(c) {
                p.add(
                    format!("{key_prefix}{s}"),
                    format!("core {c} is not available here (cores: {available:?})"),
                );
            }
        }
    }
}

/// Where one source of settings (engine.toml, or the replay flags) names each stage setting,
/// so that a problem names the key the user wrote.
#[derive(Debug, Clone, Copy)]
pub struct StageKeys {
    /// Ring capacity.
    pub ring_capacity: &'static str,
    /// Batch bound.
    pub max_batch: &'static str,
    /// A stage's core: `core_prefix` + stage name + `core_suffix`.
    pub core_prefix: &'static str,
    /// See `core_prefix`.
    pub core_suffix: &'static str,
    /// The threading mode.
    pub threading: &'static str,
    /// The risk protocol ([`check_risk_protocol`]).
    pub risk_protocol: &'static str,
}

/// The keys of engine.toml.
pub const STAGE_TOML_KEYS: StageKeys = StageKeys {
    ring_capacity: "pipeline.ring_capacity",
    max_batch: "pipeline.max_batch",
    core_prefix: "stages.",
    core_suffix: ".core",
    threading: "pipeline.threading",
    risk_protocol: "risk.protocol",
};

/// The flags of `engine replay`.
pub const STAGE_FLAG_KEYS: StageKeys = StageKeys {
    ring_capacity: "--ring-capacity",
    max_batch: "--max-batch",
    core_prefix: "--pin ",
    core_suffix: "",
    threading: "--threading",
    risk_protocol: "--risk-protocol",
};

/// The one validator of the stage settings, whichever source they were parsed from (both
/// commands call it on the same typed [`StageSettings`]): the bounds, and the rules between
/// fields. `pull_ingress`: the PULL ingress (`engine run`), which only receives when ring A
/// can hold a whole frame, so a smaller ring would never read (the service would stall with
/// no error).
pub fn check_stages(p: &mut Problems, keys: &StageKeys, s: &StageSettings, pull_ingress: bool) {
    check_ring_and_batch(
        p,
        keys.ring_capacity,
        s.ring_capacity,
        keys.max_batch,
        s.max_batch,
    );
    if pull_ingress && s.ring_capacity < INGRESS_FRAME_ORDERS_MAX {
        p.add(
            keys.ring_capacity,
            format!(
                "{} cannot hold one full ingress frame ({INGRESS_FRAME_ORDERS_MAX} orders)",
                s.ring_capacity
            ),
        );
    }
    let mut core_problems = Problems::default();
    check_cores(&mut core_problems, keys.core_prefix, &s.cores);
    for cp in core_problems.0 {
        p.add(format!("{}{}", cp.key, keys.core_suffix), cp.message);
    }
    let distinct = |stages: &[StageId]| -> Vec<usize> {
        stages
            .iter()
            .filter_map(|&st| *s.cores.get(st))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    if s.threading == ThreadingKind::Shared {
        let distinct = distinct(&StageId::ALL);
        if distinct.len() > 1 {
            p.add(
                keys.threading,
                format!(
                    "shared runs the four stages on one thread, which is pinned to one core; \
                     the stages name cores {distinct:?}"
                ),
            );
        }
    }
    if s.threading == ThreadingKind::Split {
        for (thread, stages) in [
            ("ingress and risk", [StageId::Ingress, StageId::Risk]),
            ("journal and egress", [StageId::Journal, StageId::Egress]),
        ] {
            let distinct = distinct(&stages);
            if distinct.len() > 1 {
                p.add(
                    keys.threading,
                    format!(
                        "split runs {thread} on one thread, which is pinned to one core; \
                         they name cores {distinct:?}"
                    ),
                );
            }
        }
    }
}

/// The risk protocol against the risk target, for both sources of settings (called beside
/// [`check_stages`] with the same keys): the JSON protocol only speaks to remote services
/// (the embedded and inline checks are ours, and binary).
pub fn check_risk_protocol(p: &mut Problems, keys: &StageKeys, r: &RiskSettings) {
    if r.protocol == RiskProtocol::Json && !matches!(r.target, RiskTarget::Remote { .. }) {
        p.add(
            keys.risk_protocol,
            "json is for a remote JSON risk service (the source design's); the embedded and \
             inline checks speak binary",
        );
    }
}

/// Parses an idle strategy name, recording a problem on failure.
fn idle_kind(p: &mut Problems, key: &str, v: Option<&str>, default: IdleKind) -> IdleKind {
    match v.map(IdleKind::from_str) {
        None => default,
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            p.add(key, e.to_string());
            default
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading.

impl ServiceConfig {
    /// Reads, parses and validates a config file.
    pub fn from_file(path: &Path) -> Result<ServiceConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ServiceConfig::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<ServiceConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })?;
        validate(raw, origin)
    }
}

fn validate(raw: RawConfig, origin: &str) -> Result<ServiceConfig, ConfigError> {
    let mut p = Problems::default();

    // [ingress]
    let ri = raw.ingress.unwrap_or_default();
    let bind = match ri.bind {
        Some(b) => {
            if let Err(e) = check_endpoint(&b) {
                p.add("ingress.bind", e);
            }
            b
        }
        None => {
            p.add(
                "ingress.bind",
                "missing: the endpoint the PULL socket binds",
            );
            String::new()
        }
    };
    let rcvhwm = int_in(
        &mut p,
        "ingress.rcvhwm",
        ri.rcvhwm,
        INGRESS_RCVHWM_MESSAGES_DEFAULT,
        1,
        i32::MAX as i64,
    );

    // [risk]
    let rr = raw.risk.unwrap_or_default();
    let timeout_ms: u64 = int_in(
        &mut p,
        "risk.timeout_ms",
        rr.timeout_ms,
        RISK_TIMEOUT_MS_DEFAULT,
        1,
        RISK_TIMEOUT_MS_MAX as i64,
    );
    let protocol = match rr.protocol.as_deref() {
        None | Some("binary") => RiskProtocol::Binary,
        Some("json") => RiskProtocol::Json,
        Some(other) => {
            p.add(
                STAGE_TOML_KEYS.risk_protocol,
                format!("{other:?} is not \"binary\" or \"json\""),
            );
            RiskProtocol::Binary
        }
    };
    let target = match rr.mode.as_deref().unwrap_or("embedded") {
        mode @ ("embedded" | "inline") => {
            if rr.endpoints.is_some() {
                p.add("risk.endpoints", "only for mode = \"remote\"");
            }
            if let Some(f) = &rr.limits {
                if !f.is_file() {
                    p.add(
                        "risk.limits",
                        format!("{} is not a readable file", f.display()),
                    );
                }
            }
            if mode == "inline" {
                RiskTarget::Inline {
                    limits_file: rr.limits,
                }
            } else {
                RiskTarget::Embedded {
                    limits_file: rr.limits,
                }
            }
        }
        "remote" => {
            if rr.limits.is_some() {
                p.add(
                    "risk.limits",
                    "only for mode = \"embedded\" or \"inline\" (a remote risk-server has its own limits)",
                );
            }
            let endpoints = rr.endpoints.unwrap_or_default();
            if endpoints.is_empty() {
                p.add(
                    "risk.endpoints",
                    "mode = \"remote\" needs at least one endpoint",
                );
            }
            for (i, e) in endpoints.iter().enumerate() {
                if let Err(m) = check_endpoint(e) {
                    p.add(format!("risk.endpoints[{i}]"), m);
                }
            }
            RiskTarget::Remote { endpoints }
        }
        other => {
            p.add(
                "risk.mode",
                format!("{other:?} is not \"embedded\", \"inline\" or \"remote\""),
            );
            RiskTarget::Embedded { limits_file: None }
        }
    };

    // [journal]
    let rj = raw.journal.unwrap_or_default();
    let dir = rj.dir.unwrap_or_else(|| PathBuf::from(JOURNAL_DIR_DEFAULT));
    if dir.as_os_str().is_empty() {
        p.add("journal.dir", "is empty");
    }
    let durability = match rj.durability.as_deref() {
        None => audit::Durability::None,
        Some(text) => match text.parse::<audit::Durability>() {
            Ok(d) => d,
            Err(e) => {
                p.add("journal.durability", e.to_string());
                audit::Durability::None
            }
        },
    };
    let segment_size_bytes: u64 = int_in(
        &mut p,
        "journal.segment_size_bytes",
        rj.segment_size_bytes,
        SEGMENT_SIZE_BYTES_DEFAULT,
        1,
        i64::MAX,
    );
    check_segment_size(&mut p, "journal.segment_size_bytes", segment_size_bytes);
    let max_account_names: usize = int_in(
        &mut p,
        "journal.max_account_names",
        rj.max_account_names,
        crate::account_names::default_capacity(segment_size_bytes),
        0,
        i64::from(u32::MAX),
    );
    if let Err(e) = crate::account_names::check_capacity(max_account_names, segment_size_bytes) {
        p.add("journal.max_account_names", e.to_string());
    }
    let every_records: u64 = int_in(
        &mut p,
        "journal.checkpoint_every_records",
        rj.checkpoint_every_records,
        CHECKPOINT_EVERY_RECORDS_DEFAULT,
        1,
        i64::MAX,
    );
    let every_ms: u64 = int_in(
        &mut p,
        "journal.checkpoint_every_ms",
        rj.checkpoint_every_ms,
        CHECKPOINT_EVERY_MS_DEFAULT,
        1,
        i64::MAX,
    );
    let snapshots = crate::snapshots::SnapshotSettings {
        every_records: int_in(
            &mut p,
            "journal.snapshot_every_records",
            rj.snapshot_every_records,
            crate::limits::SNAPSHOT_EVERY_RECORDS_DEFAULT,
            0,
            i64::MAX,
        ),
        every_ms: int_in(
            &mut p,
            "journal.snapshot_every_ms",
            rj.snapshot_every_ms,
            crate::limits::SNAPSHOT_EVERY_MS_DEFAULT,
            0,
            i64::MAX,
        ),
    };
    let checkpoint = match rj.checkpoint_key {
        Some(key_file) => {
            if !key_file.is_file() {
                p.add(
                    "journal.checkpoint_key",
                    format!("{} is not a readable file", key_file.display()),
                );
            }
            Some(CheckpointSettings {
                key_file,
                every_records,
                every_ms,
            })
        }
        None => {
            if rj.checkpoint_every_records.is_some() || rj.checkpoint_every_ms.is_some() {
                p.add(
                    "journal.checkpoint_key",
                    "checkpoint intervals are set but no checkpoint_key",
                );
            }
            None
        }
    };
    for (key, v) in [
        ("journal.pub_endpoint", &rj.pub_endpoint),
        ("journal.json_pub_endpoint", &rj.json_pub_endpoint),
    ] {
        if let Some(e) = v {
            if let Err(m) = check_endpoint(e.strip_prefix(audit::CONNECT_PREFIX).unwrap_or(e)) {
                p.add(key, m);
            }
        }
    }
    let pub_format = match rj.pub_format.as_deref() {
        None | Some("binary") => audit::FeedFormat::Binary,
        Some("json") => audit::FeedFormat::Json,
        Some(other) => {
            p.add(
                "journal.pub_format",
                format!("{other:?} is not \"binary\" or \"json\""),
            );
            audit::FeedFormat::Binary
        }
    };
    if pub_format == audit::FeedFormat::Json && rj.json_pub_endpoint.is_some() {
        p.add(
            "journal.json_pub_endpoint",
            "pub_format = \"json\" already makes pub_endpoint a JSON feed",
        );
    }
    if rj.json_pub_endpoint.is_some() && rj.pub_endpoint.is_none() {
        p.add(
            "journal.json_pub_endpoint",
            "needs journal.pub_endpoint as well",
        );
    }

    // [egress]
    let egress = match raw.egress {
        None => EgressTarget::None,
        Some(re) => {
            let sndhwm = int_in(
                &mut p,
                "egress.sndhwm",
                re.sndhwm,
                EGRESS_SNDHWM_MESSAGES_DEFAULT,
                1,
                EGRESS_SNDHWM_MESSAGES_MAX as i64,
            );
            let format = match re.format.as_deref() {
                None => crate::out_format::OutFormat::Batch,
                Some(text) => crate::out_format::OutFormat::parse(text).unwrap_or_else(|| {
                    p.add(
                        "egress.format",
                        format!("{text:?} is not \"batch\", \"order\" or \"json\""),
                    );
                    crate::out_format::OutFormat::Batch
                }),
            };
            match re.connect {
                None => {
                    if re.sndhwm.is_some() {
                        p.add("egress.connect", "missing (egress.sndhwm is set)");
                    }
                    if re.format.is_some() {
                        p.add("egress.connect", "missing (egress.format is set)");
                    }
                    EgressTarget::None
                }
                Some(endpoint) => {
                    if let Err(m) = check_endpoint(&endpoint) {
                        p.add("egress.connect", m);
                    }
                    EgressTarget::Push {
                        endpoint,
                        sndhwm,
                        format,
                    }
                }
            }
        }
    };

    // [pipeline] and [stages.*]
    let rp = raw.pipeline.unwrap_or_default();
    let ring_capacity: usize = int_in(
        &mut p,
        "pipeline.ring_capacity",
        rp.ring_capacity,
        RING_CAPACITY_ORDERS_DEFAULT,
        i64::MIN,
        i64::MAX,
    );
    let max_batch: usize = int_in(
        &mut p,
        "pipeline.max_batch",
        rp.max_batch,
        MAX_BATCH_ORDERS_DEFAULT,
        i64::MIN,
        i64::MAX,
    );
    if rp.ring_capacity.is_some_and(|v| v < 0) {
        p.add("pipeline.ring_capacity", "must be positive");
    }
    if rp.max_batch.is_some_and(|v| v < 0) {
        p.add("pipeline.max_batch", "must be positive");
    }
    let default_idle = idle_kind(
        &mut p,
        "pipeline.idle",
        rp.idle.as_deref(),
        IdleKind::Backoff,
    );
    let threading = match rp.threading.as_deref() {
        None => ThreadingKind::Auto,
        Some(text) => text.parse::<ThreadingKind>().unwrap_or_else(|e| {
            p.add("pipeline.threading", e.to_string());
            ThreadingKind::Auto
        }),
    };
    let mut idle = PerStage::all(default_idle);
    let mut cores = PerStage::all(None);
    let rs = raw.stages.unwrap_or_default();
    for (s, st) in [
        (StageId::Ingress, rs.ingress),
        (StageId::Risk, rs.risk),
        (StageId::Journal, rs.journal),
        (StageId::Egress, rs.egress),
    ] {
        let Some(st) = st else { continue };
        *idle.get_mut(s) = idle_kind(
            &mut p,
            &format!("stages.{s}.idle"),
            st.idle.as_deref(),
            default_idle,
        );
        if let Some(c) = st.core {
            if c < 0 {
                p.add(format!("stages.{s}.core"), "must be ≥ 0");
            } else {
                *cores.get_mut(s) = usize::try_from(c).ok();
            }
        }
    }
    let stages = StageSettings {
        ring_capacity,
        max_batch,
        idle,
        cores,
        lock_memory: rp.lock_memory.unwrap_or(false),
        threading,
    };
    check_stages(&mut p, &STAGE_TOML_KEYS, &stages, true);
    let risk = RiskSettings {
        target,
        timeout: Duration::from_millis(timeout_ms),
        protocol,
    };
    check_risk_protocol(&mut p, &STAGE_TOML_KEYS, &risk);

    // [metrics]
    let metrics_bind = raw.metrics.and_then(|m| m.bind);
    if let Some(b) = &metrics_bind {
        if let Err(e) = metrics_endpoint::parse_addr(b) {
            p.add("metrics.bind", e);
        }
    }

    // [security]
    let rsec = raw.security.unwrap_or_default();
    let mut bound = vec![("ingress.bind", bind.as_str())];
    // A `connect:` endpoint listens nowhere: nothing to authenticate.
    if let Some(e) = rj
        .pub_endpoint
        .as_deref()
        .filter(|e| !e.starts_with(audit::CONNECT_PREFIX))
    {
        bound.push(("journal.pub_endpoint", e));
    }
    if let Some(e) = rj
        .json_pub_endpoint
        .as_deref()
        .filter(|e| !e.starts_with(audit::CONNECT_PREFIX))
    {
        bound.push(("journal.json_pub_endpoint", e));
    }
    let security = check_security(
        &mut p,
        SECURITY_TOML_KEYS,
        rsec.credentials.as_deref(),
        rsec.allow.as_deref().unwrap_or_default(),
        rsec.plain_credentials.as_deref(),
        rsec.insecure.unwrap_or(false),
        CurveFiles {
            key: rsec.curve_key.as_deref(),
            clients: rsec.curve_clients.as_deref(),
            risk_server_key: rsec.risk_server_key.as_deref(),
            egress_server_key: rsec.egress_server_key.as_deref(),
        },
        &bound,
    );

    if !p.0.is_empty() {
        return Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            problems: p.0,
        });
    }
    Ok(ServiceConfig {
        origin: origin.to_owned(),
        ingress: PullSettings { bind, rcvhwm },
        risk,
        journal: JournalSettings {
            dir,
            durability,
            segment_size_bytes,
            checkpoint,
            pub_endpoint: rj.pub_endpoint,
            json_pub_endpoint: rj.json_pub_endpoint,
            pub_format,
            snapshots,
            max_account_names,
        },
        egress,
        stages,
        metrics_bind,
        security,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn problems(text: &str) -> Vec<ConfigProblem> {
        match ServiceConfig::from_toml_str(text, "test.toml") {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn keys(text: &str) -> Vec<String> {
        problems(text).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = ServiceConfig::from_toml_str("[ingress]\nbind = \"tcp://127.0.0.1:5555\"\n", "t")
            .unwrap();
        assert_eq!(c.ingress.rcvhwm, INGRESS_RCVHWM_MESSAGES_DEFAULT);
        assert_eq!(c.risk.target, RiskTarget::Embedded { limits_file: None });
        assert_eq!(c.risk.timeout, Duration::from_millis(100));
        assert_eq!(c.journal.dir, PathBuf::from("./journal"));
        assert_eq!(c.egress, EgressTarget::None);
        assert_eq!(c.stages, StageSettings::default());
        assert!(c.metrics_bind.is_none());
    }

    #[test]
    fn durability_batch_parses() {
        let text =
            "[ingress]\nbind = \"tcp://127.0.0.1:5555\"\n[journal]\ndurability = \"batch\"\n";
        let c = ServiceConfig::from_toml_str(text, "t").unwrap();
        assert_eq!(c.journal.durability, audit::Durability::Batch);
    }

    #[test]
    fn full_config_parses() {
        let text = r#"
            [ingress]
            bind = "tcp://127.0.0.1:5555"
            rcvhwm = 500
            [risk]
            mode = "remote"
            endpoints = ["tcp://127.0.0.1:5560", "ipc:///tmp/risk.sock"]
            timeout_ms = 250
            [journal]
            dir = "/tmp/j"
            durability = "always"
            segment_size_bytes = 1048576
            pub_endpoint = "tcp://127.0.0.1:5570"
            [egress]
            connect = "tcp://127.0.0.1:5580"
            sndhwm = 10
            [pipeline]
            ring_capacity = 4096
            max_batch = 128
            idle = "yield"
            lock_memory = true
            [stages.risk]
            idle = "spin"
            core = 0
            [metrics]
            bind = "127.0.0.1:9100"
        "#;
        let c = ServiceConfig::from_toml_str(text, "t").unwrap();
        assert_eq!(
            c.risk.target,
            RiskTarget::Remote {
                endpoints: vec!["tcp://127.0.0.1:5560".into(), "ipc:///tmp/risk.sock".into()]
            }
        );
        assert_eq!(c.risk.timeout, Duration::from_millis(250));
        assert_eq!(c.stages.idle.risk, IdleKind::Spin);
        assert_eq!(c.stages.idle.journal, IdleKind::Yield);
        assert_eq!(c.stages.cores.risk, Some(0));
        assert!(c.stages.lock_memory);
        assert_eq!(
            c.egress,
            EgressTarget::Push {
                endpoint: "tcp://127.0.0.1:5580".into(),
                sndhwm: 10,
                format: crate::out_format::OutFormat::Batch,
            }
        );
        assert_eq!(c.metrics_bind.as_deref(), Some("127.0.0.1:9100"));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
            [ingress]
            rcvhwm = 0
            [risk]
            mode = "remote"
            timeout_ms = 0
            [journal]
            durability = "sometimes"
            [egress]
            connect = "localhost:5580"
            [pipeline]
            ring_capacity = 8
            max_batch = 100000
            idle = "nap"
            [stages.journal]
            core = 9999
            [metrics]
            bind = "nowhere"
        "#;
        let k = keys(text);
        for key in [
            "ingress.bind",
            "ingress.rcvhwm",
            "risk.timeout_ms",
            "risk.endpoints",
            "journal.durability",
            "egress.connect",
            "pipeline.ring_capacity",
            "pipeline.max_batch",
            "pipeline.idle",
            "stages.journal.core",
            "metrics.bind",
        ] {
            assert!(k.iter().any(|x| x == key), "missing {key} in {k:?}");
        }
        // The error text lists them all, one per line.
        let e = ServiceConfig::from_toml_str(text, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config bad.toml has "), "{e}");
        assert!(
            e.contains("\n  risk.timeout_ms: 0 is outside 1..=60000"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_named() {
        let e = ServiceConfig::from_toml_str("[ingress]\nbnd = \"x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bnd"), "{e}");
        let e = ServiceConfig::from_toml_str("[risk]\ntimeout_ms = \"fast\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timeout_ms"), "{e}");
        let e = ServiceConfig::from_toml_str("[colour]\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn mode_specific_keys_are_checked() {
        let k = keys(
            "[ingress]\nbind=\"tcp://127.0.0.1:1\"\n[risk]\nmode=\"embedded\"\nendpoints=[\"tcp://a:1\"]\nlimits=\"/no/such/file\"\n",
        );
        assert!(k.contains(&"risk.endpoints".to_string()), "{k:?}");
        assert!(k.contains(&"risk.limits".to_string()), "{k:?}");
        let k = keys("[ingress]\nbind=\"tcp://127.0.0.1:1\"\n[journal]\ncheckpoint_every_ms = 5\njson_pub_endpoint = \"tcp://127.0.0.1:2\"\n");
        assert!(k.contains(&"journal.checkpoint_key".to_string()), "{k:?}");
        assert!(
            k.contains(&"journal.json_pub_endpoint".to_string()),
            "{k:?}"
        );
        let k = keys("[ingress]\nbind=\"tcp://127.0.0.1:1\"\n[risk]\nmode=\"carrier-pigeon\"\n");
        assert_eq!(k, vec!["risk.mode".to_string()]);
    }

    #[test]
    fn security_is_validated_by_key_and_never_prints_the_password() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::write(&creds, "engine:s3cret-pa55\n").unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "[ingress]\nbind = \"tcp://0.0.0.0:5590\"\n[security]\ncredentials = \"{0}\"\n\
             plain_credentials = \"{0}\"\nallow = [\"10.0.0.0/8\", \"127.0.0.1\"]\n",
            creds.display()
        );
        let c = ServiceConfig::from_toml_str(&text, "t").unwrap();
        assert_eq!(c.security.allow.len(), 2);
        assert_eq!(
            c.security.client.plain,
            Some(("engine".to_owned(), "s3cret-pa55".to_owned()))
        );
        assert!(c.security.server_auth().is_configured());
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret-pa55"), "{debug}");

        // A remote bind without authentication, a bad network, a file others can read.
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[ingress]\nbind = \"tcp://0.0.0.0:5590\"\n[journal]\npub_endpoint = \"tcp://*:5591\"\n\
             [security]\ncredentials = \"{}\"\nallow = [\"nowhere\"]\n",
            creds.display()
        );
        let k = keys(&text);
        for key in ["security.credentials", "security.allow[0]"] {
            assert!(k.contains(&key.to_string()), "{key} in {k:?}");
        }
        // Without authentication, each remote bind is refused under its own key.
        let k = keys("[ingress]\nbind = \"tcp://0.0.0.0:5590\"\n[journal]\npub_endpoint = \"tcp://*:5591\"\n");
        assert_eq!(
            k,
            vec!["ingress.bind".to_owned(), "journal.pub_endpoint".to_owned()]
        );
        let c = ServiceConfig::from_toml_str(
            "[ingress]\nbind = \"tcp://0.0.0.0:5590\"\n[security]\ninsecure = true\n",
            "t",
        )
        .unwrap();
        assert!(c.security.insecure);
        let e = ServiceConfig::from_toml_str("[security]\npassword = \"x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("password"), "{e}");
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("tcp://127.0.0.1:5555").is_ok());
        assert!(check_endpoint("tcp://*:5555").is_ok());
        assert!(check_endpoint("tcp://127.0.0.1:*").is_ok());
        assert!(check_endpoint("ipc:///tmp/x").is_ok());
        assert!(check_endpoint("inproc://risk").is_ok());
        for bad in [
            "127.0.0.1:5555",
            "tcp://host",
            "tcp://h:99999",
            "udp://h:1",
            "ipc://",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/engine.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        // Relative paths in the example are relative to the repository root.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = text.replace("\"examples/", &format!("\"{}/examples/", root.display()));
        let c = ServiceConfig::from_toml_str(&text, "examples/engine.toml").unwrap();
        // The documented defaults are the real ones.
        assert_eq!(c.stages, StageSettings::default());
        assert_eq!(
            c.risk.timeout,
            Duration::from_millis(RISK_TIMEOUT_MS_DEFAULT)
        );
        assert_eq!(c.ingress.rcvhwm, INGRESS_RCVHWM_MESSAGES_DEFAULT);
        assert_eq!(c.journal.segment_size_bytes, SEGMENT_SIZE_BYTES_DEFAULT);
    }

    /// Issue 13 item 10: one validator for both sources. The same typed settings give the same
    /// problems from engine.toml and from the replay flags, each named by its own key; the
    /// ring-holds-a-frame rule applies where a PULL ingress reads.
    #[test]
    fn one_validator_for_toml_and_flags_with_cross_field_rules() {
        let bad = StageSettings {
            ring_capacity: 512,
            max_batch: 600,
            cores: PerStage {
                ingress: Some(0),
                risk: None,
                journal: Some(1),
                egress: None,
            },
            threading: ThreadingKind::Shared,
            ..StageSettings::default()
        };
        let run = |keys: &StageKeys, pull: bool| {
            let mut p = Problems::default();
            check_stages(&mut p, keys, &bad, pull);
            p.0
        };
        let toml = run(&STAGE_TOML_KEYS, true);
        let flags = run(&STAGE_FLAG_KEYS, false);
        let find = |ps: &[ConfigProblem], key: &str, needle: &str| {
            ps.iter()
                .any(|p| p.key == key && p.message.contains(needle))
        };
        assert!(
            find(
                &toml,
                "pipeline.max_batch",
                "larger than the ring capacity 512"
            ),
            "{toml:?}"
        );
        assert!(
            find(&flags, "--max-batch", "larger than the ring capacity 512"),
            "{flags:?}"
        );
        assert!(
            find(&toml, "pipeline.ring_capacity", "one full ingress frame"),
            "{toml:?}"
        );
        assert!(
            !flags.iter().any(|p| p.message.contains("ingress frame")),
            "a replay has no PULL ingress: {flags:?}"
        );
        assert!(
            find(&toml, "pipeline.threading", "cores [0, 1]"),
            "{toml:?}"
        );
        assert!(find(&flags, "--threading", "cores [0, 1]"), "{flags:?}");
        // Through the parsers: a TOML whose ring cannot hold a frame is refused by key.
        let ks = keys("[pipeline]\nring_capacity = 512\nmax_batch = 16\n");
        assert!(ks.contains(&"pipeline.ring_capacity".to_owned()), "{ks:?}");
        let ks = keys("[pipeline]\nthreading = \"shared\"\n[stages.ingress]\ncore = 0\n[stages.egress]\ncore = 1\n");
        assert!(ks.contains(&"pipeline.threading".to_owned()), "{ks:?}");
        // Split pins each of its two threads to one core: the stages of one thread may not
        // name two, the two threads may.
        let ks = keys("[pipeline]\nthreading = \"split\"\n[stages.ingress]\ncore = 0\n[stages.egress]\ncore = 1\n");
        assert!(!ks.contains(&"pipeline.threading".to_owned()), "{ks:?}");
        let ks = keys("[pipeline]\nthreading = \"split\"\n[stages.journal]\ncore = 0\n[stages.egress]\ncore = 1\n");
        assert!(ks.contains(&"pipeline.threading".to_owned()), "{ks:?}");
        let split = StageSettings {
            threading: ThreadingKind::Split,
            cores: PerStage {
                ingress: Some(0),
                risk: Some(1),
                journal: Some(1),
                egress: Some(1),
            },
            ..StageSettings::default()
        };
        let mut p = Problems::default();
        check_stages(&mut p, &STAGE_FLAG_KEYS, &split, false);
        assert!(
            find(
                &p.0,
                "--threading",
                "split runs ingress and risk on one thread"
            ),
            "{:?}",
            p.0
        );
    }

    /// `risk.protocol` (issue 14): binary by default; json only with a remote service; a bad
    /// value named by its key. The flag goes through the same check (`check_risk_protocol`).
    #[test]
    fn risk_protocol_key() {
        let base = "[ingress]\nbind=\"tcp://127.0.0.1:1\"\n[risk]\n";
        let c = ServiceConfig::from_toml_str(base, "t").unwrap();
        assert_eq!(c.risk.protocol, RiskProtocol::Binary);
        let c = ServiceConfig::from_toml_str(
            &format!(
                "{base}mode=\"remote\"\nendpoints=[\"tcp://127.0.0.1:2\"]\nprotocol=\"json\"\n"
            ),
            "t",
        )
        .unwrap();
        assert_eq!(c.risk.protocol, RiskProtocol::Json);
        assert_eq!(
            keys(&format!("{base}protocol=\"json\"\n")),
            vec!["risk.protocol"]
        );
        assert_eq!(
            keys(&format!("{base}protocol=\"xml\"\n")),
            vec!["risk.protocol"]
        );
        let mut p = Problems::default();
        let inline = RiskSettings {
            target: RiskTarget::Inline { limits_file: None },
            timeout: Duration::from_millis(100),
            protocol: RiskProtocol::Json,
        };
        check_risk_protocol(&mut p, &STAGE_FLAG_KEYS, &inline);
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].key, "--risk-protocol");
    }

    /// `journal.pub_format` and `connect:` endpoints (issue 14).
    #[test]
    fn audit_feed_format_and_connect_endpoints() {
        let base = "[ingress]\nbind=\"tcp://127.0.0.1:1\"\n[journal]\n";
        let c = ServiceConfig::from_toml_str(
            &format!("{base}pub_endpoint=\"connect:tcp://10.0.0.9:5570\"\npub_format=\"json\"\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.journal.pub_format, audit::FeedFormat::Json);
        assert_eq!(
            c.journal.pub_endpoint.as_deref(),
            Some("connect:tcp://10.0.0.9:5570")
        );
        assert_eq!(
            keys(&format!(
                "{base}pub_endpoint=\"tcp://127.0.0.1:2\"\npub_format=\"xml\"\n"
            )),
            vec!["journal.pub_format"]
        );
        assert_eq!(
            keys(&format!("{base}pub_endpoint=\"connect:nowhere\"\n")),
            vec!["journal.pub_endpoint"]
        );
        assert_eq!(
            keys(&format!(
                "{base}pub_endpoint=\"tcp://127.0.0.1:2\"\njson_pub_endpoint=\"tcp://127.0.0.1:3\"\npub_format=\"json\"\n"
            )),
            vec!["journal.json_pub_endpoint"]
        );
    }
}
