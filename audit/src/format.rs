//! The on-disk format of the journal: segment header, record, checkpoint entry, file names.
//!
//! This module is the public contract that `docs/formats/audit-log.md` describes for outside
//! verifiers. Every integer is little-endian. Every layout is drawn beside its offset constants
//! and has a validator (`check_*` / `decode_*`) that is used on every read.

use sha2::{Digest, Sha256};

/// Length of a SHA-256 hash.
pub const HASH_LEN_BYTES: usize = 32;

/// The hash a journal's first record chains from: 32 zero bytes.
pub const GENESIS_HASH: [u8; HASH_LEN_BYTES] = [0u8; HASH_LEN_BYTES];

/// Records start at, and are padded to, multiples of this.
pub const RECORD_ALIGN_BYTES: usize = 8;

// ---------------------------------------------------------------------------------------------
// Segment header
// ---------------------------------------------------------------------------------------------
//
// Segment header (SEGMENT_HEADER_LEN_BYTES = 128), at offset 0 of every segment file
//
//  0        8     10    12       16               24               32               40
//  +--------+-----+-----+--------+----------------+----------------+----------------+
//  | magic  | ver | hdr | flags  | segment_size   | segment_index  | first_seq      |
//  | [8]    | u16 | len | u32 =0 | u64 bytes      | u64 (0-based)  | u64            |
//  |        |     | u16 |        | (= file size)  |                |                |
//  +--------+-----+-----+--------+----------------+----------------+----------------+
//  40               48                                 80               96                  128
//  +----------------+----------------------------------+----------------+-------------------+
//  | created_ns     | prev_hash [32]                   | reserved [16]  | header_hash [32]  |
//  | u64 (info)     | hash the previous segment ended  | = 0            | SHA-256 of bytes  |
//  |                | on (GENESIS_HASH for segment 0)  |                | 0..96             |
//  +----------------+----------------------------------+----------------+-------------------+
//
// Records follow at offset 128. Space after the last record is zero (pre-allocated).

/// `TTNCJRNL`: the first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TTNCJRNL";
/// Format version written by this code; readers refuse any other.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN_BYTES: usize = 128;

pub(crate) const SH_MAGIC_OFFSET: usize = 0;
pub(crate) const SH_VERSION_OFFSET: usize = 8;
pub(crate) const SH_HEADER_LEN_OFFSET: usize = 10;
pub(crate) const SH_FLAGS_OFFSET: usize = 12;
pub(crate) const SH_SEGMENT_SIZE_OFFSET: usize = 16;
pub(crate) const SH_SEGMENT_INDEX_OFFSET: usize = 24;
pub(crate) const SH_FIRST_SEQ_OFFSET: usize = 32;
pub(crate) const SH_CREATED_NS_OFFSET: usize = 40;
pub(crate) const SH_PREV_HASH_OFFSET: usize = 48;
pub(crate) const SH_RESERVED_OFFSET: usize = 80;
pub(crate) const SH_HEADER_HASH_OFFSET: usize = 96;
const _: () = assert!(SH_PREV_HASH_OFFSET + HASH_LEN_BYTES == SH_RESERVED_OFFSET);
const _: () = assert!(SH_HEADER_HASH_OFFSET + HASH_LEN_BYTES == SEGMENT_HEADER_LEN_BYTES);
const _: () = assert!(SEGMENT_HEADER_LEN_BYTES % RECORD_ALIGN_BYTES == 0);

/// The decoded, validated header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Size of the segment file in bytes (pre-allocated, fixed).
    pub segment_size_bytes: u64,
    /// Position of the segment in the journal, 0-based.
    pub segment_index: u64,
    /// Sequence number of the segment's first record (its file name, too).
    pub first_seq: u64,
    /// Wall-clock time the segment was created (ns since the Unix epoch); informational.
    pub created_ns: u64,
    /// The chain hash the previous segment ended on ([`GENESIS_HASH`] for segment 0).
    pub prev_hash: [u8; HASH_LEN_BYTES],
}

