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
//! rebuilds in one go.
//!
//! # A restore drained behind the inserts
//! A restored risk state holds millions of ids (2.7 M open orders after 20 M generated
//! orders). Building the whole table before the first order wrote 256 MB of fresh pages, so
//! the restart grew with the state. [`IdTableBuilder`] instead keeps the restored ids as a
//! **base**: the entries exactly as they come (ascending [`hash_order`], 32 bytes each, no
//! empty slots), with a directory of where each range of hash prefixes starts, so a lookup
//! reads one directory entry and a bucket of ~1–2 entries. The current table starts at the
//! configured capacity, as in a fresh start. Lookups and removals look in the base too (a
//! removal marks the entry empty, nothing moves); each insert first moves the next
//! [`BASE_DRAIN_PER_INSERT`] base entries into the current table (each one counted as an
//! insert for the growth above, so growth keeps pace). The base is kept in chunks of
//! [`BASE_CHUNK_ENTRIES`], each freed when the drain has passed it (freeing an 86 MB base at
//! once took 6–8 ms inside one insert); once drained, the table is the plain one again. A
//! base of more than one chunk gets its chunks from a thread of its own
//! ([`CHUNK_MAKER_THREAD`]), which allocates them and writes their pages ahead of the
//! builder, so that the page faults are taken on another core while the ids are decoded. So the restore writes the base once (the size of
//! the snapshot's entries, a third of the table's) and the rest of the work is spread over the
//! first inserts, a few slot moves each.

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
/// Restored (base) entries moved into the current table per insert, at most: a base of `n`
/// ids is drained within `n / 2` inserts.
pub const BASE_DRAIN_PER_INSERT: usize = 2;
/// Base slots looked at per insert, at most (removed entries are skipped, not moved): the
/// bound on one insert's drain work when many restored ids were removed in a row.
pub const BASE_DRAIN_SCAN_PER_INSERT: usize = 16;
/// Directory buckets of a base per entry, at least (a power of two, so ~1–2 entries a bucket).
const BASE_ENTRIES_PER_BUCKET: usize = 2;
/// `log2` of the entries in one chunk of a base: 8,192 entries of 32 bytes, 256 KiB, freed
/// when the drain has passed them.
const BASE_CHUNK_SHIFT: u32 = 13;
/// Entries in one chunk of a base.
pub const BASE_CHUNK_ENTRIES: usize = 1 << BASE_CHUNK_SHIFT;

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
    level: Level,
    i: usize,
}

/// Which of an [`IdTable`]'s arrays holds an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// The current table.
    Cur,
    /// The old table (a growth is migrating).
    Old,
    /// The restored entries not yet drained (module docs).
    Base,
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

/// Restored entries in ascending [`hash_order`] (module docs, "A restore drained behind the
/// inserts"), in chunks of [`BASE_CHUNK_ENTRIES`]. A removed entry keeps its place with the key
/// [`EMPTY`]; entries before the drain's cursor are never read again, and a chunk the cursor
/// has passed is freed then, so that no insert frees the whole base at once (86 MB took
/// 6–8 ms to unmap here).
#[derive(Debug, Clone)]
struct Base<V> {
    /// Every chunk holds [`BASE_CHUNK_ENTRIES`] entries but the last; a passed one is empty.
    chunks: Vec<Box<[Slot<V>]>>,
    /// Entries written.
    n: usize,
    /// `dir[b]..dir[b + 1]`: the entries whose hash's top bits are `b`.
    dir: Vec<u32>,
    /// `64 − log2(buckets)`.
    shift: u32,
    /// Entries not removed or drained.
    len: usize,
    /// Next entry to drain: the entries before it are passed (drained or removed; not read
    /// again), and their chunks freed.
    cursor: usize,
}

impl<V> Base<V> {
    #[inline]
    fn bucket(&self, key: u64) -> usize {
        (hash_order(key) >> self.shift) as usize
    }

