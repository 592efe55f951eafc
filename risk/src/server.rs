//! The REP server loop, shared by the `risk-server` binary and the embedded mode.
//!
//! One REP socket (bound to one or more endpoints) and one thread: poll with a short timeout
//! ([`SERVER_POLL_INTERVAL_MS`]), answer each request with exactly one reply, and between polls
//! look at the stop and reload flags (set by signal handlers or by [`EmbeddedRisk`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::checker::Checker;
use crate::config::Limits;
use crate::error::{check_endpoint, RiskError};
use crate::limits::{
    SERVER_FRAME_LEN_BYTES_HARD_MAX, SERVER_POLL_INTERVAL_MS, SERVER_SEND_TIMEOUT_MS,
};
use crate::protocol::request_len_bytes;
use crate::service::{Service, ServiceOptions, ServiceStats};

const _: () = assert!(
    request_len_bytes(crate::limits::MAX_BATCH_ORDERS_MAX) as i64
        <= SERVER_FRAME_LEN_BYTES_HARD_MAX
);

/// A bound REP socket and the service answering on it.
pub struct Server {
    socket: zmq::Socket,
    service: Service,
    msg: zmq::Message,
    reply: Vec<u8>,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("endpoints", &self.endpoints)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Creates a REP socket on `ctx` and binds it to every endpoint (`tcp://host:*` picks a
    /// free port; [`Server::endpoints`] tells which), under the default security policy:
    /// loopback, ipc and inproc only (see [`Server::bind_secure`]).
    pub fn bind(
        ctx: &zmq::Context,
        endpoints: &[String],
        service: Service,
    ) -> Result<Server, RiskError> {
        Server::bind_secure(ctx, endpoints, service, &zauth::ServerAuth::default())
    }

    /// As [`Server::bind`], authenticating peers under `auth` (a [`zauth::ZapHandler`] must
    /// run on `ctx` when `auth` configures any authentication). A remote endpoint without
    /// authentication is refused unless `auth.insecure`.
    pub fn bind_secure(
        ctx: &zmq::Context,
        endpoints: &[String],
        service: Service,
        auth: &zauth::ServerAuth,
    ) -> Result<Server, RiskError> {
        if endpoints.is_empty() {
            return Err(RiskError::NoEndpoints);
        }
        let socket = ctx
            .socket(zmq::REP)
            .map_err(|e| RiskError::zmq("socket(REP)", e))?;
        socket
            .set_linger(0)
            .map_err(|e| RiskError::zmq("setsockopt(LINGER)", e))?;
        socket
            .set_sndtimeo(SERVER_SEND_TIMEOUT_MS)
            .map_err(|e| RiskError::zmq("setsockopt(SNDTIMEO)", e))?;
        socket
            .set_maxmsgsize(SERVER_FRAME_LEN_BYTES_HARD_MAX)
            .map_err(|e| RiskError::zmq("setsockopt(MAXMSGSIZE)", e))?;
        let mut bound = Vec::with_capacity(endpoints.len());
        for ep in endpoints {
            check_endpoint(ep)?;
            let last = zauth::bind(ctx, &socket, ep, auth).map_err(|e| match e {
                zauth::AuthError::Zmq { source, .. } => {
                    RiskError::zmq(format!("bind {ep}"), source)
                }
                other => RiskError::Auth(other),
            })?;
            bound.push(if last.is_empty() { ep.clone() } else { last });
        }
        let reply = Vec::with_capacity(service.reply_capacity_bytes());
        Ok(Server {
            socket,
            service,
            msg: zmq::Message::new(),
            reply,
            endpoints: bound,
        })
    }

    /// The endpoints actually bound (wildcard ports resolved).
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The service.
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// The service, mutably.
    pub fn service_mut(&mut self) -> &mut Service {
        &mut self.service
    }

    /// Waits up to `timeout_ms` for one request and answers it. Returns whether one was
    /// answered. Interrupted waits (signals) return `Ok(false)`.
    pub fn serve_once(&mut self, timeout_ms: i64) -> Result<bool, RiskError> {
        match self.socket.poll(zmq::POLLIN, timeout_ms) {
            Ok(0) | Err(zmq::Error::EINTR) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(RiskError::zmq("poll", e)),
        }
        match self.socket.recv(&mut self.msg, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => return Ok(false),
            Err(e) => return Err(RiskError::zmq("recv", e)),
        }
        if self.msg.get_more() {
            // Not part of the protocol: drain the other frames, then answer once.
            self.service.handle_multipart(&self.msg, &mut self.reply);
            let mut rest = zmq::Message::new();
            loop {
                match self.socket.recv(&mut rest, 0) {
                    Ok(()) if rest.get_more() => continue,
                    Ok(()) => break,
                    Err(zmq::Error::EINTR) => continue,
                    Err(e) => return Err(RiskError::zmq("recv", e)),
                }
            }
        } else {
            self.service.handle(&self.msg, &mut self.reply);
        }
        loop {
            match self.socket.send(&self.reply[..], 0) {
                Ok(()) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(e) => {
                    self.service.count_send_error();
                    tracing::warn!(error = %e, "risk reply could not be sent");
                    break;
                }
            }
        }
        Ok(true)
    }

    /// Serves until `stop` is set; reloads the limits file whenever `reload` is set (a failed
    /// reload is logged and the old limits stay).
    pub fn run(&mut self, stop: &AtomicBool, reload: &AtomicBool) -> Result<(), RiskError> {
        self.run_with(stop, reload, None)
    }

    fn run_with(
        &mut self,
        stop: &AtomicBool,
        reload: &AtomicBool,
        pending: Option<&PendingLimits>,
    ) -> Result<(), RiskError> {
        while !stop.load(Ordering::Acquire) {
            if reload.swap(false, Ordering::AcqRel) {
                match self.service.reload() {
                    Ok(()) => tracing::info!(
                        origin = %self.service.checker().limits().origin,
                        "limits reloaded"
                    ),
                    Err(e) => tracing::error!(
                        error = %crate::error::error_chain(&e),
                        "limits reload failed; the previous limits stay in force"
                    ),
                }
            }
            if let Some(p) = pending {
                if p.flag.swap(false, Ordering::AcqRel) {
                    let limits = match p.slot.lock() {
                        Ok(mut slot) => slot.take(),
                        Err(poisoned) => poisoned.into_inner().take(),
                    };
                    if let Some(l) = limits {
                        self.service.set_limits(l);
                    }
                }
            }
            // Drain what is waiting before looking at the flags again.
            let mut timeout = SERVER_POLL_INTERVAL_MS as i64;
            while self.serve_once(timeout)? {
                timeout = 0;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct PendingLimits {
    flag: AtomicBool,
    slot: Mutex<Option<Limits>>,
}

/// A risk server running in a thread of the caller's process, sharing its ZeroMQ context, so
/// that clients reach it over `inproc://`. Stopped (and joined) by [`EmbeddedRisk::stop`] or
/// when dropped.
#[derive(Debug)]
pub struct EmbeddedRisk {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    pending: Arc<PendingLimits>,
    handle: Option<JoinHandle<Result<ServiceStats, RiskError>>>,
    endpoints: Vec<String>,
}

/// Starts an embedded risk server bound to `endpoint` (typically `inproc://risk`) with fresh
/// state. The socket is bound before this returns, so clients may connect at once.
pub fn spawn_embedded(
    ctx: &zmq::Context,
    limits: Limits,
    endpoint: &str,
) -> Result<EmbeddedRisk, RiskError> {
    spawn_embedded_with(
        ctx,
        Checker::new(limits),
        &[endpoint.to_owned()],
        ServiceOptions::default(),
    )
}

/// Like [`spawn_embedded`], with a prepared checker (e.g. recovered from the journal with
/// [`crate::replay_journal`]), several endpoints and service options.
pub fn spawn_embedded_with(
    ctx: &zmq::Context,
    checker: Checker,
    endpoints: &[String],
    opts: ServiceOptions,
) -> Result<EmbeddedRisk, RiskError> {
    let mut server = Server::bind(ctx, endpoints, Service::new(checker, opts))?;
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    let pending = Arc::new(PendingLimits::default());
    let endpoints = server.endpoints().to_vec();
    let (s, r, p) = (stop.clone(), reload.clone(), pending.clone());
    let handle = std::thread::Builder::new()
        .name("risk-embedded".into())
        .spawn(move || {
            server.run_with(&s, &r, Some(&p))?;
            Ok(server.service().stats())
        })
        .map_err(RiskError::Spawn)?;
    Ok(EmbeddedRisk {
        stop,
        reload,
        pending,
        handle: Some(handle),
        endpoints,
    })
}

impl EmbeddedRisk {
    /// The endpoints the server is bound to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Hands new limits to the server; it installs them between requests, keeping all state.
    pub fn set_limits(&self, limits: Limits) {
        match self.pending.slot.lock() {
            Ok(mut slot) => *slot = Some(limits),
            Err(poisoned) => *poisoned.into_inner() = Some(limits),
        }
        self.pending.flag.store(true, Ordering::Release);
    }

    /// Asks the server to reload its limits file (only if it was started with one).
    pub fn request_reload(&self) {
        self.reload.store(true, Ordering::Release);
    }

    /// Stops the server thread and joins it. Returns its counters, or the error that ended it.
    pub fn shutdown(mut self) -> Result<ServiceStats, RiskError> {
        self.join()
    }

    /// Stops the server thread and joins it; an error that ended the thread is logged.
    pub fn stop(self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %crate::error::error_chain(&e), "embedded risk server failed");
        }
    }

    fn join(&mut self) -> Result<ServiceStats, RiskError> {
        self.stop.store(true, Ordering::Release);
        match self.handle.take() {
            None => Ok(ServiceStats::default()),
            Some(h) => h.join().map_err(|_| RiskError::ThreadPanicked)?,
        }
    }
}

impl Drop for EmbeddedRisk {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.join();
        }
    }
}
