//! The request handler behind the REP socket: one request frame in, one reply frame out,
//! whatever the frame holds. It never panics on input and always produces a reply, so a REQ
//! client is never left waiting.
//!
//! Dispatch on the first byte:
//! - the binary magic `RSKQ` → a batch of orders ([`crate::protocol`]), answered with one
//!   verdict per order, or a void request (version 2), answered with one result per batch;
//! - `{` (after optional whitespace) → JSON: the source design's single order
//!   `{"symbol":"AAPL","quantity":100,"price":185.25}` (optional `account`, `order_id`, `side`,
//!   `kind`) answered `OK` or `REJECT <reason>`, or an admin request `{"admin":"…"}` answered
//!   with a JSON object;
//! - anything else → `ERROR <text>`.
//!
//! Malformed and oversized requests are answered with an error reply and counted.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use orders::{Order, OrderKind, Reason, RiskServerIds, Side, Symbol};
use serde::{Deserialize, Serialize};

use crate::checker::{Checker, Scope};
use crate::config::{Limits, TradingState};
use crate::error::{error_chain, RiskError};
use crate::limits::{
    ERROR_TEXT_LEN_BYTES_MAX, JSON_REQUEST_LEN_BYTES_MAX, MAX_BATCH_ORDERS_DEFAULT,
    MAX_BATCH_ORDERS_MAX, TEXT_REPLY_LEN_BYTES_INITIAL,
};
use crate::limits::{PREFETCH_CHUNK_ORDERS, VOID_BATCH_IDS_MAX};
use crate::metrics::ServiceCounters;
use crate::protocol::{
    decode_request_header, encode_error_reply, encode_hello_result, encode_reply_header,
    encode_verdict, encode_void_result, hello_journal_point, names_request_entry, peek_batch_id,
    raw_order_id, reply_len_bytes, request_order, request_v2_len_bytes, void_batch_id, HelloResult,
    ReplyHeader, RequestHeader, Status, REQUEST_MAGIC, REQUEST_TYPE_HELLO, REQUEST_TYPE_NAMES,
    REQUEST_TYPE_VOID,
};
use crate::undo::VoidOutcome;
use metrics_endpoint::bump;

/// Counters of the service, as the admin `stats` request returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Requests received (every kind).
    pub requests: u64,
    /// Binary batches answered with verdicts.
    pub batches: u64,
    /// Orders checked in binary batches.
    pub batch_orders: u64,
    /// JSON single orders checked.
    pub json_orders: u64,
    /// Admin requests handled.
    pub admin_requests: u64,
    /// Requests answered with an error because they could not be read.
    pub malformed: u64,
    /// Requests answered with an error because they were too large.
    pub too_large: u64,
    /// Successful reloads of the limits file.
    pub reloads: u64,
    /// Failed reloads (the previous limits stayed in force).
    pub reload_failures: u64,
    /// Replies the socket refused to send.
    pub send_errors: u64,
    /// Verdicts by reason name (binary and JSON orders).
    pub verdicts: std::collections::BTreeMap<String, u64>,
    /// Void requests answered.
    #[serde(default)]
    pub void_requests: u64,
    /// Batches undone by void requests (outcome `voided`).
    #[serde(default)]
    pub voided_batches: u64,
    /// Batch ids a void named that the server had not applied (outcome `unknown`).
    #[serde(default)]
    pub void_unknown: u64,
    /// Batch ids a void named that the server had applied but could not undo (`too-old`).
    #[serde(default)]
    pub void_too_old: u64,
    /// Batches refused on arrival because a void had named them before, or their session was
    /// ended by a reconciliation (status `voided`).
    #[serde(default)]
    pub refused_voided_batches: u64,
    /// Hello requests answered.
    #[serde(default)]
    pub hello_requests: u64,
    /// Names requests answered (account names a client sent).
    #[serde(default)]
    pub names_requests: u64,
    /// Batches undone by the reconciliation of a hello (a restarted client's journal did not
    /// hold them).
    #[serde(default)]
    pub reconciled_batches: u64,
    /// Hellos whose reconciliation found applied batches the journal does not hold that could
    /// no longer be undone (outcome `too-old`: restart the server with `--recover-from`).
    #[serde(default)]
    pub reconcile_refusals: u64,
    /// Slots of the order-id table now (it grows incrementally past its configured size).
    #[serde(default)]
    pub order_id_table_slots: u64,
    /// Incremental growths of the order-id table since start-up (each doubles it; a non-zero
    /// count says `capacity.max_open_orders` is too small for the flow).
    #[serde(default)]
    pub order_id_table_grows: u64,
}

/// Sizes and the reload source of a service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Largest batch accepted; larger requests get a `too-large` error reply.
    pub max_batch_orders: usize,
    /// The limits file reloaded on SIGHUP / admin `reload` (`None`: reload is refused).
    pub config_path: Option<PathBuf>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            max_batch_orders: MAX_BATCH_ORDERS_DEFAULT,
            config_path: None,
        }
    }
}

/// How JSON orders are answered (`risk-server --json-replies`).
///
/// The source design's C++ engine reads the reply into a fixed 16-byte buffer and only ever
/// saw `OK` or `REJECT`; `REJECT price-collar` (19 bytes) or an `ERROR <text>` overflows it.
/// [`JsonReplies::Short`] answers such clients with exactly `OK` or `REJECT` (at most 6
/// bytes), and the server logs and counts the reason instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JsonReplies {
    /// `OK`, `REJECT <reason>`, `ERROR <text>` (the default).
    #[default]
    Detailed,
    /// Exactly `OK` or `REJECT`: a rejected order and a JSON order that is not an order (or a
    /// JSON request too long or malformed) both get `REJECT`; the reason or error text goes to
    /// the log (info) and the counters. Admin requests are still answered with JSON.
    Short,
}

impl JsonReplies {
    /// Parses `short` / `detailed`.
    pub fn parse(text: &str) -> Option<JsonReplies> {
        match text {
            "short" => Some(JsonReplies::Short),
            "detailed" => Some(JsonReplies::Detailed),
            _ => None,
        }
    }
}

