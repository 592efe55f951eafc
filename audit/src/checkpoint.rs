//! Anchored heads: Ed25519 key files and the append-only checkpoint file.
//!
//! A hash chain shows that nothing was changed, removed, reordered or inserted *between* two
//! records, but not that the tail was cut off or that the whole log was rewritten with
//! recomputed hashes. A checkpoint (sequence number, head hash, time) signed with a key the
//! attacker does not hold anchors the head: `verify --pubkey` finds a checkpoint past the end
//! (tail cut) or one whose hash differs from the log's (rewritten log).
//!
//! Key files are one line of lower-case hex: 64 characters (32 bytes) for the secret key
//! (`PREFIX.key`, mode 0600) and for the public key (`PREFIX.pub`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::{DamageKind, JournalError};
use crate::format::{CheckpointEntry, CHECKPOINT_FILE_NAME, CHECKPOINT_LEN_BYTES, HASH_LEN_BYTES};
use crate::limits::{CHECKPOINT_FILE_BYTES_MAX, KEY_FILE_BYTES_MAX};

/// Makes a new random signing key (from the operating system's RNG).
pub fn generate_signing_key() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// The 8-byte id of a public key stored in each checkpoint: SHA-256(public key)[0..8].
pub fn key_id(key: &VerifyingKey) -> [u8; 8] {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    id
}

/// Writes `PREFIX.key` (secret, mode 0600) and `PREFIX.pub`; refuses to overwrite existing
/// files unless `overwrite`. Returns both paths.
pub fn write_key_pair(
    prefix: &Path,
    key: &SigningKey,
    overwrite: bool,
) -> Result<(PathBuf, PathBuf), JournalError> {
    let (secret_path, public_path) = key_file_paths(prefix);
    for (path, text, mode) in [
        (&secret_path, hex::encode(key.to_bytes()), 0o600),
        (
            &public_path,
            hex::encode(key.verifying_key().to_bytes()),
            0o644,
        ),
    ] {
        let mut opts = OpenOptions::new();
        opts.write(true).mode(mode);
        if overwrite {
            opts.create(true).truncate(true);
        } else {
            opts.create_new(true);
        }
        let mut f = opts
            .open(path)
            .map_err(|e| JournalError::io("create key file", path, e))?;
        // An existing file keeps its mode on truncate: set it explicitly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| JournalError::io("chmod key file", path, e))?;
        writeln!(f, "{text}").map_err(|e| JournalError::io("write key file", path, e))?;
        f.sync_all()
            .map_err(|e| JournalError::io("sync key file", path, e))?;
    }
    Ok((secret_path, public_path))
}

/// The files `write_key_pair(prefix, ..)` writes: `PREFIX.key` (secret), `PREFIX.pub`.
pub fn key_file_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    (with_suffix(prefix, ".key"), with_suffix(prefix, ".pub"))
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Reads a key file: one line of 64 hex characters. At most [`KEY_FILE_BYTES_MAX`] bytes are
/// read, and error messages never quote the file's content (it may be a secret key).
fn read_hex_32(path: &Path) -> Result<[u8; 32], JournalError> {
    use std::io::Read;
    let key_err = |detail: String| JournalError::Key {
        path: path.to_path_buf(),
        detail,
    };
    let file = File::open(path).map_err(|e| JournalError::io("read key file", path, e))?;
    let mut raw = Vec::new();
    file.take(KEY_FILE_BYTES_MAX + 1)
        .read_to_end(&mut raw)
        .map_err(|e| JournalError::io("read key file", path, e))?;
    if raw.len() as u64 > KEY_FILE_BYTES_MAX {
        return Err(key_err(format!(
            "longer than {KEY_FILE_BYTES_MAX} bytes: not a key file (expected 64 hex characters)"
        )));
    }
    let text = raw.trim_ascii();
    let bytes = hex::decode(text).map_err(|e| {
        let what = match e {
            hex::FromHexError::InvalidHexCharacter { index, .. } => {
                format!("a character that is not hex at position {index}")
            }
            hex::FromHexError::OddLength => "an odd number of characters".to_owned(),
            hex::FromHexError::InvalidStringLength => "a wrong length".to_owned(),
        };
        key_err(format!(
            "not a hex key ({what}); expected 64 hex characters"
        ))
    })?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| key_err(format!("{} bytes, expected 32", bytes.len())))
}

