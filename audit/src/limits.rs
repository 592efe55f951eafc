//! Every limit of the audit crate, named once, units last.
//!
//! Limits that depend on each other are tied together with `const _: () = assert!(..)` so that a
//! change to one that breaks another fails to compile instead of failing in production.

use crate::format::{
    CHECKPOINT_LEN_BYTES, HASH_LEN_BYTES, RECORD_ALIGN_BYTES, RECORD_HEADER_LEN_BYTES,
    SEGMENT_HEADER_LEN_BYTES,
};
use crate::wire::{ENTRY_HEADER_LEN_BYTES, PUB_BATCH_HEADER_LEN_BYTES, REPLY_HEADER_LEN_BYTES};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

// ---------------------------------------------------------------------------------------------
// Records and segments
// ---------------------------------------------------------------------------------------------

/// Largest payload one record may carry. Bounds the torn-tail window (below) and the size of
/// every buffer that holds one record, so it is deliberately small: a decision is 80 bytes.
pub const PAYLOAD_LEN_BYTES_MAX: u32 = 64 * KIB as u32;

/// Largest record on disk: header + largest payload (already a multiple of 8) + hash.
pub const RECORD_LEN_BYTES_MAX: u32 =
    RECORD_HEADER_LEN_BYTES as u32 + PAYLOAD_LEN_BYTES_MAX + HASH_LEN_BYTES as u32;
const _: () = assert!(PAYLOAD_LEN_BYTES_MAX % RECORD_ALIGN_BYTES as u32 == 0);

/// Smallest record on disk (empty payload): header + hash.
pub const RECORD_LEN_BYTES_MIN: u32 = (RECORD_HEADER_LEN_BYTES + HASH_LEN_BYTES) as u32;

/// Default size of one segment file (pre-allocated, then mapped).
pub const SEGMENT_SIZE_BYTES_DEFAULT: u64 = 64 * MIB;

/// Smallest segment accepted by the writer (tests use it to roll over often). A record that
/// does not fit in an empty segment is refused with [`crate::JournalError::RecordTooLarge`].
pub const SEGMENT_SIZE_BYTES_MIN: u64 = 4 * KIB;

/// Largest segment accepted (one mapping; offsets in diagnostics stay readable).
pub const SEGMENT_SIZE_BYTES_MAX: u64 = 1024 * MIB;

/// Segment sizes are whole pages, so that `msync` ranges never straddle two segments' pages.
pub const SEGMENT_SIZE_ALIGN_BYTES: u64 = 4096;
const _: () = assert!(SEGMENT_SIZE_BYTES_MIN % SEGMENT_SIZE_ALIGN_BYTES == 0);
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT % SEGMENT_SIZE_ALIGN_BYTES == 0);
const _: () = assert!(SEGMENT_SIZE_BYTES_MAX % SEGMENT_SIZE_ALIGN_BYTES == 0);

const _: () = assert!(SEGMENT_SIZE_BYTES_MIN >= (SEGMENT_HEADER_LEN_BYTES + 2 * 64) as u64);
const _: () = assert!(SEGMENT_SIZE_BYTES_MIN % RECORD_ALIGN_BYTES as u64 == 0);
// The default segment holds at least one record of the largest size.
const _: () = assert!(
    SEGMENT_SIZE_BYTES_DEFAULT >= SEGMENT_HEADER_LEN_BYTES as u64 + RECORD_LEN_BYTES_MAX as u64
);
const _: () = assert!(SEGMENT_SIZE_BYTES_MIN <= SEGMENT_SIZE_BYTES_DEFAULT);
const _: () = assert!(SEGMENT_SIZE_BYTES_DEFAULT <= SEGMENT_SIZE_BYTES_MAX);

