//! The order-id table: open addressing with Robin Hood linear probing and backward-shift
//! deletion, keyed by non-zero `u64` order ids, growing incrementally.
//!
//! Why not `std::collections::HashMap`: the duplicate horizon inserts one id and removes an old
//! one per accepted order, forever. SwissTable marks removed slots as tombstones when their
//! group is full; tombstones lengthen lookups until a periodic in-place rehash of the whole
//! table (a latency spike of milliseconds at a million entries). Backward-shift deletion leaves
//! no tombstones, so the table never needs cleaning, and Robin Hood placement (an entry far
//! from its home slot takes the place of one nearer to its own) keeps probe runs short and lets
//! a lookup of an absent id stop early.
//!
//! Home slots come from Fibonacci hashing (the top bits of `id × 2^64/φ`), which spreads ids
//! that differ in low bits and ids that differ only in high bits alike, in one multiply. A
//! locality-keeping mapping (home = id modulo the table size, so that ascending ids fill
//! consecutive slots) was tried and dropped: it is fast while every id is short-lived, but
//! orders that stay open for long (half of them in a `bench gen` file) sit in the slots the ids
//! a table-size later map to, the sliding window of fresh ids piles up behind them, and one
//! removal then shifts a run of hundreds of thousands of entries.
//!
//! # Layout
//! A slot is the key and its value side by side, aligned to [`SLOT_ALIGN_BYTES`]: with the
//! checker's 24-byte value a slot is 32 bytes, two per cache line, so a lookup, an insert and
//! a removal of one id touch one line (most probe runs are 1–2 slots at load ≤ 50 %). An
//! earlier layout kept keys and values in separate arrays (a probe read 8 keys per line), but
//! then an insert or a removal touched two lines of a table larger than the cache.
//! [`IdTable::touch`] lets a caller start those misses for a whole batch at once.
//!
//! # Growth without a spike
//! The table is allocated at start-up for the configured capacity (load ≤ 50 % at capacity)
//! and every slot is written then, so its pages are faulted in before the first order. When
//! more ids must be held, it grows to twice the slots **incrementally**, so that no single
//! operation pays for a whole-table rehash (a 2^20-slot table took ~100 ms to rebuild inside
//! one request):
//!
//! 1. *prepare*: once the table holds more than [`GROW_PREPARE_LOAD_PERCENT`] % of its slots,
//!    each insert initialises the next [`GROW_INIT_SLOTS_PER_INSERT`] slots of the new table
//!    (allocated with its capacity reserved, so the allocation itself is one `mmap` and the
//!    page faults are spread over the inserts);
//! 2. *migrate*: when the new table is fully initialised it takes over; inserts go to it, and
//!    each insert first moves the entries of the next [`GROW_MIGRATE_SLOTS_PER_INSERT`] slots of
//!    the old table across. Lookups and removals look in both tables until the old one is
//!    empty, which the constants below guarantee happens before the new table reaches the
//!    prepare threshold itself.
//!
//! So an insert costs at most ~40 slot writes and ~3 slot moves more than usual while a growth
//! is under way. [`IdTable::reserve_to`] (a reload that raises the capacity: an admin action)
//! rebuilds in one go. [`IdTableBuilder`] builds a table from ids in hash order (a restored
//! risk state) in one sequential pass over its slots.

/// Smallest table, in slots.
const SLOTS_MIN: usize = 16;
/// Key of an empty slot (order id 0 is never stored: it is not a valid new order id).
const EMPTY: u64 = 0;

/// Fibonacci hashing: `2^64 / φ`, odd. The top bits of `id × it` depend on every bit of the id.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// Alignment of a slot (and so of the slot array): a 32-byte slot never straddles two cache
/// lines.
pub const SLOT_ALIGN_BYTES: usize = 32;

