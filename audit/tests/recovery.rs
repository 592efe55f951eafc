//! Recovery on open: a torn tail (the last record cut at any byte) is cut off and reported,
//! keeping exactly the good prefix; damage anywhere else refuses to open.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use audit::{DamageKind, JournalError, VerifyOptions, Writer};
use common::{assert_same, copy_dir, read_all, spans, write_journal, Span};

fn zero(path: &Path, from: usize, to: usize) {
    if to > from {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(&vec![0u8; to - from], from as u64).unwrap();
    }
}

fn check_recovers_to(dir: &Path, written: &[common::Written], last: &Span, expect_cut: bool) {
    let good = &written[..written.len() - 1];
    let (mut w, rec) = Writer::open(dir, common::opts(4096)).unwrap();
    assert_eq!(rec.records, good.len() as u64);
    assert_eq!(rec.next_seq, last.seq);
    assert_eq!(rec.head_hash, good.last().unwrap().hash);
    if expect_cut {
        assert_eq!(rec.truncated_from_seq, Some(last.seq));
        assert!(rec.truncated_bytes > 0 && rec.truncated_bytes <= (last.end - last.start) as u64);
    } else {
        assert_eq!((rec.truncated_bytes, rec.truncated_from_seq), (0, None));
    }
    // The cut bytes are zero again, the chain continues from the good prefix.
    let a = w.append(3, 33, b"after recovery").unwrap();
    assert_eq!(a.seq, last.seq);
    drop(w);
    let read = read_all(dir);
    assert_same(&read[..good.len()], good);
    assert_eq!(read[good.len()].payload, b"after recovery");
    audit::verify(dir, &VerifyOptions::default()).unwrap();
}

