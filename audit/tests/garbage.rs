//! Garbage in: random and mutated bytes handed to every parser of outside input of the audit
//! crate: journal files (`verify`, the reader, recovery, the gap-fill service reading them, and
//! the `audit` binary), gap-fill requests (`GapFill::answer`, the REP socket), feed messages and
//! gap-fill replies (the decoders of `audit tail`, and `tail` itself). Never a panic, never an
//! allocation sized by a length field, a clear error every time.
//!
//! Cases: proptest's default (256 per property) or `PROPTEST_CASES=N` for a long run.
#![allow(clippy::unwrap_used)]
// Test-only exception to the crate's "unsafe only for the mmap" rule: a global allocator that
// records the largest allocation needs an `unsafe impl GlobalAlloc`; it forwards to `System`.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use audit::format::{segment_file_name, CHECKPOINT_FILE_NAME, LOCK_FILE_NAME};
use audit::limits::{SERVE_REPLY_BYTES_MAX, SERVE_REQUEST_BYTES_MAX};
use audit::wire::{
    decode_entries, decode_pub, push_entry, write_pub_header, GapReplyHeader, GapRequest,
    ENTRY_HEADER_LEN_BYTES, PUB_BATCH_HEADER_LEN_BYTES, REPLY_HEADER_LEN_BYTES, STATUS_BAD_REQUEST,
    STATUS_JOURNAL_ERROR, STATUS_OK,
};
use audit::{
    CheckpointPolicy, Durability, GapFill, Reader, TailOptions, VerifyOptions, Writer,
    WriterOptions,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The largest allocation, to prove that no length field sizes one
// ---------------------------------------------------------------------------------------------

struct PeakTracking;

static PEAK_ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY (test-only allocator): forwards every call to the system allocator unchanged and only
// records the largest size requested in an atomic (no allocation, no lock).
unsafe impl GlobalAlloc for PeakTracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PEAK_ALLOC_BYTES.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PEAK_ALLOC_BYTES.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: PeakTracking = PeakTracking;

/// No single allocation may exceed this: the largest buffers the crate sizes itself are the
/// 1 MiB read chunk and the 4 MiB gap-fill reply. (Tests in this binary run in parallel and
/// share the counter; all of them stay far below the bound.)
const ALLOC_BYTES_BOUND: usize = 16 << 20;

fn assert_bounded_allocations(what: &str) {
    let peak = PEAK_ALLOC_BYTES.load(Ordering::Relaxed);
    assert!(
        peak <= ALLOC_BYTES_BOUND,
        "{what}: an allocation of {peak} bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// A small journal to damage: several 4 KiB segments and signed checkpoints
// ---------------------------------------------------------------------------------------------

struct Base {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pubkey: ed25519_dalek::VerifyingKey,
    files: BTreeMap<String, Vec<u8>>,
}

fn base() -> &'static Base {
    static BASE: OnceLock<Base> = OnceLock::new();
    BASE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let key = audit::generate_signing_key();
        let opts = WriterOptions {
            segment_size_bytes: 4096,
            durability: Durability::None,
            checkpoint: Some(CheckpointPolicy {
                signing_key: key.clone(),
                every_records: 10,
                every_ms: 0,
            }),
        };
        let (mut w, _) = Writer::open(&dir, opts).unwrap();
        common::append_n(&mut w, 80, 120);
        w.sync().unwrap();
        drop(w);
        let files = journal_files(&dir);
        assert!(files.len() >= 4, "{:?}", files.keys());
        Base {
            _tmp: tmp,
            dir,
            pubkey: key.verifying_key(),
            files,
        }
    })
}

