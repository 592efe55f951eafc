//! Garbage in, for the limits parser (`risk::Limits::from_toml_str`, used by `risk-server
//! --config` and the engine's embedded service; issue 7): random TOML over the real keys with
//! values on and around every bound, the annotated example with random byte edits, and raw
//! bytes. Every time: no panic; a refusal names the key; an accepted file obeys every bound
//! that `examples/limits.toml` and `docs/risk.md` document.
//!
//! Cases: proptest's default (256 per property) or `PROPTEST_CASES=N` for a long run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use risk::config::{Collar, Throttle};
use risk::limits::{
    ACCOUNTS_MAX, COLLAR_BPS_MAX, DUPLICATE_HORIZON_ORDERS_MAX, MONEY_UNITS_MAX, OPEN_ORDERS_MAX,
    ORDERS_PER_S_MAX, ORDER_QTY_LIMIT_MAX, POSITIONS_MAX, POSITION_QTY_LIMIT_MAX, SYMBOLS_MAX,
};
use risk::{ConfigError, Limits};

/// Largest money amount in notional ticks (1 currency unit = 10 000 ticks).
const MONEY_TICKS_MAX: i128 = (MONEY_UNITS_MAX * 10_000.0) as i128;

const GLOBAL: &[&str] = &[
    "state",
    "unknown_account",
    "unknown_symbol",
    "duplicate_horizon_orders",
    "duplicate_horizon_ms",
    "json_account",
];
const CAPACITY: &[&str] = &[
    "max_accounts",
    "max_symbols",
    "max_positions",
    "max_open_orders",
];
const DEFAULTS: &[&str] = &[
    "max_order_qty",
    "max_order_notional",
    "collar_bps",
    "collar_ticks",
    "max_long_qty",
    "max_short_qty",
    "credit_limit_notional",
    "max_orders_per_s",
    "burst_orders",
];
const ACCOUNT: &[&str] = &[
    "state",
    "max_order_qty",
    "max_order_notional",
    "max_long_qty",
    "max_short_qty",
    "credit_limit_notional",
    "max_orders_per_s",
    "burst_orders",
];
const SYMBOL: &[&str] = &[
    "state",
    "restricted",
    "reference_price",
    "max_order_qty",
    "max_order_notional",
    "max_long_qty",
    "max_short_qty",
    "collar_bps",
    "collar_ticks",
];

/// A table name: the fixed sections, or an account / symbol (good and bad names).
fn table() -> impl Strategy<Value = (String, &'static [&'static str])> {
    prop_oneof![
        1 => Just(("global".to_owned(), GLOBAL)),
        1 => Just(("capacity".to_owned(), CAPACITY)),
        3 => Just(("defaults".to_owned(), DEFAULTS)),
        2 => prop::sample::select(vec!["1", "2", "7", "4294967295", "4294967296", "-1", "x"])
            .prop_map(|a| (format!("accounts.\"{a}\""), ACCOUNT)),
        2 => prop::sample::select(vec!["AAPL", "msft", "S0001", "TOOLONGSYMBOLNAME", "A B", ""])
            .prop_map(|s| (format!("symbols.\"{s}\""), SYMBOL)),
    ]
}

