//! The order model: small, fixed-size, `Copy`, no heap data.
//!
//! An [`Order`] is one event of order flow: a new order, a cancel (full or partial), a fill
//! reported by the venue, or a trading halt / resume for a symbol. Prices are integer ticks
//! (1 tick = 0.0001 currency units, the LOBSTER convention); quantities are whole units.

use std::fmt;

/// Ticks per currency unit: 1 tick = 0.0001.
pub const TICKS_PER_UNIT: i64 = 10_000;
/// Decimal places a price may carry (`TICKS_PER_UNIT == 10^PRICE_DECIMALS_MAX`).
pub const PRICE_DECIMALS_MAX: u32 = 4;
const _: () = assert!(10i64.pow(PRICE_DECIMALS_MAX) == TICKS_PER_UNIT);

/// Width of a symbol in bytes: ASCII, NUL-padded on the right.
pub const SYMBOL_LEN_BYTES: usize = 8;

/// A fixed-width instrument symbol: up to 8 ASCII bytes (`A-Z`, `0-9`, `.`, `-`, `_`),
/// upper-cased, NUL-padded on the right.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Symbol([u8; SYMBOL_LEN_BYTES]);

/// Why a symbol text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    /// Empty text.
    #[error("symbol is empty")]
    Empty,
    /// More than [`SYMBOL_LEN_BYTES`] bytes.
    #[error("symbol {0:?} is longer than 8 characters")]
    TooLong(String),
    /// A character outside `A-Z a-z 0-9 . - _`.
    #[error("symbol {0:?} has a character outside A-Z, 0-9, '.', '-', '_'")]
    BadChar(String),
}

impl Symbol {
    /// Parses and upper-cases a symbol.
    pub fn new(text: &str) -> Result<Self, SymbolError> {
        let bytes = text.as_bytes();
        if bytes.is_empty() {
            return Err(SymbolError::Empty);
        }
        if bytes.len() > SYMBOL_LEN_BYTES {
            return Err(SymbolError::TooLong(text.to_owned()));
        }
        let mut out = [0u8; SYMBOL_LEN_BYTES];
        for (slot, &b) in out.iter_mut().zip(bytes) {
            if !(b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_') {
                return Err(SymbolError::BadChar(text.to_owned()));
            }
            *slot = b.to_ascii_uppercase();
        }
        Ok(Symbol(out))
    }

    /// Rebuilds a symbol from its 8 stored bytes, checking them as [`Symbol::new`] would.
    ///
    /// A stored symbol is checked byte by byte first (1–8 of `A-Z 0-9 . - _`, then zeros), and
    /// only one that fails goes through the text path that says why: every decoded order
    /// passes here (the order files, the ingress frames, a consumer's egress frames), and the
    /// text path's UTF-8 check and upper-casing were 28 % of `bench sink`'s CPU at 3 M
    /// orders/s (issue 12).
    #[inline]
    pub fn from_bytes(bytes: [u8; SYMBOL_LEN_BYTES]) -> Result<Self, SymbolError> {
        let len = bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SYMBOL_LEN_BYTES);
        if len > 0
            && bytes[..len].iter().all(|&b| is_stored_symbol_byte(b))
            && bytes[len..].iter().all(|&b| b == 0)
        {
            return Ok(Symbol(bytes));
        }
        Self::from_bytes_checked(bytes, len)
    }

    /// [`Symbol::from_bytes`] for bytes that failed its fast check: the error that says why
    /// (or the symbol, should the two checks ever disagree).
    #[cold]
    fn from_bytes_checked(bytes: [u8; SYMBOL_LEN_BYTES], len: usize) -> Result<Self, SymbolError> {
        if bytes[len..].iter().any(|&b| b != 0) {
            return Err(SymbolError::BadChar(
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        let text = std::str::from_utf8(&bytes[..len])
            .map_err(|_| SymbolError::BadChar(String::from_utf8_lossy(&bytes).into_owned()))?;
        let sym = Symbol::new(text)?;
        if sym.0 != bytes {
            // Lower-case bytes on disk are not a canonical symbol.
            return Err(SymbolError::BadChar(text.to_owned()));
        }
        Ok(sym)
    }

    /// The stored bytes.
    pub fn to_bytes(self) -> [u8; SYMBOL_LEN_BYTES] {
        self.0
    }

    /// The symbol as text (without padding).
    pub fn as_str(&self) -> &str {
        let len = self
            .0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SYMBOL_LEN_BYTES);
        // Only ASCII is ever stored (checked in `new` and `from_bytes`).
        std::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }
}

/// A byte a stored (upper-cased) symbol may hold before its padding.
#[inline]
fn is_stored_symbol_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({})", self.as_str())
    }
}

