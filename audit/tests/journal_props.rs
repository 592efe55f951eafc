//! Property tests: random record streams are written, reopened and read back identical;
//! reopening in the middle continues the chain; many small segments roll over.
#![allow(clippy::unwrap_used)]

mod common;

use audit::{Durability, Reader, VerifyOptions, Writer, WriterOptions, GENESIS_HASH};
use common::{assert_same, read_all, Written};
use proptest::prelude::*;

fn arb_records() -> impl Strategy<Value = Vec<(u16, u64, Vec<u8>)>> {
    proptest::collection::vec(
        (
            any::<u16>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..600),
        ),
        0..120,
    )
}

fn write(w: &mut Writer, recs: &[(u16, u64, Vec<u8>)], out: &mut Vec<Written>) {
    for (kind, ts, payload) in recs {
        let a = w.append(*kind, *ts, payload).unwrap();
        assert_eq!(a.hash, w.head_hash());
        out.push(Written {
            seq: a.seq,
            ts_ns: *ts,
            kind: *kind,
            payload: payload.clone(),
            hash: a.hash,
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::proptest_cases(48), ..ProptestConfig::default() })]

    #[test]
    fn streams_round_trip_across_reopens_and_small_segments(
        first in arb_records(),
        second in arb_records(),
        segment_pages in 1u64..=3,
        durability in prop_oneof![Just("none"), Just("always"), Just("interval:3:1000")],
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("j");
        let opts = || WriterOptions {
            segment_size_bytes: segment_pages * 4096,
            durability: durability.parse::<Durability>().unwrap(),
            checkpoint: None,
        };
        let mut written = Vec::new();
        {
            let (mut w, rec) = Writer::open(&dir, opts()).unwrap();
            prop_assert_eq!(rec.next_seq, 1);
            prop_assert_eq!(rec.head_hash, GENESIS_HASH);
            write(&mut w, &first, &mut written);
        }
        // Reopen in the middle: recovery finds exactly what was written, the chain continues.
        {
            let (mut w, rec) = Writer::open(&dir, opts()).unwrap();
            prop_assert_eq!(rec.records, first.len() as u64);
            prop_assert_eq!(rec.next_seq, first.len() as u64 + 1);
            prop_assert_eq!(rec.truncated_bytes, 0);
            prop_assert_eq!(rec.head_hash, written.last().map_or(GENESIS_HASH, |w| w.hash));
            write(&mut w, &second, &mut written);
        }
        assert_same(&read_all(&dir), &written);
        // Reading from any sequence number gives the suffix.
        if !written.is_empty() {
            let from = written.len() as u64 / 2 + 1;
            let reader = Reader::open(&dir).unwrap();
            let tail: Vec<_> = reader.iter_from(from).collect::<Result<_, _>>().unwrap();
            assert_same(&tail, &written[from as usize - 1..]);
        }
        let report = audit::verify(&dir, &VerifyOptions::default()).unwrap();
        prop_assert_eq!(report.records, written.len() as u64);
        prop_assert_eq!(report.head_hash, written.last().map_or(GENESIS_HASH, |w| w.hash));
        // The independent chain function agrees with what the writer stored.
        let mut prev = GENESIS_HASH;
        for w in &written {
            prev = audit::chain_hash(&prev, w.seq, w.ts_ns, w.kind, &w.payload);
            prop_assert_eq!(prev, w.hash);
        }
    }
}

#[test]
fn many_small_segments_roll_over_and_link() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let written = common::write_journal(&dir, 3000, 200, 4096);
    let segs = common::segments(&dir);
    assert!(segs.len() > 100, "only {} segments", segs.len());
    // Each segment is named after its first sequence number.
    let spans = common::spans(&dir);
    for seg in &segs {
        let first = spans.iter().find(|s| &s.file == seg).unwrap().seq;
        assert_eq!(
            seg.file_name().unwrap().to_str().unwrap(),
            format!("{first:020}.seg")
        );
    }
    assert_same(&read_all(&dir), &written);
    let r = audit::verify(
        &dir,
        &VerifyOptions {
            threads: 3,
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!(r.segments, segs.len());
    assert_eq!(r.records, 3000);
    assert_eq!((r.first_seq, r.last_seq), (Some(1), Some(3000)));
    assert_eq!((r.first_ts_ns, r.last_ts_ns), (Some(10), Some(30_000)));
}

#[test]
fn records_larger_than_a_segment_are_refused_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    let max = w.max_payload_len();
    assert!(w.append(1, 1, &vec![7u8; max]).is_ok());
    let err = w.append(1, 2, &vec![7u8; max + 1]).unwrap_err();
    assert!(
        matches!(err, audit::JournalError::RecordTooLarge { .. }),
        "{err}"
    );
    assert_eq!(w.next_seq(), 2);
    let err = w
        .append(
            1,
            2,
            &vec![0u8; audit::limits::PAYLOAD_LEN_BYTES_MAX as usize + 1],
        )
        .unwrap_err();
    assert!(matches!(err, audit::JournalError::RecordTooLarge { .. }));
    drop(w);
    assert_eq!(read_all(&dir).len(), 1);
}