impl SegmentHeader {
    /// Writes the header, including its `header_hash`, into `out`.
    pub fn encode(&self, out: &mut [u8; SEGMENT_HEADER_LEN_BYTES]) {
        out.fill(0);
        out[SH_MAGIC_OFFSET..SH_VERSION_OFFSET].copy_from_slice(&SEGMENT_MAGIC);
        out[SH_VERSION_OFFSET..SH_HEADER_LEN_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[SH_HEADER_LEN_OFFSET..SH_FLAGS_OFFSET]
            .copy_from_slice(&(SEGMENT_HEADER_LEN_BYTES as u16).to_le_bytes());
        out[SH_SEGMENT_SIZE_OFFSET..SH_SEGMENT_INDEX_OFFSET]
            .copy_from_slice(&self.segment_size_bytes.to_le_bytes());
        out[SH_SEGMENT_INDEX_OFFSET..SH_FIRST_SEQ_OFFSET]
            .copy_from_slice(&self.segment_index.to_le_bytes());
        out[SH_FIRST_SEQ_OFFSET..SH_CREATED_NS_OFFSET]
            .copy_from_slice(&self.first_seq.to_le_bytes());
        out[SH_CREATED_NS_OFFSET..SH_PREV_HASH_OFFSET]
            .copy_from_slice(&self.created_ns.to_le_bytes());
        out[SH_PREV_HASH_OFFSET..SH_RESERVED_OFFSET].copy_from_slice(&self.prev_hash);
        let digest = Sha256::digest(&out[..SH_HEADER_HASH_OFFSET]);
        out[SH_HEADER_HASH_OFFSET..].copy_from_slice(&digest);
    }

    /// Decodes and validates a segment header: magic, version, header length, flags, reserved
    /// bytes and `header_hash`. The caller checks the fields against the file (size, name,
    /// position in the journal).
    pub fn decode(b: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        if b.len() < SEGMENT_HEADER_LEN_BYTES {
            return Err(HeaderProblem::Short { len: b.len() });
        }
        let b = &b[..SEGMENT_HEADER_LEN_BYTES];
        if b[SH_MAGIC_OFFSET..SH_VERSION_OFFSET] != SEGMENT_MAGIC {
            return Err(HeaderProblem::Magic);
        }
        let version = u16_at(b, SH_VERSION_OFFSET);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::Version { found: version });
        }
        let header_len = u16_at(b, SH_HEADER_LEN_OFFSET);
        if header_len as usize != SEGMENT_HEADER_LEN_BYTES {
            return Err(HeaderProblem::HeaderLen { found: header_len });
        }
        let digest = Sha256::digest(&b[..SH_HEADER_HASH_OFFSET]);
        if digest[..] != b[SH_HEADER_HASH_OFFSET..] {
            return Err(HeaderProblem::HeaderHash);
        }
        if u32_at(b, SH_FLAGS_OFFSET) != 0 {
            return Err(HeaderProblem::Flags);
        }
        if b[SH_RESERVED_OFFSET..SH_HEADER_HASH_OFFSET]
            .iter()
            .any(|&x| x != 0)
        {
            return Err(HeaderProblem::Reserved);
        }
        Ok(SegmentHeader {
            segment_size_bytes: u64_at(b, SH_SEGMENT_SIZE_OFFSET),
            segment_index: u64_at(b, SH_SEGMENT_INDEX_OFFSET),
            first_seq: u64_at(b, SH_FIRST_SEQ_OFFSET),
            created_ns: u64_at(b, SH_CREATED_NS_OFFSET),
            prev_hash: hash_at(b, SH_PREV_HASH_OFFSET),
        })
    }
}

/// Why a segment header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// The file is shorter than a header.
    #[error("file is {len} bytes, shorter than a segment header")]
    Short {
        /// Bytes available.
        len: usize,
    },
    /// Wrong magic.
    #[error("bad segment magic (not a journal segment)")]
    Magic,
    /// Unknown version.
    #[error("unsupported segment format version {found} (this build reads {FORMAT_VERSION})")]
    Version {
        /// Version found.
        found: u16,
    },
    /// Wrong header length.
    #[error("segment header length {found}, expected {SEGMENT_HEADER_LEN_BYTES}")]
    HeaderLen {
        /// Length found.
        found: u16,
    },
    /// Header bytes do not match their hash.
    #[error("segment header hash mismatch (header bytes changed)")]
    HeaderHash,
    /// Non-zero flags.
    #[error("non-zero flags in segment header")]
    Flags,
    /// Non-zero reserved bytes.
    #[error("non-zero reserved bytes in segment header")]
    Reserved,
}