    #[inline]
    fn slot(&self, i: usize) -> &Slot<V> {
        &self.chunks[i >> BASE_CHUNK_SHIFT][i & (BASE_CHUNK_ENTRIES - 1)]
    }

    #[inline]
    fn slot_mut(&mut self, i: usize) -> &mut Slot<V> {
        &mut self.chunks[i >> BASE_CHUNK_SHIFT][i & (BASE_CHUNK_ENTRIES - 1)]
    }

    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let b = self.bucket(key);
        // Entries before the cursor are empty (and their chunk may be gone).
        let from = (self.dir[b] as usize).max(self.cursor);
        let to = self.dir[b + 1] as usize;
        (from..to).find(|&i| self.slot(i).key == key)
    }

    fn remove_at(&mut self, i: usize) -> &V {
        debug_assert!(i >= self.cursor);
        let s = self.slot_mut(i);
        debug_assert_ne!(s.key, EMPTY);
        s.key = EMPTY;
        self.len -= 1;
        &self.slot(i).value
    }

    /// Entries the chunks still hold (empty ones included): every chunk before the cursor's
    /// is freed, the cursor's and those after it are whole (the last one short). O(1): a
    /// batch's prefetch asks for the table's footprint.
    fn held(&self) -> usize {
        let held = self.n - (self.cursor & !(BASE_CHUNK_ENTRIES - 1));
        debug_assert_eq!(held, self.chunks.iter().map(|c| c.len()).sum::<usize>());
        held
    }

    /// The entries not yet passed by the drain (empty ones included).
    fn live_slots(&self) -> impl Iterator<Item = &Slot<V>> + '_ {
        (self.cursor..self.n).map(move |i| self.slot(i))
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
    /// Restored entries being drained into `cur` (module docs).
    base: Option<Box<Base<V>>>,
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
            base: None,
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.cur.len
            + self.old.as_ref().map_or(0, |t| t.len)
            + self.base.as_ref().map_or(0, |b| b.len)
    }

    /// Restored ids not yet drained into the current table (module docs).
    #[cfg(test)]
    pub fn base_len(&self) -> usize {
        self.base.as_ref().map_or(0, |b| b.len)
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
                base: None,
            };
        }
    }

    /// Bytes of the slot arrays (both tables while migrating, and the base's entries).
    pub fn footprint_bytes(&self) -> usize {
        let old = self.old.as_ref().map_or(0, |t| t.slots.len());
        let base = self.base.as_ref().map_or(0, |b| b.held());
        (self.cur.slots.len() + old + base) * slot_bytes::<V>()
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
        if let Some(b) = &self.base {
            let at = (b.dir[b.bucket(key)] as usize).max(b.cursor);
            if b.len > 0 && at < b.n {
                acc ^= b.slot(at).key;
            }
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
            return Some(SlotRef {
                level: Level::Cur,
                i,
            });
        }
        if self.old.is_none() && self.base.is_none() {
            // The usual case (no growth, no restored ids left): a miss costs no call.
            return None;
        }
        self.find_cold(key)
    }

    /// [`IdTable::find`] past the current table: the old table and the base.
    #[cold]
    #[inline(never)]
    fn find_cold(&self, key: u64) -> Option<SlotRef> {
        if let Some(i) = self.old.as_ref().and_then(|t| t.find(key)) {
            return Some(SlotRef {
                level: Level::Old,
                i,
            });
        }
        let i = self.base.as_ref()?.find(key)?;
        Some(SlotRef {
            level: Level::Base,
            i,
        })
    }

    /// The slot `r` names (from [`IdTable::find`], so its level exists).
    #[inline]
    fn slot(&self, r: SlotRef) -> &Slot<V> {
        match (r.level, &self.old, &self.base) {
            (Level::Old, Some(t), _) => &t.slots[r.i],
            (Level::Base, _, Some(b)) => b.slot(r.i),
            _ => &self.cur.slots[r.i],
        }
    }

    /// The value in slot `r` (from [`IdTable::find`]).
    #[inline]
    pub fn at(&self, r: SlotRef) -> &V {
        &self.slot(r).value
    }

    /// The value in slot `r` (from [`IdTable::find`]), mutably. A base entry is changed where
    /// it is.
    #[inline]
    pub fn at_mut(&mut self, r: SlotRef) -> &mut V {
        match (r.level, &mut self.old, &mut self.base) {
            (Level::Old, Some(t), _) => &mut t.slots[r.i].value,
            (Level::Base, _, Some(b)) => &mut b.slot_mut(r.i).value,
            _ => &mut self.cur.slots[r.i].value,
        }
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
        if self.base.is_some() {
            self.drain_step();
        }
        self.grow_step();
        let mut moved = match &mut self.old {
            Some(old) => old.find(key).map(|i| old.remove_at(i)),
            None => None,
        };
        if let Some(b) = &mut self.base {
            if let Some(i) = b.find(key) {
                debug_assert!(moved.is_none(), "a key lives in one table");
                moved = Some(*b.remove_at(i));
            }
        }
        let replaced = self.cur.insert(key, value);
        debug_assert!(
            moved.is_none() || replaced.is_none(),
            "a key lives in one table"
        );
        replaced.or(moved)
    }

    /// Removes the entry in slot `r` (from [`IdTable::find`]), shifting the rest of its probe
    /// run back so no tombstone is left (a base entry is marked empty where it is).
    pub fn remove_at(&mut self, r: SlotRef) -> V {
        match (r.level, &mut self.old, &mut self.base) {
            (Level::Old, Some(t), _) => t.remove_at(r.i),
            (Level::Base, _, Some(b)) => *b.remove_at(r.i),
            _ => self.cur.remove_at(r.i),
        }
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: u64) -> Option<V> {
        self.find(key).map(|r| self.remove_at(r))
    }

    /// Every (id, value): the current table's in slot order, then the old one's, then the
    /// base's.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + '_ {
        self.cur
            .slots
            .iter()
            .chain(self.old.iter().flat_map(|t| t.slots.iter()))
            .chain(self.base.iter().flat_map(|b| b.live_slots()))
            .filter(|s| s.key != EMPTY)
            .map(|s| (s.key, &s.value))
    }

    /// Moves up to [`BASE_DRAIN_PER_INSERT`] base entries into the current table, looking at
    /// no more than [`BASE_DRAIN_SCAN_PER_INSERT`] base slots, and frees each chunk it passes
    /// (one chunk per call once every entry left was removed); drops the base at its end.
    /// Each entry moved is an insert for the growth ([`IdTable::grow_step`] runs before it),
    /// so the current table stays at load ≤ 50 % and a growth under way finishes in time.
    fn drain_step(&mut self) {
        let Some(b) = &mut self.base else {
            return;
        };
        if b.len == 0 {
            // Nothing left to move (the rest was removed): free one chunk per insert.
            let c = b.cursor >> BASE_CHUNK_SHIFT;
            if let Some(chunk) = b.chunks.get_mut(c) {
                *chunk = Box::default();
            }
            b.cursor = ((c + 1) << BASE_CHUNK_SHIFT).min(b.n);
            if b.cursor == b.n {
                self.base = None;
            }
            return;
        }
        let mut moved = 0;
        for _ in 0..BASE_DRAIN_SCAN_PER_INSERT {
            let Some(b) = &mut self.base else {
                return;
            };
            // `len > 0`: a live entry lies at or after the cursor.
            let i = b.cursor;
            let s = *b.slot(i);
            b.cursor += 1;
            if s.key != EMPTY {
                // Passed by the cursor: no longer in the base (its slot is not read again).
                b.len -= 1;
            }
            if b.cursor & (BASE_CHUNK_ENTRIES - 1) == 0 || b.cursor == b.n {
                // The drain has passed this chunk.
                b.chunks[i >> BASE_CHUNK_SHIFT] = Box::default();
            }
            if b.cursor == b.n {
                debug_assert_eq!(b.len, 0);
                self.base = None;
            }
            if s.key == EMPTY {
                continue;
            }
            self.grow_step();
            self.cur.insert(s.key, s.value);
            moved += 1;
            if moved == BASE_DRAIN_PER_INSERT {
                break;
            }
        }
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

/// Builds an [`IdTable`] holding ids given in strictly ascending [`hash_order`] (a restored
/// risk state, `checker_state.rs`) as its base (module docs, "A restore drained behind the
/// inserts"): the entries are written once, front to back, with no empty slots, and the
/// directory as they come. The current table is made at the capacity given, as
/// [`IdTable::with_capacity`] makes it.
#[derive(Debug)]
pub struct IdTableBuilder<V> {
    capacity: usize,
    base: Base<V>,
    /// The chunk being filled.
    chunk: Vec<Slot<V>>,
    prev: Option<u64>,
    /// Entries announced ([`IdTableBuilder::new`]); no more are taken.
    count: usize,
    /// Chunks with their pages already written, from [`CHUNK_MAKER_THREAD`] (a base of more
    /// than one chunk); `None`: the chunks are allocated here.
    made: Option<std::sync::mpsc::Receiver<Vec<Slot<V>>>>,
}

/// Name of the thread that makes a large base's chunks ahead of [`IdTableBuilder::push`]: it
/// allocates each one and writes every page of it, so that the page faults of the base (86 MB
/// for 2.7 M ids, ~21,000 faults: a fifth of a restore's decoding thread) are taken on another
/// core while the ids are decoded, instead of one at a time inside the decoding.
pub const CHUNK_MAKER_THREAD: &str = "risk-base-pages";
/// Chunks the maker may be ahead of the builder, at most (2 MiB).
const CHUNKS_MADE_AHEAD: usize = 8;

impl<V: Copy + Default + Send + 'static> IdTableBuilder<V> {
    /// A builder of a table with room for `capacity` ids at load ≤ 50 % in its current table,
    /// holding the `count` ids to be pushed as its base. `None` if `count` is above
    /// `u32::MAX` (the directory's index).
    pub fn new(capacity: usize, count: usize) -> Option<Self> {
        if u32::try_from(count).is_err() {
            return None;
        }
        let buckets = (count / BASE_ENTRIES_PER_BUCKET)
            .max(SLOTS_MIN)
            .checked_next_power_of_two()?;
        let mut dir = Vec::with_capacity(buckets + 1);
        dir.push(0);
        Some(IdTableBuilder {
            capacity,
            base: Base {
                chunks: Vec::with_capacity(count.div_ceil(BASE_CHUNK_ENTRIES)),
                n: 0,
                dir,
                shift: 64 - buckets.trailing_zeros(),
                len: 0,
                cursor: 0,
            },
            chunk: Vec::new(),
            prev: None,
            count,
            made: (count > BASE_CHUNK_ENTRIES)
                .then(|| Self::chunk_maker(count))
                .flatten(),
        })
    }

    /// Starts the thread that makes the chunks of a base of `count` entries
    /// ([`CHUNK_MAKER_THREAD`]); `None` if it cannot be started (the chunks are then
    /// allocated by [`IdTableBuilder::push`]). The thread ends when every chunk is made or
    /// when the builder is gone.
    fn chunk_maker(count: usize) -> Option<std::sync::mpsc::Receiver<Vec<Slot<V>>>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(CHUNKS_MADE_AHEAD);
        std::thread::Builder::new()
            .name(CHUNK_MAKER_THREAD.to_owned())
            .spawn(move || {
                let mut left = count;
                while left > 0 {
                    let k = left.min(BASE_CHUNK_ENTRIES);
                    left -= k;
                    // Written, then emptied: the pages stay, the length is 0.
                    let mut chunk = Vec::with_capacity(k);
                    chunk.resize(k, Slot::default());
                    chunk.clear();
                    if tx.send(chunk).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(rx)
    }

    /// Adds `key` (non-zero, after every key added so far in [`hash_order`], and no more keys
    /// than announced); `false`, adding nothing, if it is not. Inlined: a restore calls it
    /// for each of millions of ids, and a call that spilled its registers was a tenth of the
    /// restore's decoding thread; a new chunk is made out of line.
    #[inline]
    pub fn push(&mut self, key: u64, value: V) -> bool {
        let h = hash_order(key);
        if key == EMPTY || self.prev.is_some_and(|p| h <= p) || self.base.n == self.count {
            return false;
        }
        self.prev = Some(h);
        let b = &mut self.base;
        // Buckets up to this key's start here (`dir[j]` is where bucket `j` starts; bucket
        // `j`'s end is `dir[j + 1]`).
        let bucket = (h >> b.shift) as usize;
        if b.dir.len() <= bucket {
            let at = b.n as u32; // < count ≤ u32::MAX
            b.dir.resize(bucket + 1, at);
        }
        if self.chunk.len() == self.chunk.capacity() {
            self.next_chunk();
        }
        self.chunk.push(Slot { key, value });
        self.base.n += 1;
        self.base.len += 1;
        true
    }

    /// Puts the full chunk (if any) into the base and starts the next one.
    #[cold]
    #[inline(never)]
    fn next_chunk(&mut self) {
        let full = std::mem::take(&mut self.chunk);
        if !full.is_empty() {
            self.base.chunks.push(full.into_boxed_slice());
        }
        let k = BASE_CHUNK_ENTRIES.min(self.count - self.base.n);
        self.chunk = match self.made.as_ref().map(|rx| rx.recv()) {
            Some(Ok(chunk)) if chunk.capacity() == k => chunk,
            _ => Vec::with_capacity(k),
        };
    }

    /// The table: the directory closed, the current table made.
    pub fn finish(mut self) -> IdTable<V> {
        if !self.chunk.is_empty() {
            self.base
                .chunks
                .push(std::mem::take(&mut self.chunk).into_boxed_slice());
        }
        let buckets = 1usize << (64 - self.base.shift);
        let end = self.base.n as u32;
        self.base.dir.resize(buckets + 1, end);
        let mut t = IdTable::with_capacity(self.capacity);
        if self.base.len > 0 {
            t.base = Some(Box::new(self.base));
        }
        t
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

    /// Distinct non-zero keys in ascending hash order.
    fn hash_sorted(mut keys: Vec<u64>) -> Vec<u64> {
        keys.retain(|&k| k != 0);
        keys.sort_by_key(|&k| hash_order(k));
        keys.dedup();
        keys
    }

    /// The ids `1 × step, 2 × step, …, n × step` (wrapping), hash-sorted: `n` ids spread over
    /// the key space (`step` odd).
    fn spread_ids(n: u64, step: u64) -> Vec<u64> {
        hash_sorted((1..=n).map(|i| i.wrapping_mul(step)).collect())
    }

    /// A table of capacity `cap` built with `keys` (hash-sorted) as its base, `value(k)` each;
    /// every push must be taken.
    fn built<V: Copy + Default + Send + 'static>(
        cap: usize,
        keys: &[u64],
        value: impl Fn(u64) -> V,
    ) -> IdTable<V> {
        let mut b = IdTableBuilder::new(cap, keys.len()).unwrap();
        for &k in keys {
            assert!(b.push(k, value(k)));
        }
        b.finish()
    }

    /// A table built from hash-ordered ids holds them all as its base (its current table is
    /// the configured one, empty); the builder refuses out-of-order, repeated and zero keys
    /// and more keys than announced.
    #[test]
    fn a_built_table_holds_its_ids_as_a_base() {
        for (cap, count) in [(16usize, 12u64), (3_000, 3_000), (64, 50), (16, 5_000)] {
            let all = spread_ids(count, 0x2545_F491);
            let mut b = IdTableBuilder::new(cap, all.len()).unwrap();
            for &k in &all {
                assert!(b.push(k, k ^ 5));
            }
            assert!(!b.push(all[0] ^ 1, 0), "more than announced");
            let built = b.finish();
            assert_eq!(built.len(), all.len());
            assert_eq!(built.base_len(), all.len());
            assert_eq!(built.slots(), IdTable::<u64>::with_capacity(cap).slots());
            for &k in &all {
                assert_eq!(built.get(k), Some(&(k ^ 5)), "capacity {cap}");
            }
            let mut got: Vec<(u64, u64)> = built.iter().map(|(k, v)| (k, *v)).collect();
            got.sort_unstable();
            let mut want: Vec<(u64, u64)> = all.iter().map(|&k| (k, k ^ 5)).collect();
            want.sort_unstable();
            assert_eq!(got, want);
            assert_eq!(built.get(0), None);
        }
        let mut b: IdTableBuilder<u32> = IdTableBuilder::new(16, 4).unwrap();
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
        assert!(IdTableBuilder::<u32>::new(16, 0)
            .unwrap()
            .finish()
            .base
            .is_none());
    }

    /// Inserts drain the base, at most `BASE_DRAIN_PER_INSERT` entries each and looking at
    /// no more than `BASE_DRAIN_SCAN_PER_INSERT` slots, while the current table grows to hold
    /// them at load ≤ 50 %; the base is freed once drained and every id stays findable.
    #[test]
    fn inserts_drain_the_base_with_bounded_work() {
        let restored = spread_ids(20_000, 0x9E37_79B9);
        let mut t = built(64, &restored, |k| k as u32);
        // Remove a run of restored ids at the front: the drain skips them, a bounded number
        // of slots per insert.
        for &k in &restored[..500] {
            assert_eq!(t.remove(k), Some(k as u32));
        }
        let mut inserts = 0u64;
        while t.base.is_some() {
            let before = t.base_len();
            let cursor = t.base.as_ref().map_or(0, |b| b.cursor);
            let k = (1u64 << 40) + inserts;
            assert_eq!(t.insert(k, 9), None);
            inserts += 1;
            let (after, cursor_after) = t
                .base
                .as_ref()
                .map_or((0, usize::MAX), |b| (b.len, b.cursor));
            assert!(
                before - after <= BASE_DRAIN_PER_INSERT,
                "moved {}",
                before - after
            );
            if let Some(b) = &t.base {
                assert!(cursor_after - cursor <= BASE_DRAIN_SCAN_PER_INSERT);
                // The chunks the drain has passed are freed as it passes them.
                let passed = cursor_after >> BASE_CHUNK_SHIFT;
                assert!(b.chunks[..passed].iter().all(|c| c.is_empty()));
                assert!(b.chunks[passed..].iter().all(|c| !c.is_empty()));
                assert_eq!(b.held(), b.chunks.iter().map(|c| c.len()).sum::<usize>());
            }
            assert!(t.cur.len * 100 <= t.cur.slots.len() * LOAD_MAX_PERCENT);
            assert!(inserts < 20_000, "the base never drains");
        }
        assert!(t.grows() >= 4, "the current table grew to hold the base");
        assert_eq!(t.len(), restored.len() - 500 + inserts as usize);
        for &k in &restored[500..] {
            assert_eq!(t.get(k), Some(&(k as u32)));
        }
        for &k in &restored[..500] {
            assert_eq!(t.get(k), None);
        }
    }

    /// A base of more than one chunk takes its chunks from the maker thread, each of the size
    /// the builder needs (the last one short), and holds every id; a small one allocates its
    /// own. A builder dropped half-way leaves the maker to end on its own.
    #[test]
    fn a_large_base_takes_its_chunks_from_the_maker() {
        let count = 3 * BASE_CHUNK_ENTRIES + 5;
        let keys = spread_ids(count as u64, 0x2545_F491);
        let mut b = IdTableBuilder::new(64, keys.len()).unwrap();
        assert!(b.made.is_some(), "a maker for {count} ids");
        for &k in &keys {
            assert!(b.push(k, k as u32));
        }
        let t = b.finish();
        let sizes: Vec<usize> = t
            .base
            .as_ref()
            .unwrap()
            .chunks
            .iter()
            .map(|c| c.len())
            .collect();
        assert_eq!(
            sizes,
            [
                BASE_CHUNK_ENTRIES,
                BASE_CHUNK_ENTRIES,
                BASE_CHUNK_ENTRIES,
                5
            ]
        );
        for &k in &keys {
            assert_eq!(t.get(k), Some(&(k as u32)));
        }
        assert!(IdTableBuilder::<u32>::new(64, BASE_CHUNK_ENTRIES)
            .unwrap()
            .made
            .is_none());
        let mut half = IdTableBuilder::new(64, keys.len()).unwrap();
        for &k in &keys[..BASE_CHUNK_ENTRIES + 1] {
            assert!(half.push(k, 0u32));
        }
        drop(half);
    }

    /// A base whose ids were all removed is freed one chunk per insert, never all at once.
    #[test]
    fn a_removed_base_is_freed_a_chunk_per_insert() {
        let restored = spread_ids(50_000, 0x9E37_79B9);
        let mut t = built(64, &restored, |_| 1u8);
        let chunks = restored.len().div_ceil(BASE_CHUNK_ENTRIES);
        assert_eq!(t.base.as_ref().unwrap().chunks.len(), chunks);
        for &k in &restored {
            assert_eq!(t.remove(k), Some(1));
        }
        assert_eq!(t.len(), 0);
        let mut inserts = 0;
        while let Some(b) = &t.base {
            let live = b.chunks.iter().filter(|c| !c.is_empty()).count();
            t.insert((1 << 50) + inserts, 2);
            inserts += 1;
            let after = t
                .base
                .as_ref()
                .map_or(0, |b| b.chunks.iter().filter(|c| !c.is_empty()).count());
            assert!(
                live - after <= 1,
                "freed {} chunks in one insert",
                live - after
            );
            if let Some(b) = &t.base {
                assert_eq!(b.held(), b.chunks.iter().map(|c| c.len()).sum::<usize>());
            }
        }
        assert_eq!(inserts as usize, chunks);
        assert_eq!(t.len(), chunks);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u32),
        Remove(u64),
        Get(u64),
        Change(u64, u32),
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
            (key(), any::<u32>()).prop_map(|(k, v)| Op::Change(k, v)),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(
            ops in prop::collection::vec(op(), 0..400),
            cap in 0usize..40,
            restored in prop::collection::vec(key(), 0..120),
        ) {
            // Restored ids (the base, drained behind the inserts) and then the operations.
            let restored = hash_sorted(restored);
            let mut t = built(cap, &restored, |k| (k >> 3) as u32);
            let mut m: HashMap<u64, u32> = restored.iter().map(|&k| (k, (k >> 3) as u32)).collect();
            prop_assert_eq!(t.len(), m.len());
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        if k != 0 {
                            prop_assert_eq!(t.insert(k, v), m.insert(k, v));
                        }
                    }
                    Op::Remove(k) => prop_assert_eq!(t.remove(k), m.remove(&k)),
                    Op::Get(k) => prop_assert_eq!(t.get(k), m.get(&k)),
                    Op::Change(k, v) => {
                        if let Some(r) = t.find(k) {
                            *t.at_mut(r) = v;
                            prop_assert_eq!(t.at(r), &v);
                        }
                        if let Some(e) = m.get_mut(&k) {
                            *e = v;
                        }
                    }
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
        // A restored base is moved in by the rebuild too.
        let restored = hash_sorted((1..=300u64).map(|i| i << 24).collect());
        let mut t = built(16, &restored, |_| 3u32);
        t.reserve_to(2000);
        assert!(t.base.is_none());
        assert_eq!(t.len(), restored.len());
        for &k in &restored {
            assert_eq!(t.get(k), Some(&3));
        }
    }
}
