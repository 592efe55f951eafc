//! Order files through real files on disk: round trips, detection, and bad input (each a clear
//! error naming the file and where in it, never a panic).
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use orders::files::{self, FileErrorKind, Format, LoadOptions, Location, OrderFile};
use orders::{Order, OrderKind, Side, Symbol};
use proptest::prelude::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open(p: &Path) -> Result<OrderFile, orders::FileError> {
    OrderFile::open(p, &LoadOptions::default())
}

fn err(p: &Path) -> String {
    open(p).unwrap_err().to_string()
}

fn sample() -> Vec<Order> {
    (0..5u64)
        .map(|i| Order {
            order_id: 100 + i,
            ts_ns: 1_000 * i,
            price: 1_852_500 + i as i64,
            qty: 10 * (i + 1),
            account: (i % 3) as u32 + 1,
            symbol: Symbol::new(["AAPL", "MSFT", "BRK.B"][i as usize % 3]).unwrap(),
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            kind: OrderKind::from_u8((i % 5) as u8).unwrap(),
        })
        .collect()
}

const CSV_HEAD: &str = "order_id,account,symbol,side,qty,price\n";

#[test]
fn csv_and_binary_round_trip_and_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("a.csv");
    let bin = tmp.path().join("a.bin");
    files::write_csv(&csv, sample()).unwrap();
    files::write_binary(&bin, sample()).unwrap();
    let c = open(&csv).unwrap();
    let b = open(&bin).unwrap();
    assert_eq!((c.format(), b.format()), (Format::Csv, Format::Binary));
    assert_eq!(c.iter().collect::<Vec<_>>(), sample());
    assert_eq!(b.iter().collect::<Vec<_>>(), sample());
    assert_eq!(b.get(4), sample()[4]);
    assert_eq!(b.orders().get(4), Some(&sample()[4]));
    assert!(b.orders().get(5).is_none());
    // Detection is by content, not by name.
    let renamed = tmp.path().join("orders.txt");
    std::fs::copy(&bin, &renamed).unwrap();
    assert_eq!(open(&renamed).unwrap().format(), Format::Binary);
    // The CSV text is exactly the documented one.
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("order_id,account,symbol,side,qty,price,ts_ns,kind\n100,1,AAPL,BUY,10,185.25,0,new\n101,2,MSFT,SELL,20,185.2501,1000,cancel\n"));
    // No temporary file is left beside the output.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn empty_binary_file_is_valid_but_an_empty_file_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("none.bin");
    files::write_binary(&bin, std::iter::empty()).unwrap();
    let f = open(&bin).unwrap();
    assert!(f.is_empty());
    assert_eq!(f.iter().count(), 0);

    let p = write(tmp.path(), "empty.csv", b"");
    let m = err(&p);
    assert!(
        m.contains("empty.csv") && m.contains("file is empty"),
        "{m}"
    );
    let p = write(tmp.path(), "blank.csv", b"\n \r\n\n");
    assert!(err(&p).contains("file is empty"));
    let p = write(tmp.path(), "AAPL_blank.csv", b"\n\n");
    let opts = LoadOptions {
        format: Some(Format::Lobster),
        ..LoadOptions::default()
    };
    let m = OrderFile::open(&p, &opts).unwrap_err().to_string();
    assert!(m.contains("file is empty"), "{m}");
}

#[test]
fn missing_file_names_the_path() {
    let m = err(Path::new("/nonexistent/dir/orders.csv"));
    assert!(
        m.starts_with("/nonexistent/dir/orders.csv: cannot open:"),
        "{m}"
    );
}