/// Growth starts (the *prepare* phase) once the table holds more than this share of its slots.
pub const GROW_PREPARE_LOAD_PERCENT: usize = 45;
/// Most entries a table holds, in percent of its slots: inserts past it would make probe
/// runs long. The prepare phase must end before it is reached.
pub const LOAD_MAX_PERCENT: usize = 50;
/// Slots of the new (2×) table initialised per insert during the prepare phase. The prepare
/// phase lasts at least `(50 − 45) % × S` inserts (S = old slots) and must initialise `2 S`
/// slots: `2 S / (0.05 S) = 40`.
pub const GROW_INIT_SLOTS_PER_INSERT: usize = 40;
const _: () =
    assert!(GROW_INIT_SLOTS_PER_INSERT * (LOAD_MAX_PERCENT - GROW_PREPARE_LOAD_PERCENT) >= 2 * 100);
/// Slots of the old table migrated per insert during the migrate phase. Migration lasts
/// `S / 3` inserts, after which the new table (`2 S` slots) holds at most
/// `0.5 S + S / 3 ≈ 0.83 S` entries = 41.7 % < the 45 % that would start the next growth.
pub const GROW_MIGRATE_SLOTS_PER_INSERT: usize = 3;
const _: () = assert!(
    // (50 % of S + S / m) / 2 S < 45 %  ⇔  50 m + 100 < 90 m
    LOAD_MAX_PERCENT * GROW_MIGRATE_SLOTS_PER_INSERT + 100
        < 2 * GROW_PREPARE_LOAD_PERCENT * GROW_MIGRATE_SLOTS_PER_INSERT
);

#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot<V> {
    key: u64,
    value: V,
}

/// Bytes of one slot holding a `V`.
pub const fn slot_bytes<V>() -> usize {
    std::mem::size_of::<Slot<V>>()
}

const _: () = assert!(std::mem::align_of::<Slot<u8>>() == SLOT_ALIGN_BYTES);

/// Where an entry lives: a handle from [`IdTable::find`], valid until the table next changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotRef {
    /// In the old table (a growth is migrating).
    old: bool,
    i: usize,
}

/// One open-addressing table (the current one, or the old one while a growth migrates).
#[derive(Debug, Clone)]
struct Table<V> {
    slots: Vec<Slot<V>>,
    mask: usize,
    /// `64 − log2(slots)`: the home slot is the top bits of the product.
    shift: u32,
    len: usize,
}

impl<V: Copy + Default> Table<V> {
    fn from_slots(slots: Vec<Slot<V>>) -> Self {
        debug_assert!(slots.len().is_power_of_two() && slots.len() >= SLOTS_MIN);
        Table {
            mask: slots.len() - 1,
            shift: 64 - slots.len().trailing_zeros(),
            slots,
            len: 0,
        }
    }

    fn with_slots(n: usize) -> Self {
        Self::from_slots(vec![Slot::default(); n])
    }

    #[inline]
    fn home(&self, key: u64) -> usize {
        // One multiply: this runs several times per order (lookup, insert, eviction, and
        // once per slot a removal shifts).
        (key.wrapping_mul(FIBONACCI) >> self.shift) as usize
    }