/// Recovery: non-zero bytes that follow the end of the valid chain in the LAST segment are a
/// torn tail (cut off and reported) when they all lie within this many bytes of the end; beyond
/// it they cannot come from one interrupted append and the journal refuses to open.
/// One interrupted append writes at most one record, hence one largest record.
pub const TORN_TAIL_WINDOW_BYTES: u64 = RECORD_LEN_BYTES_MAX as u64;

/// Readers (recovery, verify, dump, serve) read segment files with `pread` in chunks of this
/// size; a chunk always holds at least one whole record.
pub const READ_CHUNK_BYTES: usize = MIB as usize;
const _: () = assert!(READ_CHUNK_BYTES >= 2 * RECORD_LEN_BYTES_MAX as usize);

/// Largest snapshot file read back (`audit verify`, recovery): a risk state of millions of
/// open orders is well below it.
pub const SNAPSHOT_FILE_BYTES_MAX: u64 = 1024 * MIB;

/// Block of every zero-fill: a spare segment, a segment made when none was ready, and the
/// fallback where `fallocate` is not supported by the file system.
pub const ZERO_FILL_CHUNK_BYTES: usize = MIB as usize;

/// The spare segment is zero-filled with a pause of this many µs after each
/// [`ZERO_FILL_CHUNK_BYTES`] block (at most ~1 GiB/s), until the appender has filled three
/// quarters of its segment or needs the spare, when it finishes at full speed. Written all at
/// once, its 64 MiB of fresh page cache stalled the order path for milliseconds on our VM, with
/// no preemption or disk wait the guest could see (most likely the hypervisor backing fresh
/// guest pages on first touch, stalling the vCPU and whatever ran there): tcp 100 k/s p99.9
/// ≤ 2 ms in 7 of 15 runs unpaced, 10 of 11 paced (0.23–2.32 ms); blocks of 256 KiB with
/// 250 µs pauses did worse (7 of 8, 0.63–2.97 ms: four times the wake-ups). docs/results.md,
/// "Seventh session".
pub const SPARE_PACE_PAUSE_US: u64 = 1_000;

// ---------------------------------------------------------------------------------------------
// Durability and checkpoints
// ---------------------------------------------------------------------------------------------

/// `interval` without numbers: msync after this many unsynced records...
pub const SYNC_INTERVAL_RECORDS_DEFAULT: u64 = 8192;
/// ... or once the oldest unsynced record is this old (checked in `append` and `maintain`).
pub const SYNC_INTERVAL_MS_DEFAULT: u64 = 10;

/// Default checkpoint cadence for tools that enable checkpoints without numbers.
pub const CHECKPOINT_EVERY_RECORDS_DEFAULT: u64 = 100_000;
/// Default checkpoint cadence in time.
pub const CHECKPOINT_EVERY_MS_DEFAULT: u64 = 1000;

/// A checkpoint file larger than this is refused (about 8 M checkpoints).
pub const CHECKPOINT_FILE_BYTES_MAX: u64 = 1024 * MIB;
const _: () = assert!(CHECKPOINT_FILE_BYTES_MAX % CHECKPOINT_LEN_BYTES as u64 == 0);

// ---------------------------------------------------------------------------------------------
// Live publishing and gap fill
// ---------------------------------------------------------------------------------------------

/// A PUB message carries at most this many records...
pub const PUB_BATCH_RECORDS_MAX: usize = 64;
/// ... and at most this many bytes (one record always fits: see the assert).
pub const PUB_BATCH_BYTES_MAX: usize = 64 * KIB as usize + RECORD_LEN_BYTES_MAX as usize;
const _: () = assert!(
    PUB_BATCH_BYTES_MAX
        >= PUB_BATCH_HEADER_LEN_BYTES + ENTRY_HEADER_LEN_BYTES + PAYLOAD_LEN_BYTES_MAX as usize
);
const _: () = assert!(PUB_BATCH_RECORDS_MAX <= u16::MAX as usize);

/// Send high-water mark of the publisher's sockets (messages).
pub const PUB_SNDHWM_MESSAGES_DEFAULT: i32 = 10_000;

