//! The stateful checker: limits plus live state (positions, open orders, exposure, order-rate
//! buckets, recent order ids, trading states), evaluated by the pure functions of
//! [`crate::checks`].
//!
//! # Memory
//! Every table is allocated when the checker is built, sized from the `[capacity]` section of
//! the limits file and `global.duplicate_horizon_orders`. A check does not allocate: lookups
//! and inserts go to pre-sized hash maps and vectors. Two things may still allocate, both
//! amortised and documented in `docs/risk.md`: more open orders or positions than the
//! configured capacity grow their tables (the limits stay enforced, only the memory grows), and
//! the first position of a symbol held by a new account appends to that symbol's position list.
//! Accounts and symbols are hard-bounded by the capacity: past it, new ones are rejected
//! (`unknown-account` / `unknown-symbol`). The order-id table grows incrementally (bounded
//! work per insert, see [`crate::idtable`]), never by a whole-table rehash inside one check.
//!
//! # Undo (void)
//! Between [`Checker::begin_batch`] and [`Checker::end_batch`] every state change is recorded
//! in an undo log ([`crate::undo`]) so that [`Checker::void_batches`] can take the newest
//! batches back exactly. Every state change outside a recorded batch seals the log.

use std::collections::VecDeque;

use orders::{Decision, Order, OrderKind, Reason, Side, Symbol};
use serde::{Deserialize, Serialize};

use crate::checks::{
    check_collar, check_credit, check_max_notional, check_max_qty, check_position, check_throttle,
    check_trading_state, check_valid_new, PositionView,
};
use crate::config::{
    pick, AccountLimits, Collar, Limits, SymbolLimits, Throttle, TradingState, UnknownPolicy,
};
use crate::hash::{id_map, IdMap};
use crate::idtable::IdTable;
use crate::limits::{
    ORDER_QTY_LIMIT_MAX, PREFETCH_CHUNK_ORDERS, PREFETCH_TABLE_BYTES_MIN, VOID_BATCH_IDS_MAX,
};
use crate::protocol::JournalPoint;
use crate::undo::{UndoLog, UndoOp, VoidOutcome};

/// What an admin command acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (the kill switch).
    Global,
    /// One account.
    Account(u32),
    /// One symbol.
    Symbol(Symbol),
}

#[derive(Debug, Clone)]
struct AccountSlot {
    account: u32,
    configured: bool,
    max_order_qty: Option<u64>,
    max_order_notional_ticks: Option<i128>,
    max_long_qty: Option<u64>,
    max_short_qty: Option<u64>,
    credit_limit_ticks: i128,
    throttle: Option<Throttle>,
    config_state: TradingState,
    admin_state: TradingState,
    // Live state.
    open_notional_ticks: i128,
    position_value_ticks: i128,
    tat_ns: u64,
}

#[derive(Debug, Clone)]
struct SymbolSlot {
    symbol: Symbol,
    configured: bool,
    restricted: bool,
    max_order_qty: Option<u64>,
    max_order_notional_ticks: Option<i128>,
    max_long_qty: Option<u64>,
    max_short_qty: Option<u64>,
    collar: Option<Collar>,
    config_state: TradingState,
    admin_state: TradingState,
    // Live state.
    event_halted: bool,
    reference: Option<i64>,
    positions: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
struct PositionSlot {
    account: u32,
    symbol: u32,
    view: PositionView,
}

/// Everything known about one order id: the open order (closed when the open quantity is 0)
/// and whether the id is still inside the duplicate horizon. One table for both, so that a new
/// order costs one lookup.
///
/// Flat, 24 bytes, so that key + value make a 32-byte slot, two per cache line (the table
/// holds one per slot, so its size is the table's memory traffic). The acceptance time lives
/// in the horizon ring, found through `tag`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IdSlot {
    price: i64,
    /// Open quantity in bits 0..48 (0: closed; the slot then only remembers the id), the side
    /// in bit 62 (set: sell), "remembered" in bit 63 (still among the last
    /// `duplicate_horizon_orders` accepted ids).
    qty_flags: u64,
    position: u32,
    /// Low 32 bits of the acceptance sequence number: the id's entry in the horizon ring.
    tag: u32,
}

const _: () = assert!(std::mem::size_of::<IdSlot>() == 24);
const _: () = assert!(crate::idtable::slot_bytes::<IdSlot>() == 32);
// One undo-log entry (docs/formats/risk-protocol.md sizes the log from it: ≤ 48 bytes).
const _: () = assert!(std::mem::size_of::<UndoOp<IdSlot>>() <= 48);
const QTY_MASK: u64 = (1 << 48) - 1;
const SELL_BIT: u64 = 1 << 62;
const REMEMBERED_BIT: u64 = 1 << 63;
// Every open quantity fits the 48 bits (accepted orders are at most ORDER_QTY_LIMIT_MAX).
const _: () = assert!(ORDER_QTY_LIMIT_MAX <= QTY_MASK);
// The tag identifies a ring entry: the ring is shorter than 2^32.
const _: () = assert!(crate::limits::DUPLICATE_HORIZON_ORDERS_MAX < 1 << 32);

impl IdSlot {
    fn new(price: i64, qty: u64, side: Side, position: u32, tag: u32) -> Self {
        debug_assert!(qty <= QTY_MASK);
        let side_bit = if side == Side::Sell { SELL_BIT } else { 0 };
        IdSlot {
            price,
            qty_flags: (qty & QTY_MASK) | side_bit | REMEMBERED_BIT,
            position,
            tag,
        }
    }

    fn open_qty(&self) -> u64 {
        self.qty_flags & QTY_MASK
    }

    fn set_open_qty(&mut self, qty: u64) {
        debug_assert!(qty <= QTY_MASK);
        self.qty_flags = (self.qty_flags & !QTY_MASK) | (qty & QTY_MASK);
    }

    fn side(&self) -> Side {
        if self.qty_flags & SELL_BIT != 0 {
            Side::Sell
        } else {
            Side::Buy
        }
    }

    fn remembered(&self) -> bool {
        self.qty_flags & REMEMBERED_BIT != 0
    }

    fn forget(&mut self) {
        self.qty_flags &= !REMEMBERED_BIT;
    }

    fn order(&self) -> OpenOrder {
        OpenOrder {
            position: self.position,
            side: self.side(),
            price: self.price,
            open_qty: self.open_qty(),
        }
    }
}

/// An open order. Its account and symbol are those of its position slot.
#[derive(Debug, Clone, Copy, Default)]
struct OpenOrder {
    position: u32,
    side: Side,
    price: i64,
    open_qty: u64,
}

/// Where a new order's account, symbol and position live (`None`: not in the tables yet).
#[derive(Debug, Clone, Copy)]
struct Plan {
    account: Option<u32>,
    symbol: Option<u32>,
    position: Option<u32>,
    tat_ns: u64,
}