/// The journal's files by name (not the lock file, whose content means nothing).
fn journal_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != LOCK_FILE_NAME))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte (never 0: it changes something).
    Flip {
        file: prop::sample::Index,
        at: prop::sample::Index,
        xor: u8,
    },
    /// Write a little-endian integer (length fields, sequence numbers, counts) at an 8-aligned
    /// offset plus a small shift.
    Word {
        file: prop::sample::Index,
        at: prop::sample::Index,
        shift: usize,
        value: u64,
        width: usize,
    },
    /// Overwrite a run of bytes with random ones.
    Overwrite {
        file: prop::sample::Index,
        at: prop::sample::Index,
        bytes: Vec<u8>,
    },
    /// Cut the file.
    Truncate {
        file: prop::sample::Index,
        at: prop::sample::Index,
    },
    /// Append random bytes.
    Extend {
        file: prop::sample::Index,
        bytes: Vec<u8>,
    },
    /// Remove the file.
    Remove { file: prop::sample::Index },
    /// A file named like a segment, of random bytes (or a copy of an existing segment).
    AddSegment {
        first_seq: u64,
        bytes: Vec<u8>,
        copy_of: Option<prop::sample::Index>,
    },
    /// The whole file replaced by random bytes.
    Replace {
        file: prop::sample::Index,
        bytes: Vec<u8>,
    },
}

fn arb_word() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::from(u32::MAX)),
        Just(u64::MAX),
        Just(1u64 << 31),
        Just(1u64 << 32),
        Just(0),
        any::<u64>(),
        0u64..100_000,
    ]
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        3 => (idx(), idx(), 1u8..=255).prop_map(|(file, at, xor)| Mutation::Flip { file, at, xor }),
        3 => (idx(), idx(), 0usize..8, arb_word(), prop_oneof![Just(2usize), Just(4), Just(8)])
            .prop_map(|(file, at, shift, value, width)| Mutation::Word { file, at, shift, value, width }),
        1 => (idx(), idx(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(file, at, bytes)| Mutation::Overwrite { file, at, bytes }),
        1 => (idx(), idx()).prop_map(|(file, at)| Mutation::Truncate { file, at }),
        1 => (idx(), prop::collection::vec(any::<u8>(), 1..300))
            .prop_map(|(file, bytes)| Mutation::Extend { file, bytes }),
        1 => idx().prop_map(|file| Mutation::Remove { file }),
        1 => (prop_oneof![1u64..100, any::<u64>()], prop::collection::vec(any::<u8>(), 0..5000),
              proptest::option::of(idx()))
            .prop_map(|(first_seq, bytes, copy_of)| Mutation::AddSegment { first_seq, bytes, copy_of }),
        1 => (idx(), prop::collection::vec(any::<u8>(), 0..5000))
            .prop_map(|(file, bytes)| Mutation::Replace { file, bytes }),
    ]
}

/// Applies mutations to the files of a journal (in memory).
fn mutate(files: &mut BTreeMap<String, Vec<u8>>, mutations: &[Mutation]) {
    for m in mutations {
        let names: Vec<String> = files.keys().cloned().collect();
        if names.is_empty() {
            break;
        }
        let pick = |i: &prop::sample::Index| names[i.index(names.len())].clone();
        match m {
            Mutation::Flip { file, at, xor } => {
                let f = files.get_mut(&pick(file)).unwrap();
                if !f.is_empty() {
                    let i = at.index(f.len());
                    f[i] ^= xor;
                }
            }
            Mutation::Word {
                file,
                at,
                shift,
                value,
                width,
            } => {
                let f = files.get_mut(&pick(file)).unwrap();
                if f.len() >= 16 {
                    let i = (at.index(f.len() - 8) / 8 * 8 + shift).min(f.len() - width);
                    f[i..i + width].copy_from_slice(&value.to_le_bytes()[..*width]);
                }
            }
            Mutation::Overwrite { file, at, bytes } => {
                let f = files.get_mut(&pick(file)).unwrap();
                if !f.is_empty() {
                    let i = at.index(f.len());
                    let n = bytes.len().min(f.len() - i);
                    f[i..i + n].copy_from_slice(&bytes[..n]);
                }
            }
            Mutation::Truncate { file, at } => {
                let f = files.get_mut(&pick(file)).unwrap();
                let n = at.index(f.len() + 1);
                f.truncate(n);
            }
            Mutation::Extend { file, bytes } => {
                files.get_mut(&pick(file)).unwrap().extend_from_slice(bytes);
            }
            Mutation::Remove { file } => {
                files.remove(&pick(file));
            }
            Mutation::AddSegment {
                first_seq,
                bytes,
                copy_of,
            } => {
                let content = match copy_of {
                    Some(i) => files[&pick(i)].clone(),
                    None => bytes.clone(),
                };
                files.insert(segment_file_name(*first_seq), content);
            }
            Mutation::Replace { file, bytes } => {
                *files.get_mut(&pick(file)).unwrap() = bytes.clone();
            }
        }
    }
}

fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

fn is_segment(name: &str) -> bool {
    audit::format::parse_segment_file_name(name).is_some()
}

/// Asks for every record; checks that the reply is well formed whatever the journal holds.
fn ask_everything(gap: &mut GapFill) -> u16 {
    let mut out = Vec::new();
    let req = GapRequest {
        from_seq: 1,
        to_seq: u64::MAX,
        max_records: 0,
    };
    gap.answer(&req.encode(), &mut out);
    assert!(out.len() <= SERVE_REPLY_BYTES_MAX);
    let (h, rest) = GapReplyHeader::decode(&out).unwrap();
    match h.status {
        STATUS_OK => {
            decode_entries(rest, h.count as usize).unwrap();
        }
        STATUS_JOURNAL_ERROR => assert!(!rest.is_empty(), "an error without a message"),
        s => panic!("status {s}"),
    }
    h.status
}

proptest! {
    /// Any change to the bytes of a segment is caught by `verify`; nothing panics; every
    /// error names what is wrong; no length field sizes an allocation.
    #[test]
    fn damaged_journals_are_refused_with_a_clear_error(
        mutations in prop::collection::vec(arb_mutation(), 1..4)
    ) {
        let base = base();
        let mut files = base.files.clone();
        mutate(&mut files, &mutations);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        write_files(&dir, &files);
        let opts = VerifyOptions {
            threads: 2,
            pubkey: Some(base.pubkey),
            ..VerifyOptions::default()
        };
        match audit::verify(&dir, &opts) {
            Ok(report) => {
                // Only changes that cannot be told apart from a shorter, still anchored
                // journal pass: the segments present are the first ones of the original,
                // unchanged (e.g. the last checkpoints and the last segment both removed).
                let segs: Vec<&String> = files.keys().filter(|n| is_segment(n)).collect();
                let base_segs: Vec<&String> = base.files.keys().filter(|n| is_segment(n)).collect();
                prop_assert!(base_segs.starts_with(&segs), "{:?} vs {:?}", segs, base_segs);
                for n in segs {
                    prop_assert!(files[n] == base.files[n], "segment {} changed, verify passed: {:?}", n, report);
                }
            }
            Err(e) => {
                let text = e.to_string();
                prop_assert!(!text.is_empty());
                if let Some(d) = e.damage() {
                    prop_assert!(d.file.starts_with(&dir), "{}", text);
                }
            }
        }
        // The other readers of journal files: a reader (dump), the gap-fill service, and
        // recovery (which cuts only a torn tail and refuses other damage).
        if let Ok(reader) = Reader::open(&dir) {
            for r in reader.iter_from(1) {
                if let Err(e) = r {
                    prop_assert!(!e.to_string().is_empty());
                    break;
                }
            }
        }
        ask_everything(&mut GapFill::new(&dir));
        if let Err(e) = Writer::open(&dir, common::opts(4096)) {
            prop_assert!(!e.to_string().is_empty());
        }
        assert_bounded_allocations("journal");
    }

    /// Random bytes as a whole journal: refused, never a panic.
    #[test]
    fn random_files_are_not_a_journal(
        files in prop::collection::btree_map(
            prop_oneof![
                (1u64..5).prop_map(segment_file_name),
                Just(CHECKPOINT_FILE_NAME.to_owned()),
            ],
            prop::collection::vec(any::<u8>(), 0..9000),
            1..4,
        )
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        write_files(&dir, &files);
        let err = audit::verify(&dir, &VerifyOptions::default());
        // A random file can only be a valid segment if it is all zeros past a valid header,
        // which random bytes are not.
        prop_assert!(err.is_err(), "random bytes verified: {:?}", files.keys());
        prop_assert!(!err.unwrap_err().to_string().is_empty());
        ask_everything(&mut GapFill::new(&dir));
        assert_bounded_allocations("random journal");
    }

    /// Random bytes as a gap-fill request: a reply that says why, never a panic.
    #[test]
    fn random_requests_get_a_bad_request_reply(
        bytes in prop::collection::vec(any::<u8>(), 0..=SERVE_REQUEST_BYTES_MAX)
    ) {
        let mut gap = GapFill::new(&base().dir);
        let mut out = Vec::new();
        gap.answer(&bytes, &mut out);
        let (h, rest) = GapReplyHeader::decode(&out).unwrap();
        prop_assert_eq!(h.status, STATUS_BAD_REQUEST);
        prop_assert!(!rest.is_empty());
        prop_assert!(std::str::from_utf8(rest).is_ok());
        assert_bounded_allocations("requests");
    }

    /// Well-formed requests with any field values, or mutated ones: the reply is exactly the
    /// records asked for (bounded), or a bad-request reply.
    #[test]
    fn any_request_fields_are_answered_within_bounds(
        from in prop_oneof![1u64..100, any::<u64>()],
        to in prop_oneof![1u64..100, any::<u64>(), Just(u64::MAX)],
        max in prop_oneof![0u32..20, any::<u32>()],
        flip in proptest::option::of((0usize..32, 1u8..=255)),
    ) {
        let mut bytes = GapRequest { from_seq: from, to_seq: to, max_records: max }.encode();
        if let Some((i, x)) = flip {
            bytes[i] ^= x;
        }
        let mut gap = GapFill::new(&base().dir);
        let mut out = Vec::new();
        gap.answer(&bytes, &mut out);
        prop_assert!(out.len() <= SERVE_REPLY_BYTES_MAX);
        let (h, rest) = GapReplyHeader::decode(&out).unwrap();
        match GapRequest::decode(&bytes) {
            Ok(req) => {
                prop_assert_eq!(h.status, STATUS_OK);
                let entries = decode_entries(rest, h.count as usize).unwrap();
                let last = req.to_seq.min(h.head_seq);
                let expect = if req.from_seq > last { 0 } else {
                    let n = last - req.from_seq + 1;
                    if req.max_records == 0 { n } else { n.min(u64::from(req.max_records)) }
                };
                prop_assert_eq!(entries.len() as u64, expect);
                for (i, e) in entries.iter().enumerate() {
                    prop_assert_eq!(e.seq, req.from_seq + i as u64);
                }
            }
            Err(_) => {
                prop_assert_eq!(h.status, STATUS_BAD_REQUEST);
                prop_assert!(!rest.is_empty());
            }
        }
        assert_bounded_allocations("request fields");
    }

    /// Random bytes as a feed message: refused, never a panic, never an allocation sized by
    /// the count field.
    #[test]
    fn random_feed_messages_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
        if let Ok(entries) = decode_pub(&bytes) {
            // Only a message that is exactly a valid batch decodes: re-encoding gives it back.
            prop_assert_eq!(encode_pub(&entries), bytes);
        }
        assert_bounded_allocations("feed");
    }

    /// Valid feed messages, mutated: a mutated message decodes only if it is still exactly a
    /// well-formed batch (the decoder accepts no slack: flags, padding, trailing bytes).
    #[test]
    fn mutated_feed_messages_decode_exactly_or_are_refused(
        recs in prop::collection::vec(
            (1u64..1000, any::<u64>(), any::<u16>(), any::<[u8; 32]>(),
             prop::collection::vec(any::<u8>(), 0..100)),
            1..8),
        mutations in prop::collection::vec(
            (any::<prop::sample::Index>(), prop_oneof![
                (1u8..=255).prop_map(Some),
                Just(None),
            ], arb_word(), prop_oneof![Just(2usize), Just(4), Just(8)]),
            1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut msg = Vec::with_capacity(PUB_BATCH_HEADER_LEN_BYTES + recs.len() * (ENTRY_HEADER_LEN_BYTES + 104));
        msg.resize(PUB_BATCH_HEADER_LEN_BYTES, 0);
        for (seq, ts, kind, hash, payload) in &recs {
            push_entry(&mut msg, *seq, hash, *kind, *ts, payload);
        }
        write_pub_header(&mut msg, recs.len() as u16);
        for (at, xor, word, width) in &mutations {
            let i = at.index(msg.len());
            match xor {
                Some(x) => msg[i] ^= x,
                None => {
                    let i = i.min(msg.len() - width);
                    msg[i..i + width].copy_from_slice(&word.to_le_bytes()[..*width]);
                }
            }
        }
        if let Some(c) = cut {
            let n = c.index(msg.len() + 1);
            msg.truncate(n);
        }
        match decode_pub(&msg) {
            Ok(entries) => prop_assert_eq!(encode_pub(&entries), msg),
            Err(e) => prop_assert!(e.to_string().starts_with("protocol error"), "{}", e),
        }
        assert_bounded_allocations("mutated feed");
    }
}

