#![allow(clippy::unwrap_used)]
//! Checker tests: every check at its edges through the full checker, overrides, policies,
//! state effects, reload, recovery, and property tests over random event streams.

use super::*;
use proptest::prelude::*;

const BASE: &str = r#"
[global]
duplicate_horizon_orders = 1000
[capacity]
max_open_orders = 1024
max_positions = 64
max_accounts = 8
max_symbols = 8
[defaults]
max_order_qty = 1000
max_order_notional = 50000
max_long_qty = 2000
max_short_qty = 1500
credit_limit_notional = 200000
collar_bps = 500
[symbols.AAPL]
reference_price = 100.0
[symbols.LOW]
reference_price = 10.0
"#;

fn limits(extra: &str) -> Limits {
    Limits::from_toml_str(&format!("{BASE}\n{extra}"), "test").unwrap()
}

fn sym(s: &str) -> Symbol {
    Symbol::new(s).unwrap()
}

fn px(units: f64) -> i64 {
    // Display writes the shortest decimal that reads back as `units`: the literal in the test.
    orders::parse_price_ticks(&units.to_string()).unwrap()
}

fn ev(
    kind: OrderKind,
    id: u64,
    account: u32,
    symbol: &str,
    side: Side,
    qty: u64,
    price: i64,
) -> Order {
    Order {
        order_id: id,
        ts_ns: 0,
        price,
        qty,
        account,
        symbol: sym(symbol),
        side,
        kind,
    }
}

fn buy(id: u64, account: u32, symbol: &str, qty: u64, price: i64) -> Order {
    ev(OrderKind::New, id, account, symbol, Side::Buy, qty, price)
}

fn sell(id: u64, account: u32, symbol: &str, qty: u64, price: i64) -> Order {
    ev(OrderKind::New, id, account, symbol, Side::Sell, qty, price)
}

fn cancel(id: u64, qty: u64) -> Order {
    ev(OrderKind::Cancel, id, 0, "X", Side::Buy, qty, 0)
}

fn fill(id: u64, symbol: &str, qty: u64, price: i64) -> Order {
    ev(OrderKind::Fill, id, 0, symbol, Side::Buy, qty, price)
}

/// Checks `o` and asserts the verdict; a rejection must leave the state unchanged.
#[track_caller]
fn expect(c: &mut Checker, o: Order, now: u64, want: Reason) {
    let before = c.snapshot();
    let got = c.check(&o, now);
    assert_eq!(got, want, "{o:?}");
    if !got.is_accepted() {
        assert_eq!(c.snapshot(), before, "a rejection changed state: {o:?}");
    }
    c.verify_consistency().unwrap();
}

#[test]
fn max_qty_at_the_edge_with_account_and_symbol_overrides() {
    let mut c = Checker::new(limits(
        "[accounts.7]\nmax_order_qty = 10\n[symbols.MSFT]\nmax_order_qty = 5\n",
    ));
    let p = px(10.0);
    expect(&mut c, buy(1, 1, "LOW", 1000, p), 0, Reason::Accepted);
    expect(&mut c, buy(2, 1, "LOW", 1001, p), 0, Reason::MaxQty);
    expect(&mut c, buy(3, 7, "LOW", 10, p), 0, Reason::Accepted);
    expect(&mut c, buy(4, 7, "LOW", 11, p), 0, Reason::MaxQty);
    expect(&mut c, buy(5, 7, "MSFT", 5, p), 0, Reason::Accepted);
    expect(&mut c, buy(6, 7, "MSFT", 6, p), 0, Reason::MaxQty);
    expect(&mut c, buy(7, 1, "MSFT", 5, p), 0, Reason::Accepted);
    expect(&mut c, buy(8, 1, "MSFT", 6, p), 0, Reason::MaxQty);
}

#[test]
fn max_notional_at_the_edge() {
    let mut c = Checker::new(limits("[accounts.2]\nmax_order_notional = 1000.5\n"));
    // 500 × 100.0 = 50 000 units: exactly the default limit.
    expect(
        &mut c,
        buy(1, 1, "AAPL", 500, px(100.0)),
        0,
        Reason::Accepted,
    );
    expect(
        &mut c,
        buy(2, 1, "AAPL", 501, px(100.0)),
        0,
        Reason::MaxNotional,
    );
    // 10 × 100.05 = 1000.5 units.
    expect(
        &mut c,
        buy(3, 2, "AAPL", 10, px(100.05)),
        0,
        Reason::Accepted,
    );
    expect(
        &mut c,
        buy(4, 2, "AAPL", 10, px(100.0501)),
        0,
        Reason::MaxNotional,
    );
}

#[test]
fn collar_at_the_edge_and_reference_from_first_order() {
    let mut c = Checker::new(limits(
        "[symbols.TCK]\nreference_price = 1.0\ncollar_ticks = 100\n",
    ));
    expect(&mut c, buy(1, 1, "AAPL", 1, px(105.0)), 0, Reason::Accepted);
    expect(
        &mut c,
        buy(2, 1, "AAPL", 1, px(105.0001)),
        0,
        Reason::PriceCollar,
    );
    expect(&mut c, sell(3, 1, "AAPL", 1, px(95.0)), 0, Reason::Accepted);
    expect(
        &mut c,
        sell(4, 1, "AAPL", 1, px(94.9999)),
        0,
        Reason::PriceCollar,
    );
    expect(&mut c, buy(5, 1, "TCK", 1, 10_100), 0, Reason::Accepted);
    expect(&mut c, buy(6, 1, "TCK", 1, 10_101), 0, Reason::PriceCollar);
    // An unknown symbol: the first accepted order sets the reference.
    assert_eq!(c.reference_price(sym("NEW")), None);
    expect(&mut c, buy(7, 1, "NEW", 1, px(50.0)), 0, Reason::Accepted);
    assert_eq!(c.reference_price(sym("NEW")), Some(px(50.0)));
    expect(&mut c, buy(8, 1, "NEW", 1, px(52.5)), 0, Reason::Accepted);
    expect(
        &mut c,
        buy(9, 1, "NEW", 1, px(52.5001)),
        0,
        Reason::PriceCollar,
    );
    // A fill moves the reference.
    expect(&mut c, fill(0, "NEW", 10, px(60.0)), 0, Reason::Accepted);
    expect(&mut c, buy(10, 1, "NEW", 1, px(63.0)), 0, Reason::Accepted);
    expect(
        &mut c,
        buy(11, 1, "NEW", 1, px(52.5)),
        0,
        Reason::PriceCollar,
    );
}

#[test]
fn position_limit_long_and_short_count_open_orders() {
    let mut c = Checker::new(limits(
        "[symbols.LOW2]\nreference_price = 10.0\nmax_long_qty = 100\n",
    ));
    let p = px(10.0);
    expect(&mut c, buy(1, 1, "LOW", 1000, p), 0, Reason::Accepted);
    expect(&mut c, buy(2, 1, "LOW", 1000, p), 0, Reason::Accepted);
    expect(&mut c, buy(3, 1, "LOW", 1, p), 0, Reason::PositionLimit);
    expect(&mut c, sell(4, 1, "LOW", 1000, p), 0, Reason::Accepted);
    expect(&mut c, sell(5, 1, "LOW", 500, p), 0, Reason::Accepted);
    expect(&mut c, sell(6, 1, "LOW", 1, p), 0, Reason::PositionLimit);
    // A fill of a buy moves open exposure into the position: the long side is unchanged.
    expect(&mut c, fill(1, "LOW", 1000, p), 0, Reason::Accepted);
    assert_eq!(
        c.position(1, sym("LOW")),
        PositionView {
            position: 1000,
            open_buy_qty: 1000,
            open_sell_qty: 1500
        }
    );
    expect(&mut c, buy(7, 1, "LOW", 1, p), 0, Reason::PositionLimit);
    // The short side gains room: 1000 − 1500 − qty ≥ −1500 ⇔ qty ≤ 1000.
    expect(&mut c, sell(8, 1, "LOW", 1000, p), 0, Reason::Accepted);
    expect(&mut c, sell(9, 1, "LOW", 1, p), 0, Reason::PositionLimit);
    // Per-symbol override.
    expect(&mut c, buy(10, 2, "LOW2", 100, p), 0, Reason::Accepted);
    expect(&mut c, buy(11, 2, "LOW2", 1, p), 0, Reason::PositionLimit);
}

#[test]
fn credit_limit_counts_open_notional_and_positions() {
    let mut c = Checker::new(limits("[accounts.9]\ncredit_limit_notional = 1000\n"));
    let p = px(10.0);
    expect(&mut c, buy(1, 9, "LOW", 100, p), 0, Reason::Accepted); // 1000 units: at the limit
    expect(&mut c, sell(2, 9, "LOW", 1, p), 0, Reason::CreditLimit);
    expect(&mut c, cancel(1, 50), 0, Reason::Accepted);
    assert_eq!(c.gross_exposure_ticks(9), 500 * 10_000);
    expect(&mut c, buy(3, 9, "LOW", 50, p), 0, Reason::Accepted);
    expect(&mut c, buy(4, 9, "LOW", 1, p), 0, Reason::CreditLimit);
    // Filled at 10: the position is valued at the new reference (10) → same exposure.
    expect(&mut c, fill(1, "LOW", 50, p), 0, Reason::Accepted);
    assert_eq!(c.gross_exposure_ticks(9), 1000 * 10_000);
    // The market moves the reference down (a trade not ours): the position is worth less.
    expect(&mut c, fill(0, "LOW", 5, px(9.0)), 0, Reason::Accepted);
    assert_eq!(c.gross_exposure_ticks(9), (500 + 450) * 10_000);
    expect(&mut c, buy(5, 9, "LOW", 5, px(9.0)), 0, Reason::Accepted);
    expect(&mut c, buy(6, 9, "LOW", 1, px(9.0)), 0, Reason::CreditLimit);
}

