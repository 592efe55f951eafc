//! The live feed: appended records on a ZeroMQ PUB socket (binary, batched), and optionally
//! one JSON object per record on a second PUB socket for polyglot subscribers.
//!
//! PUB drops messages for a subscriber that falls behind its high-water mark: the feed is a
//! fast path, not the source of truth. A subscriber that sees a gap in sequence numbers asks
//! the gap-fill service (`audit serve`) for the missing range, which reads it from the files.
//!
//! Security: [`Publisher::bind_secure`] binds under a [`zauth::ServerAuth`] policy (remote
//! endpoints need ZAP authentication or an explicit `insecure`); [`Publisher::bind`] uses the
//! default policy, which refuses remote endpoints. See `docs/security.md`.

use std::fmt;

use orders::{decode_decision, decode_order, format_price_ticks, Decision, Order};
use serde_json::{json, Map, Value};
use zauth::ServerAuth;

use crate::error::JournalError;
use crate::format::HASH_LEN_BYTES;
use crate::limits::{
    PUB_BATCH_BYTES_MAX, PUB_BATCH_RECORDS_MAX, PUB_INBOUND_BYTES_MAX, PUB_LINGER_MS,
    PUB_SNDHWM_MESSAGES_DEFAULT,
};
use crate::security::bind_server;
use crate::snapshot::{snapshot_file_name, SnapshotRecord};
use crate::wire::{entry_len, push_entry, write_pub_header, PUB_BATCH_HEADER_LEN_BYTES};
use crate::{KIND_DECISION, KIND_ORDER, KIND_SNAPSHOT};

/// Counters of a publisher.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Binary messages sent.
    pub messages: u64,
    /// Records sent in them.
    pub records: u64,
    /// Binary messages that ZeroMQ refused to queue (would block).
    pub dropped_messages: u64,
    /// JSON messages sent.
    pub json_messages: u64,
}

/// The encoding of a publisher's main feed socket (`engine --audit-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeedFormat {
    /// Batches of binary record entries (`TTNP`, docs/formats/audit-feed.md).
    #[default]
    Binary,
    /// One JSON object per record ([`record_json`]): the source design's audit events,
    /// with `order_id`, `seq`, `verdict`, `reason` and the chain `hash`.
    Json,
}

/// Prefix of an endpoint that the PUB socket *connects* to (a subscriber that binds, as the
/// source design's audit service does) instead of binding: `connect:tcp://host:port`.
pub const CONNECT_PREFIX: &str = "connect:";

/// Publishes appended records; see the module documentation.
pub struct Publisher {
    /// The binary feed (`None`: a JSON-only publisher, [`FeedFormat::Json`]).
    socket: Option<zmq::Socket>,
    endpoint: String,
    json: Option<(zmq::Socket, String)>,
    buf: Vec<u8>,
    count: usize,
    stats: PublisherStats,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("endpoint", &self.endpoint)
            .field("json_endpoint", &self.json.as_ref().map(|(_, e)| e))
            .field("buffered", &self.count)
            .field("stats", &self.stats)
            .finish()
    }
}

fn bind_pub(
    ctx: &zmq::Context,
    endpoint: &str,
    sndhwm: i32,
    auth: &ServerAuth,
) -> Result<(zmq::Socket, String), JournalError> {
    let socket = ctx
        .socket(zmq::PUB)
        .map_err(|e| JournalError::zmq("create PUB socket", endpoint, e))?;
    socket
        .set_sndhwm(sndhwm)
        .map_err(|e| JournalError::zmq("set SNDHWM", endpoint, e))?;
    socket
        .set_linger(PUB_LINGER_MS)
        .map_err(|e| JournalError::zmq("set LINGER", endpoint, e))?;
    // What a subscriber sends is a subscription: refuse anything larger before allocating it.
    socket
        .set_maxmsgsize(PUB_INBOUND_BYTES_MAX as i64)
        .map_err(|e| JournalError::zmq("set MAXMSGSIZE", endpoint, e))?;
    if let Some(target) = endpoint.strip_prefix(CONNECT_PREFIX) {
        // Connecting out: nothing listens here, so there is no peer to authenticate; the
        // records go to whoever `target` is (the operator named it).
        socket
            .connect(target)
            .map_err(|e| JournalError::zmq("connect", target, e))?;
        return Ok((socket, endpoint.to_owned()));
    }
    let resolved = bind_server(ctx, &socket, endpoint, auth)?;
    Ok((socket, resolved))
}

