//! Tamper detection: every changed byte, removed, reordered or inserted record is reported at
//! the right record; a cut tail and a rewritten log are caught with a checkpoint and the
//! public key, or with `--expect-head`.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use audit::{
    CheckpointPolicy, DamageKind, Durability, JournalError, VerifyOptions, Writer, WriterOptions,
};
use common::{copy_dir, spans, write_journal, Span};
use rand::{Rng, SeedableRng};

fn verify(dir: &Path) -> Result<audit::VerifyReport, JournalError> {
    audit::verify(
        dir,
        &VerifyOptions {
            threads: 2,
            ..VerifyOptions::default()
        },
    )
}

/// Single-threaded (no thread start-up per call) for the loops that verify thousands of times.
fn verify1(dir: &Path) -> Result<audit::VerifyReport, JournalError> {
    audit::verify(
        dir,
        &VerifyOptions {
            threads: 1,
            ..VerifyOptions::default()
        },
    )
}

fn damaged_seq(r: Result<audit::VerifyReport, JournalError>) -> (Option<u64>, DamageKind) {
    match r {
        Err(JournalError::Damaged(d)) => (d.seq, d.what),
        other => panic!("expected damage, got {other:?}"),
    }
}

fn flip(path: &Path, off: usize, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off as u64).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, off as u64).unwrap();
}

#[test]
fn every_flipped_byte_is_reported_at_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    // Two small segments, payloads 0..=40 bytes, so headers, payloads, padding, hashes and a
    // segment link are all covered.
    let written = write_journal(&dir, 60, 40, 4096);
    let spans = spans(&dir);
    assert_eq!(spans.len(), written.len());
    assert!(common::segments(&dir).len() >= 2);
    assert!(verify(&dir).is_ok());
    let mut flips = 0;
    for s in &spans {
        for off in s.start..s.end {
            for mask in [1u8 << (off % 8), 0xFF] {
                flip(&s.file, off, mask);
                let (seq, what) = damaged_seq(verify1(&dir));
                assert_eq!(
                    seq,
                    Some(s.seq),
                    "flip {mask:#x} at {}+{off} (record {}) reported as {what}",
                    s.file.display(),
                    s.seq
                );
                flip(&s.file, off, mask);
                flips += 1;
            }
        }
    }
    assert!(flips > 5000, "{flips}");
    // Segment headers: reported at the segment's first record.
    for seg in common::segments(&dir) {
        let first = spans.iter().find(|s| s.file == seg).unwrap().seq;
        for off in 0..128 {
            flip(&seg, off, 0x04);
            let (seq, _) = damaged_seq(verify1(&dir));
            assert_eq!(seq, Some(first), "header flip at {off}");
            flip(&seg, off, 0x04);
        }
    }
    assert!(verify(&dir).is_ok());
}

#[test]
fn flipped_bytes_through_the_real_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal(&dir, 40, 100, 4096);
    let spans = spans(&dir);
    let ok = Command::new(common::audit_bin())
        .arg("verify")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0));
    for (i, s) in spans.iter().enumerate().step_by(7) {
        let off = s.start + (i * 13) % (s.end - s.start);
        flip(&s.file, off, 0x20);
        let out = Command::new(common::audit_bin())
            .args(["verify", "--json"])
            .arg(&dir)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "flip at record {}", s.seq);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"]["seq"], s.seq);
        assert_eq!(v["error"]["file"], s.file.display().to_string());
        let text = Command::new(common::audit_bin())
            .arg("verify")
            .arg(&dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&text.stdout);
        assert!(stdout.contains("FAILED"), "{stdout}");
        assert!(stdout.contains(&format!("seq {}", s.seq)), "{stdout}");
        flip(&s.file, off, 0x20);
    }
}

#[test]
fn random_bytes_of_a_larger_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal(&dir, 3000, 200, 64 * 1024);
    let spans = spans(&dir);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..150 {
        let s = &spans[rng.gen_range(0..spans.len())];
        let off = rng.gen_range(s.start..s.end);
        let mask = rng.gen_range(1..=255u8);
        flip(&s.file, off, mask);
        let (seq, what) = damaged_seq(verify1(&dir));
        assert_eq!(seq, Some(s.seq), "{what}");
        flip(&s.file, off, mask);
    }
}