/// TOML values on and around the bounds, of every type the file uses, and some it does not.
fn value() -> impl Strategy<Value = String> {
    let ints = prop::sample::select(vec![
        i64::MIN,
        -1,
        0,
        1,
        2,
        100,
        10_000,
        100_000,
        100_001,
        1 << 20,
        (1 << 20) + 1,
        1 << 24,
        (1 << 24) + 1,
        1 << 26,
        (1 << 26) + 1,
        1 << 40,
        (1 << 40) + 1,
        1 << 50,
        (1 << 50) + 1,
        1_000_000_000,
        1_000_000_001,
        u32::MAX as i64,
        u32::MAX as i64 + 1,
        i64::MAX,
    ])
    .prop_map(|v| v.to_string());
    let floats = prop::sample::select(vec![
        "0.0",
        "-0.0",
        "-1.5",
        "0.00001",
        "0.0001",
        "0.5",
        "1.0",
        "185.25",
        "1e15",
        "1.0000001e15",
        "1e300",
        "nan",
        "inf",
        "-inf",
        "123.45678",
    ])
    .prop_map(str::to_owned);
    let strings = prop::sample::select(vec![
        "active",
        "reducing",
        "halted",
        "defaults",
        "reject",
        "sometimes",
        "",
    ])
    .prop_map(|s| format!("{s:?}"));
    prop_oneof![
        5 => ints,
        4 => floats,
        2 => strings,
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => Just("[1, 2]".to_owned()),
    ]
}

type Entries = Vec<((String, String), String)>;

fn entries() -> impl Strategy<Value = Entries> {
    prop::collection::vec(
        (table(), any::<prop::sample::Index>(), value()).prop_map(|((t, keys), i, v)| {
            // Now and then a key the format does not have.
            let k = if i.index(12) == 0 {
                "colour".to_owned()
            } else {
                keys[i.index(keys.len())].to_owned()
            };
            ((t, k), v)
        }),
        0..16,
    )
}

