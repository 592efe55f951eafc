//! The checker's whole state as bytes, and back: what a risk-state snapshot file holds
//! (`docs/formats/risk-state.md`).
//!
//! [`Checker::snapshot`] is the admin view (sorted, summed, JSON); it leaves out what a replay
//! of the journal rebuilds besides: each account's throttle state (`tat_ns`), the duplicate
//! horizon (the ring of accepted ids with their acceptance times, and its sequence base), every
//! open order and remembered id with its price, side, quantity and position, and the order of
//! the tables. [`Checker::encode_state`] writes all of it; [`Checker::restore_state`] builds a
//! checker that behaves exactly as the one encoded (same verdicts, same state after any further
//! event), under the same limits. The order-id table is written in hash order
//! ([`crate::idtable::hash_order`]; its physical slot layout is not state), so two checkers with
//! the same state encode to the same bytes — [`Checker::encode_state`] is also how tests
//! compare states exactly — and a restore fills the table front to back.
//!
//! Restoring reads outside input (a file): every count, index and flag is checked, nothing
//! panics, and the restored state must pass [`Checker::verify_consistency`].

use sha2::{Digest, Sha256};

use orders::Symbol;

use super::{position_key, symbol_key, ConsistencyTally, SELL_BIT};
use super::{AccountSlot, Checker, IdSlot, PositionSlot, SymbolSlot, QTY_MASK, REMEMBERED_BIT};
use crate::checks::PositionView;
use crate::config::{Limits, TradingState};
use crate::idtable::{hash_order, IdTable, IdTableBuilder};

/// First bytes of an encoded state.
pub const STATE_MAGIC: [u8; 8] = *b"TTNCRSK1";
/// Version of the encoding written: 2, order ids packed in blocks of fixed widths.
pub const STATE_VERSION: u32 = 2;
/// The first version, still read: order ids as fixed entries of 32 bytes.
pub const STATE_VERSION_FIXED_IDS: u32 = 1;
/// Bytes of the fixed header (magic, version, flags, limits digest, scalars).
pub const STATE_HEADER_LEN_BYTES: usize = 8 + 4 + 4 + 32 + 8 + 8 + 8 + 8;
const ACCOUNT_LEN_BYTES: usize = 48;
const SYMBOL_LEN_BYTES: usize = 20;
const POSITION_LEN_BYTES: usize = 32;
const RING_ENTRY_LEN_BYTES: usize = 16;
/// Bytes of an order-id entry of version 1, and the most an entry of version 2 takes.
const ID_ENTRY_LEN_BYTES: usize = 32;
/// Order-id entries in one block of version 2 (all but the last, which holds the rest), and
/// the entries a restore of either version reads together.
const ID_BLOCK_ENTRIES: usize = 1024;
/// Bytes of a version-2 block's field widths: order id, price, order word, position, tag.
const ID_WIDTHS_BYTES: usize = 5;
/// Most bytes of each field of a version-2 entry.
const ID_WIDTHS_MAX: [u8; ID_WIDTHS_BYTES] = [8, 8, 8, 4, 4];
/// Bits of a version-2 order word: open quantity in bits 2.., sell in bit 1, remembered in
/// bit 0.
const ORDER_WORD_BITS: u32 = 48 + 2;

/// Why encoded state bytes cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Not a risk state (magic) or another version of the encoding.
    #[error(
        "not a risk state of version {STATE_VERSION_FIXED_IDS} or {STATE_VERSION} (magic or version differ)"
    )]
    Format,
    /// Made under other limits than those given: a replay under these limits would build
    /// another state.
    #[error("made under other limits (limits digest {found}, these limits {expected})")]
    OtherLimits {
        /// Digest in the bytes (hex).
        found: String,
        /// Digest of the limits given (hex).
        expected: String,
    },
    /// The bytes end early, or go on after the state.
    #[error("{0} bytes: the state's length does not match")]
    Length(usize),
    /// A value is out of range or inconsistent.
    #[error("invalid state: {0}")]
    Invalid(String),
    /// The bytes could not be read ([`Checker::restore_state_from`]).
    #[error("reading the state: {0}")]
    Read(String),
}

