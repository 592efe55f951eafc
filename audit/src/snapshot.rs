//! Snapshot files, covered by the chain: a file `NNNNNNNNNNNNNNNNNNNN.snap` in the journal
//! directory holds some state as it stood after record `covered_seq` (the number in its name),
//! and a journal record of kind [`crate::KIND_SNAPSHOT`] appended after it carries the file's
//! length and SHA-256 (TigerBeetle's checkpoints work this way). The chain covers the record,
//! the record covers the file: a changed, swapped or truncated file is found by comparing it
//! with its record (`audit verify` does, for every snapshot record whose file is present).
//!
//! The journal does not interpret the content (the engine stores its risk state there,
//! `docs/formats/risk-state.md`). Format: `docs/formats/audit-log.md` section 9.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::JournalError;
use crate::format::{u64_at, HASH_LEN_BYTES, SEGMENT_NAME_DIGITS};
use crate::limits::SNAPSHOT_FILE_BYTES_MAX;

/// Suffix of a snapshot file (after 20 digits: the sequence number it covers).
pub const SNAPSHOT_SUFFIX: &str = ".snap";
/// A snapshot file being written: renamed to its final name once complete (and synced).
pub const SNAPSHOT_TMP_SUFFIX: &str = ".snap.tmp";
/// Payload of a snapshot record: `magic [8] | covered_seq u64 | file_len u64 | sha256 [32]`.
pub const SNAPSHOT_RECORD_LEN_BYTES: usize = 56;
/// First bytes of a snapshot record's payload. A record of kind [`crate::KIND_SNAPSHOT`] is a
/// snapshot record only when its payload is [`SNAPSHOT_RECORD_LEN_BYTES`] long and starts with
/// them; any other payload of that kind is opaque, as every kind was before snapshots (journals
/// written by earlier versions, and tests, use kind 3 for their own payloads).
pub const SNAPSHOT_RECORD_MAGIC: [u8; 8] = *b"TTNCSNAP";

/// The payload of a snapshot record: which file, and what it must hash to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// The file holds the state after every record up to this sequence number (its name).
    pub covered_seq: u64,
    /// The file's length in bytes.
    pub file_len: u64,
    /// SHA-256 of the whole file.
    pub sha256: [u8; HASH_LEN_BYTES],
}

impl SnapshotRecord {
    /// The record's payload bytes.
    pub fn encode(&self) -> [u8; SNAPSHOT_RECORD_LEN_BYTES] {
        let mut b = [0u8; SNAPSHOT_RECORD_LEN_BYTES];
        b[0..8].copy_from_slice(&SNAPSHOT_RECORD_MAGIC);
        b[8..16].copy_from_slice(&self.covered_seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.file_len.to_le_bytes());
        b[24..56].copy_from_slice(&self.sha256);
        b
    }

    /// Decodes a payload; `None` unless it is a snapshot record (its length and magic).
    pub fn decode(payload: &[u8]) -> Option<SnapshotRecord> {
        if payload.len() != SNAPSHOT_RECORD_LEN_BYTES || payload[..8] != SNAPSHOT_RECORD_MAGIC {
            return None;
        }
        let mut sha256 = [0u8; HASH_LEN_BYTES];
        sha256.copy_from_slice(&payload[24..56]);
        Some(SnapshotRecord {
            covered_seq: u64_at(payload, 8),
            file_len: u64_at(payload, 16),
            sha256,
        })
    }

    /// The file's path in the journal `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        dir.join(snapshot_file_name(self.covered_seq))
    }
}

