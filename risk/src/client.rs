//! The REQ client the engine's risk stage uses: one request per batch, a hard time budget per
//! batch, Lazy Pirate recovery and round-robin failover.
//!
//! - One REQ message per batch ([`crate::protocol`]); the request buffer is allocated for
//!   `max_batch` orders at connect time, so a batch costs no allocation of ours (libzmq copies
//!   the frame into its own message).
//! - The send is non-blocking and the reply is awaited with `zmq_poll` against a deadline, so a
//!   call never waits longer than the timeout (plus the microseconds a socket reset takes).
//! - The same exchange is also available without blocking at all ([`RiskClient::start_batch`],
//!   [`RiskClient::poll_batch`], [`RiskClient::waiting`]): a caller with other work (the
//!   engine's shared duty cycle) sends the batch, does that work, and waits on the socket
//!   itself; the deadline and Lazy Pirate are the same, since [`RiskClient::check_batch`] is
//!   exactly that loop with a `zmq_poll` in between.
//! - On timeout every order of the batch gets [`Reason::RiskTimeout`], the socket is closed
//!   (LINGER 0, so the unanswered request is dropped) and a fresh one is connected to the next
//!   endpoint (round-robin; the same one if there is only one). A REQ socket cannot send again
//!   before it receives, so reopening is the only way on (the Lazy Pirate pattern).
//! - The batch is not retried: the server may have applied it before going silent, and a retry
//!   would apply it twice. Instead the client remembers the batch id (per endpoint, at most
//!   [`VOID_BATCH_IDS_MAX`]) and, on its next contact with that endpoint, first sends a *void*
//!   request naming it (same deadline as the batch that follows): the server undoes the batch
//!   if it applied it and nothing came after, and refuses it should it arrive later, so its
//!   state matches the engine's journal, where those orders are `risk-timeout` rejections
//!   (`docs/formats/risk-protocol.md`, "Void").
//! - Requests are protocol version 2 and carry a random session id (one per client), which
//!   makes (session, batch id) unique across the clients of one server.
//! - A reply must carry the batch id of the request, the same count, and the order ids in
//!   order; anything else (or an error reply) gives every order [`Reason::RiskError`]. A
//!   `too-large` reply is [`BatchOutcome::Refused`] instead: the batch bound of the server is
//!   below the client's, which no later batch would fix ([`RiskClient::refusal`] says why).
//! - [`RiskClient::hello`], before the first batch: the server tells its batch bound (the
//!   client lowers its own to fit: [`RiskClient::max_batch`]) and, for a client that resumes a
//!   journal, undoes the batches of the previous session that the journal does not hold
//!   (reconciliation, `docs/formats/risk-protocol.md`, "Hello").
//! - [`RiskClient::journal_point`]: the session and the newest batch whose verdicts came from
//!   the server, which the engine records with each decision so that a restart can name them
//!   in its hello.
//! - Every exchange the server may have applied without the client taking its verdicts is
//!   voided like a timeout: a socket reset after the batch was sent (a multi-part reply, a
//!   socket error while waiting), and a reply that cannot be read or does not match the
//!   request. Only an error reply echoing the batch id (the server saying it applied
//!   nothing: `malformed`, `too-large`, `voided`, ...) and a failure before the send are not.

use std::time::{Duration, Instant};

use orders::{Order, Reason};

use crate::error::{check_endpoint, RiskError};
use crate::limits::{MAX_BATCH_ORDERS_MAX, VOID_BATCH_IDS_MAX};
use crate::protocol::{
    decode_hello_result, decode_reply_header, decode_verdict, decode_void_result,
    encode_hello_request, encode_names_request, encode_request_v2, encode_void_request, reply_text,
    request_v2_len_bytes, void_request_len_bytes, HelloResult, JournalPoint, Status,
    HELLO_REQUEST_LEN_BYTES, NAMES_PER_REQUEST_MAX,
};
use crate::undo::VoidOutcome;

/// How a batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The server answered; `out` holds its verdicts.
    Replied,
    /// No reply within the timeout; `out` is all `RiskTimeout`; the socket was reset.
    TimedOut,
    /// An error reply, an unreadable or mismatched reply, or a socket error; `out` is all
    /// `RiskError`.
    Failed,
    /// A `too-large` reply: the server's batch bound is below this batch (it applied
    /// nothing). `out` is all `RiskError`, but the caller should stop rather than go on
    /// rejecting: see [`RiskClient::refusal`].
    Refused,
}

