//! Load time of a binary order file: `OrderFile::open` (read, validate, decode every record)
//! and one pass over the orders, median of N rounds, warm page cache.
//!
//! `cargo run --release -p orders --example load_time -- [ORDERS] [ROUNDS]` (default 1000000, 21).
//! Writes the file in the system's temporary directory and removes it at the end. The numbers
//! of `docs/formats/orders.md` ("Binary") come from this loop (and, for the memory map the
//! loader had before, the same loop against that version).

use std::time::Instant;

use orders::files::{LoadOptions, OrderFile};
use orders::{Order, Symbol};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(Ok(1_000_000), |s| s.parse())?;
    let rounds: usize = args.next().map_or(Ok(21), |s| s.parse())?.max(1);
    let dir = std::env::temp_dir().join(format!("orders-load-time-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("orders.bin");
    let symbol = Symbol::new("AAPL")?;
    orders::write_binary(
        &path,
        (0..n).map(|i| Order {
            order_id: i + 1,
            qty: 10,
            price: 1_000_000 + (i % 100) as i64,
            account: (i % 16) as u32,
            symbol,
            ..Order::default()
        }),
    )?;
    let bytes = std::fs::metadata(&path)?.len();
    let (mut open, mut pass) = (Vec::new(), Vec::new());
    let mut sum = 0u64;
    for _ in 0..rounds {
        let t = Instant::now();
        let f = OrderFile::open(&path, &LoadOptions::default())?;
        open.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        sum = f.iter().fold(sum, |s, o| s.wrapping_add(o.order_id));
        pass.push(t.elapsed().as_secs_f64() * 1e3);
    }
    std::fs::remove_dir_all(&dir)?;
    let total: Vec<f64> = open.iter().zip(&pass).map(|(a, b)| a + b).collect();
    println!(
        "{n} orders ({bytes} bytes), median of {rounds}: open {:.1} ms, one pass {:.1} ms, \
         total {:.1} ms (checksum {sum})",
        median(open),
        median(pass),
        median(total)
    );
    Ok(())
}