/// Rewrites the record area of one segment from a list of record spans (bytes taken from the
/// original file), zero-filling the rest.
fn rewrite_segment(file: &Path, records: &[&Span], original: &[u8]) {
    let mut b = original[..128].to_vec();
    for s in records {
        b.extend_from_slice(&original[s.start..s.end]);
    }
    b.resize(original.len(), 0);
    std::fs::write(file, b).unwrap();
}

#[test]
fn removed_reordered_and_inserted_records_are_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_journal(&base, 30, 60, 64 * 1024);
    let spans = spans(&base);
    let seg = spans[0].file.clone();
    let original = std::fs::read(&seg).unwrap();
    let all: Vec<&Span> = spans.iter().collect();
    let case = |name: &str, records: Vec<&Span>, expect_seq: u64| {
        let dir = tmp.path().join(name);
        copy_dir(&base, &dir);
        let file = dir.join(seg.file_name().unwrap());
        rewrite_segment(&file, &records, &original);
        let (seq, what) = damaged_seq(verify(&dir));
        assert_eq!(seq, Some(expect_seq), "{name}: {what}");
        // The writer refuses to open it for append as well.
        let err = Writer::open(&dir, common::opts(64 * 1024)).unwrap_err();
        assert_eq!(err.damage().unwrap().seq, Some(expect_seq), "{name}: {err}");
    };
    // Remove record 10.
    let mut v = all.clone();
    v.remove(9);
    case("removed", v, 10);
    // Swap records 10 and 11.
    let mut v = all.clone();
    v.swap(9, 10);
    case("reordered", v, 10);
    // Insert a copy of record 10 after it.
    let mut v = all.clone();
    v.insert(10, all[9]);
    case("inserted", v, 11);
    // Insert a forged record (right seq, recomputed with a wrong previous hash).
    let dir = tmp.path().join("forged");
    copy_dir(&base, &dir);
    let mut b = original.clone();
    let s = &spans[14];
    b[s.start + 32] ^= 1; // change the payload...
    let len = s.end - s.start;
    let prev = [0u8; 32];
    let body = &b[s.start..s.end - 32];
    let fake = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(prev);
        h.update(body);
        h.finalize()
    };
    b[s.start + len - 32..s.end].copy_from_slice(&fake); // ...and recompute its hash alone
    std::fs::write(dir.join(seg.file_name().unwrap()), b).unwrap();
    assert_eq!(damaged_seq(verify(&dir)).0, Some(15));
    assert_eq!(damaged_seq(verify(&dir)).1, DamageKind::Hash);
}

#[test]
fn missing_or_extra_segments_are_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_journal(&base, 400, 100, 8192);
    let segs = common::segments(&base);
    assert!(segs.len() >= 4);
    // A segment removed from the middle: named where it is missing.
    let dir = tmp.path().join("mid");
    copy_dir(&base, &dir);
    std::fs::remove_file(dir.join(segs[2].file_name().unwrap())).unwrap();
    let (_, what) = damaged_seq(verify(&dir));
    assert!(matches!(what, DamageKind::SegmentSeq { .. }), "{what}");
    // The first segment removed.
    let dir = tmp.path().join("first");
    copy_dir(&base, &dir);
    std::fs::remove_file(dir.join(segs[0].file_name().unwrap())).unwrap();
    let (_, what) = damaged_seq(verify(&dir));
    assert!(
        matches!(
            what,
            DamageKind::HeaderField { .. } | DamageKind::MissingStart { .. }
        ),
        "{what}"
    );
    // A segment renamed (its name is its first sequence number).
    let dir = tmp.path().join("renamed");
    copy_dir(&base, &dir);
    let last = segs.last().unwrap().file_name().unwrap();
    std::fs::rename(dir.join(last), dir.join("00000000000000099999.seg")).unwrap();
    let (_, what) = damaged_seq(verify(&dir));
    assert!(
        matches!(
            what,
            DamageKind::HeaderField {
                field: "first_seq (file name)",
                ..
            }
        ),
        "{what}"
    );
}

fn checkpointed_journal(dir: &Path, key: &ed25519_dalek::SigningKey, n: u64) -> [u8; 32] {
    let opts = WriterOptions {
        segment_size_bytes: 8192,
        durability: Durability::None,
        checkpoint: Some(CheckpointPolicy {
            signing_key: key.clone(),
            every_records: 25,
            every_ms: 0,
        }),
    };
    let (mut w, _) = Writer::open(dir, opts).unwrap();
    common::append_n(&mut w, n, 100);
    w.head_hash()
}