/// Client counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Batches answered with verdicts.
    pub batches: u64,
    /// Batches that timed out.
    pub timeouts: u64,
    /// Switches to another endpoint after a timeout.
    pub failovers: u64,
    /// Batches that failed (error reply, bad reply, socket error).
    pub errors: u64,
    /// Batches refused by the server as too large (each stops the engine).
    pub refused: u64,
    /// Round-trip time of the last answered batch (ns).
    pub last_rtt_ns: u64,
    /// Void requests answered (each names the batches given up on at one endpoint).
    pub void_requests: u64,
    /// Batches given up on that the server had applied and undid (outcome `voided`).
    pub voided: u64,
    /// Batches given up on that the server had not applied, and now never will (`unknown`).
    pub void_unknown: u64,
    /// Batches given up on that the server had applied and could not undo (`too-old`): its state
    /// over-counts them until cancels, or a restart with `--recover-from`.
    pub void_too_old: u64,
    /// Batch ids forgotten without a void (more than `VOID_BATCH_IDS_MAX` pending for one
    /// endpoint, or a void answered with an error).
    pub void_dropped: u64,
}

/// See the module docs.
pub struct RiskClient {
    ctx: zmq::Context,
    endpoints: Vec<String>,
    current: usize,
    socket: Option<zmq::Socket>,
    timeout: Duration,
    max_batch: usize,
    request: Vec<u8>,
    reply: zmq::Message,
    next_batch_id: u64,
    stats: ClientStats,
    /// PLAIN credentials every REQ socket logs in with (none by default).
    auth: zauth::ClientAuth,
    /// Random, non-zero: names this client's batches in void requests.
    session_id: u64,
    /// Per endpoint: batch ids sent there whose verdicts were not taken (a timeout, a reset
    /// after the send, an unusable reply) and that are not voided yet (oldest first).
    pending: Vec<Vec<u64>>,
    /// Void request buffer (fixed size).
    void_request: Vec<u8>,
    /// The batch in flight, if any (non-blocking use).
    flight: Option<Flight>,
    /// The newest batch whose verdicts came from the server (0: none yet), and its orders.
    replied_through: u64,
    replied_orders: u32,
    /// Why the last `Refused` batch was refused (the server's text).
    refusal: String,
    /// The engine's account-name table as this client knows it (ids in order from
    /// `orders::NAMED_ACCOUNT_BASE`), for the servers that must learn it.
    names: Vec<(u32, String)>,
    /// Per endpoint: how many of `names` it is known to hold (0 again after a reconnect).
    names_known: Vec<usize>,
    /// Names interned after start-up (`engine run`'s ingress), taken before each batch.
    names_feed: Option<std::sync::mpsc::Receiver<(u32, String)>>,
}

impl std::fmt::Debug for RiskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RiskClient")
            .field("endpoints", &self.endpoints)
            .field("current", &self.current)
            .field("timeout", &self.timeout)
            .field("max_batch", &self.max_batch)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

pub(crate) fn open_socket(
    ctx: &zmq::Context,
    endpoint: &str,
    auth: &zauth::ClientAuth,
) -> Result<zmq::Socket, RiskError> {
    let s = ctx
        .socket(zmq::REQ)
        .map_err(|e| RiskError::zmq("socket(REQ)", e))?;
    s.set_linger(0)
        .map_err(|e| RiskError::zmq("setsockopt(LINGER)", e))?;
    // `apply` fails only on a socket option; the credentials themselves were read before.
    auth.apply(&s).map_err(|e| {
        let source = match e {
            zauth::AuthError::Zmq { source, .. } => source,
            _ => zmq::Error::EINVAL,
        };
        RiskError::zmq("setsockopt(PLAIN credentials)", source)
    })?;
    s.connect(endpoint)
        .map_err(|e| RiskError::zmq(format!("connect {endpoint}"), e))?;
    Ok(s)
}

