//! Endpoint policy and ZeroMQ authentication for every socket of the pipeline that faces a network.
//!
//! The rule: an endpoint that is not `inproc://`, `ipc://` or a loopback TCP address is *remote*,
//! and a server socket bound there must authenticate its peers through ZeroMQ's ZAP protocol
//! (RFC 27): an address allow-list, PLAIN credentials from a file, CURVE where the linked libzmq
//! supports it. Binding a remote endpoint with none of these is refused unless the operator says
//! `--insecure`.
//!
//! ```no_run
//! # fn main() -> Result<(), zauth::AuthError> {
//! let ctx = zmq::Context::new();
//! let policy = zauth::ServerAuth {
//!     allow: vec!["10.0.0.0/8".parse().expect("a network")],
//!     ..zauth::ServerAuth::default()
//! };
//! let _zap = zauth::ZapHandler::start(&ctx, &policy)?; // one per context, before any bind
//! let rep = ctx.socket(zmq::REP).expect("socket");
//! zauth::bind(&ctx, &rep, "tcp://0.0.0.0:5555", &policy)?;
//! # Ok(()) }
//! ```
//!
//! PLAIN sends the password in clear text: it authenticates, it does not encrypt. CURVE
//! (CurveZMQ) encrypts and authenticates: the workspace builds libzmq against a libsodium
//! compiled from source (`vendor/zmq-sys`, see `docs/security.md`), so [`curve_available`] is
//! true in the default build. A server socket takes its key pair from [`ServerAuth::curve_key`]
//! and, with [`ServerAuth::curve_clients`], lets in only the listed client public keys; a client
//! sets [`ClientAuth::curve`] (the server's public key and its own pair).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod curve;
pub use curve::{
    check_secret_location, git_work_tree, key_pair_paths, read_key_pair, read_public_key,
    read_public_keys, write_key_pair, CurveClient, CurveKeyPair,
};

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use ipnet::IpNet;

/// The in-process endpoint where libzmq looks for the ZAP handler of a context (RFC 27).
pub const ZAP_ENDPOINT: &str = "inproc://zeromq.zap.01";
/// The ZAP domain every authenticated server socket of this project uses.
pub const ZAP_DOMAIN: &str = "titanic";
/// How often the ZAP handler thread looks at its stop flag.
const ZAP_POLL_MS: i64 = 100;
/// Longest credentials file we read: a bound on memory taken from outside input.
const CREDENTIALS_FILE_MAX_BYTES: u64 = 1 << 20;

/// Why an endpoint or an authentication setting was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The endpoint text is not `transport://address`.
    #[error("endpoint {0:?} is not of the form tcp://HOST:PORT, ipc://PATH or inproc://NAME")]
    BadEndpoint(String),
    /// A remote endpoint would be bound without any authentication.
    #[error(
        "refusing to bind {0}: it is not loopback or ipc, and no authentication is configured \
         (give an address allow-list, PLAIN credentials or a CURVE client-key list, or pass \
         --insecure to accept anyone)"
    )]
    InsecureRemote(String),
    /// The linked libzmq has no CURVE.
    #[error("CURVE is not available: the linked libzmq was built without libsodium")]
    CurveUnavailable,
    /// PLAIN and CURVE asked of one socket: a socket has one security mechanism.
    #[error(
        "PLAIN credentials and CURVE are both configured: a socket uses one mechanism (CURVE \
         encrypts and authenticates by key; drop the PLAIN credentials)"
    )]
    PlainAndCurve,
    /// A client-key list without the server's own key pair.
    #[error("a CURVE client-key list needs the server's CURVE key pair too")]
    CurveClientsWithoutKey,
    /// A key file could not be read or written.
    #[error("key file {path}: {source}")]
    KeyIo {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A secret key file is readable by others.
    #[error(
        "key file {path} has mode {mode:o}: it must not be readable by group or others (chmod 600)"
    )]
    KeyMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line of a key file is not a z85 key (the line itself is never quoted).
    #[error("key file {path}, line {line}: expected `public-key = Z85`, `secret-key = Z85` or a bare 40-character z85 key")]
    KeySyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A key file lacks what it must hold.
    #[error("key file {path} must hold {what}")]
    KeyMissing {
        /// The file.
        path: PathBuf,
        /// What it must hold.
        what: &'static str,
    },
    /// A secret key would be written inside a git work tree.
    #[error(
        "refusing to write the secret key {path} inside the git work tree {root}: one `git add \
         -A` would commit it. Write it outside the repository (e.g. --out ~/.titanic/NAME), or \
         pass --in-work-tree if you really mean it"
    )]
    SecretInWorkTree {
        /// The secret key file.
        path: PathBuf,
        /// The work tree's root.
        root: PathBuf,
    },
    /// The credentials file could not be read.
    #[error("credentials file {path}: {source}")]
    CredentialsIo {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The credentials file is readable by others.
    #[error("credentials file {path} has mode {mode:o}: it must not be readable by group or others (chmod 600)")]
    CredentialsMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line of the credentials file is not `user:password`.
    #[error("credentials file {path}, line {line}: expected USER:PASSWORD")]
    CredentialsSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// Authentication is configured but no ZAP handler runs on the socket's context: libzmq
    /// would let every peer in.
    #[error("refusing to bind {0} with authentication: no ZAP handler runs on this ZeroMQ context (start zauth::ZapHandler first)")]
    NoZapHandler(String),
    /// A ZeroMQ call failed.
    #[error("{what}: {source}")]
    Zmq {
        /// What was being done.
        what: &'static str,
        /// The ZeroMQ error.
        source: zmq::Error,
    },
}