/// File name of the snapshot covering records up to `covered_seq`.
pub fn snapshot_file_name(covered_seq: u64) -> String {
    format!(
        "{covered_seq:0width$}{SNAPSHOT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

fn digits(d: &str) -> Option<u64> {
    if d.len() == SEGMENT_NAME_DIGITS && d.bytes().all(|b| b.is_ascii_digit()) {
        d.parse().ok()
    } else {
        None
    }
}

/// Parses a snapshot file name (20 digits, `.snap`): the sequence number it covers.
pub fn parse_snapshot_file_name(name: &str) -> Option<u64> {
    digits(name.strip_suffix(SNAPSHOT_SUFFIX)?)
}

/// Whether `name` is a snapshot file or one being written (`.snap`, `.snap.tmp`): a journal
/// file (`engine replay --fresh` deletes them with the segments).
pub fn is_snapshot_file_name(name: &str) -> bool {
    parse_snapshot_file_name(name).is_some()
        || name
            .strip_suffix(SNAPSHOT_TMP_SUFFIX)
            .and_then(digits)
            .is_some()
}

/// The snapshot files in `dir` (not those being written), by covered sequence number,
/// ascending.
pub fn list_snapshots(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("read directory", dir, e))?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(parse_snapshot_file_name)
        {
            out.push((seq, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Writes `bytes` as the snapshot covering records up to `covered_seq`: to a temporary name,
/// then (with `durable`) `fsync`, rename, directory `fsync` — so that the record that names it,
/// appended afterwards, never names a file that a crash can take back. Returns the record to
/// append. Mode 0600.
pub fn write_snapshot_file(
    dir: &Path,
    covered_seq: u64,
    bytes: &[u8],
    durable: bool,
) -> Result<SnapshotRecord, JournalError> {
    let name = snapshot_file_name(covered_seq);
    let path = dir.join(&name);
    let tmp = dir.join(format!(
        "{}{SNAPSHOT_TMP_SUFFIX}",
        name.trim_end_matches(SNAPSHOT_SUFFIX)
    ));
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| JournalError::io("create snapshot", &tmp, e))?;
        f.write_all(bytes)
            .map_err(|e| JournalError::io("write snapshot", &tmp, e))?;
        if durable {
            f.sync_all()
                .map_err(|e| JournalError::io("fsync", &tmp, e))?;
        }
        std::fs::rename(&tmp, &path).map_err(|e| JournalError::io("rename", &tmp, e))?;
        if durable {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| JournalError::io("fsync directory", dir, e))?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(SnapshotRecord {
        covered_seq,
        file_len: bytes.len() as u64,
        sha256: Sha256::digest(bytes).into(),
    })
}

/// Why a snapshot file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotProblem {
    /// The file is not there.
    #[error("snapshot file {} is missing", path.display())]
    Missing {
        /// Its path.
        path: PathBuf,
    },
    /// Its length or SHA-256 differ from what its record says.
    #[error(
        "snapshot file {} does not match its record: {found_len} bytes, SHA-256 {found}; the \
         record says {expected_len} bytes, SHA-256 {expected}",
        path.display()
    )]
    Mismatch {
        /// Its path.
        path: PathBuf,
        /// Its length.
        found_len: u64,
        /// Its SHA-256 (hex).
        found: String,
        /// The record's length.
        expected_len: u64,
        /// The record's SHA-256 (hex).
        expected: String,
    },
    /// It is larger than [`SNAPSHOT_FILE_BYTES_MAX`].
    #[error("snapshot file {} is larger than {max} bytes", path.display(), max = SNAPSHOT_FILE_BYTES_MAX)]
    TooLarge {
        /// Its path.
        path: PathBuf,
    },
    /// It cannot be read.
    #[error(transparent)]
    Io(#[from] JournalError),
}

/// A snapshot file's bytes and their SHA-256 (at most [`SNAPSHOT_FILE_BYTES_MAX`] bytes).
pub fn read_snapshot_file(path: &Path) -> Result<(Vec<u8>, [u8; 32]), SnapshotProblem> {
    let bytes = read_snapshot_bytes(path)?;
    let sha = sha256(&bytes);
    Ok((bytes, sha))
}

/// SHA-256 of `bytes` (what a snapshot record carries of its file).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A snapshot file's bytes (at most [`SNAPSHOT_FILE_BYTES_MAX`]), not hashed: the caller
/// hashes them ([`sha256`]), e.g. on another thread while it decodes them.
pub fn read_snapshot_bytes(path: &Path) -> Result<Vec<u8>, SnapshotProblem> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotProblem::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(JournalError::io("open", path, e).into()),
    };
    // Sized from the metadata (bounded), so that the read does not grow the buffer by
    // doubling: one allocation, no copy of what was read (tens of MB for a large state).
    let hint = f
        .metadata()
        .map_or(0, |m| m.len())
        .min(SNAPSHOT_FILE_BYTES_MAX)
        + 1;
    let mut bytes = Vec::with_capacity(usize::try_from(hint).unwrap_or(0));
    f.take(SNAPSHOT_FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| JournalError::io("read", path, e))?;
    if bytes.len() as u64 > SNAPSHOT_FILE_BYTES_MAX {
        return Err(SnapshotProblem::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes)
}

/// A snapshot file's length and SHA-256, read in chunks (`audit verify`).
pub fn hash_snapshot_file(path: &Path) -> Result<(u64, [u8; 32]), SnapshotProblem> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnapshotProblem::Missing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(JournalError::io("open", path, e).into()),
    };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::limits::READ_CHUNK_BYTES];
    let mut len = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| JournalError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.finalize().into()))
}