/// SHA-256 of the limits in force, as parsed (their origin left out): a state is restored
/// only under the limits it was made with. Taken over the limits' `Debug` form, which is
/// deterministic (ordered maps) but belongs to this build: another engine version may see
/// other digests, and then rebuilds from the journal instead. Limits without account names
/// digest as they did before names existed (the two name maps, empty, are left out of the
/// text), so an upgrade keeps the snapshots of journals that use no names.
pub fn limits_digest(limits: &Limits) -> [u8; 32] {
    let canonical = Limits {
        origin: String::new(),
        named_account_ids: Default::default(),
        ..limits.clone()
    };
    let mut text = format!("{canonical:?}");
    if canonical.account_names.is_empty() {
        text = text.replacen(NO_NAMES_DEBUG, "", 1);
    }
    Sha256::digest(text.as_bytes()).into()
}

/// The name maps of [`Limits`] in its `Debug` form when they are empty.
const NO_NAMES_DEBUG: &str = ", account_names: {}, named_account_ids: {}";

fn state_code(s: TradingState) -> u8 {
    match s {
        TradingState::Active => 0,
        TradingState::Reducing => 1,
        TradingState::Halted => 2,
    }
}

fn state_of(code: u8) -> Result<TradingState, StateError> {
    match code {
        0 => Ok(TradingState::Active),
        1 => Ok(TradingState::Reducing),
        2 => Ok(TradingState::Halted),
        other => Err(StateError::Invalid(format!("trading state {other}"))),
    }
}

/// Little-endian reads from a byte stream of `len` bytes; every read is bounds-checked.
struct Src<R> {
    r: R,
    off: u64,
    len: u64,
}

impl<R: std::io::Read> Src<R> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let mut a = [0u8; N];
        self.fill(&mut a)?;
        Ok(a)
    }
    /// Reads exactly `out.len()` bytes into `out`.
    fn fill(&mut self, out: &mut [u8]) -> Result<(), StateError> {
        if self.len.saturating_sub(self.off) < out.len() as u64 {
            return Err(self.length());
        }
        self.r.read_exact(out).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => self.length(),
            _ => StateError::Read(e.to_string()),
        })?;
        self.off += out.len() as u64;
        Ok(())
    }
    fn length(&self) -> StateError {
        StateError::Length(usize::try_from(self.len).unwrap_or(usize::MAX))
    }
    fn u32(&mut self) -> Result<u32, StateError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, StateError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, StateError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn i128(&mut self) -> Result<i128, StateError> {
        Ok(i128::from_le_bytes(self.array()?))
    }
    /// A count of entries of `entry` bytes each that must fit in what is left.
    fn count(&mut self, n: u64, entry: usize) -> Result<usize, StateError> {
        let left = self.len.saturating_sub(self.off);
        let fits = match n.checked_mul(entry as u64) {
            Some(need) => need <= left,
            None => false,
        };
        if !fits {
            return Err(self.length());
        }
        usize::try_from(n).map_err(|_| self.length())
    }
    /// Every byte read, and the stream ends there.
    fn end(&mut self) -> Result<(), StateError> {
        let mut more = [0u8; 1];
        let at_end = loop {
            match self.r.read(&mut more) {
                Ok(n) => break n == 0,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StateError::Read(e.to_string())),
            }
        };
        if self.off != self.len || !at_end {
            return Err(self.length());
        }
        Ok(())
    }
}

#[inline(always)]
fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

/// The fields of a version-2 order-id entry: the id, the price zigzag-encoded (`0, -1, 1, -2,
/// …` as `0, 1, 2, 3, …`), the order word, the position index and the horizon tag.
#[inline]
fn id_fields(id: u64, s: &IdSlot) -> [u64; ID_WIDTHS_BYTES] {
    // The checker never sets other bits; the order word would drop them.
    assert_eq!(
        s.qty_flags & !(QTY_MASK | SELL_BIT | REMEMBERED_BIT),
        0,
        "order {id}: qty_flags {:#x} has bits outside the open quantity and the two flags",
        s.qty_flags
    );
    let word = (s.qty_flags & QTY_MASK) << 2
        | u64::from(s.qty_flags & SELL_BIT != 0) << 1
        | u64::from(s.qty_flags & REMEMBERED_BIT != 0);
    let zigzag = ((s.price << 1) ^ (s.price >> 63)) as u64;
    [id, zigzag, word, u64::from(s.position), u64::from(s.tag)]
}