/// An `--allow` entry that is neither a network nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a network (CIDR, e.g. 10.1.0.0/16 or ::1/128) or an address (e.g. 127.0.0.1)"
)]
pub struct AllowError(pub String);

/// Parses one allow-list entry, the one parser of every `--allow` flag and of the engine's
/// `security.allow`: a network in CIDR notation (`10.1.0.0/16`, `::1/128`) or a plain address,
/// which means that one host (`127.0.0.1` = `127.0.0.1/32`, `::1` = `::1/128`). Surrounding
/// whitespace is ignored.
pub fn parse_allow(text: &str) -> Result<IpNet, AllowError> {
    let t = text.trim();
    t.parse::<IpNet>()
        .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| AllowError(text.to_owned()))
}

fn zerr(what: &'static str) -> impl FnOnce(zmq::Error) -> AuthError {
    move |source| AuthError::Zmq { what, source }
}

/// Where an endpoint leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `inproc://`: inside this process.
    InProcess,
    /// `ipc://`: a Unix socket on this host (file permissions protect it).
    Ipc,
    /// TCP on a loopback address (127.0.0.0/8, ::1, `localhost`).
    Loopback,
    /// Anything else: reachable from other hosts.
    Remote,
}

/// Classifies an endpoint. Host names other than `localhost` count as remote.
pub fn scope(endpoint: &str) -> Result<Scope, AuthError> {
    let bad = || AuthError::BadEndpoint(endpoint.to_owned());
    let (transport, rest) = endpoint.split_once("://").ok_or_else(bad)?;
    match transport {
        "inproc" => Ok(Scope::InProcess),
        "ipc" => Ok(Scope::Ipc),
        "tcp" => {
            // `tcp://source;dest` connects from `source`: the destination decides the scope.
            let dest = rest.rsplit(';').next().ok_or_else(bad)?;
            let (host, port) = dest.rsplit_once(':').ok_or_else(bad)?;
            if port.is_empty() {
                return Err(bad());
            }
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.eq_ignore_ascii_case("localhost") {
                return Ok(Scope::Loopback);
            }
            match host.parse::<IpAddr>() {
                Ok(ip) if ip.is_loopback() => Ok(Scope::Loopback),
                Ok(_) => Ok(Scope::Remote),
                // `*`, an interface name or a host name: reachable from elsewhere.
                Err(_) => Ok(Scope::Remote),
            }
        }
        _ => Err(bad()),
    }
}

/// How a server socket authenticates its peers.
#[derive(Clone, Default)]
pub struct ServerAuth {
    /// Peer addresses (networks) allowed to connect; empty means any address.
    pub allow: Vec<IpNet>,
    /// A file of `USER:PASSWORD` lines (mode 0600); when set, peers must log in with PLAIN.
    pub plain_credentials: Option<PathBuf>,
    /// The server's CURVE key pair file (`audit curve-keygen`, mode 0600); when set, the socket
    /// is a CURVE server: every peer must speak CURVE with this server's public key, and the
    /// link is encrypted.
    pub curve_key: Option<PathBuf>,
    /// A file of client public keys (z85, one per line); when set, only those clients get in
    /// (checked by the ZAP handler). Needs `curve_key`.
    pub curve_clients: Option<PathBuf>,
    /// Accept unauthenticated peers on remote endpoints (the operator's explicit choice).
    pub insecure: bool,
}

impl fmt::Debug for ServerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerAuth")
            .field("allow", &self.allow)
            .field("plain_credentials", &self.plain_credentials)
            .field("curve_key", &self.curve_key)
            .field("curve_clients", &self.curve_clients)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl ServerAuth {
    /// Whether any authentication is configured (so a ZAP handler must run). A CURVE key pair
    /// alone encrypts but lets in any client that knows the server's public key: it counts
    /// only with a client-key list (or an address allow-list or PLAIN).
    pub fn is_configured(&self) -> bool {
        !self.allow.is_empty() || self.plain_credentials.is_some() || self.curve_clients.is_some()
    }

    /// The settings that cannot go together: PLAIN with CURVE, a client list without a key
    /// pair, CURVE without a libzmq that has it.
    pub fn validate(&self) -> Result<(), AuthError> {
        if self.curve_clients.is_some() && self.curve_key.is_none() {
            return Err(AuthError::CurveClientsWithoutKey);
        }
        if self.curve_key.is_some() {
            if self.plain_credentials.is_some() {
                return Err(AuthError::PlainAndCurve);
            }
            if !curve_available() {
                return Err(AuthError::CurveUnavailable);
            }
        }
        Ok(())
    }
}

/// Whether a ZAP handler is bound on `ctx` (probes by trying to bind its endpoint).
pub fn handler_running(ctx: &zmq::Context) -> Result<bool, AuthError> {
    let probe = ctx
        .socket(zmq::REP)
        .map_err(zerr("creating the ZAP probe"))?;
    probe.set_linger(0).map_err(zerr("setting probe linger"))?;
    match probe.bind(ZAP_ENDPOINT) {
        Err(zmq::Error::EADDRINUSE) => Ok(true),
        Ok(()) => {
            probe
                .unbind(ZAP_ENDPOINT)
                .map_err(zerr("unbinding the ZAP probe"))?;
            Ok(false)
        }
        Err(e) => Err(AuthError::Zmq {
            what: "probing for a ZAP handler",
            source: e,
        }),
    }
}