impl Publisher {
    /// Binds the binary feed on `endpoint` and, when given, the JSON feed on `json_endpoint`
    /// (`tcp://127.0.0.1:*` picks a free port: see [`Publisher::endpoint`]), with the default
    /// security policy: in-process, ipc and loopback endpoints only (a remote endpoint is
    /// refused; use [`Publisher::bind_secure`]).
    pub fn bind(
        ctx: &zmq::Context,
        endpoint: &str,
        json_endpoint: Option<&str>,
    ) -> Result<Publisher, JournalError> {
        Publisher::bind_secure(ctx, endpoint, json_endpoint, &ServerAuth::default())
    }

    /// [`Publisher::bind`] under an authentication policy, for both sockets: a remote
    /// endpoint needs an allow-list or PLAIN credentials (or `auth.insecure`), and when `auth`
    /// configures either, a ZAP handler must already run on `ctx`
    /// ([`zauth::ZapHandler::start`], once per context, before binding).
    pub fn bind_secure(
        ctx: &zmq::Context,
        endpoint: &str,
        json_endpoint: Option<&str>,
        auth: &ServerAuth,
    ) -> Result<Publisher, JournalError> {
        Publisher::bind_secure_with_hwm(
            ctx,
            endpoint,
            json_endpoint,
            PUB_SNDHWM_MESSAGES_DEFAULT,
            auth,
        )
    }

    /// [`Publisher::bind`] with a given send high-water mark (messages).
    pub fn bind_with_hwm(
        ctx: &zmq::Context,
        endpoint: &str,
        json_endpoint: Option<&str>,
        sndhwm: i32,
    ) -> Result<Publisher, JournalError> {
        Publisher::bind_secure_with_hwm(
            ctx,
            endpoint,
            json_endpoint,
            sndhwm,
            &ServerAuth::default(),
        )
    }

    /// [`Publisher::bind_secure`] with a given send high-water mark (messages).
    pub fn bind_secure_with_hwm(
        ctx: &zmq::Context,
        endpoint: &str,
        json_endpoint: Option<&str>,
        sndhwm: i32,
        auth: &ServerAuth,
    ) -> Result<Publisher, JournalError> {
        Publisher::open(
            ctx,
            endpoint,
            FeedFormat::Binary,
            json_endpoint,
            sndhwm,
            auth,
        )
    }

    /// The general form: the main feed on `endpoint` in `format` (bound, or connected to a
    /// bound SUB when it starts with [`CONNECT_PREFIX`]), and an extra JSON feed on
    /// `json_endpoint` (same rules). With [`FeedFormat::Json`] the main feed carries one JSON
    /// object per record and there is no binary feed.
    pub fn open(
        ctx: &zmq::Context,
        endpoint: &str,
        format: FeedFormat,
        json_endpoint: Option<&str>,
        sndhwm: i32,
        auth: &ServerAuth,
    ) -> Result<Publisher, JournalError> {
        let (main, endpoint) = bind_pub(ctx, endpoint, sndhwm, auth)?;
        let extra = match json_endpoint {
            Some(ep) => Some(bind_pub(ctx, ep, sndhwm, auth)?),
            None => None,
        };
        let (socket, json) = match format {
            FeedFormat::Binary => (Some(main), extra),
            FeedFormat::Json => {
                if let Some((_, ep)) = &extra {
                    return Err(JournalError::zmq(
                        "a second JSON feed beside a JSON main feed",
                        ep,
                        zmq::Error::EINVAL,
                    ));
                }
                (None, Some((main, endpoint.clone())))
            }
        };
        let mut buf = Vec::with_capacity(PUB_BATCH_BYTES_MAX);
        buf.resize(PUB_BATCH_HEADER_LEN_BYTES, 0);
        Ok(Publisher {
            socket,
            endpoint,
            json,
            buf,
            count: 0,
            stats: PublisherStats::default(),
        })
    }

    /// The endpoint of the main feed (with the port chosen for `:*`; a connect endpoint as
    /// given).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The bound endpoint of the JSON feed.
    pub fn json_endpoint(&self) -> Option<&str> {
        self.json.as_ref().map(|(_, e)| e.as_str())
    }

    /// Counters.
    pub fn stats(&self) -> PublisherStats {
        self.stats
    }

