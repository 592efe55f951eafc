//! Typed errors of the audit crate.
//!
//! Two classes are kept apart because the `audit` binary maps them to different exit codes:
//! [`JournalError::Damaged`] (the journal or its checkpoints are not what they claim: exit 1)
//! and everything else (I/O, usage, configuration, sockets: exit 2).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::limits::{SEGMENT_SIZE_ALIGN_BYTES, SEGMENT_SIZE_BYTES_MAX, SEGMENT_SIZE_BYTES_MIN};

/// What is wrong at a damaged place of a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DamageKind {
    /// The segment header does not decode.
    Header(crate::format::HeaderProblem),
    /// A header field disagrees with the file or the journal.
    HeaderField {
        /// Which field.
        field: &'static str,
        /// Value in the header.
        found: u64,
        /// Value expected.
        expected: u64,
    },
    /// The record header does not decode.
    Record(crate::format::RecordProblem),
    /// The record would extend past the end of its segment.
    RecordPastEnd {
        /// Its `record_len`.
        record_len: u32,
    },
    /// The sequence number is not the next one.
    Seq {
        /// Sequence number found.
        found: u64,
    },
    /// Stored hash differs from SHA-256(previous hash ‖ record bytes).
    Hash,
    /// Padding bytes after the payload are not zero.
    Padding,
    /// Non-zero bytes follow the end of data of the last segment, and they are not the
    /// remains of one interrupted append.
    DataAfterEnd {
        /// How many bytes from the end of the chain to the last non-zero byte.
        bytes: u64,
    },
    /// Non-zero bytes follow the end of data of a segment that is not the last one: the
    /// writer had moved on to the next segment, so they cannot be an interrupted append.
    DataAfterSegmentEnd {
        /// How many bytes from the end of the chain to the last non-zero byte.
        bytes: u64,
    },
    /// The segment header's `segment_size` breaks the size rule (a multiple of 4096, from
    /// 4 KiB to 1 GiB).
    SegmentSize {
        /// The `segment_size` in the header.
        found: u64,
    },
    /// A file named like a segment (20 digits, `.seg`) whose number is above `u64::MAX`.
    SegmentName,
    /// The last segment is entirely zero: its header never reached the disk (a roll-over
    /// interrupted by a power loss). It holds nothing; opening the journal for append deletes it.
    EmptySegment,
    /// A partial record follows the last one: what an append in progress (or a writer that
    /// crashed and was not reopened yet) leaves; reopening the journal for append cuts it.
    TornTail {
        /// Bytes of the partial record.
        bytes: u64,
    },
    /// The first segment is not the start of the journal (pruned or removed segments).
    MissingStart {
        /// First sequence number of the first segment present.
        first_seq: u64,
    },
    /// The segment's `prev_hash` is not the hash the previous segment ended on.
    Link,
    /// The segment does not start right after the previous one's last record.
    SegmentSeq {
        /// First sequence number in this segment's header.
        found: u64,
        /// The sequence number expected there: the previous segment's last + 1.
        expected: u64,
    },
    /// The end of data comes before the head the writer holds: the files changed while the
    /// journal was open.
    EndBeforeHead {
        /// The writer's last sequence number.
        head_seq: u64,
    },
    /// A checkpoint names a record past the end of the journal: the tail was cut off.
    TailCut {
        /// The journal's last sequence number (0 when empty).
        last_seq: u64,
    },
    /// A checkpoint's head hash differs from the journal's hash at that record (rewritten log).
    CheckpointHash,
    /// A checkpoint's Ed25519 signature does not verify under the given public key.
    CheckpointSignature,
    /// A checkpoint was made with another key than the one given.
    CheckpointKey {
        /// Key id in the checkpoint (hex).
        found: String,
        /// Key id of `--pubkey` (hex).
        expected: String,
    },
    /// Checkpoints are not in increasing sequence order.
    CheckpointOrder,
    /// A checkpoint names sequence number 0 (a checkpoint covers at least record 1).
    CheckpointSeqZero,
    /// A checkpoint entry does not decode (bad magic/version).
    CheckpointEntry,
    /// A public key was given but the journal has no checkpoint to check it against.
    NoCheckpoint,
    /// `--expect-head SEQ:HASH`: the journal ends before SEQ.
    ExpectedHeadMissing {
        /// The journal's last sequence number.
        last_seq: u64,
    },
    /// `--expect-head SEQ:HASH`: the hash at SEQ differs.
    ExpectedHeadHash,
    /// A snapshot record that covers a sequence number at or after its own.
    SnapshotRecord {
        /// What is wrong with it.
        detail: String,
    },
    /// The snapshot file a snapshot record names differs from it (length or SHA-256), or
    /// cannot be checked (too large).
    SnapshotFile {
        /// The sequence number of the record naming it.
        record_seq: u64,
        /// What differs.
        detail: String,
    },
}