    /// How far the entry with `key` in slot `i` sits from its home slot.
    #[inline]
    fn distance(&self, i: usize, key: u64) -> usize {
        i.wrapping_sub(self.home(key)) & self.mask
    }

    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        let mut i = self.home(key);
        let mut d = 0;
        loop {
            let k = self.slots[i].key;
            if k == key {
                return Some(i);
            }
            // Robin Hood invariant: had `key` been inserted, it would sit before any entry
            // that is closer to its home than `d`.
            if k == EMPTY || self.distance(i, k) < d {
                return None;
            }
            i = (i + 1) & self.mask;
            d += 1;
        }
    }

    /// Inserts or replaces, returning the value replaced. The caller keeps the load ≤ 50 %.
    fn insert(&mut self, key: u64, value: V) -> Option<V> {
        debug_assert!((self.len + 1) * 100 <= self.slots.len() * LOAD_MAX_PERCENT + 100);
        let mut cur = Slot { key, value };
        let mut i = self.home(key);
        let mut d = 0;
        let mut placed = false; // `key` is placed; we carry a displaced entry on
        loop {
            let k = self.slots[i].key;
            if k == EMPTY {
                self.slots[i] = cur;
                self.len += 1;
                return None;
            }
            if !placed && k == key {
                return Some(std::mem::replace(&mut self.slots[i].value, value));
            }
            let kd = self.distance(i, k);
            if kd < d {
                // Robin Hood: `key` is not further on (see `find`). Take the slot of the entry
                // nearer to its home; carry that one on.
                std::mem::swap(&mut self.slots[i], &mut cur);
                placed = true;
                d = kd;
            }
            i = (i + 1) & self.mask;
            d += 1;
        }
    }

    /// Removes the entry in slot `i`, shifting the rest of its probe run back so no tombstone
    /// is left.
    fn remove_at(&mut self, i: usize) -> V {
        let removed = self.slots[i].value;
        let mut hole = i;
        self.len -= 1;
        loop {
            let j = (hole + 1) & self.mask;
            let k = self.slots[j].key;
            if k == EMPTY || self.distance(j, k) == 0 {
                break;
            }
            self.slots[hole] = self.slots[j];
            hole = j;
        }
        self.slots[hole].key = EMPTY;
        removed
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct IdTable<V> {
    /// Where inserts go.
    cur: Table<V>,
    /// The table being drained into `cur` (migrate phase).
    old: Option<Table<V>>,
    /// Next slot of `old` to migrate.
    cursor: usize,
    /// The next table being initialised (prepare phase): capacity reserved, `len` grows.
    next: Option<Vec<Slot<V>>>,
    /// Growths started.
    grows: u64,
}

impl<V: Copy + Default> IdTable<V> {
    /// A table with room for `capacity` ids at load ≤ 50 %, every slot written now.
    pub fn with_capacity(capacity: usize) -> Self {
        IdTable {
            cur: Table::with_slots(slots_for(capacity)),
            old: None,
            cursor: 0,
            next: None,
            grows: 0,
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.cur.len + self.old.as_ref().map_or(0, |t| t.len)
    }

    /// Ids the current table holds at load 50 % (growth starts a little before).
    pub fn capacity(&self) -> usize {
        self.cur.slots.len() * LOAD_MAX_PERCENT / 100
    }

    /// Slots of the current table.
    pub fn slots(&self) -> usize {
        self.cur.slots.len()
    }

    /// Growths started since the table was built.
    pub fn grows(&self) -> u64 {
        self.grows
    }

    /// A growth is under way (prepare or migrate phase).
    pub fn growing(&self) -> bool {
        self.old.is_some() || self.next.is_some()
    }

    /// Makes room for `capacity` ids, in one go (a cold path: reload).
    pub fn reserve_to(&mut self, capacity: usize) {
        if capacity > self.capacity() || self.growing() {
            let slots = slots_for(capacity.max(self.len())).max(self.cur.slots.len());
            let mut fresh = Table::with_slots(slots);
            for (k, v) in self.iter() {
                fresh.insert(k, *v);
            }
            *self = IdTable {
                cur: fresh,
                old: None,
                cursor: 0,
                next: None,
                grows: self.grows,
            };
        }
    }

    /// Bytes of the slot arrays (both tables while migrating).
    pub fn footprint_bytes(&self) -> usize {
        let old = self.old.as_ref().map_or(0, |t| t.slots.len());
        (self.cur.slots.len() + old) * slot_bytes::<V>()
    }

    /// Reads the home slot of `key` and returns a digest of it, so that its cache line is
    /// loaded now: independent calls for many keys overlap their cache misses
    /// (memory-level parallelism), and the lookups that follow find the lines in cache. A hint.
    pub fn touch(&self, key: u64) -> u64 {
        let t = &self.cur;
        let mut acc = t.slots[t.home(key)].key;
        if let Some(o) = &self.old {
            acc ^= o.slots[o.home(key)].key;
        }
        acc
    }

    /// The slot holding `key`, if any (a handle for [`IdTable::at`], [`IdTable::at_mut`] and
    /// [`IdTable::remove_at`], valid until the table is next changed).
    #[inline]
    pub fn find(&self, key: u64) -> Option<SlotRef> {
        if key == EMPTY {
            return None;
        }
        if let Some(i) = self.cur.find(key) {
            return Some(SlotRef { old: false, i });
        }
        let i = self.old.as_ref()?.find(key)?;
        Some(SlotRef { old: true, i })
    }

    #[inline]
    fn table(&self, old: bool) -> &Table<V> {
        match (&self.old, old) {
            (Some(t), true) => t,
            _ => &self.cur,
        }
    }

    #[inline]
    fn table_mut(&mut self, old: bool) -> &mut Table<V> {
        match (&mut self.old, old) {
            (Some(t), true) => t,
            _ => &mut self.cur,
        }
    }

    /// The value in slot `r` (from [`IdTable::find`]).
    #[inline]
    pub fn at(&self, r: SlotRef) -> &V {
        &self.table(r.old).slots[r.i].value
    }

    /// The value in slot `r` (from [`IdTable::find`]), mutably.
    #[inline]
    pub fn at_mut(&mut self, r: SlotRef) -> &mut V {
        &mut self.table_mut(r.old).slots[r.i].value
    }

    /// The value of `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<&V> {
        self.find(key).map(|r| self.at(r))
    }

    /// Inserts or replaces, returning the value replaced (one probe run: no separate lookup
    /// is needed to learn it). `key` must not be 0 (ignored if it is). Never rehashes the
    /// whole table: see the module docs for the bounded extra work of a growth.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        debug_assert_ne!(key, EMPTY, "order id 0 is never stored");
        if key == EMPTY {
            return None;
        }
        self.grow_step();
        let moved = match &mut self.old {
            Some(old) => old.find(key).map(|i| old.remove_at(i)),
            None => None,
        };
        let replaced = self.cur.insert(key, value);
        debug_assert!(
            moved.is_none() || replaced.is_none(),
            "a key lives in one table"
        );
        replaced.or(moved)
    }

    /// Removes the entry in slot `r` (from [`IdTable::find`]), shifting the rest of its probe
    /// run back so no tombstone is left.
    pub fn remove_at(&mut self, r: SlotRef) -> V {
        self.table_mut(r.old).remove_at(r.i)
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        self.find(key).map(|r| self.remove_at(r))
    }

    /// Every (id, value): the current table's in slot order, then the old one's.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.cur
            .slots
            .iter()
            .chain(self.old.iter().flat_map(|t| t.slots.iter()))
            .filter(|s| s.key != EMPTY)
            .map(|s| (s.key, &s.value))
    }

    /// The bounded growth work of one insert (module docs): start or continue the prepare
    /// phase, switch tables when the new one is ready, migrate a few old slots.
    fn grow_step(&mut self) {
        if let Some(old) = &mut self.old {
            for _ in 0..GROW_MIGRATE_SLOTS_PER_INSERT {
                if self.cursor == old.slots.len() {
                    break;
                }
                // Backward shift may pull the next entry of the run into the cursor's slot:
                // empty the slot before moving on. Nothing moves behind the cursor (the slots
                // there are empty and the old table takes no inserts).
                while old.slots[self.cursor].key != EMPTY {
                    let key = old.slots[self.cursor].key;
                    let value = old.remove_at(self.cursor);
                    self.cur.insert(key, value);
                }
                self.cursor += 1;
            }
            if self.cursor == old.slots.len() {
                debug_assert_eq!(old.len, 0);
                self.old = None;
                self.cursor = 0;
            }
            return;
        }
        let slots = self.cur.slots.len();
        if self.next.is_none() && (self.cur.len + 1) * 100 > slots * GROW_PREPARE_LOAD_PERCENT {
            self.grows += 1;
            self.next = Some(Vec::with_capacity(slots * 2));
        }
        let Some(next) = &mut self.next else {
            return;
        };
        let want = (next.len() + GROW_INIT_SLOTS_PER_INSERT).min(next.capacity());
        next.resize(want, Slot::default());
        // By the constants above the new table is ready before the current one is half full;
        // finish it now should that ever not hold (it would only cost time, never correctness).
        if (self.cur.len + 1) * 100 > slots * LOAD_MAX_PERCENT {
            next.resize(next.capacity(), Slot::default());
        }
        if next.len() == next.capacity() {
            if let Some(ready) = self.next.take() {
                let cur = std::mem::replace(&mut self.cur, Table::from_slots(ready));
                self.old = Some(cur);
                self.cursor = 0;
            }
        }
    }
}