/// What `endpoint` needs before libzmq can bind it: the endpoint to hand libzmq, and whether
/// the socket needs `ZMQ_IPV6`. libzmq's TCP bind resolves no host names (`localhost` fails with
/// "No such device": it is taken for an interface name), and it refuses an IPv6 address such as
/// `[::1]` unless `ZMQ_IPV6` is set on the socket; so `localhost` binds `127.0.0.1`, and a
/// bracketed IPv6 host turns `ZMQ_IPV6` on.
pub fn bind_target(endpoint: &str) -> (String, bool) {
    let Some(rest) = endpoint.strip_prefix("tcp://") else {
        return (endpoint.to_owned(), false);
    };
    // `tcp://source;dest` is a connect form; a bind has one address.
    if rest.contains(';') {
        return (endpoint.to_owned(), false);
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return (endpoint.to_owned(), false);
    };
    if host.eq_ignore_ascii_case("localhost") {
        return (format!("tcp://127.0.0.1:{port}"), false);
    }
    let ipv6 = host.starts_with('[') && host.ends_with(']');
    (endpoint.to_owned(), ipv6)
}

/// Binds `socket` (created on `ctx`) to `endpoint` under `policy` and returns the bound
/// endpoint (with the port chosen for `tcp://host:*`).
///
/// `tcp://localhost:PORT` binds `tcp://127.0.0.1:PORT`, and a bracketed IPv6 host
/// (`tcp://[::1]:PORT`) sets `ZMQ_IPV6` on the socket first ([`bind_target`]).
///
/// Refuses an unauthenticated remote endpoint unless `policy.insecure`; when authentication is
/// configured, turns on ZAP (and PLAIN) and refuses to bind unless a [`ZapHandler`] runs on
/// `ctx` — without one, libzmq lets every peer in.
pub fn bind(
    ctx: &zmq::Context,
    socket: &zmq::Socket,
    endpoint: &str,
    policy: &ServerAuth,
) -> Result<String, AuthError> {
    let scope = scope(endpoint)?;
    policy.validate()?;
    if scope == Scope::Remote && !policy.is_configured() && !policy.insecure {
        return Err(AuthError::InsecureRemote(endpoint.to_owned()));
    }
    if let (Some(path), true) = (&policy.curve_key, scope != Scope::InProcess) {
        let key = read_key_pair(path)?;
        // Once per socket (a socket may bind several endpoints).
        if !socket
            .is_curve_server()
            .map_err(zerr("reading ZMQ_CURVE_SERVER"))?
        {
            widen_for_curve(socket)?;
        }
        socket
            .set_curve_server(true)
            .map_err(zerr("enabling the CURVE server"))?;
        socket
            .set_curve_secretkey(key.secret())
            .map_err(zerr("setting the CURVE secret key"))?;
    }
    if policy.is_configured() && scope != Scope::InProcess {
        if !handler_running(ctx)? {
            return Err(AuthError::NoZapHandler(endpoint.to_owned()));
        }
        socket
            .set_zap_domain(ZAP_DOMAIN)
            .map_err(zerr("setting the ZAP domain"))?;
        if policy.plain_credentials.is_some() {
            socket
                .set_plain_server(true)
                .map_err(zerr("enabling PLAIN"))?;
        }
    }
    let (target, ipv6) = bind_target(endpoint);
    if ipv6 {
        socket
            .set_ipv6(true)
            .map_err(zerr("enabling IPv6 (ZMQ_IPV6)"))?;
    }
    socket.bind(&target).map_err(zerr("binding"))?;
    Ok(socket
        .get_last_endpoint()
        .map_err(zerr("reading the bound endpoint"))?
        .unwrap_or(target))
}

/// Bytes a CURVE `MESSAGE` command adds to each frame on the wire (libzmq 4.3: the command name
/// and its size byte, an 8-byte nonce, a 16-byte MAC and the flags byte: 34), rounded up.
pub const CURVE_MESSAGE_OVERHEAD_BYTES: i64 = 64;
/// The largest CURVE handshake command (`INITIATE`: cookie, nonce, vouch, client key and the
/// socket's metadata, about 300 bytes), rounded up generously.
pub const CURVE_HANDSHAKE_BYTES_MAX: i64 = 1024;

/// libzmq applies `ZMQ_MAXMSGSIZE` to the frames on the wire, which under CURVE are the
/// encrypted commands: the handshake's (up to [`CURVE_HANDSHAKE_BYTES_MAX`]) and each
/// message's box ([`CURVE_MESSAGE_OVERHEAD_BYTES`] more than the plaintext). A socket with a
/// limit for its plaintext gets the limit raised by that much (and to at least the handshake),
/// so a 256-byte request limit does not refuse every CURVE handshake; the programs still check
/// their own limits on what they receive. No limit (-1) stays none.
fn widen_for_curve(socket: &zmq::Socket) -> Result<(), AuthError> {
    let limit = socket
        .get_maxmsgsize()
        .map_err(zerr("reading ZMQ_MAXMSGSIZE"))?;
    if limit >= 0 {
        socket
            .set_maxmsgsize(
                limit
                    .saturating_add(CURVE_MESSAGE_OVERHEAD_BYTES)
                    .max(CURVE_HANDSHAKE_BYTES_MAX),
            )
            .map_err(zerr("raising ZMQ_MAXMSGSIZE for CURVE"))?;
    }
    Ok(())
}

/// Whether the linked libzmq supports CURVE encryption (true for the workspace's build of
/// libzmq with libsodium, `vendor/zmq-sys`).
pub fn curve_available() -> bool {
    zmq::has("curve").unwrap_or(false)
}