impl HeaderProblem {
    /// The offset in the segment file of the field that is wrong (what a damage report names).
    pub fn offset(&self) -> u64 {
        let off = match self {
            HeaderProblem::Short { .. } | HeaderProblem::Magic => SH_MAGIC_OFFSET,
            HeaderProblem::Version { .. } => SH_VERSION_OFFSET,
            HeaderProblem::HeaderLen { .. } => SH_HEADER_LEN_OFFSET,
            HeaderProblem::HeaderHash => SH_HEADER_HASH_OFFSET,
            HeaderProblem::Flags => SH_FLAGS_OFFSET,
            HeaderProblem::Reserved => SH_RESERVED_OFFSET,
        };
        off as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Record
// ---------------------------------------------------------------------------------------------
//
// Record (RECORD_HEADER_LEN_BYTES = 32 + payload + padding + 32), starts 8-byte aligned
//
//  0            4             8               16              24    26    28       32
//  +------------+-------------+---------------+---------------+-----+-----+--------+
//  | record_len | payload_len | seq           | ts_ns         |kind |flags|reserved|
//  | u32        | u32         | u64           | u64           |u16  |u16=0|u32 = 0 |
//  +------------+-------------+---------------+---------------+-----+-----+--------+
//  32                               32+payload_len        record_len-32       record_len
//  +--------------------------------+---------------------+-------------------+
//  | payload [payload_len]          | zero padding to a   | hash [32]         |
//  |                                | multiple of 8       |                   |
//  +--------------------------------+---------------------+-------------------+
//
//  record_len = 32 + round_up(payload_len, 8) + 32   (so record_len % 8 == 0, >= 64)
//  hash       = SHA-256(prev_hash || bytes[0 .. record_len-32])   (header, payload, padding)
//  prev_hash  = hash of the previous record; for the first record of a segment, the segment
//               header's prev_hash (GENESIS_HASH for the journal's first record).
//
// `record_len` is written LAST (after the hash), so an interrupted append leaves 0 there;
// a zero `record_len` marks the end of data.

/// Size of a record header.
pub const RECORD_HEADER_LEN_BYTES: usize = 32;

const RH_RECORD_LEN_OFFSET: usize = 0;
const RH_PAYLOAD_LEN_OFFSET: usize = 4;
const RH_SEQ_OFFSET: usize = 8;
const RH_TS_OFFSET: usize = 16;
const RH_KIND_OFFSET: usize = 24;
const RH_FLAGS_OFFSET: usize = 26;
const RH_RESERVED_OFFSET: usize = 28;
const _: () = assert!(RH_RESERVED_OFFSET + 4 == RECORD_HEADER_LEN_BYTES);
const _: () = assert!(RECORD_HEADER_LEN_BYTES % RECORD_ALIGN_BYTES == 0);
const _: () = assert!(HASH_LEN_BYTES % RECORD_ALIGN_BYTES == 0);

/// Bytes of zero padding after a payload of `payload_len` bytes.
#[inline]
pub const fn padding_len(payload_len: usize) -> usize {
    (RECORD_ALIGN_BYTES - payload_len % RECORD_ALIGN_BYTES) % RECORD_ALIGN_BYTES
}

/// Size on disk of a record carrying `payload_len` bytes.
#[inline]
pub const fn record_len_for(payload_len: usize) -> usize {
    RECORD_HEADER_LEN_BYTES + payload_len + padding_len(payload_len) + HASH_LEN_BYTES
}

/// The fields of a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Size of the whole record on disk.
    pub record_len: u32,
    /// Payload bytes.
    pub payload_len: u32,
    /// Sequence number (1-based, dense).
    pub seq: u64,
    /// Writer-supplied timestamp (ns; the engine uses the Unix epoch).
    pub ts_ns: u64,
    /// Record kind ([`crate::KIND_DECISION`], ...).
    pub kind: u16,
}

impl RecordHeader {
    /// Writes the 32 header bytes, `record_len` included.
    #[inline]
    pub fn encode(&self, out: &mut [u8; RECORD_HEADER_LEN_BYTES]) {
        out[RH_RECORD_LEN_OFFSET..RH_PAYLOAD_LEN_OFFSET]
            .copy_from_slice(&self.record_len.to_le_bytes());
        out[RH_PAYLOAD_LEN_OFFSET..RH_SEQ_OFFSET].copy_from_slice(&self.payload_len.to_le_bytes());
        out[RH_SEQ_OFFSET..RH_TS_OFFSET].copy_from_slice(&self.seq.to_le_bytes());
        out[RH_TS_OFFSET..RH_KIND_OFFSET].copy_from_slice(&self.ts_ns.to_le_bytes());
        out[RH_KIND_OFFSET..RH_FLAGS_OFFSET].copy_from_slice(&self.kind.to_le_bytes());
        out[RH_FLAGS_OFFSET..RECORD_HEADER_LEN_BYTES].fill(0);
    }