/// Builds an [`IdTable`] from ids given in strictly ascending [`hash_order`] (a restored
/// risk state, `checker_state.rs`) in one sequential pass: each entry goes to its home slot or
/// just after the previous one — where inserting them one by one into an empty table puts
/// them (no entry is displaced when every new one has the furthest home) — and the empty
/// slots between are written as the pass reaches them. So the slot array is written once,
/// front to back, instead of being written whole when allocated and then again by the
/// inserts. Entries that would run past the end (a run at the very end of the table) are
/// inserted normally at [`IdTableBuilder::finish`].
#[derive(Debug)]
pub struct IdTableBuilder<V> {
    slots: Vec<Slot<V>>,
    /// Slots of the finished table.
    n: usize,
    shift: u32,
    len: usize,
    prev: Option<u64>,
    wrapped: Vec<(u64, V)>,
}

impl<V: Copy + Default> IdTableBuilder<V> {
    /// A builder of a table with room for `capacity` ids at load ≤ 50 % (as
    /// [`IdTable::with_capacity`]); give it at most `capacity` ids.
    pub fn new(capacity: usize) -> Self {
        let n = slots_for(capacity);
        IdTableBuilder {
            slots: Vec::with_capacity(n),
            n,
            shift: 64 - n.trailing_zeros(),
            len: 0,
            prev: None,
            wrapped: Vec::new(),
        }
    }

