//! The CSV order file.
//!
//! A header row names the columns; they are found by name (trimmed, any case), in any order,
//! and columns with other names are ignored. Required: `order_id,account,symbol,side,qty,price`;
//! optional: `ts_ns` (empty or absent: 0) and `kind` (empty or absent: `new`). The writer emits
//! `order_id,account,symbol,side,qty,price,ts_ns,kind` with `BUY`/`SELL`, the shortest exact
//! decimal price, lower-case kinds and LF line ends.

use std::io::{self, Write};
use std::path::Path;

use super::error::{shorten, Column, FileError, FileErrorKind, Location};
use super::BadLines;
use crate::account_names::{is_named_account, AccountNames, ACCOUNT_NAMES_MAX};
use crate::model::{Order, OrderKind, Side, Symbol};
use crate::price::{format_price_ticks, parse_price_ticks, PriceError};

/// The header the writer emits.
pub const HEADER: &str = "order_id,account,symbol,side,qty,price,ts_ns,kind";

/// Column names, in the writer's order.
const COLUMNS: [&str; 8] = [
    "order_id", "account", "symbol", "side", "qty", "price", "ts_ns", "kind",
];
const C_ORDER_ID: usize = 0;
const C_ACCOUNT: usize = 1;
const C_SYMBOL: usize = 2;
const C_SIDE: usize = 3;
const C_QTY: usize = 4;
const C_PRICE: usize = 5;
const C_TS: usize = 6;
const C_KIND: usize = 7;
/// Columns `0..REQUIRED_COLUMNS` are required.
const REQUIRED_COLUMNS: usize = 6;
const _: () = assert!(C_PRICE + 1 == REQUIRED_COLUMNS && C_TS >= REQUIRED_COLUMNS);

const EXPECT_U64: &str = "a non-negative integer";
const EXPECT_ACCOUNT: &str = "an account number from 0 to 4294967295, or an account name of 1 to \
     32 printable ASCII characters (no space), not all digits";
const EXPECT_ACCOUNT_LOW: &str = "an account number below 2147483648 in a file that also names \
     accounts (the ids from 2147483648 are those of account names)";
const EXPECT_SYMBOL: &str = "a symbol of 1 to 8 characters from A-Z, 0-9, '.', '-', '_'";
const EXPECT_SIDE: &str = "B, S, BUY or SELL (any case), 1 or 2 (FIX)";
const EXPECT_PRICE: &str = "a decimal price such as 185.25";
const EXPECT_PRICE_PRECISION: &str = "a price with at most 4 decimal places (1 tick = 0.0001)";
const EXPECT_PRICE_RANGE: &str = "a price within +-922337203685477.5807";
const EXPECT_TS: &str = "nanoseconds as a non-negative integer (or empty)";
const EXPECT_KIND: &str = "new, cancel, fill, halt or resume (any case; empty means new)";

/// Whether a header line names the `order_id` column (format detection).
pub fn is_header(first_line: &[u8]) -> bool {
    first_line
        .split(|&b| b == b',')
        .any(|f| clean_name(f).eq_ignore_ascii_case("order_id"))
}

fn clean_name(field: &[u8]) -> &str {
    let s = std::str::from_utf8(field).unwrap_or("");
    s.trim().trim_matches('"').trim()
}

/// Parses a non-negative decimal integer: digits only, no sign, no spaces.
pub(crate) fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

fn bad(expected: &'static str, found: &[u8]) -> FileErrorKind {
    FileErrorKind::BadField {
        expected,
        found: shorten(&String::from_utf8_lossy(found)),
    }
}

