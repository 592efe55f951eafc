//! The REQ client the engine's risk stage uses: one request per batch, a hard time budget per
//! batch, Lazy Pirate recovery and round-robin failover.
//!
//! - One REQ message per batch ([`crate::protocol`]); the request buffer is allocated for
//!   `max_batch` orders at connect time, so a batch costs no allocation of ours (libzmq copies
//!   the frame into its own message).
//! - The send is non-blocking and the reply is awaited with `zmq_poll` against a deadline, so a
//!   call never waits longer than the timeout (plus the microseconds a socket reset takes).
//! - On timeout every order of the batch gets [`Reason::RiskTimeout`], the socket is closed
//!   (LINGER 0, so the unanswered request is dropped) and a fresh one is connected to the next
//!   endpoint (round-robin; the same one if there is only one). A REQ socket cannot send again
//!   before it receives, so reopening is the only way on (the Lazy Pirate pattern).
//! - The batch is not retried: the server may have applied it before going silent, and a retry
//!   would apply it twice. Its exposure stays counted on that server until cancels or fills
//!   release it (see `docs/formats/risk-protocol.md`, "Known limitations").
//! - A reply must carry the batch id of the request, the same count, and the order ids in
//!   order; anything else (or an error reply) gives every order [`Reason::RiskError`].

use std::time::{Duration, Instant};

use orders::{Order, Reason};

use crate::error::{check_endpoint, RiskError};
use crate::limits::MAX_BATCH_ORDERS_MAX;
use crate::protocol::{
    decode_reply_header, decode_verdict, encode_request, request_len_bytes, Status,
};

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
    /// Round-trip time of the last answered batch (ns).
    pub last_rtt_ns: u64,
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

fn open_socket(ctx: &zmq::Context, endpoint: &str) -> Result<zmq::Socket, RiskError> {
    let s = ctx
        .socket(zmq::REQ)
        .map_err(|e| RiskError::zmq("socket(REQ)", e))?;
    s.set_linger(0)
        .map_err(|e| RiskError::zmq("setsockopt(LINGER)", e))?;
    s.connect(endpoint)
        .map_err(|e| RiskError::zmq(format!("connect {endpoint}"), e))?;
    Ok(s)
}

impl RiskClient {
    /// Connects a REQ socket to the first endpoint (the connection itself is made in the
    /// background by libzmq). `timeout` bounds every [`RiskClient::check_batch`];
    /// `max_batch` sizes the buffers and must not exceed the server's `--max-batch`.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[String],
        timeout: Duration,
        max_batch: usize,
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
        let socket = open_socket(ctx, &endpoints[0])?;
        Ok(RiskClient {
            ctx: ctx.clone(),
            endpoints: endpoints.to_vec(),
            current: 0,
            socket: Some(socket),
            timeout,
            max_batch,
            request: vec![0u8; request_len_bytes(max_batch)],
            reply: zmq::Message::new(),
            next_batch_id: 1,
            stats: ClientStats::default(),
        })
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
    pub fn check_batch(
        &mut self,
        orders: &[Order],
        now_ns: u64,
        out: &mut [Reason],
    ) -> BatchOutcome {
        if out.len() != orders.len() || orders.len() > self.max_batch {
            return self.failed(out);
        }
        if orders.is_empty() {
            return BatchOutcome::Replied;
        }
        let start = Instant::now();
        let deadline = start + self.timeout;
        if self.socket.is_none() {
            match open_socket(&self.ctx, &self.endpoints[self.current]) {
                Ok(s) => self.socket = Some(s),
                Err(_) => return self.failed(out),
            }
        }
        let batch_id = self.next_batch_id;
        self.next_batch_id = self.next_batch_id.wrapping_add(1);
        let len = encode_request(batch_id, now_ns, orders, &mut self.request);

        // Send without blocking; a peer that is not ready gets until the deadline.
        loop {
            let Some(socket) = self.socket.as_ref() else {
                return self.failed(out);
            };
            match socket.send(&self.request[..len], zmq::DONTWAIT) {
                Ok(()) => break,
                Err(zmq::Error::EINTR) => continue,
                Err(zmq::Error::EAGAIN) => {
                    let Some(ms) = remaining_ms(deadline) else {
                        return self.timed_out(out);
                    };
                    match socket.poll(zmq::POLLOUT, ms) {
                        Ok(_) | Err(zmq::Error::EINTR) => continue,
                        Err(_) => return self.reset_failed(out),
                    }
                }
                Err(_) => return self.reset_failed(out),
            }
        }

        // Wait for the reply until the deadline.
        loop {
            let Some(ms) = remaining_ms(deadline) else {
                return self.timed_out(out);
            };
            let Some(socket) = self.socket.as_ref() else {
                return self.failed(out);
            };
            match socket.poll(zmq::POLLIN, ms) {
                Ok(0) | Err(zmq::Error::EINTR) => continue,
                Ok(_) => {}
                Err(_) => return self.reset_failed(out),
            }
            match socket.recv(&mut self.reply, zmq::DONTWAIT) {
                Ok(()) => break,
                Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => continue,
                Err(_) => return self.reset_failed(out),
            }
        }
        if self.reply.get_more() {
            // Not our protocol: a fresh socket drops the remaining frames.
            return self.reset_failed(out);
        }
        if self.read_reply(batch_id, orders, out).is_err() {
            return self.failed(out);
        }
        self.stats.batches += 1;
        self.stats.last_rtt_ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        BatchOutcome::Replied
    }

    fn read_reply(&self, batch_id: u64, orders: &[Order], out: &mut [Reason]) -> Result<(), ()> {
        let frame: &[u8] = &self.reply;
        let h = decode_reply_header(frame).map_err(|_| ())?;
        if h.status != Status::Ok || h.batch_id != batch_id || h.count as usize != orders.len() {
            return Err(());
        }
        for (i, (o, slot)) in orders.iter().zip(out.iter_mut()).enumerate() {
            let (id, reason) = decode_verdict(frame, i).map_err(|_| ())?;
            if id != o.order_id {
                return Err(());
            }
            *slot = reason;
        }
        Ok(())
    }

    fn failed(&mut self, out: &mut [Reason]) -> BatchOutcome {
        out.fill(Reason::RiskError);
        self.stats.errors += 1;
        BatchOutcome::Failed
    }

    /// A socket error: the REQ state machine may be stuck, so start over on the same endpoint.
    fn reset_failed(&mut self, out: &mut [Reason]) -> BatchOutcome {
        self.socket = open_socket(&self.ctx, &self.endpoints[self.current]).ok();
        self.failed(out)
    }

    fn timed_out(&mut self, out: &mut [Reason]) -> BatchOutcome {
        out.fill(Reason::RiskTimeout);
        self.stats.timeouts += 1;
        // Lazy Pirate: close (LINGER 0 drops the request) and reopen, on the next endpoint.
        self.socket = None;
        if self.endpoints.len() > 1 {
            self.current = (self.current + 1) % self.endpoints.len();
            self.stats.failovers += 1;
        }
        // If this fails (context terminated), the next batch tries again and fails fast.
        self.socket = open_socket(&self.ctx, &self.endpoints[self.current]).ok();
        BatchOutcome::TimedOut
    }
}

/// Milliseconds left until `deadline`, rounded up; `None` once it has passed.
fn remaining_ms(deadline: Instant) -> Option<i64> {
    let left = deadline.checked_duration_since(Instant::now())?;
    if left.is_zero() {
        return None;
    }
    Some(i64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i64::MAX))
}
