//! Helpers shared by the audit crate's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use audit::{Durability, Reader, Record, Writer, WriterOptions};

/// One record as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub seq: u64,
    pub ts_ns: u64,
    pub kind: u16,
    pub payload: Vec<u8>,
    pub hash: [u8; 32],
}

pub fn opts(segment_size_bytes: u64) -> WriterOptions {
    WriterOptions {
        segment_size_bytes,
        durability: Durability::None,
        checkpoint: None,
    }
}

/// Appends `n` deterministic records (payload lengths 0..=max_payload by seq).
pub fn append_n(w: &mut Writer, n: u64, max_payload: usize) -> Vec<Written> {
    let mut out = Vec::new();
    for _ in 0..n {
        let seq = w.next_seq();
        let len = audit::testing::payload_len_for(seq, max_payload);
        let payload = audit::testing::payload_for(seq, len);
        let kind = (seq % 5) as u16;
        let a = w.append(kind, seq * 10, &payload).unwrap();
        assert_eq!(a.seq, seq);
        out.push(Written {
            seq,
            ts_ns: seq * 10,
            kind,
            payload,
            hash: a.hash,
        });
    }
    out
}

/// Writes a fresh journal of `n` records and returns what was written.
pub fn write_journal(dir: &Path, n: u64, max_payload: usize, segment_size: u64) -> Vec<Written> {
    let (mut w, rec) = Writer::open(dir, opts(segment_size)).unwrap();
    assert_eq!(rec.next_seq, 1);
    append_n(&mut w, n, max_payload)
}

/// Every record the reader returns, panicking on an error.
pub fn read_all(dir: &Path) -> Vec<Record> {
    Reader::open(dir)
        .unwrap()
        .iter_from(1)
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

pub fn assert_same(read: &[Record], written: &[Written]) {
    assert_eq!(read.len(), written.len());
    for (r, w) in read.iter().zip(written) {
        assert_eq!(
            (r.seq, r.ts_ns, r.kind, &r.payload, r.hash),
            (w.seq, w.ts_ns, w.kind, &w.payload, w.hash),
            "record {} differs",
            w.seq
        );
    }
}

/// Segment files of a journal directory, in order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Where a record lies on disk.
#[derive(Debug, Clone)]
pub struct Span {
    pub file: PathBuf,
    pub start: usize,
    pub end: usize,
    pub seq: u64,
}

/// Walks the raw bytes of every segment (trusting the length words) and returns each
/// record's span.
pub fn spans(dir: &Path) -> Vec<Span> {
    let mut out = Vec::new();
    for file in segments(dir) {
        let b = std::fs::read(&file).unwrap();
        let mut off = 128;
        while off + 64 <= b.len() {
            let len = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            let seq = u64::from_le_bytes(b[off + 8..off + 16].try_into().unwrap());
            out.push(Span {
                file: file.clone(),
                start: off,
                end: off + len,
                seq,
            });
            off += len;
        }
    }
    out
}

/// The `audit` binary of this crate.
pub fn audit_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_audit"))
}

/// Copies a journal directory (files only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// Cases for a property test that lowers proptest's default because each case is slow:
/// `PROPTEST_CASES` (the long mode) when set, else `default`.
pub fn proptest_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A missing prerequisite (root for a tmpfs, python3, the shared data). Under CI (`CI=true`),
/// which installs everything the tests need, the test fails; elsewhere it prints a SKIP line
/// straight to stderr, past the test harness's output capture, so that it is seen.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: prerequisite missing under CI=true: {why}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
}