#[test]
fn last_payload_finds_the_newest_record_of_a_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    assert_eq!(w.last_payload(9).unwrap(), None);
    w.append(9, 1, b"old").unwrap();
    for i in 0..200u64 {
        w.append(1, i, &[0u8; 100]).unwrap();
    }
    // The newest kind-9 record is now several segments back.
    assert_eq!(w.last_payload(9).unwrap().as_deref(), Some(&b"old"[..]));
    w.append(9, 2, b"new").unwrap();
    assert_eq!(w.last_payload(9).unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(w.last_payload(1).unwrap().map(|p| p.len()), Some(100));
    assert_eq!(
        w.last_payload(7).unwrap(),
        None,
        "every record read, none of kind 7"
    );
}

/// A journal with the newest kind-9 record in its first segment, then many segments of other
/// records: finding it means reading every segment after it.
fn journal_with_an_old_record(dir: &std::path::Path) -> Writer {
    let (mut w, _) = Writer::open(dir, common::opts(4096)).unwrap();
    w.append(9, 1, b"old").unwrap();
    for i in 0..200u64 {
        w.append(1, i, &[0u8; 100]).unwrap();
    }
    assert!(common::segments(dir).len() > 4);
    assert_eq!(w.last_payload(9).unwrap().as_deref(), Some(&b"old"[..]));
    w
}

/// An I/O error while looking for the newest record is an error, never "there is none": the
/// engine resumes from that record, and "none" restarts it from input 0.
#[test]
fn last_payload_reports_a_read_error_instead_of_none() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let w = journal_with_an_old_record(&dir);
    // A segment between the head and the record, replaced (after the open verified it) by
    // something every read of fails on: a directory (pread: EISDIR).
    let segs = common::segments(&dir);
    let victim = segs[segs.len() / 2].clone();
    std::fs::rename(&victim, tmp.path().join("moved")).unwrap();
    std::fs::create_dir(&victim).unwrap();
    let err = w.last_payload(9).unwrap_err();
    assert!(
        err.to_string().contains(&victim.display().to_string()),
        "the error names the segment: {err}"
    );
    // The newest segment unreadable: an error too, even for a kind it would have held.
    std::fs::remove_dir(&victim).unwrap();
    std::fs::rename(tmp.path().join("moved"), &victim).unwrap();
    assert!(w.last_payload(9).unwrap().is_some());
    let newest = segs.last().unwrap().clone();
    std::fs::rename(&newest, tmp.path().join("moved")).unwrap();
    std::fs::create_dir(&newest).unwrap();
    assert!(w.last_payload(1).is_err());
    assert!(w.last_payload(9).is_err());
}

/// A segment cut short or changed under an open writer: the records up to the head are not all
/// there, which is an error naming the place, never "no such record".
#[test]
fn last_payload_reports_records_that_are_gone_instead_of_none() {
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let w = journal_with_an_old_record(&dir);
    let segs = common::segments(&dir);
    let victim = segs[1].clone();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&victim)
        .unwrap();
    let mut word = [0u8; 4];
    f.read_exact_at(&mut word, 128).unwrap();
    // Zero the length word of the segment's first record: the segment now ends early.
    f.write_all_at(&[0u8; 4], 128).unwrap();
    let err = w.last_payload(9).unwrap_err();
    let d = err.damage().unwrap_or_else(|| panic!("{err}"));
    assert_eq!((d.file.clone(), d.offset), (victim.clone(), 128), "{err}");
    assert!(
        matches!(d.what, audit::DamageKind::EndBeforeHead { .. }),
        "{err}"
    );
    // The length word back, and a changed payload byte instead: reported at that record.
    f.write_all_at(&word, 128).unwrap();
    f.write_all_at(&[0xFFu8; 1], 128 + 40).unwrap();
    let err = w.last_payload(9).unwrap_err();
    let d = err.damage().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(
        (d.offset, d.what.clone()),
        (128, audit::DamageKind::Hash),
        "{err}"
    );
    // Truncated: the header no longer matches the file's size.
    f.set_len(1000).unwrap();
    let err = w.last_payload(9).unwrap_err();
    assert!(err.damage().is_some(), "{err}");
}

#[test]
fn a_second_writer_is_locked_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (_w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    let err = Writer::open(&dir, common::opts(4096)).unwrap_err();
    assert!(matches!(err, audit::JournalError::Locked { .. }), "{err}");
}