/// Limits plus live risk state. See the module docs and `docs/risk.md`. A clone is an
/// independent checker with the same limits and state (and undo log).
#[derive(Debug, Clone)]
pub struct Checker {
    limits: Limits,
    global_admin_state: TradingState,
    accounts: Vec<AccountSlot>,
    account_index: IdMap<u32, u32>,
    symbols: Vec<SymbolSlot>,
    symbol_index: IdMap<u64, u32>,
    positions: Vec<PositionSlot>,
    position_index: IdMap<(u32, u64), u32>,
    ids: IdTable<IdSlot>,
    open_count: usize,
    /// Accepted ids in acceptance order with their acceptance time: the duplicate horizon.
    ring: VecDeque<(u64, u64)>,
    /// Acceptance sequence number of `ring.front()` (entry `i` has `ring_head_seq + i`).
    ring_head_seq: u64,
    /// Undo records of the newest batches (see the module docs).
    undo: UndoLog<IdSlot>,
    default_account: AccountSlot,
    default_symbol: SymbolSlot,
    replay_skipped: u64,
}

fn symbol_key(s: Symbol) -> u64 {
    u64::from_le_bytes(s.to_bytes())
}

/// A position is keyed by the order's own account and symbol (not by their table indices), so
/// that a new order in a traded pair finds account, symbol and position in one lookup.
fn position_key(account: u32, symbol: Symbol) -> (u32, u64) {
    (account, symbol_key(symbol))
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl AccountSlot {
    fn resolve(limits: &Limits, account: u32) -> Self {
        Self::resolve_with(limits, account, limits.account_limits(account))
    }

    /// What an account the file does not name gets.
    fn template(limits: &Limits) -> Self {
        Self::resolve_with(limits, 0, None)
    }

    fn resolve_with(limits: &Limits, account: u32, o: Option<&AccountLimits>) -> Self {
        AccountSlot {
            account,
            configured: o.is_some(),
            max_order_qty: o.and_then(|a| a.max_order_qty),
            max_order_notional_ticks: o.and_then(|a| a.max_order_notional_ticks),
            max_long_qty: o.and_then(|a| a.max_long_qty),
            max_short_qty: o.and_then(|a| a.max_short_qty),
            credit_limit_ticks: o
                .and_then(|a| a.credit_limit_notional_ticks)
                .unwrap_or(limits.defaults.credit_limit_notional_ticks),
            throttle: o.and_then(|a| a.throttle).or(limits.defaults.throttle),
            config_state: o.map_or(TradingState::Active, |a| a.state),
            admin_state: TradingState::Active,
            open_notional_ticks: 0,
            position_value_ticks: 0,
            tat_ns: 0,
        }
    }

    /// Takes the limits of `fresh`, keeps the live state and the admin state.
    fn relimit(&mut self, fresh: AccountSlot) {
        *self = AccountSlot {
            admin_state: self.admin_state,
            open_notional_ticks: self.open_notional_ticks,
            position_value_ticks: self.position_value_ticks,
            tat_ns: self.tat_ns,
            ..fresh
        };
    }

    fn state(&self) -> TradingState {
        self.config_state.max(self.admin_state)
    }

    fn gross_exposure_ticks(&self) -> i128 {
        self.open_notional_ticks + self.position_value_ticks
    }
}

impl SymbolSlot {
    fn resolve(limits: &Limits, symbol: Symbol) -> Self {
        Self::resolve_with(limits, symbol, limits.symbols.get(&symbol))
    }

    /// What a symbol the file does not name gets.
    fn template(limits: &Limits) -> Self {
        Self::resolve_with(limits, Symbol::default(), None)
    }

    fn resolve_with(limits: &Limits, symbol: Symbol, o: Option<&SymbolLimits>) -> Self {
        SymbolSlot {
            symbol,
            configured: o.is_some(),
            restricted: o.is_some_and(|s| s.restricted),
            max_order_qty: o.and_then(|s| s.max_order_qty),
            max_order_notional_ticks: o.and_then(|s| s.max_order_notional_ticks),
            max_long_qty: o.and_then(|s| s.max_long_qty),
            max_short_qty: o.and_then(|s| s.max_short_qty),
            collar: o.and_then(|s| s.collar).or(limits.defaults.collar),
            config_state: o.map_or(TradingState::Active, |s| s.state),
            admin_state: TradingState::Active,
            event_halted: false,
            reference: o.and_then(|s| s.reference_price),
            positions: Vec::new(),
        }
    }

    /// Takes the limits of `fresh`; keeps the admin state, halt events, the live reference
    /// price (the configured one only fills a missing reference) and the position list.
    fn relimit(&mut self, fresh: SymbolSlot) {
        let positions = std::mem::take(&mut self.positions);
        *self = SymbolSlot {
            admin_state: self.admin_state,
            event_halted: self.event_halted,
            reference: self.reference.or(fresh.reference),
            positions,
            ..fresh
        };
    }

    fn state(&self) -> TradingState {
        let s = self.config_state.max(self.admin_state);
        if self.event_halted {
            TradingState::Halted
        } else {
            s
        }
    }
}

impl Checker {
    /// Builds a checker with empty state and every table allocated to the configured capacity.
    pub fn new(limits: Limits) -> Checker {
        Self::with_id_capacity(limits, 0)
    }

    /// [`Checker::new`] with an order-id table for at least `ids` ids (a restored state).
    pub(crate) fn with_id_capacity(limits: Limits, ids: usize) -> Checker {
        let table = IdTable::with_capacity(Self::id_capacity(&limits, ids));
        Self::with_id_table(limits, table)
    }

    /// Ids the order-id table of a checker under `limits` holding `ids` ids is built for:
    /// the configured capacity (open orders and the duplicate horizon), or `ids` if more.
    pub(crate) fn id_capacity(limits: &Limits, ids: usize) -> usize {
        let horizon = usize_of(limits.duplicate_horizon_orders.max(1));
        usize_of(limits.capacity.max_open_orders)
            .saturating_add(horizon)
            .max(ids)
    }

    /// [`Checker::new`] with the order-id table given (a restore builds its own once it knows
    /// how many ids it holds).
    pub(crate) fn with_id_table(limits: Limits, table: IdTable<IdSlot>) -> Checker {
        let cap = limits.capacity;
        let horizon = usize_of(limits.duplicate_horizon_orders.max(1));
        let mut c = Checker {
            global_admin_state: TradingState::Active,
            accounts: Vec::with_capacity(usize_of(cap.max_accounts)),
            account_index: id_map(usize_of(cap.max_accounts)),
            symbols: Vec::with_capacity(usize_of(cap.max_symbols)),
            symbol_index: id_map(usize_of(cap.max_symbols)),
            positions: Vec::with_capacity(usize_of(cap.max_positions)),
            position_index: id_map(usize_of(cap.max_positions)),
            ids: table,
            open_count: 0,
            ring: VecDeque::with_capacity(horizon),
            ring_head_seq: 0,
            undo: UndoLog::new(0, false),
            default_account: AccountSlot::template(&limits),
            default_symbol: SymbolSlot::template(&limits),
            replay_skipped: 0,
            limits,
        };
        c.install_configured();
        c
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Evaluates one order event at `now_ns` and, if accepted, applies its state effects.
    /// Never allocates in steady state (see the module docs). Rejections change no state.
    pub fn check(&mut self, order: &Order, now_ns: u64) -> Reason {
        match order.kind {
            OrderKind::New => match self.evaluate_new(order, now_ns) {
                Ok(plan) => {
                    self.commit_new(order, plan, now_ns);
                    Reason::Accepted
                }
                Err(r) => r,
            },
            OrderKind::Cancel => self.cancel(order),
            OrderKind::Fill => self.fill(order),
            OrderKind::Halt | OrderKind::Resume => self.halt_event(order),
        }
    }

    /// Starts the memory loads that checking `orders` will need (the order-id table slots of
    /// their ids, and of the ids the duplicate horizon will forget while accepting them), so
    /// that their cache misses overlap instead of being paid one after the other. A hint:
    /// verdicts do not depend on it. Call it just before checking a batch.
    pub fn prefetch(&self, orders: &[Order]) {
        if self.ids.footprint_bytes() < PREFETCH_TABLE_BYTES_MIN {
            // The table stays in cache: the extra pass would only cost time.
            return;
        }
        let mut acc = 0u64;
        let mut news = 0;
        for o in orders {
            news += (o.kind == OrderKind::New) as usize;
            // One slot (key and value) per id: the line the lookup and the insert touch.
            acc ^= self.ids.touch(o.order_id);
        }
        if self.ring.len() as u64 >= self.limits.duplicate_horizon_orders {
            for &(id, _) in self.ring.iter().take(news) {
                acc ^= self.ids.touch(id);
            }
        }
        std::hint::black_box(acc);
    }

    /// Checks a batch in order: `out[i]` = the verdict of `orders[i]` (as [`Checker::check`]
    /// one by one, after [`Checker::prefetch`]). `out` must be as long as `orders`; extra
    /// slots on either side are left alone.
    pub fn check_batch(&mut self, orders: &[Order], now_ns: u64, out: &mut [Reason]) {
        for (chunk, outs) in orders
            .chunks(PREFETCH_CHUNK_ORDERS)
            .zip(out.chunks_mut(PREFETCH_CHUNK_ORDERS))
        {
            self.prefetch(chunk);
            for (o, r) in chunk.iter().zip(outs.iter_mut()) {
                *r = self.check(o, now_ns);
            }
        }
    }

    /// Replays a journaled decision (recovery): an accepted event's state effects are applied
    /// without evaluating the limits again (they held when it was decided); a rejected one
    /// changes nothing. Time-based state (throttle, duplicate horizon) uses `t_checked_ns`,
    /// the `now_ns` the check itself used (for a version-1 record, which has none, the
    /// decision time).
    /// An accepted event that does not fit the current state (a new order whose id is open, a
    /// cancel or fill of an order that is not open) is skipped and counted in
    /// [`Checker::replay_skipped`].
    pub fn apply_decision(&mut self, d: &Decision) {
        if !d.reason.is_accepted() {
            return;
        }
        self.undo.seal();
        let o = &d.order;
        let now = d.t_checked_ns;
        let applied = match o.kind {
            OrderKind::New => {
                if o.order_id == 0
                    || o.qty == 0
                    || o.qty > ORDER_QTY_LIMIT_MAX
                    || self.open_order(o.order_id).is_some()
                {
                    false
                } else {
                    let (account, symbol, position) = self.locate(o.account, o.symbol);
                    let acct =
                        account.map_or(&self.default_account, |a| &self.accounts[a as usize]);
                    let tat_ns = match acct.throttle {
                        Some(t) => acct.tat_ns.max(now).saturating_add(t.interval_ns),
                        None => acct.tat_ns,
                    };
                    let plan = Plan {
                        account,
                        symbol,
                        position,
                        tat_ns,
                    };
                    self.commit_new(o, plan, now);
                    true
                }
            }
            OrderKind::Cancel | OrderKind::Fill | OrderKind::Halt | OrderKind::Resume => {
                self.check(o, now).is_accepted()
            }
        };
        if !applied {
            self.replay_skipped += 1;
        }
    }

    /// [`Checker::apply_decision`] for each of `decisions` in order, after
    /// [`Checker::prefetch`] of each chunk: replaying millions of decisions into a table larger
    /// than the cache, the cache misses of a chunk overlap instead of being paid one by one.
    pub fn apply_decisions(&mut self, decisions: &[Decision]) {
        let mut orders = [Order::default(); PREFETCH_CHUNK_ORDERS];
        for chunk in decisions.chunks(PREFETCH_CHUNK_ORDERS) {
            for (o, d) in orders.iter_mut().zip(chunk) {
                *o = d.order;
            }
            self.prefetch(&orders[..chunk.len()]);
            for d in chunk {
                self.apply_decision(d);
            }
        }
    }

    /// Accepted journaled events that [`Checker::apply_decision`] could not apply.
    pub fn replay_skipped(&self) -> u64 {
        self.replay_skipped
    }

    /// Replaces the limits, keeping all live state: positions, open orders, exposure, rate
    /// buckets, remembered order ids, reference prices, admin states and halt events. Trading
    /// states set by the file are replaced by the new file's.
    pub fn set_limits(&mut self, limits: Limits) {
        self.undo.seal();
        self.limits = limits;
        let cap = self.limits.capacity;
        reserve_to(&mut self.position_index, cap.max_positions);
        reserve_to(&mut self.account_index, cap.max_accounts);
        reserve_to(&mut self.symbol_index, cap.max_symbols);
        let horizon = usize_of(self.limits.duplicate_horizon_orders.max(1));
        while self.ring.len() > horizon {
            self.forget_oldest();
        }
        if self.ring.capacity() < horizon {
            self.ring.reserve(horizon - self.ring.len());
        }
        self.ids
            .reserve_to(usize_of(cap.max_open_orders).saturating_add(horizon));
        for i in 0..self.accounts.len() {
            let fresh = AccountSlot::resolve(&self.limits, self.accounts[i].account);
            self.accounts[i].relimit(fresh);
        }
        for i in 0..self.symbols.len() {
            let fresh = SymbolSlot::resolve(&self.limits, self.symbols[i].symbol);
            self.symbols[i].relimit(fresh);
        }
        self.default_account = AccountSlot::template(&self.limits);
        self.default_symbol = SymbolSlot::template(&self.limits);
        self.install_configured();
    }

    /// Sets the admin trading state of a scope (halt / reduce / resume). Resuming a symbol also
    /// clears a halt set by a market halt event. The file's own states still apply: the
    /// effective state is the most severe of the file's, the admin's and halt events.
    pub fn set_trading_state(&mut self, scope: Scope, state: TradingState) {
        self.undo.seal();
        match scope {
            Scope::Global => self.global_admin_state = state,
            Scope::Account(a) => {
                let i = self.intern_account(a);
                self.accounts[i as usize].admin_state = state;
            }
            Scope::Symbol(s) => {
                let i = self.intern_symbol(s);
                let slot = &mut self.symbols[i as usize];
                slot.admin_state = state;
                if state == TradingState::Active {
                    slot.event_halted = false;
                }
            }
        }
    }

    /// The position and open quantities of an (account, symbol) pair (zero if never traded).
    pub fn position(&self, account: u32, symbol: Symbol) -> PositionView {
        self.find_position(account, symbol)
            .map_or(PositionView::default(), |p| self.positions[p as usize].view)
    }

    /// The account's gross exposure in notional ticks (open notional + Σ |position| × ref).
    pub fn gross_exposure_ticks(&self, account: u32) -> i128 {
        self.account_index
            .get(&account)
            .map_or(0, |&a| self.accounts[a as usize].gross_exposure_ticks())
    }

    /// The symbol's reference price in ticks, if it has one.
    pub fn reference_price(&self, symbol: Symbol) -> Option<i64> {
        match self.symbol_index.get(&symbol_key(symbol)) {
            Some(&s) => self.symbols[s as usize].reference,
            None => self
                .limits
                .symbols
                .get(&symbol)
                .and_then(|s| s.reference_price),
        }
    }

    /// Number of open orders.
    pub fn open_orders(&self) -> usize {
        self.open_count
    }

    /// Number of remembered order ids (duplicate horizon).
    pub fn remembered_order_ids(&self) -> usize {
        self.ring.len()
    }

    /// Slots of the order-id table, and how many (incremental) growths it has started.
    pub fn id_table_stats(&self) -> (usize, u64) {
        (self.ids.slots(), self.ids.grows())
    }

    // ------------------------------------------------------------------------------------
    // Undo (void).

    /// Allocates the undo log for batches of up to `max_batch` orders (see the module docs).
    /// Without it, batches are not recorded and no void can undo anything.
    pub fn enable_undo(&mut self, max_batch: usize) {
        self.undo = UndoLog::new(max_batch, true);
    }

    /// Starts recording batch `batch_id` of client session `session` (0: a client without a
    /// session; its batches are recorded but cannot be named by a void). Returns `false` if a
    /// void already named this batch: it must not be applied (and nothing is recorded).
    pub fn begin_batch(&mut self, session: u64, batch_id: u64) -> bool {
        self.undo.begin(session, batch_id)
    }

    /// The next position of the batch started by [`Checker::begin_batch`] is checked now
    /// (call it for every position, also one whose bytes do not decode), so that a
    /// reconciliation can undo the batch's tail from any position.
    #[inline]
    pub fn begin_order(&mut self) {
        self.undo.begin_order();
    }

    /// Ends the batch started by [`Checker::begin_batch`]: it becomes the newest record.
    pub fn end_batch(&mut self) {
        self.undo.end();
    }

    /// Voids batches of `session`: `out[i]` = what happened to `batch_ids[i]` (extra slots of
    /// `out` are left alone). The newest recorded batches are undone, newest first, as long as
    /// the newest is one of `batch_ids`; the state is then exactly as if they had never been
    /// checked. See [`VoidOutcome`] for the others.
    pub fn void_batches(&mut self, session: u64, batch_ids: &[u64], out: &mut [VoidOutcome]) {
        debug_assert!(!self.undo.recording());
        let n = batch_ids.len().min(out.len()).min(VOID_BATCH_IDS_MAX);
        let (batch_ids, out) = (&batch_ids[..n], &mut out[..n]);
        let mut done = [false; VOID_BATCH_IDS_MAX];
        while let Some((k, start, end)) = self.undo.pop_newest(session, batch_ids) {
            for pos in (start..end).rev() {
                let op = self.undo.op(pos);
                self.undo_op(op);
            }
            self.undo.truncate_to(start);
            self.undo.tombstone(session, batch_ids[k]);
            done[k] = true;
            out[k] = VoidOutcome::Voided;
        }
        for (k, &id) in batch_ids.iter().enumerate() {
            if !done[k] {
                out[k] = self.undo.not_undone(session, id);
            }
        }
    }

    /// Reconciles the state with a client's journal after the client restarted (its `hello`):
    /// `new_session` starts, continuing `point.prev_session`, whose journal holds its batches
    /// up to `point.journaled_batch`, of which the first `point.journaled_orders` orders. The
    /// newest recorded batches of that session after it, and of sessions that continued it
    /// without journaling anything, are undone (newest first, while the newest is one of
    /// them), then the orders of `journaled_batch` after the journaled ones; those sessions
    /// are then refused. Returns the outcome (`voided`: the state agrees with the journal;
    /// `unknown`: the server never heard of the session; `too-old`: a batch the journal does
    /// not hold is applied and cannot be undone) and the number of batches undone (whole or
    /// in part).
    pub fn reconcile(&mut self, new_session: u64, point: JournalPoint) -> (VoidOutcome, u64) {
        debug_assert!(!self.undo.recording());
        let prev = point.prev_session;
        if prev == 0 || prev == new_session {
            self.undo.start_session(new_session, 0);
            let outcome = if prev == 0 {
                VoidOutcome::Voided
            } else {
                VoidOutcome::Unknown
            };
            return (outcome, 0);
        }
        let lineage = self.undo.lineage(prev, new_session);
        let mut undone = 0;
        while let Some((start, end)) = self.undo.pop_newest_after(&lineage, point.journaled_batch) {
            for pos in (start..end).rev() {
                let op = self.undo.op(pos);
                self.undo_op(op);
            }
            self.undo.truncate_to(start);
            undone += 1;
        }
        if let Some((from, end)) =
            self.undo
                .cut_newest(prev, point.journaled_batch, point.journaled_orders)
        {
            for pos in (from..end).rev() {
                let op = self.undo.op(pos);
                self.undo_op(op);
            }
            self.undo.truncate_to(from);
            undone += 1;
        }
        let outcome = self.undo.reconciled(
            &lineage,
            point.journaled_batch,
            point.journaled_orders,
            undone,
        );
        self.undo.retire(&lineage);
        self.undo.start_session(new_session, prev);
        (outcome, undone)
    }

    /// The inverse of one recorded state change.
    fn undo_op(&mut self, op: UndoOp<IdSlot>) {
        match op {
            UndoOp::PushAccount => {
                if let Some(a) = self.accounts.pop() {
                    self.account_index.remove(&a.account);
                }
            }
            UndoOp::PushSymbol => {
                if let Some(s) = self.symbols.pop() {
                    self.symbol_index.remove(&symbol_key(s.symbol));
                }
            }
            UndoOp::PushPosition => {
                if let Some(p) = self.positions.pop() {
                    let account = self.accounts[p.account as usize].account;
                    let symbol = self.symbols[p.symbol as usize].symbol;
                    self.position_index.remove(&position_key(account, symbol));
                    self.symbols[p.symbol as usize].positions.pop();
                }
            }
            UndoOp::Tat { account, old } => self.accounts[account as usize].tat_ns = old,
            UndoOp::Reference {
                symbol,
                old,
                revalued,
            } => {
                if revalued {
                    self.revalue(symbol, old.unwrap_or(0));
                }
                self.symbols[symbol as usize].reference = old;
            }
            UndoOp::EventHalted { symbol, old } => {
                self.symbols[symbol as usize].event_halted = old;
            }
            UndoOp::Open {
                position,
                side,
                price,
                qty,
                added,
            } => self.change_open(position, side, price, qty, !added),
            UndoOp::Slot { id, before } => {
                // What the slot held since (replaced or removed now) says whether it was open.
                let since = match before {
                    Some(slot) => self.ids.insert(id, slot),
                    None => self.ids.remove(id),
                };
                let now_open = since.is_some_and(|s| s.open_qty() > 0);
                let was_open = before.is_some_and(|s| s.open_qty() > 0);
                self.open_count = self.open_count + was_open as usize - now_open as usize;
            }
            UndoOp::RingPush => {
                self.ring.pop_back();
            }
            UndoOp::RingPop { id, t } => {
                self.ring.push_front((id, t));
                self.ring_head_seq -= 1;
            }
            UndoOp::Move { position, signed } => self.shift_position(position, -signed),
            UndoOp::OrderStart => {}
        }
    }

    // ------------------------------------------------------------------------------------
    // New orders.

    fn evaluate_new(&self, o: &Order, now_ns: u64) -> Result<Plan, Reason> {
        check_valid_new(o.order_id, o.qty, o.price, o.symbol != Symbol::default())?;
        if self.is_duplicate(o.order_id, now_ns) {
            return Err(Reason::DuplicateOrderId);
        }
        let (account, symbol, position) = self.locate(o.account, o.symbol);
        let acct = account.map_or(&self.default_account, |a| &self.accounts[a as usize]);
        if !acct.configured && self.limits.unknown_account == UnknownPolicy::Reject
            || account.is_none() && self.accounts.len() as u64 >= self.limits.capacity.max_accounts
        {
            return Err(Reason::UnknownAccount);
        }
        let sym = symbol.map_or(&self.default_symbol, |s| &self.symbols[s as usize]);
        if !sym.configured && self.limits.unknown_symbol == UnknownPolicy::Reject
            || symbol.is_none() && self.symbols.len() as u64 >= self.limits.capacity.max_symbols
        {
            return Err(Reason::UnknownSymbol);
        }
        if sym.restricted {
            return Err(Reason::RestrictedSymbol);
        }
        let pos = position.map_or(PositionView::default(), |p| self.positions[p as usize].view);
        let state = self
            .limits
            .state
            .max(self.global_admin_state)
            .max(acct.state())
            .max(sym.state());
        check_trading_state(state, o.side, o.qty, &pos)?;
        let d = &self.limits.defaults;
        check_max_qty(
            o.qty,
            pick(acct.max_order_qty, sym.max_order_qty, d.max_order_qty),
        )?;
        check_max_notional(
            o.price,
            o.qty,
            pick(
                acct.max_order_notional_ticks,
                sym.max_order_notional_ticks,
                d.max_order_notional_ticks,
            ),
        )?;
        check_collar(o.price, sym.reference, sym.collar)?;
        check_position(
            o.side,
            o.qty,
            &pos,
            pick(acct.max_long_qty, sym.max_long_qty, d.max_long_qty),
            pick(acct.max_short_qty, sym.max_short_qty, d.max_short_qty),
        )?;
        check_credit(
            acct.gross_exposure_ticks(),
            o.price,
            o.qty,
            acct.credit_limit_ticks,
        )?;
        let tat_ns = check_throttle(acct.tat_ns, now_ns, acct.throttle)?;
        Ok(Plan {
            account,
            symbol,
            position,
            tat_ns,
        })
    }

    fn commit_new(&mut self, o: &Order, plan: Plan, now_ns: u64) {
        let a = plan
            .account
            .unwrap_or_else(|| self.intern_account(o.account));
        let s = plan.symbol.unwrap_or_else(|| self.intern_symbol(o.symbol));
        let p = plan.position.unwrap_or_else(|| self.intern_position(a, s));
        let old_tat = self.accounts[a as usize].tat_ns;
        self.log(UndoOp::Tat {
            account: a,
            old: old_tat,
        });
        self.accounts[a as usize].tat_ns = plan.tat_ns;
        self.add_open(p, o.side, o.price, o.qty);
        if self.symbols[s as usize].reference.is_none() {
            self.log(UndoOp::Reference {
                symbol: s,
                old: None,
                revalued: false,
            });
            self.symbols[s as usize].reference = Some(o.price);
        }
        self.make_room_in_horizon(now_ns);
        let tag = (self.ring_head_seq + self.ring.len() as u64) as u32;
        self.ring.push_back((o.order_id, now_ns));
        self.log(UndoOp::RingPush);
        // The insert hands back what it replaced (a forgotten id accepted again): the undo
        // record needs it, and a separate lookup would cost a second probe run.
        let before = self
            .ids
            .insert(o.order_id, IdSlot::new(o.price, o.qty, o.side, p, tag));
        self.log(UndoOp::Slot {
            id: o.order_id,
            before,
        });
        self.open_count += 1;
    }

    /// Adds open quantity to a position's side and its account's open notional.
    fn add_open(&mut self, position: u32, side: Side, price: i64, qty: u64) {
        self.log(UndoOp::Open {
            position,
            side,
            price,
            qty,
            added: true,
        });
        self.change_open(position, side, price, qty, true);
    }

    fn change_open(&mut self, position: u32, side: Side, price: i64, qty: u64, add: bool) {
        let ps = &mut self.positions[position as usize];
        let notional = price as i128 * qty as i128;
        let acct = &mut self.accounts[ps.account as usize];
        let view = &mut ps.view;
        if add {
            acct.open_notional_ticks += notional;
            match side {
                Side::Buy => view.open_buy_qty += qty,
                Side::Sell => view.open_sell_qty += qty,
            }
        } else {
            acct.open_notional_ticks -= notional;
            match side {
                Side::Buy => view.open_buy_qty -= qty,
                Side::Sell => view.open_sell_qty -= qty,
            }
        }
    }

    /// Records a state change in the undo log while a batch is recorded; any other state
    /// change seals the log (a later void can no longer undo exactly).
    #[inline(always)]
    fn log(&mut self, op: UndoOp<IdSlot>) {
        if self.undo.recording() {
            self.undo.push(op);
        } else if self.undo.has_records() {
            self.undo.seal();
        }
    }

    // ------------------------------------------------------------------------------------
    // Cancels, fills, halt events.

    fn cancel(&mut self, o: &Order) -> Reason {
        if o.qty == 0 {
            return Reason::InvalidOrder;
        }
        let Some(open_qty) = self.open_order(o.order_id).map(|oo| oo.open_qty) else {
            return Reason::UnknownOrder;
        };
        self.reduce_open(o.order_id, o.qty.min(open_qty));
        Reason::Accepted
    }

    fn fill(&mut self, o: &Order) -> Reason {
        if o.qty == 0 || o.price <= 0 {
            return Reason::InvalidOrder;
        }
        if o.order_id != 0 {
            if let Some(oo) = self.open_order(o.order_id) {
                if o.qty > oo.open_qty {
                    return Reason::InvalidOrder;
                }
                self.set_reference(self.positions[oo.position as usize].symbol, o.price);
                let signed = oo.side.sign() * o.qty as i64;
                self.move_position(oo.position, signed);
                self.reduce_open(o.order_id, o.qty);
                return Reason::Accepted;
            }
        }
        // Not one of our open orders (hidden / auction execution, or an order we never saw):
        // the trade only moves the symbol's reference price.
        match self.resolve_symbol_event(o.symbol) {
            Ok(s) => {
                self.set_reference(s, o.price);
                Reason::Accepted
            }
            Err(r) => r,
        }
    }

    fn halt_event(&mut self, o: &Order) -> Reason {
        match self.resolve_symbol_event(o.symbol) {
            Ok(s) => {
                let old = self.symbols[s as usize].event_halted;
                self.log(UndoOp::EventHalted { symbol: s, old });
                self.symbols[s as usize].event_halted = o.kind == OrderKind::Halt;
                Reason::Accepted
            }
            Err(r) => r,
        }
    }

    /// The symbol of a fill or halt event, added if the policy allows.
    fn resolve_symbol_event(&mut self, symbol: Symbol) -> Result<u32, Reason> {
        if symbol == Symbol::default() {
            return Err(Reason::InvalidOrder);
        }
        match self.symbol_index.get(&symbol_key(symbol)).copied() {
            Some(s) => {
                if !self.symbols[s as usize].configured
                    && self.limits.unknown_symbol == UnknownPolicy::Reject
                {
                    Err(Reason::UnknownSymbol)
                } else {
                    Ok(s)
                }
            }
            None => {
                if self.limits.unknown_symbol == UnknownPolicy::Reject
                    && !self.limits.symbols.contains_key(&symbol)
                    || self.symbols.len() as u64 >= self.limits.capacity.max_symbols
                {
                    Err(Reason::UnknownSymbol)
                } else {
                    Ok(self.intern_symbol(symbol))
                }
            }
        }
    }

    /// Removes `qty` (≤ open quantity) from an open order, releasing its exposure.
    fn reduce_open(&mut self, order_id: u64, qty: u64) {
        let Some(i) = self.ids.find(order_id) else {
            return;
        };
        let before = *self.ids.at(i);
        self.log(UndoOp::Slot {
            id: order_id,
            before: Some(before),
        });
        let slot = self.ids.at_mut(i);
        debug_assert!(qty <= slot.open_qty());
        slot.set_open_qty(slot.open_qty() - qty);
        let oo = slot.order();
        if oo.open_qty == 0 {
            self.open_count -= 1;
            if !slot.remembered() {
                self.ids.remove_at(i);
            }
        }
        self.log(UndoOp::Open {
            position: oo.position,
            side: oo.side,
            price: oo.price,
            qty,
            added: false,
        });
        self.change_open(oo.position, oo.side, oo.price, qty, false);
    }

    /// Moves the reference price of a symbol, revaluing every position held in it.
    fn set_reference(&mut self, symbol: u32, price: i64) {
        let old = self.symbols[symbol as usize].reference;
        self.log(UndoOp::Reference {
            symbol,
            old,
            revalued: true,
        });
        self.revalue(symbol, price);
    }

    /// Sets the reference price of a symbol, revaluing every position held in it (no log).
    fn revalue(&mut self, symbol: u32, price: i64) {
        let Checker {
            symbols,
            positions,
            accounts,
            ..
        } = self;
        let slot = &mut symbols[symbol as usize];
        let old = slot.reference.unwrap_or(0);
        if old != price {
            let delta = price as i128 - old as i128;
            for &p in &slot.positions {
                let ps = &positions[p as usize];
                accounts[ps.account as usize].position_value_ticks +=
                    ps.view.position.unsigned_abs() as i128 * delta;
            }
        }
        slot.reference = Some(price);
    }

    /// Adds `signed` shares to a position, revaluing the account's exposure at the reference.
    fn move_position(&mut self, position: u32, signed: i64) {
        self.log(UndoOp::Move { position, signed });
        self.shift_position(position, signed);
    }

    fn shift_position(&mut self, position: u32, signed: i64) {
        let ps = &mut self.positions[position as usize];
        let old = ps.view.position;
        ps.view.position += signed;
        let reference = self.symbols[ps.symbol as usize].reference.unwrap_or(0) as i128;
        let delta_abs = ps.view.position.unsigned_abs() as i128 - old.unsigned_abs() as i128;
        self.accounts[ps.account as usize].position_value_ticks += delta_abs * reference;
    }

    // ------------------------------------------------------------------------------------
    // Tables.

    fn install_configured(&mut self) {
        let accounts: Vec<u32> = (self.limits.accounts.keys())
            .chain(self.limits.named_account_ids.keys())
            .copied()
            .collect();
        for a in accounts {
            self.intern_account(a);
        }
        let symbols: Vec<Symbol> = self.limits.symbols.keys().copied().collect();
        for s in symbols {
            self.intern_symbol(s);
        }
    }

    fn intern_account(&mut self, account: u32) -> u32 {
        if let Some(&i) = self.account_index.get(&account) {
            return i;
        }
        let i = self.accounts.len() as u32;
        self.log(UndoOp::PushAccount);
        self.accounts
            .push(AccountSlot::resolve(&self.limits, account));
        self.account_index.insert(account, i);
        i
    }

    fn intern_symbol(&mut self, symbol: Symbol) -> u32 {
        if let Some(&i) = self.symbol_index.get(&symbol_key(symbol)) {
            return i;
        }
        let i = self.symbols.len() as u32;
        self.log(UndoOp::PushSymbol);
        self.symbols.push(SymbolSlot::resolve(&self.limits, symbol));
        self.symbol_index.insert(symbol_key(symbol), i);
        i
    }

    fn intern_position(&mut self, account: u32, symbol: u32) -> u32 {
        let key = position_key(
            self.accounts[account as usize].account,
            self.symbols[symbol as usize].symbol,
        );
        if let Some(&i) = self.position_index.get(&key) {
            return i;
        }
        let i = self.positions.len() as u32;
        self.log(UndoOp::PushPosition);
        self.positions.push(PositionSlot {
            account,
            symbol,
            view: PositionView::default(),
        });
        self.position_index.insert(key, i);
        self.symbols[symbol as usize].positions.push(i);
        i
    }

    fn find_position(&self, account: u32, symbol: Symbol) -> Option<u32> {
        self.position_index
            .get(&position_key(account, symbol))
            .copied()
    }

    /// The table indices of an order's account, symbol and position (`None`: not in the
    /// tables yet). A pair that has traded before costs one lookup (its position slot names
    /// its account and symbol); otherwise the account and the symbol are looked up.
    #[inline]
    fn locate(&self, account: u32, symbol: Symbol) -> (Option<u32>, Option<u32>, Option<u32>) {
        if let Some(&p) = self.position_index.get(&position_key(account, symbol)) {
            let ps = &self.positions[p as usize];
            return (Some(ps.account), Some(ps.symbol), Some(p));
        }
        (
            self.account_index.get(&account).copied(),
            self.symbol_index.get(&symbol_key(symbol)).copied(),
            None,
        )
    }

    /// The open order with this id, if any.
    fn open_order(&self, order_id: u64) -> Option<OpenOrder> {
        self.ids
            .get(order_id)
            .filter(|s| s.open_qty() > 0)
            .map(|s| s.order())
    }

    /// Open, or accepted within the duplicate horizon.
    fn is_duplicate(&self, order_id: u64, now_ns: u64) -> bool {
        let horizon_ns = self.limits.duplicate_horizon_ns;
        self.ids.get(order_id).is_some_and(|s| {
            s.open_qty() > 0
                || s.remembered()
                    && (horizon_ns == 0 || now_ns.saturating_sub(self.accepted_ns(s)) <= horizon_ns)
        })
    }

    /// Index in the horizon ring of a remembered slot's acceptance.
    fn ring_index(&self, s: &IdSlot) -> usize {
        debug_assert!(s.remembered());
        s.tag.wrapping_sub(self.ring_head_seq as u32) as usize
    }

    /// When a remembered id was accepted (its horizon ring entry).
    fn accepted_ns(&self, s: &IdSlot) -> u64 {
        self.ring.get(self.ring_index(s)).map_or(0, |e| e.1)
    }

    /// Forgets ids past the time horizon, and the oldest one if the ring is full.
    fn make_room_in_horizon(&mut self, now_ns: u64) {
        let horizon_ns = self.limits.duplicate_horizon_ns;
        if horizon_ns > 0 {
            while let Some(&(_, t)) = self.ring.front() {
                if now_ns.saturating_sub(t) > horizon_ns {
                    self.forget_oldest();
                } else {
                    break;
                }
            }
        }
        if self.ring.len() as u64 >= self.limits.duplicate_horizon_orders.max(1) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((id, t)) = self.ring.pop_front() else {
            return;
        };
        let seq = self.ring_head_seq;
        self.ring_head_seq += 1;
        self.log(UndoOp::RingPop { id, t });
        if let Some(i) = self.ids.find(id) {
            let before = *self.ids.at(i);
            // The id may have been accepted again after its time horizon: that newer
            // acceptance has its own ring entry (and tag).
            if before.remembered() && before.tag == seq as u32 {
                self.log(UndoOp::Slot {
                    id,
                    before: Some(before),
                });
                if before.open_qty() > 0 {
                    self.ids.at_mut(i).forget();
                } else {
                    self.ids.remove_at(i);
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // Introspection.

    /// Recomputes the derived state (open quantities per position, open notional and position
    /// value per account) from the open orders and positions, and compares it with the
    /// incrementally maintained values. `Err` names the first difference.
    pub fn verify_consistency(&self) -> Result<(), String> {
        let mut tally = ConsistencyTally::new(self);
        // One pass over the table.
        for (id, slot) in self.ids.iter() {
            tally.add(self, id, slot)?;
        }
        tally.finish(self)
    }

    /// A copy of the live state for the admin `snapshot` request, sorted by account / symbol.
    pub fn snapshot(&self) -> StateSnapshot {
        let mut accounts: Vec<AccountSnapshot> = self
            .accounts
            .iter()
            .map(|a| AccountSnapshot {
                account: a.account,
                configured: a.configured,
                config_state: a.config_state,
                admin_state: a.admin_state,
                open_notional_ticks: a.open_notional_ticks,
                position_value_ticks: a.position_value_ticks,
                gross_exposure_ticks: a.gross_exposure_ticks(),
                credit_limit_ticks: a.credit_limit_ticks,
            })
            .collect();
        accounts.sort_by_key(|a| a.account);
        let mut symbols: Vec<SymbolSnapshot> = self
            .symbols
            .iter()
            .map(|s| SymbolSnapshot {
                symbol: s.symbol.to_string(),
                configured: s.configured,
                restricted: s.restricted,
                config_state: s.config_state,
                admin_state: s.admin_state,
                halt_event: s.event_halted,
                reference_price_ticks: s.reference,
            })
            .collect();
        symbols.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        let mut positions: Vec<PositionSnapshot> = self
            .positions
            .iter()
            .map(|p| PositionSnapshot {
                account: self.accounts[p.account as usize].account,
                symbol: self.symbols[p.symbol as usize].symbol.to_string(),
                position: p.view.position,
                open_buy_qty: p.view.open_buy_qty,
                open_sell_qty: p.view.open_sell_qty,
            })
            .collect();
        positions.sort_by(|a, b| (a.account, &a.symbol).cmp(&(b.account, &b.symbol)));
        StateSnapshot {
            origin: self.limits.origin.clone(),
            config_state: self.limits.state,
            admin_state: self.global_admin_state,
            open_orders: self.open_count as u64,
            remembered_order_ids: self.ring.len() as u64,
            replay_skipped: self.replay_skipped,
            accounts,
            symbols,
            positions,
        }
    }
}

fn reserve_to<K, V>(map: &mut IdMap<K, V>, capacity: u64)
where
    K: std::hash::Hash + Eq,
{
    let want = usize_of(capacity);
    if map.capacity() < want {
        map.reserve(want - map.len());
    }
}

/// The live state, as the admin `snapshot` request returns it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSnapshot {
    /// Where the limits in force came from.
    pub origin: String,
    /// Global state set by the limits file.
    pub config_state: TradingState,
    /// Global state set by admin requests.
    pub admin_state: TradingState,
    /// Open orders.
    pub open_orders: u64,
    /// Order ids remembered for the duplicate check.
    pub remembered_order_ids: u64,
    /// Accepted journal events that recovery could not apply.
    pub replay_skipped: u64,
    /// Accounts.
    pub accounts: Vec<AccountSnapshot>,
    /// Symbols.
    pub symbols: Vec<SymbolSnapshot>,
    /// Positions per (account, symbol).
    pub positions: Vec<PositionSnapshot>,
}

/// One account in a [`StateSnapshot`]. Notional values are in notional ticks (× 0.0001).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSnapshot {
    /// Account number.
    pub account: u32,
    /// Named in the limits file.
    pub configured: bool,
    /// State set by the file.
    pub config_state: TradingState,
    /// State set by admin requests.
    pub admin_state: TradingState,
    /// Σ price × open qty of open orders.
    pub open_notional_ticks: i128,
    /// Σ |position| × reference price.
    pub position_value_ticks: i128,
    /// Open notional + position value.
    pub gross_exposure_ticks: i128,
    /// The credit limit in force.
    pub credit_limit_ticks: i128,
}

/// One symbol in a [`StateSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolSnapshot {
    /// Symbol.
    pub symbol: String,
    /// Named in the limits file.
    pub configured: bool,
    /// New orders refused.
    pub restricted: bool,
    /// State set by the file.
    pub config_state: TradingState,
    /// State set by admin requests.
    pub admin_state: TradingState,
    /// Halted by a market halt event.
    pub halt_event: bool,
    /// Reference price in ticks.
    pub reference_price_ticks: Option<i64>,
}

/// One (account, symbol) position in a [`StateSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionSnapshot {
    /// Account number.
    pub account: u32,
    /// Symbol.
    pub symbol: String,
    /// Filled position (+ long, − short).
    pub position: i64,
    /// Open buy quantity.
    pub open_buy_qty: u64,
    /// Open sell quantity.
    pub open_sell_qty: u64,
}

/// [`Checker::verify_consistency`]'s sums, one order-id entry at a time: a restore adds each
/// entry as it inserts it ([`Checker::restore_state_from`]), so that its check costs
/// O(entries), not a second pass over the whole table (O(slots): 256 MB for 2.7 M ids).
///
/// The sums are kept per position (its open buy and sell quantities and its open notional),
/// and the notional is summed per account at [`ConsistencyTally::finish`]: adding an entry
/// reads and writes one small record, with no lookup of the position's account. A restore
/// adds every id it reads (2.66 M in the 20 M benchmark), so `add` is inlined into its loop
/// and its error paths are out of line.
pub(crate) struct ConsistencyTally {
    sums: Vec<PositionSums>,
    open_count: usize,
    entries: usize,
    remembered: usize,
}

/// The open orders of one position, summed.
#[derive(Debug, Clone, Copy, Default)]
struct PositionSums {
    buy: u64,
    sell: u64,
    notional: i128,
}

impl ConsistencyTally {
    /// Empty sums for `c`'s positions (as they are when the entries are added).
    pub(crate) fn new(c: &Checker) -> Self {
        ConsistencyTally {
            sums: vec![PositionSums::default(); c.positions.len()],
            open_count: 0,
            entries: 0,
            remembered: 0,
        }
    }

    /// Checks one order-id entry of `c` and adds it to the sums.
    #[inline(always)]
    pub(crate) fn add(&mut self, c: &Checker, id: u64, slot: &IdSlot) -> Result<(), String> {
        self.entries += 1;
        if slot.remembered() {
            self.remembered += 1;
            if c.ring.get(c.ring_index(slot)).map(|e| e.0) != Some(id) {
                return Err(not_owner(c, id, slot));
            }
        }
        let q = slot.open_qty();
        if q == 0 {
            if !slot.remembered() {
                return Err(neither(id));
            }
            return Ok(());
        }
        self.open_count += 1;
        let p = slot.position as usize;
        let Some(s) = self.sums.get_mut(p) else {
            return Err(out_of_range(id, p));
        };
        let side = if slot.side() == Side::Sell {
            &mut s.sell
        } else {
            &mut s.buy
        };
        let (Some(sum), Some(notional)) = (
            side.checked_add(q),
            s.notional
                .checked_add(i128::from(slot.price) * i128::from(q)),
        ) else {
            return Err(overflow(id, p));
        };
        *side = sum;
        s.notional = notional;
        Ok(())
    }

    /// Compares the sums with `c`'s maintained values (every entry of its table added).
    pub(crate) fn finish(self, c: &Checker) -> Result<(), String> {
        let ConsistencyTally {
            sums,
            open_count,
            entries,
            remembered,
        } = self;
        if entries != c.ids.len() {
            return Err("the order-id table miscounts its entries".to_owned());
        }
        if open_count != c.open_count {
            return Err(format!(
                "{open_count} open orders in the table, {} counted",
                c.open_count
            ));
        }
        if remembered > c.ring.len() {
            return Err(format!(
                "{remembered} remembered ids but {} in the horizon ring",
                c.ring.len()
            ));
        }
        if sums.len() != c.positions.len() {
            return Err("positions changed while the entries were added".to_owned());
        }
        let mut open_notional = vec![0i128; c.accounts.len()];
        let mut position_value = vec![0i128; c.accounts.len()];
        for (i, (ps, sum)) in c.positions.iter().zip(&sums).enumerate() {
            if ps.view.open_buy_qty != sum.buy || ps.view.open_sell_qty != sum.sell {
                return Err(format!(
                    "position {i}: open buy/sell {}/{} but open orders sum to {}/{}",
                    ps.view.open_buy_qty, ps.view.open_sell_qty, sum.buy, sum.sell
                ));
            }
            let a = ps.account as usize;
            let (Some(notional), Some(value)) =
                (open_notional.get_mut(a), position_value.get_mut(a))
            else {
                return Err(format!("position {i}: account out of range"));
            };
            *notional = notional
                .checked_add(sum.notional)
                .ok_or_else(|| format!("account index {a}: open notional overflows"))?;
            let reference = c.symbols[ps.symbol as usize].reference.unwrap_or(0) as i128;
            *value += ps.view.position.unsigned_abs() as i128 * reference;
        }
        for (i, a) in c.accounts.iter().enumerate() {
            if a.open_notional_ticks != open_notional[i] {
                return Err(format!(
                    "account {}: open notional {} but open orders sum to {}",
                    a.account, a.open_notional_ticks, open_notional[i]
                ));
            }
            if a.position_value_ticks != position_value[i] {
                return Err(format!(
                    "account {}: position value {} but positions sum to {}",
                    a.account, a.position_value_ticks, position_value[i]
                ));
            }
        }
        Ok(())
    }
}

/// [`ConsistencyTally::add`]'s errors, out of its inlined path.
#[cold]
#[inline(never)]
fn not_owner(c: &Checker, id: u64, slot: &IdSlot) -> String {
    format!(
        "remembered id {id} does not own horizon ring entry {:?}",
        c.ring.get(c.ring_index(slot))
    )
}

#[cold]
#[inline(never)]
fn neither(id: u64) -> String {
    format!("closed order {id} is neither open nor remembered")
}

#[cold]
#[inline(never)]
fn out_of_range(id: u64, p: usize) -> String {
    format!("order {id}: position {p} out of range")
}

#[cold]
#[inline(never)]
fn overflow(id: u64, p: usize) -> String {
    format!("order {id}: the open quantities or notional of position {p} overflow")
}

#[path = "checker_state.rs"]
pub mod state;

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
