//! `bench gen`: a deterministic, realistic synthetic order flow.
//!
//! Every draw comes from one `ChaCha8Rng` seeded with `--seed`, in a fixed order, so the same
//! arguments give the same file byte for byte. What is drawn (also in `docs/formats/orders.md`,
//! which must match this file):
//!
//! - **Time:** `ts_ns` starts at 0 and grows by `1 + ⌊Exp(mean 10 µs)⌋` per event (strictly
//!   increasing, ~100 k events/s).
//! - **Event type:** `u ~ U[0,1)`: `u < breach` → a breach order; `< breach + cancel` → a
//!   cancel; `< breach + cancel + fill` → a fill; otherwise a normal new order. A cancel or fill
//!   drawn while no order is open becomes a normal new order instead.
//! - **New order:** id = next id (1, 2, 3, … for every new order, breach orders included);
//!   symbol `S0001..S{symbols}` with Zipf popularity `P(k) ∝ 1/k`; account uniform in
//!   `1..=accounts`; side buy/sell 50/50; qty = `round(exp(ln 100 + 1.0·z))`, z ~ N(0,1),
//!   clamped to `1..=10_000`; price: the symbol's mid takes a step `round(z · 0.1 % · ref)` and is
//!   clamped to `ref ± 2 %`, then a buy is placed `⌊U[0,1) · 0.5 % · ref⌋` ticks below the mid
//!   (a sell above) and rounded to a whole cent (100 ticks). So `|price − ref| ≤ 2.55 % · ref`.
//! - **Cancel:** a uniformly chosen open order; with probability 0.2 (when ≥ 2 shares remain)
//!   a partial cancel of `U{1..remaining−1}` shares, else all remaining shares (the order is
//!   closed). Same order id, account, symbol, side and price as the order.
//! - **Fill:** likewise with probability 0.5 partial; price = the resting order's price, side =
//!   the resting (passive) order's side, as LOBSTER records executions.
//! - **Breach order** (one of three, uniformly; never a cancel/fill target):
//!   `giant-qty`: a normal new order but qty = `1_000_000 × U{1..5}`;
//!   `off-collar`: a normal new order but price = `ref ± ⌈U[10 %, 20 %) · ref⌉` rounded away from
//!   ref to a whole cent, sign 50/50;
//!   `restricted`: symbol `RESTR` (reference $100), price `$100 ± ⌊U[0,1) · 1 %⌋` to the cent,
//!   normal qty.
//!
//! Reference prices: `ref(k) = (10 + ((k − 1) × 37) mod 491)` dollars for symbol `S{k:04}`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::convert::{resolve_output_format, OutputFormat};
use crate::limits::{GEN_OPEN_ORDERS_MAX, GEN_SYMBOLS_MAX};
use orders::files::{self, FileError};
use orders::{Order, OrderKind, Side, Symbol, SymbolError, TICKS_PER_UNIT};

/// Default share of cancels among all events.
pub const CANCEL_SHARE_DEFAULT: f64 = 0.15;
/// Default share of fills among all events.
pub const FILL_SHARE_DEFAULT: f64 = 0.10;
/// Default share of breach orders among all events.
pub const BREACH_SHARE_DEFAULT: f64 = 0.02;

