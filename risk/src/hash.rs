//! A fast hasher for the checker's small integer-keyed tables (accounts, symbols, positions).
//!
//! `std`'s SipHash costs ~15–20 ns per lookup, a large slice of the 100 ns budget for the full
//! check set (one to three of these lookups per order). Keys here are one or two integers (a
//! position is keyed by account and symbol), so the hasher state is the key itself, or the two
//! folded together (rotate and xor), and `finish` does the mixing, in the manner of rustc's
//! FxHasher:
//! fold the high half onto the low half (symbols are 8 ASCII bytes that often differ only in
//! their last ones), multiply by an odd constant, and rotate the well-mixed high bits down to
//! where hashbrown takes the bucket index. The seed is fixed so runs are reproducible; verdicts
//! never depend on iteration order (snapshots sort their output). Order ids live in
//! [`crate::idtable`] instead.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Odd multiplier (2^64 / φ).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;
/// Rotation that brings the best-mixed (high) product bits to the low bits.
const ROTATE_BITS: u32 = 26;

/// See the module docs.
#[derive(Debug, Default, Clone, Copy)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        let x = self.0 ^ (self.0 >> 32);
        x.wrapping_mul(MULTIPLIER).rotate_left(ROTATE_BITS)
    }

    fn write(&mut self, bytes: &[u8]) {
        // Fallback for keys hashed as bytes (not used by the checker's own keys).
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = self.0.rotate_left(32) ^ v;
    }

    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
}

/// A `HashMap` for small integer-keyed tables.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<MixHasher>>;

/// An empty map with room for `capacity` entries.
pub fn id_map<K, V>(capacity: usize) -> IdMap<K, V> {
    HashMap::with_capacity_and_hasher(capacity, BuildHasherDefault::default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn mix_spreads_keys_differing_in_high_bits() {
        let b = BuildHasherDefault::<MixHasher>::default();
        let mut low_bits = std::collections::HashSet::new();
        for i in 0..1024u64 {
            low_bits.insert(b.hash_one(i << 20) & 1023);
        }
        // A good mix puts 1024 keys into well over half of 1024 buckets.
        assert!(low_bits.len() > 600, "{}", low_bits.len());
    }
}
