//! Exact prices at every entry point (issue 13 item 11): a decimal with at most 4 decimal
//! places becomes exactly its number of ticks, and one with more (a non-zero last digit) is
//! refused, never rounded, in
//! - a CSV order file (`orders::files`, the `price` column),
//! - a JSON ingress frame (`engine::frames::parse_json_order`),
//! - the risk limits file (`risk::Limits::from_toml_str`, `reference_price`),
//! - a JSON order to the risk server (`risk::Service::handle`): the limits put a collar of 0
//!   ticks around the exact price, so a price off by one tick would be `REJECT price-collar`.
//!
//! All of them go through `orders::parse_decimal_ticks`. Cases: proptest's default (256) or
//! `PROPTEST_CASES=N`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use orders::files::{LoadOptions, OrderFile};
use orders::Symbol;
use proptest::prelude::*;

/// `[sign]int[.frac]`: `frac` has 0 to 4 digits, or 5 to 13 ending in a non-zero digit.
#[derive(Debug, Clone)]
struct Decimal {
    sign: &'static str,
    int: u64,
    frac: String,
}

impl Decimal {
    fn text(&self) -> String {
        match self.frac.is_empty() {
            true => format!("{}{}", self.sign, self.int),
            false => format!("{}{}.{}", self.sign, self.int, self.frac),
        }
    }

    /// The ticks, computed apart from the parser under test; `None`: more than 4 decimals.
    fn ticks(&self) -> Option<i64> {
        if self.frac.len() > 4 {
            return None;
        }
        let frac: i64 = format!("{:0<4}", self.frac).parse().unwrap();
        let t = self.int as i64 * 10_000 + frac;
        Some(if self.sign == "-" { -t } else { t })
    }
}

fn decimal() -> impl Strategy<Value = Decimal> {
    (
        prop_oneof![Just(""), Just("+"), Just("-")],
        // Small, and up to the largest whole number of units the limits' money bound allows
        // (10^15 units; an i64 of ticks holds 922337203685477).
        prop_oneof![0u64..10_000, 0u64..=922_337_203_685_476],
        prop_oneof!["[0-9]{0,4}", "[0-9]{4,12}[1-9]"],
    )
        .prop_map(|(sign, int, frac)| Decimal { sign, int, frac })
}

fn csv_price(text: &str) -> Result<i64, String> {
    let csv = format!("order_id,account,symbol,side,qty,price\n1,1,AAPL,BUY,1,{text}\n");
    OrderFile::from_bytes(Path::new("p.csv"), csv.as_bytes(), &LoadOptions::default())
        .map(|f| f.get(0).price)
        .map_err(|e| e.to_string())
}

fn ingress_json_price(text: &str) -> Result<i64, String> {
    let msg = format!(
        r#"{{"order_id":1,"account":1,"symbol":"AAPL","side":"BUY","qty":1,"price":{text}}}"#
    );
    engine::frames::parse_json_order(msg.as_bytes())
        .map(|o| o.price)
        .map_err(|e| e.to_string())
}

fn limits(reference_price: &str) -> Result<risk::Limits, String> {
    let toml = format!(
        "[capacity]\nmax_open_orders = 16\nmax_positions = 16\nmax_accounts = 4\nmax_symbols = 4\n\
         [defaults]\nmax_order_qty = 10\nmax_order_notional = 1e15\nmax_long_qty = 10\n\
         max_short_qty = 10\ncredit_limit_notional = 1e15\n\
         [symbols.AAPL]\nreference_price = {reference_price}\ncollar_ticks = 0\n"
    );
    risk::Limits::from_toml_str(&toml, "p.toml").map_err(|e| e.to_string())
}

fn toml_price(text: &str) -> Result<i64, String> {
    let l = limits(text)?;
    Ok(l.symbols[&Symbol::new("AAPL").unwrap()]
        .reference_price
        .expect("a reference price"))
}

/// The risk server's reply to a JSON order at `text`, with the collar centred on `reference`.
fn risk_json_reply(reference: &str, text: &str) -> String {
    let checker = risk::Checker::new(limits(reference).unwrap());
    let mut service = risk::Service::new(
        checker,
        risk::ServiceOptions {
            max_batch_orders: 1,
            config_path: None,
        },
    );
    let mut reply = Vec::new();
    let req = format!(r#"{{"symbol":"AAPL","quantity":1,"price":{text}}}"#);
    service.handle(req.as_bytes(), &mut reply);
    String::from_utf8(reply).unwrap()
}

proptest! {
    #[test]
    fn every_entry_point_is_exact_or_refuses(d in decimal()) {
        let text = d.text();
        // JSON has no leading `+` (CSV and TOML do): the same number without it.
        let json_text = text.strip_prefix('+').unwrap_or(&text);
        let csv = csv_price(&text);
        let json = ingress_json_price(json_text);
        match d.ticks() {
            Some(ticks) => {
                prop_assert_eq!(csv, Ok(ticks), "CSV {}", text);
                prop_assert_eq!(json, Ok(ticks), "JSON frame {}", text);
                if ticks > 0 {
                    prop_assert_eq!(toml_price(&text), Ok(ticks), "TOML {}", text);
                    // The collar is centred on the exact ticks (written back as the shortest
                    // decimal): the order at `text` must land on it.
                    let exact = orders::format_price_ticks(ticks);
                    prop_assert_eq!(risk_json_reply(&exact, json_text), "OK", "risk JSON {}", text);
                }
            }
            None => {
                let precise = |r: &Result<i64, String>| {
                    r.as_ref().is_err_and(|e| e.contains("4 decimal places"))
                };
                prop_assert!(precise(&csv), "CSV {}: {:?}", text, csv);
                prop_assert!(precise(&json), "JSON frame {}: {:?}", text, json);
                let toml = toml_price(&text);
                prop_assert!(precise(&toml), "TOML {}: {:?}", text, toml);
                let reply = risk_json_reply("1", json_text);
                prop_assert!(
                    reply.starts_with("ERROR ") && reply.contains("more than 4 decimal places"),
                    "risk JSON {}: {}", text, reply
                );
            }
        }
    }
}