#[test]
fn a_torn_last_record_is_cut_at_every_byte_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    // Last record: a large payload with no zero bytes near its end; the first record of a
    // segment in the second variant.
    let written = write_journal(&base, 20, 120, 4096);
    let spans = spans(&base);
    let last = spans.last().unwrap().clone();
    let len = last.end - last.start;
    for cut in 0..=len {
        // Process crash: everything but the length word may have been written, up to `cut`.
        let dir = tmp.path().join(format!("crash-{cut}"));
        copy_dir(&base, &dir);
        let file = dir.join(last.file.file_name().unwrap());
        zero(&file, last.start, last.start + 4);
        zero(&file, last.start + cut.max(4), last.end);
        let anything_left = std::fs::read(&file).unwrap()[last.start..last.end]
            .iter()
            .any(|&b| b != 0);
        check_recovers_to(
            &dir,
            &written,
            &Span {
                file,
                ..last.clone()
            },
            anything_left,
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // Power loss: the header (one 32-byte unit) reached the disk, bytes from `cut` on
        // did not.
        if (32..len).contains(&cut) {
            let dir = tmp.path().join(format!("power-{cut}"));
            copy_dir(&base, &dir);
            let file = dir.join(last.file.file_name().unwrap());
            zero(&file, last.start + cut, last.end);
            check_recovers_to(
                &dir,
                &written,
                &Span {
                    file,
                    ..last.clone()
                },
                true,
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn a_torn_first_record_of_a_new_segment_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let mut written = write_journal(&base, 20, 120, 4096);
    // Append until a new segment starts, then tear its first record.
    let (mut w, _) = Writer::open(&base, common::opts(4096)).unwrap();
    let segs = common::segments(&base).len();
    while common::segments(&base).len() == segs {
        written.extend(common::append_n(&mut w, 1, 120));
    }
    drop(w);
    let last = spans(&base).last().unwrap().clone();
    assert_eq!(last.start, 128, "the last record starts a segment");
    zero(&last.file, last.start, last.start + 4);
    check_recovers_to(&base, &written, &last, true);
}

#[test]
fn garbage_after_the_end_within_one_record_is_cut_beyond_it_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let written = write_journal(&base, 10, 50, 256 * 1024);
    let spans = spans(&base);
    let end = spans.last().unwrap().end;
    let file = spans[0].file.clone();
    // A lost first page of a record: zero header, some bytes later on.
    let dir = tmp.path().join("near");
    copy_dir(&base, &dir);
    let f = dir.join(file.file_name().unwrap());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all_at(&[0xAB; 16], (end + 5000) as u64)
        .unwrap();
    // verify (strict) reports it, as the torn tail it is...
    let err = audit::verify(&dir, &VerifyOptions::default()).unwrap_err();
    assert!(
        matches!(err.damage().unwrap().what, DamageKind::TornTail { .. }),
        "{err}"
    );
    assert_eq!(err.damage().unwrap().seq, Some(11));
    // ...unless told a writer may be appending.
    let ok = audit::verify(
        &dir,
        &VerifyOptions {
            allow_torn_tail: true,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ok.torn_tail_bytes, 5016);
    let (_, rec) = Writer::open(&dir, common::opts(4096)).unwrap();
    assert_eq!(
        (rec.truncated_bytes, rec.truncated_from_seq),
        (5016, Some(11))
    );
    assert_same(&read_all(&dir), &written);

    // Beyond one largest record from the end: not a torn tail, refuse.
    let dir = tmp.path().join("far");
    copy_dir(&base, &dir);
    let f = dir.join(file.file_name().unwrap());
    let far = end as u64 + audit::limits::TORN_TAIL_WINDOW_BYTES + 8;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all_at(&[0xAB; 16], far)
        .unwrap();
    let err = Writer::open(&dir, common::opts(4096)).unwrap_err();
    let d = err.damage().unwrap();
    assert_eq!((d.seq, d.offset), (Some(11), end as u64), "{err}");
    assert!(matches!(d.what, DamageKind::DataAfterEnd { .. }), "{err}");
    // Nothing was changed by the refusal.
    assert_eq!(std::fs::read(&f).unwrap()[far as usize], 0xAB);
}

#[test]
fn damage_before_the_tail_refuses_to_open_and_names_the_place() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_journal(&base, 300, 100, 8192);
    let spans = spans(&base);
    // A changed payload byte in an early segment and in the last segment, and a zeroed length
    // word in the middle of the last segment.
    let last_seg = spans.last().unwrap().file.clone();
    let in_last: Vec<&Span> = spans.iter().filter(|s| s.file == last_seg).collect();
    assert!(in_last.len() > 4);
    let cases: Vec<(&Span, usize, u8)> = vec![
        (&spans[3], 40, 0x01),
        (in_last[1], 40, 0x01),
        (in_last[2], 0, 0xFF),
    ];
    for (i, (s, delta, mask)) in cases.into_iter().enumerate() {
        let dir = tmp.path().join(format!("case{i}"));
        copy_dir(&base, &dir);
        let file = dir.join(s.file.file_name().unwrap());
        let before = std::fs::read(&file).unwrap();
        let mut b = before.clone();
        if mask == 0xFF {
            b[s.start..s.start + 4].fill(0);
        } else {
            b[s.start + delta] ^= mask;
        }
        std::fs::write(&file, &b).unwrap();
        let err = Writer::open(&dir, common::opts(8192)).unwrap_err();
        let JournalError::Damaged(d) = &err else {
            panic!("case {i}: {err}")
        };
        assert_eq!(d.seq, Some(s.seq), "case {i}: {err}");
        assert_eq!(d.offset, s.start as u64, "case {i}: {err}");
        assert_eq!(d.file, file, "case {i}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("seq {}", s.seq)) && text.contains("offset"),
            "{text}"
        );
        // Refusing changes nothing.
        assert_eq!(std::fs::read(&file).unwrap(), b);
    }
}

#[test]
fn leftovers_of_an_interrupted_segment_creation_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let written = write_journal(&dir, 50, 100, 4096);
    // A crash between creating the temporary file and renaming it.
    let tmpfile = dir.join("00000000000000000051.seg.tmp");
    std::fs::write(&tmpfile, [1u8; 100]).unwrap();
    // The background spare, left by a kill -9; and a file that only looks like a leftover.
    let spare = dir.join(audit::format::SPARE_SEGMENT_FILE_NAME);
    std::fs::write(&spare, [0u8; 4096]).unwrap();
    let notes = dir.join("notes.seg.tmp");
    std::fs::write(&notes, "mine").unwrap();
    // A power loss that kept the rename but not the header of an empty last segment.
    let next = spans(&dir).last().unwrap().seq + 1;
    let empty = dir.join(format!("{next:020}.seg"));
    std::fs::write(&empty, vec![0u8; 4096]).unwrap();
    let (mut w, rec) = Writer::open(&dir, common::opts(4096)).unwrap();
    assert_eq!(rec.removed_files.len(), 3, "{rec:?}");
    assert!(!tmpfile.exists() && !spare.exists());
    assert!(notes.exists(), "not a name the writer makes: left alone");
    assert_eq!(rec.next_seq, 51);
    w.append(1, 1, b"x").unwrap();
    drop(w);
    assert_same(&read_all(&dir)[..50], &written);
    audit::verify(&dir, &VerifyOptions::default()).unwrap();
}

#[test]
fn an_empty_last_segment_after_roll_over_is_continued() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal(&dir, 37, 100, 4096);
    // Fill the segment so the next append rolls, then "crash" right after the roll-over by
    // making the new segment by hand the way the writer does (header, no records).
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    let before = common::segments(&dir).len();
    while common::segments(&dir).len() == before {
        common::append_n(&mut w, 1, 100);
    }
    let seq_in_new = w.next_seq() - 1;
    drop(w);
    // Cut the record in the new segment: the segment is empty now.
    let last = spans(&dir).last().unwrap().clone();
    assert_eq!((last.seq, last.start), (seq_in_new, 128));
    zero(&last.file, last.start, last.end);
    let (mut w, rec) = Writer::open(&dir, common::opts(4096)).unwrap();
    assert_eq!(rec.next_seq, seq_in_new);
    assert_eq!(rec.truncated_bytes, 0);
    assert_eq!(w.append(1, 1, b"again").unwrap().seq, seq_in_new);
    drop(w);
    audit::verify(&dir, &VerifyOptions::default()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A refused open never writes
// ---------------------------------------------------------------------------------------------

/// SHA-256 of every file of a directory, by name: a refusal must leave all of them (and the
/// set of names) exactly as it found them.
fn checksums(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                hex::encode(sha2::Sha256::digest(&bytes)),
            )
        })
        .collect()
}

