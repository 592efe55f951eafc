//! The engine's wire frames: orders in (ZeroMQ PULL) and accepted orders out (ZeroMQ PUSH).
//!
//! All integers little-endian. Orders use the 48-byte layout of [`orders::codec`].
//!
//! ```text
//! Ingress frame (one ZeroMQ message; a binary batch of orders)
//!  0       4       6       8               12              16
//!  +-------+-------+-------+---------------+---------------+------------------------------+
//!  | magic | ver   | flags | count u32     | reserved u32  | count × Order (48 bytes)     |
//!  | "ORDS"| u16=1 | u16=0 | 1..=1024      | = 0           |                              |
//!  +-------+-------+-------+---------------+---------------+------------------------------+
//!  length = 16 + count × 48 exactly
//!
//! A message whose first non-blank byte is `{` is one JSON order instead:
//!  {"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":100,"price":185.25,"kind":"new"}
//!  (kind defaults to "new", ts_ns to 0; "quantity" is accepted for "qty"; unknown keys refused;
//!  "price" is a JSON number with at most 4 decimal places, converted exactly from its text by
//!  `orders::parse_number_price_ticks`: 1000.12345 is refused, never rounded; without
//!  "order_id" the ingress gives the order 2^63 + its input_seq (`orders::order_ids`), and an
//!  explicit "order_id" of 2^63 or more is refused there; "account" is a number below 2^31 or
//!  an account name, "ACC11", interned by the ingress (`crate::account_names`))
//!
//! Egress frame (one ZeroMQ message per egress batch of accepted orders)
//!  0       4       6       8               12              16
//!  +-------+-------+-------+---------------+---------------+------------------------------+
//!  | magic | ver   | rsvd  | count u32     | reserved u32  | count × Entry (64 bytes)     |
//!  | "ACPT"| u16=1 | u16=0 | 1..=4096      | = 0           |                              |
//!  +-------+-------+-------+---------------+---------------+------------------------------+
//!  Entry:
//!  0               8               16                                              64
//!  +---------------+---------------+-----------------------------------------------+
//!  | input_seq u64 | journal_seq   | order (48 bytes)                              |
//!  |               | u64           |                                               |
//!  +---------------+---------------+-----------------------------------------------+
//! ```
//! `journal_seq` is the sequence number of the order's decision record in the audit journal:
//! the record exists before the frame is sent.

use std::borrow::Cow;

use orders::{decode_order, encode_order, DecodeError, Order, OrderKind, Side, Symbol};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::limits::{INGRESS_FRAME_ORDERS_MAX, MAX_BATCH_ORDERS_MAX};

/// Bytes of an ingress frame header.
pub const INGRESS_HEADER_LEN_BYTES: usize = 16;
/// Magic of an ingress frame: the bytes `ORDS`.
pub const INGRESS_MAGIC: [u8; 4] = *b"ORDS";
/// Version of the ingress frame layout.
pub const INGRESS_VERSION: u16 = 1;

/// Bytes of an egress frame header.
pub const EGRESS_HEADER_LEN_BYTES: usize = 16;
/// Bytes of one egress entry.
pub const EGRESS_ENTRY_LEN_BYTES: usize = 64;
/// Magic of an egress frame: the bytes `ACPT`.
pub const EGRESS_MAGIC: [u8; 4] = *b"ACPT";
/// Version of the egress frame layout.
pub const EGRESS_VERSION: u16 = 1;
/// Most entries in one egress frame (the largest batch).
pub const EGRESS_FRAME_ENTRIES_MAX: usize = MAX_BATCH_ORDERS_MAX;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 4;
const FLAGS_OFFSET: usize = 6;
const COUNT_OFFSET: usize = 8;
const RESERVED_OFFSET: usize = 12;
const _: () = assert!(RESERVED_OFFSET + 4 == INGRESS_HEADER_LEN_BYTES);
const _: () = assert!(INGRESS_HEADER_LEN_BYTES == EGRESS_HEADER_LEN_BYTES);