/// The request handler: a [`Checker`] plus counters.
#[derive(Debug)]
pub struct Service {
    json_replies: JsonReplies,
    checker: Checker,
    max_batch: usize,
    config_path: Option<PathBuf>,
    /// Counters, also read by the metrics endpoint (`crate::metrics`).
    counters: Arc<ServiceCounters>,
    /// Ids for JSON orders without `order_id` (`orders::order_ids`: restart-safe by the clock).
    json_ids: RiskServerIds,
    /// Per-batch scratch, allocated for `max_batch` orders at start-up.
    decoded: Vec<Option<Order>>,
    valid: Vec<Order>,
    /// Account names a client sent (names requests): the engine's table, as far as learned.
    names: orders::AccountNames,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    admin: Option<String>,
    symbol: Option<String>,
    quantity: Option<u64>,
    /// The number's text as written, converted exactly (never through `f64`).
    price: Option<Box<serde_json::value::RawValue>>,
    account: Option<u32>,
    order_id: Option<u64>,
    side: Option<String>,
    kind: Option<String>,
}

fn wall_clock_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Service {
    /// A service around `checker`. `max_batch_orders` is clamped to `1..=MAX_BATCH_ORDERS_MAX`.
    /// Allocates the checker's undo log (for void requests) for batches of that size.
    pub fn new(mut checker: Checker, opts: ServiceOptions) -> Service {
        let max_batch = opts.max_batch_orders.clamp(1, MAX_BATCH_ORDERS_MAX);
        checker.enable_undo(max_batch);
        Service {
            checker,
            max_batch,
            decoded: vec![None; max_batch],
            valid: vec![Order::default(); max_batch],
            config_path: opts.config_path,
            counters: Arc::new(ServiceCounters::default()),
            json_ids: RiskServerIds::starting_at(wall_clock_ns()),
            json_replies: JsonReplies::Detailed,
            names: orders::AccountNames::with_capacity(orders::account_names::ACCOUNT_NAMES_MAX),
        }
    }

    /// A names request: learn the bindings (in order; the first bad or conflicting entry ends
    /// it with an error reply, those before it kept), then bind the limits keyed by those
    /// names.
    fn handle_names(&mut self, request: &[u8], h: &RequestHeader, reply: &mut Vec<u8>) {
        bump(&self.counters.names_requests, 1);
        for i in 0..h.count as usize {
            let learned = names_request_entry(request, i)
                .map_err(|e| e.to_string())
                .and_then(|(id, name)| {
                    self.names
                        .insert_recorded(id, name)
                        .map_err(|e| format!("names request entry {i}: {e}"))
                });
            if let Err(text) = learned {
                bump(&self.counters.malformed, 1);
                encode_error_reply(h.batch_id, Status::Malformed, &text, reply);
                return;
            }
        }
        if !self.checker.limits().account_names.is_empty() {
            let mut limits = self.checker.limits().clone();
            let names = &self.names;
            match limits.bind_account_names(|n| names.id(n)) {
                Ok(_) if limits.named_account_ids != self.checker.limits().named_account_ids => {
                    tracing::info!(
                        bound = limits.named_account_ids.len(),
                        of = limits.account_names.len(),
                        "limits keyed by account name bound to the client's ids"
                    );
                    self.checker.set_limits(limits);
                }
                Ok(_) => {}
                Err(text) => {
                    bump(&self.counters.malformed, 1);
                    encode_error_reply(h.batch_id, Status::Malformed, &text, reply);
                    return;
                }
            }
        }
        reply.resize(reply_len_bytes(0), 0);
        encode_reply_header(
            &ReplyHeader {
                status: Status::Ok,
                batch_id: h.batch_id,
                count: 0,
                text_len: 0,
            },
            reply,
        );
    }

    /// How JSON orders are answered from now on (default [`JsonReplies::Detailed`]).
    pub fn set_json_replies(&mut self, mode: JsonReplies) {
        self.json_replies = mode;
    }

    /// How JSON orders are answered.
    pub fn json_replies(&self) -> JsonReplies {
        self.json_replies
    }

    /// `reply` = `REJECT` in short mode (the text logged instead); `false` in detailed mode.
    fn short_reject(&self, reply: &mut Vec<u8>, why: std::fmt::Arguments<'_>) -> bool {
        if self.json_replies != JsonReplies::Short {
            return false;
        }
        tracing::info!(reply = "REJECT", "JSON request refused: {why}");
        reply.clear();
        reply.extend_from_slice(b"REJECT");
        true
    }

    /// Bytes a reply buffer needs so that no batch reply or error reply allocates.
    pub fn reply_capacity_bytes(&self) -> usize {
        reply_len_bytes(self.max_batch).max(TEXT_REPLY_LEN_BYTES_INITIAL) + ERROR_TEXT_LEN_BYTES_MAX
    }

    /// Largest batch accepted.
    pub fn max_batch_orders(&self) -> usize {
        self.max_batch
    }

    /// The checker.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The checker, mutably (recovery, tests).
    pub fn checker_mut(&mut self) -> &mut Checker {
        &mut self.checker
    }

    /// Counters so far.
    pub fn stats(&self) -> ServiceStats {
        let mut s = self.counters.snapshot();
        let (slots, grows) = self.checker.id_table_stats();
        s.order_id_table_slots = slots as u64;
        s.order_id_table_grows = grows;
        s
    }

    /// The counters, shared: the metrics endpoint reads them while the service runs.
    pub fn counters(&self) -> Arc<ServiceCounters> {
        Arc::clone(&self.counters)
    }

    /// Counts a reply the socket could not send.
    pub fn count_send_error(&mut self) {
        bump(&self.counters.send_errors, 1);
    }

    /// Reloads the limits file given at start-up, keeping all live state. On error the old
    /// limits stay in force.
    pub fn reload(&mut self) -> Result<(), RiskError> {
        let result = match &self.config_path {
            None => Err(RiskError::NoConfigPath),
            Some(path) => Limits::from_file(path).map_err(RiskError::from),
        };
        // Names keep the ids they had (the table is the engine's): those bound before, and
        // those a client sent (names requests). A name with no id yet is refused where no
        // client sends names (the embedded service: the engine bound every name at start);
        // a standalone server gates its accounts until a client names them.
        let result = result.and_then(|mut limits| {
            let known = &self.checker.limits().named_account_ids;
            let names = &self.names;
            let unknown = limits
                .bind_account_names(|n| {
                    names.id(n).or_else(|| {
                        known
                            .iter()
                            .find(|(_, k)| k.as_str() == n)
                            .map(|(&id, _)| id)
                    })
                })
                .map_err(RiskError::AccountName)?;
            if let (Some(name), true) = (unknown.first(), self.names.is_empty()) {
                return Err(RiskError::AccountName(format!(
                    "{}: accounts.{name}: the account name has no account id",
                    limits.origin
                )));
            }
            Ok(limits)
        });
        match result {
            Ok(limits) => {
                self.set_limits(limits);
                Ok(())
            }
            Err(e) => {
                bump(&self.counters.reload_failures, 1);
                Err(e)
            }
        }
    }

    /// Replaces the limits, keeping all live state.
    pub fn set_limits(&mut self, limits: Limits) {
        self.checker.set_limits(limits);
        bump(&self.counters.reloads, 1);
    }

    /// Answers a request that arrived as several frames (not part of the protocol).
    pub fn handle_multipart(&mut self, first: &[u8], reply: &mut Vec<u8>) {
        bump(&self.counters.requests, 1);
        bump(&self.counters.malformed, 1);
        let text = "multi-part requests are not supported: send one frame";
        if first.starts_with(&REQUEST_MAGIC) {
            encode_error_reply(peek_batch_id(first), Status::Malformed, text, reply);
        } else {
            error_text(reply, format_args!("{text}"));
        }
    }

    /// Answers one request frame; `reply` is replaced by the reply frame.
    pub fn handle(&mut self, request: &[u8], reply: &mut Vec<u8>) {
        self.dispatch(request, reply);
        // The order-id table's size, for the metrics endpoint (two stores per request).
        let (slots, grows) = self.checker.id_table_stats();
        self.counters
            .order_id_table_slots
            .store(slots as u64, Relaxed);
        self.counters.order_id_table_grows.store(grows, Relaxed);
    }

    fn dispatch(&mut self, request: &[u8], reply: &mut Vec<u8>) {
        bump(&self.counters.requests, 1);
        reply.clear();
        if request.starts_with(&REQUEST_MAGIC) {
            self.handle_batch(request, reply);
            return;
        }
        match request.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => self.handle_json(request, reply),
            _ => {
                bump(&self.counters.malformed, 1);
                error_text(
                    reply,
                    format_args!(
                        "malformed request: expected the binary magic \"RSKQ\" or a JSON object"
                    ),
                );
            }
        }
    }

    fn handle_batch(&mut self, request: &[u8], reply: &mut Vec<u8>) {
        let max_len = request_v2_len_bytes(self.max_batch);
        if request.len() > max_len {
            bump(&self.counters.too_large, 1);
            let text = format!(
                "request of {} bytes exceeds the maximum of {max_len} ({} orders)",
                request.len(),
                self.max_batch
            );
            encode_error_reply(peek_batch_id(request), Status::TooLarge, &text, reply);
            return;
        }
        let h = match decode_request_header(request, self.max_batch) {
            Ok(h) => h,
            Err(e) => {
                if e.status() == Status::TooLarge {
                    bump(&self.counters.too_large, 1);
                } else {
                    bump(&self.counters.malformed, 1);
                }
                encode_error_reply(peek_batch_id(request), e.status(), &e.to_string(), reply);
                return;
            }
        };
        if h.kind == REQUEST_TYPE_VOID {
            self.handle_void(request, &h, reply);
            return;
        }
        if h.kind == REQUEST_TYPE_HELLO {
            self.handle_hello(request, &h, reply);
            return;
        }
        if h.kind == REQUEST_TYPE_NAMES {
            self.handle_names(request, &h, reply);
            return;
        }
        if !self.checker.begin_batch(h.session_id, h.batch_id) {
            // A void of this session named this batch before it arrived: the client has
            // already rejected its orders; applying it now would over-count.
            bump(&self.counters.refused_voided_batches, 1);
            let text = "this batch was voided before it arrived; nothing was applied";
            encode_error_reply(h.batch_id, Status::Voided, text, reply);
            return;
        }
        let count = h.count as usize;
        reply.resize(reply_len_bytes(count), 0);
        encode_reply_header(
            &ReplyHeader {
                status: Status::Ok,
                batch_id: h.batch_id,
                count: h.count,
                text_len: 0,
            },
            reply,
        );
        // Decode first (undecodable order bytes are rejected on their own, the batch goes on),
        // then check in order, a chunk at a time after starting the chunk's memory loads
        // (`PREFETCH_CHUNK_ORDERS`).
        for i in 0..count {
            self.decoded[i] = orders::decode_order(request_order(request, i)).ok();
        }
        let mut valid = 0;
        for o in self.decoded[..count].iter().flatten() {
            self.valid[valid] = *o;
            valid += 1;
        }
        // A limit keyed by a name not bound yet could be that of any named account this
        // service cannot name: such orders are refused, never checked under other limits.
        let gate_names = self.checker.limits().has_unbound_account_names();
        let mut warmed = 0; // valid orders whose loads have been started
        for i in 0..count {
            if i % PREFETCH_CHUNK_ORDERS == 0 {
                let end = (i + PREFETCH_CHUNK_ORDERS).min(count);
                let n = self.decoded[i..end].iter().flatten().count();
                self.checker
                    .prefetch(&self.valid[warmed..(warmed + n).min(valid)]);
                warmed += n;
            }
            self.checker.begin_order();
            let (order_id, reason) = match &self.decoded[i] {
                Some(o)
                    if gate_names
                        && orders::is_named_account(o.account)
                        && self.names.name(o.account).is_none() =>
                {
                    (o.order_id, Reason::UnknownAccount)
                }
                Some(o) => (o.order_id, self.checker.check(o, h.now_ns)),
                None => (
                    raw_order_id(request_order(request, i)),
                    Reason::InvalidOrder,
                ),
            };
            bump(&self.counters.verdicts[reason.code() as usize], 1);
            encode_verdict(i, order_id, reason, reply);
        }
        self.checker.end_batch();
        bump(&self.counters.batches, 1);
        bump(&self.counters.batch_orders, count as u64);
    }

    /// A void request: undo the named batches of the session if they are the newest applied
    /// (see [`Checker::void_batches`]); one result per batch id.
    fn handle_void(&mut self, request: &[u8], h: &RequestHeader, reply: &mut Vec<u8>) {
        let count = h.count as usize;
        debug_assert!(count <= VOID_BATCH_IDS_MAX);
        let mut ids = [0u64; VOID_BATCH_IDS_MAX];
        for (i, id) in ids[..count].iter_mut().enumerate() {
            *id = void_batch_id(request, i);
        }
        let mut outcomes = [VoidOutcome::Unknown; VOID_BATCH_IDS_MAX];
        self.checker
            .void_batches(h.session_id, &ids[..count], &mut outcomes[..count]);
        reply.resize(reply_len_bytes(count), 0);
        encode_reply_header(
            &ReplyHeader {
                status: Status::Ok,
                batch_id: h.batch_id,
                count: h.count,
                text_len: 0,
            },
            reply,
        );
        for (i, (&id, &outcome)) in ids[..count].iter().zip(&outcomes[..count]).enumerate() {
            match outcome {
                VoidOutcome::Voided => bump(&self.counters.voided_batches, 1),
                VoidOutcome::Unknown => bump(&self.counters.void_unknown, 1),
                VoidOutcome::TooOld => bump(&self.counters.void_too_old, 1),
            }
            encode_void_result(i, id, outcome, reply);
        }
        bump(&self.counters.void_requests, 1);
    }

    /// A hello: reconcile with the client's journal (see [`Checker::reconcile`]) and tell the
    /// client the batch bound.
    fn handle_hello(&mut self, request: &[u8], h: &RequestHeader, reply: &mut Vec<u8>) {
        let point = hello_journal_point(request);
        let (outcome, voided) = self.checker.reconcile(h.session_id, point);
        bump(&self.counters.hello_requests, 1);
        bump(&self.counters.reconciled_batches, voided);
        if outcome == VoidOutcome::TooOld {
            bump(&self.counters.reconcile_refusals, 1);
        }
        if point.prev_session != 0 {
            tracing::info!(
                session = format_args!("{:016x}", h.session_id),
                prev_session = format_args!("{:016x}", point.prev_session),
                journaled_batch = point.journaled_batch,
                voided,
                outcome = outcome.as_str(),
                "a client resumed: reconciled with its journal"
            );
        }
        reply.resize(reply_len_bytes(1), 0);
        encode_reply_header(
            &ReplyHeader {
                status: Status::Ok,
                batch_id: h.batch_id,
                count: 1,
                text_len: 0,
            },
            reply,
        );
        encode_hello_result(
            &HelloResult {
                voided,
                outcome,
                max_batch: u32::try_from(self.max_batch).unwrap_or(u32::MAX),
            },
            reply,
        );
    }

    fn handle_json(&mut self, request: &[u8], reply: &mut Vec<u8>) {
        if request.len() > JSON_REQUEST_LEN_BYTES_MAX {
            bump(&self.counters.too_large, 1);
            let len = request.len();
            if self.short_reject(
                reply,
                format_args!("JSON request of {len} bytes exceeds {JSON_REQUEST_LEN_BYTES_MAX}"),
            ) {
                return;
            }
            error_text(
                reply,
                format_args!(
                    "JSON request of {} bytes exceeds the maximum of {JSON_REQUEST_LEN_BYTES_MAX}",
                    request.len()
                ),
            );
            return;
        }
        let req: JsonRequest = match serde_json::from_slice(request) {
            Ok(r) => r,
            Err(e) => {
                bump(&self.counters.malformed, 1);
                if self.short_reject(reply, format_args!("malformed JSON request: {e}")) {
                    return;
                }
                error_text(reply, format_args!("malformed JSON request: {e}"));
                return;
            }
        };
        match req.admin.as_deref() {
            Some(cmd) => {
                let cmd = cmd.to_owned();
                self.handle_admin(&cmd, req, reply)
            }
            None => match self.json_order(&req) {
                Ok(order) => {
                    let reason = self.checker.check(&order, wall_clock_ns());
                    bump(&self.counters.verdicts[reason.code() as usize], 1);
                    bump(&self.counters.json_orders, 1);
                    if reason.is_accepted() {
                        reply.extend_from_slice(b"OK");
                    } else if self.json_replies == JsonReplies::Short {
                        tracing::info!(
                            reply = "REJECT",
                            reason = reason.as_str(),
                            order_id = order.order_id,
                            symbol = order.symbol.as_str(),
                            "JSON order rejected"
                        );
                        reply.extend_from_slice(b"REJECT");
                    } else {
                        let _ = write!(reply, "REJECT {}", reason.as_str());
                    }
                }
                Err(text) => {
                    bump(&self.counters.malformed, 1);
                    if self.short_reject(reply, format_args!("malformed JSON order: {text}")) {
                        return;
                    }
                    error_text(reply, format_args!("malformed JSON order: {text}"));
                }
            },
        }
    }

    fn json_order(&mut self, req: &JsonRequest) -> Result<Order, String> {
        let symbol = req.symbol.as_deref().ok_or("missing field `symbol`")?;
        let symbol = Symbol::new(symbol).map_err(|e| e.to_string())?;
        let qty = req.quantity.ok_or("missing field `quantity`")?;
        let price = req.price.as_deref().ok_or("missing field `price`")?;
        let price = orders::parse_number_price_ticks(price.get()).map_err(|e| e.to_string())?;
        let side = match req.side.as_deref() {
            None => Side::Buy,
            Some(s) => Side::parse(s)
                .ok_or_else(|| format!("side {s:?} is not BUY, SELL, B, S, 1 or 2"))?,
        };
        let kind = match req.kind.as_deref() {
            None => OrderKind::New,
            Some(k) => OrderKind::parse(k)
                .ok_or_else(|| format!("kind {k:?} is not new, cancel, fill, halt or resume"))?,
        };
        let order_id = match req.order_id {
            Some(id) if orders::is_reserved_order_id(id) => {
                return Err(format!(
                    "order_id {id} is 2^63 or more: that range is reserved for assigned ids \
                     (leave `order_id` out, or use an id below 2^63)"
                ))
            }
            Some(id) => id,
            None => self.json_ids.next_id(),
        };
        Ok(Order {
            order_id,
            ts_ns: 0,
            price,
            qty,
            account: req.account.unwrap_or(self.checker.limits().json_account),
            symbol,
            side,
            kind,
        })
    }

    fn handle_admin(&mut self, cmd: &str, req: JsonRequest, reply: &mut Vec<u8>) {
        bump(&self.counters.admin_requests, 1);
        let value = match self.admin(cmd, &req) {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "ok": false, "error": e }),
        };
        if serde_json::to_writer(&mut *reply, &value).is_err() {
            reply.clear();
            reply.extend_from_slice(br#"{"ok":false,"error":"reply could not be encoded"}"#);
        }
    }

    fn admin(&mut self, cmd: &str, req: &JsonRequest) -> Result<serde_json::Value, String> {
        if req.quantity.is_some()
            || req.price.is_some()
            || req.order_id.is_some()
            || req.side.is_some()
            || req.kind.is_some()
        {
            return Err("admin requests take only `account` or `symbol`".to_owned());
        }
        let state = match cmd {
            "halt" => Some(TradingState::Halted),
            "reduce" => Some(TradingState::Reducing),
            "resume" => Some(TradingState::Active),
            _ => None,
        };
        if let Some(state) = state {
            let scope = match (req.account, req.symbol.as_deref()) {
                (None, None) => Scope::Global,
                (Some(a), None) => Scope::Account(a),
                (None, Some(s)) => Scope::Symbol(Symbol::new(s).map_err(|e| e.to_string())?),
                (Some(_), Some(_)) => {
                    return Err("name an account or a symbol, not both".to_owned())
                }
            };
            self.checker.set_trading_state(scope, state);
            let scope = match scope {
                Scope::Global => serde_json::json!("global"),
                Scope::Account(a) => serde_json::json!({ "account": a }),
                Scope::Symbol(s) => serde_json::json!({ "symbol": s.as_str() }),
            };
            return Ok(serde_json::json!({ "ok": true, "scope": scope, "admin_state": state }));
        }
        if req.account.is_some() || req.symbol.is_some() {
            return Err(format!("admin `{cmd}` takes no account or symbol"));
        }
        match cmd {
            "reload" => match self.reload() {
                Ok(()) => Ok(serde_json::json!({
                    "ok": true,
                    "origin": self.checker.limits().origin,
                })),
                Err(e) => Err(error_chain(&e)),
            },
            "stats" => Ok(serde_json::json!({ "ok": true, "stats": self.stats() })),
            "snapshot" => {
                Ok(serde_json::json!({ "ok": true, "snapshot": self.checker.snapshot() }))
            }
            _ => Err(format!(
                "unknown admin command {cmd:?} (halt, reduce, resume, reload, stats, snapshot)"
            )),
        }
    }
}