#[test]
fn throttle_per_account_is_deterministic_on_now() {
    let mut c = Checker::new(limits(
        "[accounts.5]\nmax_orders_per_s = 10\nburst_orders = 2\n",
    ));
    let p = px(10.0);
    let t0 = 5_000_000_000;
    expect(&mut c, buy(1, 5, "LOW", 1, p), t0, Reason::Accepted);
    expect(&mut c, buy(2, 5, "LOW", 1, p), t0, Reason::Accepted);
    expect(&mut c, buy(3, 5, "LOW", 1, p), t0, Reason::RateThrottle);
    expect(
        &mut c,
        buy(3, 5, "LOW", 1, p),
        t0 + 99_999_999,
        Reason::RateThrottle,
    );
    expect(
        &mut c,
        buy(3, 5, "LOW", 1, p),
        t0 + 100_000_000,
        Reason::Accepted,
    );
    // Another account is not throttled (no default throttle).
    for id in 10..20 {
        expect(&mut c, buy(id, 1, "LOW", 1, p), t0, Reason::Accepted);
    }
    // A rejected order does not consume the rate: 2 more after a full refill.
    let t1 = t0 + 1_000_000_000;
    expect(&mut c, buy(30, 5, "LOW", 2000, p), t1, Reason::MaxQty);
    expect(&mut c, buy(31, 5, "LOW", 1, p), t1, Reason::Accepted);
    expect(&mut c, buy(32, 5, "LOW", 1, p), t1, Reason::Accepted);
    expect(&mut c, buy(33, 5, "LOW", 1, p), t1, Reason::RateThrottle);
}

#[test]
fn restricted_and_unknown_policies() {
    let mut c = Checker::new(limits("[symbols.BAD]\nrestricted = true\n"));
    expect(
        &mut c,
        buy(1, 1, "BAD", 1, px(1.0)),
        0,
        Reason::RestrictedSymbol,
    );
    expect(
        &mut c,
        buy(2, 12345, "ANY", 1, px(1.0)),
        0,
        Reason::Accepted,
    );

    // A second [global] table would be a TOML error, so edit the base text.
    let text = BASE.replace(
        "[global]\n",
        "[global]\nunknown_account = \"reject\"\nunknown_symbol = \"reject\"\n",
    ) + "[accounts.1]\n";
    let mut c = Checker::new(Limits::from_toml_str(&text, "t").unwrap());
    expect(
        &mut c,
        buy(1, 2, "AAPL", 1, px(100.0)),
        0,
        Reason::UnknownAccount,
    );
    expect(
        &mut c,
        buy(2, 1, "ZZZ", 1, px(100.0)),
        0,
        Reason::UnknownSymbol,
    );
    expect(&mut c, buy(3, 1, "AAPL", 1, px(100.0)), 0, Reason::Accepted);
    expect(&mut c, fill(0, "ZZZ", 1, px(1.0)), 0, Reason::UnknownSymbol);
    // An admin command naming an unconfigured account does not make it known.
    c.set_trading_state(Scope::Account(2), TradingState::Active);
    expect(
        &mut c,
        buy(4, 2, "AAPL", 1, px(100.0)),
        0,
        Reason::UnknownAccount,
    );
}

#[test]
fn capacity_bounds_accounts_and_symbols() {
    let text = BASE
        .replace("max_accounts = 8", "max_accounts = 1")
        .replace("max_symbols = 8", "max_symbols = 3");
    let mut c = Checker::new(Limits::from_toml_str(&text, "t").unwrap());
    expect(&mut c, buy(1, 1, "AAPL", 1, px(100.0)), 0, Reason::Accepted);
    expect(
        &mut c,
        buy(2, 2, "AAPL", 1, px(100.0)),
        0,
        Reason::UnknownAccount,
    );
    expect(&mut c, buy(3, 1, "S3", 1, px(100.0)), 0, Reason::Accepted);
    expect(
        &mut c,
        buy(4, 1, "S4", 1, px(100.0)),
        0,
        Reason::UnknownSymbol,
    );
}

#[test]
fn duplicate_ids_by_count_and_by_time() {
    let text = BASE.replace(
        "duplicate_horizon_orders = 1000",
        "duplicate_horizon_orders = 2",
    );
    let mut c = Checker::new(Limits::from_toml_str(&text, "t").unwrap());
    let p = px(10.0);
    expect(&mut c, buy(1, 1, "LOW", 1, p), 0, Reason::Accepted);
    expect(&mut c, buy(1, 1, "LOW", 1, p), 0, Reason::DuplicateOrderId); // open
    expect(&mut c, cancel(1, 1), 0, Reason::Accepted);
    expect(&mut c, buy(1, 1, "LOW", 1, p), 0, Reason::DuplicateOrderId); // remembered
    expect(&mut c, buy(2, 1, "LOW", 1, p), 0, Reason::Accepted);
    expect(&mut c, buy(3, 1, "LOW", 1, p), 0, Reason::Accepted); // forgets id 1
    expect(&mut c, buy(1, 1, "LOW", 1, p), 0, Reason::Accepted);
    expect(&mut c, buy(2, 1, "LOW", 1, p), 0, Reason::DuplicateOrderId); // still open

    let text = BASE.replace(
        "duplicate_horizon_orders = 1000",
        "duplicate_horizon_ms = 1",
    );
    let mut c = Checker::new(Limits::from_toml_str(&text, "t").unwrap());
    expect(&mut c, buy(1, 1, "LOW", 1, p), 0, Reason::Accepted);
    expect(&mut c, cancel(1, 1), 0, Reason::Accepted);
    expect(
        &mut c,
        buy(1, 1, "LOW", 1, p),
        1_000_000,
        Reason::DuplicateOrderId,
    );
    expect(&mut c, buy(1, 1, "LOW", 1, p), 1_000_001, Reason::Accepted);
}

#[test]
fn trading_states_global_account_symbol_and_halt_events() {
    let mut c = Checker::new(limits(
        "[accounts.3]\nstate = \"halted\"\n[symbols.HLT]\nstate = \"halted\"\n",
    ));
    let p = px(100.0);
    expect(&mut c, buy(1, 3, "AAPL", 1, p), 0, Reason::Halted);
    expect(&mut c, buy(2, 1, "HLT", 1, p), 0, Reason::Halted);
    expect(&mut c, buy(3, 1, "AAPL", 1, p), 0, Reason::Accepted);
    // A market halt event halts the symbol; resume lifts it.
    expect(
        &mut c,
        ev(OrderKind::Halt, 0, 0, "AAPL", Side::Buy, 0, 0),
        0,
        Reason::Accepted,
    );
    expect(&mut c, buy(4, 1, "AAPL", 1, p), 0, Reason::Halted);
    // Cancels and fills still pass while halted.
    expect(&mut c, fill(3, "AAPL", 1, p), 0, Reason::Accepted);
    expect(
        &mut c,
        ev(OrderKind::Resume, 0, 0, "AAPL", Side::Buy, 0, 0),
        0,
        Reason::Accepted,
    );
    expect(&mut c, buy(5, 1, "AAPL", 1, p), 0, Reason::Accepted);
    // Kill switch.
    c.set_trading_state(Scope::Global, TradingState::Halted);
    expect(&mut c, buy(6, 1, "AAPL", 1, p), 0, Reason::Halted);
    expect(&mut c, cancel(5, 1), 0, Reason::Accepted);
    c.set_trading_state(Scope::Global, TradingState::Active);
    expect(&mut c, buy(7, 1, "AAPL", 1, p), 0, Reason::Accepted);
    // Admin resume of a symbol halted by the file does not override the file.
    c.set_trading_state(Scope::Symbol(sym("HLT")), TradingState::Active);
    expect(&mut c, buy(8, 1, "HLT", 1, p), 0, Reason::Halted);
    // Admin halt of one account.
    c.set_trading_state(Scope::Account(1), TradingState::Halted);
    expect(&mut c, buy(9, 1, "AAPL", 1, p), 0, Reason::Halted);
    expect(&mut c, buy(9, 2, "AAPL", 1, p), 0, Reason::Accepted);
}

#[test]
fn reducing_lets_only_position_reducing_orders_through() {
    let mut c = Checker::new(limits(""));
    let p = px(10.0);
    expect(&mut c, buy(1, 1, "LOW", 100, p), 0, Reason::Accepted);
    expect(&mut c, fill(1, "LOW", 100, p), 0, Reason::Accepted);
    c.set_trading_state(Scope::Account(1), TradingState::Reducing);
    expect(&mut c, buy(2, 1, "LOW", 1, p), 0, Reason::ReduceOnly);
    expect(&mut c, sell(3, 1, "LOW", 60, p), 0, Reason::Accepted);
    expect(&mut c, sell(4, 1, "LOW", 40, p), 0, Reason::Accepted);
    expect(&mut c, sell(5, 1, "LOW", 1, p), 0, Reason::ReduceOnly);
    // Another account with no position cannot open one.
    c.set_trading_state(Scope::Symbol(sym("LOW")), TradingState::Reducing);
    expect(&mut c, sell(6, 2, "LOW", 1, p), 0, Reason::ReduceOnly);
}