/// Client-side credentials: PLAIN for a server that asks for it, or CURVE (one mechanism per
/// socket).
#[derive(Clone, Default)]
pub struct ClientAuth {
    /// `(user, password)`.
    pub plain: Option<(String, String)>,
    /// The server's CURVE public key and this client's key pair.
    pub curve: Option<CurveClient>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a password.
        f.debug_struct("ClientAuth")
            .field("plain_user", &self.plain.as_ref().map(|(u, _)| u))
            .field("curve", &self.curve)
            .finish()
    }
}

impl ClientAuth {
    /// Reads `USER:PASSWORD` from the first line of a file (mode 0600).
    pub fn from_file(path: &Path) -> Result<ClientAuth, AuthError> {
        let creds = read_credentials(path)?;
        let first = creds
            .into_iter()
            .next()
            .ok_or(AuthError::CredentialsSyntax {
                path: path.to_owned(),
                line: 1,
            })?;
        Ok(ClientAuth {
            plain: Some(first),
            curve: None,
        })
    }

    /// The same credentials with CURVE: the server's public key from `server_key` (a
    /// `.curve.pub` file) and this client's key pair from `key` (a fresh pair without one).
    pub fn with_curve(
        self,
        server_key: &Path,
        key: Option<&Path>,
    ) -> Result<ClientAuth, AuthError> {
        if self.plain.is_some() {
            return Err(AuthError::PlainAndCurve);
        }
        Ok(ClientAuth {
            curve: Some(CurveClient::from_files(server_key, key)?),
            ..self
        })
    }

    /// Sets the credentials on a client socket (before `connect`).
    pub fn apply(&self, socket: &zmq::Socket) -> Result<(), AuthError> {
        if let Some(curve) = &self.curve {
            if self.plain.is_some() {
                return Err(AuthError::PlainAndCurve);
            }
            curve.apply(socket)?;
        }
        if let Some((user, pass)) = &self.plain {
            socket
                .set_plain_username(Some(user))
                .map_err(zerr("setting the PLAIN user"))?;
            socket
                .set_plain_password(Some(pass))
                .map_err(zerr("setting the PLAIN password"))?;
        }
        Ok(())
    }
}

/// Reads `USER:PASSWORD` lines (`#` comments and blank lines ignored) from a file that only its
/// owner may read.
pub fn read_credentials(path: &Path) -> Result<Vec<(String, String)>, AuthError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let io = |source| AuthError::CredentialsIo {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(AuthError::CredentialsMode {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    file.take(CREDENTIALS_FILE_MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(io)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                out.push((u.to_owned(), p.to_owned()));
            }
            _ => {
                return Err(AuthError::CredentialsSyntax {
                    path: path.to_owned(),
                    line: i + 1,
                })
            }
        }
    }
    Ok(out)
}

/// Counters of the ZAP handler, readable while it runs.
#[derive(Debug, Default)]
pub struct ZapStats {
    /// Peers let in.
    pub accepted: AtomicU64,
    /// Peers refused (address not allowed, bad credentials, wrong mechanism).
    pub refused: AtomicU64,
}

/// The ZAP handler of one ZeroMQ context: a thread answering libzmq's authentication requests.
/// Stops (and joins) when dropped.
#[derive(Debug)]
pub struct ZapHandler {
    stop: Arc<AtomicBool>,
    stats: Arc<ZapStats>,
    thread: Option<JoinHandle<()>>,
}

/// The decision logic, apart from the socket, so that it is testable on its own.
#[derive(Debug, Clone)]
struct Policy {
    allow: Vec<IpNet>,
    users: Option<HashMap<String, String>>,
    /// Client public keys let in over CURVE (`None`: any key the handshake accepted).
    curve_keys: Option<Vec<[u8; 32]>>,
}

impl Policy {
    /// `Ok(user_id)` to let the peer in, `Err(reason)` to refuse it.
    fn decide(
        &self,
        address: &str,
        mechanism: &str,
        credentials: &[Vec<u8>],
    ) -> Result<String, &'static str> {
        if !self.allow.is_empty() {
            let ip = parse_peer_ip(address).ok_or("unreadable peer address")?;
            if !self.allow.iter().any(|net| net.contains(&ip)) {
                return Err("address not allowed");
            }
        }
        if let Some(keys) = &self.curve_keys {
            if mechanism != "CURVE" || credentials.len() != 1 {
                return Err("CURVE required");
            }
            if !keys.iter().any(|k| constant_time_eq(k, &credentials[0])) {
                return Err("CURVE client key not on the list");
            }
            // The user id: the client key in z85 (32 bytes encode without fail).
            return Ok(zmq::z85_encode(&credentials[0]).unwrap_or_default());
        }
        match &self.users {
            None => Ok(String::new()),
            Some(users) => {
                if mechanism != "PLAIN" || credentials.len() != 2 {
                    return Err("PLAIN credentials required");
                }
                let user = String::from_utf8_lossy(&credentials[0]);
                match users.get(user.as_ref()) {
                    Some(pass) if constant_time_eq(pass.as_bytes(), &credentials[1]) => {
                        Ok(user.into_owned())
                    }
                    _ => Err("invalid credentials"),
                }
            }
        }
    }
}