#[test]
fn csv_errors_name_file_line_column() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "bad_side.csv",
        format!("{CSV_HEAD}1,1,AAPL,BUY,10,1\n2,1,AAPL,SHORT,10,1\n").as_bytes(),
    );
    let m = err(&p);
    assert!(m.ends_with("bad_side.csv: line 3, column 4 (side): expected B, S, BUY or SELL (any case), 1 or 2 (FIX), found \"SHORT\""), "{m}");
    let e = open(&p).unwrap_err();
    assert_eq!(e.line(), Some(3));
    assert!(matches!(e.kind(), FileErrorKind::BadField { .. }));

    let p = write(
        tmp.path(),
        "precise.csv",
        format!("{CSV_HEAD}1,1,AAPL,B,10,185.25001\n").as_bytes(),
    );
    let m = err(&p);
    assert!(
        m.contains(
            "precise.csv: line 2, column 6 (price): expected a price with at most 4 decimal places"
        ) && m.contains("185.25001"),
        "{m}"
    );

    let p = write(
        tmp.path(),
        "nocol.csv",
        b"order_id,account,symbol,side,price\n1,1,A,B,1\n",
    );
    let m = err(&p);
    assert!(
        m.contains("nocol.csv: line 1: missing required column(s) qty"),
        "{m}"
    );

    let p = write(
        tmp.path(),
        "garbage.csv",
        format!("{CSV_HEAD}1,1,AAPL,B,10,1\n\u{0}\u{1}garbage!!\n").as_bytes(),
    );
    let m = err(&p);
    assert!(
        m.contains("garbage.csv: line 3: expected 6 fields (as in the header), found 1"),
        "{m}"
    );

    let p = write(tmp.path(), "what.txt", b"hello world\nmore\n");
    let m = err(&p);
    assert!(
        m.contains("what.txt: line 1: unknown format") && m.contains("hello world"),
        "{m}"
    );
}

#[test]
fn max_errors_skips_and_counts_bad_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "mixed.csv",
        format!("{CSV_HEAD}1,1,A,B,1,1\nx\n2,1,A,B,1,1.00001\n3,1,A,Z,1,1\n4,1,A,S,1,1\n")
            .as_bytes(),
    );
    let with = |n| {
        OrderFile::open(
            &p,
            &LoadOptions {
                max_errors: n,
                ..LoadOptions::default()
            },
        )
    };
    let f = with(3).unwrap();
    assert_eq!((f.len(), f.skipped()), (2, 3));
    assert_eq!(f.get(1).order_id, 4);
    let f = with(10).unwrap();
    assert_eq!(f.skipped(), 3);
    let m = with(2).unwrap_err().to_string();
    assert!(
        m.contains("line 5, column 4 (side)") && m.contains("more than max_errors = 2"),
        "{m}"
    );
    let m = with(0).unwrap_err().to_string();
    assert!(m.contains("line 3") && !m.contains("max_errors"), "{m}");
}

#[test]
fn binary_damage_is_reported_with_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.bin");
    files::write_binary(&good, sample()).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    assert_eq!(bytes.len(), 24 + 5 * 48);

    // Truncated in the middle of record 3.
    let p = write(tmp.path(), "trunc.bin", &bytes[..24 + 3 * 48 + 10]);
    let m = err(&p);
    assert!(
        m.contains("trunc.bin: record 3 (byte offset 168): file is truncated"),
        "{m}"
    );
    let e = open(&p).unwrap_err();
    assert_eq!(
        e.location(),
        &Location::Record {
            index: 3,
            offset: 168
        }
    );

    // Truncated inside the header.
    let p = write(tmp.path(), "head.bin", &bytes[..12]);
    let m = err(&p);
    assert!(
        m.contains("head.bin: byte offset 12: file is truncated") && m.contains("24-byte header"),
        "{m}"
    );

    // Wrong magic, forced binary.
    let mut b = bytes.clone();
    b[..4].copy_from_slice(b"JUNK");
    let p = write(tmp.path(), "magic.bin", &b);
    let forced = LoadOptions {
        format: Some(Format::Binary),
        ..LoadOptions::default()
    };
    let m = OrderFile::open(&p, &forced).unwrap_err().to_string();
    assert!(m.contains("magic.bin: byte offset 0: expected the magic bytes \"ORDRBIN\\x00\", found \"JUNKBIN\\x00\""), "{m}");

    // A bad record in the middle.
    let mut b = bytes.clone();
    b[24 + 2 * 48 + 45] = 77; // kind of record 2
    let p = write(tmp.path(), "rec.bin", &b);
    assert_eq!(
        err(&p),
        format!(
            "{}: record 2 (byte offset 120): bad kind value 77",
            p.display()
        )
    );

    // Trailing bytes.
    let mut b = bytes.clone();
    b.extend_from_slice(b"xyz");
    let p = write(tmp.path(), "trail.bin", &b);
    assert!(err(&p).contains("3 unexpected bytes after the last record"));
}