#[test]
fn cancels_and_fills() {
    let mut c = Checker::new(limits(""));
    let p = px(10.0);
    expect(&mut c, cancel(99, 1), 0, Reason::UnknownOrder);
    expect(&mut c, buy(1, 1, "LOW", 100, p), 0, Reason::Accepted);
    expect(&mut c, cancel(1, 0), 0, Reason::InvalidOrder);
    expect(&mut c, cancel(1, 30), 0, Reason::Accepted);
    assert_eq!(c.position(1, sym("LOW")).open_buy_qty, 70);
    expect(&mut c, fill(1, "LOW", 71, p), 0, Reason::InvalidOrder);
    expect(&mut c, fill(1, "LOW", 0, p), 0, Reason::InvalidOrder);
    expect(&mut c, fill(1, "LOW", 20, px(10.5)), 0, Reason::Accepted);
    assert_eq!(
        c.position(1, sym("LOW")),
        PositionView {
            position: 20,
            open_buy_qty: 50,
            open_sell_qty: 0
        }
    );
    assert_eq!(c.reference_price(sym("LOW")), Some(px(10.5)));
    // Over-cancel closes the order.
    expect(&mut c, cancel(1, 1000), 0, Reason::Accepted);
    assert_eq!(c.open_orders(), 0);
    expect(&mut c, cancel(1, 1), 0, Reason::UnknownOrder);
    // Unknown-order fills and id-0 fills move the reference only.
    expect(&mut c, fill(12345, "LOW", 7, px(11.0)), 0, Reason::Accepted);
    assert_eq!(c.position(1, sym("LOW")).position, 20);
    assert_eq!(c.reference_price(sym("LOW")), Some(px(11.0)));
    assert_eq!(c.gross_exposure_ticks(1), 20 * px(11.0) as i128);
    expect(&mut c, fill(0, "LOW", 7, 0), 0, Reason::InvalidOrder);
    expect(&mut c, buy(0, 1, "LOW", 1, p), 0, Reason::InvalidOrder);
    expect(&mut c, buy(50, 1, "LOW", 1, 0), 0, Reason::InvalidOrder);
}

#[test]
fn reload_changes_limits_and_keeps_state() {
    let mut c = Checker::new(limits(""));
    let p = px(10.0);
    expect(&mut c, buy(1, 1, "LOW", 500, p), 0, Reason::Accepted);
    expect(&mut c, fill(1, "LOW", 200, p), 0, Reason::Accepted);
    c.set_trading_state(Scope::Account(4), TradingState::Halted);
    let before = c.position(1, sym("LOW"));
    c.set_limits(limits("[accounts.1]\nmax_order_qty = 10\n"));
    assert_eq!(c.position(1, sym("LOW")), before);
    expect(&mut c, buy(1, 1, "LOW", 1, p), 0, Reason::DuplicateOrderId);
    expect(&mut c, buy(2, 1, "LOW", 11, p), 0, Reason::MaxQty);
    expect(&mut c, buy(3, 1, "LOW", 10, p), 0, Reason::Accepted);
    expect(&mut c, buy(4, 4, "LOW", 10, p), 0, Reason::Halted);
    c.verify_consistency().unwrap();
}