fn with_key(key: &ed25519_dalek::SigningKey) -> VerifyOptions<'static> {
    VerifyOptions {
        pubkey: Some(key.verifying_key()),
        ..VerifyOptions::default()
    }
}

#[test]
fn a_cut_tail_is_caught_by_checkpoints_and_expect_head() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let key = audit::generate_signing_key();
    let head = checkpointed_journal(&dir, &key, 200);
    let r = audit::verify(&dir, &with_key(&key)).unwrap();
    assert_eq!(r.checkpoints, 8);
    assert_eq!(r.newest_checkpoint_seq, Some(200));
    // Cut the last 30 records: what is left is a valid chain...
    let spans = spans(&dir);
    for s in &spans[170..] {
        let mut b = std::fs::read(&s.file).unwrap();
        b[s.start..s.end].fill(0);
        std::fs::write(&s.file, b).unwrap();
    }
    for s in common::segments(&dir) {
        if !spans[..170].iter().any(|k| k.file == s) {
            std::fs::remove_file(s).unwrap();
        }
    }
    // ...which the checkpoints reject, with or without the key.
    let (seq, what) = damaged_seq(audit::verify(&dir, &with_key(&key)));
    assert_eq!(
        (seq, what),
        (Some(175), DamageKind::TailCut { last_seq: 170 })
    );
    assert!(matches!(
        verify(&dir).unwrap_err().damage().unwrap().what,
        DamageKind::TailCut { .. }
    ));
    // The writer refuses to continue a journal whose checkpoint is past its end.
    let err = Writer::open(&dir, common::opts(8192)).unwrap_err();
    assert!(
        matches!(err.damage().unwrap().what, DamageKind::TailCut { .. }),
        "{err}"
    );
    // An outside record of the head catches it too (no checkpoint file needed).
    std::fs::remove_file(dir.join("checkpoints.log")).unwrap();
    assert!(verify(&dir).is_ok());
    let opts = VerifyOptions {
        expect_head: Some((200, head)),
        ..VerifyOptions::default()
    };
    let (_, what) = damaged_seq(audit::verify(&dir, &opts));
    assert_eq!(what, DamageKind::ExpectedHeadMissing { last_seq: 170 });
    // And with the key, a deleted checkpoint file is itself a failure.
    let (_, what) = damaged_seq(audit::verify(&dir, &with_key(&key)));
    assert_eq!(what, DamageKind::NoCheckpoint);
}

#[test]
fn a_rewritten_log_with_recomputed_hashes_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let key = audit::generate_signing_key();
    let head = checkpointed_journal(&dir, &key, 100);
    // The attacker rebuilds the whole log with record 40 changed, every hash recomputed.
    let forged = tmp.path().join("forged");
    {
        let (mut w, _) = Writer::open(&forged, common::opts(8192)).unwrap();
        for r in common::read_all(&dir) {
            let mut payload = r.payload.clone();
            if r.seq == 40 {
                payload.push(1);
            }
            w.append(r.kind, r.ts_ns, &payload).unwrap();
        }
    }
    for s in common::segments(&dir) {
        std::fs::remove_file(s).unwrap();
    }
    for s in common::segments(&forged) {
        std::fs::copy(&s, dir.join(s.file_name().unwrap())).unwrap();
    }
    // The chain alone is valid.
    assert!(audit::verify(&dir, &VerifyOptions::default()).is_err()); // checkpoints still there
    let (seq, what) = damaged_seq(audit::verify(&dir, &with_key(&key)));
    assert_eq!((seq, what), (Some(50), DamageKind::CheckpointHash));
    // Replacing the checkpoints with ones signed by another key does not help.
    let other = audit::generate_signing_key();
    std::fs::remove_file(dir.join("checkpoints.log")).unwrap();
    let (mut w, _) = Writer::open(
        &dir,
        WriterOptions {
            segment_size_bytes: 8192,
            durability: Durability::None,
            checkpoint: Some(CheckpointPolicy {
                signing_key: other.clone(),
                every_records: 1,
                every_ms: 0,
            }),
        },
    )
    .unwrap();
    w.checkpoint_now(1).unwrap();
    drop(w);
    assert!(audit::verify(&dir, &VerifyOptions::default()).is_ok());
    let (_, what) = damaged_seq(audit::verify(&dir, &with_key(&key)));
    assert!(matches!(what, DamageKind::CheckpointKey { .. }), "{what}");
    // A forged signature under the right key id fails the signature check.
    let mut b = std::fs::read(dir.join("checkpoints.log")).unwrap();
    b[56..64].copy_from_slice(&audit::key_id(&key.verifying_key()));
    std::fs::write(dir.join("checkpoints.log"), &b).unwrap();
    let (_, what) = damaged_seq(audit::verify(&dir, &with_key(&key)));
    assert_eq!(what, DamageKind::CheckpointSignature);
    // The outside head catches it without any checkpoint.
    std::fs::remove_file(dir.join("checkpoints.log")).unwrap();
    let opts = VerifyOptions {
        expect_head: Some((100, head)),
        ..VerifyOptions::default()
    };
    let (seq, what) = damaged_seq(audit::verify(&dir, &opts));
    assert_eq!((seq, what), (Some(100), DamageKind::ExpectedHeadHash));
}