/// How long a closed publisher socket keeps trying to deliver queued messages.
pub const PUB_LINGER_MS: i32 = 200;

/// A gap-fill reply carries at most this many records...
pub const SERVE_REPLY_RECORDS_MAX: u32 = 16_384;
/// ... and at most this many bytes (one record always fits).
pub const SERVE_REPLY_BYTES_MAX: usize = 4 * MIB as usize;
const _: () = assert!(
    SERVE_REPLY_BYTES_MAX
        >= REPLY_HEADER_LEN_BYTES + ENTRY_HEADER_LEN_BYTES + PAYLOAD_LEN_BYTES_MAX as usize
);

/// The gap-fill server remembers the position of every N-th record to seek quickly.
pub const SERVE_INDEX_EVERY_RECORDS: u64 = 1024;

/// The gap-fill server wakes up this often to check for a stop request.
pub const SERVE_POLL_MS: i64 = 100;

/// A gap-fill request larger than this is refused as malformed; it is also the REP socket's
/// `ZMQ_MAXMSGSIZE`, so libzmq drops a peer announcing a larger frame before allocating it.
pub const SERVE_REQUEST_BYTES_MAX: usize = 256;
const _: () = assert!(SERVE_REQUEST_BYTES_MAX >= crate::wire::REQUEST_LEN_BYTES);

/// The error text of a gap-fill reply is cut to this many bytes.
pub const SERVE_ERROR_TEXT_BYTES_MAX: usize = 4 * KIB as usize;

/// Largest gap-fill reply a client accepts (`ZMQ_MAXMSGSIZE` of `audit tail`'s REQ socket):
/// records up to [`SERVE_REPLY_BYTES_MAX`], or a header and an error text.
pub const TAIL_REPLY_BYTES_MAX: usize = SERVE_REPLY_BYTES_MAX;
const _: () = assert!(TAIL_REPLY_BYTES_MAX >= REPLY_HEADER_LEN_BYTES + SERVE_ERROR_TEXT_BYTES_MAX);

/// Largest feed message a subscriber accepts (`ZMQ_MAXMSGSIZE` of `audit tail`'s SUB socket):
/// one full batch.
pub const TAIL_FEED_MESSAGE_BYTES_MAX: usize = PUB_BATCH_BYTES_MAX;

/// Largest message a publisher accepts from a subscriber (a subscription: one byte and a
/// topic prefix; `ZMQ_MAXMSGSIZE` of the PUB sockets).
pub const PUB_INBOUND_BYTES_MAX: usize = 1024;

/// Longest key file read (`audit keygen` writes 65 bytes); a bound on memory taken from a file.
pub const KEY_FILE_BYTES_MAX: u64 = 4 * KIB;

/// `audit tail`: how long one gap-fill request may take before the REQ socket is reopened.
pub const TAIL_REQUEST_TIMEOUT_MS: u64 = 2000;
/// `audit tail`: attempts per gap-fill request (Lazy Pirate) before giving up.
pub const TAIL_REQUEST_ATTEMPTS: u32 = 3;
/// `audit tail`: with no live message for this long, ask the server whether records were
/// published while we could not see them (a drop at the very end of a burst has no later
/// message to reveal it).
pub const TAIL_IDLE_POLL_MS_DEFAULT: u64 = 200;
/// `audit tail`: default receive high-water mark (messages).
pub const TAIL_RCVHWM_MESSAGES_DEFAULT: i32 = 1000;
/// `audit tail`: how long to keep asking for records the live feed proved exist but the
/// server does not have yet (it reads committed data, so this only covers a restarted server).
pub const TAIL_GAP_WAIT_MS_MAX: u64 = 2000;
/// `audit tail`: pause between such attempts.
pub const TAIL_GAP_RETRY_MS: u64 = 20;
const _: () = assert!(TAIL_GAP_RETRY_MS < TAIL_GAP_WAIT_MS_MAX);