fn parse_peer_ip(address: &str) -> Option<IpAddr> {
    if let Ok(ip) = address.parse::<IpAddr>() {
        return Some(ip);
    }
    // Some transports report `ip:port`.
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .map(|a| a.ip())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ZapHandler {
    /// Starts the handler for `ctx` when `policy` configures any authentication (returns `None`
    /// otherwise). Must run before any socket of `ctx` binds with authentication; one per context.
    pub fn start(ctx: &zmq::Context, policy: &ServerAuth) -> Result<Option<ZapHandler>, AuthError> {
        if !policy.is_configured() {
            return Ok(None);
        }
        policy.validate()?;
        let users = match &policy.plain_credentials {
            Some(path) => Some(read_credentials(path)?.into_iter().collect()),
            None => None,
        };
        let curve_keys = match &policy.curve_clients {
            Some(path) => Some(read_public_keys(path)?),
            None => None,
        };
        let rules = Policy {
            allow: policy.allow.clone(),
            users,
            curve_keys,
        };
        let socket = ctx
            .socket(zmq::REP)
            .map_err(zerr("creating the ZAP socket"))?;
        socket.set_linger(0).map_err(zerr("setting ZAP linger"))?;
        socket
            .bind(ZAP_ENDPOINT)
            .map_err(zerr("binding the ZAP handler (one per context)"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ZapStats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("zap".into())
            .spawn(move || serve(socket, rules, &stop2, &stats2))
            .map_err(|e| AuthError::CredentialsIo {
                path: PathBuf::from("<zap thread>"),
                source: e,
            })?;
        Ok(Some(ZapHandler {
            stop,
            stats,
            thread: Some(thread),
        }))
    }

    /// Accept / refuse counters.
    pub fn stats(&self) -> &ZapStats {
        &self.stats
    }

    /// The accept / refuse counters, shared (a metrics endpoint reads them while the handler
    /// runs).
    pub fn shared_stats(&self) -> Arc<ZapStats> {
        Arc::clone(&self.stats)
    }
}

impl Drop for ZapHandler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(socket: zmq::Socket, rules: Policy, stop: &AtomicBool, stats: &ZapStats) {
    while !stop.load(Ordering::Relaxed) {
        match socket.poll(zmq::POLLIN, ZAP_POLL_MS) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(zmq::Error::ETERM) => return,
            Err(_) => continue,
        }
        let frames = match socket.recv_multipart(0) {
            Ok(f) => f,
            Err(zmq::Error::ETERM) => return,
            Err(_) => continue,
        };
        // RFC 27 request: version, request id, domain, address, identity, mechanism, credentials…
        let (status, text, user, request_id) = if frames.len() < 6 || frames[0] != b"1.0" {
            ("500", "malformed ZAP request", String::new(), Vec::new())
        } else {
            let address = String::from_utf8_lossy(&frames[3]);
            let mechanism = String::from_utf8_lossy(&frames[5]);
            match rules.decide(&address, &mechanism, &frames[6..]) {
                Ok(user) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    ("200", "OK", user, frames[1].clone())
                }
                Err(why) => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(peer = %address, mechanism = %mechanism, "refused connection: {why}");
                    ("400", why, String::new(), frames[1].clone())
                }
            }
        };
        let reply: [&[u8]; 6] = [
            b"1.0",
            &request_id,
            status.as_bytes(),
            text.as_bytes(),
            user.as_bytes(),
            b"",
        ];
        if let Err(zmq::Error::ETERM) = socket.send_multipart(reply, 0) {
            return;
        }
    }
}

/// `ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH` (libzmq 4.3 `zmq.h`): the value of a
/// `HANDSHAKE_FAILED_PROTOCOL` event when the peers use different security mechanisms (a
/// client without credentials talking to a PLAIN server).
pub const PROTOCOL_ERROR_MECHANISM_MISMATCH: u32 = 0x1100_0002;

/// How a client socket's security handshake with a server ended, as its monitor reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The server let the client in.
    Succeeded,
    /// The server's ZAP handler refused the client (ZAP status code, e.g. 400): wrong or
    /// missing credentials, or an address outside the server's allow-list.
    Refused {
        /// ZAP status code.
        status: u32,
    },
    /// Client and server use different mechanisms (e.g. the server wants PLAIN, the client
    /// sends no credentials).
    MechanismMismatch,
    /// The server closed the connection during the handshake without saying why. libzmq
    /// reports a mechanism mismatch this way when the server notices it first (a race: about
    /// half the attempts of a client without credentials to a PLAIN server end like this, the
    /// others as [`Handshake::MechanismMismatch`]).
    Closed,
}

impl fmt::Display for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handshake::Succeeded => f.write_str("handshake succeeded"),
            Handshake::Refused { status } => write!(
                f,
                "refused the connection (ZAP status {status}): wrong or missing credentials, \
                 this address is not in the server's allow-list, or this CURVE client key is \
                 not on the server's client list"
            ),
            Handshake::MechanismMismatch => f.write_str(
                "security mechanism mismatch: the server requires credentials (PLAIN) or CURVE \
                 and none were given, or the other way round",
            ),
            Handshake::Closed => f.write_str(
                "closed the connection during the security handshake: it probably requires \
                 credentials (PLAIN) or CURVE and none were given, or the other way round, or \
                 the CURVE server key given is not this server's",
            ),
        }
    }
}

/// The handshake events of one client socket. libzmq on its own only retries a refused
/// connection, silently; this tells a refusal from a server that is merely absent.
pub struct HandshakeWatch {
    monitor: zmq::Socket,
}

impl fmt::Debug for HandshakeWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandshakeWatch").finish_non_exhaustive()
    }
}