/// Checks the file a snapshot record names (in `dir`) against the record; returns its bytes.
pub fn check_snapshot_file(
    dir: &Path,
    record: &SnapshotRecord,
) -> Result<Vec<u8>, SnapshotProblem> {
    let path = record.path(dir);
    let (bytes, sha) = read_snapshot_file(&path)?;
    if bytes.len() as u64 != record.file_len || sha != record.sha256 {
        return Err(SnapshotProblem::Mismatch {
            path,
            found_len: bytes.len() as u64,
            found: hex::encode(sha),
            expected_len: record.file_len,
            expected: hex::encode(record.sha256),
        });
    }
    Ok(bytes)
}

/// Deletes the snapshot files of `dir` covering less than `keep_from`, and the leftovers of
/// interrupted snapshot writes (`.snap.tmp`) below it; returns how many files.
pub fn prune_snapshots(dir: &Path, keep_from: u64) -> Result<usize, JournalError> {
    let mut n = 0;
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io("read directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let seq = parse_snapshot_file_name(name)
            .or_else(|| name.strip_suffix(SNAPSHOT_TMP_SUFFIX).and_then(digits));
        if seq.is_some_and(|s| s < keep_from) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| JournalError::io("remove", &path, e))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_records_round_trip() {
        assert_eq!(snapshot_file_name(42), "00000000000000000042.snap");
        assert_eq!(
            parse_snapshot_file_name("00000000000000000042.snap"),
            Some(42)
        );
        assert_eq!(parse_snapshot_file_name("42.snap"), None);
        assert!(is_snapshot_file_name("00000000000000000042.snap.tmp"));
        assert!(!is_snapshot_file_name("notes.snap.tmp"));
        let r = SnapshotRecord {
            covered_seq: 7,
            file_len: 9,
            sha256: [3u8; 32],
        };
        assert_eq!(SnapshotRecord::decode(&r.encode()), Some(r));
        assert_eq!(SnapshotRecord::decode(&[0u8; 56]), None);
        assert_eq!(SnapshotRecord::decode(&r.encode()[..55]), None);
    }

    #[test]
    fn a_written_file_checks_and_a_changed_one_does_not() {
        let tmp = tempfile::tempdir().unwrap();
        let r = write_snapshot_file(tmp.path(), 5, b"state", true).unwrap();
        assert_eq!(check_snapshot_file(tmp.path(), &r).unwrap(), b"state");
        std::fs::write(r.path(tmp.path()), b"stale").unwrap();
        let e = check_snapshot_file(tmp.path(), &r).unwrap_err();
        assert!(matches!(e, SnapshotProblem::Mismatch { .. }), "{e}");
        std::fs::remove_file(r.path(tmp.path())).unwrap();
        let e = check_snapshot_file(tmp.path(), &r).unwrap_err();
        assert!(matches!(e, SnapshotProblem::Missing { .. }), "{e}");
        write_snapshot_file(tmp.path(), 9, b"x", false).unwrap();
        write_snapshot_file(tmp.path(), 12, b"y", false).unwrap();
        assert_eq!(prune_snapshots(tmp.path(), 12).unwrap(), 1);
        let left: Vec<u64> = list_snapshots(tmp.path())
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(left, vec![12]);
    }
}