const ENTRY_INPUT_SEQ_OFFSET: usize = 0;
const ENTRY_JOURNAL_SEQ_OFFSET: usize = 8;
const ENTRY_ORDER_OFFSET: usize = 16;
const _: () = assert!(ENTRY_ORDER_OFFSET + orders::ORDER_LEN_BYTES == EGRESS_ENTRY_LEN_BYTES);

/// Largest egress frame in bytes.
pub const EGRESS_FRAME_BYTES_MAX: usize =
    EGRESS_HEADER_LEN_BYTES + EGRESS_FRAME_ENTRIES_MAX * EGRESS_ENTRY_LEN_BYTES;

/// Why a frame was refused. Every variant says where the problem is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a header.
    #[error("frame of {len} bytes is shorter than the {INGRESS_HEADER_LEN_BYTES}-byte header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// Wrong magic.
    #[error("bad magic {found:02x?} (expected {expected:?})")]
    Magic {
        /// The first four bytes.
        found: [u8; 4],
        /// The expected magic, as text.
        expected: &'static str,
    },
    /// Unsupported version.
    #[error("unsupported frame version {0}")]
    Version(u16),
    /// Reserved header bytes not zero.
    #[error("reserved header bytes are not zero")]
    Reserved,
    /// Count zero or above the maximum.
    #[error("order count {count} outside 1..={max}")]
    Count {
        /// The count in the header.
        count: u32,
        /// The maximum.
        max: usize,
    },
    /// Length does not match the count.
    #[error("frame is {got} bytes, but its count needs exactly {expected}")]
    Length {
        /// Bytes needed.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// An order inside the frame is invalid.
    #[error("order #{index} of the frame: {source}")]
    Order {
        /// 0-based position in the frame.
        index: usize,
        /// What was wrong.
        source: DecodeError,
    },
    /// The JSON did not parse or lacks a field.
    #[error("JSON order: {0}")]
    Json(String),
    /// A JSON field holds a bad value.
    #[error("JSON order field {field:?}: {message}")]
    JsonField {
        /// The key.
        field: &'static str,
        /// What was wrong.
        message: String,
    },
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn write_header(out: &mut [u8], magic: [u8; 4], version: u16, count: u32) {
    out[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&magic);
    out[VERSION_OFFSET..FLAGS_OFFSET].copy_from_slice(&version.to_le_bytes());
    out[FLAGS_OFFSET..COUNT_OFFSET].fill(0);
    out[COUNT_OFFSET..RESERVED_OFFSET].copy_from_slice(&count.to_le_bytes());
    out[RESERVED_OFFSET..INGRESS_HEADER_LEN_BYTES].fill(0);
}

/// Checks a header and returns its count; `entry_len` is the size of one element.
fn check_header(
    b: &[u8],
    magic: [u8; 4],
    expected: &'static str,
    version: u16,
    max: usize,
    entry_len: usize,
) -> Result<usize, FrameError> {
    if b.len() < INGRESS_HEADER_LEN_BYTES {
        return Err(FrameError::TooShort { len: b.len() });
    }
    let mut found = [0u8; 4];
    found.copy_from_slice(&b[MAGIC_OFFSET..VERSION_OFFSET]);
    if found != magic {
        return Err(FrameError::Magic { found, expected });
    }
    let v = u16_at(b, VERSION_OFFSET);
    if v != version {
        return Err(FrameError::Version(v));
    }
    if u16_at(b, FLAGS_OFFSET) != 0 || u32_at(b, RESERVED_OFFSET) != 0 {
        return Err(FrameError::Reserved);
    }
    let count = u32_at(b, COUNT_OFFSET);
    if count == 0 || count as usize > max {
        return Err(FrameError::Count { count, max });
    }
    let expected_len = INGRESS_HEADER_LEN_BYTES + count as usize * entry_len;
    if b.len() != expected_len {
        return Err(FrameError::Length {
            expected: expected_len,
            got: b.len(),
        });
    }
    Ok(count as usize)
}

/// Encodes orders as one binary ingress frame (for clients and tests; allocates).
///
/// # Panics
/// If `orders` is empty or longer than [`INGRESS_FRAME_ORDERS_MAX`] (a programming error).
pub fn encode_ingress_frame(orders: &[Order]) -> Vec<u8> {
    assert!(!orders.is_empty() && orders.len() <= INGRESS_FRAME_ORDERS_MAX);
    let mut out = vec![0u8; INGRESS_HEADER_LEN_BYTES + orders.len() * orders::ORDER_LEN_BYTES];
    write_header(
        &mut out,
        INGRESS_MAGIC,
        INGRESS_VERSION,
        orders.len() as u32,
    );
    for (i, o) in orders.iter().enumerate() {
        let off = INGRESS_HEADER_LEN_BYTES + i * orders::ORDER_LEN_BYTES;
        encode_order(o, &mut out[off..off + orders::ORDER_LEN_BYTES]);
    }
    out
}

/// What kind of message [`decode_ingress_message`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A binary frame.
    Binary,
    /// A JSON order with its own `order_id`.
    Json,
    /// A JSON order without `order_id`: its `order_id` is 0 in the output, for the caller to
    /// replace with [`orders::engine_assigned_order_id`] of the order's `input_seq`.
    JsonWithoutId,
}

