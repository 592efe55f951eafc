//! Every real LOBSTER file in `shared/data/lobster` imports with the per-type counts that
//! `SOURCE.md` gives for it. Skips (with a message) when the data is absent.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use orders::files::{Format, LoadOptions, OrderFile};
use orders::{OrderKind, Side, Symbol};

fn data_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/lobster");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: LOBSTER data not found at {} (shared data absent)",
            dir.display()
        );
        None
    }
}

struct Expect {
    file: &'static str,
    symbol: &'static str,
    /// Rows of LOBSTER types 1..=7 (SOURCE.md).
    types: [u64; 7],
    first_ts_ns: u64,
    last_ts_ns: u64,
    buy: u64,
    sell: u64,
    min_price: i64,
    max_price: i64,
}

const FILES: [Expect; 4] = [
    Expect {
        file: "AAPL_2012-06-21_34200000_37800000_message_50.csv.gz",
        symbol: "AAPL",
        types: [44_256, 469, 41_004, 4_067, 2_201, 0, 0],
        first_ts_ns: 34_200_004_241_176,
        last_ts_ns: 37_799_837_447_053,
        buy: 45_123,
        sell: 46_874,
        min_price: 4_770_000,
        max_price: 6_989_500,
    },
    Expect {
        // Header row + CRLF, times rounded to 5 decimals. SOURCE.md says "57,514 data rows",
        // but its own type counts (and the file) add up to 57,515.
        file: "AMZN_2012-06-21_34200000_57600000_message_1.csv.gz",
        symbol: "AMZN",
        types: [27_845, 16, 18_235, 8_974, 2_445, 0, 0],
        first_ts_ns: 34_200_017_460_000,
        last_ts_ns: 57_599_959_360_000,
        buy: 27_627,
        sell: 29_888,
        min_price: 2_205_100,
        max_price: 2_260_300,
    },
    Expect {
        // 7 columns (MPID), one opening cross (type 6).
        file: "AMZN_2021-04-12_34200000_57600000_message_10.csv.gz",
        symbol: "AMZN",
        types: [17_187, 3, 14_462, 5_389, 3_632, 1, 0],
        first_ts_ns: 34_200_000_376_608,
        last_ts_ns: 35_999_941_933_521,
        buy: 22_219,
        sell: 18_455,
        min_price: 33_520_000,
        max_price: 33_964_900,
    },
    Expect {
        // The first 999 rows; no newline after the last one.
        file: "AAPL_2012-06-21_34200000_57600000_message_10.csv.gz",
        symbol: "AAPL",
        types: [471, 0, 369, 98, 61, 0, 0],
        first_ts_ns: 34_200_004_241_176,
        last_ts_ns: 34_249_086_375_027,
        buy: 412,
        sell: 587,
        min_price: 5_849_900,
        max_price: 5_873_900,
    },
];

#[test]
fn every_lobster_file_imports_with_the_documented_counts() {
    let Some(dir) = data_dir() else { return };
    for e in &FILES {
        let path = dir.join(e.file);
        let f = OrderFile::open(&path, &LoadOptions::default()).unwrap();
        assert_eq!(f.format(), Format::Lobster, "{}", e.file);
        assert!(f.gzipped());
        assert_eq!(f.skipped(), 0);
        let counts = f.lobster_counts().unwrap();
        for t in 1..=7u8 {
            assert_eq!(
                counts.rows_of_type(t),
                e.types[t as usize - 1],
                "{}: rows of type {t}",
                e.file
            );
        }
        let total: u64 = e.types.iter().sum();
        assert_eq!(f.len() as u64, total, "{}", e.file);

        // Map the orders back to the LOBSTER types.
        let mut by_kind: HashMap<OrderKind, u64> = HashMap::new();
        let (mut fills_without_order, mut buy, mut sell) = (0, 0, 0);
        let (mut min_price, mut max_price) = (i64::MAX, i64::MIN);
        let mut prev_ts = 0;
        let symbol = Symbol::new(e.symbol).unwrap();
        for o in f.iter() {
            *by_kind.entry(o.kind).or_default() += 1;
            if o.kind == OrderKind::Fill && o.order_id == 0 {
                fills_without_order += 1;
            }
            match o.side {
                Side::Buy => buy += 1,
                Side::Sell => sell += 1,
            }
            min_price = min_price.min(o.price);
            max_price = max_price.max(o.price);
            assert!(o.ts_ns >= prev_ts, "{}: times are non-decreasing", e.file);
            prev_ts = o.ts_ns;
            assert_eq!(o.symbol, symbol);
            assert!((1..=16).contains(&o.account));
        }
        let t = |i: usize| e.types[i - 1];
        let kind = |k| by_kind.get(&k).copied().unwrap_or(0);
        assert_eq!(kind(OrderKind::New), t(1), "{}", e.file);
        assert_eq!(kind(OrderKind::Cancel), t(2) + t(3), "{}", e.file);
        assert_eq!(kind(OrderKind::Fill), t(4) + t(5) + t(6), "{}", e.file);
        assert_eq!(fills_without_order, t(5) + t(6), "{}", e.file);
        assert_eq!(kind(OrderKind::Halt) + kind(OrderKind::Resume), t(7));
        assert_eq!((buy, sell), (e.buy, e.sell), "{}", e.file);
        assert_eq!(
            (min_price, max_price),
            (e.min_price, e.max_price),
            "{}",
            e.file
        );
        assert_eq!(f.get(0).ts_ns, e.first_ts_ns, "{}", e.file);
        assert_eq!(f.get(f.len() - 1).ts_ns, e.last_ts_ns, "{}", e.file);
    }
}

