//! Fixed-size little-endian encodings of [`Order`] and [`Decision`], shared by the binary order
//! file, the engine's wire frames, the risk protocol and the audit journal.
//!
//! ```text
//! Order (ORDER_LEN_BYTES = 48), all integers little-endian
//!  0               8               16              24              32      36              44  45  46  48
//!  +---------------+---------------+---------------+---------------+-------+---------------+---+---+---+
//!  | order_id u64  | ts_ns u64     | price i64     | qty u64       |acct   | symbol [u8;8] |sd |knd|0 0|
//!  |               |               | (ticks)       |               |u32    | NUL-padded    |u8 |u8 |u16|
//!  +---------------+---------------+---------------+---------------+-------+---------------+---+---+---+
//!
//! Decision, version 2 (DECISION_LEN_BYTES = 104): version 1 and three fields after it
//!  0               8                                               56      58  60      64              72              80
//!  +---------------+-----------------------------------------------+-------+---+-------+---------------+---------------+
//!  | input_seq u64 | order (48 bytes, as above)                    |reason | 0 |rb_ord | t_in_ns u64   | t_decided_ns  |
//!  |               |                                               |u16    |u16|u32    |               | u64           |
//!  +---------------+-----------------------------------------------+-------+---+-------+---------------+---------------+
//!  (rb_ord = risk_batch_orders)
//!  80              88              96              104
//!  +---------------+---------------+---------------+
//!  | t_checked_ns  | risk_session  | risk_batch    |
//!  | u64           | u64           | u64           |
//!  +---------------+---------------+---------------+
//!
//! Decision, version 3 (DECISION_V3_LEN_BYTES = 120): version 2 and the risk reply after it,
//! written only for a `risk-refused` decision (`engine --risk-protocol json`)
//!  104                             120
//!  +-------------------------------+
//!  | risk_reply [u8; 16]: the JSON |
//!  | risk service's reply, its     |
//!  | first 16 bytes, NUL-padded    |
//!  +-------------------------------+
//!
//! Decision, version 1 (DECISION_V1_LEN_BYTES = 80): bytes 0..80 above, nothing after, and
//! bytes 58..64 zero (reserved).
//! ```
//! Reserved bytes are written as zero and must read as zero. The payload length tells the
//! versions apart; [`decode_decision`] reads both (a version-1 record reads with
//! `t_checked_ns = t_decided_ns`, `risk_session = risk_batch = risk_batch_orders = 0`),
//! [`encode_decision`] writes version 2.

use crate::model::{Decision, Order, OrderKind, Reason, Side, Symbol, SYMBOL_LEN_BYTES};

/// Encoded size of an [`Order`].
pub const ORDER_LEN_BYTES: usize = 48;
/// Encoded size of a [`Decision`] (version 2, what [`encode_decision`] writes).
pub const DECISION_LEN_BYTES: usize = 104;
/// Size of a version-3 decision: version 2 plus the first [`RISK_REPLY_LEN_BYTES`] bytes of a
/// JSON risk service's reply ([`encode_decision_with_reply`]; `risk-refused` decisions only).
pub const DECISION_V3_LEN_BYTES: usize = DECISION_LEN_BYTES + RISK_REPLY_LEN_BYTES;
/// Bytes of a JSON risk reply a version-3 decision keeps (the source design's reply buffer).
pub const RISK_REPLY_LEN_BYTES: usize = 16;
/// Size of a version-1 decision (journals written before `t_checked_ns` and the risk
/// session were recorded); still read by [`decode_decision`].
pub const DECISION_V1_LEN_BYTES: usize = 80;

const ORDER_ID_OFFSET: usize = 0;
const TS_OFFSET: usize = 8;
const PRICE_OFFSET: usize = 16;
const QTY_OFFSET: usize = 24;
const ACCOUNT_OFFSET: usize = 32;
const SYMBOL_OFFSET: usize = 36;
const SIDE_OFFSET: usize = 44;
const KIND_OFFSET: usize = 45;
const ORDER_RESERVED_OFFSET: usize = 46;
const _: () = assert!(SYMBOL_OFFSET + SYMBOL_LEN_BYTES == SIDE_OFFSET);
const _: () = assert!(ORDER_RESERVED_OFFSET + 2 == ORDER_LEN_BYTES);