fn checkpointed(key: &ed25519_dalek::SigningKey) -> audit::WriterOptions {
    audit::WriterOptions {
        segment_size_bytes: 4096,
        durability: audit::Durability::None,
        checkpoint: Some(audit::CheckpointPolicy {
            signing_key: key.clone(),
            every_records: 10,
            every_ms: 0,
        }),
    }
}

/// 100 records, checkpointed every 10 (the newest checkpoint covers the last record), plus
/// everything a successful open would clean up: a spare left by a crash, an all-zero last
/// segment, a partial checkpoint entry.
fn journal_with_leftovers(dir: &Path, key: &ed25519_dalek::SigningKey) -> Vec<Span> {
    let (mut w, _) = Writer::open(dir, checkpointed(key)).unwrap();
    common::append_n(&mut w, 100, 120);
    drop(w);
    assert_eq!(
        audit::read_checkpoints(dir)
            .unwrap()
            .entries
            .last()
            .unwrap()
            .1
            .unwrap()
            .seq,
        100
    );
    std::fs::write(
        dir.join(audit::format::SPARE_SEGMENT_FILE_NAME),
        [0u8; 4096],
    )
    .unwrap();
    std::fs::write(dir.join(audit::format::segment_file_name(101)), [0u8; 4096]).unwrap();
    let mut cps = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join(audit::format::CHECKPOINT_FILE_NAME))
        .unwrap();
    std::io::Write::write_all(&mut cps, &[7u8; 5]).unwrap();
    spans(dir)
}

fn recover_bin(dir: &Path) -> std::process::Output {
    std::process::Command::new(common::audit_bin())
        .arg("recover")
        .arg(dir)
        .output()
        .unwrap()
}