#[test]
fn gzipped_csv_and_binary_load_too() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("a.bin");
    files::write_binary(&bin, sample()).unwrap();
    for (name, src) in [
        ("a.bin.gz", std::fs::read(&bin).unwrap()),
        ("a.csv.gz", {
            let c = tmp.path().join("a.csv");
            files::write_csv(&c, sample()).unwrap();
            std::fs::read(c).unwrap()
        }),
    ] {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&src).unwrap();
        let p = write(tmp.path(), name, &enc.finish().unwrap());
        let f = open(&p).unwrap();
        assert!(f.gzipped());
        assert_eq!(f.iter().collect::<Vec<_>>(), sample(), "{name}");
    }
    // A damaged gzip stream is an error, not a panic.
    let p = write(tmp.path(), "bad.gz", &[0x1f, 0x8b, 8, 0, 1, 2, 3]);
    assert!(err(&p).contains("gzip data is damaged"));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Issue 13 item 17: a gzip bomb is refused at the inflation bound, not inflated whole.
#[test]
fn gzip_bomb_is_refused_at_the_bound() {
    let tmp = tempfile::tempdir().unwrap();
    // 64 MiB of zeros in ~64 KiB of gzip; two members, as `cat a.gz b.gz` makes.
    let member = gzip(&vec![0u8; 32 << 20]);
    let mut bomb = member.clone();
    bomb.extend_from_slice(&member);
    assert!(bomb.len() < 1 << 17, "{} bytes", bomb.len());
    let p = write(tmp.path(), "bomb.csv.gz", &bomb);
    let bound = LoadOptions {
        max_inflated_bytes: 1 << 20,
        ..LoadOptions::default()
    };
    for e in [
        OrderFile::open(&p, &bound).unwrap_err(),
        OrderFile::from_bytes(&p, &bomb, &bound).unwrap_err(),
    ] {
        assert!(
            matches!(
                e.kind(),
                FileErrorKind::GzipTooLarge {
                    max_bytes: 1_048_576
                }
            ),
            "{e}"
        );
        let m = e.to_string();
        assert!(
            m.contains("bomb.csv.gz") && m.contains("more than 1048576 bytes"),
            "{m}"
        );
    }
    // The bound is inclusive: content of exactly the bound loads, one byte more does not.
    let csv = {
        let c = tmp.path().join("a.csv");
        files::write_csv(&c, sample()).unwrap();
        std::fs::read(c).unwrap()
    };
    let p = write(tmp.path(), "a.csv.gz", &gzip(&csv));
    let exact = LoadOptions {
        max_inflated_bytes: csv.len() as u64,
        ..LoadOptions::default()
    };
    assert_eq!(OrderFile::open(&p, &exact).unwrap().len(), sample().len());
    let short = LoadOptions {
        max_inflated_bytes: csv.len() as u64 - 1,
        ..LoadOptions::default()
    };
    assert!(OrderFile::open(&p, &short).is_err());
    assert_eq!(
        LoadOptions::default().max_inflated_bytes,
        files::limits::GZIP_INFLATED_BYTES_MAX_DEFAULT
    );
}

