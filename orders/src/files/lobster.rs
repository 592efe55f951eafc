//! LOBSTER message files (<https://lobsterdata.com>): one book event per row,
//! `Time,Type,OrderId,Size,Price,Direction[,MPID]`, with or without a header row, LF or CRLF.
//!
//! Mapping to [`Order`] (see `docs/formats/orders.md`):
//!
//! | LOBSTER type | kind | order_id | qty | price | side |
//! |---|---|---|---|---|---|
//! | 1 new limit order | `New` | OrderId (≥ 1) | Size | Price | Direction |
//! | 2 partial cancel | `Cancel` | OrderId (≥ 1) | Size (shares removed) | Price | Direction |
//! | 3 full delete | `Cancel` | OrderId (≥ 1) | Size (shares removed) | Price | Direction |
//! | 4 visible execution | `Fill` | OrderId (≥ 1) | Size | Price | Direction (passive side) |
//! | 5 hidden execution | `Fill` | 0 (no resting order) | Size | Price | Direction (passive side) |
//! | 6 cross (auction) | `Fill` | 0 (LOBSTER writes -1) | Size | Price | Direction |
//! | 7 halt indicator | `Halt` if Price = -1, `Resume` if 0 (quotes) or 1 (trading) | 0 | Size | Price as given | Direction (0 → Buy) |
//!
//! `ts_ns` = Time (decimal seconds since midnight) × 10^9, parsed digit by digit (no float);
//! digits beyond the ninth decimal are truncated (a real file holds `35821.088778456004`).
//! `account = 1 + order_id % accounts`, so that an order's cancels and fills land on the account
//! of its `New`. The symbol comes from the caller (the file name's `TICKER_` prefix, or an
//! explicit option).

use std::path::Path;

use super::csv_file::parse_u64;
use super::error::{shorten, Column, FileError, FileErrorKind, Location};
use super::limits::{LOBSTER_FIELDS_MAX, LOBSTER_FIELDS_MIN, NS_PER_SECOND, TIME_DECIMALS_KEPT};
use super::BadLines;
use crate::model::{Order, OrderKind, Side, Symbol};

/// The LOBSTER event types, 1..=7.
pub const LOBSTER_TYPES: usize = 7;

/// Field names, for error messages.
const NAMES: [&str; LOBSTER_FIELDS_MAX] = [
    "Time",
    "Type",
    "OrderId",
    "Size",
    "Price",
    "Direction",
    "MPID",
];
const F_TIME: usize = 0;
const F_TYPE: usize = 1;
const F_ID: usize = 2;
const F_SIZE: usize = 3;
const F_PRICE: usize = 4;
const F_DIRECTION: usize = 5;
const _: () = assert!(F_DIRECTION + 1 == LOBSTER_FIELDS_MIN);

const EXPECT_TIME: &str =
    "seconds after midnight as a decimal such as 34200.004241176 (at most 9 decimals are kept)";
const EXPECT_TYPE: &str = "an event type from 1 to 7";
const EXPECT_ID: &str = "a positive order id";
const EXPECT_ID_ANY: &str = "an integer order id (ignored for this type)";
const EXPECT_SIZE: &str = "a non-negative number of shares";
const EXPECT_PRICE: &str = "a positive integer price in 1/10000 dollars";
const EXPECT_PRICE_HALT: &str = "-1 (halt), 0 (quote resume) or 1 (trade resume)";
const EXPECT_DIRECTION: &str = "1 (buy) or -1 (sell)";
const EXPECT_DIRECTION_HALT: &str = "1 (buy), -1 (sell) or 0";
const EXPECT_FIELDS: &str = "6 or 7 fields (Time,Type,OrderId,Size,Price,Direction[,MPID])";

/// Rows imported, by LOBSTER event type (what the file held, before mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LobsterCounts {
    rows: [u64; LOBSTER_TYPES],
}

impl LobsterCounts {
    /// Rows of event type `lobster_type` (1..=7; 0 for any other value).
    pub fn rows_of_type(&self, lobster_type: u8) -> u64 {
        match lobster_type {
            1..=7 => self.rows[lobster_type as usize - 1],
            _ => 0,
        }
    }

    /// All rows imported.
    pub fn total(&self) -> u64 {
        self.rows.iter().sum()
    }
}

fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b',').map(|f| f.trim_ascii())
}

fn is_numeric(f: &[u8]) -> bool {
    let body = f.strip_prefix(b"-").unwrap_or(f);
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, &b""[..]),
    };
    !int.is_empty() && int.iter().all(u8::is_ascii_digit) && frac.iter().all(u8::is_ascii_digit)
}