    /// Queues one record; sends the batch when it is full. No allocation on the binary path
    /// (the batch buffer is sized at bind); the JSON object is built only when the JSON
    /// endpoint is configured.
    pub fn publish(
        &mut self,
        seq: u64,
        hash: &[u8; HASH_LEN_BYTES],
        kind: u16,
        ts_ns: u64,
        payload: &[u8],
    ) -> Result<(), JournalError> {
        if self.socket.is_none() {
            return self.publish_json(seq, hash, kind, ts_ns, payload);
        }
        if self.count > 0 && self.buf.len() + entry_len(payload.len()) > PUB_BATCH_BYTES_MAX {
            self.flush()?;
        }
        if self.buf.len() + entry_len(payload.len()) > PUB_BATCH_BYTES_MAX {
            return Err(JournalError::RecordTooLarge {
                payload_len: payload.len(),
                max: PUB_BATCH_BYTES_MAX - PUB_BATCH_HEADER_LEN_BYTES - entry_len(0),
            });
        }
        push_entry(&mut self.buf, seq, hash, kind, ts_ns, payload);
        self.count += 1;
        self.publish_json(seq, hash, kind, ts_ns, payload)?;
        if self.count >= PUB_BATCH_RECORDS_MAX {
            self.flush()?;
        }
        Ok(())
    }