impl fmt::Display for DamageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DamageKind::Header(p) => write!(f, "{p}"),
            DamageKind::HeaderField {
                field,
                found,
                expected,
            } => write!(f, "segment header {field} is {found}, expected {expected}"),
            DamageKind::Record(p) => write!(f, "{p}"),
            DamageKind::RecordPastEnd { record_len } => {
                write!(f, "record_len {record_len} runs past the end of the segment")
            }
            DamageKind::Seq { found } => write!(f, "sequence number {found} out of order"),
            DamageKind::Hash => f.write_str(
                "hash mismatch: stored hash differs from SHA-256(previous hash || record)",
            ),
            DamageKind::Padding => f.write_str("non-zero padding after the payload"),
            DamageKind::DataAfterEnd { bytes } => write!(
                f,
                "end of data followed by {bytes} bytes of data: not the remains of one \
                 interrupted append (not a torn tail)"
            ),
            DamageKind::DataAfterSegmentEnd { bytes } => write!(
                f,
                "end of data followed by {bytes} bytes of data in a segment that is not the \
                 last one: damage (the writer had moved on to the next segment; an interrupted \
                 append can only be at the end of the last segment)"
            ),
            DamageKind::SegmentSize { found } => write!(
                f,
                "segment_size {found} breaks the size rule: a multiple of \
                 {SEGMENT_SIZE_ALIGN_BYTES} from {SEGMENT_SIZE_BYTES_MIN} to \
                 {SEGMENT_SIZE_BYTES_MAX} bytes"
            ),
            DamageKind::SegmentName => write!(
                f,
                "segment file name above the largest sequence number ({}): no segment can \
                 have it",
                u64::MAX
            ),
            DamageKind::EmptySegment => f.write_str(
                "the last segment is all zero: its header never reached the disk (a roll-over \
                 interrupted by a power loss); it holds nothing, and opening the journal for \
                 append (`audit recover`) deletes it",
            ),
            DamageKind::TornTail { bytes } => write!(
                f,
                "{bytes} bytes of an incomplete record after the last one (a writer is \
                 appending, or crashed and was not reopened: opening the journal for append \
                 cuts them)"
            ),
            DamageKind::MissingStart { first_seq } => write!(
                f,
                "journal starts at sequence {first_seq}, not 1: leading segments are missing"
            ),
            DamageKind::Link => f.write_str(
                "segment prev_hash differs from the hash the previous segment ended on",
            ),
            DamageKind::SegmentSeq { found, expected } if found > expected => write!(
                f,
                "segment starts at sequence {found}, but the previous segment ends at {}: the \
                 segment holding sequence {expected} is missing",
                expected - 1
            ),
            DamageKind::SegmentSeq { found, expected } => write!(
                f,
                "segment starts at sequence {found}, but the previous segment ends at {}: \
                 segments overlap",
                expected.saturating_sub(1)
            ),
            DamageKind::EndBeforeHead { head_seq } => write!(
                f,
                "end of data before the writer's head (sequence {head_seq}): the journal \
                 files changed while it was open"
            ),
            DamageKind::TailCut { last_seq } => write!(
                f,
                "checkpoint is past the end of the journal (last sequence {last_seq}): tail cut off"
            ),
            DamageKind::CheckpointHash => f.write_str(
                "checkpoint head hash differs from the journal's hash at that sequence: log rewritten",
            ),
            DamageKind::CheckpointSignature => {
                f.write_str("checkpoint signature does not verify with the public key")
            }
            DamageKind::CheckpointKey { found, expected } => write!(
                f,
                "checkpoint signed by key {found}, not by the given key {expected}"
            ),
            DamageKind::CheckpointOrder => {
                f.write_str("checkpoint sequence numbers do not increase")
            }
            DamageKind::CheckpointSeqZero => {
                f.write_str("checkpoint of sequence 0: a checkpoint covers at least record 1")
            }
            DamageKind::CheckpointEntry => f.write_str("checkpoint entry does not decode"),
            DamageKind::NoCheckpoint => {
                f.write_str("a public key was given but the journal has no checkpoint")
            }
            DamageKind::ExpectedHeadMissing { last_seq } => write!(
                f,
                "expected head is past the end of the journal (last sequence {last_seq}): tail cut off"
            ),
            DamageKind::ExpectedHeadHash => f.write_str(
                "hash at the expected head's sequence differs: log rewritten or replaced",
            ),
            DamageKind::SnapshotRecord { detail } => write!(f, "bad snapshot record: {detail}"),
            DamageKind::SnapshotFile { record_seq, detail } => write!(
                f,
                "snapshot file differs from its record (seq {record_seq}): {detail}"
            ),
        }
    }
}