/// Buy or sell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum Side {
    /// A bid.
    #[default]
    Buy = 0,
    /// An offer.
    Sell = 1,
}

impl Side {
    /// Decodes the wire byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Side::Buy),
            1 => Some(Side::Sell),
            _ => None,
        }
    }

    /// Parses `B`, `S`, `BUY`, `SELL` in any case, and `1` (buy) / `2` (sell), FIX tag 54.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        // `1` / `2`: FIX tag 54 (Side), as old order files and FIX gateways write it.
        if t.eq_ignore_ascii_case("b") || t.eq_ignore_ascii_case("buy") || t == "1" {
            Some(Side::Buy)
        } else if t.eq_ignore_ascii_case("s") || t.eq_ignore_ascii_case("sell") || t == "2" {
            Some(Side::Sell)
        } else {
            None
        }
    }

    /// `+1` for a buy, `-1` for a sell: the sign of the position change.
    pub fn sign(self) -> i64 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }

    /// `BUY` or `SELL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "BUY",
            Side::Sell => "SELL",
        }
    }
}

/// What an order event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum OrderKind {
    /// A new order (`qty` at `price`).
    #[default]
    New = 0,
    /// Cancel `qty` of the open order `order_id` (partial, or full when `qty` is what remains).
    Cancel = 1,
    /// The venue reports `qty` executed at `price`; `order_id` is the resting order, or 0 when
    /// there is none (hidden liquidity, auction cross).
    Fill = 2,
    /// Trading halt for `symbol`.
    Halt = 3,
    /// Trading resumes for `symbol`.
    Resume = 4,
}

impl OrderKind {
    /// Decodes the wire byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(OrderKind::New),
            1 => Some(OrderKind::Cancel),
            2 => Some(OrderKind::Fill),
            3 => Some(OrderKind::Halt),
            4 => Some(OrderKind::Resume),
            _ => None,
        }
    }

    /// Parses `new`, `cancel`, `fill`, `halt`, `resume` in any case.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        [
            OrderKind::New,
            OrderKind::Cancel,
            OrderKind::Fill,
            OrderKind::Halt,
            OrderKind::Resume,
        ]
        .into_iter()
        .find(|k| t.eq_ignore_ascii_case(k.as_str()))
    }

    /// Lower-case name, as in CSV files.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderKind::New => "new",
            OrderKind::Cancel => "cancel",
            OrderKind::Fill => "fill",
            OrderKind::Halt => "halt",
            OrderKind::Resume => "resume",
        }
    }
}

/// One order event. 48 bytes, `Copy`, no heap data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C)]
pub struct Order {
    /// The order's id; cancels and fills name the order they act on.
    pub order_id: u64,
    /// Event time in nanoseconds (since midnight for LOBSTER, since the epoch for live
    /// orders, relative for generated files); 0 when unknown.
    pub ts_ns: u64,
    /// Price in ticks (1 tick = 0.0001).
    pub price: i64,
    /// Quantity in whole units.
    pub qty: u64,
    /// Account number.
    pub account: u32,
    /// Instrument.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// New, cancel, fill, halt or resume.
    pub kind: OrderKind,
}

const _: () = assert!(std::mem::size_of::<Order>() == 48);

impl Order {
    /// Notional value in ticks × quantity, saturating (never overflows).
    pub fn notional_ticks(&self) -> i128 {
        self.price as i128 * self.qty as i128
    }
}

