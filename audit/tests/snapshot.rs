//! Snapshot files covered by the chain: a record of kind 3 carries a snapshot file's length
//! and SHA-256, and `audit verify` checks every file still present against its record.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use audit::snapshot::{write_snapshot_file, SnapshotRecord};
use audit::{DamageKind, VerifyOptions, Writer, KIND_SNAPSHOT};

/// 40 records, a snapshot covering them (record 41), 10 more; returns the snapshot record.
fn journal_with_snapshot(dir: &Path) -> SnapshotRecord {
    let (mut w, _) = Writer::open(dir, common::opts(4096)).unwrap();
    common::append_n(&mut w, 40, 100);
    let r = write_snapshot_file(dir, 40, b"the state after record 40", true).unwrap();
    let a = w.append(KIND_SNAPSHOT, 1, &r.encode()).unwrap();
    assert_eq!(a.seq, 41);
    common::append_n(&mut w, 10, 100);
    r
}

fn verify_cli(dir: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(common::audit_bin())
        .arg("verify")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn verify_checks_each_snapshot_file_against_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let r = journal_with_snapshot(&dir);
    let rep = audit::verify(&dir, &VerifyOptions::default()).unwrap();
    assert_eq!(
        (rep.snapshots, rep.snapshots_checked, rep.snapshots_missing),
        (1, 1, 0)
    );
    let (code, out) = verify_cli(&dir);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("snapshots    1 records: 1 files match"),
        "{out}"
    );

    // A changed file (same length): reported at the file, naming the record's seq.
    let file = r.path(&dir);
    std::fs::write(&file, b"the state after record 4X").unwrap();
    let err = audit::verify(&dir, &VerifyOptions::default()).unwrap_err();
    let d = err.damage().unwrap();
    assert_eq!((&d.file, d.offset, d.seq), (&file, 0, Some(41)));
    assert!(
        matches!(d.what, DamageKind::SnapshotFile { record_seq: 41, .. }),
        "{err}"
    );
    let (code, out) = verify_cli(&dir);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("snapshot file differs from its record (seq 41)")
            && out.contains(&file.display().to_string()),
        "{out}"
    );
    // Truncated: the length differs.
    std::fs::write(&file, b"short").unwrap();
    assert!(audit::verify(&dir, &VerifyOptions::default()).is_err());

    // Gone (pruned): not damage, counted.
    std::fs::remove_file(&file).unwrap();
    let rep = audit::verify(&dir, &VerifyOptions::default()).unwrap();
    assert_eq!(
        (rep.snapshots, rep.snapshots_checked, rep.snapshots_missing),
        (1, 0, 1)
    );
}

/// A snapshot record must cover records before its own.
#[test]
fn a_snapshot_record_covering_itself_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    common::append_n(&mut w, 5, 100);
    let r = write_snapshot_file(&dir, 6, b"x", false).unwrap();
    w.append(KIND_SNAPSHOT, 1, &r.encode()).unwrap();
    drop(w);
    let err = audit::verify(&dir, &VerifyOptions::default()).unwrap_err();
    let d = err.damage().unwrap();
    assert_eq!(d.seq, Some(6));
    assert!(matches!(d.what, DamageKind::SnapshotRecord { .. }), "{err}");
}

/// Kind 3 with another payload is opaque, as every kind besides 1 and 2 was before.
#[test]
fn other_kind_3_payloads_are_opaque() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let (mut w, _) = Writer::open(&dir, common::opts(4096)).unwrap();
    w.append(KIND_SNAPSHOT, 1, b"not a snapshot record")
        .unwrap();
    w.append(KIND_SNAPSHOT, 1, &[0u8; 56]).unwrap();
    drop(w);
    let rep = audit::verify(&dir, &VerifyOptions::default()).unwrap();
    assert_eq!(rep.snapshots, 0);
}
