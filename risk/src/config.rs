//! The limits file: TOML, parsed into raw types (serde, unknown keys refused), then validated
//! into [`Limits`], reporting every problem at once with its key path.
//!
//! The annotated example `examples/limits.toml` documents every key; `docs/risk.md` explains how
//! overrides combine. In short: a key in `[accounts.N]` or `[symbols.SYM]` replaces the
//! `[defaults]` value for that account or symbol; when both an account and a symbol override the
//! same limit, the smaller (stricter) one applies.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use orders::TICKS_PER_UNIT;
use orders::{parse_decimal_ticks, parse_number_price_ticks, DecimalSyntax, PriceError, Symbol};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::limits::{
    ACCOUNTS_MAX, BPS_PER_UNIT, CAPACITY_ACCOUNTS_DEFAULT, CAPACITY_OPEN_ORDERS_DEFAULT,
    CAPACITY_POSITIONS_DEFAULT, CAPACITY_SYMBOLS_DEFAULT, COLLAR_BPS_MAX,
    DUPLICATE_HORIZON_ORDERS_DEFAULT, DUPLICATE_HORIZON_ORDERS_MAX, MONEY_UNITS_MAX, NS_PER_MS,
    NS_PER_S, OPEN_ORDERS_MAX, ORDERS_PER_S_MAX, ORDER_QTY_LIMIT_MAX, POSITIONS_MAX,
    POSITION_QTY_LIMIT_MAX, SYMBOLS_MAX,
};

/// Trading state of the whole service, an account or a symbol. The effective state of an
/// order is the most severe of the global, account and symbol states.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum TradingState {
    /// Orders pass the checks normally.
    #[default]
    Active,
    /// Only orders that reduce the absolute position (counting open orders) pass.
    Reducing,
    /// No new order passes (kill switch). Cancels and fills still do.
    Halted,
}

impl TradingState {
    /// Parses `active`, `reducing`, `halted`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "reducing" => Some(Self::Reducing),
            "halted" => Some(Self::Halted),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Reducing => "reducing",
            Self::Halted => "halted",
        }
    }
}

impl fmt::Display for TradingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to an order for an account or symbol the limits file does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownPolicy {
    /// Accept it under the `[defaults]` limits (the account / symbol is added on its first
    /// accepted event, up to the `[capacity]` bound; past it, orders are rejected).
    #[default]
    Defaults,
    /// Reject with `unknown-account` / `unknown-symbol`.
    Reject,
}

/// A price collar: the band around the reference price an order's price must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collar {
    /// `|price − reference| ≤ reference × bps / 10 000` (rounded down to a whole tick).
    Bps(u32),
    /// `|price − reference| ≤ ticks`.
    Ticks(i64),
}

impl Collar {
    /// Half-width of the band in ticks around `reference`.
    pub fn band_ticks(self, reference: i64) -> i128 {
        match self {
            // i64 arithmetic (a multiply-shift for the constant divisor) unless it would
            // overflow; i128 division is a library call.
            Collar::Bps(bps) => match reference.checked_mul(bps as i64) {
                Some(p) => (p / BPS_PER_UNIT as i64) as i128,
                None => reference as i128 * bps as i128 / BPS_PER_UNIT,
            },
            Collar::Ticks(t) => t as i128,
        }
    }
}

/// An order-rate throttle as a GCRA (generic cell rate algorithm, the token bucket written with
/// one timestamp): `burst_orders` may arrive at once, then one every `interval_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Orders per second allowed in steady state.
    pub orders_per_s: u64,
    /// Orders allowed back to back.
    pub burst_orders: u64,
    /// `1 s / orders_per_s`, in ns (rounded down).
    pub interval_ns: u64,
    /// `interval_ns × (burst_orders − 1)`: how far ahead of `now` the account may run.
    pub tolerance_ns: u64,
}

impl Throttle {
    /// Builds the GCRA parameters; `orders_per_s` in `1..=ORDERS_PER_S_MAX`, `burst_orders ≥ 1`.
    pub fn new(orders_per_s: u64, burst_orders: u64) -> Self {
        let interval_ns = NS_PER_S / orders_per_s.max(1);
        Throttle {
            orders_per_s,
            burst_orders,
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(burst_orders.saturating_sub(1)),
        }
    }
}

/// The limits every account and symbol gets unless overridden. Notional values are in
/// notional ticks: price ticks × quantity (1 currency unit = 10 000 notional ticks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultLimits {
    /// Largest quantity of one order.
    pub max_order_qty: u64,
    /// Largest notional of one order (ticks × qty).
    pub max_order_notional_ticks: i128,
    /// Price collar; `None`: no collar.
    pub collar: Option<Collar>,
    /// Largest long position per (account, symbol), counting open buys.
    pub max_long_qty: u64,
    /// Largest short position per (account, symbol), counting open sells.
    pub max_short_qty: u64,
    /// Largest gross exposure per account: open notional + Σ |position| × reference.
    pub credit_limit_notional_ticks: i128,
    /// Order-rate throttle per account; `None`: unthrottled.
    pub throttle: Option<Throttle>,
}