/// The 8 bytes at `at` of `buf`, little-endian, masked to a field's width (a version-2
/// order-id field). Inlined into the decoding loop: as a call it was a fifth of the loop.
#[inline(always)]
fn field(buf: &[u8], at: usize, mask: u64) -> u64 {
    le_u64(buf, at) & mask
}

/// Checks a decoded order-id entry, adds it to the base and to the consistency sums; counts
/// it in `open` if its order is open. Inlined into the decoding loops (its errors are built
/// out of line).
#[inline(always)]
fn take_id(
    c: &Checker,
    ids: &mut IdTableBuilder<IdSlot>,
    tally: &mut ConsistencyTally,
    open: &mut u64,
    id: u64,
    slot: IdSlot,
) -> Result<(), StateError> {
    if slot.qty_flags & !(QTY_MASK | SELL_BIT | REMEMBERED_BIT) != 0 {
        return Err(bad_id(id, "flags"));
    }
    if slot.open_qty() > 0 && slot.position as usize >= c.positions.len() {
        return Err(bad_id(id, "position out of range"));
    }
    *open += u64::from(slot.open_qty() > 0);
    if !ids.push(id, slot) {
        return Err(bad_id(id, "not in hash order"));
    }
    tally.add(c, id, &slot).map_err(StateError::Invalid)
}

/// An order-id entry refused ([`take_id`]), out of its inlined path.
#[cold]
#[inline(never)]
fn bad_id(id: u64, what: &str) -> StateError {
    invalid(format!("order {id}: {what}"))
}

fn invalid(what: impl Into<String>) -> StateError {
    StateError::Invalid(what.into())
}

impl Checker {
    /// Appends the whole state to `out` (see the module docs; layout in
    /// `docs/formats/risk-state.md`). The undo log is not state (a restored checker starts
    /// with none, as one rebuilt from the journal does). Allocates (cold path).
    pub fn encode_state(&self, out: &mut Vec<u8>) {
        self.encode_state_as(out, STATE_VERSION);
    }

    /// [`Checker::encode_state`] in `version` ([`STATE_VERSION`], or
    /// [`STATE_VERSION_FIXED_IDS`] for the tests that restore the first version).
    pub(crate) fn encode_state_as(&self, out: &mut Vec<u8>, version: u32) {
        let mut ids: Vec<(u64, IdSlot)> = self.ids.iter().map(|(k, v)| (k, *v)).collect();
        // In the table's hash order: canonical (equal states, equal bytes), and a restore
        // inserts front to back. The table keeps its entries in that order already (Robin
        // Hood: by home slot) but for a wrapped tail, ties and a growth's second table, so a
        // stable (run-adaptive) sort does this in about one pass.
        ids.sort_by_key(|e| hash_order(e.0));
        out.reserve(
            STATE_HEADER_LEN_BYTES
                + 16
                + self.accounts.len() * ACCOUNT_LEN_BYTES
                + self.symbols.len() * SYMBOL_LEN_BYTES
                + self.positions.len() * POSITION_LEN_BYTES
                + self.ring.len() * RING_ENTRY_LEN_BYTES
                + ids.len() * ID_ENTRY_LEN_BYTES
                + ids.len().div_ceil(ID_BLOCK_ENTRIES) * ID_WIDTHS_BYTES,
        );
        out.extend_from_slice(&STATE_MAGIC);
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&limits_digest(&self.limits));
        out.extend_from_slice(&u64::from(state_code(self.global_admin_state)).to_le_bytes());
        out.extend_from_slice(&self.replay_skipped.to_le_bytes());
        out.extend_from_slice(&(self.open_count as u64).to_le_bytes());
        out.extend_from_slice(&self.ring_head_seq.to_le_bytes());
        out.extend_from_slice(&(self.accounts.len() as u32).to_le_bytes());
        for a in &self.accounts {
            out.extend_from_slice(&a.account.to_le_bytes());
            out.extend_from_slice(&[state_code(a.admin_state), 0, 0, 0]);
            out.extend_from_slice(&a.open_notional_ticks.to_le_bytes());
            out.extend_from_slice(&a.position_value_ticks.to_le_bytes());
            out.extend_from_slice(&a.tat_ns.to_le_bytes());
        }
        out.extend_from_slice(&(self.symbols.len() as u32).to_le_bytes());
        for s in &self.symbols {
            out.extend_from_slice(&s.symbol.to_bytes());
            out.extend_from_slice(&[
                state_code(s.admin_state),
                u8::from(s.event_halted),
                u8::from(s.reference.is_some()),
                0,
            ]);
            out.extend_from_slice(&s.reference.unwrap_or(0).to_le_bytes());
        }
        out.extend_from_slice(&(self.positions.len() as u32).to_le_bytes());
        for p in &self.positions {
            out.extend_from_slice(&p.account.to_le_bytes());
            out.extend_from_slice(&p.symbol.to_le_bytes());
            out.extend_from_slice(&p.view.position.to_le_bytes());
            out.extend_from_slice(&p.view.open_buy_qty.to_le_bytes());
            out.extend_from_slice(&p.view.open_sell_qty.to_le_bytes());
        }
        out.extend_from_slice(&(self.ring.len() as u64).to_le_bytes());
        for &(id, t) in &self.ring {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
        if version == STATE_VERSION_FIXED_IDS {
            for (id, s) in &ids {
                out.extend_from_slice(&id.to_le_bytes());
                out.extend_from_slice(&s.price.to_le_bytes());
                out.extend_from_slice(&s.qty_flags.to_le_bytes());
                out.extend_from_slice(&s.position.to_le_bytes());
                out.extend_from_slice(&s.tag.to_le_bytes());
            }
            return;
        }
        // Each block: the bytes its largest value of each field needs, then its entries with
        // each field cut to that many bytes.
        for block in ids.chunks(ID_BLOCK_ENTRIES) {
            let mut any = [0u64; ID_WIDTHS_BYTES];
            for (id, slot) in block {
                for (a, f) in any.iter_mut().zip(id_fields(*id, slot)) {
                    *a |= f;
                }
            }
            let widths = any.map(|a| (u64::BITS - a.leading_zeros()).div_ceil(8).max(1) as u8);
            out.extend_from_slice(&widths);
            for (id, slot) in block {
                for (w, f) in widths.iter().zip(id_fields(*id, slot)) {
                    out.extend_from_slice(&f.to_le_bytes()[..usize::from(*w)]);
                }
            }
        }
    }