/// Mean gap between events, in ns (plus 1 ns so that times strictly increase).
pub const GAP_MEAN_NS: f64 = 10_000.0;
/// Median of the log-normal order size, in shares.
pub const QTY_MEDIAN: f64 = 100.0;
/// Sigma of the log-normal order size (of `ln qty`).
pub const QTY_SIGMA: f64 = 1.0;
/// Largest normal order size, in shares.
pub const QTY_MAX: u64 = 10_000;
/// Zipf exponent of symbol popularity.
pub const ZIPF_EXPONENT: f64 = 1.0;
/// Standard deviation of a mid-price step, in parts per million of the reference.
pub const MID_STEP_PPM: i64 = 1_000;
/// The mid stays within this distance of the reference, in parts per million.
pub const MID_BAND_PPM: i64 = 20_000;
/// A new order sits at most this far from the mid (below for a buy, above for a sell), in ppm.
pub const PLACEMENT_MAX_PPM: i64 = 5_000;
/// Prices are whole cents: 100 ticks.
pub const PRICE_STEP_TICKS: i64 = 100;
/// Normal orders stay within this distance of the reference, in ppm: band + placement + half a
/// cent on the smallest reference ($10 = 100,000 ticks → 50 ticks = 500 ppm).
pub const NORMAL_DISTANCE_MAX_PPM: i64 = 25_500;
const _: () = assert!(
    MID_BAND_PPM + PLACEMENT_MAX_PPM + (PRICE_STEP_TICKS / 2) * 1_000_000 / REFERENCE_MIN_TICKS
        == NORMAL_DISTANCE_MAX_PPM
);
/// Probability that a cancel is partial (when at least 2 shares remain).
pub const PARTIAL_CANCEL_PROBABILITY: f64 = 0.2;
/// Probability that a fill is partial (when at least 2 shares remain).
pub const PARTIAL_FILL_PROBABILITY: f64 = 0.5;
/// A giant order's size is this times `U{1..=GIANT_QTY_FACTOR_MAX}`.
pub const GIANT_QTY_UNIT: u64 = 1_000_000;
/// Largest multiple of [`GIANT_QTY_UNIT`].
pub const GIANT_QTY_FACTOR_MAX: u64 = 5;
const _: () = assert!(GIANT_QTY_UNIT > QTY_MAX * 10);
/// An off-collar order is at least this far from the reference, in ppm.
pub const OFF_COLLAR_MIN_PPM: i64 = 100_000;
/// … and less than this far (before rounding up to the cent), in ppm.
pub const OFF_COLLAR_MAX_PPM: i64 = 200_000;
/// The collar the docs suggest for a limits file, in ppm (5 %): between what normal orders and
/// off-collar orders reach.
pub const SUGGESTED_COLLAR_PPM: i64 = 50_000;
const _: () = assert!(
    NORMAL_DISTANCE_MAX_PPM < SUGGESTED_COLLAR_PPM && SUGGESTED_COLLAR_PPM < OFF_COLLAR_MIN_PPM
);
/// The restricted symbol of `restricted` breach orders.
pub const RESTRICTED_SYMBOL: &str = "RESTR";
/// Its reference price: $100.
pub const RESTRICTED_REFERENCE_TICKS: i64 = 100 * TICKS_PER_UNIT;
/// Restricted orders sit within this distance of $100, in ppm.
pub const RESTRICTED_SPREAD_PPM: i64 = 10_000;
/// Smallest reference price: $10.
pub const REFERENCE_MIN_TICKS: i64 = 10 * TICKS_PER_UNIT;
/// Reference prices cycle over this many whole dollars (a prime, so `× 37` permutes it).
pub const REFERENCE_SPAN_DOLLARS: i64 = 491;
/// Step between consecutive symbols' references, in dollars.
pub const REFERENCE_STRIDE_DOLLARS: i64 = 37;

const PPM: i64 = 1_000_000;

/// The reference price of symbol `S{index:04}` (index ≥ 1), in ticks:
/// `(10 + ((index − 1) × 37) mod 491)` dollars, so $10..$500.
pub fn reference_price_ticks(index: u32) -> i64 {
    let k = index.max(1) as i64 - 1;
    REFERENCE_MIN_TICKS + (k * REFERENCE_STRIDE_DOLLARS % REFERENCE_SPAN_DOLLARS) * TICKS_PER_UNIT
}

/// The name of symbol `index` (≥ 1): `S0001`, `S0002`, …
pub fn symbol_name(index: u32) -> String {
    format!("S{index:04}")
}

/// The symbol index of a generated symbol name (`S0007` → 7).
pub fn symbol_index(symbol: &Symbol) -> Option<u32> {
    let s = symbol.as_str().strip_prefix('S')?;
    if s.len() != 4 {
        return None;
    }
    s.parse().ok().filter(|&i| i >= 1)
}

/// The reference price of a generated symbol (`S0001`.., or `RESTR`).
pub fn reference_of(symbol: &Symbol) -> Option<i64> {
    if symbol.as_str() == RESTRICTED_SYMBOL {
        return Some(RESTRICTED_REFERENCE_TICKS);
    }
    symbol_index(symbol).map(reference_price_ticks)
}

/// Which typical risk limit a generated order breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Breach {
    /// qty ≥ 1,000,000.
    GiantQty,
    /// Price 10 % or more from the reference.
    OffCollar,
    /// Symbol `RESTR`.
    Restricted,
}