/// Whether a line looks like a LOBSTER data row: 6 or 7 fields, the first 6 numeric.
pub fn looks_like_row(line: &[u8]) -> bool {
    let n = fields(line).count();
    (LOBSTER_FIELDS_MIN..=LOBSTER_FIELDS_MAX).contains(&n)
        && fields(line).take(LOBSTER_FIELDS_MIN).all(is_numeric)
}

/// Whether a line is a LOBSTER header (`Time,Type,...`, any case).
pub fn is_header(line: &[u8]) -> bool {
    let mut f = fields(line).map(|f| f.strip_prefix(b"\"").unwrap_or(f));
    let mut next_is = |name: &[u8]| {
        f.next()
            .map(|x| x.strip_suffix(b"\"").unwrap_or(x))
            .is_some_and(|x| x.eq_ignore_ascii_case(name))
    };
    next_is(b"time") && next_is(b"type")
}

/// The symbol of a LOBSTER file from its name: the part before the first `_`
/// (`AAPL_2012-06-21_34200000_37800000_message_50.csv.gz` → `AAPL`).
pub fn symbol_from_file_name(path: &Path) -> Result<Symbol, FileErrorKind> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((ticker, _)) = name.split_once('_') else {
        return Err(FileErrorKind::SymbolFromName(format!(
            "{name:?} has no '_'"
        )));
    };
    Symbol::new(ticker).map_err(|e| FileErrorKind::SymbolFromName(format!("{ticker:?}: {e}")))
}

/// Parses decimal seconds into nanoseconds, exactly; digits beyond the ninth decimal are
/// truncated.
pub fn parse_time_ns(f: &[u8]) -> Option<u64> {
    let (int, frac) = match f.iter().position(|&b| b == b'.') {
        Some(p) => (&f[..p], Some(&f[p + 1..])),
        None => (f, None),
    };
    let secs = parse_u64(int)?;
    let mut ns: u64 = 0;
    if let Some(frac) = frac {
        if frac.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
            return None;
        }
        for i in 0..TIME_DECIMALS_KEPT {
            let d = frac.get(i).map_or(0, |&b| (b - b'0') as u64);
            ns = ns * 10 + d;
        }
    }
    secs.checked_mul(NS_PER_SECOND)?.checked_add(ns)
}

fn parse_i64(f: &[u8]) -> Option<i64> {
    match f.strip_prefix(b"-") {
        Some(rest) => {
            let v = parse_u64(rest)?;
            if v == i64::MIN.unsigned_abs() {
                Some(i64::MIN)
            } else {
                i64::try_from(v).ok().map(|v| -v)
            }
        }
        None => parse_u64(f).and_then(|v| i64::try_from(v).ok()),
    }
}

fn bad(field: usize, expected: &'static str, found: &[u8]) -> (usize, FileErrorKind) {
    (
        field,
        FileErrorKind::BadField {
            expected,
            found: shorten(&String::from_utf8_lossy(found)),
        },
    )
}

/// One row mapped to an order, with its LOBSTER type.
fn parse_row(
    row: &[&[u8]],
    symbol: Symbol,
    accounts: u32,
) -> Result<(Order, u8), (usize, FileErrorKind)> {
    let f = row[F_TIME];
    let ts_ns = parse_time_ns(f).ok_or_else(|| bad(F_TIME, EXPECT_TIME, f))?;
    let f = row[F_TYPE];
    let ty = parse_u64(f)
        .filter(|t| (1..=LOBSTER_TYPES as u64).contains(t))
        .ok_or_else(|| bad(F_TYPE, EXPECT_TYPE, f))? as u8;
    let f = row[F_ID];
    let raw_id = parse_i64(f);
    let order_id = match ty {
        1..=4 => raw_id
            .filter(|&id| id >= 1)
            .ok_or_else(|| bad(F_ID, EXPECT_ID, f))? as u64,
        _ => {
            raw_id.ok_or_else(|| bad(F_ID, EXPECT_ID_ANY, f))?;
            0
        }
    };
    let f = row[F_SIZE];
    let qty = parse_u64(f).ok_or_else(|| bad(F_SIZE, EXPECT_SIZE, f))?;
    let f = row[F_PRICE];
    let price = parse_i64(f);
    let (price, kind) = match ty {
        7 => match price {
            Some(-1) => (-1, OrderKind::Halt),
            Some(p @ (0 | 1)) => (p, OrderKind::Resume),
            _ => return Err(bad(F_PRICE, EXPECT_PRICE_HALT, f)),
        },
        _ => {
            let p = price
                .filter(|&p| p > 0)
                .ok_or_else(|| bad(F_PRICE, EXPECT_PRICE, f))?;
            let kind = match ty {
                1 => OrderKind::New,
                2 | 3 => OrderKind::Cancel,
                _ => OrderKind::Fill,
            };
            (p, kind)
        }
    };
    let f = row[F_DIRECTION];
    let side = match (parse_i64(f), ty) {
        (Some(1), _) => Side::Buy,
        (Some(-1), _) => Side::Sell,
        (Some(0), 7) => Side::Buy,
        (_, 7) => return Err(bad(F_DIRECTION, EXPECT_DIRECTION_HALT, f)),
        _ => return Err(bad(F_DIRECTION, EXPECT_DIRECTION, f)),
    };
    let account = 1 + (order_id % accounts as u64) as u32;
    Ok((
        Order {
            order_id,
            ts_ns,
            price,
            qty,
            account,
            symbol,
            side,
            kind,
        },
        ty,
    ))
}

