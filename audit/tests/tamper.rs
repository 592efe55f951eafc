//! Tamper detection: every changed byte, removed, reordered or inserted record is reported at
//! the right record; a cut tail and a rewritten log are caught with a checkpoint and the
//! public key, or with `--expect-head`.
#![allow(clippy::unwrap_used)]

mod common;

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
    use std::os::unix::fs::FileExt;
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
    // A segment removed from the middle.
    let dir = tmp.path().join("mid");
    copy_dir(&base, &dir);
    std::fs::remove_file(dir.join(segs[2].file_name().unwrap())).unwrap();
    let (_, what) = damaged_seq(verify(&dir));
    assert!(
        matches!(
            what,
            DamageKind::HeaderField {
                field: "segment_index",
                ..
            }
        ),
        "{what}"
    );
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