impl RiskClient {
    /// Connects a REQ socket to the first endpoint (the connection itself is made in the
    /// background by libzmq). `timeout` bounds every [`RiskClient::check_batch`];
    /// `max_batch` sizes the buffers and must not exceed the server's `--max-batch` (a
    /// [`RiskClient::hello`] lowers it to the server's; a larger batch is
    /// [`BatchOutcome::Refused`]).
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[String],
        timeout: Duration,
        max_batch: usize,
    ) -> Result<RiskClient, RiskError> {
        RiskClient::connect_with_auth(
            ctx,
            endpoints,
            timeout,
            max_batch,
            zauth::ClientAuth::default(),
        )
    }

    /// As [`RiskClient::connect`], every REQ socket (the first and each one reopened after a
    /// timeout) logging in with `auth` (PLAIN), for servers started with
    /// `--plain-credentials`.
    pub fn connect_with_auth(
        ctx: &zmq::Context,
        endpoints: &[String],
        timeout: Duration,
        max_batch: usize,
        auth: zauth::ClientAuth,
    ) -> Result<RiskClient, RiskError> {
        if endpoints.is_empty() {
            return Err(RiskError::NoEndpoints);
        }
        for ep in endpoints {
            check_endpoint(ep)?;
        }
        if max_batch == 0 || max_batch > MAX_BATCH_ORDERS_MAX {
            return Err(RiskError::MaxBatch(max_batch));
        }
        if timeout.is_zero() {
            return Err(RiskError::ZeroTimeout);
        }
        let socket = open_socket(ctx, &endpoints[0], &auth)?;
        Ok(RiskClient {
            ctx: ctx.clone(),
            endpoints: endpoints.to_vec(),
            current: 0,
            socket: Some(socket),
            timeout,
            max_batch,
            request: vec![0u8; request_v2_len_bytes(max_batch)],
            reply: zmq::Message::new(),
            next_batch_id: 1,
            stats: ClientStats::default(),
            auth,
            session_id: random_session_id(),
            pending: (0..endpoints.len())
                .map(|_| Vec::with_capacity(VOID_BATCH_IDS_MAX))
                .collect(),
            void_request: vec![0u8; void_request_len_bytes(VOID_BATCH_IDS_MAX)],
            flight: None,
            replied_through: 0,
            replied_orders: 0,
            refusal: String::new(),
            names: Vec::new(),
            names_known: vec![0; endpoints.len()],
            names_feed: None,
        })
    }

    /// Adds `names` (the next ids of the engine's account-name table, in order) to the table
    /// this client keeps its servers in step with: before its next batch to an endpoint that
    /// does not hold them all, it sends them ([`RiskClient::send_account_names`]) under that
    /// batch's deadline.
    pub fn learn_names(&mut self, names: &[(u32, String)]) {
        self.names.extend_from_slice(names);
    }

    /// Records that `endpoint` holds the first `count` names of the table (sent at start-up).
    pub fn names_held(&mut self, endpoint: &str, count: usize) {
        if let Some(i) = self.endpoints.iter().position(|e| e == endpoint) {
            self.names_known[i] = count.min(self.names.len());
        }
    }

    /// Names interned later arrive on `feed` (from the engine's ingress, each sent before the
    /// order that uses it): taken before every batch, so a server learns a name before the
    /// first batch that holds an order of it.
    pub fn feed_names_from(&mut self, feed: std::sync::mpsc::Receiver<(u32, String)>) {
        self.names_feed = Some(feed);
    }

    /// Sends the current endpoint the names it lacks, within `deadline`; `Err` holds the
    /// batch's outcome when they could not be sent (the batch is then not sent: a server
    /// without the names would refuse those orders `unknown-account`).
    fn sync_names(&mut self, deadline: Instant, out: &mut [Reason]) -> Result<(), BatchOutcome> {
        let i = self.current;
        let from = self.names_known[i];
        let endpoint = self.endpoints[i].clone();
        let table = std::mem::take(&mut self.names);
        let send = |client: &mut RiskClient, from: usize| {
            let refs: Vec<(u32, &str)> = table[from..]
                .iter()
                .map(|(id, n)| (*id, n.as_str()))
                .collect();
            let wait = deadline.saturating_duration_since(Instant::now());
            client.send_account_names(&endpoint, &refs, wait)
        };
        let mut result = send(self, from);
        if result.is_err() && from > 0 && Instant::now() < deadline {
            // The server may have restarted and lost the first names: the whole table.
            result = send(self, 0);
        }
        let n = table.len();
        self.names = table;
        match result {
            Ok(()) => {
                self.names_known[i] = n;
                Ok(())
            }
            Err(RiskError::Names { text, .. }) if text.starts_with("unsupported-type") => {
                // An older server: it has no limits keyed by name. Do not ask again.
                self.names_known[i] = n;
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    "risk service {endpoint}: could not send {} account name(s): {e}; the \
                     batch is not sent",
                    n.saturating_sub(from)
                );
                if Instant::now() >= deadline {
                    Err(self.timed_out(out, None))
                } else {
                    Err(self.failed(out))
                }
            }
        }
    }

    /// A hello to endpoint `endpoint` (one of those given at connect; blocking, at most
    /// `wait`, on a socket of its own): the server says the largest batch it accepts, and if
    /// `point` names a previous session (a resumed journal), undoes that session's batches
    /// after `point.journaled_batch` (and those of sessions that continued it without
    /// journaling anything), which the journal does not hold. A server whose bound is below
    /// this client's lowers the client's ([`RiskClient::max_batch`]). See
    /// `docs/formats/risk-protocol.md`, "Hello".
    pub fn hello(
        &mut self,
        endpoint: &str,
        point: JournalPoint,
        wait: Duration,
    ) -> Result<HelloResult, RiskError> {
        let socket = open_socket(&self.ctx, endpoint, &self.auth)?;
        let request_id = self.next_batch_id;
        self.next_batch_id = self.next_batch_id.wrapping_add(1);
        let mut request = [0u8; HELLO_REQUEST_LEN_BYTES];
        let len = encode_hello_request(self.session_id, request_id, point, &mut request);
        let deadline = Instant::now() + wait;
        let timeout = || RiskError::HelloTimeout {
            endpoint: endpoint.to_owned(),
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let mut reply = zmq::Message::new();
        for events in [zmq::POLLOUT, zmq::POLLIN] {
            loop {
                let io = if events == zmq::POLLOUT {
                    try_send(&socket, &request[..len])
                } else {
                    try_recv(&socket, &mut reply)
                };
                match io {
                    Io::Done => break,
                    Io::Reset => {
                        return Err(RiskError::HelloReply {
                            endpoint: endpoint.to_owned(),
                        })
                    }
                    Io::WouldBlock => {
                        let ms = remaining_ms(deadline).ok_or_else(timeout)?;
                        // An error (EINTR) shows at the next try.
                        let _ = socket.poll(events, ms);
                    }
                }
            }
        }
        let frame: &[u8] = &reply;
        let unusable = || RiskError::HelloReply {
            endpoint: endpoint.to_owned(),
        };
        let h = decode_reply_header(frame).map_err(|_| unusable())?;
        if h.batch_id != request_id {
            return Err(unusable());
        }
        if h.status != Status::Ok {
            return Err(RiskError::HelloRefused {
                endpoint: endpoint.to_owned(),
                status: h.status.as_str(),
                text: reply_text(frame, &h),
            });
        }
        if h.count != 1 {
            return Err(unusable());
        }
        let result = decode_hello_result(frame).map_err(|_| unusable())?;
        let bound = usize::try_from(result.max_batch).unwrap_or(usize::MAX);
        if bound == 0 {
            return Err(unusable());
        }
        self.max_batch = self.max_batch.min(bound);
        Ok(result)
    }

    /// Sends the account names `names` (`(id, name)`, the engine's table) to `endpoint` (one
    /// of those given at connect; blocking, at most `wait` per request, on a socket of its
    /// own), in requests of at most [`NAMES_PER_REQUEST_MAX`] and [`RiskClient::max_batch`]
    /// names: the server binds its limits keyed by name to these ids. See
    /// `docs/formats/risk-protocol.md`, "Account names".
    pub fn send_account_names(
        &mut self,
        endpoint: &str,
        names: &[(u32, &str)],
        wait: Duration,
    ) -> Result<(), RiskError> {
        let fail = |text: String| RiskError::Names {
            endpoint: endpoint.to_owned(),
            text,
        };
        let per_request = NAMES_PER_REQUEST_MAX.min(self.max_batch).max(1);
        let socket = open_socket(&self.ctx, endpoint, &self.auth)?;
        let mut request = Vec::new();
        let mut reply = zmq::Message::new();
        for chunk in names.chunks(per_request) {
            let request_id = self.next_batch_id;
            self.next_batch_id = self.next_batch_id.wrapping_add(1);
            encode_names_request(self.session_id, request_id, chunk, &mut request);
            let deadline = Instant::now() + wait;
            for events in [zmq::POLLOUT, zmq::POLLIN] {
                loop {
                    let io = if events == zmq::POLLOUT {
                        try_send(&socket, &request)
                    } else {
                        try_recv(&socket, &mut reply)
                    };
                    match io {
                        Io::Done => break,
                        Io::Reset => return Err(fail("the connection was reset".into())),
                        Io::WouldBlock => {
                            let ms = remaining_ms(deadline).ok_or_else(|| {
                                fail(format!("no reply within {} ms", wait.as_millis()))
                            })?;
                            // An error (EINTR) shows at the next try.
                            let _ = socket.poll(events, ms);
                        }
                    }
                }
            }
            let frame: &[u8] = &reply;
            let h = decode_reply_header(frame).map_err(|e| fail(e.to_string()))?;
            if h.batch_id != request_id {
                return Err(fail("the reply is not to this request".into()));
            }
            if h.status != Status::Ok {
                return Err(fail(format!(
                    "{}: {}",
                    h.status.as_str(),
                    reply_text(frame, &h)
                )));
            }
        }
        Ok(())
    }

    /// The largest batch this client sends: the `max_batch` given at connect, lowered to the
    /// bound of every server that answered a [`RiskClient::hello`].
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// This client's session, the newest of its batches whose verdicts came from the server
    /// (0: none yet) and that batch's number of orders: the engine records them with each
    /// decision (for the orders of that very batch, their position + 1 instead of the count),
    /// and a resuming client's hello names them.
    pub fn journal_point(&self) -> JournalPoint {
        JournalPoint {
            prev_session: self.session_id,
            journaled_batch: self.replied_through,
            journaled_orders: self.replied_orders,
        }
    }

    /// Why the last [`BatchOutcome::Refused`] batch was refused: the server's error text
    /// (empty if none was refused).
    pub fn refusal(&self) -> &str {
        &self.refusal
    }

    /// This client's session id (random, non-zero), sent with every request.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// Batch ids sent to the current endpoint whose verdicts were not taken (timeouts, resets
    /// after the send, unusable replies); they are voided on the next call.
    pub fn pending_voids(&self) -> &[u64] {
        &self.pending[self.current]
    }

    /// Counters so far.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The endpoint the next batch goes to.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// Checks a batch: one request, one reply, `out[i]` = the verdict for `orders[i]`.
    /// Never waits longer than the timeout. `orders.len()` must be ≤ `max_batch` and
    /// `out.len() == orders.len()` (otherwise every slot of `out` gets `RiskError`).
    ///
    /// The blocking form of [`RiskClient::start_batch`] + [`RiskClient::poll_batch`]: it
    /// waits on the socket (`zmq_poll`) between polls, up to the batch's deadline.
    pub fn check_batch(
        &mut self,
        orders: &[Order],
        now_ns: u64,
        out: &mut [Reason],
    ) -> BatchOutcome {
        let mut step = self.start_batch(orders, now_ns, out);
        loop {
            match step {
                BatchPoll::Ready(outcome) => return outcome,
                BatchPoll::Pending => {
                    if let Some(w) = self.waiting() {
                        let ms = remaining_ms(w.deadline).unwrap_or(0);
                        if let Some(socket) = self.socket.as_ref() {
                            // An error (EINTR, a closed context) shows at the next poll.
                            let _ = socket.poll(w.events, ms);
                        }
                    }
                    step = self.poll_batch(orders, out);
                }
            }
        }
    }

    /// Starts a batch without blocking: encodes it, sends what the socket takes now, and
    /// returns [`BatchPoll::Pending`] while the exchange is in flight (then call
    /// [`RiskClient::poll_batch`] with the same `orders` and `out` until it is ready, waiting
    /// on [`RiskClient::waiting`] in between). The deadline (the timeout) starts now, and a
    /// void of this endpoint's batches given up on goes first, under the same deadline.
    /// Panics if a batch is already in flight (one request at a time: REQ).
    pub fn start_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) -> BatchPoll {
        assert!(
            self.flight.is_none(),
            "risk client: a batch started while another is in flight"
        );
        if out.len() != orders.len() {
            return BatchPoll::Ready(self.failed(out));
        }
        if orders.len() > self.max_batch {
            // The caller ignored `max_batch()` (lowered by a hello): as loud as the server's
            // own refusal would be.
            return BatchPoll::Ready(self.too_large_here(out, orders.len()));
        }
        if orders.is_empty() {
            return BatchPoll::Ready(BatchOutcome::Replied);
        }
        let start = Instant::now();
        let deadline = start + self.timeout;
        if self.socket.is_none() {
            match open_socket(&self.ctx, &self.endpoints[self.current], &self.auth) {
                Ok(s) => self.socket = Some(s),
                Err(_) => return BatchPoll::Ready(self.failed(out)),
            }
        }
        if let Some(feed) = &self.names_feed {
            while let Ok(name) = feed.try_recv() {
                self.names.push(name);
            }
        }
        if self.names_known[self.current] < self.names.len() {
            if let Err(outcome) = self.sync_names(deadline, out) {
                return BatchPoll::Ready(outcome);
            }
        }
        // Batches given up on at this endpoint first: void them (same deadline). The void
        // request takes the id before the batch's, as the ids are issued in sending order.
        let phase = if self.pending[self.current].is_empty() {
            Phase::SendBatch
        } else {
            let request_id = self.next_batch_id;
            self.next_batch_id = self.next_batch_id.wrapping_add(1);
            let len = encode_void_request(
                self.session_id,
                request_id,
                &self.pending[self.current],
                &mut self.void_request,
            );
            Phase::SendVoid { request_id, len }
        };
        let batch_id = self.next_batch_id;
        self.next_batch_id = self.next_batch_id.wrapping_add(1);
        let len = encode_request_v2(self.session_id, batch_id, now_ns, orders, &mut self.request);
        self.flight = Some(Flight {
            phase,
            batch_id,
            len,
            start,
            deadline,
        });
        self.poll_batch(orders, out)
    }

    /// Moves the batch in flight on as far as it goes without blocking. `orders` and `out`
    /// must be those given to [`RiskClient::start_batch`]. Returns
    /// [`BatchPoll::Ready`] once it has ended (verdicts, timeout or failure: exactly as
    /// [`RiskClient::check_batch`] would have), [`BatchPoll::Pending`] while it waits for the
    /// socket. With no batch in flight it returns `Ready(Replied)` and changes nothing.
    pub fn poll_batch(&mut self, orders: &[Order], out: &mut [Reason]) -> BatchPoll {
        loop {
            let Some(f) = self.flight else {
                return BatchPoll::Ready(BatchOutcome::Replied);
            };
            if Instant::now() >= f.deadline {
                self.flight = None;
                let sent = matches!(f.phase, Phase::AwaitBatch).then_some(f.batch_id);
                return BatchPoll::Ready(self.timed_out(out, sent));
            }
            let Some(socket) = self.socket.as_ref() else {
                self.flight = None;
                return BatchPoll::Ready(self.reset_failed(out));
            };
            let io = match f.phase {
                Phase::SendVoid { len, .. } => try_send(socket, &self.void_request[..len]),
                Phase::SendBatch => try_send(socket, &self.request[..f.len]),
                Phase::AwaitVoid { .. } | Phase::AwaitBatch => try_recv(socket, &mut self.reply),
            };
            match io {
                Io::WouldBlock => return BatchPoll::Pending,
                Io::Reset => {
                    self.flight = None;
                    if f.phase == Phase::AwaitBatch {
                        // Sent: the server may have applied it.
                        self.remember_void(f.batch_id);
                    }
                    return BatchPoll::Ready(self.reset_failed(out));
                }
                Io::Done => {}
            }
            let next = match f.phase {
                Phase::SendVoid { request_id, .. } => Phase::AwaitVoid { request_id },
                Phase::AwaitVoid { request_id } => {
                    self.settle_voids(request_id);
                    Phase::SendBatch
                }
                Phase::SendBatch => Phase::AwaitBatch,
                Phase::AwaitBatch => {
                    self.flight = None;
                    match self.read_reply(f.batch_id, orders, out) {
                        Ok(()) => {}
                        Err(BadReply::Refused(Status::TooLarge)) => {
                            return BatchPoll::Ready(self.refused(out, orders.len()));
                        }
                        // The server says it applied nothing.
                        Err(BadReply::Refused(_)) => return BatchPoll::Ready(self.failed(out)),
                        // It may have applied the batch: void it like a timeout.
                        Err(BadReply::Unusable) => {
                            self.remember_void(f.batch_id);
                            return BatchPoll::Ready(self.failed(out));
                        }
                    }
                    self.stats.batches += 1;
                    self.replied_through = f.batch_id;
                    self.replied_orders = u32::try_from(orders.len()).unwrap_or(u32::MAX);
                    self.stats.last_rtt_ns =
                        u64::try_from(f.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    return BatchPoll::Ready(BatchOutcome::Replied);
                }
            };
            self.flight = Some(Flight { phase: next, ..f });
        }
    }

    /// What the batch in flight waits for (`None`: no batch in flight): readiness of
    /// [`RiskClient::socket`] for `events`, until `deadline`, after which
    /// [`RiskClient::poll_batch`] ends it as a timeout.
    pub fn waiting(&self) -> Option<Waiting> {
        let f = self.flight.as_ref()?;
        let events = match f.phase {
            Phase::SendVoid { .. } | Phase::SendBatch => zmq::POLLOUT,
            Phase::AwaitVoid { .. } | Phase::AwaitBatch => zmq::POLLIN,
        };
        Some(Waiting {
            events,
            deadline: f.deadline,
        })
    }

    /// The REQ socket of the current endpoint (to wait on, see [`RiskClient::waiting`]).
    pub fn socket(&self) -> Option<&zmq::Socket> {
        self.socket.as_ref()
    }

    /// Whether a batch is in flight.
    pub fn in_flight(&self) -> bool {
        self.flight.is_some()
    }

    /// Reads the results of the void request `request_id` (in `self.reply`). Every batch id
    /// with a result is settled; on an error or unreadable reply they are dropped (counted):
    /// the server cannot void them.
    fn settle_voids(&mut self, request_id: u64) {
        let frame: &[u8] = &self.reply;
        let pending = &mut self.pending[self.current];
        let mut results = [VoidOutcome::Unknown; VOID_BATCH_IDS_MAX];
        let settled = match decode_reply_header(frame) {
            Ok(h)
                if h.status == Status::Ok
                    && h.batch_id == request_id
                    && h.count as usize == pending.len() =>
            {
                pending
                    .iter()
                    .enumerate()
                    .all(|(i, &id)| match decode_void_result(frame, i) {
                        Ok((got, outcome)) if got == id => {
                            results[i] = outcome;
                            true
                        }
                        _ => false,
                    })
            }
            _ => false,
        };
        if settled {
            self.stats.void_requests += 1;
            for outcome in &results[..pending.len()] {
                match outcome {
                    VoidOutcome::Voided => self.stats.voided += 1,
                    VoidOutcome::Unknown => self.stats.void_unknown += 1,
                    VoidOutcome::TooOld => self.stats.void_too_old += 1,
                }
            }
        } else {
            self.stats.errors += 1;
            self.stats.void_dropped += pending.len() as u64;
        }
        pending.clear();
    }

    /// The verdicts of batch `batch_id` into `out` (some slots may be written on an error).
    fn read_reply(
        &self,
        batch_id: u64,
        orders: &[Order],
        out: &mut [Reason],
    ) -> Result<(), BadReply> {
        let frame: &[u8] = &self.reply;
        let h = decode_reply_header(frame).map_err(|_| BadReply::Unusable)?;
        if h.batch_id != batch_id {
            return Err(BadReply::Unusable);
        }
        if h.status != Status::Ok {
            // An intact error reply for this very batch: nothing was applied.
            return Err(BadReply::Refused(h.status));
        }
        if h.count as usize != orders.len() {
            return Err(BadReply::Unusable);
        }
        for (i, (o, slot)) in orders.iter().zip(out.iter_mut()).enumerate() {
            let (id, reason) = decode_verdict(frame, i).map_err(|_| BadReply::Unusable)?;
            if id != o.order_id {
                return Err(BadReply::Unusable);
            }
            *slot = reason;
        }
        Ok(())
    }

    /// Batch `batch_id` was sent to the current endpoint and its verdicts were not taken (a
    /// timeout, a reset after the send, an unusable reply): void it on the next contact with
    /// this endpoint. At most [`VOID_BATCH_IDS_MAX`] are kept; the oldest is dropped (counted).
    fn remember_void(&mut self, batch_id: u64) {
        let pending = &mut self.pending[self.current];
        if pending.len() == VOID_BATCH_IDS_MAX {
            pending.remove(0);
            self.stats.void_dropped += 1;
        }
        pending.push(batch_id);
    }

    fn failed(&mut self, out: &mut [Reason]) -> BatchOutcome {
        out.fill(Reason::RiskError);
        self.stats.errors += 1;
        BatchOutcome::Failed
    }

    /// A batch above this client's own bound: refused before sending.
    #[cold]
    fn too_large_here(&mut self, out: &mut [Reason], count: usize) -> BatchOutcome {
        out.fill(Reason::RiskError);
        self.stats.refused += 1;
        self.refusal = format!(
            "a batch of {count} orders is above the risk client's bound of {} (its --max-batch, \
             lowered to the server's by the hello)",
            self.max_batch
        );
        BatchOutcome::Refused
    }

    /// A `too-large` reply: the server's bound is below the batch. Cold: keeps its text.
    #[cold]
    fn refused(&mut self, out: &mut [Reason], count: usize) -> BatchOutcome {
        out.fill(Reason::RiskError);
        self.stats.refused += 1;
        let frame: &[u8] = &self.reply;
        let text = decode_reply_header(frame)
            .map(|h| reply_text(frame, &h))
            .unwrap_or_default();
        self.refusal = format!(
            "risk service {} refused a batch of {count} orders as too large ({text}): this \
             client sends batches of up to {} orders; give it a --max-batch no larger than the \
             server's, or start the server with a larger --max-batch",
            self.endpoints[self.current], self.max_batch
        );
        BatchOutcome::Refused
    }

    /// A socket error: the REQ state machine may be stuck, so start over on the same endpoint.
    fn reset_failed(&mut self, out: &mut [Reason]) -> BatchOutcome {
        self.socket = open_socket(&self.ctx, &self.endpoints[self.current], &self.auth).ok();
        // A new connection may reach a restarted server: send it the whole name table.
        self.names_known[self.current] = 0;
        self.failed(out)
    }

    /// A timeout: `sent` is the batch id of a batch the server may have received (to void on
    /// the next contact with this endpoint), `None` if the batch was not sent.
    fn timed_out(&mut self, out: &mut [Reason], sent: Option<u64>) -> BatchOutcome {
        out.fill(Reason::RiskTimeout);
        self.stats.timeouts += 1;
        if let Some(id) = sent {
            self.remember_void(id);
        }
        // Lazy Pirate: close (LINGER 0 drops the request) and reopen, on the next endpoint.
        self.socket = None;
        if self.endpoints.len() > 1 {
            self.current = (self.current + 1) % self.endpoints.len();
            self.stats.failovers += 1;
        }
        // If this fails (context terminated), the next batch tries again and fails fast.
        self.socket = open_socket(&self.ctx, &self.endpoints[self.current], &self.auth).ok();
        // A new connection may reach a restarted server: send it the whole name table.
        self.names_known[self.current] = 0;
        BatchOutcome::TimedOut
    }
}