/// Flip one byte in the last record of a journal whose newest checkpoint covers it, and other
/// journals that must be refused: `Writer::open` and `audit recover` refuse, and every file
/// is byte for byte what it was (no torn tail zeroed, no leftover removed, no segment made,
/// no partial checkpoint cut). The error names the damaged record, not "tail cut off".
#[test]
fn a_refused_open_leaves_every_byte_as_it_found_it() {
    let tmp = tempfile::tempdir().unwrap();
    let key = audit::generate_signing_key();
    let base = tmp.path().join("base");
    let spans = journal_with_leftovers(&base, &key);
    let last = spans.last().unwrap().clone();
    assert_eq!(last.seq, 100);
    let in_base = |s: &Span, dir: &Path| dir.join(s.file.file_name().unwrap());

    type Damage = Box<dyn Fn(&Path)>;
    type Check = Box<dyn Fn(&audit::Damage, &Path)>;
    let cases: Vec<(&str, Damage, Check)> = vec![
        (
            "a flipped payload byte in the checkpointed last record",
            Box::new({
                let last = last.clone();
                move |dir: &Path| flip(&in_base(&last, dir), last.start + 40)
            }),
            Box::new({
                let last = last.clone();
                move |d: &audit::Damage, dir: &Path| {
                    assert_eq!(
                        (&d.file, d.offset, d.seq, &d.what),
                        (
                            &in_base(&last, dir),
                            last.start as u64,
                            Some(100),
                            &DamageKind::Hash
                        )
                    );
                }
            }),
        ),
        (
            "a flipped hash byte in the checkpointed last record",
            Box::new({
                let last = last.clone();
                move |dir: &Path| flip(&in_base(&last, dir), last.end - 1)
            }),
            Box::new(|d: &audit::Damage, _: &Path| {
                assert_eq!((d.seq, &d.what), (Some(100), &DamageKind::Hash));
            }),
        ),
        (
            "the checkpointed last record's length word zeroed",
            Box::new({
                let last = last.clone();
                move |dir: &Path| zero(&in_base(&last, dir), last.start, last.start + 4)
            }),
            Box::new(|d: &audit::Damage, _: &Path| {
                assert_eq!(
                    (d.seq, &d.what),
                    (Some(100), &DamageKind::TailCut { last_seq: 99 })
                );
            }),
        ),
        (
            "damage in an earlier segment",
            Box::new({
                let s = spans[3].clone();
                move |dir: &Path| flip(&in_base(&s, dir), s.start + 40)
            }),
            Box::new({
                let seq = spans[3].seq;
                move |d: &audit::Damage, _: &Path| assert_eq!(d.seq, Some(seq))
            }),
        ),
        (
            "every segment removed, the checkpoints kept",
            Box::new(|dir: &Path| {
                for s in common::segments(dir) {
                    std::fs::remove_file(s).unwrap();
                }
            }),
            Box::new(|d: &audit::Damage, _: &Path| {
                assert_eq!(d.what, DamageKind::TailCut { last_seq: 0 });
            }),
        ),
    ];
    for (what, damage, check) in cases {
        let dir = tmp.path().join(what.replace(' ', "-"));
        copy_dir(&base, &dir);
        damage(&dir);
        let before = checksums(&dir);
        let err = Writer::open(&dir, checkpointed(&key)).unwrap_err();
        let d = err.damage().unwrap_or_else(|| panic!("{what}: {err}"));
        check(d, &dir);
        assert_eq!(
            checksums(&dir),
            before,
            "{what}: Writer::open changed files"
        );
        for opts in [common::opts(4096), audit::WriterOptions::default()] {
            assert!(Writer::open(&dir, opts).is_err(), "{what}");
            assert_eq!(
                checksums(&dir),
                before,
                "{what}: Writer::open changed files"
            );
        }
        let out = recover_bin(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert!(stderr.contains(&d.what.to_string()), "{what}: {stderr}");
        assert_eq!(
            checksums(&dir),
            before,
            "{what}: audit recover changed files"
        );
    }

    // The same journal undamaged opens, and only then is cleaned up: the leftovers were
    // there to be removed (so the cases above prove that a refusal kept them).
    let dir = tmp.path().join("undamaged");
    copy_dir(&base, &dir);
    let (_, rec) = Writer::open(&dir, checkpointed(&key)).unwrap();
    assert_eq!(rec.removed_files.len(), 2, "{rec:?}");
    assert_eq!(rec.checkpoint_bytes_cut, 5);
    assert_eq!(rec.next_seq, 101);
}

/// A torn tail past the newest checkpoint is still cut: the open succeeds, then writes.
#[test]
fn a_torn_tail_past_the_newest_checkpoint_is_still_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let key = audit::generate_signing_key();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, checkpointed(&key)).unwrap();
    common::append_n(&mut w, 105, 120);
    drop(w);
    let last = spans(&dir).last().unwrap().clone();
    assert_eq!(last.seq, 105);
    flip(&last.file, last.start + 40);
    let (_, rec) = Writer::open(&dir, checkpointed(&key)).unwrap();
    assert_eq!(rec.truncated_from_seq, Some(105));
    assert_eq!(rec.next_seq, 105);
    audit::verify(&dir, &VerifyOptions::default()).unwrap();
}