#[test]
fn checkpoints_and_expect_head_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let prefix = tmp.path().join("key");
    let out = Command::new(common::audit_bin())
        .args(["keygen", "--out"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = audit::load_signing_key(&tmp.path().join("key.key")).unwrap();
    let head = checkpointed_journal(&dir, &key, 100);
    let run = |extra: &[&str]| {
        Command::new(common::audit_bin())
            .arg("verify")
            .arg(&dir)
            .args(extra)
            .output()
            .unwrap()
    };
    let pubkey = tmp.path().join("key.pub");
    let pubkey = pubkey.to_str().unwrap();
    let good_head = format!("100:{}", hex::encode(head));
    let out = run(&["--pubkey", pubkey, "--expect-head", &good_head]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("checkpoints  4 verified"), "{stdout}");
    assert!(stdout.contains(&hex::encode(head)), "{stdout}");
    assert!(stdout.contains("expect-head"), "{stdout}");
    // Wrong head: exit 1 naming the seq.
    let bad_head = format!("100:{}", "00".repeat(32));
    let out = run(&["--expect-head", &bad_head]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("seq 100"));
    // Usage errors: exit 2.
    assert_eq!(run(&["--expect-head", "banana"]).status.code(), Some(2));
    assert_eq!(
        run(&["--pubkey", "/nonexistent/key.pub"]).status.code(),
        Some(2)
    );
    let out = Command::new(common::audit_bin())
        .args(["verify", "/nonexistent/journal"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/journal"));
    // A cut tail through the binary: exit 1.
    let spans = spans(&dir);
    let last = spans.last().unwrap();
    let mut b = std::fs::read(&last.file).unwrap();
    b[last.start..last.end].fill(0);
    std::fs::write(&last.file, b).unwrap();
    let out = run(&["--pubkey", pubkey]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tail cut off"), "{stdout}");
}

// ---------------------------------------------------------------------------------------------
// The cases docs/formats/audit-log.md pins down for an outside verifier
// ---------------------------------------------------------------------------------------------

/// Rewrites a segment's header through `change`, with a valid `header_hash` (what someone who
/// knows the format does; the header hash alone catches accidental damage).
fn rewrite_header(path: &Path, change: impl Fn(&mut audit::format::SegmentHeader)) {
    use audit::format::{SegmentHeader, SEGMENT_HEADER_LEN_BYTES};
    let mut b = std::fs::read(path).unwrap();
    let mut h = SegmentHeader::decode(&b).unwrap();
    change(&mut h);
    let mut out = [0u8; SEGMENT_HEADER_LEN_BYTES];
    h.encode(&mut out);
    b[..SEGMENT_HEADER_LEN_BYTES].copy_from_slice(&out);
    std::fs::write(path, b).unwrap();
}

fn damage_of(r: Result<audit::VerifyReport, JournalError>) -> audit::Damage {
    match r {
        Err(JournalError::Damaged(d)) => *d,
        other => panic!("expected damage, got {other:?}"),
    }
}

fn verify_bin(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(common::audit_bin())
        .arg("verify")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

/// Header damage is reported at the offset of the field that is wrong; a missing segment at
/// the `first_seq` of the segment after the gap, with the sequence number expected there.
#[test]
fn errors_name_the_field_offset_and_the_seq_expected_there() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_journal(&base, 400, 100, 8192);
    let segs = common::segments(&base);
    assert!(segs.len() >= 4);
    let seg_spans = spans(&base);
    let first_of = |seg: &Path| {
        seg_spans
            .iter()
            .find(|s| s.file.file_name() == seg.file_name())
            .unwrap()
            .seq
    };
    let in_dir = |dir: &Path, seg: &Path| dir.join(seg.file_name().unwrap());
    // A missing middle segment: named at the next segment's first_seq (offset 32), with the
    // sequence number the missing one started at.
    let dir = tmp.path().join("missing");
    copy_dir(&base, &dir);
    std::fs::remove_file(in_dir(&dir, &segs[2])).unwrap();
    let d = damage_of(verify(&dir));
    let expected = first_of(&segs[2]);
    assert_eq!(
        (&d.file, d.offset, d.seq, &d.what),
        (
            &in_dir(&dir, &segs[3]),
            32,
            Some(expected),
            &DamageKind::SegmentSeq {
                found: first_of(&segs[3]),
                expected
            }
        )
    );
    assert!(
        d.what
            .to_string()
            .contains(&format!("segment holding sequence {expected} is missing")),
        "{}",
        d.what
    );
    let err = Writer::open(&dir, common::opts(8192)).unwrap_err();
    assert_eq!(*err.damage().unwrap(), d, "the writer names the same place");
    let out = verify_bin(&dir, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["error"]["offset"].as_u64(), v["error"]["seq"].as_u64()),
        (Some(32), Some(expected))
    );

    // Fields of a header with a valid header hash: each at its own offset.
    type Change = fn(&mut audit::format::SegmentHeader);
    let cases: [(&str, Change, u64); 4] = [
        ("segment_index", |h| h.segment_index += 1, 24),
        ("prev_hash", |h| h.prev_hash[0] ^= 1, 48),
        ("segment_size", |h| h.segment_size_bytes += 4096, 16),
        ("first_seq", |h| h.first_seq += 1, 32),
    ];
    for (field, change, offset) in cases {
        let dir = tmp.path().join(field);
        copy_dir(&base, &dir);
        rewrite_header(&in_dir(&dir, &segs[1]), change);
        let d = damage_of(verify(&dir));
        assert_eq!(
            (&d.file, d.offset, d.seq),
            (&in_dir(&dir, &segs[1]), offset, Some(first_of(&segs[1]))),
            "{field}: {}",
            d.what
        );
    }
    // Bytes of the header itself: magic at 0, version at 8, header_len at 10, anything the
    // header hash covers at the hash (96).
    for (at, offset) in [
        (0usize, 0u64),
        (9, 8),
        (10, 10),
        (20, 96),
        (50, 96),
        (100, 96),
    ] {
        let dir = tmp.path().join(format!("byte-{at}"));
        copy_dir(&base, &dir);
        flip(&in_dir(&dir, &segs[1]), at, 0x04);
        let d = damage_of(verify(&dir));
        assert_eq!(
            (d.offset, d.seq),
            (offset, Some(first_of(&segs[1]))),
            "byte {at}: {}",
            d.what
        );
    }
}

/// The segment-size rule (a multiple of 4096, 4 KiB to 1 GiB) is a check of its own, not only
/// "equals the file size".
#[test]
fn the_segment_size_rule_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_journal(&base, 3, 50, 8192);
    let seg = common::segments(&base)[0].clone();
    for size in [6144u64, 2048, 8192 + 8] {
        let dir = tmp.path().join(format!("size-{size}"));
        copy_dir(&base, &dir);
        let path = dir.join(seg.file_name().unwrap());
        let mut b = std::fs::read(&path).unwrap();
        b.resize(size as usize, 0);
        std::fs::write(&path, b).unwrap();
        rewrite_header(&path, |h| h.segment_size_bytes = size);
        let d = damage_of(verify(&dir));
        assert_eq!(
            (d.offset, d.seq, &d.what),
            (16, Some(1), &DamageKind::SegmentSize { found: size }),
            "{size}"
        );
        assert!(
            d.what.to_string().contains("multiple of 4096"),
            "{}",
            d.what
        );
        assert!(Writer::open(&dir, common::opts(8192)).is_err());
        assert_eq!(verify_bin(&dir, &[]).status.code(), Some(1));
    }
}

/// A file named like a segment whose number is above u64::MAX is damage (no segment can have
/// that name), not a file to ignore; the writer refuses it too, changing nothing.
#[test]
fn segment_names_above_the_u64_maximum_are_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal(&dir, 30, 50, 4096);
    let odd = dir.join("18446744073709551616.seg");
    std::fs::copy(&common::segments(&dir)[0], &odd).unwrap();
    let d = damage_of(verify(&dir));
    assert_eq!(
        (&d.file, d.offset, d.seq, &d.what),
        (&odd, 0, None, &DamageKind::SegmentName)
    );
    let err = Writer::open(&dir, common::opts(4096)).unwrap_err();
    assert_eq!(err.damage().unwrap().what, DamageKind::SegmentName);
    assert!(odd.exists());
    let out = verify_bin(&dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("18446744073709551615"));
    // u64::MAX itself is a valid name (and here a segment in the wrong place).
    std::fs::remove_file(&odd).unwrap();
    std::fs::copy(
        &common::segments(&dir)[0],
        dir.join(audit::format::segment_file_name(u64::MAX)),
    )
    .unwrap();
    assert!(!matches!(
        damage_of(verify(&dir)).what,
        DamageKind::SegmentName
    ));
}

/// No segment file: not a journal (exit 2) — unless checkpoints say records existed, which is
/// a journal cut off entirely (exit 1). An all-zero last segment is named as what it is.
#[test]
fn an_empty_directory_and_an_all_zero_last_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        verify(&empty),
        Err(JournalError::NoJournal { .. })
    ));
    let out = verify_bin(&empty, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no segment files"));

    let key = audit::generate_signing_key();
    let dir = tmp.path().join("j");
    checkpointed_journal(&dir, &key, 60);
    // An all-zero last segment (a roll-over whose header never reached the disk).
    let next = dir.join(audit::format::segment_file_name(61));
    std::fs::write(&next, vec![0u8; 8192]).unwrap();
    let d = damage_of(verify(&dir));
    assert_eq!(
        (&d.file, d.offset, d.seq, &d.what),
        (&next, 0, Some(61), &DamageKind::EmptySegment)
    );
    let d = damage_of(audit::verify(
        &dir,
        &VerifyOptions {
            allow_torn_tail: true,
            ..VerifyOptions::default()
        },
    ));
    assert_eq!(d.what, DamageKind::EmptySegment);
    // An empty (0-byte) file under a segment name is the same thing.
    std::fs::write(&next, []).unwrap();
    assert_eq!(damage_of(verify(&dir)).what, DamageKind::EmptySegment);
    // Every segment removed: the checkpoints name records that are gone.
    for s in common::segments(&dir) {
        std::fs::remove_file(s).unwrap();
    }
    let d = damage_of(verify(&dir));
    assert_eq!(d.what, DamageKind::TailCut { last_seq: 0 });
    assert_eq!(d.file, dir.join("checkpoints.log"));
    assert_eq!(verify_bin(&dir, &[]).status.code(), Some(1));
}

