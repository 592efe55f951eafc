//! The source design's risk protocol, client side (`engine --risk-protocol json`): one order
//! per REQ as `{"symbol":"AAPL","quantity":100,"price":185.25}`, the reply `OK` accepts, any
//! other reply rejects ([`Reason::RiskRefused`]; the reply's first 16 bytes are kept for the
//! journal record, [`JsonRiskClient::last_reply`]).
//!
//! For migrating from a shop's old JSON risk service one component at a time. It is honest
//! about its cost: **one round trip per order** (the source design's throughput cap, 1/RTT),
//! against one per batch of up to 1,024 orders in the binary protocol.
//!
//! The time budget, Lazy Pirate and failover are those of [`crate::RiskClient`] (and the same
//! socket helpers): the send is non-blocking, the reply awaited against a deadline of
//! `timeout` (100 ms by default) from the start of the order; on timeout the order is
//! `risk-timeout`, the REQ socket is closed (LINGER 0) and a fresh one is connected to the
//! next endpoint (round-robin). A socket error or a multi-part reply is `risk-error` and
//! resets the socket. There is no void, hello or session: the old service has none, so an
//! order it applied after the client gave up stays applied there (as in the source design).
//! The non-blocking [`JsonRiskClient::start_order`] / [`JsonRiskClient::poll_order`] /
//! [`JsonRiskClient::waiting`] serve the engine's shared duty cycle exactly as the binary
//! client's do.

use std::io::Write as _;
use std::time::{Duration, Instant};

use orders::{Order, Reason, RISK_REPLY_LEN_BYTES};

use crate::client::{open_socket, try_recv, try_send, BatchOutcome, BatchPoll, Io, Waiting};
use crate::error::{check_endpoint, RiskError};

/// Longest JSON request the client writes (a symbol of 8 bytes, two numbers).
const JSON_REQUEST_LEN_BYTES_MAX: usize = 128;

/// Counters of a [`JsonRiskClient`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonClientStats {
    /// Orders answered `OK`.
    pub accepted: u64,
    /// Orders answered anything else (`risk-refused`).
    pub refused: u64,
    /// Orders that timed out.
    pub timeouts: u64,
    /// Switches to another endpoint after a timeout.
    pub failovers: u64,
    /// Orders failed by a socket error or a multi-part reply.
    pub errors: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Send,
    Await,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    phase: Phase,
    deadline: Instant,
}

/// See the module docs.
pub struct JsonRiskClient {
    ctx: zmq::Context,
    endpoints: Vec<String>,
    current: usize,
    socket: Option<zmq::Socket>,
    timeout: Duration,
    auth: zauth::ClientAuth,
    request: Vec<u8>,
    reply: zmq::Message,
    last_reply: [u8; RISK_REPLY_LEN_BYTES],
    flight: Option<Flight>,
    stats: JsonClientStats,
}