/// Stable reason codes for a decision. `0` means accepted; every other value is a rejection.
/// Codes are part of the wire protocol and the journal format: never renumber, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u16)]
#[non_exhaustive]
pub enum Reason {
    /// Accepted.
    #[default]
    Accepted = 0,
    /// Quantity above the maximum order quantity.
    MaxQty = 1,
    /// Notional above the maximum order notional.
    MaxNotional = 2,
    /// Price outside the collar around the reference price.
    PriceCollar = 3,
    /// Position (with open exposure) would exceed the per-account/symbol limit.
    PositionLimit = 4,
    /// Gross exposure / credit limit of the account would be exceeded.
    CreditLimit = 5,
    /// The account's order-rate throttle is exhausted.
    RateThrottle = 6,
    /// The symbol is restricted.
    RestrictedSymbol = 7,
    /// The account is not configured and the policy refuses unknown accounts.
    UnknownAccount = 8,
    /// The symbol is not configured and the policy refuses unknown symbols.
    UnknownSymbol = 9,
    /// The order id was already seen within the duplicate horizon.
    DuplicateOrderId = 10,
    /// Trading is halted (kill switch), globally, for the account or for the symbol.
    Halted = 11,
    /// Trading state is REDUCING and the order would not reduce the position.
    ReduceOnly = 12,
    /// A cancel or fill names an order the risk service does not know.
    UnknownOrder = 13,
    /// The order is malformed (zero quantity, non-positive price, …).
    InvalidOrder = 14,
    /// The risk service did not answer within the timeout.
    RiskTimeout = 15,
    /// The risk service answered with an error or an unreadable reply.
    RiskError = 16,
    /// A JSON risk service (`engine --risk-protocol json`, the source design's) replied
    /// something other than `OK` (`REJECT`, `REJECT <reason>`, `ERROR …`): the journal record
    /// keeps the reply's first 16 bytes (decision version 3). Set by the client, never sent.
    RiskRefused = 17,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 18] = [
        Reason::Accepted,
        Reason::MaxQty,
        Reason::MaxNotional,
        Reason::PriceCollar,
        Reason::PositionLimit,
        Reason::CreditLimit,
        Reason::RateThrottle,
        Reason::RestrictedSymbol,
        Reason::UnknownAccount,
        Reason::UnknownSymbol,
        Reason::DuplicateOrderId,
        Reason::Halted,
        Reason::ReduceOnly,
        Reason::UnknownOrder,
        Reason::InvalidOrder,
        Reason::RiskTimeout,
        Reason::RiskError,
        Reason::RiskRefused,
    ];

    /// Decodes a code.
    pub fn from_u16(v: u16) -> Option<Self> {
        Reason::ALL.get(v as usize).copied()
    }

    /// The code on the wire and in the journal.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// Whether this is an acceptance.
    pub fn is_accepted(self) -> bool {
        self == Reason::Accepted
    }

    /// Stable kebab-case name, used in `REJECT <reason>`, metrics labels and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accepted => "accepted",
            Reason::MaxQty => "max-qty",
            Reason::MaxNotional => "max-notional",
            Reason::PriceCollar => "price-collar",
            Reason::PositionLimit => "position-limit",
            Reason::CreditLimit => "credit-limit",
            Reason::RateThrottle => "rate-throttle",
            Reason::RestrictedSymbol => "restricted-symbol",
            Reason::UnknownAccount => "unknown-account",
            Reason::UnknownSymbol => "unknown-symbol",
            Reason::DuplicateOrderId => "duplicate-order-id",
            Reason::Halted => "halted",
            Reason::ReduceOnly => "reduce-only",
            Reason::UnknownOrder => "unknown-order",
            Reason::InvalidOrder => "invalid-order",
            Reason::RiskTimeout => "risk-timeout",
            Reason::RiskError => "risk-error",
            Reason::RiskRefused => "risk-refused",
        }
    }

    /// Parses a name produced by [`Reason::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision of the engine: the order event, its verdict and the times it was seen.