/// A checkpoint covers at least record 1: sequence 0 is damage with its own message, even as
/// the first entry (where "not increasing" would be a guess).
#[test]
fn a_checkpoint_of_seq_0_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = audit::generate_signing_key();
    let dir = tmp.path().join("j");
    checkpointed_journal(&dir, &key, 10);
    let key_id = audit::key_id(&key.verifying_key());
    let msg = audit::CheckpointEntry::signed_bytes(0, 1, &audit::GENESIS_HASH, &key_id);
    let entry = audit::CheckpointEntry {
        seq: 0,
        ts_ns: 1,
        head_hash: audit::GENESIS_HASH,
        key_id,
        signature: ed25519_dalek::Signer::sign(&key, &msg).to_bytes(),
    };
    std::fs::write(dir.join("checkpoints.log"), entry.encode()).unwrap();
    let d = damage_of(audit::verify(&dir, &with_key(&key)));
    assert_eq!(
        (d.offset, d.seq, &d.what),
        (0, Some(0), &DamageKind::CheckpointSeqZero)
    );
    let err = Writer::open(&dir, common::opts(8192)).unwrap_err();
    assert_eq!(err.damage().unwrap().what, DamageKind::CheckpointSeqZero);
}

/// Non-zero bytes after the end of data of a segment that is not the last: damage with a
/// message that says so (no writer can be appending there), even when they look like the
/// remains of an interrupted append.
#[test]
fn data_after_the_end_of_a_middle_segment_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    // 168-byte records: 23 per 4 KiB segment, 104 bytes left after them.
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    for i in 0..30 {
        w.append(1, i, &[1u8; 100]).unwrap();
    }
    drop(w);
    let segs = common::segments(&dir);
    assert!(segs.len() >= 2);
    let spans = spans(&dir);
    let end = spans.iter().rfind(|s| s.file == segs[0]).unwrap().end;
    assert_eq!(end, 128 + 23 * 168);
    let next_seq = 24u64;
    // What a torn tail would look like: a zero length word, then header fields.
    let mut fake = [0u8; 24];
    fake[4..8].copy_from_slice(&8u32.to_le_bytes());
    fake[8..16].copy_from_slice(&next_seq.to_le_bytes());
    fake[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segs[0])
        .unwrap()
        .write_all_at(&fake, end as u64)
        .unwrap();
    for allow in [false, true] {
        let d = damage_of(audit::verify(
            &dir,
            &VerifyOptions {
                allow_torn_tail: allow,
                ..VerifyOptions::default()
            },
        ));
        assert_eq!(
            (&d.file, d.offset, d.seq, &d.what),
            (
                &segs[0],
                end as u64,
                Some(next_seq),
                &DamageKind::DataAfterSegmentEnd { bytes: 24 }
            )
        );
    }
    let out = verify_bin(&dir, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("not the last one"), "{stdout}");
    assert!(!stdout.contains("appending"), "{stdout}");
}

