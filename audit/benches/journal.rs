//! Journal benchmarks: append with hashing (128-byte payload), verify throughput, and SQLite in
//! WAL mode (one INSERT per record with its chain hash) beside them.
//!
//! Run: `cargo bench -p audit --bench journal -- --warm-up-time 1 --measurement-time 3`
//! After criterion's groups, a latency distribution of single appends (hdrhistogram) is
//! printed: p50/p99/p99.9 in ns, including the cost of reading the clock twice (also printed).
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use audit::{Durability, VerifyOptions, Writer, WriterOptions};
use criterion::{BenchmarkId, Criterion, Throughput};
use sha2::{Digest, Sha256};

const PAYLOAD_BYTES: usize = 128;
/// A fresh journal is started (outside the timed section) once one reaches this many records,
/// so the bench does not fill the disk.
const RECORDS_PER_JOURNAL_MAX: u64 = 2_000_000;
const VERIFY_RECORDS: u64 = 1_000_000;
const LATENCY_SAMPLES: u64 = 2_000_000;

fn open(dir: &Path, durability: Durability) -> Writer {
    let opts = WriterOptions {
        durability,
        ..WriterOptions::default()
    };
    Writer::open(dir, opts).unwrap().0
}

struct Fresh {
    _tmp: tempfile::TempDir,
    w: Writer,
}

fn fresh(durability: Durability) -> Fresh {
    let tmp = tempfile::tempdir().unwrap();
    let w = open(&tmp.path().join("j"), durability);
    Fresh { _tmp: tmp, w }
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append_128B");
    g.throughput(Throughput::Elements(1));
    let payload = [0x5Au8; PAYLOAD_BYTES];
    for (name, durability) in [
        ("none", Durability::None),
        ("interval_8192_10ms", "interval".parse().unwrap()),
    ] {
        let mut j = fresh(durability);
        g.bench_function(BenchmarkId::new("journal", name), |b| {
            b.iter_custom(|iters| {
                if j.w.next_seq() + iters > RECORDS_PER_JOURNAL_MAX {
                    j = fresh(durability);
                }
                let start = Instant::now();
                for i in 0..iters {
                    black_box(j.w.append(1, i, black_box(&payload)).unwrap());
                }
                start.elapsed()
            })
        });
    }
    // SQLite, WAL mode, synchronous=NORMAL (durable across a process crash, like `none`),
    // one autocommit INSERT per record carrying its chain hash.
    let tmp = tempfile::tempdir().unwrap();
    let db = rusqlite::Connection::open(tmp.path().join("audit.db")).unwrap();
    db.pragma_update(None, "journal_mode", "WAL").unwrap();
    db.pragma_update(None, "synchronous", "NORMAL").unwrap();
    db.execute_batch(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, kind INTEGER NOT NULL, \
         payload BLOB NOT NULL, hash BLOB NOT NULL)",
    )
    .unwrap();
    let mut seq = 0u64;
    let mut head = [0u8; 32];
    g.bench_function(BenchmarkId::new("sqlite_wal", "normal"), |b| {
        let mut stmt = db
            .prepare_cached(
                "INSERT INTO audit (seq, ts_ns, kind, payload, hash) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .unwrap();
        b.iter(|| {
            seq += 1;
            let mut h = Sha256::new();
            h.update(head);
            h.update(seq.to_le_bytes());
            h.update(payload);
            head = h.finalize().into();
            stmt.execute(rusqlite::params![
                seq as i64,
                seq as i64,
                1,
                &payload[..],
                &head[..]
            ])
            .unwrap();
        })
    });
    g.finish();
}

fn bench_verify(c: &mut Criterion, records: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    {
        let mut w = open(&dir, Durability::None);
        let payload = [0x33u8; PAYLOAD_BYTES];
        for i in 0..records {
            w.append(1, i, &payload).unwrap();
        }
    }
    let mut g = c.benchmark_group("verify_128B");
    g.throughput(Throughput::Elements(records));
    g.sample_size(10);
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::new("threads", threads), |b| {
            b.iter(|| {
                let r = audit::verify(
                    &dir,
                    &VerifyOptions {
                        threads,
                        ..VerifyOptions::default()
                    },
                )
                .unwrap();
                assert_eq!(r.records, records);
            })
        });
    }
    g.finish();
}

fn latency_distribution() {
    let payload = [0x5Au8; PAYLOAD_BYTES];
    let mut clock = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
    for _ in 0..100_000 {
        let t0 = Instant::now();
        let t1 = Instant::now();
        clock.saturating_record((t1 - t0).as_nanos() as u64);
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 100_000_000, 3).unwrap();
    let mut j = fresh(Durability::None);
    let started = Instant::now();
    for i in 0..LATENCY_SAMPLES {
        let t0 = Instant::now();
        black_box(j.w.append(1, i, black_box(&payload)).unwrap());
        hist.saturating_record(t0.elapsed().as_nanos() as u64);
    }
    let total = started.elapsed();
    println!(
        "append_128B/none latency over {LATENCY_SAMPLES} appends: p50 {} ns, p99 {} ns, \
         p99.9 {} ns, max {} ns; {:.2} M appends/s with the clock reads \
         (clock pair alone: p50 {} ns)",
        hist.value_at_quantile(0.5),
        hist.value_at_quantile(0.99),
        hist.value_at_quantile(0.999),
        hist.max(),
        LATENCY_SAMPLES as f64 / total.as_secs_f64() / 1e6,
        clock.value_at_quantile(0.5),
    );
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    // `cargo test --benches` runs this binary in test mode (no `--bench`): keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    bench_append(&mut c);
    bench_verify(&mut c, if full { VERIFY_RECORDS } else { 10_000 });
    c.final_summary();
    if full {
        latency_distribution();
    }
}