#[test]
fn cancels_and_fills_land_on_the_account_of_their_new_order() {
    let Some(dir) = data_dir() else { return };
    let f = OrderFile::open(&dir.join(FILES[0].file), &LoadOptions::default()).unwrap();
    let mut account_of = HashMap::new();
    let mut checked = 0;
    for o in f.iter() {
        match o.kind {
            OrderKind::New => {
                account_of.insert(o.order_id, o.account);
            }
            OrderKind::Cancel | OrderKind::Fill if o.order_id != 0 => {
                if let Some(&a) = account_of.get(&o.order_id) {
                    assert_eq!(a, o.account, "order {}", o.order_id);
                    checked += 1;
                }
            }
            _ => {}
        }
    }
    // SOURCE.md: only 84 of 45,540 type-2/3/4 rows refer to an order without a type-1 row.
    assert_eq!(checked, 45_540 - 84);
    // The spread uses every account.
    let used: std::collections::HashSet<u32> = f.iter().map(|o| o.account).collect();
    assert_eq!(used.len(), 16);
    // A different account count changes the spread, deterministically.
    let opts = LoadOptions {
        lobster_accounts: 3,
        ..LoadOptions::default()
    };
    let g = OrderFile::open(&dir.join(FILES[0].file), &opts).unwrap();
    assert!(g.iter().all(|o| (1..=3).contains(&o.account)));
    assert_eq!(g.get(0).account, 1 + (16_113_575 % 3) as u32);
}

#[test]
fn special_rows_map_as_documented() {
    let Some(dir) = data_dir() else { return };
    // The one opening cross of the 7-column file: order id -1 → 0, 45,725 shares at $3,355.21.
    let f = OrderFile::open(&dir.join(FILES[2].file), &LoadOptions::default()).unwrap();
    let cross: Vec<_> = f
        .iter()
        .filter(|o| o.kind == OrderKind::Fill && o.qty == 45_725)
        .collect();
    assert_eq!(cross.len(), 1);
    assert_eq!(cross[0].order_id, 0);
    assert_eq!(cross[0].price, 33_552_100);
    assert_eq!(cross[0].ts_ns, 34_201_117_864_772);
    assert_eq!(cross[0].account, 1);

    // Row 39,483 of file 1 reads 35821.088778456004: truncated to whole nanoseconds.
    let f = OrderFile::open(&dir.join(FILES[0].file), &LoadOptions::default()).unwrap();
    assert_eq!(f.get(39_482).ts_ns, 35_821_088_778_456);

    // An explicit symbol overrides the file name.
    let opts = LoadOptions {
        symbol: Some(Symbol::new("XYZ").unwrap()),
        ..LoadOptions::default()
    };
    let f = OrderFile::open(&dir.join(FILES[3].file), &opts).unwrap();
    assert!(f.iter().all(|o| o.symbol.as_str() == "XYZ"));
}

#[test]
fn gzipped_and_plain_copies_import_identically() {
    let Some(dir) = data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    for e in &FILES {
        let gz = dir.join(e.file);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&gz).unwrap())
            .read_to_end(&mut plain)
            .unwrap();
        let plain_path = tmp.path().join(e.file.trim_end_matches(".gz"));
        std::fs::write(&plain_path, &plain).unwrap();

        let a = OrderFile::open(&gz, &LoadOptions::default()).unwrap();
        let b = OrderFile::open(&plain_path, &LoadOptions::default()).unwrap();
        assert!(a.gzipped() && !b.gzipped());
        assert_eq!(b.format(), Format::Lobster);
        assert_eq!(a.len(), b.len());
        assert!(a.iter().eq(b.iter()), "{}", e.file);
        assert_eq!(a.lobster_counts(), b.lobster_counts());
    }
}

#[test]
fn lobster_converts_to_binary_and_back_losslessly() {
    let Some(dir) = data_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let f = OrderFile::open(&dir.join(FILES[2].file), &LoadOptions::default()).unwrap();
    let bin = tmp.path().join("amzn.bin");
    orders::write_binary(&bin, f.iter()).unwrap();
    let b = OrderFile::open(&bin, &LoadOptions::default()).unwrap();
    assert_eq!(b.format(), Format::Binary);
    assert!(f.iter().eq(b.iter()));
    let csv = tmp.path().join("amzn.csv");
    orders::write_csv(&csv, b.iter()).unwrap();
    let c = OrderFile::open(&csv, &LoadOptions::default()).unwrap();
    assert_eq!(c.format(), Format::Csv);
    assert!(f.iter().eq(c.iter()));
}