    /// Decodes and validates a record header (lengths consistent, reserved bytes zero).
    /// `record_len == 0` is the end-of-data marker and is not a valid header.
    pub fn decode(b: &[u8]) -> Result<RecordHeader, RecordProblem> {
        debug_assert!(b.len() >= RECORD_HEADER_LEN_BYTES);
        let record_len = u32_at(b, RH_RECORD_LEN_OFFSET);
        let payload_len = u32_at(b, RH_PAYLOAD_LEN_OFFSET);
        if payload_len > crate::limits::PAYLOAD_LEN_BYTES_MAX {
            return Err(RecordProblem::PayloadLen { payload_len });
        }
        let expected = record_len_for(payload_len as usize) as u32;
        if record_len != expected {
            return Err(RecordProblem::RecordLen {
                record_len,
                payload_len,
                expected,
            });
        }
        if u16_at(b, RH_FLAGS_OFFSET) != 0 || u32_at(b, RH_RESERVED_OFFSET) != 0 {
            return Err(RecordProblem::Reserved);
        }
        Ok(RecordHeader {
            record_len,
            payload_len,
            seq: u64_at(b, RH_SEQ_OFFSET),
            ts_ns: u64_at(b, RH_TS_OFFSET),
            kind: u16_at(b, RH_KIND_OFFSET),
        })
    }
}

/// Reads the `record_len` word at the start of `b` (0 = end of data).
#[inline]
pub fn record_len_word(b: &[u8]) -> u32 {
    u32_at(b, RH_RECORD_LEN_OFFSET)
}

/// Why a record header did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordProblem {
    /// `payload_len` above the limit.
    #[error("payload_len {payload_len} exceeds the limit")]
    PayloadLen {
        /// Value found.
        payload_len: u32,
    },
    /// `record_len` does not match `payload_len`.
    #[error(
        "record_len {record_len} does not match payload_len {payload_len} (expected {expected})"
    )]
    RecordLen {
        /// Value found.
        record_len: u32,
        /// Value found.
        payload_len: u32,
        /// What `payload_len` implies.
        expected: u32,
    },
    /// Non-zero flags or reserved bytes.
    #[error("non-zero flags or reserved bytes in record header")]
    Reserved,
}

/// The chain hash of a record whose header and payload are given: what the writer stores and
/// what every verifier recomputes. `padding` must be the record's padding bytes (zeros).
///
/// A record whose hashed bytes fit [`SMALL_HASH_BLOCKS`] SHA-256 blocks with their padding (an
/// order decision: 32 + 32 + 104 bytes, three blocks) is hashed from one buffer on the stack,
/// straight through the compression function: the streaming hasher copied each of the four
/// parts into its block buffer through a call to `memcpy`, and those copies were 12 % of the
/// shared stage thread at `--rate max` (issue 12). Larger records go through `hasher`.
#[inline]
pub fn chain_hash_parts(
    hasher: &mut Sha256,
    prev_hash: &[u8; HASH_LEN_BYTES],
    header: &[u8; RECORD_HEADER_LEN_BYTES],
    payload: &[u8],
    padding: &[u8],
    out: &mut [u8; HASH_LEN_BYTES],
) {
    let len = HASH_LEN_BYTES + RECORD_HEADER_LEN_BYTES + payload.len() + padding.len();
    if len + SHA256_PAD_MIN_BYTES <= SMALL_HASH_BLOCKS * SHA256_BLOCK_BYTES {
        let mut buf = [0u8; SMALL_HASH_BLOCKS * SHA256_BLOCK_BYTES];
        let p = HASH_LEN_BYTES + RECORD_HEADER_LEN_BYTES;
        buf[..HASH_LEN_BYTES].copy_from_slice(prev_hash);
        buf[HASH_LEN_BYTES..p].copy_from_slice(header);
        buf[p..p + payload.len()].copy_from_slice(payload);
        buf[p + payload.len()..len].copy_from_slice(padding);
        *out = sha256_padded(&mut buf, len);
        return;
    }
    hasher.update(prev_hash);
    hasher.update(header);
    hasher.update(payload);
    hasher.update(padding);
    hasher.finalize_into_reset(out.into());
}