/// Classifies a new order of a generated file against the documented limits: `RESTR` →
/// restricted; qty ≥ [`GIANT_QTY_UNIT`] → giant; price farther than the suggested 5 % collar
/// from its symbol's reference → off-collar. `None` for normal orders, cancels and fills.
pub fn classify_breach(o: &Order) -> Option<Breach> {
    if o.kind != OrderKind::New {
        return None;
    }
    if o.symbol.as_str() == RESTRICTED_SYMBOL {
        return Some(Breach::Restricted);
    }
    if o.qty >= GIANT_QTY_UNIT {
        return Some(Breach::GiantQty);
    }
    let reference = reference_of(&o.symbol)?;
    let distance = (o.price - reference).unsigned_abs() as i128 * PPM as i128;
    (distance > SUGGESTED_COLLAR_PPM as i128 * reference as i128).then_some(Breach::OffCollar)
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Events to generate.
    pub orders: u64,
    /// Accounts `1..=accounts`.
    pub accounts: u32,
    /// Symbols `S0001..`.
    pub symbols: u32,
    /// Seed of the ChaCha8 generator.
    pub seed: u64,
    /// Share of cancels, 0..1.
    pub cancel_share: f64,
    /// Share of fills, 0..1.
    pub fill_share: f64,
    /// Share of breach orders, 0..1.
    pub breach_share: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            orders: 100_000,
            accounts: 16,
            symbols: 20,
            seed: 1,
            cancel_share: CANCEL_SHARE_DEFAULT,
            fill_share: FILL_SHARE_DEFAULT,
            breach_share: BREACH_SHARE_DEFAULT,
        }
    }
}

/// Why a generator cannot be built or its file written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenError {
    /// A share outside 0..=1 (or not a number).
    #[error("--{name} must be between 0 and 1, got {value}")]
    Share {
        /// The flag.
        name: &'static str,
        /// Its value.
        value: f64,
    },
    /// The shares leave no room for normal new orders.
    #[error("--cancel-share + --fill-share + --breach-share must be below 1 (normal new orders take the rest), got {0}")]
    SharesSum(f64),
    /// No accounts.
    #[error("--accounts must be at least 1")]
    NoAccounts,
    /// Too few or too many symbols.
    #[error("--symbols must be between 1 and {max}, got {got}")]
    Symbols {
        /// The limit.
        max: u32,
        /// The value given.
        got: u32,
    },
    /// A generated symbol name was refused (a bug).
    #[error("generated symbol: {0}")]
    Symbol(#[from] SymbolError),
    /// The output could not be written.
    #[error(transparent)]
    File(#[from] FileError),
}

impl GenConfig {
    /// Checks every field; the first problem is the error.
    pub fn validate(&self) -> Result<(), GenError> {
        for (name, value) in [
            ("cancel-share", self.cancel_share),
            ("fill-share", self.fill_share),
            ("breach-share", self.breach_share),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(GenError::Share { name, value });
            }
        }
        let sum = self.cancel_share + self.fill_share + self.breach_share;
        if sum >= 1.0 {
            return Err(GenError::SharesSum(sum));
        }
        if self.accounts == 0 {
            return Err(GenError::NoAccounts);
        }
        if self.symbols == 0 || self.symbols > GEN_SYMBOLS_MAX {
            return Err(GenError::Symbols {
                max: GEN_SYMBOLS_MAX,
                got: self.symbols,
            });
        }
        Ok(())
    }
}

/// Counts of what was generated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GenStats {
    /// Normal new orders.
    pub new_orders: u64,
    /// Cancels.
    pub cancels: u64,
    /// Fills.
    pub fills: u64,
    /// Breach orders with a giant qty.
    pub giant_qty: u64,
    /// Breach orders priced outside the collar.
    pub off_collar: u64,
    /// Breach orders in the restricted symbol.
    pub restricted: u64,
    /// Cancels or fills drawn while no order was open (emitted as normal new orders).
    pub fallback_new: u64,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    order_id: u64,
    account: u32,
    symbol: usize,
    side: Side,
    price: i64,
    remaining: u64,
}