/// Reads every order of a CSV text. Account names are interned into `names` (file-local:
/// first-seen order, see [`crate::account_names`]); a file that names accounts may not also
/// use account numbers of the named range (≥ 2^31).
pub fn parse(
    path: &Path,
    text: &[u8],
    bad_lines: &mut BadLines,
    names: &mut AccountNames,
) -> Result<Vec<Order>, FileError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text);
    let mut record = csv::ByteRecord::new();
    let csv_error = |e: csv::Error| {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        FileError::new(
            path,
            Location::Line { line, column: None },
            FileErrorKind::Csv(e.to_string()),
        )
    };

    // Header.
    if !reader.read_byte_record(&mut record).map_err(csv_error)? {
        return Err(FileError::new(path, Location::File, FileErrorKind::Empty));
    }
    let header_line = record.position().map(|p| p.line()).unwrap_or(1);
    let header_fields = record.len();
    let mut index: [Option<usize>; COLUMNS.len()] = [None; COLUMNS.len()];
    for (pos, field) in record.iter().enumerate() {
        let name = clean_name(field);
        if let Some(c) = COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(name)) {
            if let Some(first) = index[c] {
                return Err(FileError::new(
                    path,
                    Location::Line {
                        line: header_line,
                        column: None,
                    },
                    FileErrorKind::DuplicateColumn {
                        name: COLUMNS[c].to_owned(),
                        first: first + 1,
                        second: pos + 1,
                    },
                ));
            }
            index[c] = Some(pos);
        }
    }
    let missing: Vec<&str> = (0..REQUIRED_COLUMNS)
        .filter(|&c| index[c].is_none())
        .map(|c| COLUMNS[c])
        .collect();
    if !missing.is_empty() {
        let found: Vec<String> = record
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        return Err(FileError::new(
            path,
            Location::Line {
                line: header_line,
                column: None,
            },
            FileErrorKind::MissingColumns {
                missing: missing.join(", "),
                found: shorten(&found.join(",")),
            },
        ));
    }
    let req = |c: usize| index[c].unwrap_or(0); // present: checked just above

    let mut orders = Vec::with_capacity(text.len() / 48);
    // The first account number of the named range (line, text), refused once a name is seen.
    let mut first_high_number: Option<(u64, String)> = None;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let err = csv_error(e);
                bad_lines.skip(err)?;
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() != header_fields {
            bad_lines.skip(FileError::new(
                path,
                Location::Line { line, column: None },
                FileErrorKind::FieldCount {
                    expected: format!("{header_fields} fields (as in the header)"),
                    found: record.len(),
                },
            ))?;
            continue;
        }
        match parse_record(&record, &index, req, names) {
            Ok(order) => {
                if is_named_account(order.account) && names.name(order.account).is_none() {
                    first_high_number.get_or_insert_with(|| (line, order.account.to_string()));
                }
                orders.push(order)
            }
            Err((c, kind)) => bad_lines.skip(FileError::new(
                path,
                Location::Line {
                    line,
                    column: Some(Column {
                        index: index[c].unwrap_or(0) + 1,
                        name: COLUMNS[c],
                    }),
                },
                kind,
            ))?,
        }
    }
    if let (false, Some((line, text))) = (names.is_empty(), first_high_number) {
        return Err(FileError::new(
            path,
            Location::Line {
                line,
                column: Some(Column {
                    index: req(C_ACCOUNT) + 1,
                    name: COLUMNS[C_ACCOUNT],
                }),
            },
            bad(EXPECT_ACCOUNT_LOW, text.as_bytes()),
        ));
    }
    Ok(orders)
}

/// A new table for a file's names: as many as the named range holds.
pub(crate) fn file_names() -> AccountNames {
    AccountNames::with_capacity(ACCOUNT_NAMES_MAX)
}

fn parse_record(
    record: &csv::ByteRecord,
    index: &[Option<usize>; COLUMNS.len()],
    req: impl Fn(usize) -> usize,
    names: &mut AccountNames,
) -> Result<Order, (usize, FileErrorKind)> {
    let field = |c: usize| record.get(req(c)).unwrap_or(b"");
    let opt_field = |c: usize| index[c].and_then(|i| record.get(i)).unwrap_or(b"");

    let f = field(C_ORDER_ID);
    let order_id = parse_u64(f).ok_or_else(|| (C_ORDER_ID, bad(EXPECT_U64, f)))?;
    let f = field(C_ACCOUNT);
    let account = if f.iter().all(u8::is_ascii_digit) {
        parse_u64(f)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| (C_ACCOUNT, bad(EXPECT_ACCOUNT, f)))?
    } else {
        let name = std::str::from_utf8(f).map_err(|_| (C_ACCOUNT, bad(EXPECT_ACCOUNT, f)))?;
        match names.intern(name) {
            Ok((id, _)) => id,
            Err(crate::account_names::AccountNameError::Invalid(_)) => {
                return Err((C_ACCOUNT, bad(EXPECT_ACCOUNT, f)))
            }
            Err(e) => return Err((C_ACCOUNT, FileErrorKind::Csv(e.to_string()))),
        }
    };
    let f = field(C_SYMBOL);
    let symbol = std::str::from_utf8(f)
        .ok()
        .and_then(|s| Symbol::new(s).ok())
        .ok_or_else(|| (C_SYMBOL, bad(EXPECT_SYMBOL, f)))?;
    let f = field(C_SIDE);
    let side = std::str::from_utf8(f)
        .ok()
        .and_then(Side::parse)
        .ok_or_else(|| (C_SIDE, bad(EXPECT_SIDE, f)))?;
    let f = field(C_QTY);
    let qty = parse_u64(f).ok_or_else(|| (C_QTY, bad(EXPECT_U64, f)))?;
    let f = field(C_PRICE);
    let price = match std::str::from_utf8(f) {
        Ok(s) => parse_price_ticks(s).map_err(|e| {
            let expected = match e {
                PriceError::TooPrecise(_) => EXPECT_PRICE_PRECISION,
                PriceError::OutOfRange(_) => EXPECT_PRICE_RANGE,
                _ => EXPECT_PRICE,
            };
            (C_PRICE, bad(expected, f))
        })?,
        Err(_) => return Err((C_PRICE, bad(EXPECT_PRICE, f))),
    };
    let f = opt_field(C_TS);
    let ts_ns = if f.is_empty() {
        0
    } else {
        parse_u64(f).ok_or_else(|| (C_TS, bad(EXPECT_TS, f)))?
    };
    let f = opt_field(C_KIND);
    let kind = if f.is_empty() {
        OrderKind::New
    } else {
        std::str::from_utf8(f)
            .ok()
            .and_then(OrderKind::parse)
            .ok_or_else(|| (C_KIND, bad(EXPECT_KIND, f)))?
    };
    Ok(Order {
        order_id,
        ts_ns,
        price,
        qty,
        account,
        symbol,
        side,
        kind,
    })
}