/// Decodes one ingress message (binary frame or JSON order) into `out`, which is cleared
/// first. All or nothing: on error `out` is left empty. Does not allocate for binary frames
/// when `out` has capacity for [`INGRESS_FRAME_ORDERS_MAX`] orders.
///
/// A JSON order may leave out `order_id` ([`MessageKind::JsonWithoutId`]); one that names an
/// id of 2^63 or more (the range of assigned ids, [`orders::is_reserved_order_id`]) is refused.
pub fn decode_ingress_message(b: &[u8], out: &mut Vec<Order>) -> Result<MessageKind, FrameError> {
    decode_ingress_message_with(b, out, &mut no_account_names)
}

/// [`decode_ingress_message`], with the account names of JSON orders given their ids by
/// `account_id` ([`parse_json_order_with`]).
pub fn decode_ingress_message_with(
    b: &[u8],
    out: &mut Vec<Order>,
    account_id: &mut dyn FnMut(&str) -> Result<u32, String>,
) -> Result<MessageKind, FrameError> {
    out.clear();
    let first = b.iter().find(|c| !c.is_ascii_whitespace()).copied();
    if first == Some(b'{') {
        let (order, has_id) = parse_json_order_with(b, account_id)?;
        if has_id && orders::is_reserved_order_id(order.order_id) {
            return Err(FrameError::JsonField {
                field: "order_id",
                message: format!(
                    "{} is 2^63 or more: that range is reserved for the ids the engine gives \
                     orders without one (leave `order_id` out, or use an id below 2^63)",
                    order.order_id
                ),
            });
        }
        out.push(order);
        return Ok(if has_id {
            MessageKind::Json
        } else {
            MessageKind::JsonWithoutId
        });
    }
    let count = check_header(
        b,
        INGRESS_MAGIC,
        "ORDS",
        INGRESS_VERSION,
        INGRESS_FRAME_ORDERS_MAX,
        orders::ORDER_LEN_BYTES,
    )?;
    for index in 0..count {
        let off = INGRESS_HEADER_LEN_BYTES + index * orders::ORDER_LEN_BYTES;
        match decode_order(&b[off..off + orders::ORDER_LEN_BYTES]) {
            Ok(o) => out.push(o),
            Err(source) => {
                out.clear();
                return Err(FrameError::Order { index, source });
            }
        }
    }
    Ok(MessageKind::Binary)
}