fn flip(path: &Path, off: usize) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off as u64).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, off as u64).unwrap();
}

// ---------------------------------------------------------------------------------------------
// The tail-only open (`Writer::open_tail`): one pass over what recovery needs
// ---------------------------------------------------------------------------------------------

/// A visitor that asks for records from `from` (or from the last segment minus `back`) and
/// keeps what it sees.
struct Keep {
    from: Option<u64>,
    back: u64,
    seen: Vec<(u64, u16, Vec<u8>, [u8; 32])>,
    asked_with: Option<u64>,
    fail_at: Option<u64>,
}

impl Keep {
    fn from(from: u64) -> Keep {
        Keep {
            from: Some(from),
            back: 0,
            seen: Vec::new(),
            asked_with: None,
            fail_at: None,
        }
    }
}

impl audit::TailVisitor for Keep {
    fn first_seq_needed(&mut self, last_segment_first_seq: u64) -> u64 {
        self.asked_with = Some(last_segment_first_seq);
        self.from
            .unwrap_or(last_segment_first_seq.saturating_sub(self.back))
    }
    fn visit(&mut self, r: audit::RecordView<'_>) -> Result<(), audit::VisitError> {
        if self.fail_at == Some(r.seq) {
            return Err(format!("record {} does not decode", r.seq).into());
        }
        self.seen.push((r.seq, r.kind, r.payload.to_vec(), r.hash));
        Ok(())
    }
}

/// The tail-only open reads the segments from the one holding the first record asked for
/// to the end, hands every record of them to the visitor in order, and finds the same head
/// as the full open; the segments before are not read, so damage there does not stop it
/// (`audit verify` finds it).
#[test]
fn the_tail_open_reads_from_the_segment_asked_for_to_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let written = write_journal(&base, 300, 100, 4096);
    let spans = spans(&base);
    let segs = common::segments(&base);
    assert!(segs.len() >= 8, "{}", segs.len());
    let (_, full) = Writer::open(&copy(&base, tmp.path(), "full"), common::opts(4096)).unwrap();
    for from in [1, 150, 299, 300, 301, 10_000] {
        let dir = copy(&base, tmp.path(), &format!("from{from}"));
        let mut v = Keep::from(from);
        let (_, rec) = Writer::open_tail(&dir, common::opts(4096), &mut v).unwrap();
        assert_eq!(
            (rec.next_seq, rec.head_hash),
            (full.next_seq, full.head_hash)
        );
        let last_first = spans
            .iter()
            .rfind(|s| s.file == *segs.last().unwrap())
            .map(|s| s.seq);
        assert_eq!(v.asked_with, last_first);
        // Whole segments from the one holding `from` (the last one past the head).
        let want = from.min(300);
        let first = spans
            .iter()
            .filter(|s| s.seq <= want)
            .rfind(|s| spans.iter().find(|t| t.file == s.file).unwrap().seq == s.seq)
            .unwrap()
            .seq;
        assert_eq!(rec.verified_from_seq, first, "from {from}");
        let expect: Vec<_> = written[first as usize - 1..]
            .iter()
            .map(|w| (w.seq, w.kind, w.payload.clone(), w.hash))
            .collect();
        assert_eq!(v.seen, expect, "from {from}");
    }
    // Damage before the tail: the tail open does not read it, the full open and verify do.
    let dir = copy(&base, tmp.path(), "early-damage");
    flip(
        &dir.join(spans[5].file.file_name().unwrap()),
        spans[5].start + 40,
    );
    let mut v = Keep::from(290);
    let (w, rec) = Writer::open_tail(&dir, common::opts(4096), &mut v).unwrap();
    assert_eq!(rec.next_seq, 301);
    assert!(rec.segments_verified < segs.len() / 2, "{rec:?}");
    drop(w);
    let err = audit::verify(&dir, &VerifyOptions::default()).unwrap_err();
    assert_eq!(err.damage().unwrap().seq, Some(spans[5].seq));
    assert!(Writer::open(&dir, common::opts(4096)).is_err());
}

/// Segment headers are checked even where records are not read.
#[test]
fn the_tail_open_checks_every_segment_header() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_journal(&base, 300, 100, 4096);
    let segs = common::segments(&base);
    let dir = copy(&base, tmp.path(), "bad-header");
    let early = dir.join(segs[2].file_name().unwrap());
    flip(&early, 20); // segment_size, covered by the header hash
    let before = checksums(&dir);
    let err = Writer::open_tail(&dir, common::opts(4096), &mut Keep::from(290)).unwrap_err();
    let d = err.damage().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(d.file, early);
    assert_eq!(checksums(&dir), before, "a refusal changed files");
}