/// Issue 13 item 12: the file is truncated (and then rewritten) by someone else while we
/// replay it. Memory-mapped, the next read of a lost page raised SIGBUS and killed the process;
/// read into memory at open, the replay goes on with the orders as they were validated.
#[test]
fn a_binary_file_truncated_during_replay_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("flow.bin");
    let n = 50_000u64; // 2.4 MB: many pages, so that the truncation drops pages not yet read
    let orders: Vec<Order> = (0..n)
        .map(|i| Order {
            order_id: i + 1,
            qty: 1 + i % 7,
            price: 1_000_000 + i as i64,
            account: (i % 9) as u32,
            symbol: Symbol::new("AAPL").unwrap(),
            ..Order::default()
        })
        .collect();
    files::write_binary(&p, orders.iter().copied()).unwrap();
    let f = open(&p).unwrap();
    let mut it = f.iter().enumerate();
    for (i, o) in it.by_ref().take(10) {
        assert_eq!(o, orders[i]);
    }
    // Truncate in place (the same inode: what `truncate -s 30 flow.bin` or a crashed writer
    // does), mid-replay.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(30)
        .unwrap();
    for (i, o) in it.by_ref().take(20_000) {
        assert_eq!(o, orders[i], "order {i} after the truncation");
    }
    // Then rewritten in place with garbage of the old length.
    std::fs::write(&p, vec![0xA5u8; (24 + 48 * n) as usize]).unwrap();
    for (i, o) in it {
        assert_eq!(o, orders[i], "order {i} after the rewrite");
    }
    assert_eq!(f.get(n as usize - 1), orders[n as usize - 1]);
    // Opening it now reports what the file has become.
    assert!(open(&p).is_err());
}

/// Issue 13 item 17: `--max-errors` shows where each skipped line is (the first 20), then how
/// many more there were.
#[test]
fn skipped_lines_are_listed_with_their_location() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from(CSV_HEAD);
    for i in 1..=30u64 {
        // Every third line is good: 10 good lines, 20 with a bad side.
        if i % 3 == 0 {
            text.push_str(&format!("{i},1,AAPL,BUY,10,1\n"));
        } else {
            text.push_str(&format!("{i},1,AAPL,UP,10,1\n"));
        }
    }
    text.push_str("31,1,AAPL,BUY,10,1.00001\n"); // and a 21st: a price never rounded
    let p = write(tmp.path(), "bad.csv", text.as_bytes());
    let opts = LoadOptions {
        max_errors: 100,
        ..LoadOptions::default()
    };
    let f = OrderFile::open(&p, &opts).unwrap();
    assert_eq!((f.len(), f.skipped()), (10, 21));
    assert_eq!(f.skipped_errors().len(), files::limits::SKIPPED_LISTED_MAX);
    let report = f.skipped_report();
    assert_eq!(report.len(), 21);
    // Line 1 is the header: order 1 is on line 2.
    assert!(
        report[0].starts_with(&format!("{}: line 2, column 4 (side)", p.display())),
        "{}",
        report[0]
    );
    assert!(report[19].contains("line 30,"), "{}", report[19]);
    assert_eq!(report[20], "… and 1 more");
    // None skipped, nothing to say.
    let p = write(
        tmp.path(),
        "good.csv",
        format!("{CSV_HEAD}1,1,AAPL,B,1,1\n").as_bytes(),
    );
    assert!(OrderFile::open(&p, &opts)
        .unwrap()
        .skipped_report()
        .is_empty());
}

