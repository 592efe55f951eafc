//! The risk server's JSON orders against `docs/formats/risk-protocol.md` (issue 13 item 11):
//! the reply table says which inputs are an `ERROR` (not an order) and which a `REJECT` (an
//! order the checks refused), and prices are exact from the JSON text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use risk::{Checker, Limits, Service, ServiceOptions};

const LIMITS: &str = r#"
[capacity]
max_open_orders = 64
[defaults]
max_order_qty = 1000
max_order_notional = 1000000000
max_long_qty = 100000
max_short_qty = 100000
credit_limit_notional = 1000000000
[symbols.AAPL]
reference_price = 1000.1234
collar_ticks = 0
"#;

fn service() -> Service {
    Service::new(
        Checker::new(Limits::from_toml_str(LIMITS, "t").unwrap()),
        ServiceOptions {
            max_batch_orders: 8,
            config_path: None,
        },
    )
}

fn reply(s: &mut Service, request: &str) -> String {
    let mut out = Vec::new();
    s.handle(request.as_bytes(), &mut out);
    String::from_utf8(out).unwrap()
}

/// The doc's table: zero or negative price and zero quantity are well-formed orders that the
/// checks reject `invalid-order`; a price that is not an exact JSON number is an `ERROR`.
#[test]
fn replies_agree_with_the_protocol_doc() {
    let mut s = service();
    for (request, want) in [
        (
            r#"{"symbol":"AAPL","quantity":1,"price":0}"#,
            "REJECT invalid-order",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":-1000.1234}"#,
            "REJECT invalid-order",
        ),
        (
            r#"{"symbol":"AAPL","quantity":0,"price":1000.1234}"#,
            "REJECT invalid-order",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":0,"kind":"fill"}"#,
            "REJECT invalid-order",
        ),
        (
            r#"{"symbol":"AAPL","quantity":0,"price":1,"kind":"cancel","order_id":5}"#,
            "REJECT invalid-order",
        ),
        (r#"{"symbol":"AAPL","quantity":1,"price":1000.1234}"#, "OK"),
        // Exact: one tick off the reference is outside a collar of 0 ticks.
        (
            r#"{"symbol":"AAPL","quantity":1,"price":1000.1235}"#,
            "REJECT price-collar",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":1.0001234e3}"#,
            "OK",
        ),
    ] {
        assert_eq!(reply(&mut s, request), want, "{request}");
    }
    for (request, want) in [
        // Rounded through f64 and a tolerance, this was 10001235 ticks: `REJECT price-collar`.
        (
            r#"{"symbol":"AAPL","quantity":1,"price":1000.12345}"#,
            "more than 4 decimal places",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":1000.12340}"#,
            "more than 4 decimal places",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":"1000.1234"}"#,
            "is not a decimal number",
        ),
        (
            r#"{"symbol":"AAPL","quantity":-1,"price":1}"#,
            "malformed JSON request",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1.5,"price":1}"#,
            "malformed JSON request",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":null}"#,
            "missing field `price`",
        ),
    ] {
        let r = reply(&mut s, request);
        assert!(
            r.starts_with("ERROR ") && r.contains(want),
            "{request}: {r:?} should be an ERROR mentioning {want:?}"
        );
    }
}

/// `--json-replies short`: exactly `OK` or `REJECT` (never more than 6 bytes, for the source
/// design's 16-byte reply buffer), also for what detailed mode answers `ERROR`; the verdicts
/// and the malformed requests are still counted. Admin replies stay JSON.
#[test]
fn short_replies_are_exactly_ok_or_reject() {
    let mut s = service();
    s.set_json_replies(risk::JsonReplies::Short);
    for (request, want) in [
        (r#"{"symbol":"AAPL","quantity":1,"price":1000.1234}"#, "OK"),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":1000.1235}"#,
            "REJECT",
        ),
        (
            r#"{"symbol":"AAPL","quantity":5000,"price":1000.1234}"#,
            "REJECT",
        ),
        (
            r#"{"symbol":"AAPL","quantity":1,"price":1000.12345}"#,
            "REJECT",
        ),
        (r#"{"symbol":"AAPL","quantity":1}"#, "REJECT"),
        (r#"{"symbol":"AAPL""#, "REJECT"),
    ] {
        assert_eq!(reply(&mut s, request), want, "{request}");
    }
    let long = format!(r#"{{"symbol":"{}"}}"#, "A".repeat(5000));
    assert_eq!(reply(&mut s, &long), "REJECT");
    let stats = s.stats();
    assert_eq!(stats.json_orders, 3);
    assert_eq!(stats.malformed, 3);
    assert_eq!(stats.too_large, 1);
    assert_eq!(stats.verdicts["price-collar"], 1);
    assert_eq!(stats.verdicts["max-qty"], 1);
    let admin: serde_json::Value =
        serde_json::from_str(&reply(&mut s, r#"{"admin":"stats"}"#)).unwrap();
    assert_eq!(admin["ok"], true);
    s.set_json_replies(risk::JsonReplies::Detailed);
    assert_eq!(
        reply(
            &mut s,
            r#"{"symbol":"AAPL","quantity":1,"price":1000.1235}"#
        ),
        "REJECT price-collar"
    );
}