/// Per-account overrides (`None`: the default applies).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountLimits {
    /// Trading state set by the file.
    pub state: TradingState,
    /// Override of `max_order_qty`.
    pub max_order_qty: Option<u64>,
    /// Override of `max_order_notional` (ticks × qty).
    pub max_order_notional_ticks: Option<i128>,
    /// Override of `max_long_qty`.
    pub max_long_qty: Option<u64>,
    /// Override of `max_short_qty`.
    pub max_short_qty: Option<u64>,
    /// Override of the credit limit.
    pub credit_limit_notional_ticks: Option<i128>,
    /// Override of the throttle.
    pub throttle: Option<Throttle>,
}

/// Per-symbol overrides and settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SymbolLimits {
    /// Trading state set by the file.
    pub state: TradingState,
    /// Every new order is rejected with `restricted-symbol`.
    pub restricted: bool,
    /// Reference price in ticks at start-up; `None`: the first accepted order's price.
    pub reference_price: Option<i64>,
    /// Override of `max_order_qty`.
    pub max_order_qty: Option<u64>,
    /// Override of `max_order_notional` (ticks × qty).
    pub max_order_notional_ticks: Option<i128>,
    /// Override of `max_long_qty`.
    pub max_long_qty: Option<u64>,
    /// Override of `max_short_qty`.
    pub max_short_qty: Option<u64>,
    /// Override of the collar.
    pub collar: Option<Collar>,
}

/// Sizes the checker's tables are allocated with at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Accounts (configured plus those added under the `defaults` policy).
    pub max_accounts: u64,
    /// Symbols (configured plus added).
    pub max_symbols: u64,
    /// (account, symbol) positions pre-allocated (more grow the table, amortised).
    pub max_positions: u64,
    /// Open orders pre-allocated (more grow the table, amortised).
    pub max_open_orders: u64,
}

/// Validated limits, ready for [`crate::Checker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Where they came from (file path or a label), for messages.
    pub origin: String,
    /// Global trading state set by the file.
    pub state: TradingState,
    /// Policy for accounts the file does not name.
    pub unknown_account: UnknownPolicy,
    /// Policy for symbols the file does not name.
    pub unknown_symbol: UnknownPolicy,
    /// How many recent accepted order ids are remembered for the duplicate check.
    pub duplicate_horizon_orders: u64,
    /// How long an accepted order id is remembered (ns); 0: only the count bounds it.
    pub duplicate_horizon_ns: u64,
    /// Account of JSON orders that name none.
    pub json_account: u32,
    /// Table sizes.
    pub capacity: Capacity,
    /// Default limits.
    pub defaults: DefaultLimits,
    /// Per-account overrides.
    pub accounts: BTreeMap<u32, AccountLimits>,
    /// Per-account overrides keyed by account name (`[accounts.ACC11]`,
    /// [`orders::account_names`]); they apply once [`Limits::resolve_account_names`] has given
    /// each name its id.
    pub account_names: BTreeMap<String, AccountLimits>,
    /// The ids of the names of [`Limits::account_names`], from the engine's name table
    /// ([`Limits::resolve_account_names`]). Not part of the file: not in
    /// [`crate::limits_digest`] (the table, recorded in the journal, is the same across
    /// restarts).
    pub named_account_ids: BTreeMap<u32, String>,
    /// Per-symbol overrides.
    pub symbols: BTreeMap<Symbol, SymbolLimits>,
}