/// Renders the triples as TOML (a later value of a key wins; `[defaults]` is always present,
/// possibly empty, half the time).
fn render(entries: &Entries, with_defaults: bool) -> String {
    let mut tables: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    if with_defaults {
        tables.entry("defaults").or_default();
    }
    for ((t, k), v) in entries {
        tables.entry(t).or_default().insert(k, v);
    }
    let mut text = String::new();
    for (t, kv) in tables {
        text.push_str(&format!("[{t}]\n"));
        for (k, v) in kv {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    text
}

/// A valid file setting every key of every section, to change one value at a time.
const BASE: &str = r#"
[global]
state = "active"
unknown_account = "defaults"
unknown_symbol = "defaults"
duplicate_horizon_orders = 65536
duplicate_horizon_ms = 0
json_account = 0
[capacity]
max_accounts = 1024
max_symbols = 1024
max_positions = 65536
max_open_orders = 65536
[defaults]
max_order_qty = 100000
max_order_notional = 8000000
collar_bps = 600
max_long_qty = 1000000
max_short_qty = 1000000
credit_limit_notional = 5000000000
max_orders_per_s = 1000000
burst_orders = 100000
[accounts.7]
state = "active"
max_order_qty = 5000
max_order_notional = 100000
max_long_qty = 10000
max_short_qty = 10000
credit_limit_notional = 1000000
max_orders_per_s = 100
burst_orders = 10
[symbols.AAPL]
state = "active"
restricted = false
reference_price = 185.25
max_order_qty = 5000
max_order_notional = 100000
max_long_qty = 10000
max_short_qty = 10000
collar_ticks = 1000
"#;

fn throttle_ok(t: &Throttle) {
    assert!((1..=ORDERS_PER_S_MAX).contains(&t.orders_per_s), "{t:?}");
    assert!((1..=ORDERS_PER_S_MAX).contains(&t.burst_orders), "{t:?}");
    assert!(t.interval_ns >= 1, "{t:?}");
}

fn money_ok(ticks: i128, what: &str) {
    // Documented: at least one notional tick (1e-4) and ≤ 1e15 currency units.
    assert!(
        (1..=MONEY_TICKS_MAX).contains(&ticks),
        "{what}: accepted {ticks} ticks"
    );
}

fn collar_ok(c: &Option<Collar>) {
    match c {
        Some(Collar::Bps(b)) => assert!(*b <= COLLAR_BPS_MAX),
        Some(Collar::Ticks(t)) => assert!(*t >= 0),
        None => {}
    }
}

/// Every documented bound of accepted limits.
fn assert_within_bounds(l: &Limits) {
    assert!((1..=DUPLICATE_HORIZON_ORDERS_MAX).contains(&l.duplicate_horizon_orders));
    let c = &l.capacity;
    assert!((1..=ACCOUNTS_MAX).contains(&c.max_accounts));
    assert!((1..=SYMBOLS_MAX).contains(&c.max_symbols));
    assert!((1..=POSITIONS_MAX).contains(&c.max_positions));
    assert!((1..=OPEN_ORDERS_MAX).contains(&c.max_open_orders));
    let d = &l.defaults;
    assert!((1..=ORDER_QTY_LIMIT_MAX).contains(&d.max_order_qty));
    money_ok(d.max_order_notional_ticks, "defaults.max_order_notional");
    money_ok(
        d.credit_limit_notional_ticks,
        "defaults.credit_limit_notional",
    );
    assert!(d.max_long_qty <= POSITION_QTY_LIMIT_MAX);
    assert!(d.max_short_qty <= POSITION_QTY_LIMIT_MAX);
    collar_ok(&d.collar);
    if let Some(t) = &d.throttle {
        throttle_ok(t);
    }
    assert!(l.accounts.len() as u64 <= c.max_accounts);
    for a in l.accounts.values() {
        if let Some(q) = a.max_order_qty {
            assert!((1..=ORDER_QTY_LIMIT_MAX).contains(&q));
        }
        for m in [a.max_order_notional_ticks, a.credit_limit_notional_ticks]
            .into_iter()
            .flatten()
        {
            money_ok(m, "accounts.N");
        }
        for q in [a.max_long_qty, a.max_short_qty].into_iter().flatten() {
            assert!(q <= POSITION_QTY_LIMIT_MAX);
        }
        if let Some(t) = &a.throttle {
            throttle_ok(t);
        }
    }
    assert!(l.symbols.len() as u64 <= c.max_symbols);
    for s in l.symbols.values() {
        if let Some(p) = s.reference_price {
            assert!(p > 0);
        }
        if let Some(q) = s.max_order_qty {
            assert!((1..=ORDER_QTY_LIMIT_MAX).contains(&q));
        }
        if let Some(m) = s.max_order_notional_ticks {
            money_ok(m, "symbols.SYM.max_order_notional");
        }
        for q in [s.max_long_qty, s.max_short_qty].into_iter().flatten() {
            assert!(q <= POSITION_QTY_LIMIT_MAX);
        }
        collar_ok(&s.collar);
    }
}

/// What every refusal must look like: it names its origin; each problem has a key.
fn check_refusal(e: &ConfigError) {
    let text = e.to_string();
    assert!(text.starts_with("props.toml"), "names the file: {text}");
    if let ConfigError::Invalid { problems, .. } = e {
        assert!(!problems.is_empty());
        for p in problems {
            assert!(!p.key.is_empty() && !p.message.is_empty(), "{p:?}");
            assert!(text.contains(&p.to_string()), "{text}");
        }
    }
}

#[test]
fn the_base_file_is_valid() {
    if let Err(e) = parse(BASE) {
        panic!("{e}");
    }
}

fn parse(text: &str) -> Result<Limits, ConfigError> {
    Limits::from_toml_str(text, "props.toml")
}

/// Replaces (or adds) `key = value` in `[table]` of [`BASE`].
fn with_value(table: &str, key: &str, value: &str) -> String {
    let mut out = String::new();
    let mut current = String::new();
    let mut done = false;
    let header = format!("[{table}]");
    for line in BASE.lines() {
        if line.starts_with('[') {
            if current == header && !done {
                out.push_str(&format!("{key} = {value}\n"));
                done = true;
            }
            current = line.to_owned();
        } else if current == header && line.split(" = ").next() == Some(key) {
            out.push_str(&format!("{key} = {value}\n"));
            done = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        if current != header {
            out.push_str(&format!("{header}\n"));
        }
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// Keys a value can make a problem be reported under instead of its own.
fn related(dotted: &str) -> Vec<String> {
    let prefix = dotted.rsplit_once('.').map_or("", |(p, _)| p);
    let mut keys = vec![dotted.to_owned()];
    if dotted.ends_with("collar_bps") || dotted.ends_with("collar_ticks") {
        keys.push(format!("{prefix}.collar_bps"));
        keys.push(format!("{prefix}.collar_ticks"));
    }
    if dotted.ends_with("max_orders_per_s") || dotted.ends_with("burst_orders") {
        keys.push(format!("{prefix}.max_orders_per_s"));
        keys.push(format!("{prefix}.burst_orders"));
    }
    if dotted == "capacity.max_accounts" || dotted == "capacity.max_symbols" {
        keys.push(dotted.to_owned());
    }
    keys
}

proptest! {
    /// Random files over the real keys: accepted ones obey every bound; refused ones say why,
    /// with the key.
    #[test]
    fn random_limits_are_refused_by_key_or_within_bounds(e in entries(), with_defaults: bool) {
        match parse(&render(&e, with_defaults)) {
            Ok(l) => assert_within_bounds(&l),
            Err(err) => check_refusal(&err),
        }
    }

    /// Each value of a valid file in turn changed: accepted within bounds, or refused naming
    /// that key (or the key it is checked against).
    #[test]
    fn one_bad_value_is_named_by_its_key(v in value()) {
        for (section, keys) in [
            ("global", GLOBAL),
            ("capacity", CAPACITY),
            ("defaults", DEFAULTS),
            ("accounts.7", ACCOUNT),
            ("symbols.AAPL", SYMBOL),
        ] {
            for key in keys {
                let text = with_value(section, key, &v);
                let dotted = format!("{section}.{key}");
                match parse(&text) {
                    Ok(l) => assert_within_bounds(&l),
                    Err(ConfigError::Parse { message, .. }) => {
                        prop_assert!(message.contains(key), "{dotted} = {v}: {message}");
                    }
                    Err(ConfigError::Invalid { problems, .. }) => {
                        let want = related(&dotted);
                        prop_assert!(
                            problems.iter().any(|p| want.contains(&p.key)),
                            "{dotted} = {v}: {problems:?}"
                        );
                    }
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
        }
    }

    /// The annotated example with random bytes changed, removed or inserted: never a panic.
    #[test]
    fn the_example_with_random_edits_never_panics(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/limits.toml");
        let mut bytes = std::fs::read(path).unwrap();
        for (at, b, op) in edits {
            let i = at.index(bytes.len().max(1));
            match op {
                0 if i < bytes.len() => bytes[i] = b,
                1 if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.insert(i.min(bytes.len()), b),
            }
        }
        match parse(&String::from_utf8_lossy(&bytes)) {
            Ok(l) => assert_within_bounds(&l),
            Err(e) => check_refusal(&e),
        }
    }

    /// Raw bytes: never a panic.
    #[test]
    fn raw_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        match parse(&String::from_utf8_lossy(&bytes)) {
            Ok(l) => assert_within_bounds(&l),
            Err(e) => check_refusal(&e),
        }
    }
}

/// Found by the properties above: a money amount above 0 that is smaller than half a notional
/// tick (e.g. `max_order_notional = 0.00001`) passed the "must be > 0" check but became a
/// limit of 0 ticks. Such amounts are now refused, naming the key.
#[test]
fn tiny_money_amounts_are_refused() {
    for key in ["max_order_notional", "credit_limit_notional"] {
        let text = with_value("defaults", key, "0.00001");
        match parse(&text) {
            Err(ConfigError::Invalid { problems, .. }) => {
                assert!(problems.iter().any(|p| p.key == format!("defaults.{key}")));
            }
            other => panic!("defaults.{key} = 0.00001 accepted: {other:?}"),
        }
    }
}