/// Where a journal is damaged and how: the first bad place found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment (or checkpoint) file.
    pub file: PathBuf,
    /// Byte offset in that file.
    pub offset: u64,
    /// The sequence number expected at that place, when there is one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub what: DamageKind,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, offset {}", self.file.display(), self.offset)?;
        if let Some(seq) = self.seq {
            write!(f, ", seq {seq}")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// Errors of the journal library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The journal (or its checkpoints) is damaged.
    #[error("journal damaged: {0}")]
    Damaged(Box<Damage>),
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// No space left to pre-allocate a segment; nothing already written is affected.
    #[error("journal full: cannot allocate {bytes} bytes for {}: {source}", path.display())]
    Full {
        /// The segment that could not be allocated.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// ENOSPC / EDQUOT.
        #[source]
        source: io::Error,
    },
    /// The payload is larger than the limit or than an empty segment can hold.
    #[error("record payload of {payload_len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Payload size.
        payload_len: usize,
        /// The maximum accepted.
        max: usize,
    },
    /// Another writer holds the journal.
    #[error("journal {} is locked by another writer", dir.display())]
    Locked {
        /// The journal directory.
        dir: PathBuf,
    },
    /// The journal directory does not exist or holds no segment.
    #[error("no journal in {}: no segment files", dir.display())]
    NoJournal {
        /// The directory.
        dir: PathBuf,
    },
    /// Invalid configuration or argument.
    #[error("invalid {what}: {detail}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A key file is unreadable or malformed.
    #[error("key file {}: {detail}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A ZeroMQ operation failed.
    #[error("zmq {op} {endpoint}: {source}")]
    Zmq {
        /// What was being done.
        op: &'static str,
        /// The endpoint or socket.
        endpoint: String,
        /// The ZeroMQ error.
        #[source]
        source: zmq::Error,
    },
    /// A record received from the live feed or the gap-fill service does not chain: its hash
    /// is not SHA-256(previous hash ‖ record).
    #[error("hash chain broken at seq {seq} in the {from}")]
    FeedHash {
        /// The record.
        seq: u64,
        /// Where it came from.
        from: &'static str,
    },
    /// A request got no answer.
    #[error("no answer from {endpoint} within {ms} ms ({attempts} attempts)")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// Timeout of each attempt.
        ms: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// A message on the wire does not decode.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An endpoint or an authentication setting was refused: a remote endpoint without
    /// authentication (unless `insecure`), an unreadable credentials file, a failed bind.
    #[error(transparent)]
    Auth(#[from] zauth::AuthError),
    /// A server socket is to authenticate its peers, but no ZAP handler runs on its ZeroMQ
    /// context: libzmq would let peers in unchecked, so the bind is refused.
    #[error(
        "refusing to bind {endpoint}: authentication is configured but no ZAP handler runs on \
         this ZeroMQ context (start zauth::ZapHandler on it before binding)"
    )]
    NoZapHandler {
        /// The endpoint.
        endpoint: String,
    },
    /// The server refused this client during the ZeroMQ handshake (ZAP said no).
    #[error(
        "{endpoint} refused the connection (ZAP status {status}): wrong or missing credentials \
         (--credentials), this address is not in the server's allow-list, or this CURVE client \
         key is not on the server's client list (--curve-key)"
    )]
    AuthRefused {
        /// The endpoint connected to.
        endpoint: String,
        /// The ZAP status code (400: refused, 500: the server's handler failed).
        status: u32,
    },
    /// The handshake failed because client and server use different security mechanisms
    /// (one side PLAIN, the other none).
    #[error(
        "{endpoint}: security mechanism mismatch in the handshake (the server requires \
         credentials or CURVE and none were given, or the other way round)"
    )]
    MechanismMismatch {
        /// The endpoint connected to.
        endpoint: String,
    },
    /// A signal interrupted a wait on a socket (`tail` ends cleanly when its stop flag is set).
    #[error("interrupted by a signal")]
    Interrupted,
    /// A previous failure left the writer unusable (a segment could not be mapped after
    /// roll-over); reopen the journal.
    #[error("writer is unusable after an earlier failure; reopen the journal")]
    Poisoned,
    /// The caller's visitor of [`crate::Writer::open_tail`] refused a record: the open
    /// refuses too (and changes nothing).
    #[error("recovery stopped at journal record {seq}: {source}")]
    Visit {
        /// The record.
        seq: u64,
        /// Why.
        #[source]
        source: crate::scan::VisitError,
    },
}

impl JournalError {
    /// Whether this error says the journal is damaged (exit 1) rather than unreadable or
    /// misused (exit 2).
    pub fn is_damage(&self) -> bool {
        matches!(
            self,
            JournalError::Damaged(_) | JournalError::FeedHash { .. }
        )
    }

    /// The damage, when this is one.
    pub fn damage(&self) -> Option<&Damage> {
        match self {
            JournalError::Damaged(d) => Some(d),
            _ => None,
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> JournalError {
        JournalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn damaged(
        file: &Path,
        offset: u64,
        seq: Option<u64>,
        what: DamageKind,
    ) -> JournalError {
        JournalError::Damaged(Box::new(Damage {
            file: file.to_path_buf(),
            offset,
            seq,
            what,
        }))
    }

    pub(crate) fn zmq(op: &'static str, endpoint: &str, source: zmq::Error) -> JournalError {
        JournalError::Zmq {
            op,
            endpoint: endpoint.to_owned(),
            source,
        }
    }
}