fn encode_pub(entries: &[audit::wire::EntryRef<'_>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(
        PUB_BATCH_HEADER_LEN_BYTES
            + entries
                .iter()
                .map(|e| audit::wire::entry_len(e.payload.len()))
                .sum::<usize>(),
    );
    buf.resize(PUB_BATCH_HEADER_LEN_BYTES, 0);
    for e in entries {
        push_entry(&mut buf, e.seq, &e.hash, e.kind, e.ts_ns, e.payload);
    }
    write_pub_header(&mut buf, entries.len() as u16);
    buf
}

// ---------------------------------------------------------------------------------------------
// Length fields that claim more than the message holds: refused before allocating
// ---------------------------------------------------------------------------------------------

#[test]
fn a_count_claiming_four_billion_entries_is_refused_before_allocating() {
    let before = PEAK_ALLOC_BYTES.load(Ordering::Relaxed);
    assert!(before <= ALLOC_BYTES_BOUND);
    // A gap-fill reply header claiming u32::MAX entries (each at least 56 bytes: 224 GiB).
    let mut reply = vec![0u8; REPLY_HEADER_LEN_BYTES + 100];
    GapReplyHeader {
        status: STATUS_OK,
        count: u32::MAX,
        head_seq: 5,
        head_hash: [0; 32],
    }
    .encode_into(&mut reply);
    let (h, rest) = GapReplyHeader::decode(&reply).unwrap();
    let err = decode_entries(rest, h.count as usize)
        .unwrap_err()
        .to_string();
    assert!(err.contains("claims 4294967295 entries"), "{err}");
    // A feed message claiming 65535 entries in 8 bytes.
    let mut msg = vec![0u8; PUB_BATCH_HEADER_LEN_BYTES];
    write_pub_header(&mut msg, u16::MAX);
    let err = decode_pub(&msg).unwrap_err().to_string();
    assert!(err.contains("claims 65535 entries"), "{err}");
    assert_bounded_allocations("length fields");
}