/// A JSON order's `account`: a number (below 2^31), or a name (`"ACC11"`,
/// [`orders::account_names`]).
#[derive(Deserialize)]
#[serde(untagged)]
enum JsonAccount<'a> {
    Number(u32),
    #[serde(borrow)]
    Name(Cow<'a, str>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOrder<'a> {
    #[serde(default)]
    order_id: Option<u64>,
    #[serde(borrow)]
    account: JsonAccount<'a>,
    #[serde(borrow)]
    symbol: Cow<'a, str>,
    #[serde(borrow)]
    side: Cow<'a, str>,
    #[serde(alias = "quantity")]
    qty: u64,
    /// The number's text as written: never an `f64`, so it is converted without rounding.
    #[serde(borrow)]
    price: &'a RawValue,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ns: u64,
}

/// Parses one JSON order (see the module documentation for the keys); `order_id` is required
/// (any u64).
pub fn parse_json_order(b: &[u8]) -> Result<Order, FrameError> {
    match parse_json_order_id_optional(b)? {
        (order, true) => Ok(order),
        (_, false) => Err(FrameError::Json("missing field `order_id`".to_owned())),
    }
}

/// Parses one JSON order whose `order_id` may be absent: `(order, false)` then, with
/// `order.order_id` 0 for the caller to assign. An account name is refused (see
/// [`parse_json_order_with`]).
pub fn parse_json_order_id_optional(b: &[u8]) -> Result<(Order, bool), FrameError> {
    parse_json_order_with(b, &mut no_account_names)
}

/// The resolver of a JSON path that takes no account names.
pub fn no_account_names(name: &str) -> Result<u32, String> {
    Err(format!(
        "{name:?} is an account name, and this path takes account numbers only"
    ))
}

/// [`parse_json_order_id_optional`], with account names given their ids by `account_id`
/// (`engine run`: the ingress's share of the journal's name table). A numeric `account` must
/// be below 2^31: the ids from 2^31 are those of names.
pub fn parse_json_order_with(
    b: &[u8],
    account_id: &mut dyn FnMut(&str) -> Result<u32, String>,
) -> Result<(Order, bool), FrameError> {
    let j: JsonOrder<'_> =
        serde_json::from_slice(b).map_err(|e| FrameError::Json(e.to_string()))?;
    let symbol = Symbol::new(&j.symbol).map_err(|e| FrameError::JsonField {
        field: "symbol",
        message: e.to_string(),
    })?;
    let side = Side::parse(&j.side).ok_or_else(|| FrameError::JsonField {
        field: "side",
        message: format!("{:?} is not BUY, SELL, B, S, 1 or 2", j.side),
    })?;
    let kind = match &j.kind {
        None => OrderKind::New,
        Some(k) => OrderKind::parse(k).ok_or_else(|| FrameError::JsonField {
            field: "kind",
            message: format!("{k:?} is not new, cancel, fill, halt or resume"),
        })?,
    };
    let price =
        orders::parse_number_price_ticks(j.price.get()).map_err(|e| FrameError::JsonField {
            field: "price",
            message: e.to_string(),
        })?;
    // Last: a name is interned (and recorded) only for an order that is otherwise valid.
    let account = match &j.account {
        JsonAccount::Number(n) if orders::is_named_account(*n) => {
            return Err(FrameError::JsonField {
                field: "account",
                message: format!(
                    "{n}: account numbers from {} are the ids of account names; send the name",
                    orders::NAMED_ACCOUNT_BASE
                ),
            })
        }
        JsonAccount::Number(n) => *n,
        JsonAccount::Name(name) => account_id(name).map_err(|message| FrameError::JsonField {
            field: "account",
            message,
        })?,
    };
    let order = Order {
        order_id: j.order_id.unwrap_or(0),
        ts_ns: j.ts_ns,
        price,
        qty: j.qty,
        account,
        symbol,
        side,
        kind,
    };
    Ok((order, j.order_id.is_some()))
}

/// One accepted order as it leaves the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EgressEntry {
    /// Position of the order in the engine's input.
    pub input_seq: u64,
    /// Sequence number of its decision record in the journal.
    pub journal_seq: u64,
    /// The order.
    pub order: Order,
}