/// Fewer than 64 bytes left after the last record of the last segment: no record fits there,
/// so no append ever writes there; non-zero bytes there are damage, never a torn tail to cut —
/// including when fewer than 32 bytes (less than a record header) are left.
#[test]
fn bytes_where_no_record_fits_are_damage_not_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    // room = 4096 - 128 - first record - 60 records of 64 bytes
    for (first_payload, room) in [(8usize, 56u64), (40, 24)] {
        let dir = tmp.path().join(format!("room-{room}"));
        let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
        w.append(1, 1, &vec![5u8; first_payload]).unwrap();
        for i in 0..60 {
            w.append(1, i, &[]).unwrap();
        }
        drop(w);
        assert_eq!(common::segments(&dir).len(), 1);
        let seg = common::segments(&dir)[0].clone();
        let end = 4096 - room;
        assert_eq!(spans(&dir).last().unwrap().end as u64, end);
        // What a process crash mid-append leaves: a zero length word, then payload_len 0 and
        // the next seq. Judged as case 2 it would be a torn tail of one 64-byte record.
        let mut fake = [0u8; 16];
        fake[8..16].copy_from_slice(&62u64.to_le_bytes());
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&fake, end).unwrap();
        for allow in [false, true] {
            let d = damage_of(audit::verify(
                &dir,
                &VerifyOptions {
                    allow_torn_tail: allow,
                    ..VerifyOptions::default()
                },
            ));
            assert_eq!(
                (d.offset, d.seq, &d.what),
                (end, Some(62), &DamageKind::DataAfterEnd { bytes: 9 }),
                "room {room}"
            );
        }
        let before = std::fs::read(&seg).unwrap();
        let err = Writer::open(&dir, common::opts(4096)).unwrap_err();
        assert!(
            matches!(err.damage().unwrap().what, DamageKind::DataAfterEnd { .. }),
            "{err}"
        );
        assert_eq!(std::fs::read(&seg).unwrap(), before, "nothing cut");
    }
}

/// Torn-tail cases 2 and 3 overlap for an all-zero header (case 2 with payload_len 0 would
/// allow 64 bytes); case 3 wins: non-zero bytes up to one largest record away are a torn tail.
#[test]
fn a_zero_header_is_case_3_one_largest_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal(&dir, 10, 50, 256 * 1024);
    let last = spans(&dir).last().unwrap().clone();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.file)
        .unwrap();
    // 200 bytes after the end: beyond case 2's 64, within case 3's 65600.
    f.write_all_at(&[0xAB; 8], last.end as u64 + 192).unwrap();
    let d = damage_of(verify(&dir));
    assert_eq!(d.what, DamageKind::TornTail { bytes: 200 });
    let r = audit::verify(
        &dir,
        &VerifyOptions {
            allow_torn_tail: true,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.torn_tail_bytes, 200);
    let (_, rec) = Writer::open(&dir, common::opts(4096)).unwrap();
    assert_eq!(
        (rec.truncated_bytes, rec.truncated_from_seq),
        (200, Some(11))
    );
}
