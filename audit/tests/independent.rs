//! The format document is enough to verify a journal: `scripts/verify_journal.py`, written
//! from docs/formats/audit-log.md alone, agrees with `audit verify` on the head hash and
//! finds the same damaged record. Skipped (with a message) where python3 is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

fn python_verify(dir: &std::path::Path) -> Option<(bool, String)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/verify_journal.py");
    let out = match Command::new("python3").arg(&script).arg(dir).output() {
        Ok(o) => o,
        Err(e) => {
            common::skip(
                "independent verifier",
                &format!("python3 not runnable ({e})"),
            );
            return None;
        }
    };
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[test]
fn an_independent_verifier_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("j");
    let written = common::write_journal(&dir, 2000, 300, 16384);
    let Some((ok, out)) = python_verify(&dir) else {
        return;
    };
    assert!(ok, "{out}");
    let head = hex::encode(written.last().unwrap().hash);
    assert_eq!(out.trim(), format!("ok records=2000 head={head}"));
    // Damage: both name the same record.
    let spans = common::spans(&dir);
    let s = &spans[1234];
    let mut b = std::fs::read(&s.file).unwrap();
    b[s.start + 40] ^= 0x10;
    std::fs::write(&s.file, b).unwrap();
    let (ok, out) = python_verify(&dir).unwrap();
    assert!(!ok);
    assert!(out.contains(&format!("seq={}", s.seq)), "{out}");
    let d = audit::verify(&dir, &audit::VerifyOptions::default()).unwrap_err();
    assert_eq!(d.damage().unwrap().seq, Some(s.seq));
}