#[test]
fn apply_decision_rebuilds_the_same_state() {
    let l = limits("[accounts.5]\nmax_orders_per_s = 10\nburst_orders = 2\n");
    let mut live = Checker::new(l.clone());
    let p = px(10.0);
    let stream = [
        buy(1, 5, "LOW", 100, p),
        buy(2, 5, "LOW", 100, p),
        buy(3, 5, "LOW", 100, p), // throttled
        fill(1, "LOW", 40, px(10.2)),
        cancel(2, 100),
        sell(4, 1, "AAPL", 10, px(100.0)),
        fill(0, "AAPL", 1, px(101.0)),
        ev(OrderKind::Halt, 0, 0, "LOW", Side::Buy, 0, 0),
    ];
    let mut journal = Vec::new();
    for (i, o) in stream.iter().enumerate() {
        let now = 1_000 + i as u64;
        let reason = live.check(o, now);
        journal.push(Decision {
            input_seq: i as u64,
            order: *o,
            reason,
            t_in_ns: now,
            t_decided_ns: now + 500,
            t_checked_ns: now,
            ..Decision::default()
        });
    }
    let mut recovered = Checker::new(l);
    for d in &journal {
        recovered.apply_decision(d);
    }
    assert_eq!(recovered.replay_skipped(), 0);
    assert_eq!(recovered.snapshot(), live.snapshot());
    recovered.verify_consistency().unwrap();
    let next = [
        buy(1, 5, "LOW", 1, p),
        buy(5, 5, "LOW", 1, p),
        buy(6, 1, "AAPL", 1, px(101.0)),
    ];
    for o in next {
        assert_eq!(recovered.check(&o, 2_000), live.check(&o, 2_000), "{o:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests over random event streams.

const PROP: &str = r#"
[global]
duplicate_horizon_orders = 64
[capacity]
max_open_orders = 256
max_positions = 16
[defaults]
max_order_qty = 500
max_order_notional = 4000
max_long_qty = 1000
max_short_qty = 800
credit_limit_notional = 15000
collar_bps = 500
max_orders_per_s = 1000
burst_orders = 5
[accounts.2]
max_long_qty = 300
credit_limit_notional = 5000
[symbols.AAA]
reference_price = 10.0
[symbols.BBB]
reference_price = 20.0
max_short_qty = 200
"#;

fn prop_limits() -> Limits {
    Limits::from_toml_str(PROP, "prop").unwrap()
}

/// One step of a random stream. Cancels and fills mostly name an order that is open at that
/// moment (picked by index among the open orders), so that they do something; `Raw` events
/// use ids at random (mostly unknown).
#[derive(Debug, Clone)]
enum Action {
    New {
        account: u32,
        aaa: bool,
        buy: bool,
        qty: u64,
        move_pct: i64,
    },
    Cancel {
        k: usize,
        pct: u64,
    },
    Fill {
        k: usize,
        pct: u64,
        move_pct: i64,
    },
    Raw(Order),
    Halt {
        aaa: bool,
        halt: bool,
    },
}

fn arb_action() -> impl Strategy<Value = (Action, u64)> {
    let new = (
        1u32..4,
        prop::bool::ANY,
        prop::bool::ANY,
        1u64..600,
        -12i64..12,
    )
        .prop_map(|(account, aaa, buy, qty, move_pct)| Action::New {
            account,
            aaa,
            buy,
            qty,
            move_pct,
        });
    let cancel = (any::<usize>(), 1u64..130).prop_map(|(k, pct)| Action::Cancel { k, pct });
    let fill = (any::<usize>(), 1u64..130, -12i64..12)
        .prop_map(|(k, pct, move_pct)| Action::Fill { k, pct, move_pct });
    let raw = (
        0u64..60,
        1u64..300,
        prop::bool::ANY,
        prop::bool::ANY,
        0u8..2,
    )
        .prop_map(|(id, qty, aaa, buy, k)| {
            let (symbol, reference) = if aaa {
                ("AAA", 100_000)
            } else {
                ("BBB", 200_000)
            };
            Action::Raw(Order {
                order_id: id,
                ts_ns: 0,
                price: reference,
                qty,
                account: 1,
                symbol: sym(symbol),
                side: if buy { Side::Buy } else { Side::Sell },
                kind: if k == 0 {
                    OrderKind::Cancel
                } else {
                    OrderKind::Fill
                },
            })
        });
    let halt =
        (prop::bool::ANY, prop::bool::ANY).prop_map(|(aaa, halt)| Action::Halt { aaa, halt });
    (
        prop_oneof![5 => new, 2 => cancel, 3 => fill, 1 => raw, 1 => halt],
        0u64..3_000_000,
    )
}

fn reference_of(aaa: bool) -> (&'static str, i64) {
    if aaa {
        ("AAA", 100_000)
    } else {
        ("BBB", 200_000)
    }
}

/// Turns an action into a concrete event against the checker's current state.
fn materialize(c: &Checker, a: &Action) -> Order {
    let mut open: Vec<(u64, OpenOrder)> = c
        .ids
        .iter()
        .filter(|(_, s)| s.open_qty() > 0)
        .map(|(id, s)| (id, s.order()))
        .collect();
    open.sort_by_key(|(id, _)| *id);
    let pick = |k: usize| open.get(k % open.len().max(1)).copied();
    let next_id = c.ids.iter().map(|(id, _)| id).max().unwrap_or(0) + 1;
    match *a {
        Action::New {
            account,
            aaa,
            buy,
            qty,
            move_pct,
        } => {
            let (symbol, reference) = reference_of(aaa);
            // Now and then reuse a recent id to exercise the duplicate check.
            let id = if qty % 17 == 0 {
                next_id.saturating_sub(1).max(1)
            } else {
                next_id
            };
            Order {
                order_id: id,
                ts_ns: 0,
                price: reference + reference * move_pct / 100,
                qty,
                account,
                symbol: sym(symbol),
                side: if buy { Side::Buy } else { Side::Sell },
                kind: OrderKind::New,
            }
        }
        Action::Cancel { k, pct } => match pick(k) {
            Some((id, oo)) => cancel(id, (oo.open_qty * pct / 100).max(1)),
            None => cancel(999, 1),
        },
        Action::Fill { k, pct, move_pct } => match pick(k) {
            Some((id, oo)) => {
                let symbol = c.symbols[c.positions[oo.position as usize].symbol as usize].symbol;
                Order {
                    order_id: id,
                    ts_ns: 0,
                    price: oo.price + oo.price * move_pct / 100,
                    qty: (oo.open_qty * pct / 100).max(1),
                    account: 0,
                    symbol,
                    side: oo.side,
                    kind: OrderKind::Fill,
                }
            }
            None => fill(0, "AAA", 1, 100_000),
        },
        Action::Raw(o) => o,
        Action::Halt { aaa, halt } => ev(
            if halt {
                OrderKind::Halt
            } else {
                OrderKind::Resume
            },
            0,
            0,
            reference_of(aaa).0,
            Side::Buy,
            0,
            0,
        ),
    }
}

/// Runs actions; returns the concrete events with their times and verdicts.
fn run(c: &mut Checker, actions: &[(Action, u64)], start_ns: u64) -> Vec<(Order, u64, Reason)> {
    let mut now = start_ns;
    actions
        .iter()
        .map(|(a, dt)| {
            now += dt;
            let o = materialize(c, a);
            (o, now, c.check(&o, now))
        })
        .collect()
}

fn limits_hold(c: &Checker) -> Result<(), TestCaseError> {
    let l = c.limits();
    for ps in &c.positions {
        let a = &c.accounts[ps.account as usize];
        let s = &c.symbols[ps.symbol as usize];
        let max_long = pick(a.max_long_qty, s.max_long_qty, l.defaults.max_long_qty);
        let max_short = pick(a.max_short_qty, s.max_short_qty, l.defaults.max_short_qty);
        prop_assert!(ps.view.worst_long() <= max_long as i128, "{ps:?}");
        prop_assert!(ps.view.worst_short() >= -(max_short as i128), "{ps:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random streams keep the limits and the consistency of the state; the verdicts are a
    /// function of the events and their check times; and recovery from the decision records
    /// rebuilds the same state, deep (throttle states, horizon ring and times, every id entry),
    /// although each verdict was decided (`t_decided_ns`) a random round trip after the check
    /// (`t_checked_ns`, the batch's `now_ns`), with a count or a time horizon.
    #[test]
    fn streams_keep_limits_consistency_and_determinism(
        actions in prop::collection::vec(arb_action(), 1..150),
        round_trips in prop::collection::vec(1u64..5_000_000, 1..16),
        time_horizon in prop::bool::ANY,
    ) {
        let limits = if time_horizon {
            Limits::from_toml_str(
                &PROP.replace("duplicate_horizon_orders = 64", "duplicate_horizon_orders = 64\nduplicate_horizon_ms = 2"),
                "prop",
            ).unwrap()
        } else {
            prop_limits()
        };
        let mut c = Checker::new(limits.clone());
        let mut now = 1_000_000_000;
        let mut events = Vec::new();
        for (a, dt) in &actions {
            now += dt;
            let o = materialize(&c, a);
            let before = c.snapshot();
            let r = c.check(&o, now);
            events.push((o, now, r));
            if r.is_accepted() {
                if o.kind == OrderKind::New {
                    let a = c.account_index[&o.account];
                    let acct = &c.accounts[a as usize];
                    prop_assert!(acct.gross_exposure_ticks() <= acct.credit_limit_ticks);
                }
            } else {
                prop_assert_eq!(c.snapshot(), before, "rejected {:?} changed state", o);
            }
            if let Err(e) = c.verify_consistency() {
                return Err(TestCaseError::fail(e));
            }
            limits_hold(&c)?;
        }
        // Replaying the same events gives the same verdicts.
        let mut again = Checker::new(limits.clone());
        for (o, now, r) in &events {
            prop_assert_eq!(again.check(o, *now), *r, "{:?}", o);
        }
        // Recovery from the decision records rebuilds the same state, although every verdict
        // was decided a round trip after its check.
        let mut recovered = Checker::new(limits);
        for (i, (o, now, r)) in events.iter().enumerate() {
            let rtt = round_trips[i % round_trips.len()];
            recovered.apply_decision(&Decision {
                input_seq: i as u64,
                order: *o,
                reason: *r,
                t_in_ns: *now,
                t_decided_ns: *now + rtt,
                t_checked_ns: *now,
                risk_session: 0,
                risk_batch: 0,
                risk_batch_orders: 0,
            });
        }
        prop_assert_eq!(recovered.replay_skipped(), 0);
        prop_assert_eq!(recovered.snapshot(), c.snapshot());
        prop_assert_eq!(deep_state(&recovered), deep_state(&c));
        // And it decides what follows as the live checker does.
        let mut now = now + 1_000_000;
        for (a, dt) in actions.iter().take(40) {
            now += dt / 4;
            let o = materialize(&c, a);
            prop_assert_eq!(recovered.check(&o, now), c.check(&o, now), "after recovery: {:?}", o);
        }
    }

    #[test]
    fn halted_rejects_every_new_order(
        before in prop::collection::vec(arb_action(), 0..60),
        after in prop::collection::vec(arb_action(), 1..80),
        scope in 0u8..3,
    ) {
        let mut c = Checker::new(prop_limits());
        run(&mut c, &before, 1_000_000_000);
        let scope = match scope {
            0 => Scope::Global,
            1 => Scope::Account(1),
            _ => Scope::Symbol(sym("AAA")),
        };
        c.set_trading_state(scope, TradingState::Halted);
        for (o, _, r) in run(&mut c, &after, 2_000_000_000) {
            let in_scope = match scope {
                Scope::Global => true,
                Scope::Account(a) => o.account == a,
                Scope::Symbol(s) => o.symbol == s,
            };
            if o.kind == OrderKind::New && in_scope {
                prop_assert!(!r.is_accepted(), "{:?} accepted while halted", o);
            }
        }
    }

    #[test]
    fn reducing_never_increases_absolute_position(
        before in prop::collection::vec(arb_action(), 0..80),
        after in prop::collection::vec(arb_action(), 1..120),
    ) {
        let mut c = Checker::new(prop_limits());
        run(&mut c, &before, 1_000_000_000);
        // Cancel everything left open, then switch to REDUCING.
        let open: Vec<(u64, u64)> = c
            .ids
            .iter()
            .filter(|(_, s)| s.open_qty() > 0)
            .map(|(id, s)| (id, s.open_qty()))
            .collect();
        for (id, qty) in open {
            prop_assert_eq!(c.check(&cancel(id, qty), 0), Reason::Accepted);
        }
        c.set_trading_state(Scope::Global, TradingState::Reducing);
        let abs = |c: &Checker| -> Vec<u64> { c.positions.iter().map(|p| p.view.position.unsigned_abs()).collect() };
        let mut last = abs(&c);
        let mut now = 3_000_000_000;
        for (a, dt) in &after {
            now += dt;
            let o = materialize(&c, a);
            c.check(&o, now);
            let cur = abs(&c);
            for (i, (a, b)) in last.iter().zip(&cur).enumerate() {
                prop_assert!(b <= a, "position {} grew from {} to {} on {:?}", i, a, b, o);
            }
            // New positions start at zero and cannot grow either.
            for b in cur.iter().skip(last.len()) {
                prop_assert_eq!(*b, 0);
            }
            last = cur;
        }
    }
}

// ----------------------------------------------------------------------------------------
// Undo (void): a batch the client timed out on is taken back exactly.

/// Checks `events` as recorded batch `batch` of session 7 at `now`; returns the verdicts.
fn recorded(c: &mut Checker, batch: u64, events: &[Order], now: u64) -> Vec<Reason> {
    assert!(c.begin_batch(7, batch));
    let v = events.iter().map(|o| c.check(o, now)).collect();
    c.end_batch();
    v
}

/// Everything the state snapshot leaves out: throttle states, the horizon ring and every
/// order-id table entry (sorted; the physical slot layout may differ).
fn deep_state(c: &Checker) -> String {
    let tats: Vec<(u32, u64)> = c.accounts.iter().map(|a| (a.account, a.tat_ns)).collect();
    let mut ids: Vec<(u64, IdSlot)> = c.ids.iter().map(|(k, v)| (k, *v)).collect();
    ids.sort_by_key(|e| e.0);
    let positions: Vec<(u32, u32, Vec<u32>)> = c
        .symbols
        .iter()
        .map(|s| (0, 0, s.positions.clone()))
        .collect();
    format!(
        "{tats:?} {:?} {} {ids:?} {} {positions:?}",
        c.ring, c.ring_head_seq, c.open_count
    )
}

fn void(c: &mut Checker, ids: &[u64]) -> Vec<VoidOutcome> {
    let mut out = vec![VoidOutcome::Unknown; ids.len()];
    c.void_batches(7, ids, &mut out);
    out
}

/// Runs `setup` on two checkers, then `batch` on one of them as recorded batch 2 and voids it:
/// both must then have the same state (snapshot, consistency, and verdicts of `probe`).
#[track_caller]
fn assert_void_restores(limits: Limits, setup: &[Order], batch: &[Order], probe: &[Order]) {
    let mut c = Checker::new(limits.clone());
    c.enable_undo(16);
    let mut reference = Checker::new(limits);
    recorded(&mut c, 1, setup, 1_000);
    for o in setup {
        reference.check(o, 1_000);
    }
    let before = c.snapshot();
    let verdicts = recorded(&mut c, 2, batch, 2_000);
    assert!(
        verdicts.iter().any(|r| r.is_accepted()),
        "the batch should change something: {verdicts:?}"
    );
    assert_eq!(void(&mut c, &[2]), [VoidOutcome::Voided]);
    assert_eq!(c.snapshot(), before);
    assert_eq!(c.snapshot(), reference.snapshot());
    assert_eq!(deep_state(&c), deep_state(&reference));
    c.verify_consistency().unwrap();
    for o in probe {
        assert_eq!(c.check(o, 3_000), reference.check(o, 3_000), "{o:?}");
    }
    assert_eq!(c.snapshot(), reference.snapshot());
    // A second void of the same batch finds nothing to undo.
    assert_eq!(void(&mut c, &[2]), [VoidOutcome::Unknown]);
}

#[test]
fn void_undoes_new_orders_with_new_account_symbol_position_and_reference() {
    let p = px(10.0);
    // Account 5 and symbol NEW are unknown (added under `defaults`); NEW has no reference, so
    // the first order sets it; a duplicate inside the batch is rejected.
    assert_void_restores(
        limits(""),
        &[buy(1, 1, "LOW", 10, p)],
        &[
            buy(2, 5, "NEW", 10, px(3.0)),
            sell(3, 1, "LOW", 5, p),
            buy(2, 5, "NEW", 10, px(3.0)),
        ],
        &[
            buy(2, 5, "NEW", 10, px(30.0)),
            sell(3, 1, "LOW", 1000, p),
            buy(4, 5, "NEW", 1, px(3.0)),
        ],
    );
}

#[test]
fn void_undoes_the_throttle_and_the_duplicate_horizon_evictions() {
    let p = px(10.0);
    // Horizon of 2 ids: each new order evicts the oldest (a closed id is removed from the
    // table, an open one only forgotten); a throttle of 2 back to back.
    let l = Limits::from_toml_str(
        &BASE
            .replace(
                "duplicate_horizon_orders = 1000",
                "duplicate_horizon_orders = 2",
            )
            .replace(
                "collar_bps = 500",
                "collar_bps = 500\nmax_orders_per_s = 1\nburst_orders = 2",
            ),
        "t",
    )
    .unwrap();
    assert_void_restores(
        l,
        &[buy(1, 1, "LOW", 1, p), cancel(1, 1), buy(2, 1, "LOW", 1, p)],
        &[buy(3, 2, "LOW", 1, p), buy(4, 2, "LOW", 1, p)],
        &[
            buy(1, 1, "LOW", 1, p), // a duplicate again once the evictions are undone
            buy(2, 1, "LOW", 1, p),
            buy(3, 2, "LOW", 1, p),
            buy(5, 2, "LOW", 1, p),
            buy(6, 2, "LOW", 1, p),
        ],
    );
}

#[test]
fn void_undoes_cancels_partial_and_closing() {
    let p = px(10.0);
    assert_void_restores(
        limits(""),
        &[buy(1, 1, "LOW", 10, p), sell(2, 1, "LOW", 10, p)],
        &[cancel(1, 4), cancel(2, 50), cancel(9, 1)],
        &[
            cancel(2, 1),
            buy(2, 1, "LOW", 1, p),
            buy(10, 1, "LOW", 1994, p),
            cancel(1, 10),
        ],
    );
}

#[test]
fn void_undoes_fills_of_open_orders_and_reference_moves() {
    let p = px(100.0);
    assert_void_restores(
        limits(""),
        &[
            buy(1, 1, "AAPL", 10, p),
            sell(2, 2, "AAPL", 10, p),
            buy(3, 1, "LOW", 10, px(10.0)),
        ],
        &[
            fill(1, "AAPL", 4, px(101.0)),
            fill(2, "AAPL", 10, px(99.0)),
            fill(0, "LOW", 3, px(10.4)),
            fill(0, "FRESH", 3, px(1.0)),
        ],
        &[
            buy(4, 1, "AAPL", 1, px(104.0)),
            sell(5, 2, "AAPL", 1500, px(100.0)),
            fill(1, "AAPL", 10, px(100.0)),
            buy(6, 1, "AAPL", 1990, px(100.0)),
        ],
    );
}

#[test]
fn void_undoes_halt_and_resume_events() {
    let p = px(10.0);
    assert_void_restores(
        limits(""),
        &[buy(1, 1, "LOW", 1, p)],
        &[
            ev(OrderKind::Halt, 0, 0, "LOW", Side::Buy, 0, 0),
            ev(OrderKind::Halt, 0, 0, "NEWSYM", Side::Buy, 0, 0),
        ],
        &[buy(2, 1, "LOW", 1, p), buy(3, 1, "NEWSYM", 1, p)],
    );
}

#[test]
fn void_of_several_newest_batches_and_what_is_not_undone() {
    let p = px(10.0);
    let mut c = Checker::new(limits(""));
    c.enable_undo(8);
    recorded(&mut c, 1, &[buy(1, 1, "LOW", 1, p)], 1);
    let after_1 = c.snapshot();
    recorded(&mut c, 2, &[buy(2, 1, "LOW", 1, p)], 2);
    recorded(&mut c, 3, &[buy(3, 1, "LOW", 1, p)], 3);
    // Both newest batches, named in any order; 9 never arrived.
    assert_eq!(
        void(&mut c, &[2, 9, 3]),
        [
            VoidOutcome::Voided,
            VoidOutcome::Unknown,
            VoidOutcome::Voided
        ]
    );
    assert_eq!(c.snapshot(), after_1);
    // Batch 9 arriving late is refused (nothing applied).
    assert!(!c.begin_batch(7, 9));
    // Another session's batch came after batch 4: 4 is not undone.
    recorded(&mut c, 4, &[buy(4, 1, "LOW", 1, p)], 4);
    assert!(c.begin_batch(8, 1));
    c.check(&buy(5, 1, "LOW", 1, p), 5);
    c.end_batch();
    assert_eq!(void(&mut c, &[4]), [VoidOutcome::TooOld]);
    assert_eq!(c.open_orders(), 3);
    // A change outside a recorded batch (a JSON order) seals the log.
    recorded(&mut c, 5, &[buy(6, 1, "LOW", 1, p)], 6);
    c.check(&buy(7, 1, "LOW", 1, p), 7);
    assert_eq!(void(&mut c, &[5]), [VoidOutcome::TooOld]);
    // So does an admin state change (it may add an account).
    recorded(&mut c, 6, &[buy(8, 1, "LOW", 1, p)], 8);
    c.set_trading_state(Scope::Account(42), TradingState::Active);
    assert_eq!(void(&mut c, &[6]), [VoidOutcome::TooOld]);
    assert_eq!(c.open_orders(), 6);
    // Without an undo log nothing can be undone.
    let mut plain = Checker::new(limits(""));
    assert!(plain.begin_batch(7, 1));
    plain.check(&buy(1, 1, "LOW", 1, p), 1);
    plain.end_batch();
    let mut out = [VoidOutcome::Unknown];
    plain.void_batches(7, &[1], &mut out);
    assert_eq!(out, [VoidOutcome::TooOld]);
    assert_eq!(plain.open_orders(), 1);
}

/// Splits `actions` into batches (each with one `now`), checks them as recorded batches of
/// session 7 against `c` (materializing each event against `c`) and returns the concrete
/// batches.
fn run_batches(
    c: &mut Checker,
    actions: &[(Action, u64)],
    cuts: &[usize],
    first_batch: u64,
    start_ns: u64,
) -> Vec<(Vec<Order>, u64)> {
    let mut now = start_ns;
    let mut batches = Vec::new();
    let mut rest = actions;
    let mut k = 0;
    while !rest.is_empty() {
        let n = cuts.get(k).copied().unwrap_or(4).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        now += batch.iter().map(|(_, dt)| dt).sum::<u64>();
        assert!(c.begin_batch(7, first_batch + k as u64));
        let orders: Vec<Order> = batch
            .iter()
            .map(|(a, _)| {
                let o = materialize(c, a);
                c.check(&o, now);
                o
            })
            .collect();
        c.end_batch();
        batches.push((orders, now));
        k += 1;
    }
    batches
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random streams in random batches; the last one or two batches are voided: the state
    /// then equals that of a checker that never saw them (snapshot, consistency, and the
    /// verdicts of a random probe stream), with the count horizon or a time horizon.
    #[test]
    fn voiding_the_newest_batches_equals_never_seeing_them(
        prefix in prop::collection::vec(arb_action(), 0..80),
        victims in prop::collection::vec(arb_action(), 1..30),
        probe in prop::collection::vec(arb_action(), 1..60),
        cuts in prop::collection::vec(1usize..9, 0..20),
        two in prop::bool::ANY,
        time_horizon in prop::bool::ANY,
    ) {
        let text = if time_horizon {
            PROP.replace("duplicate_horizon_orders = 64", "duplicate_horizon_orders = 64\nduplicate_horizon_ms = 2")
        } else {
            PROP.to_owned()
        };
        let limits = Limits::from_toml_str(&text, "prop").unwrap();
        let mut c = Checker::new(limits.clone());
        c.enable_undo(32);
        let prefix_batches = run_batches(&mut c, &prefix, &cuts, 1, 1_000_000_000);
        let mut reference = Checker::new(limits);
        for (orders, now) in &prefix_batches {
            for o in orders {
                reference.check(o, *now);
            }
        }
        prop_assert_eq!(c.snapshot(), reference.snapshot());
        let first_victim = 1_000;
        let split = if two { victims.len() / 2 } else { victims.len() };
        let start = prefix_batches.last().map_or(1_000_000_000, |b| b.1);
        let victim_cuts = [split.max(1), victims.len()];
        let victim_batches = run_batches(&mut c, &victims, &victim_cuts, first_victim, start);
        let ids: Vec<u64> = (0..victim_batches.len() as u64).map(|k| first_victim + k).collect();
        let mut out = vec![VoidOutcome::Unknown; ids.len()];
        c.void_batches(7, &ids, &mut out);
        prop_assert!(out.iter().all(|o| *o == VoidOutcome::Voided), "{:?}", out);
        if let Err(e) = c.verify_consistency() {
            return Err(TestCaseError::fail(e));
        }
        prop_assert_eq!(c.snapshot(), reference.snapshot());
        prop_assert_eq!(deep_state(&c), deep_state(&reference));
        let mut now = start + 5_000_000;
        for (a, dt) in &probe {
            now += dt;
            let o = materialize(&reference, a);
            prop_assert_eq!(c.check(&o, now), reference.check(&o, now), "{:?}", o);
        }
        prop_assert_eq!(c.snapshot(), reference.snapshot());
    }
}

// Reconciliation (hello): a restarted client's journal ends before batches the server applied.

/// Checks `events` as recorded batch `batch` of `session` at `now`.
fn recorded_in(c: &mut Checker, session: u64, batch: u64, events: &[Order], now: u64) {
    assert!(c.begin_batch(session, batch));
    for o in events {
        c.begin_order();
        c.check(o, now);
    }
    c.end_batch();
}

fn point(prev_session: u64, journaled_batch: u64, journaled_orders: u32) -> JournalPoint {
    JournalPoint {
        prev_session,
        journaled_batch,
        journaled_orders,
    }
}

/// The batches of the previous session after the journaled one are undone, also those of a
/// session that continued it and journaled nothing; the state then equals a checker that
/// saw only the journaled batches (deep), and the ended sessions' batches are refused.
#[test]
fn reconcile_undoes_what_the_journal_does_not_hold() {
    let p = px(10.0);
    let mut c = Checker::new(limits(""));
    c.enable_undo(8);
    let mut reference = Checker::new(limits(""));
    for b in 1..=3u64 {
        let batch = [
            buy(b, 1, "LOW", 10, p),
            sell(100 + b, 2, "AAPL", 5, px(100.0)),
        ];
        recorded_in(&mut c, 11, b, &batch, b * 1_000);
        for o in &batch {
            reference.check(o, b * 1_000);
        }
    }
    // Batches 4 and 5 of session 11 were applied but the client died before journaling them.
    recorded_in(&mut c, 11, 4, &[buy(4, 1, "LOW", 10, p)], 4_000);
    recorded_in(&mut c, 11, 5, &[buy(5, 3, "NEW", 1, px(1.0))], 5_000);
    // Its successor, session 22, reconciled, applied batch 1 and died before journaling it.
    assert_eq!(
        c.reconcile(22, point(11, 5, 1)),
        (VoidOutcome::Voided, 0),
        "nothing after 5"
    );
    assert!(!c.begin_batch(11, 6), "session 11 is ended");
    recorded_in(&mut c, 22, 1, &[buy(6, 1, "LOW", 10, p)], 6_000);
    // Session 33 starts from a journal that ends on session 11's batch 3.
    assert_eq!(c.reconcile(33, point(11, 3, 2)), (VoidOutcome::Voided, 3));
    assert_eq!(c.snapshot(), reference.snapshot());
    assert_eq!(deep_state(&c), deep_state(&reference));
    c.verify_consistency().unwrap();
    assert!(!c.begin_batch(22, 2), "session 22 is ended too");
    assert!(c.begin_batch(33, 1), "the new session is served");
    for o in [buy(4, 1, "LOW", 10, p), buy(6, 1, "LOW", 10, p)] {
        assert_eq!(c.check(&o, 7_000), reference.check(&o, 7_000));
    }
    c.end_batch();
    // A repeated hello of the same session does not end it.
    assert_eq!(c.reconcile(33, point(11, 3, 2)).0, VoidOutcome::Voided);
    assert!(c.begin_batch(33, 2));
    c.end_batch();
    // A session the server never saw.
    assert_eq!(c.reconcile(44, point(99, 1, 1)), (VoidOutcome::Unknown, 0));
}

/// What cannot be undone is reported `too-old`: a batch after the journaled one behind
/// another session's batch, or sealed (a change outside a batch came after it).
#[test]
fn reconcile_refuses_what_it_cannot_undo() {
    let p = px(10.0);
    let mut c = Checker::new(limits(""));
    c.enable_undo(8);
    recorded_in(&mut c, 11, 1, &[buy(1, 1, "LOW", 10, p)], 1_000);
    recorded_in(&mut c, 11, 2, &[buy(2, 1, "LOW", 10, p)], 2_000);
    recorded_in(&mut c, 12, 1, &[buy(3, 1, "LOW", 10, p)], 3_000);
    assert_eq!(c.reconcile(21, point(11, 1, 1)), (VoidOutcome::TooOld, 0));
    assert_eq!(
        c.open_orders(),
        3,
        "nothing undone past another session's batch"
    );

    let mut c = Checker::new(limits(""));
    c.enable_undo(8);
    recorded_in(&mut c, 11, 1, &[buy(1, 1, "LOW", 10, p)], 1_000);
    recorded_in(&mut c, 11, 2, &[buy(2, 1, "LOW", 10, p)], 2_000);
    c.set_trading_state(Scope::Account(1), TradingState::Active);
    recorded_in(&mut c, 11, 3, &[buy(3, 1, "LOW", 10, p)], 3_000);
    // Batch 3 can be undone, batch 2 is sealed.
    assert_eq!(c.reconcile(21, point(11, 1, 1)), (VoidOutcome::TooOld, 1));
    // Journaled through 2: batch 3 is undone and nothing sealed is after the journal.
    let mut c2 = Checker::new(limits(""));
    c2.enable_undo(8);
    recorded_in(&mut c2, 11, 1, &[buy(1, 1, "LOW", 10, p)], 1_000);
    recorded_in(&mut c2, 11, 2, &[buy(2, 1, "LOW", 10, p)], 2_000);
    c2.set_trading_state(Scope::Account(1), TradingState::Active);
    recorded_in(&mut c2, 11, 3, &[buy(3, 1, "LOW", 10, p)], 3_000);
    assert_eq!(c2.reconcile(21, point(11, 2, 1)), (VoidOutcome::Voided, 1));
    assert_eq!(c2.open_orders(), 2);
}

/// A crash in the middle of journaling a batch: the journal holds its first orders only. The
/// reconciliation undoes the rest of that batch (and the batches after it), so the state is
/// that of a checker that saw exactly what the journal holds.
#[test]
fn reconcile_undoes_the_tail_of_a_batch_the_journal_holds_in_part() {
    let p = px(10.0);
    let batch = [
        buy(1, 1, "LOW", 10, p),
        sell(2, 2, "AAPL", 5, px(100.0)),
        buy(3, 3, "NEW", 1, px(1.0)),
        fill(1, "LOW", 4, px(10.1)),
    ];
    for keep in 0..=batch.len() as u32 {
        let mut c = Checker::new(limits(""));
        c.enable_undo(8);
        let mut reference = Checker::new(limits(""));
        recorded_in(&mut c, 11, 1, &batch[..1], 1_000);
        reference.check(&batch[0], 1_000);
        recorded_in(&mut c, 11, 2, &batch, 2_000);
        recorded_in(&mut c, 11, 3, &[buy(9, 1, "LOW", 1, p)], 3_000);
        for o in &batch[..keep as usize] {
            reference.check(o, 2_000);
        }
        let (outcome, undone) = c.reconcile(22, point(11, 2, keep));
        assert_eq!(outcome, VoidOutcome::Voided, "keep {keep}");
        assert_eq!(
            undone,
            1 + u64::from(keep < batch.len() as u32),
            "keep {keep}"
        );
        assert_eq!(c.snapshot(), reference.snapshot(), "keep {keep}");
        assert_eq!(deep_state(&c), deep_state(&reference), "keep {keep}");
        c.verify_consistency().unwrap();
    }
}

// ----------------------------------------------------------------------------------------
// Exact state: encode / restore (risk-state snapshots).

/// The decisions of a random stream, as the journal holds them (check time and decide time
/// differ, as they do in the engine).
fn decisions_of(actions: &[(Action, u64)]) -> Vec<Decision> {
    let mut live = Checker::new(prop_limits());
    run(&mut live, actions, 1_000_000_000)
        .into_iter()
        .enumerate()
        .map(|(i, (o, now, reason))| Decision {
            input_seq: i as u64,
            order: o,
            reason,
            t_in_ns: now.saturating_sub(500),
            // The check ran at `now`; the verdict arrived a round trip later (recovery
            // replays at the check's time, decision record v2).
            t_checked_ns: now,
            t_decided_ns: now + 700,
            ..Decision::default()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A snapshot taken after any prefix of the journal, restored, then the rest of the
    /// journal applied, is exactly the state of a full replay: same bytes (every account's
    /// throttle state, the duplicate horizon with its times, every order id), same admin
    /// view, consistent, and the same verdicts and state after more events.
    #[test]
    fn snapshot_plus_tail_equals_a_full_replay(
        actions in prop::collection::vec(arb_action(), 1..200),
        cut in any::<prop::sample::Index>(),
        more in prop::collection::vec(arb_action(), 0..40),
    ) {
        let journal = decisions_of(&actions);
        let mut full = Checker::new(prop_limits());
        for d in &journal {
            full.apply_decision(d);
        }
        let k = cut.index(journal.len() + 1);
        let mut before = Checker::new(prop_limits());
        for d in &journal[..k] {
            before.apply_decision(d);
        }
        let bytes = before.state_bytes();
        let mut restored = Checker::restore_state(prop_limits(), &bytes)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(restored.state_bytes(), bytes, "restore then encode is the identity");
        // The tail in prefetched chunks (apply_decisions), the full replay one by one.
        restored.apply_decisions(&journal[k..]);
        prop_assert_eq!(restored.state_bytes(), full.state_bytes());
        prop_assert_eq!(deep_state(&restored), deep_state(&full));
        prop_assert_eq!(restored.snapshot(), full.snapshot());
        if let Err(e) = restored.verify_consistency() {
            return Err(TestCaseError::fail(e));
        }
        let a = run(&mut restored, &more, 9_000_000_000);
        let b = run(&mut full, &more, 9_000_000_000);
        prop_assert_eq!(a, b);
        prop_assert_eq!(restored.state_bytes(), full.state_bytes());
    }

    /// Restoring outside input never panics: a truncated state or one with a byte changed is
    /// refused or (where the change is to a value the state may hold) gives a consistent
    /// checker, in either version of the encoding; version 1 restores to the same state.
    #[test]
    fn restoring_damaged_state_never_panics(
        actions in prop::collection::vec(arb_action(), 1..80),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let mut c = Checker::new(prop_limits());
        for d in &decisions_of(&actions) {
            c.apply_decision(d);
        }
        // Both versions read (version 1: fixed id entries, what engines before 2 wrote).
        let mut v1 = Vec::new();
        c.encode_state_as(&mut v1, crate::checker::state::STATE_VERSION_FIXED_IDS);
        let v1_restored = Checker::restore_state(prop_limits(), &v1).unwrap();
        prop_assert_eq!(v1_restored.state_bytes(), c.state_bytes());
        for bytes in [c.state_bytes(), v1] {
            let mut flipped = bytes.clone();
            flipped[at.index(bytes.len())] ^= mask;
            if let Ok(r) = Checker::restore_state(prop_limits(), &flipped) {
                if let Err(e) = r.verify_consistency() {
                    return Err(TestCaseError::fail(e));
                }
            }
            let short = &bytes[..cut.index(bytes.len())];
            prop_assert!(Checker::restore_state(prop_limits(), short).is_err());
        }
    }
}

#[test]
fn state_from_other_limits_is_refused() {
    let mut c = Checker::new(prop_limits());
    c.check(&buy(1, 1, "AAA", 10, 100_000), 5);
    let bytes = c.state_bytes();
    let other =
        Limits::from_toml_str(&PROP.replace("burst_orders = 5", "burst_orders = 6"), "o").unwrap();
    let err = Checker::restore_state(other, &bytes).unwrap_err();
    assert!(
        matches!(err, crate::StateError::OtherLimits { .. }),
        "{err}"
    );
    // The origin (a file name) is not part of the limits.
    let same = Limits::from_toml_str(PROP, "elsewhere.toml").unwrap();
    let r = Checker::restore_state(same, &bytes).unwrap();
    assert_eq!(r.state_bytes(), bytes);
    let mut junk = bytes.clone();
    junk[0] ^= 1;
    assert_eq!(
        Checker::restore_state(prop_limits(), &junk).unwrap_err(),
        crate::StateError::Format
    );
    let mut longer = bytes;
    longer.push(0);
    assert!(matches!(
        Checker::restore_state(prop_limits(), &longer).unwrap_err(),
        crate::StateError::Length(_)
    ));
}

/// Past the configured capacity the order-id table grows (incrementally); a restored checker
/// holds every entry and behaves the same.
#[test]
fn state_of_a_grown_table_restores() {
    let text = BASE
        .replace("max_open_orders = 1024", "max_open_orders = 8")
        .replace(
            "duplicate_horizon_orders = 1000",
            "duplicate_horizon_orders = 16",
        );
    let l = Limits::from_toml_str(&text, "grown").unwrap();
    let mut c = Checker::new(l.clone());
    for id in 1..=2_000u64 {
        assert_eq!(
            c.check(&buy(id, 1 + (id % 7) as u32, "LOW", 1, px(10.0)), id),
            Reason::Accepted
        );
    }
    assert!(c.id_table_stats().1 > 0, "the table grew");
    let r = Checker::restore_state(l, &c.state_bytes()).unwrap();
    assert_eq!(r.state_bytes(), c.state_bytes());
    assert_eq!(r.open_orders(), 2_000);
    r.verify_consistency().unwrap();
}

/// A snapshot file is restored as a stream (`restore_state_from`, issue 13 item 1: no buffer
/// of the whole file): read in pieces of any size it gives the same checker as from one
/// slice, and it must be exactly `len` bytes — fewer, more, or a read error is refused.
#[test]
fn state_restores_from_a_stream_read_in_pieces_and_wants_exactly_its_length() {
    /// Yields at most `piece` bytes per read, then fails with `error` where given.
    struct Pieces<'a> {
        b: &'a [u8],
        piece: usize,
        error_at: Option<usize>,
        off: usize,
    }
    impl std::io::Read for Pieces<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            if self.error_at.is_some_and(|e| self.off >= e) {
                return Err(std::io::Error::other("injected read error"));
            }
            let n = out.len().min(self.piece).min(self.b.len() - self.off);
            out[..n].copy_from_slice(&self.b[self.off..self.off + n]);
            self.off += n;
            Ok(n)
        }
    }
    let l = limits("");
    let mut c = Checker::new(l.clone());
    for id in 1..=600u64 {
        let o = if id % 3 == 0 {
            cancel(id - 1, 1)
        } else {
            buy(id, 1 + (id % 7) as u32, "LOW", 1, px(10.0))
        };
        c.check(&o, id);
    }
    let bytes = c.state_bytes();
    let len = bytes.len() as u64;
    for piece in [1, 7, 40, 4096] {
        let src = Pieces {
            b: &bytes,
            piece,
            error_at: None,
            off: 0,
        };
        let r = Checker::restore_state_from(l.clone(), src, len).unwrap();
        assert_eq!(r.state_bytes(), bytes, "pieces of {piece}");
        r.verify_consistency().unwrap();
    }
    // The restored checker decides as the original: a duplicate of an open id, a new one.
    let mut r = Checker::restore_state(l.clone(), &bytes).unwrap();
    for o in [
        buy(599, 1, "LOW", 1, px(10.0)),
        buy(601, 1, "LOW", 1, px(10.0)),
    ] {
        assert_eq!(r.check(&o, 700), c.check(&o, 700));
    }
    assert_eq!(r.state_bytes(), c.state_bytes());

    let pieces = |b, error_at| Pieces {
        b,
        piece: 64,
        error_at,
        off: 0,
    };
    // Fewer bytes than `len`.
    let err = Checker::restore_state_from(l.clone(), pieces(&bytes, None), len + 1);
    assert!(matches!(err, Err(crate::StateError::Length(_))), "{err:?}");
    // More bytes than `len`.
    let mut longer = bytes.clone();
    longer.push(0);
    let err = Checker::restore_state_from(l.clone(), pieces(&longer, None), len);
    assert!(matches!(err, Err(crate::StateError::Length(_))), "{err:?}");
    // A read error half way.
    let err = Checker::restore_state_from(l.clone(), pieces(&bytes, Some(bytes.len() / 2)), len);
    assert!(
        matches!(&err, Err(crate::StateError::Read(e)) if e.contains("injected")),
        "{err:?}"
    );
}

/// Issue 13 item 1: what a snapshot holds is bounded by the windows (the duplicate horizon, one
/// throttle state per account, one position per account × symbol) and the open orders, not by
/// the journal: with every order closed, the encoded state after 10× more orders has the same
/// size. A checker restored from it catches a duplicate inside the horizon and accepts the id
/// just outside it, as the uninterrupted one does.
#[test]
fn snapshot_size_is_bounded_by_the_windows_and_restores_the_horizon() {
    let text = BASE.replace(
        "duplicate_horizon_orders = 1000",
        "duplicate_horizon_orders = 64",
    );
    let l = Limits::from_toml_str(&text, "bounded").unwrap();
    let mut c = Checker::new(l.clone());
    let p = px(10.0);
    let mut sizes = Vec::new();
    let mut now = 0u64;
    for id in 1..=20_000u64 {
        now += 1_000;
        let o = buy(id, 1 + (id % 7) as u32, "LOW", 1, p);
        assert_eq!(c.check(&o, now), Reason::Accepted);
        assert_eq!(c.check(&cancel(id, 1), now), Reason::Accepted);
        if id == 2_000 || id == 20_000 {
            sizes.push(c.state_bytes().len());
        }
    }
    assert_eq!(sizes[0], sizes[1], "the state grew with the flow");
    assert_eq!(c.open_orders(), 0);
    let mut r = Checker::restore_state(l, &c.state_bytes()).unwrap();
    for k in [&mut c, &mut r] {
        let inside = buy(20_000 - 63, 1, "LOW", 1, p);
        let outside = buy(20_000 - 64, 1, "LOW", 1, p);
        assert_eq!(k.check(&inside, now), Reason::DuplicateOrderId);
        assert_eq!(k.check(&outside, now), Reason::Accepted);
    }
    assert_eq!(r.state_bytes(), c.state_bytes());
}

#[test]
fn limits_without_names_keep_the_digest_of_the_builds_before_names() {
    // examples/limits.toml (the engine's built-in limits) as the build before account names
    // digested it: its snapshots name this digest, and an upgrade must not throw them away.
    let l =
        Limits::from_toml_str(include_str!("../../examples/limits.toml"), "any origin").unwrap();
    let hex: String = crate::limits_digest(&l)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        "5dec9795030a694365c1c5e140e61b32339e4c82f0200db9060e044c115f3c4a"
    );
    // A limit keyed by a name is another set of limits.
    let mut named = l.clone();
    named
        .account_names
        .insert("ACC11".to_owned(), AccountLimits::default());
    assert_ne!(crate::limits_digest(&named), crate::limits_digest(&l));
}

/// A restore checks every order-id entry against the rest of the state (the sums
/// `verify_consistency` compares), and names what does not add up: each change below is to a
/// value an entry may hold, so only that check can refuse it.
#[test]
fn a_restore_refuses_entries_the_rest_of_the_state_does_not_sum_to() {
    let l = prop_limits();
    let mut c = Checker::new(l.clone());
    for o in [
        buy(1, 1, "AAA", 10, 100_000),
        sell(2, 1, "BBB", 5, 200_000),
        buy(3, 3, "AAA", 7, 100_000),
    ] {
        assert_eq!(c.check(&o, 5), Reason::Accepted);
    }
    assert_eq!(c.check(&cancel(1, 10), 6), Reason::Accepted);
    // Version 1: fixed entries, whose fields are at known places.
    let mut bytes = Vec::new();
    c.encode_state_as(&mut bytes, crate::checker::state::STATE_VERSION_FIXED_IDS);
    let n = c.ids.len();
    assert_eq!(n, 3, "two open orders and one closed, remembered id");
    let ids_at = bytes.len() - n * 32;
    let entry = |id: u64| {
        (0..n)
            .map(|i| ids_at + i * 32)
            .find(|&at| bytes[at..at + 8] == id.to_le_bytes())
            .expect("the id is encoded")
    };
    let field = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let refused = |b: Vec<u8>, says: &str| {
        let err = Checker::restore_state(l.clone(), &b)
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "expected '{says}' in: {err}");
    };
    Checker::restore_state(l.clone(), &bytes).unwrap();

    // One more open share than the position holds.
    let mut b = bytes.clone();
    let at = entry(2) + 16;
    b[at..at + 8].copy_from_slice(&(field(&bytes, at) + 1).to_le_bytes());
    refused(b, "open orders sum to");
    // Another price: the account's open notional differs.
    let mut b = bytes.clone();
    let at = entry(3) + 8;
    b[at..at + 8].copy_from_slice(&(field(&bytes, at) + 1).to_le_bytes());
    refused(b, "open notional");
    // A remembered id pointing at another horizon entry.
    let mut b = bytes.clone();
    let at = entry(1) + 28;
    b[at] ^= 1;
    refused(b, "does not own horizon ring entry");
    // A closed id no longer remembered.
    let mut b = bytes.clone();
    let at = entry(1) + 16;
    b[at..at + 8].copy_from_slice(&(field(&bytes, at) & !(1 << 63)).to_le_bytes());
    refused(b, "neither open nor remembered");
}

/// Version 2 packs the order ids in blocks of 1,024, each field cut to the bytes its block
/// needs; version 1 (fixed 32-byte entries, what engines before it wrote) still restores, to
/// the same state. Both are restored across several blocks, with ids of every size.
#[test]
fn ids_pack_in_blocks_and_version_1_still_restores() {
    let l = limits("");
    let mut c = Checker::new(l.clone());
    for i in 1..=3_000u64 {
        let id = if i % 3 == 0 {
            u64::MAX - i
        } else {
            i * 1_000_003
        };
        let (account, qty) = (1 + (i % 7) as u32, 1 + i % 5);
        let o = if i % 2 == 0 {
            buy(id, account, "LOW", qty, px(10.0) + (i % 9) as i64)
        } else {
            sell(id, account, "LOW", qty, px(10.0) - (i % 9) as i64)
        };
        assert_eq!(c.check(&o, i), Reason::Accepted, "order {i}");
        if i % 10 == 0 {
            assert_eq!(c.check(&cancel(id, qty), i), Reason::Accepted);
        }
    }
    let v2 = c.state_bytes();
    let mut v1 = Vec::new();
    c.encode_state_as(&mut v1, crate::checker::state::STATE_VERSION_FIXED_IDS);
    assert_eq!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), 2);
    assert_eq!(u32::from_le_bytes(v1[8..12].try_into().unwrap()), 1);
    for bytes in [&v2, &v1] {
        let r = Checker::restore_state(l.clone(), bytes).unwrap();
        assert_eq!(r.state_bytes(), v2);
        r.verify_consistency().unwrap();
    }
    // The large ids (a third) take 8 bytes in every block; the rest of the fields are small.
    // (Ids cancelled before the last 1,000 orders are forgotten.)
    let n = c.ids.len();
    assert!(n > 2 * 1024, "{n} ids: three blocks");
    let prefix = v1.len() - n * 32;
    assert!(
        v2.len() - prefix < n * 20,
        "{} bytes for {n} ids",
        v2.len() - prefix
    );

    // Small ids: a block of them packs to 12 bytes an id or less (here: 2-byte ids).
    let mut small = Checker::new(l.clone());
    for id in 1..=1_000u64 {
        let o = buy(id, 1 + (id % 7) as u32, "LOW", 1, px(10.0));
        assert_eq!(small.check(&o, id), Reason::Accepted);
    }
    let (s2, mut s1) = (small.state_bytes(), Vec::new());
    small.encode_state_as(&mut s1, crate::checker::state::STATE_VERSION_FIXED_IDS);
    let section = s2.len() - (s1.len() - 1_000 * 32);
    assert!(section <= 5 + 1_000 * 12, "{section} bytes for 1,000 ids");
}