impl std::fmt::Debug for JsonRiskClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonRiskClient")
            .field("endpoints", &self.endpoints)
            .field("current", &self.current)
            .field("timeout", &self.timeout)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Writes `{"symbol":"…","quantity":…,"price":…}` for `o` into `out` (cleared first; no
/// allocation once `out` has its capacity). The price is the exact decimal of its ticks
/// (1 tick = 0.0001, trailing zeros dropped: `185.25`).
pub fn encode_json_order(o: &Order, out: &mut Vec<u8>) {
    out.clear();
    let ticks = o.price;
    let sign = if ticks < 0 { "-" } else { "" };
    let abs = ticks.unsigned_abs();
    let (int, mut frac) = (abs / 10_000, abs % 10_000);
    let _ = write!(
        out,
        r#"{{"symbol":"{}","quantity":{},"price":{sign}{int}"#,
        o.symbol.as_str(),
        o.qty
    );
    if frac != 0 {
        let mut digits = 4;
        while frac % 10 == 0 {
            frac /= 10;
            digits -= 1;
        }
        let _ = write!(out, ".{frac:0digits$}");
    }
    out.push(b'}');
}

impl JsonRiskClient {
    /// Connects a REQ socket to the first endpoint; every socket logs in with `auth`.
    pub fn connect(
        ctx: &zmq::Context,
        endpoints: &[String],
        timeout: Duration,
        auth: zauth::ClientAuth,
    ) -> Result<JsonRiskClient, RiskError> {
        if endpoints.is_empty() {
            return Err(RiskError::NoEndpoints);
        }
        for ep in endpoints {
            check_endpoint(ep)?;
        }
        if timeout.is_zero() {
            return Err(RiskError::ZeroTimeout);
        }
        let socket = open_socket(ctx, &endpoints[0], &auth)?;
        Ok(JsonRiskClient {
            ctx: ctx.clone(),
            endpoints: endpoints.to_vec(),
            current: 0,
            socket: Some(socket),
            timeout,
            auth,
            request: Vec::with_capacity(JSON_REQUEST_LEN_BYTES_MAX),
            reply: zmq::Message::new(),
            last_reply: [0; RISK_REPLY_LEN_BYTES],
            flight: None,
            stats: JsonClientStats::default(),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> JsonClientStats {
        self.stats
    }

    /// The first 16 bytes of the last reply that was not `OK` (NUL-padded).
    pub fn last_reply(&self) -> [u8; RISK_REPLY_LEN_BYTES] {
        self.last_reply
    }

    /// The endpoint the next order goes to.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current]
    }

    /// Checks one order, blocking at most the timeout.
    pub fn check_order(&mut self, order: &Order, out: &mut Reason) -> BatchOutcome {
        let mut step = self.start_order(order, out);
        loop {
            match step {
                BatchPoll::Ready(outcome) => return outcome,
                BatchPoll::Pending => {
                    if let (Some(w), Some(socket)) = (self.waiting(), self.socket.as_ref()) {
                        let ms = crate::client::remaining_ms(w.deadline).unwrap_or(0);
                        let _ = socket.poll(w.events, ms);
                    }
                    step = self.poll_order(out);
                }
            }
        }
    }

    /// Starts one order without blocking (see [`crate::RiskClient::start_batch`]).
    /// Panics if an order is already in flight.
    pub fn start_order(&mut self, order: &Order, out: &mut Reason) -> BatchPoll {
        assert!(
            self.flight.is_none(),
            "json risk client: an order started while another is in flight"
        );
        if self.socket.is_none() {
            match open_socket(&self.ctx, &self.endpoints[self.current], &self.auth) {
                Ok(s) => self.socket = Some(s),
                Err(_) => return BatchPoll::Ready(self.failed(out)),
            }
        }
        encode_json_order(order, &mut self.request);
        self.flight = Some(Flight {
            phase: Phase::Send,
            deadline: Instant::now() + self.timeout,
        });
        self.poll_order(out)
    }

    /// Moves the order in flight on without blocking; `Ready(Replied)` with nothing in flight.
    pub fn poll_order(&mut self, out: &mut Reason) -> BatchPoll {
        loop {
            let Some(f) = self.flight else {
                return BatchPoll::Ready(BatchOutcome::Replied);
            };
            if Instant::now() >= f.deadline {
                self.flight = None;
                return BatchPoll::Ready(self.timed_out(out));
            }
            let Some(socket) = self.socket.as_ref() else {
                self.flight = None;
                return BatchPoll::Ready(self.reset_failed(out));
            };
            let io = match f.phase {
                Phase::Send => try_send(socket, &self.request),
                Phase::Await => try_recv(socket, &mut self.reply),
            };
            match io {
                Io::WouldBlock => return BatchPoll::Pending,
                Io::Reset => {
                    self.flight = None;
                    return BatchPoll::Ready(self.reset_failed(out));
                }
                Io::Done => {}
            }
            match f.phase {
                Phase::Send => {
                    self.flight = Some(Flight {
                        phase: Phase::Await,
                        ..f
                    })
                }
                Phase::Await => {
                    self.flight = None;
                    let reply: &[u8] = &self.reply;
                    if reply == b"OK" {
                        *out = Reason::Accepted;
                        self.stats.accepted += 1;
                    } else {
                        *out = Reason::RiskRefused;
                        self.stats.refused += 1;
                        self.last_reply = [0; RISK_REPLY_LEN_BYTES];
                        let n = reply.len().min(RISK_REPLY_LEN_BYTES);
                        self.last_reply[..n].copy_from_slice(&reply[..n]);
                    }
                    return BatchPoll::Ready(BatchOutcome::Replied);
                }
            }
        }
    }

    /// What the order in flight waits for (`None`: nothing in flight).
    pub fn waiting(&self) -> Option<Waiting> {
        let f = self.flight.as_ref()?;
        Some(Waiting {
            events: match f.phase {
                Phase::Send => zmq::POLLOUT,
                Phase::Await => zmq::POLLIN,
            },
            deadline: f.deadline,
        })
    }

    /// The REQ socket of the current endpoint.
    pub fn socket(&self) -> Option<&zmq::Socket> {
        self.socket.as_ref()
    }

    fn failed(&mut self, out: &mut Reason) -> BatchOutcome {
        *out = Reason::RiskError;
        self.stats.errors += 1;
        BatchOutcome::Failed
    }

    fn reset_failed(&mut self, out: &mut Reason) -> BatchOutcome {
        self.socket = open_socket(&self.ctx, &self.endpoints[self.current], &self.auth).ok();
        self.failed(out)
    }

    /// Lazy Pirate: close (LINGER 0 drops the request), reopen on the next endpoint.
    fn timed_out(&mut self, out: &mut Reason) -> BatchOutcome {
        *out = Reason::RiskTimeout;
        self.stats.timeouts += 1;
        self.socket = None;
        if self.endpoints.len() > 1 {
            self.current = (self.current + 1) % self.endpoints.len();
            self.stats.failovers += 1;
        }
        self.socket = open_socket(&self.ctx, &self.endpoints[self.current], &self.auth).ok();
        BatchOutcome::TimedOut
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orders::Symbol;

    fn order(price: i64, qty: u64) -> Order {
        Order {
            order_id: 1,
            price,
            qty,
            symbol: Symbol::new("AAPL").unwrap(),
            ..Order::default()
        }
    }

    #[test]
    fn requests_are_the_source_designs_json_with_exact_prices() {
        let mut out = Vec::new();
        for (ticks, want) in [
            (1_852_500, "185.25"),
            (1_850_000, "185"),
            (1, "0.0001"),
            (10_001_234, "1000.1234"),
            (-5_000, "-0.5"),
            (0, "0"),
        ] {
            encode_json_order(&order(ticks, 100), &mut out);
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(
                text,
                format!(r#"{{"symbol":"AAPL","quantity":100,"price":{want}}}"#)
            );
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let back = orders::parse_number_price_ticks(&v["price"].to_string()).unwrap();
            assert_eq!(back, ticks, "{text}");
        }
    }

    /// Against the real service over inproc: `OK` accepts, `REJECT <reason>` is
    /// `risk-refused` with the reply kept; a silent endpoint is a timeout within the budget
    /// and the client fails over to the next endpoint.
    #[test]
    fn ok_accepts_anything_else_refuses_and_a_timeout_fails_over() {
        let ctx = zmq::Context::new();
        let limits = crate::Limits::from_toml_str(
            "[defaults]\nmax_order_qty = 1000\nmax_order_notional = 1000000000\n\
             max_long_qty = 100000\nmax_short_qty = 100000\ncredit_limit_notional = 1000000000\n\
             [symbols.AAPL]\nreference_price = 185.25\n",
            "t",
        )
        .unwrap();
        let server = crate::spawn_embedded(&ctx, limits, "inproc://json-client-risk").unwrap();
        // A REP socket that never answers, first in the list.
        let silent = ctx.socket(zmq::REP).unwrap();
        silent.bind("inproc://json-client-silent").unwrap();
        let endpoints = vec![
            "inproc://json-client-silent".to_owned(),
            server.endpoints()[0].clone(),
        ];
        let mut c = JsonRiskClient::connect(
            &ctx,
            &endpoints,
            Duration::from_millis(100),
            zauth::ClientAuth::default(),
        )
        .unwrap();
        let mut r = Reason::Accepted;
        let t = Instant::now();
        assert_eq!(
            c.check_order(&order(1_852_500, 10), &mut r),
            BatchOutcome::TimedOut
        );
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(r, Reason::RiskTimeout);
        assert_eq!(c.stats().failovers, 1);
        assert_eq!(
            c.check_order(&order(1_852_500, 10), &mut r),
            BatchOutcome::Replied
        );
        assert_eq!(r, Reason::Accepted);
        assert_eq!(
            c.check_order(&order(1_852_500, 5000), &mut r),
            BatchOutcome::Replied
        );
        assert_eq!(r, Reason::RiskRefused);
        assert_eq!(&c.last_reply(), b"REJECT max-qty\0\0");
        assert_eq!(c.stats().accepted, 1);
        assert_eq!(c.stats().refused, 1);
        drop(c);
        server.stop();
    }
}