/// This is the payload of a `decision` record in the audit journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Position of the event in the engine's input (0-based, dense): what `--resume` skips to.
    pub input_seq: u64,
    /// The order event.
    pub order: Order,
    /// Accepted, or the rejection reason.
    pub reason: Reason,
    /// When the ingress took the order in (ns since the Unix epoch).
    pub t_in_ns: u64,
    /// When the decision was made (ns since the Unix epoch).
    pub t_decided_ns: u64,
    /// The time the risk check used (ns since the Unix epoch): the `now_ns` of the batch
    /// request, i.e. when the engine sent the batch. Throttle and duplicate-horizon state are
    /// rebuilt from it. A version-1 record (80 bytes) has none: it reads as `t_decided_ns`.
    pub t_checked_ns: u64,
    /// The risk client session that asked for the verdict (random, non-zero); 0 when no
    /// session was involved (`--risk inline`, a version-1 record).
    pub risk_session: u64,
    /// The newest batch of `risk_session` whose verdicts came from the risk service, as of
    /// this decision: this order's own batch when the service decided it, the one before when
    /// the batch was rejected `risk-timeout` / `risk-error` by the client; 0 when none yet.
    /// What a resuming engine tells the server its journal holds (reconciliation,
    /// `docs/formats/risk-protocol.md`, "Hello").
    pub risk_batch: u64,
    /// How many orders of `risk_batch`, from its first, the journal holds up to and including
    /// this record (a batch's records may be cut by a crash): this order's position + 1 when
    /// the service decided it, else all of `risk_batch`'s orders.
    pub risk_batch_orders: u32,
}

#[cfg(test)]
mod side_tests {
    use super::Side;

    /// The sides of old order files and FIX (tag 54), and nothing else.
    #[test]
    fn sides_of_old_files_and_fix() {
        for t in ["B", "b", "BUY", "Buy", " 1 ", "1"] {
            assert_eq!(Side::parse(t), Some(Side::Buy), "{t:?}");
        }
        for t in ["S", "s", "SELL", "sell", "2"] {
            assert_eq!(Side::parse(t), Some(Side::Sell), "{t:?}");
        }
        for t in ["", "0", "3", "X", "BUYS", "5"] {
            assert_eq!(Side::parse(t), None, "{t:?}");
        }
    }
}

#[cfg(test)]
mod symbol_bytes_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    /// The bytes [`Symbol::from_bytes`]'s text path takes, which said yes or no to every
    /// stored symbol before the byte check existed.
    fn by_text(bytes: [u8; SYMBOL_LEN_BYTES]) -> Result<Symbol, SymbolError> {
        let len = bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SYMBOL_LEN_BYTES);
        Symbol::from_bytes_checked(bytes, len)
    }

    /// Bytes drawn mostly from the symbol alphabet, its neighbours and padding.
    fn symbolish() -> impl Strategy<Value = [u8; SYMBOL_LEN_BYTES]> {
        let byte = prop_oneof![
            4 => prop::sample::select(b"AZ09.-_az@[`{/:\x00\xff ".to_vec()),
            1 => any::<u8>(),
        ];
        prop::array::uniform8(byte)
    }

    proptest! {
        #[test]
        fn the_byte_check_agrees_with_the_text_path(bytes in symbolish()) {
            prop_assert_eq!(Symbol::from_bytes(bytes), by_text(bytes));
        }
    }

    #[test]
    fn stored_symbols_round_trip_and_others_are_refused() {
        for text in ["A", "AAPL", "BRK.B", "X-Y_Z09", "ABCDEFGH"] {
            let s = Symbol::new(text).unwrap();
            assert_eq!(Symbol::from_bytes(s.to_bytes()), Ok(s), "{text}");
        }
        for bad in [
            *b"\0\0\0\0\0\0\0\0",
            *b"aapl\0\0\0\0",
            *b"AA\0PL\0\0\0",
            *b"AA PL\0\0\0",
            *b"AAPL\0\0\0\x01",
            *b"\xffAPL\0\0\0\0",
        ] {
            assert!(Symbol::from_bytes(bad).is_err(), "{bad:?}");
            assert_eq!(Symbol::from_bytes(bad), by_text(bad), "{bad:?}");
        }
    }
}