/// Loads a secret key written by [`write_key_pair`] (`audit keygen`). Refuses a file that
/// other users can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, JournalError> {
    let meta = std::fs::metadata(path).map_err(|e| JournalError::io("stat key file", path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(JournalError::Key {
            path: path.to_path_buf(),
            detail: format!(
                "secret key is accessible by other users (mode {:o}); chmod 600 it",
                meta.permissions().mode() & 0o777
            ),
        });
    }
    Ok(SigningKey::from_bytes(&read_hex_32(path)?))
}

/// Loads a public key written by [`write_key_pair`] (`audit keygen`).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, JournalError> {
    VerifyingKey::from_bytes(&read_hex_32(path)?).map_err(|e| JournalError::Key {
        path: path.to_path_buf(),
        detail: format!("not an Ed25519 public key: {e}"),
    })
}

/// The checkpoints of a journal directory as read from its checkpoint file.
#[derive(Debug, Default, Clone)]
pub struct Checkpoints {
    /// The file (present or not).
    pub path: PathBuf,
    /// Each entry with its byte offset in the file; `None` for an entry that does not decode.
    pub entries: Vec<(u64, Option<CheckpointEntry>)>,
    /// Bytes of a partial entry at the end (an interrupted write).
    pub torn_bytes: u64,
}

/// Reads `DIR/checkpoints.log`; an absent file is no checkpoints.
pub fn read_checkpoints(dir: &Path) -> Result<Checkpoints, JournalError> {
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let mut out = Checkpoints {
        path: path.clone(),
        ..Checkpoints::default()
    };
    let bytes = match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(JournalError::io("stat", &path, e)),
        Ok(m) if m.len() > CHECKPOINT_FILE_BYTES_MAX => {
            return Err(JournalError::Config {
                what: "checkpoint file",
                detail: format!(
                    "{} is {} bytes, above the limit of {CHECKPOINT_FILE_BYTES_MAX}",
                    path.display(),
                    m.len()
                ),
            })
        }
        Ok(_) => std::fs::read(&path).map_err(|e| JournalError::io("read", &path, e))?,
    };
    let whole = bytes.len() / CHECKPOINT_LEN_BYTES * CHECKPOINT_LEN_BYTES;
    out.torn_bytes = (bytes.len() - whole) as u64;
    for (i, chunk) in bytes[..whole]
        .chunks_exact(CHECKPOINT_LEN_BYTES)
        .enumerate()
    {
        out.entries.push((
            (i * CHECKPOINT_LEN_BYTES) as u64,
            CheckpointEntry::decode(chunk),
        ));
    }
    Ok(out)
}

/// Checks one checkpoint's signature; `Err` names what is wrong.
pub(crate) fn check_signature(
    entry: &CheckpointEntry,
    key: &VerifyingKey,
) -> Result<(), DamageKind> {
    let expected = key_id(key);
    if entry.key_id != expected {
        return Err(DamageKind::CheckpointKey {
            found: hex::encode(entry.key_id),
            expected: hex::encode(expected),
        });
    }
    let msg =
        CheckpointEntry::signed_bytes(entry.seq, entry.ts_ns, &entry.head_hash, &entry.key_id);
    key.verify(&msg, &Signature::from_bytes(&entry.signature))
        .map_err(|_| DamageKind::CheckpointSignature)
}

/// Appends signed checkpoints to `DIR/checkpoints.log` (used by the writer).
#[derive(Debug)]
pub(crate) struct CheckpointWriter {
    file: File,
    path: PathBuf,
    key: SigningKey,
    key_id: [u8; 8],
    sync: bool,
    /// Sequence number of the newest checkpoint (0 when none).
    pub last_seq: u64,
}

