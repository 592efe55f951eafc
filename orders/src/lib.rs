//! Order model, decision records and order files shared by the engine, the risk service, the
//! audit journal and the benchmarks.
//!
//! - [`model`]: [`Order`], [`Side`], [`OrderKind`], [`Symbol`], [`Reason`], [`Decision`].
//! - [`codec`]: the fixed-size little-endian encodings used on every wire and in the journal.
//! - [`price`]: exact decimal ↔ tick conversion (1 tick = 0.0001).
//! - [`files`]: order files (CSV, binary, LOBSTER), loaders and writers.
//! - [`order_ids`]: the ids given to JSON orders that carry no `order_id`.
//! - `logging` (feature `logging`): the binaries' one log set-up (`--log-format`, `RUST_LOG`).
//! - [`account_names`]: account names interned to account ids, and their journal record.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod account_names;
pub mod codec;
pub mod files;
#[cfg(feature = "logging")]
pub mod logging;
pub mod model;
pub mod order_ids;
pub mod price;

pub use account_names::{
    decode_account_name_record, encode_account_name_record, is_named_account,
    validate_account_name, AccountNameError, AccountNameRecord, AccountNames, KIND_ACCOUNT_NAME,
    NAMED_ACCOUNT_BASE,
};
pub use codec::{
    decision_risk_reply, decode_decision, decode_order, encode_decision,
    encode_decision_with_reply, encode_order, DecodeError, DECISION_LEN_BYTES,
    DECISION_V1_LEN_BYTES, DECISION_V3_LEN_BYTES, ORDER_LEN_BYTES, RISK_REPLY_LEN_BYTES,
};
pub use files::{
    write_binary, write_csv, DeferredOrderFile, FileError, Format, LoadOptions, OrderFile,
};
pub use model::{Decision, Order, OrderKind, Reason, Side, Symbol, SymbolError, TICKS_PER_UNIT};
pub use order_ids::{
    engine_assigned_order_id, input_seq_of_assigned_order_id, is_reserved_order_id, RiskServerIds,
    ASSIGNED_ORDER_ID_BIT,
};
pub use price::{
    format_price_ticks, parse_decimal_ticks, parse_number_price_ticks, parse_price_ticks,
    DecimalSyntax, PriceError,
};