impl HandshakeWatch {
    /// Starts monitoring `socket` (created on `ctx`); call before it connects.
    pub fn start(ctx: &zmq::Context, socket: &zmq::Socket) -> Result<HandshakeWatch, AuthError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "inproc://zauth-handshake-watch-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let events = i32::from(zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw())
            | i32::from(zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw())
            | i32::from(zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw())
            | i32::from(zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw());
        socket
            .monitor(&name, events)
            .map_err(zerr("starting the socket monitor"))?;
        let monitor = ctx
            .socket(zmq::PAIR)
            .map_err(zerr("creating the monitor socket"))?;
        monitor
            .set_linger(0)
            .map_err(zerr("setting monitor linger"))?;
        monitor
            .connect(&name)
            .map_err(zerr("connecting the monitor socket"))?;
        Ok(HandshakeWatch { monitor })
    }

    /// The monitor socket, for a caller that polls it beside the watched socket and then
    /// reads the results with `next(0)`.
    pub fn socket(&self) -> &zmq::Socket {
        &self.monitor
    }

    /// Waits up to `timeout_ms` (0: do not wait, -1: forever) for the next handshake result;
    /// `None` if there was none by then.
    pub fn next(&self, timeout_ms: i64) -> Result<Option<Handshake>, AuthError> {
        let deadline = (timeout_ms >= 0).then(|| {
            std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms as u64)
        });
        loop {
            let wait = match deadline {
                None => -1,
                Some(d) => d
                    .saturating_duration_since(std::time::Instant::now())
                    .as_millis() as i64,
            };
            match self.monitor.poll(zmq::POLLIN, wait) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    return Err(AuthError::Zmq {
                        what: "polling the monitor",
                        source: e,
                    })
                }
            }
            let frames = match self.monitor.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(zmq::Error::EAGAIN | zmq::Error::EINTR) => continue,
                Err(e) => {
                    return Err(AuthError::Zmq {
                        what: "reading the monitor",
                        source: e,
                    })
                }
            };
            // Event frame: u16 event id, u32 value (native byte order); then the endpoint.
            let Some(first) = frames.first().filter(|f| f.len() >= 6) else {
                continue;
            };
            let event = u16::from_ne_bytes([first[0], first[1]]);
            let value = u32::from_ne_bytes([first[2], first[3], first[4], first[5]]);
            if event == zmq::SocketEvent::HANDSHAKE_SUCCEEDED.to_raw() {
                return Ok(Some(Handshake::Succeeded));
            }
            if event == zmq::SocketEvent::HANDSHAKE_FAILED_AUTH.to_raw() {
                return Ok(Some(Handshake::Refused { status: value }));
            }
            if event == zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL.to_raw()
                && value == PROTOCOL_ERROR_MECHANISM_MISMATCH
            {
                return Ok(Some(Handshake::MechanismMismatch));
            }
            if event == zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL.to_raw() {
                return Ok(Some(Handshake::Closed));
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(None);
            }
        }
    }
}

/// Connects a throw-away client socket of `socket_type` with `auth` to `endpoint` and waits up
/// to `wait` for the handshake: `Some(result)`, or `None` when no server answered in time (it
/// may be down: that is for the caller's timeouts to handle). Sends nothing, so a REP server
/// sees only a connection come and go. [`Handshake::Closed`] is not final (libzmq retries and
/// the next attempt may say more): it is returned only if nothing else came by `wait`.
pub fn probe(
    ctx: &zmq::Context,
    endpoint: &str,
    socket_type: zmq::SocketType,
    auth: &ClientAuth,
    wait: std::time::Duration,
) -> Result<Option<Handshake>, AuthError> {
    let s = ctx
        .socket(socket_type)
        .map_err(zerr("creating the probe"))?;
    s.set_linger(0).map_err(zerr("setting probe linger"))?;
    auth.apply(&s)?;
    let watch = HandshakeWatch::start(ctx, &s)?;
    s.connect(endpoint).map_err(zerr("connecting the probe"))?;
    wait_decisive(&watch, wait)
}