/// Bytes of a SHA-256 block.
const SHA256_BLOCK_BYTES: usize = 64;
/// Fewest bytes SHA-256's padding adds: the `0x80` byte and the 64-bit length.
const SHA256_PAD_MIN_BYTES: usize = 9;
/// Blocks of the stack buffer [`chain_hash_parts`] hashes a small record in.
const SMALL_HASH_BLOCKS: usize = 4;
/// SHA-256's initial hash value (FIPS 180-4, section 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256 of the first `len` bytes of `buf`, whose bytes after them are zero and leave room
/// for the padding: the padding is written in place and the blocks compressed.
#[inline]
fn sha256_padded(buf: &mut [u8; SMALL_HASH_BLOCKS * SHA256_BLOCK_BYTES], len: usize) -> [u8; 32] {
    let blocks = (len + SHA256_PAD_MIN_BYTES).div_ceil(SHA256_BLOCK_BYTES);
    let end = blocks * SHA256_BLOCK_BYTES;
    buf[len] = 0x80;
    buf[end - 8..end].copy_from_slice(&(len as u64 * 8).to_be_bytes());
    let mut state = SHA256_IV;
    for block in buf[..end].chunks_exact(SHA256_BLOCK_BYTES) {
        sha2::compress256(
            &mut state,
            std::slice::from_ref(sha2::digest::generic_array::GenericArray::from_slice(block)),
        );
    }
    let mut out = [0u8; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// The chain hash of the record bytes `body = bytes[0 .. record_len-32]` as stored.
#[inline]
pub fn chain_hash_stored(
    hasher: &mut Sha256,
    prev_hash: &[u8; HASH_LEN_BYTES],
    body: &[u8],
) -> [u8; HASH_LEN_BYTES] {
    hasher.update(prev_hash);
    hasher.update(body);
    let mut out = [0u8; HASH_LEN_BYTES];
    hasher.finalize_into_reset((&mut out).into());
    out
}

/// The chain hash of a record given by its fields (as a live subscriber receives them):
/// rebuilds the header and padding exactly as the writer stored them.
pub fn chain_hash(
    prev_hash: &[u8; HASH_LEN_BYTES],
    seq: u64,
    ts_ns: u64,
    kind: u16,
    payload: &[u8],
) -> [u8; HASH_LEN_BYTES] {
    let mut header = [0u8; RECORD_HEADER_LEN_BYTES];
    RecordHeader {
        record_len: record_len_for(payload.len()) as u32,
        payload_len: payload.len() as u32,
        seq,
        ts_ns,
        kind,
    }
    .encode(&mut header);
    let pad = [0u8; RECORD_ALIGN_BYTES];
    let mut out = [0u8; HASH_LEN_BYTES];
    chain_hash_parts(
        &mut Sha256::new(),
        prev_hash,
        &header,
        payload,
        &pad[..padding_len(payload.len())],
        &mut out,
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Checkpoint entry (file `checkpoints.log` in the journal directory, append-only)
// ---------------------------------------------------------------------------------------------
//
// Checkpoint entry (CHECKPOINT_LEN_BYTES = 128)
//
//  0      4     6     8               16              24                               56
//  +------+-----+-----+---------------+---------------+--------------------------------+
//  |magic | ver | 0   | seq           | ts_ns         | head_hash [32]                 |
//  |[4]   | u16 | u16 | u64           | u64           | hash of record `seq`           |
//  +------+-----+-----+---------------+---------------+--------------------------------+
//  56              64                                                               128
//  +---------------+----------------------------------------------------------------+
//  | key_id [8]    | signature [64]: Ed25519 by the journal's key over bytes 0..64   |
//  | SHA-256(pub)  |                                                                |
//  | [0..8]        |                                                                |
//  +---------------+----------------------------------------------------------------+

/// `TTCK`: the first 4 bytes of every checkpoint entry.
pub const CHECKPOINT_MAGIC: [u8; 4] = *b"TTCK";
/// Size of one checkpoint entry.
pub const CHECKPOINT_LEN_BYTES: usize = 128;
/// Bytes of an entry covered by its signature.
pub const CHECKPOINT_SIGNED_LEN_BYTES: usize = 64;

const CK_MAGIC_OFFSET: usize = 0;
const CK_VERSION_OFFSET: usize = 4;
const CK_RESERVED_OFFSET: usize = 6;
const CK_SEQ_OFFSET: usize = 8;
const CK_TS_OFFSET: usize = 16;
const CK_HEAD_OFFSET: usize = 24;
const CK_KEY_ID_OFFSET: usize = 56;
const CK_SIGNATURE_OFFSET: usize = 64;
const _: () = assert!(CK_HEAD_OFFSET + HASH_LEN_BYTES == CK_KEY_ID_OFFSET);
const _: () = assert!(CK_KEY_ID_OFFSET + 8 == CHECKPOINT_SIGNED_LEN_BYTES);
const _: () = assert!(CK_SIGNATURE_OFFSET == CHECKPOINT_SIGNED_LEN_BYTES);
const _: () = assert!(CK_SIGNATURE_OFFSET + 64 == CHECKPOINT_LEN_BYTES);

/// One decoded checkpoint entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointEntry {
    /// The last record the checkpoint covers.
    pub seq: u64,
    /// When it was written (the writer's clock, ns).
    pub ts_ns: u64,
    /// Chain hash of record `seq`.
    pub head_hash: [u8; HASH_LEN_BYTES],
    /// First 8 bytes of SHA-256 of the signing public key.
    pub key_id: [u8; 8],
    /// Ed25519 signature over the first 64 bytes of the entry.
    pub signature: [u8; 64],
}

impl CheckpointEntry {
    /// The 64 signed bytes of an entry (magic, version, seq, time, head hash, key id).
    pub fn signed_bytes(
        seq: u64,
        ts_ns: u64,
        head_hash: &[u8; HASH_LEN_BYTES],
        key_id: &[u8; 8],
    ) -> [u8; CHECKPOINT_SIGNED_LEN_BYTES] {
        let mut b = [0u8; CHECKPOINT_SIGNED_LEN_BYTES];
        b[CK_MAGIC_OFFSET..CK_VERSION_OFFSET].copy_from_slice(&CHECKPOINT_MAGIC);
        b[CK_VERSION_OFFSET..CK_RESERVED_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[CK_SEQ_OFFSET..CK_TS_OFFSET].copy_from_slice(&seq.to_le_bytes());
        b[CK_TS_OFFSET..CK_HEAD_OFFSET].copy_from_slice(&ts_ns.to_le_bytes());
        b[CK_HEAD_OFFSET..CK_KEY_ID_OFFSET].copy_from_slice(head_hash);
        b[CK_KEY_ID_OFFSET..CK_SIGNATURE_OFFSET].copy_from_slice(key_id);
        b
    }

    /// Encodes the whole entry.
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN_BYTES] {
        let mut b = [0u8; CHECKPOINT_LEN_BYTES];
        b[..CHECKPOINT_SIGNED_LEN_BYTES].copy_from_slice(&Self::signed_bytes(
            self.seq,
            self.ts_ns,
            &self.head_hash,
            &self.key_id,
        ));
        b[CK_SIGNATURE_OFFSET..].copy_from_slice(&self.signature);
        b
    }

    /// Decodes an entry, checking magic, version and reserved bytes (not the signature).
    pub fn decode(b: &[u8]) -> Option<CheckpointEntry> {
        if b.len() < CHECKPOINT_LEN_BYTES
            || b[CK_MAGIC_OFFSET..CK_VERSION_OFFSET] != CHECKPOINT_MAGIC
            || u16_at(b, CK_VERSION_OFFSET) != FORMAT_VERSION
            || u16_at(b, CK_RESERVED_OFFSET) != 0
        {
            return None;
        }
        let mut key_id = [0u8; 8];
        key_id.copy_from_slice(&b[CK_KEY_ID_OFFSET..CK_SIGNATURE_OFFSET]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[CK_SIGNATURE_OFFSET..CHECKPOINT_LEN_BYTES]);
        Some(CheckpointEntry {
            seq: u64_at(b, CK_SEQ_OFFSET),
            ts_ns: u64_at(b, CK_TS_OFFSET),
            head_hash: hash_at(b, CK_HEAD_OFFSET),
            key_id,
            signature,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// File names
// ---------------------------------------------------------------------------------------------

/// Segment files are named `<first_seq as 20 decimal digits>.seg`.
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Digits in a segment file name.
pub const SEGMENT_NAME_DIGITS: usize = 20;
/// A segment being created is written under its final name plus this suffix, then renamed.
pub const SEGMENT_TMP_SUFFIX: &str = ".seg.tmp";
/// The blank segment the writer prepares ahead of time on a background thread (allocated and
/// zero-filled, no header yet). Like `<first_seq>.seg.tmp`, never part of the data: a crash can
/// leave it behind, and opening the journal for append deletes it.
pub const SPARE_SEGMENT_FILE_NAME: &str = "spare.seg.tmp";
/// The append-only checkpoint file.
pub const CHECKPOINT_FILE_NAME: &str = "checkpoints.log";
/// The lock file a writer holds (`flock`, exclusive) while the journal is open for append.
pub const LOCK_FILE_NAME: &str = "journal.lock";

/// File name of the segment whose first record is `first_seq`.
pub fn segment_file_name(first_seq: u64) -> String {
    format!(
        "{first_seq:0width$}{SEGMENT_SUFFIX}",
        width = SEGMENT_NAME_DIGITS
    )
}

/// Parses a segment file name; `None` for any other name, and for a name of the segment
/// form whose number is above `u64::MAX` (see [`is_out_of_range_segment_file_name`]).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    segment_name_digits(name)?.parse().ok()
}

/// Whether `name` has the form of a segment name (20 decimal digits, `.seg`) but a number above
/// `u64::MAX` (18446744073709551615): no segment can have it, so the journal is damaged.
pub fn is_out_of_range_segment_file_name(name: &str) -> bool {
    segment_name_digits(name).is_some_and(|d| d.parse::<u64>().is_err())
}

fn segment_name_digits(name: &str) -> Option<&str> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    (digits.len() == SEGMENT_NAME_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// Whether `name` is a leftover of a segment creation: [`SPARE_SEGMENT_FILE_NAME`] or
/// `<20 digits>.seg.tmp`. Never part of the data; opening the journal for append deletes them
/// (and `engine replay --fresh` with the rest of the journal). Other names are not touched.
pub fn is_segment_tmp_file_name(name: &str) -> bool {
    name == SPARE_SEGMENT_FILE_NAME
        || name.strip_suffix(SEGMENT_TMP_SUFFIX).is_some_and(|d| {
            d.len() == SEGMENT_NAME_DIGITS && d.bytes().all(|b| b.is_ascii_digit())
        })
}

// ---------------------------------------------------------------------------------------------
// Little-endian helpers (bounds are checked by the callers' layouts)
// ---------------------------------------------------------------------------------------------

#[inline]
pub(crate) fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

#[inline]
pub(crate) fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

#[inline]
pub(crate) fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

#[inline]
pub(crate) fn hash_at(b: &[u8], off: usize) -> [u8; HASH_LEN_BYTES] {
    let mut a = [0u8; HASH_LEN_BYTES];
    a.copy_from_slice(&b[off..off + HASH_LEN_BYTES]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain hash of a record is SHA-256 of its parts in a row, whether it is hashed on
    /// the stack (small records) or through the streaming hasher (the rest): every payload
    /// length across the boundary between the two and across each block boundary, with
    /// non-zero padding bytes too (a verifier hashes the padding it reads).
    #[test]
    fn chain_hash_parts_is_sha256_of_the_parts_for_every_length() {
        let mut hasher = Sha256::new();
        let prev: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
        let header: [u8; RECORD_HEADER_LEN_BYTES] = std::array::from_fn(|i| 200 - i as u8);
        let bytes: Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut small = 0;
        for n in 0..=300 {
            for pad in [&[][..], &[0u8; 7][..], &[1u8, 2, 3][..]] {
                let mut out = [0u8; 32];
                chain_hash_parts(&mut hasher, &prev, &header, &bytes[..n], pad, &mut out);
                let want = Sha256::new()
                    .chain_update(prev)
                    .chain_update(header)
                    .chain_update(&bytes[..n])
                    .chain_update(pad)
                    .finalize();
                assert_eq!(out[..], want[..], "payload {n}, padding {pad:?}");
                small += usize::from(64 + n + pad.len() + 9 <= SMALL_HASH_BLOCKS * 64);
            }
        }
        assert!(
            small > 100 && small < 903,
            "both paths taken ({small} small)"
        );
    }

    #[test]
    fn record_lengths_are_aligned() {
        assert_eq!(record_len_for(0), 64);
        assert_eq!(record_len_for(1), 72);
        assert_eq!(record_len_for(8), 72);
        assert_eq!(record_len_for(80), 144);
        assert_eq!(record_len_for(128), 192);
        for n in 0..100 {
            assert_eq!(record_len_for(n) % RECORD_ALIGN_BYTES, 0);
            assert!(record_len_for(n) >= 64 + n);
        }
    }

    #[test]
    fn segment_header_round_trips_and_detects_changes() {
        let h = SegmentHeader {
            segment_size_bytes: 4096,
            segment_index: 3,
            first_seq: 42,
            created_ns: 7,
            prev_hash: [9u8; 32],
        };
        let mut b = [0u8; SEGMENT_HEADER_LEN_BYTES];
        h.encode(&mut b);
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        for i in 0..SEGMENT_HEADER_LEN_BYTES {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(SegmentHeader::decode(&c).is_err(), "flip at {i} not caught");
        }
        assert_eq!(
            SegmentHeader::decode(&b[..10]),
            Err(HeaderProblem::Short { len: 10 })
        );
    }

    #[test]
    fn record_header_validation() {
        let h = RecordHeader {
            record_len: record_len_for(5) as u32,
            payload_len: 5,
            seq: 1,
            ts_ns: 2,
            kind: 3,
        };
        let mut b = [0u8; RECORD_HEADER_LEN_BYTES];
        h.encode(&mut b);
        assert_eq!(RecordHeader::decode(&b), Ok(h));
        let mut c = b;
        c[0] = 8; // record_len does not match
        assert!(matches!(
            RecordHeader::decode(&c),
            Err(RecordProblem::RecordLen { .. })
        ));
        let mut c = b;
        c[27] = 1; // flags
        assert_eq!(RecordHeader::decode(&c), Err(RecordProblem::Reserved));
        let mut c = b;
        c[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            RecordHeader::decode(&c),
            Err(RecordProblem::PayloadLen { .. })
        ));
    }

    #[test]
    fn chain_hash_matches_the_stored_form() {
        let payload = b"hello";
        let h = chain_hash(&GENESIS_HASH, 1, 2, 3, payload);
        let mut body = vec![0u8; record_len_for(payload.len()) - HASH_LEN_BYTES];
        let mut hdr = [0u8; RECORD_HEADER_LEN_BYTES];
        RecordHeader {
            record_len: record_len_for(5) as u32,
            payload_len: 5,
            seq: 1,
            ts_ns: 2,
            kind: 3,
        }
        .encode(&mut hdr);
        body[..32].copy_from_slice(&hdr);
        body[32..37].copy_from_slice(payload);
        let mut hasher = Sha256::new();
        assert_eq!(chain_hash_stored(&mut hasher, &GENESIS_HASH, &body), h);
        // The worked example of docs/formats/audit-log.md.
        assert_eq!(
            hex::encode(h),
            "522673706e819cdbb6fe06ddc18d69f9580ede43e25aa200f652d56274996847"
        );
        assert_eq!(
            hex::encode(&body[..32]),
            "4800000005000000010000000000000002000000000000000300000000000000"
        );
        // Changing any field changes the hash.
        assert_ne!(chain_hash(&GENESIS_HASH, 2, 2, 3, payload), h);
        assert_ne!(chain_hash(&[1u8; 32], 1, 2, 3, payload), h);
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(parse_segment_file_name("00000000000000000001.seg"), Some(1));
        assert_eq!(parse_segment_file_name("1.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000001.seg.tmp"),
            None
        );
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        // One above u64::MAX: the form of a segment name, but no segment can have it.
        assert_eq!(parse_segment_file_name("18446744073709551616.seg"), None);
        assert!(is_out_of_range_segment_file_name(
            "18446744073709551616.seg"
        ));
        assert!(is_out_of_range_segment_file_name(
            "99999999999999999999.seg"
        ));
        assert!(!is_out_of_range_segment_file_name(&segment_file_name(
            u64::MAX
        )));
        assert!(!is_out_of_range_segment_file_name("1.seg"));
        // Leftovers of a segment creation.
        assert!(is_segment_tmp_file_name(SPARE_SEGMENT_FILE_NAME));
        assert!(is_segment_tmp_file_name("00000000000000000051.seg.tmp"));
        assert!(!is_segment_tmp_file_name("notes.seg.tmp"));
        assert!(!is_segment_tmp_file_name("00000000000000000051.seg"));
    }

    #[test]
    fn checkpoint_entry_round_trips() {
        let e = CheckpointEntry {
            seq: 5,
            ts_ns: 6,
            head_hash: [1u8; 32],
            key_id: [2u8; 8],
            signature: [3u8; 64],
        };
        let b = e.encode();
        assert_eq!(CheckpointEntry::decode(&b), Some(e));
        let mut c = b;
        c[0] = b'X';
        assert_eq!(CheckpointEntry::decode(&c), None);
    }
}