    /// The state as bytes ([`Checker::encode_state`] into a new buffer).
    pub fn state_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode_state(&mut v);
        v
    }

    /// Builds a checker under `limits` holding the state `bytes` encode
    /// ([`Checker::encode_state`] of a checker under the same limits): see
    /// [`Checker::restore_state_from`].
    pub fn restore_state(limits: Limits, bytes: &[u8]) -> Result<Checker, StateError> {
        Self::restore_state_from(limits, bytes, bytes.len() as u64)
    }

    /// Builds a checker under `limits` holding the state that the `len` bytes `r` yields
    /// encode, read as a stream (a snapshot file read in chunks, hashed as it is read: no
    /// buffer of the whole file). The order-id table is made at the limits' capacity, as
    /// [`Checker::new`] makes it, and the encoded ids become its base, drained into it behind
    /// the first inserts (`idtable.rs`, "A restore drained behind the inserts"). Errors: other
    /// limits, a malformed or inconsistent state, fewer or more than `len` bytes, a read error.
    ///
    /// The consistency check ([`Checker::verify_consistency`]'s) runs as the ids are
    /// inserted: O(entries), not a pass over the whole table.
    pub fn restore_state_from<R: std::io::Read>(
        limits: Limits,
        r: R,
        len: u64,
    ) -> Result<Checker, StateError> {
        let mut r = Src { r, off: 0, len };
        if r.array::<8>()? != STATE_MAGIC {
            return Err(StateError::Format);
        }
        let version = r.u32()?;
        if version != STATE_VERSION && version != STATE_VERSION_FIXED_IDS {
            return Err(StateError::Format);
        }
        if r.u32()? != 0 {
            return Err(invalid("flags are not zero"));
        }
        let digest = r.array::<32>()?;
        let expected = limits_digest(&limits);
        if digest != expected {
            return Err(StateError::OtherLimits {
                found: hex_of(&digest),
                expected: hex_of(&expected),
            });
        }
        // The order-id table is built once its count is read (below).
        let mut c = Checker::with_id_table(limits, IdTable::with_capacity(0));
        // Rebuilt in the encoded order (configured ones included), not `new`'s.
        c.accounts.clear();
        c.account_index.clear();
        c.symbols.clear();
        c.symbol_index.clear();
        let global = r.u64()?;
        c.global_admin_state =
            state_of(u8::try_from(global).map_err(|_| invalid("global state"))?)?;
        c.replay_skipped = r.u64()?;
        let open_count = r.u64()?;
        c.ring_head_seq = r.u64()?;

        let n = r.u32()?;
        let n = r.count(u64::from(n), ACCOUNT_LEN_BYTES)?;
        if n as u64 > c.limits.capacity.max_accounts {
            return Err(invalid(format!(
                "{n} accounts, capacity {}",
                c.limits.capacity.max_accounts
            )));
        }
        for i in 0..n {
            let account = r.u32()?;
            let [admin, p1, p2, p3] = r.array::<4>()?;
            if [p1, p2, p3] != [0, 0, 0] {
                return Err(invalid(format!("account {account}: padding")));
            }
            let mut slot = AccountSlot::resolve(&c.limits, account);
            slot.admin_state = state_of(admin)?;
            slot.open_notional_ticks = r.i128()?;
            slot.position_value_ticks = r.i128()?;
            slot.tat_ns = r.u64()?;
            if c.account_index.insert(account, i as u32).is_some() {
                return Err(invalid(format!("account {account} twice")));
            }
            c.accounts.push(slot);
        }
        let n = r.u32()?;
        let n = r.count(u64::from(n), SYMBOL_LEN_BYTES)?;
        if n as u64 > c.limits.capacity.max_symbols {
            return Err(invalid(format!(
                "{n} symbols, capacity {}",
                c.limits.capacity.max_symbols
            )));
        }
        for i in 0..n {
            let raw = r.array::<8>()?;
            let symbol =
                Symbol::from_bytes(raw).map_err(|e| invalid(format!("symbol {i}: {e}")))?;
            let [admin, halted, has_ref, pad] = r.array::<4>()?;
            let reference = r.i64()?;
            if halted > 1 || has_ref > 1 || pad != 0 || (has_ref == 0 && reference != 0) {
                return Err(invalid(format!("symbol {symbol}: flags")));
            }
            let mut slot = SymbolSlot::resolve(&c.limits, symbol);
            slot.admin_state = state_of(admin)?;
            slot.event_halted = halted == 1;
            slot.reference = (has_ref == 1).then_some(reference);
            if c.symbol_index
                .insert(symbol_key(symbol), i as u32)
                .is_some()
            {
                return Err(invalid(format!("symbol {symbol} twice")));
            }
            c.symbols.push(slot);
        }
        let n = r.u32()?;
        let n = r.count(u64::from(n), POSITION_LEN_BYTES)?;
        c.positions.clear();
        c.position_index.clear();
        for i in 0..n {
            let account = r.u32()?;
            let symbol = r.u32()?;
            let view = PositionView {
                position: r.i64()?,
                open_buy_qty: r.u64()?,
                open_sell_qty: r.u64()?,
            };
            let (Some(a), Some(s)) = (
                c.accounts.get(account as usize),
                c.symbols.get_mut(symbol as usize),
            ) else {
                return Err(invalid(format!(
                    "position {i}: account or symbol index out of range"
                )));
            };
            if c.position_index
                .insert(position_key(a.account, s.symbol), i as u32)
                .is_some()
            {
                return Err(invalid(format!("position {i} twice")));
            }
            s.positions.push(i as u32);
            c.positions.push(PositionSlot {
                account,
                symbol,
                view,
            });
        }
        let n = r.u64()?;
        let n = r.count(n, RING_ENTRY_LEN_BYTES)?;
        if n as u64 > c.limits.duplicate_horizon_orders.max(1) {
            return Err(invalid(format!(
                "{n} remembered ids, horizon {}",
                c.limits.duplicate_horizon_orders
            )));
        }
        c.ring.clear();
        for _ in 0..n {
            let id = r.u64()?;
            let t = r.u64()?;
            c.ring.push_back((id, t));
        }
        let n = r.u64()?;
        // Each entry takes at least one byte a field (version 2), 32 in version 1.
        let least = if version == STATE_VERSION_FIXED_IDS {
            ID_ENTRY_LEN_BYTES
        } else {
            ID_WIDTHS_BYTES
        };
        let n = r.count(n, least)?;
        // Kept as the table's base, written in one sequential pass (the ids come in hash
        // order) and drained into the table behind the first inserts (`idtable.rs`): the
        // restore does not build a table for them. The table itself is the configured one.
        let mut ids = IdTableBuilder::new(Checker::id_capacity(&c.limits, 0), n)
            .ok_or_else(|| invalid(format!("{n} order ids: more than a table indexes")))?;
        // In blocks of entries: one read per block. Each entry is checked and added to the
        // consistency sums as it is decoded, while it is in the cache. (A second thread for
        // the check, fed blocks of decoded entries, was no faster once the sums were kept
        // per position: the blocks crossed cores, and a restart is CPU-bound on two.)
        let mut tally = ConsistencyTally::new(&c);
        let mut open = 0u64;
        // 8 bytes more than a block: a field is read as the 8 bytes at its start, masked.
        let mut buf = vec![0u8; ID_BLOCK_ENTRIES * ID_ENTRY_LEN_BYTES + 8];
        let mut left = n;
        while left > 0 {
            let k = left.min(ID_BLOCK_ENTRIES);
            left -= k;
            if version == STATE_VERSION_FIXED_IDS {
                let bytes = &mut buf[..k * ID_ENTRY_LEN_BYTES];
                r.fill(bytes)?;
                for e in bytes.chunks_exact(ID_ENTRY_LEN_BYTES) {
                    let slot = IdSlot {
                        price: i64::from_le_bytes(le_u64(e, 8).to_le_bytes()),
                        qty_flags: le_u64(e, 16),
                        position: le_u32(e, 24),
                        tag: le_u32(e, 28),
                    };
                    take_id(&c, &mut ids, &mut tally, &mut open, le_u64(e, 0), slot)?;
                }
                continue;
            }
            let widths = r.array::<ID_WIDTHS_BYTES>()?;
            if widths
                .iter()
                .zip(ID_WIDTHS_MAX)
                .any(|(&w, most)| w == 0 || w > most)
            {
                return Err(invalid(format!("order-id block widths {widths:?}")));
            }
            let mut at = [0usize; ID_WIDTHS_BYTES];
            let mut mask = [0u64; ID_WIDTHS_BYTES];
            let mut entry = 0usize;
            for i in 0..ID_WIDTHS_BYTES {
                at[i] = entry;
                entry += usize::from(widths[i]);
                mask[i] = u64::MAX >> (64 - 8 * u32::from(widths[i]));
            }
            let this = r.count(k as u64, entry)?;
            let bytes = &mut buf[..this * entry];
            r.fill(bytes)?;
            for j in 0..k {
                let e = j * entry;
                let (id, zigzag, word, position, tag) = (
                    field(&buf, e + at[0], mask[0]),
                    field(&buf, e + at[1], mask[1]),
                    field(&buf, e + at[2], mask[2]),
                    field(&buf, e + at[3], mask[3]),
                    field(&buf, e + at[4], mask[4]),
                );
                if word >> ORDER_WORD_BITS != 0 {
                    return Err(invalid(format!("order {id}: order word")));
                }
                let slot = IdSlot {
                    price: (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64),
                    qty_flags: word >> 2
                        | if word & 2 != 0 { SELL_BIT } else { 0 }
                        | if word & 1 != 0 { REMEMBERED_BIT } else { 0 },
                    // At most 4 bytes each (checked above).
                    position: position as u32,
                    tag: tag as u32,
                };
                take_id(&c, &mut ids, &mut tally, &mut open, id, slot)?;
            }
        }
        c.ids = ids.finish();
        r.end()?;
        if open != open_count {
            return Err(invalid(format!("{open} open orders, {open_count} counted")));
        }
        c.open_count = open as usize;
        c.default_account = AccountSlot::template(&c.limits);
        c.default_symbol = SymbolSlot::template(&c.limits);
        // The file's accounts and symbols are always in the tables (interned at start-up and
        // on every reload); a state without them was made under other limits.
        let (na, ns) = (c.accounts.len(), c.symbols.len());
        c.install_configured();
        if (c.accounts.len(), c.symbols.len()) != (na, ns) {
            return Err(invalid("a configured account or symbol is missing"));
        }
        // Ids are distinct (strictly rising hash order, a bijection), so every entry added is
        // one in the table; the sums were taken over all of them.
        tally.finish(&c).map_err(StateError::Invalid)?;
        Ok(c)
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