/// A version-2 block is refused when a width is 0 or more than its field holds, or an order
/// word has bits above the 48-bit quantity and the two flags; wider fields than needed are
/// read as they are.
#[test]
fn version_2_blocks_are_checked() {
    let l = prop_limits();
    let mut c = Checker::new(l.clone());
    assert_eq!(
        c.check(&sell(7, 1, "AAA", 10, 100_000), 5),
        Reason::Accepted
    );
    let mut v1 = Vec::new();
    c.encode_state_as(&mut v1, crate::checker::state::STATE_VERSION_FIXED_IDS);
    let prefix = v1.len() - 32;
    let e = &v1[prefix..];
    let field = |at: usize, len: usize| {
        let mut a = [0u8; 8];
        a[..len].copy_from_slice(&e[at..at + len]);
        u64::from_le_bytes(a)
    };
    let (id, price, qf, pos, tag) = (
        field(0, 8),
        field(8, 8) as i64,
        field(16, 8),
        field(24, 4),
        field(28, 4),
    );
    let word = (qf & ((1 << 48) - 1)) << 2 | (qf >> 62 & 1) << 1 | qf >> 63;
    assert_eq!(word, 10 << 2 | 2 | 1, "10 open, sell, remembered");
    let zigzag = ((price << 1) ^ (price >> 63)) as u64;
    // The id section as version 2 with the given widths and order word.
    let v2 = |widths: [u8; 5], word: u64| {
        let mut b = c.state_bytes()[..prefix].to_vec();
        b.extend_from_slice(&widths);
        for (w, f) in widths.iter().zip([id, zigzag, word, pos, tag]) {
            b.extend_from_slice(&f.to_le_bytes()[..usize::from(*w).min(8)]);
        }
        b
    };
    let canonical = c.state_bytes();
    assert_eq!(v2([1, 3, 1, 1, 1], word), canonical, "the encoder's widths");
    let wide = Checker::restore_state(l.clone(), &v2([8, 8, 8, 4, 4], word)).unwrap();
    assert_eq!(wide.state_bytes(), canonical);
    for widths in [
        [0, 3, 1, 1, 1],
        [9, 3, 1, 1, 1],
        [1, 3, 1, 5, 1],
        [1, 3, 1, 1, 5],
    ] {
        let err = Checker::restore_state(l.clone(), &v2(widths, word)).unwrap_err();
        assert!(err.to_string().contains("widths"), "{widths:?}: {err}");
    }
    let err = Checker::restore_state(l.clone(), &v2([8, 8, 8, 4, 4], word | 1 << 50));
    assert!(err.unwrap_err().to_string().contains("order word"));
}
