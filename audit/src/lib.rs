//! The Titanic audit journal: memory-mapped, hash-chained, crash-safe, verifiable offline.
//!
//! The journal is the source of truth of the pipeline: every decision is appended here
//! before the engine acts on it. It is a directory of pre-allocated segment files, each
//! memory-mapped by a single [`Writer`]; every record carries a sequence number and
//! `hash = SHA-256(previous hash ‖ record)`, so changing, removing, reordering or inserting a
//! record breaks the chain; signed checkpoints anchor the head so that a cut-off tail or a
//! rewritten log is caught too. The byte-level format is in `docs/formats/audit-log.md`
//! and beside the offset constants in [`format`].
//!
//! - [`Writer`]: append, durability policy ([`Durability`]), checkpoints, recovery on open.
//! - [`Reader`]: verified iteration over what is committed now.
//! - [`verify()`]: the offline verifier behind `audit verify` (parallel per segment).
//! - [`Publisher`], [`serve()`], [`tail()`]: the live feed, the gap-fill service and a
//!   subscriber that fills gaps from it; [`Publisher::bind_secure`], [`serve_secure()`] and
//!   [`TailOptions::client_auth`] put them under the endpoint policy of [`zauth`]
//!   (`docs/security.md`).
#![warn(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod format;
pub mod limits;
mod mmap;
pub mod publish;
pub mod reader;
mod scan;
pub mod security;
pub mod serve;
pub mod snapshot;
pub mod tail;
pub mod verify;
pub mod wire;
pub mod writer;

pub use checkpoint::{
    generate_signing_key, key_file_paths, key_id, load_signing_key, load_verifying_key,
    read_checkpoints, write_key_pair, Checkpoints,
};
pub use error::{Damage, DamageKind, JournalError};
pub use format::{chain_hash, CheckpointEntry, GENESIS_HASH, HASH_LEN_BYTES};
pub use publish::{kind_name, record_json, FeedFormat, Publisher, PublisherStats, CONNECT_PREFIX};
pub use reader::{Position, Reader, Record, Records};
pub use scan::{RecordView, SegmentFile, VisitError};
pub use security::zap_handler_running;
pub use serve::{
    serve, serve_counted, serve_secure, GapFill, ServeCollector, ServeCounters, ServeStats,
};
pub use snapshot::{SnapshotProblem, SnapshotRecord};
pub use tail::{tail, TailOptions, TailRecord, TailStats};
pub use verify::{journal_bytes, verify, VerifyOptions, VerifyReport};
pub use writer::{
    Appended, CheckpointPolicy, Durability, Recovery, TailVisitor, Writer, WriterOptions,
};

/// Record kind of an engine decision: the payload is an [`orders::Decision`] encoded with
/// [`orders::encode_decision`] (80 bytes).
pub const KIND_DECISION: u16 = 1;
/// Record kind of a bare order event: the payload is an [`orders::Order`] encoded with
/// [`orders::encode_order`] (48 bytes).
pub const KIND_ORDER: u16 = 2;
/// Record kind of a snapshot: the payload is a [`snapshot::SnapshotRecord`] (48 bytes) naming
/// a snapshot file of the journal directory and its SHA-256.
pub const KIND_SNAPSHOT: u16 = 3;
/// Record kind of an account-name binding: the payload binds an account name to its id in
/// the named range ([`orders::account_names`], 12 + name_len bytes); appended before the first
/// decision that uses the id.
pub const KIND_ACCOUNT_NAME: u16 = orders::KIND_ACCOUNT_NAME;

/// Parses a hex SHA-256 hash (64 hex characters).
pub fn parse_hash(text: &str) -> Result<[u8; HASH_LEN_BYTES], JournalError> {
    let bytes = hex::decode(text.trim()).map_err(|e| JournalError::Config {
        what: "hash",
        detail: format!("{text:?} is not hex: {e}"),
    })?;
    <[u8; HASH_LEN_BYTES]>::try_from(bytes.as_slice()).map_err(|_| JournalError::Config {
        what: "hash",
        detail: format!("{text:?} is {} bytes, expected 32", bytes.len()),
    })
}

/// Helpers shared by the `audit append-test` load generator and the crate's tests.
#[doc(hidden)]
pub mod testing {
    /// A deterministic payload for record `seq`: `len` bytes of a SplitMix64 stream seeded
    /// by `seq`, so a test can check any record's content from its sequence number alone.
    pub fn payload_for(seq: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        while out.len() < len {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let take = (len - out.len()).min(8);
            out.extend_from_slice(&z.to_le_bytes()[..take]);
        }
        out
    }

    /// A payload length between 0 and `max` that depends on `seq` only.
    pub fn payload_len_for(seq: u64, max: usize) -> usize {
        let b = payload_for(seq ^ 0x5555, 8);
        (u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) % (max as u64 + 1))
            as usize
    }
}