    /// The record on the JSON feed, if there is one.
    fn publish_json(
        &mut self,
        seq: u64,
        hash: &[u8; HASH_LEN_BYTES],
        kind: u16,
        ts_ns: u64,
        payload: &[u8],
    ) -> Result<(), JournalError> {
        if let Some((socket, endpoint)) = &self.json {
            let text = record_json(seq, hash, kind, ts_ns, payload).to_string();
            socket
                .send(text.as_bytes(), zmq::DONTWAIT)
                .or_else(|e| {
                    if e == zmq::Error::EAGAIN {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| JournalError::zmq("send JSON", endpoint, e))?;
            self.stats.json_messages += 1;
        }
        Ok(())
    }

    /// Sends what is buffered (call at the end of each batch of work).
    pub fn flush(&mut self) -> Result<(), JournalError> {
        if self.count == 0 {
            return Ok(());
        }
        let Some(socket) = &self.socket else {
            self.count = 0;
            return Ok(());
        };
        write_pub_header(&mut self.buf, self.count as u16);
        match socket.send(&self.buf[..], zmq::DONTWAIT) {
            Ok(()) => {
                self.stats.messages += 1;
                self.stats.records += self.count as u64;
            }
            Err(zmq::Error::EAGAIN) => self.stats.dropped_messages += 1,
            Err(e) => {
                // The batch is dropped, not kept growing: subscribers recover its records by
                // gap fill from the journal.
                self.stats.dropped_messages += 1;
                self.buf.truncate(PUB_BATCH_HEADER_LEN_BYTES);
                self.count = 0;
                return Err(JournalError::zmq("send", &self.endpoint, e));
            }
        }
        self.buf.truncate(PUB_BATCH_HEADER_LEN_BYTES);
        self.count = 0;
        Ok(())
    }
}

/// Name of a record kind (`decision`, `order`, or `kind-N`).
pub fn kind_name(kind: u16) -> String {
    match kind {
        KIND_DECISION => "decision".into(),
        KIND_ORDER => "order".into(),
        KIND_SNAPSHOT => "snapshot".into(),
        crate::KIND_ACCOUNT_NAME => "account-name".into(),
        k => format!("kind-{k}"),
    }
}

fn order_fields(o: &Order, m: &mut Map<String, Value>) {
    m.insert("order_id".into(), json!(o.order_id));
    m.insert("order_kind".into(), json!(o.kind.as_str()));
    m.insert("side".into(), json!(o.side.as_str()));
    m.insert("symbol".into(), json!(o.symbol.as_str()));
    m.insert("quantity".into(), json!(o.qty));
    m.insert(
        "price".into(),
        json!(o.price as f64 / orders::TICKS_PER_UNIT as f64),
    );
    m.insert("price_ticks".into(), json!(o.price));
    m.insert("price_text".into(), json!(format_price_ticks(o.price)));
    m.insert("account".into(), json!(o.account));
    m.insert("order_ts_ns".into(), json!(o.ts_ns));
}

fn decision_fields(d: &Decision, m: &mut Map<String, Value>) {
    m.insert("input_seq".into(), json!(d.input_seq));
    order_fields(&d.order, m);
    m.insert(
        "verdict".into(),
        json!(if d.reason.is_accepted() {
            "accepted"
        } else {
            "rejected"
        }),
    );
    m.insert("reason".into(), json!(d.reason.as_str()));
    m.insert("t_in_ns".into(), json!(d.t_in_ns));
    m.insert("t_decided_ns".into(), json!(d.t_decided_ns));
    m.insert("t_checked_ns".into(), json!(d.t_checked_ns));
    m.insert("risk_session".into(), json!(d.risk_session));
    m.insert("risk_batch".into(), json!(d.risk_batch));
    m.insert("risk_batch_orders".into(), json!(d.risk_batch_orders));
}

/// One record as a JSON object: `seq`, `hash` (hex), `kind`, `kind_name`, `ts_ns`, and for
/// decisions `order_id`, the order's fields, `verdict` (`accepted`/`rejected`) and `reason`;
/// for orders the order's fields; for snapshots `covered_seq`, `file`, `file_len`, `sha256`;
/// for account names `account`, `account_name`, `table_len`;
/// for other kinds (or undecodable payloads) `payload_hex`.
pub fn record_json(
    seq: u64,
    hash: &[u8; HASH_LEN_BYTES],
    kind: u16,
    ts_ns: u64,
    payload: &[u8],
) -> Value {
    let mut m = Map::new();
    m.insert("seq".into(), json!(seq));
    m.insert("hash".into(), json!(hex::encode(hash)));
    m.insert("kind".into(), json!(kind));
    m.insert("kind_name".into(), json!(kind_name(kind)));
    m.insert("ts_ns".into(), json!(ts_ns));
    let decoded = match kind {
        KIND_DECISION => decode_decision(payload)
            .map(|d| {
                decision_fields(&d, &mut m);
                if let Some(r) = orders::decision_risk_reply(payload) {
                    m.insert(
                        "risk_reply".into(),
                        json!(String::from_utf8_lossy(r).into_owned()),
                    );
                }
            })
            .map_err(|e| e.to_string()),
        KIND_ORDER if payload.len() == orders::ORDER_LEN_BYTES => decode_order(payload)
            .map(|o| order_fields(&o, &mut m))
            .map_err(|e| e.to_string()),
        KIND_SNAPSHOT => match SnapshotRecord::decode(payload) {
            Some(r) => {
                m.insert("covered_seq".into(), json!(r.covered_seq));
                m.insert("file".into(), json!(snapshot_file_name(r.covered_seq)));
                m.insert("file_len".into(), json!(r.file_len));
                m.insert("sha256".into(), json!(hex::encode(r.sha256)));
                Ok(())
            }
            None => Err(String::new()),
        },
        crate::KIND_ACCOUNT_NAME => orders::decode_account_name_record(payload)
            .map(|r| {
                m.insert("account".into(), json!(r.id));
                m.insert("account_name".into(), json!(r.name));
                m.insert("table_len".into(), json!(r.table_len));
            })
            .map_err(|e| e.to_string()),
        _ => Err(String::new()),
    };
    if let Err(e) = decoded {
        if !e.is_empty() {
            m.insert("decode_error".into(), json!(e));
        }
        m.insert("payload_hex".into(), json!(hex::encode(payload)));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orders::{encode_decision, OrderKind, Reason, Side, Symbol};

    #[test]
    fn decision_json_names_everything() {
        let d = Decision {
            input_seq: 4,
            order: Order {
                order_id: 77,
                ts_ns: 5,
                price: 1_852_500,
                qty: 100,
                account: 3,
                symbol: Symbol::new("AAPL").unwrap(),
                side: Side::Sell,
                kind: OrderKind::New,
            },
            reason: Reason::MaxQty,
            t_in_ns: 10,
            t_decided_ns: 11,
            t_checked_ns: 10,
            risk_session: 0xabc,
            risk_batch: 5,
            risk_batch_orders: 3,
        };
        let mut p = [0u8; orders::DECISION_LEN_BYTES];
        encode_decision(&d, &mut p);
        let v = record_json(9, &[0xab; 32], KIND_DECISION, 12, &p);
        assert_eq!(v["seq"], 9);
        assert_eq!(v["hash"], "ab".repeat(32));
        assert_eq!(v["order_id"], 77);
        assert_eq!(v["symbol"], "AAPL");
        assert_eq!(v["side"], "SELL");
        assert_eq!(v["price"], 185.25);
        assert_eq!(v["quantity"], 100);
        assert_eq!(v["verdict"], "rejected");
        assert_eq!(v["reason"], "max-qty");
        assert_eq!(v["t_checked_ns"], 10);
        assert_eq!(v["risk_session"], 0xabc);
        assert_eq!(v["risk_batch"], 5);
        assert_eq!(v["risk_batch_orders"], 3);
        let other = record_json(1, &[0; 32], 77, 0, &[1, 2]);
        assert_eq!(other["payload_hex"], "0102");
        assert_eq!(other["kind_name"], "kind-77");
        let bad = record_json(1, &[0; 32], KIND_DECISION, 0, &[1, 2]);
        assert!(bad["decode_error"].is_string());
    }
}