/// In what it reads, the tail open refuses as the full open does, and a refusal — damage,
/// or the visitor's own `Err` — changes nothing (a torn tail is not cut); an open that
/// succeeds cuts it.
#[test]
fn the_tail_open_refuses_damage_in_what_it_reads_and_then_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    write_journal(&base, 300, 100, 4096);
    let spans = spans(&base);
    let last = spans.last().unwrap().clone();
    // A torn tail: the last record's length word zeroed.
    let torn = copy(&base, tmp.path(), "torn");
    zero(
        &torn.join(last.file.file_name().unwrap()),
        last.start,
        last.start + 4,
    );
    // Damage inside the tail, before the last record.
    let mid = spans[spans.len() - 3].clone();
    let damaged = copy(&torn, tmp.path(), "damaged");
    flip(&damaged.join(mid.file.file_name().unwrap()), mid.start + 40);
    let before = checksums(&damaged);
    let err = Writer::open_tail(&damaged, common::opts(4096), &mut Keep::from(280)).unwrap_err();
    assert_eq!(err.damage().unwrap().seq, Some(mid.seq), "{err}");
    assert_eq!(checksums(&damaged), before, "a refusal changed files");
    // The visitor refuses a record: so does the open, and nothing changes.
    let before = checksums(&torn);
    let mut v = Keep::from(280);
    v.fail_at = Some(290);
    let err = Writer::open_tail(&torn, common::opts(4096), &mut v).unwrap_err();
    assert!(matches!(err, JournalError::Visit { seq: 290, .. }), "{err}");
    assert!(err.to_string().contains("does not decode"), "{err}");
    assert_eq!(checksums(&torn), before, "a refusal changed files");
    // Accepted: the torn tail is cut now, and the journal verifies.
    let (_, rec) = Writer::open_tail(&torn, common::opts(4096), &mut Keep::from(280)).unwrap();
    assert_eq!(rec.truncated_from_seq, Some(last.seq));
    audit::verify(&torn, &VerifyOptions::default()).unwrap();
}

/// With checkpoints: a checkpoint past the end refuses the tail open too.
#[test]
fn the_tail_open_refuses_a_checkpoint_past_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let key = audit::generate_signing_key();
    let base = tmp.path().join("base");
    journal_with_leftovers(&base, &key);
    let dir = copy(&base, tmp.path(), "cut");
    let last = spans(&dir).last().unwrap().clone();
    zero(&last.file, last.start, last.start + 4);
    let before = checksums(&dir);
    let err = Writer::open_tail(&dir, checkpointed(&key), &mut Keep::from(95)).unwrap_err();
    assert_eq!(
        err.damage().unwrap().what,
        DamageKind::TailCut { last_seq: 99 },
        "{err}"
    );
    assert_eq!(checksums(&dir), before);
}

fn copy(base: &Path, tmp: &Path, name: &str) -> std::path::PathBuf {
    let dir = tmp.join(name);
    copy_dir(base, &dir);
    dir
}

/// `Reader::without_hash_checks` (for a reader in the writer's own process) skips only the
/// hash recomputation: a changed payload byte passes, a wrong sequence number does not.
#[test]
fn a_reader_without_hash_checks_still_checks_structure() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    write_journal(&dir, 40, 100, 4096);
    let spans = spans(&dir);
    flip(&spans[10].file, spans[10].start + 40);
    let checked: Vec<_> = audit::Reader::open(&dir).unwrap().iter_from(1).collect();
    assert!(
        checked.iter().any(|r| r.is_err()),
        "the hash check finds it"
    );
    let unchecked = audit::Reader::open(&dir).unwrap().without_hash_checks();
    assert_eq!(
        unchecked
            .iter_from(1)
            .map(|r| r.unwrap().seq)
            .collect::<Vec<_>>(),
        (1..=40).collect::<Vec<u64>>()
    );
    // A record whose seq field is wrong is refused either way.
    flip(&spans[20].file, spans[20].start + 8);
    let err = unchecked.iter_from(1).find_map(|r| r.err()).unwrap();
    assert_eq!(err.damage().unwrap().seq, Some(spans[20].seq), "{err}");
}