/// One problem in a limits file: the key path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `accounts.7.max_order_qty`.
    pub key: String,
    /// What is wrong, e.g. `must be > 0`.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a limits file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read limits file {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a key / type the format does not have (serde reports the first one).
    #[error("{origin}: {message}")]
    Parse {
        /// File path or label.
        origin: String,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// Well-formed TOML whose values break the rules: every problem, each with its key.
    #[error("{origin}: {} problem(s) in the limits:{}", problems.len(), ProblemList(problems))]
    Invalid {
        /// File path or label.
        origin: String,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (parsed, unvalidated) types. Every value is optional so that validation can name every
// missing key at once.

/// A decimal number of the file: validation reads its text from the span (exactly as written,
/// `orders::parse_decimal_ticks`), never the `f64` (which would round `1000.12345`).
type Number = Spanned<f64>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    global: Option<RawGlobal>,
    capacity: Option<RawCapacity>,
    defaults: Option<RawDefaults>,
    accounts: Option<BTreeMap<String, RawAccount>>,
    symbols: Option<BTreeMap<String, RawSymbol>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    state: Option<String>,
    unknown_account: Option<String>,
    unknown_symbol: Option<String>,
    duplicate_horizon_orders: Option<i64>,
    duplicate_horizon_ms: Option<i64>,
    json_account: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapacity {
    max_accounts: Option<i64>,
    max_symbols: Option<i64>,
    max_positions: Option<i64>,
    max_open_orders: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    max_order_qty: Option<i64>,
    max_order_notional: Option<Number>,
    collar_bps: Option<i64>,
    collar_ticks: Option<i64>,
    max_long_qty: Option<i64>,
    max_short_qty: Option<i64>,
    credit_limit_notional: Option<Number>,
    max_orders_per_s: Option<i64>,
    burst_orders: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    state: Option<String>,
    max_order_qty: Option<i64>,
    max_order_notional: Option<Number>,
    max_long_qty: Option<i64>,
    max_short_qty: Option<i64>,
    credit_limit_notional: Option<Number>,
    max_orders_per_s: Option<i64>,
    burst_orders: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSymbol {
    state: Option<String>,
    restricted: Option<bool>,
    reference_price: Option<Number>,
    max_order_qty: Option<i64>,
    max_order_notional: Option<Number>,
    max_long_qty: Option<i64>,
    max_short_qty: Option<i64>,
    collar_bps: Option<i64>,
    collar_ticks: Option<i64>,
}

/// Collects problems while validating.
struct Validator<'s> {
    problems: Vec<Problem>,
    /// The TOML text, where the numbers' spans point.
    source: &'s str,
}

impl Validator<'_> {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// An integer in `lo..=hi`.
    fn int_in(&mut self, key: &str, v: Option<i64>, lo: u64, hi: u64) -> Option<u64> {
        let v = v?;
        if v < 0 || (v as u64) < lo || (v as u64) > hi {
            if lo == 1 && v <= 0 {
                self.push(key, format!("must be > 0 (got {v})"));
            } else {
                self.push(key, format!("must be in {lo}..={hi} (got {v})"));
            }
            return None;
        }
        Some(v as u64)
    }

    fn required<T>(&mut self, key: &str, v: Option<T>, present: bool) -> Option<T> {
        if !present {
            self.push(key, "is required");
        }
        v
    }

    /// The text of a number as the file writes it.
    fn text(&self, n: &Number) -> String {
        self.source
            .get(n.span())
            .map_or_else(|| n.get_ref().to_string(), |t| t.trim().to_owned())
    }

    /// A money amount in currency units, > 0, at most 4 decimal places, converted exactly to
    /// notional ticks.
    fn money(&mut self, key: &str, v: Option<&Number>) -> Option<i128> {
        let text = self.text(v?);
        let ticks = match parse_decimal_ticks(&text, DecimalSyntax::Number) {
            Ok(t) => t,
            Err(PriceError::TooPrecise(_)) => {
                self.push(
                    key,
                    format!("has more than 4 decimal places (1 notional tick = 0.0001): {text}"),
                );
                return None;
            }
            Err(PriceError::OutOfRange(_)) => i128::MAX,
            Err(_) => {
                self.push(key, format!("must be a decimal number (got {text})"));
                return None;
            }
        };
        if ticks <= 0 {
            self.push(key, format!("must be > 0 (got {text})"));
            return None;
        }
        if ticks > MONEY_UNITS_MAX as i128 * TICKS_PER_UNIT as i128 {
            self.push(key, format!("must be ≤ {MONEY_UNITS_MAX:e} (got {text})"));
            return None;
        }
        Some(ticks)
    }

    /// A price, > 0, at most 4 decimal places, converted exactly to ticks.
    fn price(&mut self, key: &str, v: Option<&Number>) -> Option<i64> {
        let text = self.text(v?);
        match parse_number_price_ticks(&text) {
            Ok(t) if t > 0 => Some(t),
            Ok(_) => {
                self.push(key, format!("must be > 0 (got {text})"));
                None
            }
            Err(e) => {
                self.push(key, e.to_string());
                None
            }
        }
    }

    fn state(&mut self, key: &str, v: Option<&str>) -> TradingState {
        match v {
            None => TradingState::Active,
            Some(s) => TradingState::parse(s).unwrap_or_else(|| {
                self.push(
                    key,
                    format!("expected \"active\", \"reducing\" or \"halted\", got {s:?}"),
                );
                TradingState::Active
            }),
        }
    }

    fn policy(&mut self, key: &str, v: Option<&str>) -> UnknownPolicy {
        match v {
            None | Some("defaults") => UnknownPolicy::Defaults,
            Some("reject") => UnknownPolicy::Reject,
            Some(s) => {
                self.push(
                    key,
                    format!("expected \"defaults\" or \"reject\", got {s:?}"),
                );
                UnknownPolicy::Defaults
            }
        }
    }

    fn collar(&mut self, prefix: &str, bps: Option<i64>, ticks: Option<i64>) -> Option<Collar> {
        match (bps, ticks) {
            (Some(_), Some(_)) => {
                self.push(
                    format!("{prefix}.collar_bps"),
                    "set collar_bps or collar_ticks, not both",
                );
                None
            }
            (Some(b), None) => self
                .int_in(
                    &format!("{prefix}.collar_bps"),
                    Some(b),
                    0,
                    COLLAR_BPS_MAX as u64,
                )
                .map(|b| Collar::Bps(b as u32)),
            (None, Some(t)) => {
                if t < 0 {
                    self.push(
                        format!("{prefix}.collar_ticks"),
                        format!("must be ≥ 0 (got {t})"),
                    );
                    None
                } else {
                    Some(Collar::Ticks(t))
                }
            }
            (None, None) => None,
        }
    }

    fn throttle(
        &mut self,
        prefix: &str,
        rate: Option<i64>,
        burst: Option<i64>,
        inherited: Option<Throttle>,
    ) -> Option<Throttle> {
        let rate_key = format!("{prefix}.max_orders_per_s");
        let burst_key = format!("{prefix}.burst_orders");
        let rate = self.int_in(&rate_key, rate, 1, ORDERS_PER_S_MAX);
        let burst_set = burst.is_some();
        let burst = self.int_in(&burst_key, burst, 1, ORDERS_PER_S_MAX);
        match (rate, burst) {
            (Some(r), Some(b)) => Some(Throttle::new(r, b)),
            // Without burst_orders, one second's worth of orders may come back to back.
            (Some(r), None) if !burst_set => Some(Throttle::new(r, r)),
            (None, Some(b)) => match inherited {
                Some(t) => Some(Throttle::new(t.orders_per_s, b)),
                None => {
                    self.push(burst_key, "burst_orders needs max_orders_per_s");
                    None
                }
            },
            _ => None,
        }
    }
}

impl Limits {
    /// The overrides of `account`: by number, or by the name bound to it.
    pub fn account_limits(&self, account: u32) -> Option<&AccountLimits> {
        self.accounts.get(&account).or_else(|| {
            self.named_account_ids
                .get(&account)
                .and_then(|n| self.account_names.get(n))
        })
    }

    /// Binds every name of [`Limits::account_names`] to its id through `id_of` (the engine's
    /// account name table); a name without an id is an error naming it (an override that
    /// cannot be applied is never ignored silently).
    pub fn resolve_account_names(
        &mut self,
        id_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<(), String> {
        match self.bind_account_names(id_of)?.first() {
            None => Ok(()),
            Some(name) => Err(format!(
                "{}: accounts.{name}: the account name has no account id",
                self.origin
            )),
        }
    }

    /// [`Limits::resolve_account_names`] for the names `id_of` knows; returns those it does
    /// not (their overrides do not apply yet). An id also configured by number is an error.
    pub fn bind_account_names(
        &mut self,
        id_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<Vec<String>, String> {
        let mut ids = BTreeMap::new();
        let mut unknown = Vec::new();
        for name in self.account_names.keys() {
            let Some(id) = id_of(name) else {
                unknown.push(name.clone());
                continue;
            };
            if self.accounts.contains_key(&id) {
                return Err(format!(
                    "{}: accounts.{name}: its id {id} is also configured by number",
                    self.origin
                ));
            }
            ids.insert(id, name.clone());
        }
        self.named_account_ids = ids;
        Ok(unknown)
    }

    /// Whether an override keyed by name has no id yet: an order of an account of the named
    /// range that the service cannot name might be that account.
    pub fn has_unbound_account_names(&self) -> bool {
        self.named_account_ids.len() < self.account_names.len()
    }

    /// Reads and validates a limits file.
    pub fn from_file(path: &Path) -> Result<Limits, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Limits::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates limits from TOML text; `origin` names it in messages.
    pub fn from_toml_str(s: &str, origin: &str) -> Result<Limits, ConfigError> {
        let raw: RawFile = toml::from_str(s).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        validate(raw, origin, s)
    }

    /// Effective per-order quantity limit for an account / symbol pair (`None`: not configured).
    pub fn max_order_qty(&self, account: u32, symbol: Symbol) -> u64 {
        pick(
            self.account_limits(account).and_then(|a| a.max_order_qty),
            self.symbols.get(&symbol).and_then(|s| s.max_order_qty),
            self.defaults.max_order_qty,
        )
    }
}

/// The override rule: an override replaces the default; two overrides → the smaller.
pub(crate) fn pick<T: Ord + Copy>(account: Option<T>, symbol: Option<T>, default: T) -> T {
    match (account, symbol) {
        (Some(a), Some(s)) => a.min(s),
        (Some(a), None) => a,
        (None, Some(s)) => s,
        (None, None) => default,
    }
}

fn validate(raw: RawFile, origin: &str, source: &str) -> Result<Limits, ConfigError> {
    let mut v = Validator {
        problems: Vec::new(),
        source,
    };

    let g = raw.global.unwrap_or_default();
    let state = v.state("global.state", g.state.as_deref());
    let unknown_account = v.policy("global.unknown_account", g.unknown_account.as_deref());
    let unknown_symbol = v.policy("global.unknown_symbol", g.unknown_symbol.as_deref());
    let duplicate_horizon_orders = v
        .int_in(
            "global.duplicate_horizon_orders",
            g.duplicate_horizon_orders,
            1,
            DUPLICATE_HORIZON_ORDERS_MAX,
        )
        .unwrap_or(DUPLICATE_HORIZON_ORDERS_DEFAULT);
    let duplicate_horizon_ms = v
        .int_in(
            "global.duplicate_horizon_ms",
            g.duplicate_horizon_ms,
            0,
            u64::MAX / NS_PER_MS,
        )
        .unwrap_or(0);
    let json_account = v
        .int_in("global.json_account", g.json_account, 0, u32::MAX as u64)
        .unwrap_or(0) as u32;

    let c = raw.capacity.unwrap_or_default();
    let capacity = Capacity {
        max_accounts: v
            .int_in("capacity.max_accounts", c.max_accounts, 1, ACCOUNTS_MAX)
            .unwrap_or(CAPACITY_ACCOUNTS_DEFAULT),
        max_symbols: v
            .int_in("capacity.max_symbols", c.max_symbols, 1, SYMBOLS_MAX)
            .unwrap_or(CAPACITY_SYMBOLS_DEFAULT),
        max_positions: v
            .int_in("capacity.max_positions", c.max_positions, 1, POSITIONS_MAX)
            .unwrap_or(CAPACITY_POSITIONS_DEFAULT),
        max_open_orders: v
            .int_in(
                "capacity.max_open_orders",
                c.max_open_orders,
                1,
                OPEN_ORDERS_MAX,
            )
            .unwrap_or(CAPACITY_OPEN_ORDERS_DEFAULT),
    };

    let d_present = raw.defaults.is_some();
    let d = raw.defaults.unwrap_or_default();
    if !d_present {
        v.push("defaults", "section [defaults] is required");
    }
    let max_order_qty = v.int_in(
        "defaults.max_order_qty",
        d.max_order_qty,
        1,
        ORDER_QTY_LIMIT_MAX,
    );
    let max_order_qty = v.required(
        "defaults.max_order_qty",
        max_order_qty,
        !d_present || d.max_order_qty.is_some(),
    );
    let max_order_notional = v.money("defaults.max_order_notional", d.max_order_notional.as_ref());
    let max_order_notional = v.required(
        "defaults.max_order_notional",
        max_order_notional,
        !d_present || d.max_order_notional.is_some(),
    );
    let max_long = v.int_in(
        "defaults.max_long_qty",
        d.max_long_qty,
        0,
        POSITION_QTY_LIMIT_MAX,
    );
    let max_long = v.required(
        "defaults.max_long_qty",
        max_long,
        !d_present || d.max_long_qty.is_some(),
    );
    let max_short = v.int_in(
        "defaults.max_short_qty",
        d.max_short_qty,
        0,
        POSITION_QTY_LIMIT_MAX,
    );
    let max_short = v.required(
        "defaults.max_short_qty",
        max_short,
        !d_present || d.max_short_qty.is_some(),
    );
    let credit = v.money(
        "defaults.credit_limit_notional",
        d.credit_limit_notional.as_ref(),
    );
    let credit = v.required(
        "defaults.credit_limit_notional",
        credit,
        !d_present || d.credit_limit_notional.is_some(),
    );
    let collar = v.collar("defaults", d.collar_bps, d.collar_ticks);
    let throttle = v.throttle("defaults", d.max_orders_per_s, d.burst_orders, None);
    let defaults = DefaultLimits {
        max_order_qty: max_order_qty.unwrap_or(1),
        max_order_notional_ticks: max_order_notional.unwrap_or(1),
        collar,
        max_long_qty: max_long.unwrap_or(0),
        max_short_qty: max_short.unwrap_or(0),
        credit_limit_notional_ticks: credit.unwrap_or(1),
        throttle,
    };

    let mut accounts = BTreeMap::new();
    let mut account_names = BTreeMap::new();
    for (key, a) in raw.accounts.unwrap_or_default() {
        let prefix = format!("accounts.{key}");
        let id = if key.bytes().all(|b| b.is_ascii_digit()) {
            key.parse::<u32>().ok()
        } else {
            None
        };
        let named = id.is_none() && orders::validate_account_name(&key).is_ok();
        if id.is_none() && !named {
            v.push(
                &prefix,
                "account keys must be account numbers (0..=4294967295) or account names (1 to \
                 32 printable ASCII characters, no space, not all digits)",
            );
            continue;
        }
        let limits = AccountLimits {
            state: v.state(&format!("{prefix}.state"), a.state.as_deref()),
            max_order_qty: v.int_in(
                &format!("{prefix}.max_order_qty"),
                a.max_order_qty,
                1,
                ORDER_QTY_LIMIT_MAX,
            ),
            max_order_notional_ticks: v.money(
                &format!("{prefix}.max_order_notional"),
                a.max_order_notional.as_ref(),
            ),
            max_long_qty: v.int_in(
                &format!("{prefix}.max_long_qty"),
                a.max_long_qty,
                0,
                POSITION_QTY_LIMIT_MAX,
            ),
            max_short_qty: v.int_in(
                &format!("{prefix}.max_short_qty"),
                a.max_short_qty,
                0,
                POSITION_QTY_LIMIT_MAX,
            ),
            credit_limit_notional_ticks: v.money(
                &format!("{prefix}.credit_limit_notional"),
                a.credit_limit_notional.as_ref(),
            ),
            throttle: v.throttle(
                &prefix,
                a.max_orders_per_s,
                a.burst_orders,
                defaults.throttle,
            ),
        };
        match id {
            Some(id) => {
                if accounts.insert(id, limits).is_some() {
                    v.push(&prefix, format!("account {id} is configured twice"));
                }
            }
            None => {
                account_names.insert(key.clone(), limits);
            }
        }
    }
    if !account_names.is_empty() {
        if let Some(id) = accounts.keys().find(|&&id| orders::is_named_account(id)) {
            v.push(
                format!("accounts.{id}"),
                format!(
                    "account numbers from {} are the ids of account names: not allowed in a \
                     file that names accounts",
                    orders::NAMED_ACCOUNT_BASE
                ),
            );
        }
    }
    if (accounts.len() + account_names.len()) as u64 > capacity.max_accounts {
        v.push(
            "capacity.max_accounts",
            format!(
                "is {} but {} accounts are configured",
                capacity.max_accounts,
                accounts.len() + account_names.len()
            ),
        );
    }

    let mut symbols = BTreeMap::new();
    for (key, s) in raw.symbols.unwrap_or_default() {
        let prefix = format!("symbols.{key}");
        let sym = match Symbol::new(&key) {
            Ok(sym) => sym,
            Err(e) => {
                v.push(&prefix, e.to_string());
                continue;
            }
        };
        let reference_price = v.price(
            &format!("{prefix}.reference_price"),
            s.reference_price.as_ref(),
        );
        let limits = SymbolLimits {
            state: v.state(&format!("{prefix}.state"), s.state.as_deref()),
            restricted: s.restricted.unwrap_or(false),
            reference_price,
            max_order_qty: v.int_in(
                &format!("{prefix}.max_order_qty"),
                s.max_order_qty,
                1,
                ORDER_QTY_LIMIT_MAX,
            ),
            max_order_notional_ticks: v.money(
                &format!("{prefix}.max_order_notional"),
                s.max_order_notional.as_ref(),
            ),
            max_long_qty: v.int_in(
                &format!("{prefix}.max_long_qty"),
                s.max_long_qty,
                0,
                POSITION_QTY_LIMIT_MAX,
            ),
            max_short_qty: v.int_in(
                &format!("{prefix}.max_short_qty"),
                s.max_short_qty,
                0,
                POSITION_QTY_LIMIT_MAX,
            ),
            collar: v.collar(&prefix, s.collar_bps, s.collar_ticks),
        };
        if symbols.insert(sym, limits).is_some() {
            v.push(
                &prefix,
                format!("symbol {sym} is configured twice (symbols are upper-cased)"),
            );
        }
    }
    if symbols.len() as u64 > capacity.max_symbols {
        v.push(
            "capacity.max_symbols",
            format!(
                "is {} but {} symbols are configured",
                capacity.max_symbols,
                symbols.len()
            ),
        );
    }

    if !v.problems.is_empty() {
        return Err(ConfigError::Invalid {
            origin: origin.to_owned(),
            problems: v.problems,
        });
    }
    Ok(Limits {
        origin: origin.to_owned(),
        state,
        unknown_account,
        unknown_symbol,
        duplicate_horizon_orders,
        duplicate_horizon_ns: duplicate_horizon_ms * NS_PER_MS,
        json_account,
        capacity,
        defaults,
        accounts,
        account_names,
        named_account_ids: BTreeMap::new(),
        symbols,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MINIMAL: &str = r#"
[defaults]
max_order_qty = 1000
max_order_notional = 100000
max_long_qty = 5000
max_short_qty = 4000
credit_limit_notional = 1000000
"#;

    fn problems(text: &str) -> Vec<String> {
        match Limits::from_toml_str(text, "test.toml") {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn minimal_file_gets_built_in_values() {
        let l = Limits::from_toml_str(MINIMAL, "m").unwrap();
        assert_eq!(l.defaults.max_order_qty, 1000);
        assert_eq!(l.defaults.max_order_notional_ticks, 100_000 * 10_000);
        assert_eq!(l.defaults.credit_limit_notional_ticks, 1_000_000 * 10_000);
        assert_eq!(l.defaults.collar, None);
        assert_eq!(l.defaults.throttle, None);
        assert_eq!(l.state, TradingState::Active);
        assert_eq!(l.unknown_account, UnknownPolicy::Defaults);
        assert_eq!(l.duplicate_horizon_orders, DUPLICATE_HORIZON_ORDERS_DEFAULT);
        assert_eq!(l.duplicate_horizon_ns, 0);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let p = problems(
            r#"
[global]
state = "paused"
unknown_symbol = "maybe"
duplicate_horizon_orders = 0
[defaults]
max_order_qty = 0
max_order_notional = -5
max_long_qty = 10
collar_bps = 10
collar_ticks = 5
burst_orders = 3
[accounts.7]
max_order_qty = 0
credit_limit_notional = 0
[accounts."x 7"]
[symbols.TOOLONGSYMBOL]
[symbols.AAPL]
reference_price = 0.00001
collar_ticks = -1
"#,
        );
        let expected = [
            "global.state: expected \"active\", \"reducing\" or \"halted\", got \"paused\"",
            "global.unknown_symbol: expected \"defaults\" or \"reject\", got \"maybe\"",
            "global.duplicate_horizon_orders: must be > 0 (got 0)",
            "defaults.max_order_qty: must be > 0 (got 0)",
            "defaults.max_order_notional: must be > 0 (got -5)",
            "defaults.max_short_qty: is required",
            "defaults.credit_limit_notional: is required",
            "defaults.collar_bps: set collar_bps or collar_ticks, not both",
            "defaults.burst_orders: burst_orders needs max_orders_per_s",
            "accounts.7.max_order_qty: must be > 0 (got 0)",
            "accounts.7.credit_limit_notional: must be > 0 (got 0)",
            "accounts.x 7: account keys must be account numbers (0..=4294967295) or account names (1 to 32 printable ASCII characters, no space, not all digits)",
            "symbols.AAPL.reference_price: price \"0.00001\" has more than 4 decimal places (1 tick = 0.0001)",
            "symbols.AAPL.collar_ticks: must be ≥ 0 (got -1)",
            "symbols.TOOLONGSYMBOL: symbol \"TOOLONGSYMBOL\" is longer than 8 characters",
        ];
        for e in expected {
            assert!(p.iter().any(|x| x == e), "missing {e:?} in {p:#?}");
        }
        assert_eq!(p.len(), expected.len(), "{p:#?}");
    }

    /// Issue 13 item 11: prices and money are read from the file's text, exactly; more than 4
    /// decimal places is a problem, never a rounding (through `f64`, `1000.12345` became
    /// 10001235 ticks, and a notional of 0.00015 one tick... or two).
    #[test]
    fn prices_and_money_are_exact_from_the_text() {
        let ok = |value: &str| {
            let text = format!("{MINIMAL}\n[symbols.AAPL]\nreference_price = {value} # a comment\nmax_order_notional = {value}\n");
            let l = Limits::from_toml_str(&text, "t").unwrap();
            let s = &l.symbols[&Symbol::new("AAPL").unwrap()];
            (
                s.reference_price.unwrap(),
                s.max_order_notional_ticks.unwrap(),
            )
        };
        assert_eq!(ok("1000.1234"), (10_001_234, 10_001_234));
        assert_eq!(ok("100"), (1_000_000, 1_000_000));
        assert_eq!(ok("+1_000.5"), (10_005_000, 10_005_000));
        assert_eq!(ok("1.5e2"), (1_500_000, 1_500_000));
        assert_eq!(ok("0.0001"), (1, 1));
        // 17 significant digits: an f64 reads it as 922337203685.4776 (its shortest form).
        assert_eq!(
            ok("922337203685.4775"),
            (9_223_372_036_854_775, 9_223_372_036_854_775)
        );
        let p = problems(&format!(
            "{MINIMAL}\n[symbols.AAPL]\nreference_price = 1000.12345\nmax_order_notional = 0.00015\n[symbols.MSFT]\nreference_price = 922337203685.47758071\nmax_order_notional = inf\n"
        ));
        assert_eq!(
            p,
            [
                "symbols.AAPL.reference_price: price \"1000.12345\" has more than 4 decimal places (1 tick = 0.0001)",
                "symbols.AAPL.max_order_notional: has more than 4 decimal places (1 notional tick = 0.0001): 0.00015",
                "symbols.MSFT.reference_price: price \"922337203685.47758071\" has more than 4 decimal places (1 tick = 0.0001)",
                "symbols.MSFT.max_order_notional: must be a decimal number (got inf)",
            ],
            "{p:#?}"
        );
        // The bound on money is exact too.
        let p = problems(&format!(
            "{MINIMAL}\n[symbols.AAPL]\nmax_order_notional = 1000000000000000.0001\n"
        ));
        assert_eq!(
            p,
            ["symbols.AAPL.max_order_notional: must be ≤ 1e15 (got 1000000000000000.0001)"]
        );
    }

    #[test]
    fn missing_defaults_section_is_named() {
        let p = problems("[global]\nstate = \"active\"\n");
        assert!(
            p.contains(&"defaults: section [defaults] is required".to_owned()),
            "{p:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_location() {
        let text = format!("{MINIMAL}\n[accounts.3]\nmax_qty = 5\n");
        match Limits::from_toml_str(&text, "t.toml") {
            Err(ConfigError::Parse { message, origin }) => {
                assert_eq!(origin, "t.toml");
                assert!(message.contains("max_qty"), "{message}");
                assert!(message.contains("line"), "{message}");
            }
            other => panic!("expected Parse, got {other:?}"),
        }
        assert!(matches!(
            Limits::from_toml_str("this is not toml", "x"),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn overrides_and_capacity() {
        let text = format!(
            "{MINIMAL}\nmax_orders_per_s = 100\n[capacity]\nmax_accounts = 1\n[accounts.1]\nmax_order_qty = 50\nburst_orders = 7\n[accounts.2]\n"
        );
        let p = problems(&text);
        assert_eq!(
            p,
            vec!["capacity.max_accounts: is 1 but 2 accounts are configured"]
        );
        let text = format!(
            "{MINIMAL}\nmax_orders_per_s = 100\n[accounts.1]\nmax_order_qty = 50\nburst_orders = 7\n[symbols.aapl]\nmax_order_qty = 20\nreference_price = 185.25\ncollar_bps = 500\n"
        );
        let l = Limits::from_toml_str(&text, "x").unwrap();
        let aapl = Symbol::new("AAPL").unwrap();
        let msft = Symbol::new("MSFT").unwrap();
        assert_eq!(l.max_order_qty(1, aapl), 20, "both override: smaller wins");
        assert_eq!(l.max_order_qty(1, msft), 50, "account override");
        assert_eq!(l.max_order_qty(2, aapl), 20, "symbol override");
        assert_eq!(l.max_order_qty(2, msft), 1000, "default");
        assert_eq!(l.defaults.throttle, Some(Throttle::new(100, 100)));
        assert_eq!(l.accounts[&1].throttle, Some(Throttle::new(100, 7)));
        assert_eq!(l.symbols[&aapl].reference_price, Some(1_852_500));
        assert_eq!(l.symbols[&aapl].collar, Some(Collar::Bps(500)));
    }

    #[test]
    fn duplicate_symbol_keys_after_upper_casing() {
        let text = format!("{MINIMAL}\n[symbols.aapl]\n[symbols.AAPL]\n");
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("configured twice"), "{p:?}");
    }

    #[test]
    fn the_annotated_example_parses_and_suits_bench_gen() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/limits.toml");
        let l = Limits::from_file(Path::new(path)).unwrap();
        assert_eq!(
            l.accounts.keys().copied().collect::<Vec<_>>(),
            (1..=16).collect::<Vec<u32>>()
        );
        // bench gen: ref(S{k}) = 10 + ((k − 1) × 37 mod 491) dollars; RESTR restricted at 100.
        for k in 1..=20i64 {
            let s = Symbol::new(&format!("S{k:04}")).unwrap();
            let want = (10 + ((k - 1) * 37) % 491) * TICKS_PER_UNIT;
            assert_eq!(l.symbols[&s].reference_price, Some(want), "{s}");
        }
        let restr = &l.symbols[&Symbol::new("RESTR").unwrap()];
        assert!(restr.restricted);
        assert_eq!(l.defaults.collar, Some(Collar::Bps(600)));
        assert_eq!(l.defaults.max_order_qty, 100_000);
        assert_eq!(l.max_order_qty(16, Symbol::new("S0001").unwrap()), 50_000);
    }

    #[test]
    fn error_display_lists_every_problem() {
        let err = Limits::from_toml_str("[defaults]\nmax_order_qty = 0\n", "lim.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("lim.toml: 5 problem(s)"), "{text}");
        assert!(
            text.contains("\n  - defaults.max_order_qty: must be > 0 (got 0)"),
            "{text}"
        );
        assert!(
            text.contains("\n  - defaults.max_long_qty: is required"),
            "{text}"
        );
    }
}