/// Writes `orders` as CSV (header first) into `w`. Returns the number of orders.
pub fn write_to<W: Write>(w: &mut W, orders: impl IntoIterator<Item = Order>) -> io::Result<u64> {
    writeln!(w, "{HEADER}")?;
    let mut count: u64 = 0;
    for o in orders {
        writeln!(
            w,
            "{},{},{},{},{},{},{},{}",
            o.order_id,
            o.account,
            o.symbol,
            o.side.as_str(),
            o.qty,
            format_price_ticks(o.price),
            o.ts_ns,
            o.kind.as_str()
        )?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(text: &str, max_errors: u64) -> Result<(Vec<Order>, u64), FileError> {
        load_named(text, max_errors).map(|(o, s, _)| (o, s))
    }

    fn load_named(
        text: &str,
        max_errors: u64,
    ) -> Result<(Vec<Order>, u64, AccountNames), FileError> {
        let mut bad = BadLines::new(max_errors);
        let mut names = file_names();
        let orders = parse(Path::new("t.csv"), text.as_bytes(), &mut bad, &mut names)?;
        Ok((orders, bad.skipped(), names))
    }

    #[test]
    fn account_names_are_interned_in_first_seen_order() {
        use crate::account_names::NAMED_ACCOUNT_BASE as B;
        let (o, _, names) = load_named(
            "order_id,account,symbol,side,qty,price\n1,ACC11,A,B,1,1\n2,7,A,S,1,1\n3,acc-2,A,1,1,1\n4,ACC11,A,2,1,1\n",
            0,
        )
        .unwrap();
        let accounts: Vec<u32> = o.iter().map(|o| o.account).collect();
        assert_eq!(accounts, [B, 7, B + 1, B]);
        assert_eq!(names.name(B), Some("ACC11"));
        assert_eq!(names.name(B + 1), Some("acc-2"));
        // A name with a space, or one too long, is a bad field, not a name.
        let m = err("order_id,account,symbol,side,qty,price\n1,\"A B\",A,B,1,1\n");
        assert!(
            m.contains("column 2 (account)") && m.contains("account name"),
            "{m}"
        );
        // Numbers of the named range and names do not mix in one file.
        let m =
            err("order_id,account,symbol,side,qty,price\n1,2147483648,A,B,1,1\n2,ACC1,A,B,1,1\n");
        assert!(
            m.contains("line 2, column 2 (account)") && m.contains("below 2147483648"),
            "{m}"
        );
        // Without names they are still account numbers.
        let (o, _) = load(
            "order_id,account,symbol,side,qty,price\n1,4294967295,A,B,1,1\n",
            0,
        )
        .unwrap();
        assert_eq!(o[0].account, u32::MAX);
    }

    fn err(text: &str) -> String {
        load(text, 0).unwrap_err().to_string()
    }

    #[test]
    fn columns_by_name_any_order_extra_ignored_defaults() {
        let (o, skipped) = load(
            "Price , side,note,QTY,symbol,account,order_id\n185.25,b,hello,100,aapl,7,42\n1,SELL,,5,MSFT,1,43\n",
            0,
        )
        .unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(o.len(), 2);
        assert_eq!(
            o[0],
            Order {
                order_id: 42,
                ts_ns: 0,
                price: 1_852_500,
                qty: 100,
                account: 7,
                symbol: Symbol::new("AAPL").unwrap(),
                side: Side::Buy,
                kind: OrderKind::New,
            }
        );
        assert_eq!(o[1].side, Side::Sell);
        assert_eq!(o[1].price, 10_000);
    }

    #[test]
    fn optional_columns_and_crlf() {
        let (o, _) = load(
            "order_id,account,symbol,side,qty,price,ts_ns,kind\r\n1,1,A,Buy,1,1,99,CANCEL\r\n2,1,A,s,1,1,,\r\n",
            0,
        )
        .unwrap();
        assert_eq!(o[0].ts_ns, 99);
        assert_eq!(o[0].kind, OrderKind::Cancel);
        assert_eq!(o[1].ts_ns, 0);
        assert_eq!(o[1].kind, OrderKind::New);
    }

    #[test]
    fn writer_emits_the_documented_text() {
        let mut out = Vec::new();
        let o = Order {
            order_id: 42,
            ts_ns: 5,
            price: 1_852_500,
            qty: 100,
            account: 7,
            symbol: Symbol::new("AAPL").unwrap(),
            side: Side::Sell,
            kind: OrderKind::Fill,
        };
        assert_eq!(write_to(&mut out, [o]).unwrap(), 1);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "order_id,account,symbol,side,qty,price,ts_ns,kind\n42,7,AAPL,SELL,100,185.25,5,fill\n"
        );
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        let h = "order_id,account,symbol,side,qty,price\n";
        let m = err(&format!("{h}1,1,AAPL,B,10,1.5\n2,1,AAPL,X,10,1.5\n"));
        assert_eq!(
            m,
            "t.csv: line 3, column 4 (side): expected B, S, BUY or SELL (any case), 1 or 2 (FIX), found \"X\""
        );
        let m = err(&format!("{h}1,1,AAPL,B,10,1.23456\n"));
        assert!(
            m.contains("line 2, column 6 (price)") && m.contains("at most 4 decimal places"),
            "{m}"
        );
        let m = err(&format!("{h}1,1,AAPL,B,-3,1\n"));
        assert!(
            m.contains("column 5 (qty)") && m.contains("non-negative"),
            "{m}"
        );
        let m = err(&format!("{h}1,99999999999,AAPL,B,3,1\n"));
        assert!(m.contains("column 2 (account)"), "{m}");
        let m = err(&format!("{h}1,1,TOOLONGSYM,B,3,1\n"));
        assert!(m.contains("column 3 (symbol)"), "{m}");
        let m = err(&format!("{h}garbage\n"));
        assert_eq!(
            m,
            "t.csv: line 2: expected 6 fields (as in the header), found 1"
        );
        let m = err("order_id,account,symbol,qty\n1,1,A,1\n");
        assert_eq!(
            m,
            "t.csv: line 1: missing required column(s) side, price; the header has order_id,account,symbol,qty"
        );
        let m = err("order_id,account,symbol,side,qty,price,Account\n");
        assert!(
            m.contains("\"account\" appears twice (columns 2 and 7)"),
            "{m}"
        );
        let m = err("order_id,account,symbol,side,qty,price,kind\n1,1,A,B,1,1,modify\n");
        assert!(m.contains("column 7 (kind)"), "{m}");
    }

    #[test]
    fn max_errors_skips_and_counts_then_fails() {
        let text =
            "order_id,account,symbol,side,qty,price\n1,1,A,B,1,1\nbad\n2,1,A,Q,1,1\n3,1,A,B,1,1\n";
        let (o, skipped) = load(text, 2).unwrap();
        assert_eq!(o.len(), 2);
        assert_eq!(skipped, 2);
        let m = load(text, 1).unwrap_err().to_string();
        assert!(
            m.contains("line 4, column 4 (side)") && m.contains("more than max_errors = 1"),
            "{m}"
        );
    }

    #[test]
    fn header_detection() {
        assert!(is_header(b"ts_ns, \"Order_ID\" ,x"));
        assert!(!is_header(b"34200.1,1,2,3,4,1"));
    }

    #[test]
    fn u64_parsing_is_strict() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b""[..],
            b"18446744073709551616",
            b"+1",
            b"-1",
            b"1.0",
            b" 1",
        ] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
    }
}
