//! Order ids given to JSON orders that carry no `order_id` (the source design's clients send
//! none), so that every decided order still has a unique id and duplicate detection keeps its
//! meaning. The scheme is documented in `docs/formats/egress.md` (ingress JSON) and
//! `docs/migration.md`.
//!
//! The id space is split by the top two bits:
//!
//! | bits 63, 62 | who gives the id | rest (bits 0..62) |
//! |---|---|---|
//! | `0 x` | the sender (explicit `order_id`, order files, binary frames) | anything |
//! | `1 0` | the engine's PULL ingress ([`engine_assigned_order_id`]) | the order's `input_seq` |
//! | `1 1` | `risk-server`'s JSON path ([`RiskServerIds`]) | a counter started at the server's wall clock in ns |
//!
//! The engine's ids are restart-safe because `input_seq` is: the journal holds every decision
//! with its `input_seq`, and a restarted engine continues at the last journaled one + 1, so an
//! id that was journaled (and so possibly sent downstream) is never given to another order.
//! `risk-server` journals nothing; its counter starts at the wall clock (ns since the Unix
//! epoch) and counts up by one per order, so a restarted server starts above every id the
//! previous run gave as long as that run handled fewer than one JSON order per nanosecond
//! (one REQ round trip per order is microseconds) and the wall clock does not step back.
//!
//! Explicit ids with bit 63 set are refused on both JSON paths ([`is_reserved_order_id`]), so an
//! assigned id can never equal an explicit one.

/// Bit 63: the id was assigned by us, not sent by the client.
pub const ASSIGNED_ORDER_ID_BIT: u64 = 1 << 63;
/// Bit 62 (with bit 63): assigned by `risk-server`'s JSON path rather than by the engine.
pub const RISK_SERVER_ORDER_ID_BIT: u64 = 1 << 62;
/// The bits below the two tag bits.
pub const ASSIGNED_ORDER_ID_VALUE_MASK: u64 = RISK_SERVER_ORDER_ID_BIT - 1;

/// Whether `id` lies in the range reserved for assigned ids (bit 63 set): a JSON order that
/// names such an id explicitly is refused.
#[inline]
pub const fn is_reserved_order_id(id: u64) -> bool {
    id & ASSIGNED_ORDER_ID_BIT != 0
}

/// The id the engine gives a JSON order without `order_id`: `2^63 + input_seq`.
///
/// # Panics
/// If `input_seq` ≥ 2^62 (an engine that took 4.6 × 10^18 orders: impossible state).
#[inline]
pub fn engine_assigned_order_id(input_seq: u64) -> u64 {
    assert!(
        input_seq <= ASSIGNED_ORDER_ID_VALUE_MASK,
        "input_seq {input_seq} outside the assigned order id space"
    );
    ASSIGNED_ORDER_ID_BIT | input_seq
}

/// The `input_seq` an engine-assigned id was made from, or `None` for any other id.
#[inline]
pub const fn input_seq_of_assigned_order_id(id: u64) -> Option<u64> {
    if id & (ASSIGNED_ORDER_ID_BIT | RISK_SERVER_ORDER_ID_BIT) == ASSIGNED_ORDER_ID_BIT {
        Some(id & ASSIGNED_ORDER_ID_VALUE_MASK)
    } else {
        None
    }
}

/// `risk-server`'s ids for JSON orders without `order_id`: `2^63 + 2^62 + n`, `n` counting up
/// from the wall clock (ns since the Unix epoch) when the counter was made.
#[derive(Debug, Clone)]
pub struct RiskServerIds {
    last: u64,
}

impl RiskServerIds {
    /// A counter starting at `start_ns` (the wall clock in ns since the Unix epoch; masked to
    /// 62 bits, which lasts until the year 2116).
    pub fn starting_at(start_ns: u64) -> RiskServerIds {
        RiskServerIds {
            last: start_ns & ASSIGNED_ORDER_ID_VALUE_MASK,
        }
    }

    /// The next id. Never wraps: at the top of the 62-bit space it stays there (a duplicate
    /// then, never a silent reuse of a small id).
    #[inline]
    pub fn next_id(&mut self) -> u64 {
        self.last = self
            .last
            .saturating_add(1)
            .min(ASSIGNED_ORDER_ID_VALUE_MASK);
        ASSIGNED_ORDER_ID_BIT | RISK_SERVER_ORDER_ID_BIT | self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn engine_ids_carry_the_input_seq_and_only_bit_63() {
        assert_eq!(engine_assigned_order_id(0), 1 << 63);
        assert_eq!(engine_assigned_order_id(41), (1 << 63) + 41);
        assert!(is_reserved_order_id(engine_assigned_order_id(41)));
        assert_eq!(
            input_seq_of_assigned_order_id(engine_assigned_order_id(41)),
            Some(41)
        );
        assert_eq!(input_seq_of_assigned_order_id(41), None);
        assert!(!is_reserved_order_id((1 << 63) - 1));
    }

    #[test]
    #[should_panic(expected = "outside the assigned order id space")]
    fn an_input_seq_past_62_bits_is_impossible_state() {
        engine_assigned_order_id(1 << 62);
    }

    #[test]
    fn risk_server_ids_count_up_in_their_own_space_and_never_wrap() {
        let mut ids = RiskServerIds::starting_at(1_000);
        assert_eq!(ids.next_id(), (1 << 63) | (1 << 62) | 1_001);
        assert_eq!(ids.next_id(), (1 << 63) | (1 << 62) | 1_002);
        let mut top = RiskServerIds::starting_at(u64::MAX);
        let a = top.next_id();
        assert_eq!(a, u64::MAX);
        assert_eq!(top.next_id(), a, "saturates, never wraps to small ids");
        assert_eq!(input_seq_of_assigned_order_id(a), None);
    }

    proptest! {
        /// The three spaces never meet: an explicit id (bit 63 clear), an engine id and a
        /// risk-server id are always different.
        #[test]
        fn the_spaces_are_disjoint(explicit in 0u64..(1 << 63), seq in 0u64..(1 << 62), start in any::<u64>()) {
            let e = engine_assigned_order_id(seq);
            let r = RiskServerIds::starting_at(start).next_id();
            prop_assert!(!is_reserved_order_id(explicit));
            prop_assert_ne!(explicit, e);
            prop_assert_ne!(explicit, r);
            prop_assert_ne!(e, r);
            prop_assert_eq!(input_seq_of_assigned_order_id(e), Some(seq));
        }
    }
}
