//! A full disk: on a small tmpfs, appends fail with a clear error when a segment cannot be
//! allocated, nothing already written is damaged, the journal reopens and verifies, and it
//! continues once space is freed. Skipped (with a message) where tmpfs cannot be mounted.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use audit::{Durability, JournalError, VerifyOptions, Writer, WriterOptions};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Option<Mount> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .output()
        .ok()?;
    if out.status.success() {
        Some(Mount(at.to_path_buf()))
    } else {
        common::skip(
            "full-disk test",
            &format!(
                "cannot mount a tmpfs ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        None
    }
}

#[test]
fn appends_fail_cleanly_on_a_full_disk_and_the_journal_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_mount) = mount_tmpfs(&mnt, "2m") else {
        return;
    };
    let dir = mnt.join("j");
    // Leave room for about 6 segments of 256 KiB, with a filler file to free later.
    let filler = mnt.join("filler");
    std::fs::write(&filler, vec![1u8; 512 * 1024]).unwrap();
    let opts = || WriterOptions {
        segment_size_bytes: 256 * 1024,
        durability: Durability::Always,
        checkpoint: None,
    };
    let (mut w, _) = Writer::open(&dir, opts()).unwrap();
    let mut written = Vec::new();
    let err = loop {
        let seq = w.next_seq();
        let payload = audit::testing::payload_for(seq, 300);
        match w.append(1, seq, &payload) {
            Ok(a) => written.push(common::Written {
                seq,
                ts_ns: seq,
                kind: 1,
                payload,
                hash: a.hash,
            }),
            Err(e) => break e,
        }
        assert!(written.len() < 100_000, "the disk never filled");
    };
    assert!(matches!(err, JournalError::Full { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("journal full"), "{text}");
    assert!(!written.is_empty());
    // Still full: the next append fails the same way and writes nothing.
    let seq_before = w.next_seq();
    assert!(matches!(
        w.append(1, 0, b"x").unwrap_err(),
        JournalError::Full { .. }
    ));
    assert_eq!(w.next_seq(), seq_before);
    // No half-made segment was left behind.
    assert!(std::fs::read_dir(&dir).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .ends_with(".tmp")));
    drop(w);

    // Reopen on the full disk: nothing damaged, every record there.
    let (w, rec) = Writer::open(&dir, opts()).unwrap();
    assert_eq!(rec.records, written.len() as u64);
    assert_eq!(rec.truncated_bytes, 0);
    drop(w);
    common::assert_same(&common::read_all(&dir), &written);
    audit::verify(&dir, &VerifyOptions::default()).unwrap();

    // Free space: the chain continues.
    std::fs::remove_file(&filler).unwrap();
    let (mut w, _) = Writer::open(&dir, opts()).unwrap();
    for _ in 0..1000 {
        w.append(1, 0, &[5u8; 300]).unwrap();
    }
    drop(w);
    let r = audit::verify(&dir, &VerifyOptions::default()).unwrap();
    assert_eq!(r.records, written.len() as u64 + 1000);
}