#[test]
fn directory_is_private_and_options_are_validated() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/j");
    drop(Writer::open(&dir, common::opts(4096)).unwrap());
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for bad in [0, 1000, 4097, 2 << 30] {
        let err = Writer::open(&tmp.path().join("x"), common::opts(bad)).unwrap_err();
        assert!(err.to_string().contains("segment_size_bytes"), "{err}");
    }
    assert!("interval:0:5".parse::<Durability>().is_err());
    assert!("sometimes".parse::<Durability>().is_err());
    assert_eq!(
        "interval:5:7".parse::<Durability>().unwrap(),
        Durability::Interval { records: 5, ms: 7 }
    );
    assert_eq!(
        "interval".parse::<Durability>().unwrap().to_string(),
        "interval:8192:10"
    );
}

#[test]
fn interval_durability_syncs_by_count_and_time_and_checkpoints_by_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let key = audit::generate_signing_key();
    let opts = WriterOptions {
        segment_size_bytes: 8192,
        durability: Durability::Interval { records: 4, ms: 5 },
        checkpoint: Some(audit::CheckpointPolicy {
            signing_key: key.clone(),
            every_records: 0,
            every_ms: 10,
        }),
    };
    let (mut w, _) = Writer::open(&dir, opts).unwrap();
    // By count: the 4th unsynced record triggers the msync.
    for i in 0..3u64 {
        w.append(1, 1_000 * i, b"x").unwrap();
        assert!(w.unsynced_bytes() > 0);
    }
    w.append(1, 3_000, b"x").unwrap();
    assert_eq!(w.unsynced_bytes(), 0);
    // By time, in append: a record 5 ms newer than the oldest unsynced one.
    w.append(1, 10_000, b"x").unwrap();
    assert!(w.unsynced_bytes() > 0);
    w.append(1, 5_010_000, b"x").unwrap();
    assert_eq!(w.unsynced_bytes(), 0);
    // By time, in maintain.
    w.append(1, 6_000_000, b"x").unwrap();
    w.maintain(10_000_000).unwrap();
    assert!(w.unsynced_bytes() > 0);
    w.maintain(11_000_000).unwrap();
    assert_eq!(w.unsynced_bytes(), 0);
    for i in 0..3u64 {
        w.append(1, 12_000_000 + i, b"x").unwrap();
    }
    assert_eq!(audit::read_checkpoints(&dir).unwrap().entries.len(), 0);
    w.maintain(19_000_000).unwrap();
    assert_eq!(audit::read_checkpoints(&dir).unwrap().entries.len(), 0);
    w.maintain(20_000_000).unwrap();
    // Time-based checkpoint: the first maintain (above, at 10 ms) started the clock; one
    // 10 ms later writes a checkpoint of the head.
    let cps = audit::read_checkpoints(&dir).unwrap();
    assert_eq!(cps.entries.len(), 1);
    assert_eq!(cps.entries[0].1.unwrap().seq, 10);
    // Nothing new: no second checkpoint.
    w.maintain(200_000_000).unwrap();
    assert_eq!(audit::read_checkpoints(&dir).unwrap().entries.len(), 1);
    drop(w);
    let r = audit::verify(
        &dir,
        &VerifyOptions {
            pubkey: Some(key.verifying_key()),
            ..VerifyOptions::default()
        },
    )
    .unwrap();
    assert_eq!((r.checkpoints, r.newest_checkpoint_seq), (1, Some(10)));
}

#[test]
fn always_syncs_each_record_and_none_never() {
    let tmp = tempfile::tempdir().unwrap();
    let mut o = common::opts(8192);
    o.durability = Durability::Always;
    let (mut w, _) = Writer::open(&tmp.path().join("a"), o).unwrap();
    for i in 0..50 {
        w.append(1, i, &[1u8; 100]).unwrap();
        assert_eq!(w.unsynced_bytes(), 0);
    }
    let (mut w, _) = Writer::open(&tmp.path().join("n"), common::opts(8192)).unwrap();
    w.append(1, 0, &[1u8; 100]).unwrap();
    let before = w.unsynced_bytes();
    w.append(1, 0, &[1u8; 100]).unwrap();
    assert!(w.unsynced_bytes() > before);
    w.sync().unwrap();
    assert_eq!(w.unsynced_bytes(), 0);
}

#[test]
fn the_next_segment_is_prepared_in_the_background_and_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(64 * 1024)).unwrap();
    let spare = dir.join("spare.seg.tmp");
    // Below half full: no spare yet.
    while w.next_seq() < 100 {
        w.append(1, 0, &[1u8; 100]).unwrap();
    }
    assert!(!spare.exists());
    // Past half full: the spare appears, allocated to the segment size.
    while w.next_seq() < 300 {
        w.append(1, 0, &[1u8; 100]).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::metadata(&spare).map_or(true, |m| m.len() != 64 * 1024) {
        assert!(std::time::Instant::now() < deadline, "no spare segment");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Roll-over takes it: it becomes the next segment, and a new spare comes later.
    let segs = common::segments(&dir).len();
    while common::segments(&dir).len() == segs {
        w.append(1, 0, &[1u8; 100]).unwrap();
    }
    drop(w);
    // Closing removes a spare that was not used.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    audit::verify(&dir, &VerifyOptions::default()).unwrap();
}