const D_INPUT_SEQ_OFFSET: usize = 0;
const D_ORDER_OFFSET: usize = 8;
const D_REASON_OFFSET: usize = 56;
const D_RESERVED_OFFSET: usize = 58;
const D_RISK_BATCH_ORDERS_OFFSET: usize = 60;
const D_T_IN_OFFSET: usize = 64;
const D_T_DECIDED_OFFSET: usize = 72;
const D_T_CHECKED_OFFSET: usize = 80;
const D_RISK_SESSION_OFFSET: usize = 88;
const D_RISK_BATCH_OFFSET: usize = 96;
const _: () = assert!(D_ORDER_OFFSET + ORDER_LEN_BYTES == D_REASON_OFFSET);
const _: () = assert!(D_T_DECIDED_OFFSET + 8 == DECISION_V1_LEN_BYTES);
const _: () = assert!(D_T_CHECKED_OFFSET == DECISION_V1_LEN_BYTES);
const _: () = assert!(D_RISK_BATCH_OFFSET + 8 == DECISION_LEN_BYTES);

/// Why bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the fixed size.
    #[error("expected {expected} bytes, got {got}")]
    Length {
        /// Bytes needed.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A field holds a value outside its domain.
    #[error("bad {field} value {value}")]
    Field {
        /// Which field.
        field: &'static str,
        /// The raw value.
        value: u64,
    },
    /// The symbol bytes are not a canonical symbol.
    #[error("bad symbol bytes")]
    Symbol,
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Writes `order` into `out[..ORDER_LEN_BYTES]`.
///
/// # Panics
/// If `out` is shorter than [`ORDER_LEN_BYTES`] (a programming error, never input).
pub fn encode_order(order: &Order, out: &mut [u8]) {
    let out = &mut out[..ORDER_LEN_BYTES];
    out[ORDER_ID_OFFSET..TS_OFFSET].copy_from_slice(&order.order_id.to_le_bytes());
    out[TS_OFFSET..PRICE_OFFSET].copy_from_slice(&order.ts_ns.to_le_bytes());
    out[PRICE_OFFSET..QTY_OFFSET].copy_from_slice(&order.price.to_le_bytes());
    out[QTY_OFFSET..ACCOUNT_OFFSET].copy_from_slice(&order.qty.to_le_bytes());
    out[ACCOUNT_OFFSET..SYMBOL_OFFSET].copy_from_slice(&order.account.to_le_bytes());
    out[SYMBOL_OFFSET..SIDE_OFFSET].copy_from_slice(&order.symbol.to_bytes());
    out[SIDE_OFFSET] = order.side as u8;
    out[KIND_OFFSET] = order.kind as u8;
    out[ORDER_RESERVED_OFFSET..ORDER_LEN_BYTES].fill(0);
}

/// Reads an order from the first [`ORDER_LEN_BYTES`] of `b`, validating every field.
pub fn decode_order(b: &[u8]) -> Result<Order, DecodeError> {
    if b.len() < ORDER_LEN_BYTES {
        return Err(DecodeError::Length {
            expected: ORDER_LEN_BYTES,
            got: b.len(),
        });
    }
    let side = Side::from_u8(b[SIDE_OFFSET]).ok_or(DecodeError::Field {
        field: "side",
        value: b[SIDE_OFFSET] as u64,
    })?;
    let kind = OrderKind::from_u8(b[KIND_OFFSET]).ok_or(DecodeError::Field {
        field: "kind",
        value: b[KIND_OFFSET] as u64,
    })?;
    if b[ORDER_RESERVED_OFFSET] != 0 || b[ORDER_RESERVED_OFFSET + 1] != 0 {
        return Err(DecodeError::Field {
            field: "reserved",
            value: u16::from_le_bytes([b[ORDER_RESERVED_OFFSET], b[ORDER_RESERVED_OFFSET + 1]])
                as u64,
        });
    }
    let mut sym = [0u8; SYMBOL_LEN_BYTES];
    sym.copy_from_slice(&b[SYMBOL_OFFSET..SIDE_OFFSET]);
    let symbol = Symbol::from_bytes(sym).map_err(|_| DecodeError::Symbol)?;
    let mut acct = [0u8; 4];
    acct.copy_from_slice(&b[ACCOUNT_OFFSET..SYMBOL_OFFSET]);
    Ok(Order {
        order_id: u64_at(b, ORDER_ID_OFFSET),
        ts_ns: u64_at(b, TS_OFFSET),
        price: u64_at(b, PRICE_OFFSET) as i64,
        qty: u64_at(b, QTY_OFFSET),
        account: u32::from_le_bytes(acct),
        symbol,
        side,
        kind,
    })
}

/// Writes `d` into `out[..DECISION_LEN_BYTES]`.
///
/// # Panics
/// If `out` is shorter than [`DECISION_LEN_BYTES`] (a programming error, never input).
pub fn encode_decision(d: &Decision, out: &mut [u8]) {
    let out = &mut out[..DECISION_LEN_BYTES];
    out[D_INPUT_SEQ_OFFSET..D_ORDER_OFFSET].copy_from_slice(&d.input_seq.to_le_bytes());
    encode_order(&d.order, &mut out[D_ORDER_OFFSET..D_REASON_OFFSET]);
    out[D_REASON_OFFSET..D_RESERVED_OFFSET].copy_from_slice(&d.reason.code().to_le_bytes());
    out[D_RESERVED_OFFSET..D_RISK_BATCH_ORDERS_OFFSET].fill(0);
    out[D_RISK_BATCH_ORDERS_OFFSET..D_T_IN_OFFSET]
        .copy_from_slice(&d.risk_batch_orders.to_le_bytes());
    out[D_T_IN_OFFSET..D_T_DECIDED_OFFSET].copy_from_slice(&d.t_in_ns.to_le_bytes());
    out[D_T_DECIDED_OFFSET..D_T_CHECKED_OFFSET].copy_from_slice(&d.t_decided_ns.to_le_bytes());
    out[D_T_CHECKED_OFFSET..D_RISK_SESSION_OFFSET].copy_from_slice(&d.t_checked_ns.to_le_bytes());
    out[D_RISK_SESSION_OFFSET..D_RISK_BATCH_OFFSET].copy_from_slice(&d.risk_session.to_le_bytes());
    out[D_RISK_BATCH_OFFSET..DECISION_LEN_BYTES].copy_from_slice(&d.risk_batch.to_le_bytes());
}

/// Writes `d` and `reply` (its first [`RISK_REPLY_LEN_BYTES`], NUL-padded) as a version-3
/// decision into `out[..DECISION_V3_LEN_BYTES]`.
///
/// # Panics
/// If `out` is shorter than [`DECISION_V3_LEN_BYTES`] (a programming error, never input).
pub fn encode_decision_with_reply(d: &Decision, reply: &[u8], out: &mut [u8]) {
    encode_decision(d, out);
    let slot = &mut out[DECISION_LEN_BYTES..DECISION_V3_LEN_BYTES];
    slot.fill(0);
    let n = reply.len().min(RISK_REPLY_LEN_BYTES);
    slot[..n].copy_from_slice(&reply[..n]);
}

/// The risk reply a version-3 decision payload keeps (NUL padding removed); `None` for the
/// other versions.
pub fn decision_risk_reply(payload: &[u8]) -> Option<&[u8]> {
    if payload.len() != DECISION_V3_LEN_BYTES {
        return None;
    }
    let r = &payload[DECISION_LEN_BYTES..];
    let end = r.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    Some(&r[..end])
}

/// Reads a decision from exactly [`DECISION_LEN_BYTES`] (version 2), [`DECISION_V3_LEN_BYTES`]
/// (version 3: version 2 plus the risk reply, see [`decision_risk_reply`]) or
/// [`DECISION_V1_LEN_BYTES`] (version 1) bytes, validating every field. A version-1 decision
/// reads with `t_checked_ns = t_decided_ns` (the best time it has) and no risk session.
pub fn decode_decision(b: &[u8]) -> Result<Decision, DecodeError> {
    if b.len() != DECISION_LEN_BYTES
        && b.len() != DECISION_V1_LEN_BYTES
        && b.len() != DECISION_V3_LEN_BYTES
    {
        return Err(DecodeError::Length {
            expected: DECISION_LEN_BYTES,
            got: b.len(),
        });
    }
    let v3 = b.len() == DECISION_V3_LEN_BYTES;
    let b = &b[..b.len().min(DECISION_LEN_BYTES)];
    let order = decode_order(&b[D_ORDER_OFFSET..D_REASON_OFFSET])?;
    let code = u16::from_le_bytes([b[D_REASON_OFFSET], b[D_REASON_OFFSET + 1]]);
    let reason = Reason::from_u16(code).ok_or(DecodeError::Field {
        field: "reason",
        value: code as u64,
    })?;
    if v3 && reason != Reason::RiskRefused {
        // Only a refusal by a JSON risk service carries its reply.
        return Err(DecodeError::Field {
            field: "reason",
            value: code as u64,
        });
    }
    let v2 = b.len() == DECISION_LEN_BYTES;
    // Version 1 reserves bytes 58..64; version 2 uses 60..64 for `risk_batch_orders`.
    let reserved_end = if v2 {
        D_RISK_BATCH_ORDERS_OFFSET
    } else {
        D_T_IN_OFFSET
    };
    if b[D_RESERVED_OFFSET..reserved_end].iter().any(|&x| x != 0) {
        return Err(DecodeError::Field {
            field: "reserved",
            value: 0,
        });
    }
    let t_decided_ns = u64_at(b, D_T_DECIDED_OFFSET);
    let mut orders = [0u8; 4];
    orders.copy_from_slice(&b[D_RISK_BATCH_ORDERS_OFFSET..D_T_IN_OFFSET]);
    let field = |off: usize, v1: u64| if v2 { u64_at(b, off) } else { v1 };
    Ok(Decision {
        input_seq: u64_at(b, D_INPUT_SEQ_OFFSET),
        order,
        reason,
        t_in_ns: u64_at(b, D_T_IN_OFFSET),
        t_decided_ns,
        t_checked_ns: field(D_T_CHECKED_OFFSET, t_decided_ns),
        risk_session: field(D_RISK_SESSION_OFFSET, 0),
        risk_batch: field(D_RISK_BATCH_OFFSET, 0),
        risk_batch_orders: if v2 { u32::from_le_bytes(orders) } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_order() -> impl Strategy<Value = Order> {
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
                symbol: Symbol::new(&sym).expect("generated symbol is valid"),
                side: Side::from_u8(side).expect("0..2"),
                kind: OrderKind::from_u8(kind).expect("0..5"),
            })
    }

    proptest! {
        #[test]
        fn order_round_trips(o in arb_order()) {
            let mut buf = [0u8; ORDER_LEN_BYTES];
            encode_order(&o, &mut buf);
            prop_assert_eq!(decode_order(&buf).expect("decodes"), o);
        }

        #[test]
        fn decision_round_trips(o in arb_order(), seq in any::<u64>(), r in 0u16..17, a in any::<u64>(), b in any::<u64>(), t in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>())) {
            let d = Decision { input_seq: seq, order: o, reason: Reason::from_u16(r).expect("code"), t_in_ns: a, t_decided_ns: b, t_checked_ns: t.0, risk_session: t.1, risk_batch: t.2, risk_batch_orders: t.3 };
            let mut buf = [0u8; DECISION_LEN_BYTES];
            encode_decision(&d, &mut buf);
            prop_assert_eq!(decode_decision(&buf).expect("decodes"), d);
            // Without the risk fields, the first 80 bytes are a version-1 decision: the same
            // event, checked at its decision time.
            let d0 = Decision { risk_batch_orders: 0, ..d };
            encode_decision(&d0, &mut buf);
            let v1 = decode_decision(&buf[..DECISION_V1_LEN_BYTES]).expect("version 1 decodes");
            prop_assert_eq!(v1, Decision { t_checked_ns: b, risk_session: 0, risk_batch: 0, ..d0 });
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..140)) {
            let _ = decode_order(&bytes);
            let _ = decode_decision(&bytes);
        }
    }

    #[test]
    fn bad_fields_are_named() {
        let mut buf = [0u8; ORDER_LEN_BYTES];
        encode_order(
            &Order {
                symbol: Symbol::new("AAPL").expect("valid"),
                ..Order::default()
            },
            &mut buf,
        );
        let mut b = buf;
        b[SIDE_OFFSET] = 7;
        assert_eq!(
            decode_order(&b),
            Err(DecodeError::Field {
                field: "side",
                value: 7
            })
        );
        let mut b = buf;
        b[KIND_OFFSET] = 9;
        assert!(matches!(
            decode_order(&b),
            Err(DecodeError::Field { field: "kind", .. })
        ));
        let mut b = buf;
        b[SYMBOL_OFFSET] = b'a';
        assert_eq!(decode_order(&b), Err(DecodeError::Symbol));
        assert!(matches!(
            decode_order(&buf[..10]),
            Err(DecodeError::Length { .. })
        ));
    }

    /// A version-1 decision as an older engine wrote it (80 bytes, fixed bytes): still read,
    /// its check time taken from its decision time; other lengths are refused.
    #[test]
    fn version_1_decisions_still_decode() {
        let mut v1 = [0u8; DECISION_V1_LEN_BYTES];
        v1[0] = 7; // input_seq
        v1[8] = 42; // order_id
        v1[8 + 24] = 100; // qty
        v1[8 + 36..8 + 40].copy_from_slice(b"AAPL");
        v1[56] = 1; // reason max-qty
        v1[64] = 3; // t_in_ns
        v1[72] = 9; // t_decided_ns
        let d = decode_decision(&v1).expect("version 1 decodes");
        assert_eq!((d.input_seq, d.order.order_id, d.order.qty), (7, 42, 100));
        assert_eq!(d.reason, Reason::MaxQty);
        assert_eq!((d.t_in_ns, d.t_decided_ns, d.t_checked_ns), (3, 9, 9));
        assert_eq!(
            (d.risk_session, d.risk_batch, d.risk_batch_orders),
            (0, 0, 0)
        );
        let mut v2 = [0u8; DECISION_LEN_BYTES];
        encode_decision(&d, &mut v2);
        assert_eq!(
            v2[..DECISION_V1_LEN_BYTES],
            v1,
            "version 2 extends version 1"
        );
        // Bytes 60..64 are reserved in version 1, `risk_batch_orders` in version 2.
        v1[60] = 1;
        assert!(decode_decision(&v1).is_err());
        v2[60] = 1;
        assert_eq!(decode_decision(&v2).expect("v2").risk_batch_orders, 1);
        for len in [0, 79, 81, 96, 103, 105, 119, 121] {
            let b = vec![0u8; len];
            assert!(
                matches!(decode_decision(&b), Err(DecodeError::Length { .. })),
                "{len}"
            );
        }
    }

    #[test]
    fn reason_codes_are_dense_and_named() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.code() as usize, i);
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(Reason::from_u16(Reason::ALL.len() as u16), None);
    }

    #[test]
    #[allow(clippy::unwrap_used)]
    fn a_version_3_decision_keeps_the_risk_reply() {
        let d = Decision {
            input_seq: 7,
            order: Order {
                order_id: 9,
                symbol: Symbol::new("AAPL").unwrap(),
                ..Order::default()
            },
            reason: Reason::RiskRefused,
            t_in_ns: 1,
            t_decided_ns: 2,
            t_checked_ns: 3,
            risk_session: 0,
            risk_batch: 0,
            risk_batch_orders: 0,
        };
        let mut b = [0xffu8; DECISION_V3_LEN_BYTES];
        encode_decision_with_reply(&d, b"REJECT price-collar", &mut b);
        assert_eq!(decode_decision(&b).unwrap(), d);
        assert_eq!(decision_risk_reply(&b).unwrap(), b"REJECT price-col");
        encode_decision_with_reply(&d, b"REJECT", &mut b);
        assert_eq!(decision_risk_reply(&b).unwrap(), b"REJECT");
        assert_eq!(decision_risk_reply(&b[..DECISION_LEN_BYTES]), None);
        // Only a risk-refused decision carries a reply.
        let mut other = b;
        other[56] = Reason::MaxQty.code() as u8;
        assert!(decode_decision(&other).is_err());
        assert!(decode_decision(&b[..DECISION_V3_LEN_BYTES - 1]).is_err());
    }
}
