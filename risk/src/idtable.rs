//! The order-id table: open addressing with Robin Hood linear probing and backward-shift
//! deletion, keyed by non-zero `u64` order ids.
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
//! that differ in low bits and ids that differ only in high bits alike, in one multiply. A locality-keeping mapping
//! (home = id modulo the table size, so that ascending ids fill consecutive slots) was tried
//! and dropped: it is fast while every id is short-lived, but orders that stay open for long
//! (half of them in a `bench gen` file) sit in the slots the ids a table-size later map to, the
//! sliding window of fresh ids piles up behind them, and one removal then shifts a run of
//! hundreds of thousands of entries. With a mixing hash, each access to a large table costs about
//! one cache miss; [`IdTable::touch`] lets a caller start those misses for a whole batch at once
//! (see `Checker::prefetch`).
//!
//! The table holds at most half its slots (load ≤ 50 %); it is allocated at start-up for the
//! configured capacity and doubles (one re-allocation, amortised) if more ids than that must be
//! held.

/// Smallest table, in slots.
const SLOTS_MIN: usize = 16;
/// Key of an empty slot (order id 0 is never stored: it is not a valid new order id).
const EMPTY: u64 = 0;

/// Fibonacci hashing: `2^64 / φ`, odd. The top bits of `id × it` depend on every bit of the id.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct IdTable<V> {
    // Keys apart from values: a probe (most lookups of a new order's id find nothing) reads
    // only the dense key array, 8 keys per cache line.
    keys: Vec<u64>,
    values: Vec<V>,
    mask: usize,
    /// `64 − log2(slots)`: the home slot is the top bits of the product.
    shift: u32,
    len: usize,
}