    /// Adds `key` (non-zero, after every key added so far in [`hash_order`]); `false`, adding
    /// nothing, if it is not.
    pub fn push(&mut self, key: u64, value: V) -> bool {
        let h = hash_order(key);
        if key == EMPTY || self.prev.is_some_and(|p| h <= p) {
            return false;
        }
        self.prev = Some(h);
        let home = (h >> self.shift) as usize;
        let at = home.max(self.slots.len());
        if at >= self.n {
            self.wrapped.push((key, value));
            return true;
        }
        self.slots.resize(at, Slot::default());
        self.slots.push(Slot { key, value });
        self.len += 1;
        true
    }

    /// The table: the rest of the slots written empty, then the entries that ran past the end
    /// inserted.
    pub fn finish(mut self) -> IdTable<V> {
        self.slots.resize(self.n, Slot::default());
        let mut cur = Table::from_slots(self.slots);
        cur.len = self.len;
        for (k, v) in self.wrapped {
            cur.insert(k, v);
        }
        IdTable {
            cur,
            old: None,
            cursor: 0,
            next: None,
            grows: 0,
        }
    }
}

/// The order in which ids sit in a table of any size (their home slot is the top bits of
/// this): inserting ids in ascending `hash_order` into an empty table touches it front to back
/// (a restored risk state loads millions of ids this way, `checker_state.rs`).
pub fn hash_order(key: u64) -> u64 {
    key.wrapping_mul(FIBONACCI)
}