/// Reads every row of a LOBSTER message text. `accounts` must be ≥ 1.
pub fn parse(
    path: &Path,
    text: &[u8],
    symbol: Symbol,
    accounts: u32,
    bad_lines: &mut BadLines,
) -> Result<(Vec<Order>, LobsterCounts), FileError> {
    debug_assert!(accounts >= 1);
    let mut orders = Vec::with_capacity(text.len() / 40);
    let mut counts = LobsterCounts::default();
    let mut row: [&[u8]; LOBSTER_FIELDS_MAX] = [b""; LOBSTER_FIELDS_MAX];
    let mut first = true;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line_no = i as u64 + 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.trim_ascii().is_empty() {
            continue;
        }
        if std::mem::take(&mut first) && is_header(line) {
            continue;
        }
        let mut n = 0;
        for f in fields(line) {
            if n < LOBSTER_FIELDS_MAX {
                row[n] = f;
            }
            n += 1;
        }
        if !(LOBSTER_FIELDS_MIN..=LOBSTER_FIELDS_MAX).contains(&n) {
            bad_lines.skip(FileError::new(
                path,
                Location::Line {
                    line: line_no,
                    column: None,
                },
                FileErrorKind::FieldCount {
                    expected: EXPECT_FIELDS.to_owned(),
                    found: n,
                },
            ))?;
            continue;
        }
        match parse_row(&row[..n], symbol, accounts) {
            Ok((order, ty)) => {
                counts.rows[ty as usize - 1] += 1;
                orders.push(order);
            }
            Err((field, kind)) => bad_lines.skip(FileError::new(
                path,
                Location::Line {
                    line: line_no,
                    column: Some(Column {
                        index: field + 1,
                        name: NAMES[field],
                    }),
                },
                kind,
            ))?,
        }
    }
    Ok((orders, counts))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(text: &str, max_errors: u64) -> Result<(Vec<Order>, LobsterCounts, u64), FileError> {
        let mut bad = BadLines::new(max_errors);
        let (o, c) = parse(
            Path::new("AAPL_x.csv"),
            text.as_bytes(),
            Symbol::new("AAPL").unwrap(),
            16,
            &mut bad,
        )?;
        Ok((o, c, bad.skipped()))
    }

    #[test]
    fn time_is_exact_and_truncated_beyond_ns() {
        assert_eq!(parse_time_ns(b"34200.004241176"), Some(34_200_004_241_176));
        assert_eq!(
            parse_time_ns(b"35821.088778456004"),
            Some(35_821_088_778_456)
        );
        assert_eq!(parse_time_ns(b"34200.01746"), Some(34_200_017_460_000));
        assert_eq!(parse_time_ns(b"34200"), Some(34_200_000_000_000));
        for bad in [
            &b""[..],
            b"-1.5",
            b"1e5",
            b"34200.",
            b".5",
            b"3.4.5",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_time_ns(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn maps_every_type() {
        let text = "34200.1,1,877391,100,5853300,1\n\
                    34200.2,2,877391,10,5853300,1\n\
                    34200.3,3,877391,90,5853300,1\n\
                    34200.4,4,877392,5,5853400,-1\n\
                    34200.5,5,0,7,5853350,1\n\
                    34200.6,6,-1,45725,33552100,-1\n\
                    34200.7,7,0,0,-1,0\n\
                    34200.8,7,0,0,1,-1\n";
        let (o, c, skipped) = load(text, 0).unwrap();
        assert_eq!(skipped, 0);
        let kinds: Vec<_> = o.iter().map(|o| o.kind).collect();
        use OrderKind::*;
        assert_eq!(kinds, [New, Cancel, Cancel, Fill, Fill, Fill, Halt, Resume]);
        assert_eq!(o[0].ts_ns, 34_200_100_000_000);
        assert_eq!(o[0].account, 1 + (877_391 % 16) as u32);
        assert_eq!(
            o[1].account, o[0].account,
            "cancel lands on the order's account"
        );
        assert_eq!((o[1].qty, o[2].qty), (10, 90));
        assert_eq!(o[3].side, Side::Sell);
        assert_eq!((o[4].order_id, o[4].price), (0, 5_853_350));
        assert_eq!((o[5].order_id, o[5].qty, o[5].account), (0, 45_725, 1));
        assert_eq!((o[6].price, o[6].side), (-1, Side::Buy));
        assert_eq!(o[7].price, 1);
        assert_eq!(o[0].symbol.as_str(), "AAPL");
        for t in 1..=6u8 {
            assert_eq!(c.rows_of_type(t), 1);
        }
        assert_eq!(c.rows_of_type(7), 2);
        assert_eq!(c.rows_of_type(0), 0);
        assert_eq!(c.total(), 8);
    }

    #[test]
    fn header_crlf_blank_lines_and_mpid_column() {
        let text = "Time,Type,OrderId,Size,Price,Direction\r\n34200.01746,1,5,10,2205100,-1\r\n\r\n34200.02,3,5,10,2205100,-1,UBSS\r\n34200.03,3,5,10,2205100,-1,null";
        let (o, _, _) = load(text, 0).unwrap();
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].ts_ns, 34_200_017_460_000);
    }

    #[test]
    fn errors_name_line_and_field() {
        let m = load("34200.1,1,5,10,100,1\n34200.2,9,5,10,100,1\n", 0)
            .unwrap_err()
            .to_string();
        assert_eq!(
            m,
            "AAPL_x.csv: line 2, column 2 (Type): expected an event type from 1 to 7, found \"9\""
        );
        let m = load("34200.1,1,-1,10,100,1\n", 0).unwrap_err().to_string();
        assert!(
            m.contains("column 3 (OrderId)") && m.contains("positive order id"),
            "{m}"
        );
        let m = load("34200.1,1,5,10,100,2\n", 0).unwrap_err().to_string();
        assert!(m.contains("column 6 (Direction)"), "{m}");
        let m = load("34200.1,7,0,0,5,1\n", 0).unwrap_err().to_string();
        assert!(
            m.contains("column 5 (Price)") && m.contains("-1 (halt)"),
            "{m}"
        );
        let m = load("34200.1,1,5,10,0,1\n", 0).unwrap_err().to_string();
        assert!(m.contains("positive integer price"), "{m}");
        let m = load("1,2,3\n", 0).unwrap_err().to_string();
        assert!(
            m.contains("line 1: expected 6 or 7 fields") && m.contains("found 3"),
            "{m}"
        );
        let m = load("x,1,5,10,100,1\n", 0).unwrap_err().to_string();
        assert!(m.contains("column 1 (Time)"), "{m}");
        // A header is only allowed as the first line.
        let m = load(
            "34200.1,1,5,10,100,1\nTime,Type,OrderId,Size,Price,Direction\n",
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(m.contains("line 2"), "{m}");
    }

    #[test]
    fn max_errors_skips_and_counts() {
        let text = "34200.1,1,5,10,100,1\ngarbage\n34200.2,1,6,10,100,x\n34200.3,1,7,10,100,1\n";
        let (o, c, skipped) = load(text, 2).unwrap();
        assert_eq!((o.len(), skipped, c.total()), (2, 2, 2));
        let m = load(text, 1).unwrap_err().to_string();
        assert!(m.contains("line 3") && m.contains("max_errors = 1"), "{m}");
    }

    #[test]
    fn detection_helpers() {
        assert!(looks_like_row(b"34200.004241176,1,16113575,18,5853300,1"));
        assert!(looks_like_row(b"34200.000376608,1,1,1,33552100,-1,null"));
        assert!(!looks_like_row(b"34200.1,1,2,3,4"));
        assert!(!looks_like_row(b"order_id,account,symbol,side,qty,price"));
        assert!(is_header(b"Time,Type,OrderId,Size,Price,Direction"));
        assert!(is_header(b"\"time\",\"TYPE\""));
        assert!(!is_header(b"34200.1,1,2,3,4,1"));
    }

    #[test]
    fn symbol_from_name() {
        let s = symbol_from_file_name(Path::new(
            "/d/AAPL_2012-06-21_34200000_37800000_message_50.csv.gz",
        ))
        .unwrap();
        assert_eq!(s.as_str(), "AAPL");
        let m = symbol_from_file_name(Path::new("/d/messages.csv"))
            .unwrap_err()
            .to_string();
        assert!(m.contains("--symbol"), "{m}");
        assert!(symbol_from_file_name(Path::new("/d/W@W_1.csv")).is_err());
    }
}
