//! The pre-trade checks as small pure functions over (order, limits, state). Each returns
//! `Ok` (pass) or the rejection [`Reason`]; none has a side effect. [`crate::Checker`] runs them
//! in the order documented in `docs/risk.md` and applies the state effects of an accepted order.

use orders::{Reason, Side};

use crate::config::{Collar, Throttle, TradingState};

/// The live exposure of one (account, symbol) pair, as the position checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PositionView {
    /// Filled position: positive long, negative short.
    pub position: i64,
    /// Quantity of open (accepted, not yet filled or cancelled) buy orders.
    pub open_buy_qty: u64,
    /// Quantity of open sell orders.
    pub open_sell_qty: u64,
}

impl PositionView {
    /// Worst-case long position: every open buy fills.
    pub fn worst_long(&self) -> i128 {
        self.position as i128 + self.open_buy_qty as i128
    }

    /// Worst-case short position (as a signed number ≤ position): every open sell fills.
    pub fn worst_short(&self) -> i128 {
        self.position as i128 - self.open_sell_qty as i128
    }
}

/// Structural validity of a new order: positive quantity and price, a non-zero id, a symbol.
pub fn check_valid_new(
    order_id: u64,
    qty: u64,
    price: i64,
    has_symbol: bool,
) -> Result<(), Reason> {
    if order_id == 0 || qty == 0 || price <= 0 || !has_symbol {
        return Err(Reason::InvalidOrder);
    }
    Ok(())
}

/// Trading state: HALTED rejects, REDUCING lets through only position-reducing orders
/// (see [`check_reduce_only`]), ACTIVE passes.
pub fn check_trading_state(
    state: TradingState,
    side: Side,
    qty: u64,
    pos: &PositionView,
) -> Result<(), Reason> {
    match state {
        TradingState::Active => Ok(()),
        TradingState::Halted => Err(Reason::Halted),
        TradingState::Reducing => check_reduce_only(side, qty, pos),
    }
}

/// Reduce-only: a sell passes only against a long position large enough to absorb it together
/// with the open sells (`position − open_sells − qty ≥ 0`); a buy only against a short position
/// (`position + open_buys + qty ≤ 0`). So even if every open order fills, |position| shrinks and
/// never crosses zero.
pub fn check_reduce_only(side: Side, qty: u64, pos: &PositionView) -> Result<(), Reason> {
    let ok = match side {
        Side::Sell => pos.position > 0 && pos.worst_short() - qty as i128 >= 0,
        Side::Buy => pos.position < 0 && pos.worst_long() + qty as i128 <= 0,
    };
    if ok {
        Ok(())
    } else {
        Err(Reason::ReduceOnly)
    }
}

/// `qty ≤ max_order_qty`.
pub fn check_max_qty(qty: u64, max_order_qty: u64) -> Result<(), Reason> {
    if qty <= max_order_qty {
        Ok(())
    } else {
        Err(Reason::MaxQty)
    }
}

/// `price × qty ≤ max_order_notional` (notional ticks).
pub fn check_max_notional(price: i64, qty: u64, max_notional_ticks: i128) -> Result<(), Reason> {
    if price as i128 * qty as i128 <= max_notional_ticks {
        Ok(())
    } else {
        Err(Reason::MaxNotional)
    }
}

/// `|price − reference| ≤ band`; passes when there is no collar or no reference yet (the first
/// accepted order of a symbol without a configured reference sets it).
pub fn check_collar(
    price: i64,
    reference: Option<i64>,
    collar: Option<Collar>,
) -> Result<(), Reason> {
    match (reference, collar) {
        (Some(r), Some(c)) => {
            if (price as i128 - r as i128).abs() <= c.band_ticks(r) {
                Ok(())
            } else {
                Err(Reason::PriceCollar)
            }
        }
        _ => Ok(()),
    }
}

/// Position limit, worst case: a buy needs `position + open_buys + qty ≤ max_long`, a sell
/// `position − open_sells − qty ≥ −max_short`.
pub fn check_position(
    side: Side,
    qty: u64,
    pos: &PositionView,
    max_long_qty: u64,
    max_short_qty: u64,
) -> Result<(), Reason> {
    let ok = match side {
        Side::Buy => pos.worst_long() + qty as i128 <= max_long_qty as i128,
        Side::Sell => pos.worst_short() - qty as i128 >= -(max_short_qty as i128),
    };
    if ok {
        Ok(())
    } else {
        Err(Reason::PositionLimit)
    }
}

/// Credit: `gross exposure + price × qty ≤ credit_limit`, where gross exposure is the account's
/// open notional (both sides) plus Σ |position| × reference price.
pub fn check_credit(
    gross_exposure_ticks: i128,
    price: i64,
    qty: u64,
    credit_limit_ticks: i128,
) -> Result<(), Reason> {
    if gross_exposure_ticks + price as i128 * qty as i128 <= credit_limit_ticks {
        Ok(())
    } else {
        Err(Reason::CreditLimit)
    }
}