/// Writes `ERROR <text>` (truncated to the error text limit) into `reply`.
fn error_text(reply: &mut Vec<u8>, text: std::fmt::Arguments<'_>) {
    reply.clear();
    reply.extend_from_slice(b"ERROR ");
    let _ = reply.write_fmt(text);
    let max = b"ERROR ".len() + ERROR_TEXT_LEN_BYTES_MAX;
    if reply.len() > max {
        let mut end = max;
        while end > 0 && (reply[end] & 0xC0) == 0x80 {
            end -= 1;
        }
        reply.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::{
        decode_reply_header, decode_verdict, decode_void_result, encode_request, encode_request_v2,
        encode_void_request, reply_text, request_len_bytes, void_request_len_bytes,
    };
    use proptest::prelude::*;

    const LIMITS: &str = r#"
[global]
json_account = 3
duplicate_horizon_orders = 1024
[capacity]
max_open_orders = 1024
[defaults]
max_order_qty = 1000
max_order_notional = 1000000
max_long_qty = 100000
max_short_qty = 100000
credit_limit_notional = 100000000
collar_bps = 1000
[symbols.AAPL]
reference_price = 185.25
"#;

    fn service(max_batch: usize) -> Service {
        let limits = Limits::from_toml_str(LIMITS, "t").unwrap();
        Service::new(
            Checker::new(limits),
            ServiceOptions {
                max_batch_orders: max_batch,
                config_path: None,
            },
        )
    }

    fn text(reply: &[u8]) -> &str {
        std::str::from_utf8(reply).unwrap()
    }

    fn order(id: u64, qty: u64) -> Order {
        Order {
            order_id: id,
            ts_ns: 0,
            price: 1_852_500,
            qty,
            account: 1,
            symbol: Symbol::new("AAPL").unwrap(),
            side: Side::Buy,
            kind: OrderKind::New,
        }
    }

    fn json_id(s: &mut Service, json: &str) -> Result<u64, String> {
        let req: JsonRequest = serde_json::from_str(json).unwrap();
        s.json_order(&req).map(|o| o.order_id)
    }

    /// Issue 14 item 5: JSON orders without `order_id` get `2^63 + 2^62 + n`, n counting up
    /// from the wall clock, so a server started later never gives an id an earlier run gave;
    /// explicit ids work as before below 2^63 and are refused in the reserved range.
    #[test]
    fn json_orders_without_an_id_get_restart_safe_ids() {
        let req = r#"{"symbol":"AAPL","quantity":1,"price":185.25}"#;
        let mut first = service(8);
        let ids: Vec<u64> = (0..1000)
            .map(|_| json_id(&mut first, req).unwrap())
            .collect();
        let tag = (1u64 << 63) | (1 << 62);
        assert!(ids.iter().all(|id| id & tag == tag), "{:x}", ids[0]);
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1));
        // A restarted server (a new Service, as risk-server builds at start-up).
        let mut second = service(8);
        let next = json_id(&mut second, req).unwrap();
        assert!(next > ids[999], "{next} must be above {}", ids[999]);
        // Each is accepted by the checker as a new id: no false duplicate.
        let mut reply = Vec::new();
        second.handle(req.as_bytes(), &mut reply);
        second.handle(req.as_bytes(), &mut reply);
        assert_eq!(text(&reply), "OK");
        // Explicit ids.
        let with =
            |id: u64| format!(r#"{{"symbol":"AAPL","quantity":1,"price":185.25,"order_id":{id}}}"#);
        assert_eq!(json_id(&mut second, &with(5)), Ok(5));
        assert_eq!(
            json_id(&mut second, &with((1 << 63) - 1)),
            Ok((1 << 63) - 1)
        );
        let e = json_id(&mut second, &with(1 << 63)).unwrap_err();
        assert!(e.contains("reserved"), "{e}");
        second.handle(with(u64::MAX).as_bytes(), &mut reply);
        assert!(text(&reply).starts_with("ERROR"), "{}", text(&reply));
    }

    #[test]
    fn binary_batch_round_trip() {
        let mut s = service(8);
        let orders = [order(1, 10), order(2, 2000), order(1, 10)];
        let mut req = vec![0u8; request_len_bytes(3)];
        encode_request(77, 5, &orders, &mut req);
        // Corrupt the third order's side byte: it is rejected on its own.
        let mut reply = Vec::new();
        s.handle(&req, &mut reply);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!((h.status, h.batch_id, h.count), (Status::Ok, 77, 3));
        assert_eq!(decode_verdict(&reply, 0).unwrap(), (1, Reason::Accepted));
        assert_eq!(decode_verdict(&reply, 1).unwrap(), (2, Reason::MaxQty));
        assert_eq!(
            decode_verdict(&reply, 2).unwrap(),
            (1, Reason::DuplicateOrderId)
        );
        req[32 + 2 * 48 + 44] = 9;
        s.handle(&req, &mut reply);
        assert_eq!(
            decode_verdict(&reply, 2).unwrap(),
            (1, Reason::InvalidOrder)
        );
        let st = s.stats();
        assert_eq!((st.batches, st.batch_orders), (2, 6));
        assert_eq!(st.verdicts["accepted"], 1);
    }

    /// A batch spanning several prefetch chunks, with undecodable orders in it: the verdicts
    /// are those of checking the orders one by one (`InvalidOrder` where the bytes are bad).
    #[test]
    fn chunked_batches_with_invalid_orders_match_one_by_one_checks() {
        let n = 5 * PREFETCH_CHUNK_ORDERS + 7;
        let mut s = service(n);
        let orders: Vec<Order> = (0..n as u64)
            .map(|i| order(1 + i % (n as u64 - 40), if i % 11 == 0 { 2000 } else { 10 }))
            .collect();
        let mut req = vec![0u8; request_len_bytes(n)];
        encode_request(9, 5, &orders, &mut req);
        let bad: Vec<usize> = (0..n).filter(|i| i % 7 == 3).collect();
        for &i in &bad {
            req[32 + i * 48 + 44] = 9; // side byte: does not decode
        }
        let mut reply = Vec::new();
        s.handle(&req, &mut reply);
        let mut reference = Checker::new(Limits::from_toml_str(LIMITS, "t").unwrap());
        for (i, o) in orders.iter().enumerate() {
            let want = if bad.contains(&i) {
                Reason::InvalidOrder
            } else {
                reference.check(o, 5)
            };
            assert_eq!(
                decode_verdict(&reply, i).unwrap(),
                (o.order_id, want),
                "{i}"
            );
        }
    }

    #[test]
    fn truncated_oversized_and_garbage_frames_get_error_replies() {
        let mut s = service(2);
        let orders = [order(1, 1), order(2, 1), order(3, 1)];
        let mut req = vec![0u8; request_len_bytes(3)];
        encode_request(5, 0, &orders, &mut req);
        let mut reply = Vec::new();
        s.handle(&req, &mut reply);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!((h.status, h.batch_id), (Status::TooLarge, 5));
        assert!(
            reply_text(&reply, &h).contains("exceeds"),
            "{}",
            reply_text(&reply, &h)
        );
        // Truncated (count says 2, one order present).
        encode_request(6, 0, &orders[..2], &mut req);
        s.handle(&req[..request_len_bytes(1)], &mut reply);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!((h.status, h.batch_id), (Status::Malformed, 6));
        // Bad version.
        let mut bad = req[..request_len_bytes(2)].to_vec();
        bad[4] = 9;
        s.handle(&bad, &mut reply);
        assert_eq!(
            decode_reply_header(&reply).unwrap().status,
            Status::UnsupportedVersion
        );
        // Garbage and empty frames.
        s.handle(b"hello", &mut reply);
        assert!(
            text(&reply).starts_with("ERROR malformed request"),
            "{}",
            text(&reply)
        );
        s.handle(b"", &mut reply);
        assert!(text(&reply).starts_with("ERROR "));
        let big = vec![b' '; JSON_REQUEST_LEN_BYTES_MAX]
            .into_iter()
            .chain(*b"{}")
            .collect::<Vec<u8>>();
        s.handle(&big, &mut reply);
        assert!(
            text(&reply).starts_with("ERROR JSON request of"),
            "{}",
            text(&reply)
        );
        let st = s.stats();
        assert_eq!((st.malformed, st.too_large), (4, 2));
    }

    #[test]
    fn json_orders_as_in_the_source_design() {
        let mut s = service(8);
        let mut reply = Vec::new();
        s.handle(
            br#"{"symbol":"AAPL","quantity":100,"price":185.25}"#,
            &mut reply,
        );
        assert_eq!(text(&reply), "OK");
        s.handle(
            br#"  {"symbol":"AAPL","quantity":1001,"price":185.25}"#,
            &mut reply,
        );
        assert_eq!(text(&reply), "REJECT max-qty");
        s.handle(br#"{"symbol":"AAPL","quantity":1,"price":500}"#, &mut reply);
        assert_eq!(text(&reply), "REJECT price-collar");
        s.handle(br#"{"symbol":"AAPL","quantity":1,"price":185.25,"order_id":9,"side":"SELL","account":4}"#, &mut reply);
        assert_eq!(text(&reply), "OK");
        s.handle(
            br#"{"symbol":"AAPL","quantity":1,"price":185.25,"order_id":9}"#,
            &mut reply,
        );
        assert_eq!(text(&reply), "REJECT duplicate-order-id");
        // Orders without an id get distinct server ids; without an account, json_account.
        assert_eq!(
            s.checker()
                .position(3, Symbol::new("AAPL").unwrap())
                .open_buy_qty,
            100
        );
        assert_eq!(
            s.checker()
                .position(4, Symbol::new("AAPL").unwrap())
                .open_sell_qty,
            1
        );
        for (bad, want) in [
            (
                &br#"{"symbol":"AAPL","quantity":1}"#[..],
                "missing field `price`",
            ),
            (
                br#"{"symbol":"AAPL","quantity":-1,"price":1}"#,
                "malformed JSON request",
            ),
            (
                br#"{"symbol":"AAPL","qty":1,"price":1}"#,
                "unknown field `qty`",
            ),
            (
                br#"{"symbol":"AAPL","quantity":1,"price":1.00001}"#,
                "more than 4 decimal places",
            ),
            (
                br#"{"symbol":"AAPL","quantity":1,"price":1,"side":"up"}"#,
                "side \"up\"",
            ),
            (br#"{"symbol":"AAPL","#, "malformed JSON request"),
            (
                br#"{"symbol":"THIS IS TOO LONG","quantity":1,"price":1}"#,
                "symbol",
            ),
        ] {
            s.handle(bad, &mut reply);
            let t = text(&reply);
            assert!(
                t.starts_with("ERROR ") && t.contains(want),
                "{t:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn admin_requests() {
        let mut s = service(8);
        let mut reply = Vec::new();
        let mut admin = |s: &mut Service, req: &str| -> serde_json::Value {
            s.handle(req.as_bytes(), &mut reply);
            serde_json::from_slice(&reply).unwrap()
        };
        let v = admin(&mut s, r#"{"admin":"halt","symbol":"AAPL"}"#);
        assert_eq!(v["ok"], true, "{v}");
        let mut r = Vec::new();
        s.handle(br#"{"symbol":"AAPL","quantity":1,"price":185.25}"#, &mut r);
        assert_eq!(text(&r), "REJECT halted");
        assert_eq!(
            admin(&mut s, r#"{"admin":"resume","symbol":"AAPL"}"#)["ok"],
            true
        );
        assert_eq!(
            admin(&mut s, r#"{"admin":"reduce","account":3}"#)["ok"],
            true
        );
        s.handle(br#"{"symbol":"AAPL","quantity":1,"price":185.25}"#, &mut r);
        assert_eq!(text(&r), "REJECT reduce-only");
        assert_eq!(
            admin(&mut s, r#"{"admin":"halt"}"#)["admin_state"],
            "halted"
        );
        let v = admin(&mut s, r#"{"admin":"snapshot"}"#);
        assert_eq!(v["snapshot"]["admin_state"], "halted", "{v}");
        let v = admin(&mut s, r#"{"admin":"stats"}"#);
        assert_eq!(v["stats"]["admin_requests"], 6, "{v}");
        let v = admin(&mut s, r#"{"admin":"reload"}"#);
        assert_eq!(v["ok"], false);
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("without a limits file"),
            "{v}"
        );
        assert_eq!(admin(&mut s, r#"{"admin":"explode"}"#)["ok"], false);
        assert_eq!(
            admin(&mut s, r#"{"admin":"halt","account":1,"symbol":"X"}"#)["ok"],
            false
        );
        assert_eq!(
            admin(&mut s, r#"{"admin":"stats","account":1}"#)["ok"],
            false
        );
        assert_eq!(
            admin(&mut s, r#"{"admin":"halt","quantity":1}"#)["ok"],
            false
        );
    }

    #[test]
    fn reload_from_file_keeps_state_and_survives_a_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.toml");
        std::fs::write(&path, LIMITS).unwrap();
        let mut s = Service::new(
            Checker::new(Limits::from_file(&path).unwrap()),
            ServiceOptions {
                max_batch_orders: 8,
                config_path: Some(path.clone()),
            },
        );
        let mut r = Vec::new();
        s.handle(
            br#"{"symbol":"AAPL","quantity":500,"price":185.25,"order_id":1}"#,
            &mut r,
        );
        assert_eq!(text(&r), "OK");
        std::fs::write(
            &path,
            LIMITS.replace("max_order_qty = 1000", "max_order_qty = 10"),
        )
        .unwrap();
        s.reload().unwrap();
        s.handle(br#"{"symbol":"AAPL","quantity":11,"price":185.25}"#, &mut r);
        assert_eq!(text(&r), "REJECT max-qty");
        assert_eq!(
            s.checker()
                .position(3, Symbol::new("AAPL").unwrap())
                .open_buy_qty,
            500
        );
        std::fs::write(&path, "[defaults]\nmax_order_qty = 0\n").unwrap();
        let e = s.reload().unwrap_err();
        assert!(
            error_chain(&e).contains("max_order_qty: must be > 0"),
            "{}",
            error_chain(&e)
        );
        s.handle(br#"{"symbol":"AAPL","quantity":10,"price":185.25}"#, &mut r);
        assert_eq!(text(&r), "OK", "the old limits stay after a failed reload");
        let st = s.stats();
        assert_eq!((st.reloads, st.reload_failures), (1, 1));
    }

    fn batch_v2(s: &mut Service, session: u64, batch: u64, orders: &[Order]) -> Vec<u8> {
        let mut req = vec![0u8; request_v2_len_bytes(orders.len())];
        encode_request_v2(session, batch, 5, orders, &mut req);
        let mut reply = Vec::new();
        s.handle(&req, &mut reply);
        reply
    }

    #[test]
    fn limits_keyed_by_name_wait_for_the_clients_names_then_apply() {
        use orders::NAMED_ACCOUNT_BASE as B;
        let text_of = format!("{LIMITS}\n[accounts.ACC12]\nmax_order_qty = 10\n");
        let limits = Limits::from_toml_str(&text_of, "t").unwrap();
        let mut s = Service::new(
            Checker::new(limits),
            ServiceOptions {
                max_batch_orders: 16,
                config_path: None,
            },
        );
        let order = |id: u64, account: u32, qty: u64| Order {
            account,
            ..order(id, qty)
        };
        let reasons = |reply: &[u8], n: usize| -> Vec<Reason> {
            (0..n)
                .map(|i| decode_verdict(reply, i).unwrap().1)
                .collect()
        };
        // Before the names: a named account the server cannot name is refused (it could be
        // ACC12's); numeric accounts are checked as ever.
        let r = batch_v2(&mut s, 7, 1, &[order(1, B, 50), order(2, 4, 50)]);
        assert_eq!(reasons(&r, 2), [Reason::UnknownAccount, Reason::Accepted]);
        // The names: ACC12 is B + 1.
        let mut req = Vec::new();
        crate::protocol::encode_names_request(7, 2, &[(B, "ACC11"), (B + 1, "ACC12")], &mut req);
        let mut reply = Vec::new();
        s.handle(&req, &mut reply);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!((h.status, h.batch_id, h.count), (Status::Ok, 2, 0));
        let r = batch_v2(
            &mut s,
            7,
            3,
            &[order(3, B, 50), order(4, B + 1, 50), order(5, B + 1, 5)],
        );
        assert_eq!(
            reasons(&r, 3),
            [Reason::Accepted, Reason::MaxQty, Reason::Accepted]
        );
        // A conflicting binding (another table) is refused, the learned one kept.
        crate::protocol::encode_names_request(7, 4, &[(B, "OTHER")], &mut req);
        s.handle(&req, &mut reply);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!(h.status, Status::Malformed);
        assert!(
            reply_text(&reply, &h).contains("OTHER"),
            "{}",
            reply_text(&reply, &h)
        );
        let r = batch_v2(&mut s, 7, 5, &[order(6, B + 1, 50)]);
        assert_eq!(reasons(&r, 1), [Reason::MaxQty]);
        assert_eq!(s.stats().names_requests, 2);
    }

    fn void_req(s: &mut Service, session: u64, ids: &[u64]) -> Vec<(u64, VoidOutcome)> {
        let mut req = vec![0u8; void_request_len_bytes(ids.len())];
        encode_void_request(session, 900, ids, &mut req);
        let mut reply = Vec::new();
        s.handle(&req, &mut reply);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!(
            (h.status, h.batch_id, h.count as usize),
            (Status::Ok, 900, ids.len())
        );
        (0..ids.len())
            .map(|i| decode_void_result(&reply, i).unwrap())
            .collect()
    }

    #[test]
    fn void_request_undoes_the_last_batch_and_refuses_late_ones() {
        let mut s = service(8);
        let before = s.checker().snapshot();
        let reply = batch_v2(&mut s, 77, 1, &[order(1, 10), order(2, 20)]);
        assert_eq!(decode_verdict(&reply, 1).unwrap(), (2, Reason::Accepted));
        assert_ne!(s.checker().snapshot(), before);
        assert_eq!(
            void_req(&mut s, 77, &[1, 2]),
            [(1, VoidOutcome::Voided), (2, VoidOutcome::Unknown)]
        );
        assert_eq!(s.checker().snapshot(), before);
        // Batch 2 arrives after its void: refused, nothing applied.
        let reply = batch_v2(&mut s, 77, 2, &[order(3, 10)]);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!((h.status, h.count), (Status::Voided, 0));
        assert_eq!(s.checker().snapshot(), before);
        // A JSON order after a batch: the batch can no longer be undone.
        batch_v2(&mut s, 77, 3, &[order(4, 10)]);
        let mut r = Vec::new();
        s.handle(br#"{"symbol":"AAPL","quantity":1,"price":185.25}"#, &mut r);
        assert_eq!(text(&r), "OK");
        assert_eq!(void_req(&mut s, 77, &[3]), [(3, VoidOutcome::TooOld)]);
        let st = s.stats();
        assert_eq!(
            (
                st.void_requests,
                st.voided_batches,
                st.void_unknown,
                st.void_too_old
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(st.refused_voided_batches, 1);
        // The admin stats carry the counters.
        s.handle(br#"{"admin":"stats"}"#, &mut r);
        let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(v["stats"]["voided_batches"], 1, "{v}");
        // Malformed voids get error replies: no batch ids, session 0.
        let mut req = vec![0u8; void_request_len_bytes(1)];
        encode_void_request(77, 1, &[5], &mut req);
        req[24] = 0;
        s.handle(&req, &mut r);
        assert_eq!(decode_reply_header(&r).unwrap().status, Status::Malformed);
    }

    /// Regression (issue #4): more ids than the configured capacity grow the order-id table
    /// incrementally, and the admin `stats` show it (slots and growths).
    #[test]
    fn order_id_table_growth_shows_in_the_stats() {
        let limits = Limits::from_toml_str(
            &LIMITS
                .replace(
                    "duplicate_horizon_orders = 1024",
                    "duplicate_horizon_orders = 16",
                )
                .replace("max_open_orders = 1024", "max_open_orders = 16")
                .replace("max_long_qty = 100000", "max_long_qty = 100000000")
                .replace(
                    "credit_limit_notional = 100000000",
                    "credit_limit_notional = 100000000000",
                ),
            "t",
        )
        .unwrap();
        let mut s = Service::new(Checker::new(limits), ServiceOptions::default());
        let slots = s.stats().order_id_table_slots;
        assert_eq!((slots, s.stats().order_id_table_grows), (64, 0));
        for b in 0..64u64 {
            let orders: Vec<Order> = (0..8).map(|i| order(1 + b * 8 + i, 1)).collect();
            let reply = batch_v2(&mut s, 5, b + 1, &orders);
            assert_eq!(decode_verdict(&reply, 7).unwrap().1, Reason::Accepted);
        }
        let mut r = Vec::new();
        s.handle(br#"{"admin":"stats"}"#, &mut r);
        let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
        assert!(
            v["stats"]["order_id_table_slots"].as_u64().unwrap() >= 1024,
            "{v}"
        );
        assert!(
            v["stats"]["order_id_table_grows"].as_u64().unwrap() >= 4,
            "{v}"
        );
        assert_eq!(s.checker().open_orders(), 512);
        s.checker().verify_consistency().unwrap();
    }

    #[test]
    fn multipart_gets_an_error_reply() {
        let mut s = service(8);
        let mut reply = Vec::new();
        s.handle_multipart(b"{}", &mut reply);
        assert!(text(&reply).starts_with("ERROR multi-part"));
        s.handle_multipart(b"RSKQ\x01\x00\x01\x00\x09\0\0\0\0\0\0\0", &mut reply);
        let h = decode_reply_header(&reply).unwrap();
        assert_eq!((h.status, h.batch_id), (Status::Malformed, 9));
    }

    proptest! {
        #[test]
        fn random_requests_always_get_a_reply(bytes in prop::collection::vec(any::<u8>(), 0..600), prefix in 0u8..3) {
            let mut s = service(4);
            let mut frame = match prefix {
                0 => REQUEST_MAGIC.to_vec(),
                1 => b"{".to_vec(),
                _ => Vec::new(),
            };
            frame.extend_from_slice(&bytes);
            let mut reply = Vec::new();
            s.handle(&frame, &mut reply);
            prop_assert!(!reply.is_empty());
            if frame.starts_with(&REQUEST_MAGIC) {
                prop_assert!(decode_reply_header(&reply).is_ok());
            } else {
                let t = String::from_utf8_lossy(&reply);
                prop_assert!(t == "OK" || t.starts_with("REJECT ") || t.starts_with("ERROR ") || t.starts_with('{'), "{}", t);
            }
        }

        #[test]
        fn random_valid_headers_with_random_orders(count in 0usize..6, body in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut s = service(4);
            let mut frame = vec![0u8; 32];
            encode_request(1, 0, &[], &mut frame);
            frame[24..28].copy_from_slice(&(count as u32).to_le_bytes());
            frame.extend_from_slice(&body);
            let mut reply = Vec::new();
            s.handle(&frame, &mut reply);
            let h = decode_reply_header(&reply).unwrap();
            if h.status == Status::Ok {
                prop_assert_eq!(h.count as usize, count);
            }
        }
    }
}