/// Where a batch in flight stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The void request (`void_request[..len]`) is waiting to be sent.
    SendVoid { request_id: u64, len: usize },
    /// The void request is sent; its reply is awaited.
    AwaitVoid { request_id: u64 },
    /// The batch (`request[..len]`) is waiting to be sent.
    SendBatch,
    /// The batch is sent; its verdicts are awaited.
    AwaitBatch,
}

/// The batch in flight.
#[derive(Debug, Clone, Copy)]
struct Flight {
    phase: Phase,
    batch_id: u64,
    /// Length of the encoded batch in `request`.
    len: usize,
    start: Instant,
    deadline: Instant,
}

/// How a non-blocking step of a batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPoll {
    /// Still in flight: wait on the socket ([`RiskClient::waiting`]) and poll again.
    Pending,
    /// Ended, as [`RiskClient::check_batch`] would have.
    Ready(BatchOutcome),
}

/// What a batch in flight waits for.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    /// `POLLOUT` to send, `POLLIN` for a reply.
    pub events: zmq::PollEvents,
    /// When the batch times out.
    pub deadline: Instant,
}

/// Why a reply's verdicts were not used.
enum BadReply {
    /// An intact error reply echoing the batch id: the server applied nothing.
    Refused(Status),
    /// Unreadable, or not the reply to this batch: the server may have applied it.
    Unusable,
}