impl<V: Copy + Default> IdTable<V> {
    /// A table with room for `capacity` ids without re-allocating.
    pub fn with_capacity(capacity: usize) -> Self {
        let slots = capacity
            .saturating_mul(2)
            .max(SLOTS_MIN)
            .checked_next_power_of_two()
            .unwrap_or(1 << (usize::BITS - 1));
        IdTable {
            keys: vec![EMPTY; slots],
            values: vec![V::default(); slots],
            mask: slots - 1,
            shift: 64 - slots.trailing_zeros(),
            len: 0,
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Ids the table holds before it re-allocates.
    pub fn capacity(&self) -> usize {
        self.keys.len() / 2
    }

    /// Grows (re-allocates) so that `capacity` ids fit.
    pub fn reserve_to(&mut self, capacity: usize) {
        if capacity > self.capacity() {
            self.rebuild(capacity);
        }
    }

    fn home(&self, key: u64) -> usize {
        // One multiply: this runs several times per order (lookup, insert, eviction, and
        // once per slot a removal shifts).
        (key.wrapping_mul(FIBONACCI) >> self.shift) as usize
    }

    /// Bytes of the key and value arrays.
    pub fn footprint_bytes(&self) -> usize {
        self.keys.len() * (std::mem::size_of::<u64>() + std::mem::size_of::<V>())
    }

    /// Reads the home slot of `key` (its key, and its value when `with_value`) and returns a
    /// digest of what it read, so that the cache lines are loaded now: independent calls for
    /// many keys overlap their cache misses (memory-level parallelism), and the lookups that
    /// follow find the lines in cache. A hint only.
    pub fn touch(&self, key: u64, with_value: bool) -> u64 {
        let i = self.home(key);
        if with_value {
            std::hint::black_box(self.values[i]);
        }
        self.keys[i]
    }

    /// How far the entry with `key` in slot `i` sits from its home slot.
    fn distance(&self, i: usize, key: u64) -> usize {
        i.wrapping_sub(self.home(key)) & self.mask
    }

    /// The slot holding `key`, if any (a handle for [`IdTable::at_mut`] and
    /// [`IdTable::remove_at`], valid until the table is next changed).
    pub fn find(&self, key: u64) -> Option<usize> {
        if key == EMPTY {
            return None;
        }
        let mut i = self.home(key);
        let mut d = 0;
        loop {
            let k = self.keys[i];
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

    /// The value in slot `i` (from [`IdTable::find`]), mutably.
    pub fn at_mut(&mut self, i: usize) -> &mut V {
        &mut self.values[i]
    }

    /// The value of `key`.
    pub fn get(&self, key: u64) -> Option<&V> {
        self.find(key).map(|i| &self.values[i])
    }

    /// Inserts or replaces, in one pass. `key` must not be 0 (ignored if it is).
    pub fn insert(&mut self, key: u64, value: V) {
        debug_assert_ne!(key, EMPTY, "order id 0 is never stored");
        if key == EMPTY {
            return;
        }
        if (self.len + 1) * 2 > self.keys.len() {
            self.rebuild(self.capacity().saturating_mul(2));
        }
        let (mut cur_key, mut cur_value) = (key, value);
        let mut i = self.home(key);
        let mut d = 0;
        let mut placed = false; // `key` is placed; we carry a displaced entry on
        loop {
            let k = self.keys[i];
            if k == EMPTY {
                self.keys[i] = cur_key;
                self.values[i] = cur_value;
                self.len += 1;
                return;
            }
            if !placed && k == key {
                self.values[i] = value;
                return;
            }
            let kd = self.distance(i, k);
            if kd < d {
                // Robin Hood: `key` is not further on (see `find`). Take the slot of the entry
                // nearer to its home; carry that one on.
                std::mem::swap(&mut self.keys[i], &mut cur_key);
                std::mem::swap(&mut self.values[i], &mut cur_value);
                placed = true;
                d = kd;
            }
            i = (i + 1) & self.mask;
            d += 1;
        }
    }

    /// Removes the entry in slot `i` (from [`IdTable::find`]), shifting the rest of its probe
    /// run back so no tombstone is left.
    pub fn remove_at(&mut self, i: usize) -> V {
        let removed = self.values[i];
        let mut hole = i;
        self.len -= 1;
        loop {
            let j = (hole + 1) & self.mask;
            let k = self.keys[j];
            if k == EMPTY || self.distance(j, k) == 0 {
                break;
            }
            self.keys[hole] = k;
            self.values[hole] = self.values[j];
            hole = j;
        }
        self.keys[hole] = EMPTY;
        removed
    }

    /// Removes `key`.
    #[cfg(test)]
    pub fn remove(&mut self, key: u64) -> Option<V> {
        self.find(key).map(|i| self.remove_at(i))
    }

    /// Every (id, value), in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.keys
            .iter()
            .zip(&self.values)
            .filter(|(k, _)| **k != EMPTY)
            .map(|(k, v)| (*k, v))
    }

    fn rebuild(&mut self, capacity: usize) {
        let mut bigger = IdTable::with_capacity(capacity.max(self.len));
        for (k, v) in self.iter() {
            bigger.insert(k, *v);
        }
        *self = bigger;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

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
                            t.insert(k, v);
                            m.insert(k, v);
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

    /// Slots a lookup of `key` visits.
    fn probes(t: &IdTable<u32>, key: u64) -> usize {
        let mut i = t.home(key);
        let mut d = 0;
        loop {
            let k = t.keys[i];
            if k == key || k == EMPTY || t.distance(i, k) < d {
                return d + 1;
            }
            i = (i + 1) & t.mask;
            d += 1;
        }
    }

    #[test]
    fn sliding_window_with_long_lived_entries_keeps_probe_runs_short() {
        // The duplicate horizon's pattern (insert id n, remove id n − window), with every
        // third id staying (an order left open), as in a generated order file.
        let window = 4096u64;
        let mut t = IdTable::<u32>::with_capacity(window as usize * 4);
        let slots = t.keys.len();
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
        assert_eq!(t.keys.len(), slots, "no growth");
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
        assert_eq!(t.get(0), None);
        assert_eq!(t.remove(0), None);
    }
}