#[test]
fn csv_with_bom_and_lobster_format_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "bom.csv",
        format!("\u{feff}{CSV_HEAD}1,1,AAPL,b,10,1\n").as_bytes(),
    );
    assert_eq!(open(&p).unwrap().len(), 1);
    // LOBSTER rows in a file without a ticker in its name need a symbol.
    let p = write(tmp.path(), "msgs.csv", b"34200.1,1,5,10,100,1\n");
    let m = err(&p);
    assert!(
        m.contains("msgs.csv: cannot take a symbol from the file name") && m.contains("--symbol"),
        "{m}"
    );
    let opts = LoadOptions {
        symbol: Some(Symbol::new("IBM").unwrap()),
        ..LoadOptions::default()
    };
    let f = OrderFile::open(&p, &opts).unwrap();
    assert_eq!(
        (f.format(), f.get(0).symbol.as_str()),
        (Format::Lobster, "IBM")
    );
    // A LOBSTER header wins over CSV detection even when it spells `order_id`.
    let f = OrderFile::from_bytes(
        Path::new("MSFT_2020.csv"),
        b"time,type,order_id,size,price,direction\n34200.1,1,5,10,100,-1\n",
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!((f.format(), f.get(0).side), (Format::Lobster, Side::Sell));
    // Damaged binary magic without a forced format: unknown format, quoting the start.
    let mut b = Vec::from(&b"ORDRBIX\0"[..]);
    b.extend_from_slice(&[0; 16]);
    let m = OrderFile::from_bytes(Path::new("x.bin"), &b, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("x.bin: line 1: unknown format") && m.contains("ORDRBIX"),
        "{m}"
    );
    // Zero accounts cannot spread anything.
    let opts = LoadOptions {
        lobster_accounts: 0,
        ..opts
    };
    assert!(OrderFile::open(&p, &opts)
        .unwrap_err()
        .to_string()
        .contains("lobster_accounts"));
}

fn arb_order() -> impl Strategy<Value = Order> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<i64>(),
        any::<u64>(),
        any::<u32>(),
        "[A-Z0-9._-]{1,8}",
        0u8..2,
        0u8..5,
    )
        .prop_map(|(id, ts, px, qty, acct, sym, side, kind)| Order {
            order_id: id,
            ts_ns: ts,
            price: px,
            qty,
            account: acct,
            symbol: Symbol::new(&sym).unwrap(),
            side: Side::from_u8(side).unwrap(),
            kind: OrderKind::from_u8(kind).unwrap(),
        })
}