/// The generator: an iterator of exactly `orders` events.
#[derive(Debug)]
pub struct Generator {
    cfg: GenConfig,
    rng: ChaCha8Rng,
    symbols: Vec<Symbol>,
    references: Vec<i64>,
    mids: Vec<i64>,
    /// Cumulative Zipf weights of the symbols.
    popularity: Vec<f64>,
    restricted: Symbol,
    open: Vec<Open>,
    emitted: u64,
    ts_ns: u64,
    next_id: u64,
    stats: GenStats,
}

fn round_to_step(ticks: i64, step: i64) -> i64 {
    (ticks + step / 2).div_euclid(step) * step
}

fn ceil_to_step(ticks: i64, step: i64) -> i64 {
    (ticks + step - 1).div_euclid(step) * step
}

impl Generator {
    /// Validates `cfg` and sets up the per-symbol state (all memory is allocated here).
    pub fn new(cfg: GenConfig) -> Result<Generator, GenError> {
        cfg.validate()?;
        let n = cfg.symbols as usize;
        let symbols = (1..=cfg.symbols)
            .map(|i| Symbol::new(&symbol_name(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let references: Vec<i64> = (1..=cfg.symbols).map(reference_price_ticks).collect();
        let mut popularity = Vec::with_capacity(n);
        let mut total = 0.0;
        for k in 1..=n {
            total += 1.0 / (k as f64).powf(ZIPF_EXPONENT);
            popularity.push(total);
        }
        let open_capacity = usize::try_from(cfg.orders)
            .unwrap_or(GEN_OPEN_ORDERS_MAX)
            .min(GEN_OPEN_ORDERS_MAX);
        Ok(Generator {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            mids: references.clone(),
            references,
            symbols,
            popularity,
            restricted: Symbol::new(RESTRICTED_SYMBOL)?,
            open: Vec::with_capacity(open_capacity),
            emitted: 0,
            ts_ns: 0,
            next_id: 1,
            stats: GenStats::default(),
            cfg,
        })
    }

    /// What has been generated so far.
    pub fn stats(&self) -> GenStats {
        self.stats
    }

    fn normal(&mut self) -> f64 {
        self.rng.sample(StandardNormal)
    }

    fn pick_symbol(&mut self) -> usize {
        let total = self.popularity.last().copied().unwrap_or(1.0);
        let u = self.rng.gen::<f64>() * total;
        self.popularity
            .partition_point(|&c| c <= u)
            .min(self.popularity.len() - 1)
    }

    fn pick_qty(&mut self) -> u64 {
        let z = self.normal();
        let q = (QTY_MEDIAN.ln() + QTY_SIGMA * z).exp().round();
        (q as u64).clamp(1, QTY_MAX)
    }

    fn pick_side(&mut self) -> Side {
        if self.rng.gen::<bool>() {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// Moves the symbol's mid one step and places an order near it.
    fn pick_price(&mut self, s: usize, side: Side) -> i64 {
        let reference = self.references[s];
        let z = self.normal();
        let step = (z * (reference * MID_STEP_PPM / PPM) as f64).round() as i64;
        let band = reference * MID_BAND_PPM / PPM;
        let mid = (self.mids[s] + step).clamp(reference - band, reference + band);
        self.mids[s] = mid;
        let offset = (self.rng.gen::<f64>() * (reference * PLACEMENT_MAX_PPM / PPM) as f64) as i64;
        let price = match side {
            Side::Buy => mid - offset,
            Side::Sell => mid + offset,
        };
        round_to_step(price, PRICE_STEP_TICKS)
    }

    fn new_order(&mut self, kind: Option<Breach>) -> Order {
        let order_id = self.next_id;
        self.next_id += 1;
        let account = self.rng.gen_range(1..=self.cfg.accounts);
        let side = self.pick_side();
        let (symbol, price, qty) = match kind {
            None | Some(Breach::GiantQty) => {
                let s = self.pick_symbol();
                let price = self.pick_price(s, side);
                let qty = if kind.is_some() {
                    GIANT_QTY_UNIT * self.rng.gen_range(1..=GIANT_QTY_FACTOR_MAX)
                } else {
                    self.pick_qty()
                };
                if kind.is_none() {
                    self.remember(Open {
                        order_id,
                        account,
                        symbol: s,
                        side,
                        price,
                        remaining: qty,
                    });
                }
                (self.symbols[s], price, qty)
            }
            Some(Breach::OffCollar) => {
                let s = self.pick_symbol();
                let reference = self.references[s];
                let ppm = self.rng.gen_range(OFF_COLLAR_MIN_PPM..OFF_COLLAR_MAX_PPM);
                let away = ceil_to_step(ceil_div(reference * ppm, PPM), PRICE_STEP_TICKS);
                let price = if self.rng.gen::<bool>() {
                    reference + away
                } else {
                    reference - away
                };
                (self.symbols[s], price, self.pick_qty())
            }
            Some(Breach::Restricted) => {
                let spread = RESTRICTED_REFERENCE_TICKS * RESTRICTED_SPREAD_PPM / PPM;
                let d = (self.rng.gen::<f64>() * spread as f64) as i64;
                let d = if self.rng.gen::<bool>() { d } else { -d };
                let price = round_to_step(RESTRICTED_REFERENCE_TICKS + d, PRICE_STEP_TICKS);
                (self.restricted, price, self.pick_qty())
            }
        };
        Order {
            order_id,
            ts_ns: self.ts_ns,
            price,
            qty,
            account,
            symbol,
            side,
            kind: OrderKind::New,
        }
    }

    fn remember(&mut self, o: Open) {
        if self.open.len() < GEN_OPEN_ORDERS_MAX {
            self.open.push(o);
        } else {
            let i = self.rng.gen_range(0..self.open.len());
            self.open[i] = o;
        }
    }

    /// A cancel or fill of a random open order; `None` when nothing is open.
    fn act_on_open(&mut self, kind: OrderKind, partial_probability: f64) -> Option<Order> {
        if self.open.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.open.len());
        let partial = self.rng.gen::<f64>() < partial_probability;
        let o = self.open[i];
        let qty = if partial && o.remaining >= 2 {
            let q = self.rng.gen_range(1..o.remaining);
            self.open[i].remaining -= q;
            q
        } else {
            self.open.swap_remove(i);
            o.remaining
        };
        Some(Order {
            order_id: o.order_id,
            ts_ns: self.ts_ns,
            price: o.price,
            qty,
            account: o.account,
            symbol: self.symbols[o.symbol],
            side: o.side,
            kind,
        })
    }

    fn next_event(&mut self) -> Order {
        let u: f64 = self.rng.gen();
        let gap = (-(1.0 - u).ln() * GAP_MEAN_NS) as u64;
        self.ts_ns += 1 + gap;
        let u: f64 = self.rng.gen();
        let c = &self.cfg;
        let (breach, cancel, fill) = (
            c.breach_share,
            c.breach_share + c.cancel_share,
            c.breach_share + c.cancel_share + c.fill_share,
        );
        if u < breach {
            let kind = match self.rng.gen_range(0..3) {
                0 => Breach::GiantQty,
                1 => Breach::OffCollar,
                _ => Breach::Restricted,
            };
            match kind {
                Breach::GiantQty => self.stats.giant_qty += 1,
                Breach::OffCollar => self.stats.off_collar += 1,
                Breach::Restricted => self.stats.restricted += 1,
            }
            return self.new_order(Some(kind));
        }
        let acted = if u < cancel {
            self.act_on_open(OrderKind::Cancel, PARTIAL_CANCEL_PROBABILITY)
        } else if u < fill {
            self.act_on_open(OrderKind::Fill, PARTIAL_FILL_PROBABILITY)
        } else {
            self.stats.new_orders += 1;
            return self.new_order(None);
        };
        match acted {
            Some(o) => {
                match o.kind {
                    OrderKind::Cancel => self.stats.cancels += 1,
                    _ => self.stats.fills += 1,
                }
                o
            }
            None => {
                self.stats.fallback_new += 1;
                self.stats.new_orders += 1;
                self.new_order(None)
            }
        }
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1).div_euclid(b)
}

impl Iterator for Generator {
    type Item = Order;

    fn next(&mut self) -> Option<Order> {
        if self.emitted == self.cfg.orders {
            return None;
        }
        self.emitted += 1;
        Some(self.next_event())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.cfg.orders - self.emitted).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// `bench gen`: writes a synthetic order file.
#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Events to generate (new orders, cancels, fills, breach orders together).
    #[arg(long, default_value_t = 100_000)]
    pub orders: u64,
    /// Accounts, numbered 1..=A; each new order picks one uniformly.
    #[arg(long, default_value_t = 16)]
    pub accounts: u32,
    /// Number of symbols, named S0001, S0002, ... (e.g. 20: S0001..S0020), Zipf-popular (S0001
    /// most); at most 9999.
    #[arg(long, default_value_t = 20)]
    pub symbols: u32,
    /// Seed of the ChaCha8 random generator: the same seed and flags give the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Output format; by default from the extension of --out (.csv or .bin).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Share of events that cancel (part of) an earlier open order.
    #[arg(long, default_value_t = CANCEL_SHARE_DEFAULT)]
    pub cancel_share: f64,
    /// Share of events that fill (part of) an earlier open order.
    #[arg(long, default_value_t = FILL_SHARE_DEFAULT)]
    pub fill_share: f64,
    /// Share of events that are new orders breaking a typical risk limit (giant qty, price
    /// outside a 5 % collar, restricted symbol RESTR), a third each.
    #[arg(long, default_value_t = BREACH_SHARE_DEFAULT)]
    pub breach_share: f64,
}

/// Runs `bench gen`.
pub fn run(args: GenArgs) -> anyhow::Result<ExitCode> {
    let format = resolve_output_format(&args.out, args.format)?;
    let cfg = GenConfig {
        orders: args.orders,
        accounts: args.accounts,
        symbols: args.symbols,
        seed: args.seed,
        cancel_share: args.cancel_share,
        fill_share: args.fill_share,
        breach_share: args.breach_share,
    };
    let mut generator = Generator::new(cfg).context("invalid generator settings")?;
    // A progress bar on a terminal only, with text logs (orders::logging): moved every 64 Ki
    // events (indicatif redraws at most 20 times a second).
    let bar = orders::logging::progress_on_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(args.orders);
        bar.set_style(
            indicatif::ProgressStyle::with_template("bench gen: {pos}/{len} events [{bar:30}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut done = 0u64;
    let events = generator.by_ref().inspect(|_| {
        done += 1;
        if done % 65_536 == 0 {
            if let Some(b) = &bar {
                b.set_position(done);
            }
        }
    });
    let written = files::write_orders(&args.out, format, events)
        .map_err(GenError::from)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let s = generator.stats();
    println!(
        "bench gen: wrote {written} events to {} ({format}): {} new, {} cancels, {} fills, {} breach ({} giant-qty, {} off-collar, {} restricted)",
        args.out.display(),
        s.new_orders,
        s.cancels,
        s.fills,
        s.giant_qty + s.off_collar + s.restricted,
        s.giant_qty,
        s.off_collar,
        s.restricted,
    );
    tracing::info!(
        target: "hint",
        "next: engine replay {} --journal ./journal --fresh    (through the whole pipeline; \
         `bench convert` for another format)",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn generate(cfg: GenConfig) -> Vec<Order> {
        Generator::new(cfg).unwrap().collect()
    }

    #[test]
    fn reference_prices_follow_the_formula() {
        assert_eq!(reference_price_ticks(1), 100_000);
        assert_eq!(reference_price_ticks(2), 470_000);
        assert_eq!(reference_price_ticks(14), 4_910_000);
        assert_eq!(reference_price_ticks(15), 370_000);
        let mut seen: Vec<i64> = (1..=491).map(reference_price_ticks).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            491,
            "the first 491 symbols have distinct references"
        );
        assert!((1..=GEN_SYMBOLS_MAX)
            .map(reference_price_ticks)
            .all(|r| (100_000..=5_000_000).contains(&r)));
    }

    #[test]
    fn symbol_names_round_trip() {
        let s = Symbol::new(&symbol_name(7)).unwrap();
        assert_eq!(s.as_str(), "S0007");
        assert_eq!(symbol_index(&s), Some(7));
        assert_eq!(symbol_index(&Symbol::new("S07").unwrap()), None);
        assert_eq!(symbol_index(&Symbol::new("AAPL").unwrap()), None);
        assert_eq!(
            reference_of(&Symbol::new("RESTR").unwrap()),
            Some(1_000_000)
        );
    }

    #[test]
    fn same_seed_same_flow_other_seed_other_flow() {
        let a = generate(GenConfig {
            orders: 2_000,
            ..GenConfig::default()
        });
        let b = generate(GenConfig {
            orders: 2_000,
            ..GenConfig::default()
        });
        let c = generate(GenConfig {
            orders: 2_000,
            seed: 2,
            ..GenConfig::default()
        });
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 2_000);
    }

    #[test]
    fn invariants_hold() {
        let orders = generate(GenConfig {
            orders: 20_000,
            accounts: 7,
            symbols: 50,
            ..GenConfig::default()
        });
        let mut last_ts = 0;
        let mut last_new_id = 0;
        let mut open = std::collections::HashMap::new();
        for o in &orders {
            assert!(o.ts_ns > last_ts, "strictly increasing time");
            last_ts = o.ts_ns;
            assert!((1..=7).contains(&o.account));
            match o.kind {
                OrderKind::New => {
                    assert_eq!(
                        o.order_id,
                        last_new_id + 1,
                        "new ids are dense and increasing"
                    );
                    last_new_id = o.order_id;
                    if classify_breach(o).is_none() {
                        let r = reference_of(&o.symbol).unwrap();
                        assert!(
                            (o.price - r).abs() * PPM <= NORMAL_DISTANCE_MAX_PPM * r,
                            "{o:?}"
                        );
                        assert!((1..=QTY_MAX).contains(&o.qty));
                        assert_eq!(o.price % PRICE_STEP_TICKS, 0);
                        open.insert(o.order_id, *o);
                    }
                }
                OrderKind::Cancel | OrderKind::Fill => {
                    let n = open
                        .get_mut(&o.order_id)
                        .expect("targets an open normal order");
                    assert_eq!(
                        (n.account, n.symbol, n.side, n.price),
                        (o.account, o.symbol, o.side, o.price)
                    );
                    assert!(o.qty >= 1 && o.qty <= n.qty, "never more than what remains");
                    n.qty -= o.qty;
                    if n.qty == 0 {
                        open.remove(&o.order_id);
                    }
                }
                _ => panic!("no halts generated"),
            }
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |cfg: GenConfig| Generator::new(cfg).unwrap_err().to_string();
        assert!(bad(GenConfig {
            cancel_share: 1.5,
            ..GenConfig::default()
        })
        .contains("--cancel-share"));
        assert!(bad(GenConfig {
            fill_share: f64::NAN,
            ..GenConfig::default()
        })
        .contains("--fill-share"));
        assert!(bad(GenConfig {
            cancel_share: 0.5,
            fill_share: 0.5,
            ..GenConfig::default()
        })
        .contains("below 1"));
        assert!(bad(GenConfig {
            accounts: 0,
            ..GenConfig::default()
        })
        .contains("--accounts"));
        assert!(bad(GenConfig {
            symbols: 10_000,
            ..GenConfig::default()
        })
        .contains("--symbols"));
        assert!(bad(GenConfig {
            symbols: 0,
            ..GenConfig::default()
        })
        .contains("--symbols"));
    }

    #[test]
    fn open_order_memory_is_bounded() {
        let mut g = Generator::new(GenConfig {
            orders: GEN_OPEN_ORDERS_MAX as u64 + 5_000,
            cancel_share: 0.0,
            fill_share: 0.0,
            breach_share: 0.0,
            ..GenConfig::default()
        })
        .unwrap();
        let cap = g.open.capacity();
        assert_eq!(g.by_ref().count(), GEN_OPEN_ORDERS_MAX + 5_000);
        assert_eq!(g.open.len(), GEN_OPEN_ORDERS_MAX);
        assert_eq!(g.open.capacity(), cap, "no reallocation after start-up");
    }

    #[test]
    fn the_docs_table_matches_the_code() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/formats/orders.md"
        ))
        .unwrap();
        let mut rows = 0;
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() >= 4 && cells[1].starts_with('S') && cells[1].len() == 5 {
                if let Some(i) = symbol_index(&Symbol::new(cells[1]).unwrap()) {
                    let price = orders::parse_price_ticks(cells[2]).unwrap();
                    assert_eq!(price, reference_price_ticks(i), "docs row {line}");
                    rows += 1;
                }
            }
        }
        assert_eq!(rows, 20, "the docs list S0001..S0020");
    }
}