/// One non-blocking socket operation.
pub(crate) enum Io {
    /// Done (for a receive: a single-frame message is in the buffer).
    Done,
    /// The socket cannot do it now.
    WouldBlock,
    /// A socket error or a multi-part reply: the socket must be reopened.
    Reset,
}

pub(crate) fn try_send(socket: &zmq::Socket, frame: &[u8]) -> Io {
    loop {
        match socket.send(frame, zmq::DONTWAIT) {
            Ok(()) => return Io::Done,
            Err(zmq::Error::EINTR) => continue,
            Err(zmq::Error::EAGAIN) => return Io::WouldBlock,
            Err(_) => return Io::Reset,
        }
    }
}

pub(crate) fn try_recv(socket: &zmq::Socket, msg: &mut zmq::Message) -> Io {
    loop {
        match socket.recv(msg, zmq::DONTWAIT) {
            // Not our protocol: a fresh socket drops the remaining frames.
            Ok(()) if msg.get_more() => return Io::Reset,
            Ok(()) => return Io::Done,
            Err(zmq::Error::EINTR) => continue,
            Err(zmq::Error::EAGAIN) => return Io::WouldBlock,
            Err(_) => return Io::Reset,
        }
    }
}

/// A random non-zero session id: std's `RandomState` keys come from the OS's randomness
/// (and differ per instance), mixed with the time and the process id.
fn random_session_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

/// Milliseconds left until `deadline`, rounded up; `None` once it has passed.
pub(crate) fn remaining_ms(deadline: Instant) -> Option<i64> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    Some(i64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX))
}