/// Waits up to `wait` for a handshake result other than [`Handshake::Closed`]; returns
/// `Closed` at the deadline if that is all there was, `None` if there was nothing.
pub fn wait_decisive(
    watch: &HandshakeWatch,
    wait: std::time::Duration,
) -> Result<Option<Handshake>, AuthError> {
    let deadline = std::time::Instant::now() + wait;
    let mut closed = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match watch.next(i64::try_from(left.as_millis()).unwrap_or(i64::MAX))? {
            Some(Handshake::Closed) => closed = true,
            Some(decisive) => return Ok(Some(decisive)),
            None => return Ok(closed.then_some(Handshake::Closed)),
        }
        if std::time::Instant::now() >= deadline {
            return Ok(closed.then_some(Handshake::Closed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(scope("inproc://risk").ok(), Some(Scope::InProcess));
        assert_eq!(scope("ipc:///tmp/x").ok(), Some(Scope::Ipc));
        assert_eq!(scope("tcp://127.0.0.1:5555").ok(), Some(Scope::Loopback));
        assert_eq!(scope("tcp://127.9.9.9:5555").ok(), Some(Scope::Loopback));
        assert_eq!(scope("tcp://localhost:5555").ok(), Some(Scope::Loopback));
        assert_eq!(scope("tcp://[::1]:5555").ok(), Some(Scope::Loopback));
        assert_eq!(scope("tcp://*:5555").ok(), Some(Scope::Remote));
        assert_eq!(scope("tcp://0.0.0.0:5555").ok(), Some(Scope::Remote));
        assert_eq!(scope("tcp://10.1.2.3:5555").ok(), Some(Scope::Remote));
        assert_eq!(scope("tcp://eth0:5555").ok(), Some(Scope::Remote));
        assert_eq!(
            scope("tcp://127.0.0.2;10.0.0.1:5555").ok(),
            Some(Scope::Remote)
        );
        for bad in [
            "",
            "tcp:/x",
            "udp://1.2.3.4:5",
            "tcp://1.2.3.4",
            "tcp://1.2.3.4:",
        ] {
            assert!(scope(bad).is_err(), "{bad:?}");
        }
    }

    /// Issue 13 item 17: one parser for every `--allow`; a plain address is one host.
    #[test]
    fn allow_entries_are_networks_or_addresses() {
        let net = |s: &str| parse_allow(s).map(|n| n.to_string());
        assert_eq!(net("127.0.0.1").as_deref(), Ok("127.0.0.1/32"));
        assert_eq!(net(" 10.1.0.0/16 ").as_deref(), Ok("10.1.0.0/16"));
        assert_eq!(net("::1").as_deref(), Ok("::1/128"));
        assert_eq!(net("fd00::/8").as_deref(), Ok("fd00::/8"));
        for bad in ["", "localhost", "1.2.3.4/33", "1.2.3", "10.0.0.0/", "[::1]"] {
            let e = parse_allow(bad).expect_err("refused").to_string();
            assert!(
                e.contains("is not a network") && e.contains("an address"),
                "{e}"
            );
        }
        let host = parse_allow("127.0.0.1").expect("address");
        assert!(host.contains(&"127.0.0.1".parse::<IpAddr>().expect("ip")));
        assert!(!host.contains(&"127.0.0.2".parse::<IpAddr>().expect("ip")));
    }

    #[test]
    fn bind_targets() {
        assert_eq!(
            bind_target("tcp://localhost:5555"),
            ("tcp://127.0.0.1:5555".to_owned(), false)
        );
        assert_eq!(
            bind_target("tcp://LOCALHOST:*"),
            ("tcp://127.0.0.1:*".to_owned(), false)
        );
        assert_eq!(
            bind_target("tcp://[::1]:5555"),
            ("tcp://[::1]:5555".to_owned(), true)
        );
        for same in [
            "tcp://127.0.0.1:5555",
            "tcp://*:5555",
            "tcp://eth0:5555",
            "ipc:///tmp/localhost:1",
            "inproc://localhost:1",
        ] {
            assert_eq!(bind_target(same), (same.to_owned(), false));
        }
    }

    /// Round trip over a REQ/REP pair bound through [`bind`] at `endpoint`.
    fn echo_through(endpoint: &str) -> String {
        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).expect("socket");
        rep.set_linger(0).expect("linger");
        let bound = bind(&ctx, &rep, endpoint, &ServerAuth::default())
            .unwrap_or_else(|e| panic!("binding {endpoint}: {e}"));
        let req = ctx.socket(zmq::REQ).expect("socket");
        req.set_linger(0).expect("linger");
        req.set_ipv6(true).expect("ipv6");
        req.set_rcvtimeo(5_000).expect("timeout");
        rep.set_rcvtimeo(5_000).expect("timeout");
        req.connect(&bound).expect("connect");
        req.send("ping", 0).expect("send");
        assert_eq!(rep.recv_bytes(0).expect("request"), b"ping");
        rep.send("pong", 0).expect("send");
        assert_eq!(req.recv_bytes(0).expect("reply"), b"pong");
        bound
    }

    /// Issue 13 item 17: the loopback endpoints the docs list bind (they failed with "No such
    /// device": libzmq resolves no host name in a bind, and takes `[::1]` only with ZMQ_IPV6).
    #[test]
    fn localhost_and_ipv6_loopback_bind() {
        let bound = echo_through("tcp://localhost:*");
        assert!(bound.starts_with("tcp://127.0.0.1:"), "{bound}");
        let has_ipv6_loopback = fs::read_to_string("/proc/net/if_inet6")
            .map(|t| {
                t.lines()
                    .any(|l| l.starts_with("00000000000000000000000000000001"))
            })
            .unwrap_or(false);
        if !has_ipv6_loopback {
            eprintln!("SKIP localhost_and_ipv6_loopback_bind: no ::1 on this host");
            return;
        }
        let bound = echo_through("tcp://[::1]:*");
        assert!(bound.starts_with("tcp://[::1]:"), "{bound}");
    }

    #[test]
    fn remote_bind_without_auth_is_refused_unless_insecure() {
        let ctx = zmq::Context::new();
        let s = ctx.socket(zmq::REP).expect("socket");
        let err = bind(&ctx, &s, "tcp://0.0.0.0:*", &ServerAuth::default()).expect_err("refused");
        assert!(matches!(err, AuthError::InsecureRemote(_)), "{err}");
        assert!(err.to_string().contains("--insecure"));
        let open = ServerAuth {
            insecure: true,
            ..ServerAuth::default()
        };
        bind(&ctx, &s, "tcp://0.0.0.0:*", &open).expect("insecure bind is the operator's choice");
        // Loopback needs nothing.
        let s2 = ctx.socket(zmq::REP).expect("socket");
        bind(&ctx, &s2, "tcp://127.0.0.1:*", &ServerAuth::default()).expect("loopback");
    }

    #[test]
    fn authenticated_bind_needs_a_running_handler() {
        let ctx = zmq::Context::new();
        let policy = ServerAuth {
            allow: vec!["127.0.0.1/32".parse().expect("net")],
            ..ServerAuth::default()
        };
        let s = ctx.socket(zmq::REP).expect("socket");
        assert!(!handler_running(&ctx).expect("probe"));
        let err = bind(&ctx, &s, "tcp://127.0.0.1:*", &policy).expect_err("no handler");
        assert!(matches!(err, AuthError::NoZapHandler(_)), "{err}");
        let _zap = ZapHandler::start(&ctx, &policy)
            .expect("zap")
            .expect("configured");
        assert!(handler_running(&ctx).expect("probe"));
        let ep = bind(&ctx, &s, "tcp://127.0.0.1:*", &policy).expect("bind");
        assert!(ep.starts_with("tcp://127.0.0.1:"), "{ep}");
    }

    #[test]
    fn policy_decisions() {
        let users: HashMap<String, String> = [("ops".to_owned(), "s3cret".to_owned())].into();
        let p = Policy {
            allow: vec!["127.0.0.1/32".parse().expect("net")],
            users: Some(users),
            curve_keys: None,
        };
        let good = [b"ops".to_vec(), b"s3cret".to_vec()];
        assert_eq!(p.decide("127.0.0.1", "PLAIN", &good), Ok("ops".into()));
        assert!(p.decide("127.0.0.2", "PLAIN", &good).is_err());
        assert!(p
            .decide("127.0.0.1", "PLAIN", &[b"ops".to_vec(), b"wrong".to_vec()])
            .is_err());
        assert!(p.decide("127.0.0.1", "NULL", &[]).is_err());
        assert!(p.decide("garbage", "PLAIN", &good).is_err());
        let open = Policy {
            allow: vec![],
            users: None,
            curve_keys: None,
        };
        assert!(open.decide("8.8.8.8", "NULL", &[]).is_ok());
        let listed = [7u8; 32];
        let curve = Policy {
            allow: vec![],
            users: None,
            curve_keys: Some(vec![listed]),
        };
        assert!(curve
            .decide("10.0.0.1", "CURVE", &[listed.to_vec()])
            .is_ok());
        assert_eq!(
            curve.decide("10.0.0.1", "CURVE", &[[8u8; 32].to_vec()]),
            Err("CURVE client key not on the list")
        );
        assert_eq!(curve.decide("10.0.0.1", "NULL", &[]), Err("CURVE required"));
    }

    #[test]
    fn credentials_file_rules() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("creds");
        fs::write(&path, "# users\nops:s3cret\n\nrisk:pa:ss\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            read_credentials(&path),
            Err(AuthError::CredentialsMode { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let creds = read_credentials(&path).expect("reads");
        assert_eq!(
            creds,
            vec![
                ("ops".to_owned(), "s3cret".to_owned()),
                ("risk".to_owned(), "pa:ss".to_owned())
            ]
        );
        fs::write(&path, "ops\n").expect("write");
        let err = read_credentials(&path).expect_err("syntax");
        assert!(err.to_string().contains("line 1"), "{err}");
        let client = ClientAuth::from_file(&dir.path().join("missing"));
        assert!(matches!(client, Err(AuthError::CredentialsIo { .. })));
    }

    #[test]
    fn probes_tell_refusal_mismatch_success_and_silence_apart() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let users = dir.path().join("users");
        fs::write(&users, "engine:right\n").expect("write");
        fs::set_permissions(&users, fs::Permissions::from_mode(0o600)).expect("chmod");
        let ctx = zmq::Context::new();
        let policy = ServerAuth {
            plain_credentials: Some(users),
            ..ServerAuth::default()
        };
        let _zap = ZapHandler::start(&ctx, &policy).expect("zap");
        let rep = ctx.socket(zmq::REP).expect("socket");
        let ep = bind(&ctx, &rep, "tcp://127.0.0.1:*", &policy).expect("bind");
        let client = |u: &str, p: &str| ClientAuth {
            plain: Some((u.into(), p.into())),
            curve: None,
        };
        let wait = std::time::Duration::from_secs(5);
        let c2 = zmq::Context::new();
        assert_eq!(
            probe(&c2, &ep, zmq::REQ, &client("engine", "right"), wait).expect("probe"),
            Some(Handshake::Succeeded)
        );
        let refused = probe(&c2, &ep, zmq::REQ, &client("engine", "wrong"), wait).expect("probe");
        assert!(
            matches!(refused, Some(Handshake::Refused { status: 400 })),
            "{refused:?}"
        );
        assert!(refused
            .expect("some")
            .to_string()
            .contains("ZAP status 400"));
        // Without credentials: a mismatch, unless every attempt within the wait lost the race
        // (the server closed first); either way the message says credentials are required.
        let none = probe(&c2, &ep, zmq::REQ, &ClientAuth::default(), wait).expect("probe");
        assert!(
            matches!(none, Some(Handshake::MechanismMismatch | Handshake::Closed)),
            "{none:?}"
        );
        assert!(none
            .expect("some")
            .to_string()
            .contains("requires credentials"));
        // Nobody there: no answer within the wait, not an error. (An ipc path nobody binds:
        // a tcp port freed here could be taken at once by a parallel test's socket.)
        let free = format!("ipc://{}", dir.path().join("nobody").display());
        let silent = probe(
            &c2,
            &free,
            zmq::REQ,
            &client("engine", "right"),
            std::time::Duration::from_millis(200),
        );
        assert_eq!(silent.expect("probe"), None);
    }

    #[test]
    fn debug_never_prints_passwords() {
        let c = ClientAuth {
            plain: Some(("ops".into(), "s3cret".into())),
            curve: None,
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