/// Builds egress frames in one buffer allocated at start-up.
#[derive(Debug)]
pub struct EgressFrameBuilder {
    buf: Vec<u8>,
    count: usize,
    max: usize,
}

impl EgressFrameBuilder {
    /// A builder for frames of up to `max_entries` (clamped to 1..=[`EGRESS_FRAME_ENTRIES_MAX`]).
    pub fn new(max_entries: usize) -> EgressFrameBuilder {
        let max = max_entries.clamp(1, EGRESS_FRAME_ENTRIES_MAX);
        EgressFrameBuilder {
            buf: vec![0u8; EGRESS_HEADER_LEN_BYTES + max * EGRESS_ENTRY_LEN_BYTES],
            count: 0,
            max,
        }
    }

    /// Starts a new frame.
    #[inline]
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no entry was added since [`EgressFrameBuilder::clear`].
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the frame holds its maximum.
    pub fn is_full(&self) -> bool {
        self.count == self.max
    }

    /// Appends one entry.
    ///
    /// # Panics
    /// If the frame is full (the caller bounds its batch by the same maximum).
    #[inline]
    pub fn push(&mut self, e: &EgressEntry) {
        assert!(self.count < self.max, "egress frame overflow");
        let off = EGRESS_HEADER_LEN_BYTES + self.count * EGRESS_ENTRY_LEN_BYTES;
        let slot = &mut self.buf[off..off + EGRESS_ENTRY_LEN_BYTES];
        slot[ENTRY_INPUT_SEQ_OFFSET..ENTRY_JOURNAL_SEQ_OFFSET]
            .copy_from_slice(&e.input_seq.to_le_bytes());
        slot[ENTRY_JOURNAL_SEQ_OFFSET..ENTRY_ORDER_OFFSET]
            .copy_from_slice(&e.journal_seq.to_le_bytes());
        encode_order(&e.order, &mut slot[ENTRY_ORDER_OFFSET..]);
        self.count += 1;
    }

    /// Writes the header and returns the frame bytes (header + entries).
    #[inline]
    pub fn finish(&mut self) -> &[u8] {
        write_header(
            &mut self.buf,
            EGRESS_MAGIC,
            EGRESS_VERSION,
            self.count as u32,
        );
        &self.buf[..EGRESS_HEADER_LEN_BYTES + self.count * EGRESS_ENTRY_LEN_BYTES]
    }
}