impl CheckpointWriter {
    /// Opens (creates) the checkpoint file; cuts a partial entry left by an interrupted write
    /// and returns how many bytes were cut.
    pub(crate) fn open(
        dir: &Path,
        key: SigningKey,
        sync: bool,
        last_seq: u64,
    ) -> Result<(CheckpointWriter, u64), JournalError> {
        let path = dir.join(CHECKPOINT_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| JournalError::io("open", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| JournalError::io("stat", &path, e))?
            .len();
        let torn = len % CHECKPOINT_LEN_BYTES as u64;
        if torn != 0 {
            file.set_len(len - torn)
                .map_err(|e| JournalError::io("truncate", &path, e))?;
        }
        let key_id = key_id(&key.verifying_key());
        Ok((
            CheckpointWriter {
                file,
                path,
                key,
                key_id,
                sync,
                last_seq,
            },
            torn,
        ))
    }

    /// Signs and appends a checkpoint for record `seq` whose hash is `head`. The caller has
    /// made the records up to `seq` durable first.
    pub(crate) fn write(
        &mut self,
        seq: u64,
        head: &[u8; HASH_LEN_BYTES],
        ts_ns: u64,
    ) -> Result<(), JournalError> {
        let msg = CheckpointEntry::signed_bytes(seq, ts_ns, head, &self.key_id);
        let entry = CheckpointEntry {
            seq,
            ts_ns,
            head_hash: *head,
            key_id: self.key_id,
            signature: self.key.sign(&msg).to_bytes(),
        };
        let bytes = entry.encode();
        (&self.file)
            .write_all(&bytes)
            .map_err(|e| JournalError::io("append checkpoint", &self.path, e))?;
        if self.sync {
            self.file
                .sync_data()
                .map_err(|e| JournalError::io("sync checkpoint", &self.path, e))?;
        }
        self.last_seq = seq;
        Ok(())
    }
}

/// The newest checkpoint entry of `dir`, read from the end of the file (cheap).
pub(crate) fn newest_checkpoint(
    dir: &Path,
) -> Result<Option<(u64, CheckpointEntry)>, JournalError> {
    let path = dir.join(CHECKPOINT_FILE_NAME);
    let file = match File::open(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JournalError::io("open", &path, e)),
        Ok(f) => f,
    };
    let len = file
        .metadata()
        .map_err(|e| JournalError::io("stat", &path, e))?
        .len();
    let whole = len / CHECKPOINT_LEN_BYTES as u64 * CHECKPOINT_LEN_BYTES as u64;
    if whole == 0 {
        return Ok(None);
    }
    let off = whole - CHECKPOINT_LEN_BYTES as u64;
    let mut buf = [0u8; CHECKPOINT_LEN_BYTES];
    file.read_exact_at(&mut buf, off)
        .map_err(|e| JournalError::io("read", &path, e))?;
    match CheckpointEntry::decode(&buf) {
        Some(e) => Ok(Some((off, e))),
        None => Err(JournalError::damaged(
            &path,
            off,
            None,
            DamageKind::CheckpointEntry,
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_files_round_trip_and_secret_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("k");
        let key = generate_signing_key();
        let (s, p) = write_key_pair(&prefix, &key, false).unwrap();
        assert_eq!(
            std::fs::metadata(&s).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_signing_key(&s).unwrap().to_bytes(), key.to_bytes());
        assert_eq!(load_verifying_key(&p).unwrap(), key.verifying_key());
        // No silent overwrite.
        assert!(write_key_pair(&prefix, &key, false).is_err());
        // A world-readable secret key is refused.
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(&s).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        // Garbage is named.
        std::fs::write(&p, "zz\n").unwrap();
        let err = load_verifying_key(&p).unwrap_err().to_string();
        assert!(err.contains("not a hex key"), "{err}");
    }

    #[test]
    fn signatures_check_key_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_signing_key();
        let (mut w, torn) = CheckpointWriter::open(dir.path(), key.clone(), false, 0).unwrap();
        assert_eq!(torn, 0);
        w.write(7, &[5u8; 32], 99).unwrap();
        let cps = read_checkpoints(dir.path()).unwrap();
        assert_eq!(cps.entries.len(), 1);
        let e = cps.entries[0].1.unwrap();
        assert_eq!((e.seq, e.ts_ns, e.head_hash), (7, 99, [5u8; 32]));
        assert!(check_signature(&e, &key.verifying_key()).is_ok());
        let mut bad = e;
        bad.head_hash[0] ^= 1;
        assert_eq!(
            check_signature(&bad, &key.verifying_key()),
            Err(DamageKind::CheckpointSignature)
        );
        let other = generate_signing_key();
        assert!(matches!(
            check_signature(&e, &other.verifying_key()),
            Err(DamageKind::CheckpointKey { .. })
        ));
        // A torn entry is cut on reopen.
        let path = dir.path().join(CHECKPOINT_FILE_NAME);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[1, 2, 3])
            .unwrap();
        assert_eq!(read_checkpoints(dir.path()).unwrap().torn_bytes, 3);
        let (_w, torn) = CheckpointWriter::open(dir.path(), key, false, 7).unwrap();
        assert_eq!(torn, 3);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            CHECKPOINT_LEN_BYTES as u64
        );
        assert_eq!(newest_checkpoint(dir.path()).unwrap().unwrap().1, e);
    }
}