/// Order-rate throttle (GCRA). `tat_ns` is the account's theoretical arrival time. Returns the
/// new `tat_ns` to store if the order is accepted.
pub fn check_throttle(tat_ns: u64, now_ns: u64, throttle: Option<Throttle>) -> Result<u64, Reason> {
    let Some(t) = throttle else {
        return Ok(tat_ns);
    };
    let start = tat_ns.max(now_ns);
    if start - now_ns > t.tolerance_ns {
        return Err(Reason::RateThrottle);
    }
    Ok(start.saturating_add(t.interval_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(position: i64, open_buy_qty: u64, open_sell_qty: u64) -> PositionView {
        PositionView {
            position,
            open_buy_qty,
            open_sell_qty,
        }
    }

    #[test]
    fn max_qty_edges() {
        assert_eq!(check_max_qty(100, 100), Ok(()));
        assert_eq!(check_max_qty(101, 100), Err(Reason::MaxQty));
    }

    #[test]
    fn notional_edges() {
        // 10 × 1.0000 = 10 units = 100_000 notional ticks.
        assert_eq!(check_max_notional(10_000, 10, 100_000), Ok(()));
        assert_eq!(
            check_max_notional(10_001, 10, 100_000),
            Err(Reason::MaxNotional)
        );
        assert_eq!(
            check_max_notional(i64::MAX, u64::MAX, i128::MAX),
            Ok(()),
            "no overflow"
        );
    }

    #[test]
    fn collar_edges_bps_and_ticks() {
        let r = Some(1_000_000); // 100.0000
        let bps = Some(Collar::Bps(500)); // ±5 % = ±50_000 ticks
        assert_eq!(check_collar(1_050_000, r, bps), Ok(()));
        assert_eq!(check_collar(950_000, r, bps), Ok(()));
        assert_eq!(check_collar(1_050_001, r, bps), Err(Reason::PriceCollar));
        assert_eq!(check_collar(949_999, r, bps), Err(Reason::PriceCollar));
        let ticks = Some(Collar::Ticks(100));
        assert_eq!(check_collar(1_000_100, r, ticks), Ok(()));
        assert_eq!(check_collar(1_000_101, r, ticks), Err(Reason::PriceCollar));
        assert_eq!(check_collar(5, None, ticks), Ok(()), "no reference yet");
        assert_eq!(check_collar(5, r, None), Ok(()), "no collar");
    }

    #[test]
    fn position_edges_long_and_short() {
        let p = pos(300, 200, 100);
        assert_eq!(check_position(Side::Buy, 500, &p, 1000, 0), Ok(()));
        assert_eq!(
            check_position(Side::Buy, 501, &p, 1000, 0),
            Err(Reason::PositionLimit)
        );
        // short side: 300 − 100 − qty ≥ −500  ⇔  qty ≤ 700
        assert_eq!(check_position(Side::Sell, 700, &p, 0, 500), Ok(()));
        assert_eq!(
            check_position(Side::Sell, 701, &p, 0, 500),
            Err(Reason::PositionLimit)
        );
    }

    #[test]
    fn credit_edges() {
        assert_eq!(check_credit(900, 10, 10, 1000), Ok(()));
        assert_eq!(check_credit(901, 10, 10, 1000), Err(Reason::CreditLimit));
    }

    #[test]
    fn reduce_only_edges() {
        let long = pos(100, 0, 30);
        assert_eq!(check_reduce_only(Side::Sell, 70, &long), Ok(()));
        assert_eq!(
            check_reduce_only(Side::Sell, 71, &long),
            Err(Reason::ReduceOnly)
        );
        assert_eq!(
            check_reduce_only(Side::Buy, 1, &long),
            Err(Reason::ReduceOnly)
        );
        let short = pos(-100, 40, 0);
        assert_eq!(check_reduce_only(Side::Buy, 60, &short), Ok(()));
        assert_eq!(
            check_reduce_only(Side::Buy, 61, &short),
            Err(Reason::ReduceOnly)
        );
        assert_eq!(
            check_reduce_only(Side::Sell, 1, &short),
            Err(Reason::ReduceOnly)
        );
        assert_eq!(
            check_reduce_only(Side::Sell, 1, &pos(0, 0, 0)),
            Err(Reason::ReduceOnly)
        );
        assert_eq!(
            check_trading_state(TradingState::Halted, Side::Sell, 1, &long),
            Err(Reason::Halted)
        );
        assert_eq!(
            check_trading_state(TradingState::Active, Side::Buy, 1, &long),
            Ok(())
        );
    }

    #[test]
    fn throttle_edges() {
        let t = Some(Throttle::new(10, 2)); // 100 ms interval, 2 back to back
        let tat = check_throttle(0, 1_000_000_000, t).expect("1st");
        let tat = check_throttle(tat, 1_000_000_000, t).expect("2nd (burst)");
        assert_eq!(
            check_throttle(tat, 1_000_000_000, t),
            Err(Reason::RateThrottle)
        );
        // One interval later exactly one more passes.
        assert_eq!(
            check_throttle(tat, 1_099_999_999, t),
            Err(Reason::RateThrottle)
        );
        let tat = check_throttle(tat, 1_100_000_000, t).expect("after one interval");
        assert_eq!(
            check_throttle(tat, 1_100_000_000, t),
            Err(Reason::RateThrottle)
        );
        assert_eq!(check_throttle(7, 0, None), Ok(7));
    }

    #[test]
    fn validity() {
        assert_eq!(check_valid_new(1, 1, 1, true), Ok(()));
        assert_eq!(check_valid_new(0, 1, 1, true), Err(Reason::InvalidOrder));
        assert_eq!(check_valid_new(1, 0, 1, true), Err(Reason::InvalidOrder));
        assert_eq!(check_valid_new(1, 1, 0, true), Err(Reason::InvalidOrder));
        assert_eq!(check_valid_new(1, 1, 1, false), Err(Reason::InvalidOrder));
    }
}