/// A validated egress frame.
#[derive(Debug, Clone, Copy)]
pub struct EgressFrame<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> EgressFrame<'a> {
    /// Validates header, length and every entry.
    pub fn parse(bytes: &'a [u8]) -> Result<EgressFrame<'a>, FrameError> {
        let count = check_header(
            bytes,
            EGRESS_MAGIC,
            "ACPT",
            EGRESS_VERSION,
            EGRESS_FRAME_ENTRIES_MAX,
            EGRESS_ENTRY_LEN_BYTES,
        )?;
        for index in 0..count {
            let off = EGRESS_HEADER_LEN_BYTES + index * EGRESS_ENTRY_LEN_BYTES + ENTRY_ORDER_OFFSET;
            decode_order(&bytes[off..off + orders::ORDER_LEN_BYTES])
                .map_err(|source| FrameError::Order { index, source })?;
        }
        Ok(EgressFrame { bytes, count })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the frame has no entry (never true for a parsed frame).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = EgressEntry> + 'a {
        let bytes = self.bytes;
        (0..self.count).map(move |i| {
            let off = EGRESS_HEADER_LEN_BYTES + i * EGRESS_ENTRY_LEN_BYTES;
            let e = &bytes[off..off + EGRESS_ENTRY_LEN_BYTES];
            EgressEntry {
                input_seq: u64_at(e, ENTRY_INPUT_SEQ_OFFSET),
                journal_seq: u64_at(e, ENTRY_JOURNAL_SEQ_OFFSET),
                // Validated in `parse`.
                order: decode_order(&e[ENTRY_ORDER_OFFSET..]).unwrap_or_default(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn order(id: u64) -> Order {
        Order {
            order_id: id,
            ts_ns: id * 10,
            price: 1_852_500,
            qty: 100,
            account: 7,
            symbol: Symbol::new("AAPL").unwrap(),
            side: Side::Sell,
            kind: OrderKind::New,
        }
    }

    fn arb_order() -> impl Strategy<Value = Order> {
        (
            any::<u64>(),
            any::<u64>(),
            any::<i64>(),
            any::<u64>(),
            any::<u32>(),
            "[A-Z0-9]{1,8}",
            0u8..2,
            0u8..5,
        )
            .prop_map(|(id, ts, px, qty, acct, sym, side, kind)| Order {
                order_id: id,
                ts_ns: ts,
                price: px,
                qty,
                account: acct,
                symbol: Symbol::new(&sym).unwrap(),
                side: Side::from_u8(side).unwrap(),
                kind: OrderKind::from_u8(kind).unwrap(),
            })
    }

    #[test]
    fn ingress_frame_round_trips() {
        let orders: Vec<Order> = (1..=3).map(order).collect();
        let bytes = encode_ingress_frame(&orders);
        assert_eq!(&bytes[..4], b"ORDS");
        let mut out = Vec::with_capacity(INGRESS_FRAME_ORDERS_MAX);
        assert_eq!(
            decode_ingress_message(&bytes, &mut out),
            Ok(MessageKind::Binary)
        );
        assert_eq!(out, orders);
    }

    #[test]
    fn ingress_frame_errors_are_named_and_all_or_nothing() {
        let orders: Vec<Order> = (1..=3).map(order).collect();
        let good = encode_ingress_frame(&orders);
        let mut out = Vec::new();
        assert_eq!(
            decode_ingress_message(&good[..10], &mut out),
            Err(FrameError::TooShort { len: 10 })
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert!(matches!(
            decode_ingress_message(&b, &mut out),
            Err(FrameError::Magic { .. })
        ));
        let mut b = good.clone();
        b[4] = 2;
        assert_eq!(
            decode_ingress_message(&b, &mut out),
            Err(FrameError::Version(2))
        );
        let mut b = good.clone();
        b[6] = 1;
        assert_eq!(
            decode_ingress_message(&b, &mut out),
            Err(FrameError::Reserved)
        );
        let mut b = good.clone();
        b[8] = 0;
        assert!(matches!(
            decode_ingress_message(&b, &mut out),
            Err(FrameError::Count { count: 0, .. })
        ));
        let mut b = good.clone();
        b[8..12].copy_from_slice(&5000u32.to_le_bytes());
        assert!(matches!(
            decode_ingress_message(&b, &mut out),
            Err(FrameError::Count { count: 5000, .. })
        ));
        assert!(matches!(
            decode_ingress_message(&good[..good.len() - 1], &mut out),
            Err(FrameError::Length { .. })
        ));
        // A bad side in the third order: nothing is decoded.
        let mut b = good.clone();
        b[INGRESS_HEADER_LEN_BYTES + 2 * 48 + 44] = 9;
        assert!(matches!(
            decode_ingress_message(&b, &mut out),
            Err(FrameError::Order { index: 2, .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn json_accounts_are_numbers_below_2_31_or_names() {
        let msg = |account: &str| {
            format!(
                r#"{{"order_id":1,"account":{account},"symbol":"AAPL","side":"B","qty":1,"price":1}}"#
            )
        };
        let mut asked = Vec::new();
        let mut resolve = |n: &str| {
            asked.push(n.to_owned());
            Ok(orders::NAMED_ACCOUNT_BASE + 5)
        };
        let (o, _) = parse_json_order_with(msg("\"ACC11\"").as_bytes(), &mut resolve).unwrap();
        assert_eq!(o.account, orders::NAMED_ACCOUNT_BASE + 5);
        let (o, _) = parse_json_order_with(msg("7").as_bytes(), &mut resolve).unwrap();
        assert_eq!(o.account, 7);
        // A number of the named range is refused: the name must be sent.
        let e = parse_json_order_with(msg("2147483648").as_bytes(), &mut resolve).unwrap_err();
        assert!(e.to_string().contains("send the name"), "{e}");
        // An order that is bad otherwise never interns its name.
        let bad =
            r#"{"order_id":1,"account":"NEW","symbol":"TOOLONGSYM","side":"B","qty":1,"price":1}"#;
        assert!(parse_json_order_with(bad.as_bytes(), &mut resolve).is_err());
        assert_eq!(asked, ["ACC11"]);
        // Paths without a table refuse names.
        let e = parse_json_order_id_optional(msg("\"ACC11\"").as_bytes()).unwrap_err();
        assert!(e.to_string().contains("account name"), "{e}");
    }

    #[test]
    fn json_orders_parse_with_defaults_and_aliases() {
        let mut out = Vec::new();
        let msg =
            br#" {"order_id":1,"account":7,"symbol":"aapl","side":"BUY","qty":100,"price":185.25}"#;
        assert_eq!(decode_ingress_message(msg, &mut out), Ok(MessageKind::Json));
        assert_eq!(out[0].price, 1_852_500);
        assert_eq!(out[0].symbol.as_str(), "AAPL");
        assert_eq!(out[0].kind, OrderKind::New);
        let msg = br#"{"order_id":2,"account":7,"symbol":"MSFT","side":"sell","quantity":5,"price":1,"kind":"cancel","ts_ns":9}"#;
        let o = parse_json_order(msg).unwrap();
        assert_eq!(
            (o.qty, o.side, o.kind, o.ts_ns),
            (5, Side::Sell, OrderKind::Cancel, 9)
        );
        // Exact from the text: 4 decimals, an exponent, a long but exact mantissa.
        for (text, ticks) in [
            ("1000.1234", 10_001_234),
            ("1.5e2", 1_500_000),
            ("0.1", 1_000),
            ("922337203685.4775", 9_223_372_036_854_775),
        ] {
            let msg = format!(
                r#"{{"order_id":1,"account":7,"symbol":"A","side":"B","qty":1,"price":{text}}}"#
            );
            assert_eq!(
                parse_json_order(msg.as_bytes()).unwrap().price,
                ticks,
                "{text}"
            );
        }
    }

    #[test]
    fn json_orders_without_an_id_are_marked_and_reserved_ids_refused() {
        let mut out = Vec::new();
        let msg = br#"{"account":7,"symbol":"AAPL","side":"B","quantity":3,"price":1}"#;
        assert_eq!(
            decode_ingress_message(msg, &mut out),
            Ok(MessageKind::JsonWithoutId)
        );
        assert_eq!((out[0].order_id, out[0].qty), (0, 3));
        // parse_json_order (egress and baseline readers) still needs the id.
        let e = parse_json_order(msg).unwrap_err().to_string();
        assert!(e.contains("missing field `order_id`"), "{e}");
        // An explicit id below 2^63 works as before, also 0.
        for id in [0u64, 1, (1 << 63) - 1] {
            let msg = format!(
                r#"{{"order_id":{id},"account":7,"symbol":"AAPL","side":"B","qty":3,"price":1}}"#
            );
            assert_eq!(
                decode_ingress_message(msg.as_bytes(), &mut out),
                Ok(MessageKind::Json)
            );
            assert_eq!(out[0].order_id, id);
        }
        // The assigned range is refused on ingress, the whole message, nothing pushed.
        for id in [1u64 << 63, u64::MAX] {
            let msg = format!(
                r#"{{"order_id":{id},"account":7,"symbol":"AAPL","side":"B","qty":3,"price":1}}"#
            );
            let e = decode_ingress_message(msg.as_bytes(), &mut out)
                .unwrap_err()
                .to_string();
            assert!(e.contains("reserved"), "{e}");
            assert!(out.is_empty());
        }
    }

    #[test]
    fn bad_json_names_the_field() {
        let cases: [(&[u8], &str); 10] = [
            (br#"{"order_id":1"#, "EOF"),
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":100}"#, "price"),
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"UP","qty":1,"price":1}"#, "side"),
            (br#"{"order_id":1,"account":7,"symbol":"TOOLONGSYM","side":"BUY","qty":1,"price":1}"#, "symbol"),
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":1,"price":1.00001}"#, "price"),
            // Issue 13 item 11: refused, not rounded to 10001235 ticks.
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":1,"price":1000.12345}"#, "more than 4 decimal places"),
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":1,"price":"1.5"}"#, "not a decimal number"),
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":1,"price":null}"#, "not a decimal number"),
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":-1,"price":1}"#, "invalid value"),
            (br#"{"order_id":1,"account":7,"symbol":"AAPL","side":"BUY","qty":1,"price":1,"colour":"red"}"#, "colour"),
        ];
        for (msg, needle) in cases {
            let e = parse_json_order(msg).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn egress_frame_round_trips_and_validates() {
        let mut b = EgressFrameBuilder::new(4);
        assert!(b.is_empty());
        for i in 0..4 {
            b.push(&EgressEntry {
                input_seq: i,
                journal_seq: 100 + i,
                order: order(i),
            });
        }
        assert!(b.is_full());
        let bytes = b.finish().to_vec();
        assert_eq!(bytes.len(), 16 + 4 * 64);
        let f = EgressFrame::parse(&bytes).unwrap();
        let got: Vec<EgressEntry> = f.iter().collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[3].journal_seq, 103);
        assert_eq!(got[2].order, order(2));
        // Reuse after clear.
        b.clear();
        b.push(&got[0]);
        assert_eq!(EgressFrame::parse(b.finish()).unwrap().len(), 1);
        // An ingress frame is not an egress frame.
        let ingress = encode_ingress_frame(&[order(1)]);
        assert!(matches!(
            EgressFrame::parse(&ingress),
            Err(FrameError::Magic { .. })
        ));
        let mut bad = bytes.clone();
        bad[16 + 16 + 44] = 3;
        assert!(matches!(
            EgressFrame::parse(&bad),
            Err(FrameError::Order { index: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn ingress_round_trip_any(orders in proptest::collection::vec(arb_order(), 1..50)) {
            let bytes = encode_ingress_frame(&orders);
            let mut out = Vec::new();
            prop_assert_eq!(decode_ingress_message(&bytes, &mut out), Ok(MessageKind::Binary));
            prop_assert_eq!(out, orders);
        }

        #[test]
        fn egress_round_trip_any(entries in proptest::collection::vec((any::<u64>(), any::<u64>(), arb_order()), 1..50)) {
            let mut b = EgressFrameBuilder::new(64);
            let entries: Vec<EgressEntry> = entries.into_iter().map(|(i, j, o)| EgressEntry { input_seq: i, journal_seq: j, order: o }).collect();
            for e in &entries { b.push(e); }
            let bytes = b.finish().to_vec();
            let f = EgressFrame::parse(&bytes).unwrap();
            prop_assert_eq!(f.iter().collect::<Vec<_>>(), entries);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut out = Vec::new();
            let _ = decode_ingress_message(&bytes, &mut out);
            let _ = EgressFrame::parse(&bytes);
        }

        #[test]
        fn garbage_json_never_panics(s in "\\{\\PC{0,80}") {
            let mut out = Vec::new();
            let _ = decode_ingress_message(s.as_bytes(), &mut out);
        }
    }
}