fn valid_bytes(format: Format, orders: &[Order]) -> Vec<u8> {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x");
    files::write_orders(&p, format, orders.iter().copied()).unwrap();
    std::fs::read(p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn csv_round_trips_through_a_file(orders in proptest::collection::vec(arb_order(), 0..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("o.csv");
        files::write_csv(&p, orders.iter().copied()).unwrap();
        let f = open(&p).unwrap();
        prop_assert_eq!(f.format(), Format::Csv);
        prop_assert_eq!(f.iter().collect::<Vec<_>>(), orders.clone());
        // Writing what was read gives the same bytes.
        let q = tmp.path().join("again.csv");
        files::write_csv(&q, f.iter()).unwrap();
        prop_assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
    }

    #[test]
    fn binary_round_trips_through_a_file(orders in proptest::collection::vec(arb_order(), 0..40)) {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("o.bin");
        files::write_binary(&p, orders.iter().copied()).unwrap();
        let f = open(&p).unwrap();
        prop_assert_eq!(f.format(), Format::Binary);
        prop_assert_eq!(f.len(), orders.len());
        prop_assert_eq!(f.iter().collect::<Vec<_>>(), orders);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        for format in [None, Some(Format::Csv), Some(Format::Binary), Some(Format::Lobster)] {
            let opts = LoadOptions { format, max_errors: 3, ..LoadOptions::default() };
            let _ = OrderFile::from_bytes(Path::new("AAPL_fuzz.csv"), &bytes, &opts);
        }
    }

    #[test]
    fn mutated_files_never_panic(
        orders in proptest::collection::vec(arb_order(), 1..6),
        which in 0usize..3,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = match which {
            0 => valid_bytes(Format::Csv, &orders),
            1 => valid_bytes(Format::Binary, &orders),
            _ => b"Time,Type,OrderId,Size,Price,Direction\r\n34200.004241176,1,16113575,18,5853300,1\r\n34200.025551204,3,16120456,100,5853200,-1,UBSS\r\n34201.117864772,6,-1,45725,33552100,-1\n".to_vec(),
        };
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        // Through a real file, so that binary input takes the path of `OrderFile::open`.
        let tmp = tempfile::tempdir().unwrap();
        let p = write(tmp.path(), "AAPL_mutated.csv", &bytes);
        for format in [None, Some(Format::Csv), Some(Format::Binary), Some(Format::Lobster)] {
            let opts = LoadOptions { format, ..LoadOptions::default() };
            if let Ok(f) = OrderFile::open(&p, &opts) {
                // Whatever loaded is fully readable.
                prop_assert_eq!(f.iter().count(), f.len());
            }
        }
    }
}

/// Issue 13 item 1: a resume reads a binary file from its resume point only. Records before
/// it are neither read nor validated; those from it are, with the same errors as a full load;
/// indices stay the file's; text files are read whole either way.
#[test]
fn a_binary_file_loads_from_an_index_and_validates_only_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.bin");
    files::write_binary(&good, sample()).unwrap();
    let d = OrderFile::open_deferred(&good, &LoadOptions::default()).unwrap();
    assert!(d.is_deferred());
    assert_eq!(d.len(), 5);
    let f = d.load_from(3).unwrap();
    assert_eq!((f.len(), f.first_index()), (5, 3));
    assert_eq!(f.get(3), sample()[3]);
    assert_eq!(f.get(4), sample()[4]);
    assert_eq!(f.orders(), &sample()[3..]);
    // Past the end: nothing held, the count kept.
    let f = OrderFile::open_deferred(&good, &LoadOptions::default())
        .unwrap()
        .load_from(99)
        .unwrap();
    assert_eq!((f.len(), f.first_index(), f.orders().len()), (5, 5, 0));

    // A bad record before the index is not read; one at or after it is reported as by a full
    // load (index and byte offset).
    let mut b = std::fs::read(&good).unwrap();
    b[24 + 48 + 45] = 77; // kind of record 1
    b[24 + 3 * 48 + 45] = 78; // kind of record 3
    let p = write(tmp.path(), "bad.bin", &b);
    let from = |k: u64| {
        OrderFile::open_deferred(&p, &LoadOptions::default())
            .unwrap()
            .load_from(k)
    };
    assert_eq!(from(4).unwrap().get(4), sample()[4]);
    assert_eq!(
        from(2).unwrap_err().to_string(),
        format!(
            "{}: record 3 (byte offset 168): bad kind value 78",
            p.display()
        )
    );
    assert_eq!(
        err(&p),
        format!(
            "{}: record 1 (byte offset 72): bad kind value 77",
            p.display()
        )
    );

    // The header is checked at open: a file whose length does not match its count is refused
    // before any record is read.
    let p = write(
        tmp.path(),
        "short.bin",
        &std::fs::read(&good).unwrap()[..24 + 4 * 48],
    );
    let m = OrderFile::open_deferred(&p, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("record 4 (byte offset 216): file is truncated"),
        "{m}"
    );

    // A file that shrinks between the open and the load is refused, naming the record.
    let p = write(tmp.path(), "shrinks.bin", &std::fs::read(&good).unwrap());
    let d = OrderFile::open_deferred(&p, &LoadOptions::default()).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(24 + 4 * 48 + 7)
        .unwrap();
    let m = d.load_from(2).unwrap_err().to_string();
    assert!(
        m.contains("record 4 (byte offset 216)") && m.contains("shrank"),
        "{m}"
    );

    // CSV: read whole at open; the index changes nothing.
    let csv = tmp.path().join("a.csv");
    files::write_csv(&csv, sample()).unwrap();
    let d = OrderFile::open_deferred(&csv, &LoadOptions::default()).unwrap();
    assert!(!d.is_deferred());
    let f = d.load_from(3).unwrap();
    assert_eq!(
        (f.first_index(), f.iter().collect::<Vec<_>>()),
        (0, sample())
    );
}