// ---------------------------------------------------------------------------------------------
// Garbage on the sockets
// ---------------------------------------------------------------------------------------------

/// A gap-fill server that answers every request with `reply`.
fn fake_server(ctx: &zmq::Context, reply: Vec<u8>, stop: &'static AtomicBool) -> String {
    let rep = ctx.socket(zmq::REP).unwrap();
    rep.set_linger(0).unwrap();
    rep.bind("tcp://127.0.0.1:*").unwrap();
    let ep = rep.get_last_endpoint().unwrap().unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if rep.poll(zmq::POLLIN, 50).unwrap() > 0 {
                let _ = rep.recv_multipart(0).unwrap();
                rep.send(&reply[..], 0).unwrap();
            }
        }
    });
    ep
}

#[test]
fn tail_refuses_garbage_replies_and_feed_messages_with_a_clear_error() {
    static STOP: AtomicBool = AtomicBool::new(false);
    let ctx = zmq::Context::new();
    let mut huge = vec![0u8; REPLY_HEADER_LEN_BYTES];
    GapReplyHeader {
        status: STATUS_OK,
        count: u32::MAX,
        head_seq: 1,
        head_hash: [0; 32],
    }
    .encode_into(&mut huge);
    let replies: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage".to_vec(), "not a gap-fill reply"),
        (huge, "claims 4294967295 entries"),
        (vec![0xff; 200], "not a gap-fill reply"),
    ];
    for (reply, expect) in replies {
        let ep = fake_server(&ctx, reply, &STOP);
        let mut opts = TailOptions::new("inproc://nothing-here", &ep);
        opts.until_seq = Some(10);
        opts.idle_poll_ms = 20;
        opts.request_timeout_ms = 2000;
        let started = Instant::now();
        let err = audit::tail(&ctx, &opts, &AtomicBool::new(false), &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains(expect), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    STOP.store(true, Ordering::Relaxed);
    // Garbage on the feed ends the tail with a protocol error.
    for msg in [b"TTNP".to_vec(), b"hello, world".to_vec(), {
        let mut m = vec![0u8; PUB_BATCH_HEADER_LEN_BYTES];
        write_pub_header(&mut m, u16::MAX);
        m
    }] {
        let publisher = ctx.socket(zmq::PUB).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        let ep = publisher.get_last_endpoint().unwrap().unwrap();
        let mut opts = TailOptions::new(&ep, "tcp://127.0.0.1:1");
        opts.until_seq = Some(10);
        opts.idle_poll_ms = 60_000;
        let done = AtomicBool::new(false);
        let result = Mutex::new(None);
        std::thread::scope(|s| {
            s.spawn(|| {
                let r = audit::tail(&ctx, &opts, &AtomicBool::new(false), &mut |_| {});
                *result.lock().unwrap() = Some(r);
                done.store(true, Ordering::Relaxed);
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done.load(Ordering::Relaxed) {
                assert!(Instant::now() < deadline, "tail kept going on garbage");
                publisher.send(&msg[..], 0).unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let err = result.lock().unwrap().take().unwrap().unwrap_err();
        assert!(err.to_string().starts_with("protocol error"), "{err}");
    }
    assert_bounded_allocations("tail");
}

#[test]
fn serve_answers_garbage_on_its_socket_and_drops_oversized_messages() {
    let ctx = zmq::Context::new();
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let (serve_ctx, serve_stop, dir) = (ctx.clone(), stop.clone(), base().dir.clone());
    let server = std::thread::spawn(move || {
        audit::serve(
            &serve_ctx,
            &dir,
            "tcp://127.0.0.1:*",
            &serve_stop,
            &mut |ep| tx.send(ep.to_owned()).unwrap(),
        )
        .unwrap()
    });
    let ep = rx.recv().unwrap();
    let ask = |frames: &[&[u8]]| -> Option<Vec<u8>> {
        let req = ctx.socket(zmq::REQ).unwrap();
        req.set_linger(0).unwrap();
        req.connect(&ep).unwrap();
        req.send_multipart(frames.iter().copied(), 0).unwrap();
        (req.poll(zmq::POLLIN, 1500).unwrap() > 0).then(|| req.recv_bytes(0).unwrap())
    };
    for frames in [
        vec![&b""[..]],
        vec![&b"x"[..], &b"y"[..]],
        vec![&[0xffu8; 32][..]],
        vec![&[0u8; SERVE_REQUEST_BYTES_MAX][..]],
    ] {
        let reply = ask(&frames).expect("a reply to a malformed request");
        let (h, rest) = GapReplyHeader::decode(&reply).unwrap();
        assert_eq!(h.status, STATUS_BAD_REQUEST);
        assert!(!rest.is_empty());
    }
    // A frame larger than any request: libzmq drops the peer before allocating the frame.
    let big = vec![7u8; 8 << 20];
    assert!(
        ask(&[&big[..]]).is_none(),
        "an oversized request was answered"
    );
    // The service is still there for well-formed requests.
    let good = GapRequest {
        from_seq: 1,
        to_seq: 3,
        max_records: 0,
    }
    .encode();
    let reply = ask(&[&good[..]]).expect("still serving");
    let (h, rest) = GapReplyHeader::decode(&reply).unwrap();
    assert_eq!(
        (
            h.status,
            decode_entries(rest, h.count as usize).unwrap().len()
        ),
        (STATUS_OK, 3)
    );
    stop.store(true, Ordering::Relaxed);
    let stats = server.join().unwrap();
    assert_eq!(stats.errors, 4);
}

#[test]
fn the_binary_refuses_damaged_journals_with_a_named_place_and_no_panic() {
    let base = base();
    let seg_names: Vec<&String> = base.files.keys().filter(|n| is_segment(n)).collect();
    let first = seg_names[0].clone();
    let last = seg_names[seg_names.len() - 1].clone();
    type Damage = Box<dyn Fn(&mut BTreeMap<String, Vec<u8>>)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "random segment",
            Box::new({
                let first = first.clone();
                move |f| {
                    *f.get_mut(&first).unwrap() = (0..4096u32)
                        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                        .collect()
                }
            }),
        ),
        (
            "record_len 4 GiB",
            Box::new({
                let first = first.clone();
                move |f| {
                    f.get_mut(&first).unwrap()[128..132].copy_from_slice(&u32::MAX.to_le_bytes())
                }
            }),
        ),
        (
            "payload_len 4 GiB",
            Box::new({
                let first = first.clone();
                move |f| {
                    f.get_mut(&first).unwrap()[132..136].copy_from_slice(&u32::MAX.to_le_bytes())
                }
            }),
        ),
        (
            "segment_size 2^64-1",
            Box::new({
                let last = last.clone();
                move |f| f.get_mut(&last).unwrap()[16..24].copy_from_slice(&u64::MAX.to_le_bytes())
            }),
        ),
        (
            "truncated segment",
            Box::new({
                let last = last.clone();
                move |f| f.get_mut(&last).unwrap().truncate(100)
            }),
        ),
        (
            "garbage checkpoints",
            Box::new(|f| {
                f.insert(CHECKPOINT_FILE_NAME.to_owned(), vec![0x5a; 300]);
            }),
        ),
        (
            "empty segment file",
            Box::new(|f| {
                f.insert(segment_file_name(1_000_000), Vec::new());
            }),
        ),
    ];
    for (what, damage) in cases {
        let mut files = base.files.clone();
        damage(&mut files);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        write_files(&dir, &files);
        let pubkey = tmp.path().join("k.pub");
        std::fs::write(&pubkey, hex::encode(base.pubkey.as_bytes())).unwrap();
        for args in [
            vec![
                "verify".to_owned(),
                dir.display().to_string(),
                "--pubkey".into(),
                pubkey.display().to_string(),
            ],
            vec![
                "verify".to_owned(),
                dir.display().to_string(),
                "--json".into(),
            ],
            vec!["dump".to_owned(), dir.display().to_string()],
        ] {
            let out = Command::new(common::audit_bin())
                .args(&args)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!text.contains("panicked"), "{what}: {args:?}: {text}");
            let code = out.status.code();
            if args[0] == "dump" && what == "garbage checkpoints" {
                // `dump` reads records, not checkpoints: the records are intact.
                assert_eq!(code, Some(0), "{what}: {text}");
                continue;
            }
            assert!(
                code == Some(1) || code == Some(2),
                "{what}: {args:?} exited {code:?}: {text}"
            );
            if args[0] == "verify" && !args.contains(&"--json".to_owned()) {
                assert!(
                    text.contains("FAILED") || text.contains("error"),
                    "{what}: {text}"
                );
            }
            if args.contains(&"--json".to_owned()) && code == Some(1) {
                let v: serde_json::Value =
                    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
                assert_eq!(v["ok"], false, "{what}");
                assert!(
                    v["error"]["what"].as_str().is_some_and(|s| !s.is_empty()),
                    "{what}"
                );
            }
        }
    }
}