/// Slots for `capacity` ids at load ≤ 50 %: a power of two, at least [`SLOTS_MIN`].
fn slots_for(capacity: usize) -> usize {
    capacity
        .saturating_mul(100 / LOAD_MAX_PERCENT)
        .max(SLOTS_MIN)
        .checked_next_power_of_two()
        .unwrap_or(1 << (usize::BITS - 1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// A table built from hash-ordered ids in one pass is laid out exactly as one they were
    /// inserted into one by one, including a run that wraps past the end; out-of-order or zero
    /// keys are refused.
    #[test]
    fn a_built_table_is_the_inserted_one() {
        for (cap, count) in [(16usize, 12u64), (3_000, 3_000), (64, 50)] {
            let mut ids: Vec<u64> = (1..=count).map(|i| i.wrapping_mul(0x2545_F491)).collect();
            ids.sort_by_key(|&k| hash_order(k));
            // Ids whose home is the last slot, so that the run wraps.
            let slots = slots_for(cap);
            let last: Vec<u64> = (1..u64::MAX)
                .filter(|&k| (hash_order(k) >> (64 - slots.trailing_zeros())) as usize == slots - 1)
                .take(3)
                .collect();
            let mut all: Vec<u64> = ids.iter().copied().take(count as usize - 3).collect();
            all.extend(&last);
            all.sort_by_key(|&k| hash_order(k));
            all.dedup();
            let mut b = IdTableBuilder::new(cap);
            let mut t = IdTable::with_capacity(cap);
            for &k in &all {
                assert!(b.push(k, k ^ 5));
                t.insert(k, k ^ 5);
            }
            let built = b.finish();
            assert_eq!(built.len(), t.len());
            let a: Vec<(u64, u64)> = built.iter().map(|(k, v)| (k, *v)).collect();
            let e: Vec<(u64, u64)> = t.iter().map(|(k, v)| (k, *v)).collect();
            assert_eq!(a, e, "capacity {cap}");
            for &k in &all {
                assert_eq!(built.get(k), Some(&(k ^ 5)));
            }
        }
        let mut b: IdTableBuilder<u32> = IdTableBuilder::new(16);
        let (x, y) = if hash_order(1) < hash_order(2) {
            (1, 2)
        } else {
            (2, 1)
        };
        assert!(b.push(y, 0));
        assert!(!b.push(x, 0), "out of hash order");
        assert!(!b.push(y, 0), "the same key again");
        assert!(!b.push(0, 0), "key 0");
        assert_eq!(b.finish().len(), 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Get(u64),
    }

    fn key() -> impl Strategy<Value = u64> {
        prop_oneof![
            1u64..64,                         // dense, colliding runs
            (1u64..64).prop_map(|k| k << 20), // same low bits
            any::<u64>(),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            key().prop_map(Op::Remove),
            key().prop_map(Op::Get),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in prop::collection::vec(op(), 0..400), cap in 0usize..40) {
            let mut t = IdTable::<u32>::with_capacity(cap);
            let mut m = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        if k != 0 {
                            prop_assert_eq!(t.insert(k, v), m.insert(k, v));
                        }
                    }
                    Op::Remove(k) => prop_assert_eq!(t.remove(k), m.remove(&k)),
                    Op::Get(k) => prop_assert_eq!(t.get(k), m.get(&k)),
                }
                prop_assert_eq!(t.len(), m.len());
            }
            for (k, v) in &m {
                prop_assert_eq!(t.get(*k), Some(v));
            }
            prop_assert_eq!(t.iter().count(), m.len());
        }
    }

    /// Slots a lookup of `key` visits in the current table.
    fn probes(t: &IdTable<u32>, key: u64) -> usize {
        let c = &t.cur;
        let mut i = c.home(key);
        let mut d = 0;
        loop {
            let k = c.slots[i].key;
            if k == key || k == EMPTY || c.distance(i, k) < d {
                return d + 1;
            }
            i = (i + 1) & c.mask;
            d += 1;
        }
    }

    #[test]
    fn slots_are_32_bytes_and_aligned_for_the_checker_value() {
        #[derive(Clone, Copy, Default)]
        struct Value24(#[allow(dead_code)] [u64; 3]);
        assert_eq!(slot_bytes::<Value24>(), 32);
        let t = IdTable::<Value24>::with_capacity(100);
        assert_eq!(t.cur.slots.as_ptr() as usize % SLOT_ALIGN_BYTES, 0);
    }

    #[test]
    fn sliding_window_with_long_lived_entries_keeps_probe_runs_short() {
        // The duplicate horizon's pattern (insert id n, remove id n − window), with every
        // third id staying (an order left open), as in a generated order file.
        let window = 4096u64;
        let mut t = IdTable::<u32>::with_capacity(window as usize * 4);
        let slots = t.slots();
        let mut kept = 0usize;
        for n in 1..100_000u64 {
            if n > window {
                let old = n - window;
                if old % 3 == 0 && kept < window as usize * 2 {
                    kept += 1;
                } else {
                    t.remove(old);
                }
            }
            t.insert(n, n as u32);
        }
        assert_eq!(t.slots(), slots, "no growth");
        assert_eq!(t.grows(), 0);
        let fresh = (200_000..201_000u64).map(|k| probes(&t, k)).max().unwrap();
        let live = (100_000 - window..100_000)
            .map(|k| probes(&t, k))
            .max()
            .unwrap();
        assert!(fresh <= 24 && live <= 24, "{fresh} {live}");
    }

    #[test]
    fn grows_when_full_and_ignores_id_zero() {
        let mut t = IdTable::<u8>::with_capacity(4);
        let cap = t.capacity();
        for k in 1..=(cap as u64 * 3) {
            t.insert(k, 1);
        }
        assert_eq!(t.len(), cap * 3);
        assert!(t.capacity() >= cap * 3);
        assert!(t.grows() >= 1);
        assert_eq!(t.get(0), None);
        assert_eq!(t.remove(0), None);
        for k in 1..=(cap as u64 * 3) {
            assert_eq!(t.get(k), Some(&1), "{k}");
        }
    }

    /// Regression (issue #4, a ~99 ms request in a long-lived risk-server at ~1 M orders): an
    /// insert past the capacity never rebuilds the whole table. Every insert moves at most
    /// `GROW_MIGRATE_SLOTS_PER_INSERT` slots' runs and initialises at most
    /// `GROW_INIT_SLOTS_PER_INSERT` new slots; the table never exceeds load 50 %.
    #[test]
    fn growth_is_incremental_with_bounded_work_per_insert() {
        let mut t = IdTable::<u32>::with_capacity(1 << 12);
        let start_slots = t.slots();
        let mut phases = (0, 0); // inserts seen in (prepare, migrate)
        for k in 1..=(1u64 << 16) {
            let (len_before, old_before) = (t.len(), t.old.as_ref().map(|o| o.len));
            let next_before = t.next.as_ref().map(|n| n.len());
            t.insert(k, k as u32);
            assert_eq!(t.len(), len_before + 1);
            if let (Some(before), Some(o)) = (old_before, t.old.as_ref()) {
                // Migrated entries this insert: at most the runs of 3 slots.
                assert!(before - o.len <= 3 * 8, "moved {} entries", before - o.len);
                phases.1 += 1;
            }
            if let (Some(before), Some(n)) = (next_before, t.next.as_ref()) {
                assert!(n.len() - before <= GROW_INIT_SLOTS_PER_INSERT);
                phases.0 += 1;
            }
            assert!(
                t.cur.len * 100 <= t.cur.slots.len() * LOAD_MAX_PERCENT,
                "load above 50 % at {k}"
            );
            if k % 4099 == 0 {
                // Everything stays findable while tables are migrating.
                for j in (1..=k).step_by(97) {
                    assert_eq!(t.get(j), Some(&(j as u32)), "{j} after {k}");
                }
            }
        }
        assert!(t.slots() >= start_slots * 16);
        assert!(t.grows() >= 4);
        assert!(phases.0 > 0 && phases.1 > 0, "{phases:?}");
        // Removing everything (found in whichever table) empties it.
        for k in 1..=(1u64 << 16) {
            assert_eq!(t.remove(k), Some(k as u32));
        }
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn reserve_to_finishes_a_growth_in_one_go() {
        let mut t = IdTable::<u32>::with_capacity(64);
        let mut k = 1;
        while !t.growing() {
            t.insert(k, 7);
            k += 1;
        }
        t.reserve_to(1000);
        assert!(!t.growing());
        assert!(t.capacity() >= 1000);
        for j in 1..k {
            assert_eq!(t.get(j), Some(&7));
        }
    }
}
