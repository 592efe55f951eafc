//! Wire formats of the live feed (PUB) and of the gap-fill service (REQ/REP). Little-endian.
//!
//! ```text
//! Record entry (ENTRY_HEADER_LEN_BYTES = 56 + payload + padding), 8-byte aligned in a message
//!  0               8               16    18    20          24                               56
//!  +---------------+---------------+-----+-----+-----------+--------------------------------+
//!  | seq u64       | ts_ns u64     |kind |flags|payload_len| hash [32] (chain hash)         |
//!  |               |               |u16  |u16=0|u32        |                                |
//!  +---------------+---------------+-----+-----+-----------+--------------------------------+
//!  | payload [payload_len], zero padding to a multiple of 8                                 |
//!  +----------------------------------------------------------------------------------------+
//!
//! PUB message: one frame
//!  0      4     6       8
//!  +------+-----+-------+-------------------------------+
//!  |magic | ver | count | count record entries          |
//!  |"TTNP"| u16 | u16   | (consecutive seq, usually)    |
//!  +------+-----+-------+-------------------------------+
//!
//! Gap-fill request (REQUEST_LEN_BYTES = 32): one frame
//!  0      4     6     8               16              24          28          32
//!  +------+-----+-----+---------------+---------------+-----------+-----------+
//!  |magic | ver | 0   | from_seq u64  | to_seq u64    |max_records| 0         |
//!  |"TTNQ"| u16 | u16 |               | (inclusive)   |u32 (0=srv)| u32       |
//!  +------+-----+-----+---------------+---------------+-----------+-----------+
//!
//! Gap-fill reply: one frame
//!  0      4     6      8       12      16              24                       56        64
//!  +------+-----+------+-------+-------+---------------+------------------------+---------+
//!  |magic | ver |status| count | 0     | head_seq u64  | head_hash [32]         | 0 (u64) |
//!  |"TTNR"| u16 | u16  | u32   | u32   | (0 = empty)   |                        |         |
//!  +------+-----+------+-------+-------+---------------+------------------------+---------+
//!  | status 0: `count` record entries, seq from_seq, from_seq+1, ... (may stop early at   |
//!  |           the head or at the size bound: ask again from the next seq)                |
//!  | status 1 (bad request) / 2 (journal unreadable or damaged): UTF-8 error text         |
//!  +--------------------------------------------------------------------------------------+
//! ```

use crate::error::JournalError;
use crate::format::{padding_len, u16_at, u32_at, u64_at, FORMAT_VERSION, HASH_LEN_BYTES};
use crate::limits::PAYLOAD_LEN_BYTES_MAX;

/// Magic of a PUB message.
pub const PUB_MAGIC: [u8; 4] = *b"TTNP";
/// Magic of a gap-fill request.
pub const REQUEST_MAGIC: [u8; 4] = *b"TTNQ";
/// Magic of a gap-fill reply.
pub const REPLY_MAGIC: [u8; 4] = *b"TTNR";

/// Size of the PUB message header.
pub const PUB_BATCH_HEADER_LEN_BYTES: usize = 8;
/// Size of a record entry header.
pub const ENTRY_HEADER_LEN_BYTES: usize = 56;
/// Size of a gap-fill request.
pub const REQUEST_LEN_BYTES: usize = 32;
/// Size of a gap-fill reply header.
pub const REPLY_HEADER_LEN_BYTES: usize = 64;

const E_SEQ: usize = 0;
const E_TS: usize = 8;
const E_KIND: usize = 16;
const E_FLAGS: usize = 18;
const E_PAYLOAD_LEN: usize = 20;
const E_HASH: usize = 24;
const _: () = assert!(E_HASH + HASH_LEN_BYTES == ENTRY_HEADER_LEN_BYTES);

const Q_FROM: usize = 8;
const Q_TO: usize = 16;
const Q_MAX: usize = 24;
const Q_RESERVED: usize = 28;
const _: () = assert!(Q_RESERVED + 4 == REQUEST_LEN_BYTES);

const R_STATUS: usize = 6;
const R_COUNT: usize = 8;
const R_HEAD_SEQ: usize = 16;
const R_HEAD_HASH: usize = 24;
const _: () = assert!(R_HEAD_HASH + HASH_LEN_BYTES + 8 == REPLY_HEADER_LEN_BYTES);

/// Gap-fill reply status: records follow.
pub const STATUS_OK: u16 = 0;
/// Gap-fill reply status: the request was malformed.
pub const STATUS_BAD_REQUEST: u16 = 1;
/// Gap-fill reply status: the journal could not be read (damaged, I/O).
pub const STATUS_JOURNAL_ERROR: u16 = 2;

/// Encoded size of an entry carrying `payload_len` bytes.
#[inline]
pub const fn entry_len(payload_len: usize) -> usize {
    ENTRY_HEADER_LEN_BYTES + payload_len + padding_len(payload_len)
}

/// Appends one entry to `buf` (which must have the capacity: the caller sizes it at start-up,
/// so this never allocates).
#[inline]
pub fn push_entry(
    buf: &mut Vec<u8>,
    seq: u64,
    hash: &[u8; HASH_LEN_BYTES],
    kind: u16,
    ts_ns: u64,
    payload: &[u8],
) {
    debug_assert!(buf.len() + entry_len(payload.len()) <= buf.capacity());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&ts_ns.to_le_bytes());
    buf.extend_from_slice(&kind.to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(hash);
    buf.extend_from_slice(payload);
    const ZEROS: [u8; 8] = [0u8; 8];
    buf.extend_from_slice(&ZEROS[..padding_len(payload.len())]);
}

/// A decoded entry borrowing its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Timestamp.
    pub ts_ns: u64,
    /// Kind.
    pub kind: u16,
    /// Chain hash as sent (the receiver recomputes it with [`crate::chain_hash`]).
    pub hash: [u8; HASH_LEN_BYTES],
    /// Payload.
    pub payload: &'a [u8],
}

/// Decodes `count` consecutive entries from `b`, validating each. A `count` that the bytes
/// cannot hold (each entry takes at least [`ENTRY_HEADER_LEN_BYTES`]) is refused before
/// anything is allocated for it: `count` comes from the wire.
pub fn decode_entries(mut b: &[u8], count: usize) -> Result<Vec<EntryRef<'_>>, JournalError> {
    if count > b.len() / ENTRY_HEADER_LEN_BYTES {
        return Err(JournalError::Protocol(format!(
            "message claims {count} entries but its {} bytes hold at most {}",
            b.len(),
            b.len() / ENTRY_HEADER_LEN_BYTES
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if b.len() < ENTRY_HEADER_LEN_BYTES {
            return Err(JournalError::Protocol(format!(
                "entry {i} of {count}: {} bytes left, need a {ENTRY_HEADER_LEN_BYTES}-byte header",
                b.len()
            )));
        }
        let payload_len = u32_at(b, E_PAYLOAD_LEN);
        if payload_len > PAYLOAD_LEN_BYTES_MAX || u16_at(b, E_FLAGS) != 0 {
            return Err(JournalError::Protocol(format!(
                "entry {i} of {count}: bad payload_len {payload_len} or flags"
            )));
        }
        let len = entry_len(payload_len as usize);
        if b.len() < len {
            return Err(JournalError::Protocol(format!(
                "entry {i} of {count}: truncated ({} bytes left, need {len})",
                b.len()
            )));
        }
        if b[ENTRY_HEADER_LEN_BYTES + payload_len as usize..len]
            .iter()
            .any(|&x| x != 0)
        {
            return Err(JournalError::Protocol(format!(
                "entry {i} of {count}: non-zero padding after the payload"
            )));
        }
        let mut hash = [0u8; HASH_LEN_BYTES];
        hash.copy_from_slice(&b[E_HASH..E_HASH + HASH_LEN_BYTES]);
        out.push(EntryRef {
            seq: u64_at(b, E_SEQ),
            ts_ns: u64_at(b, E_TS),
            kind: u16_at(b, E_KIND),
            hash,
            payload: &b[ENTRY_HEADER_LEN_BYTES..ENTRY_HEADER_LEN_BYTES + payload_len as usize],
        });
        b = &b[len..];
    }
    if !b.is_empty() {
        return Err(JournalError::Protocol(format!(
            "{} trailing bytes after {count} entries",
            b.len()
        )));
    }
    Ok(out)
}

/// Writes a PUB message header for `count` entries into `buf[..8]`.
pub fn write_pub_header(buf: &mut [u8], count: u16) {
    buf[0..4].copy_from_slice(&PUB_MAGIC);
    buf[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf[6..8].copy_from_slice(&count.to_le_bytes());
}

/// Decodes a PUB message.
pub fn decode_pub(msg: &[u8]) -> Result<Vec<EntryRef<'_>>, JournalError> {
    if msg.len() < PUB_BATCH_HEADER_LEN_BYTES || msg[0..4] != PUB_MAGIC {
        return Err(JournalError::Protocol(
            "not a journal PUB message (bad magic)".into(),
        ));
    }
    let version = u16_at(msg, 4);
    if version != FORMAT_VERSION {
        return Err(JournalError::Protocol(format!(
            "PUB message version {version}, expected {FORMAT_VERSION}"
        )));
    }
    let count = u16_at(msg, 6) as usize;
    decode_entries(&msg[PUB_BATCH_HEADER_LEN_BYTES..], count)
}

/// A gap-fill request: records `from_seq ..= to_seq`, at most `max_records` (0: the server's
/// limit) in one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapRequest {
    /// First sequence number wanted (≥ 1).
    pub from_seq: u64,
    /// Last sequence number wanted, inclusive (`u64::MAX`: up to the head).
    pub to_seq: u64,
    /// Most records in the reply (0: the server's limit).
    pub max_records: u32,
}

impl GapRequest {
    /// Encodes the request.
    pub fn encode(&self) -> [u8; REQUEST_LEN_BYTES] {
        let mut b = [0u8; REQUEST_LEN_BYTES];
        b[0..4].copy_from_slice(&REQUEST_MAGIC);
        b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[Q_FROM..Q_TO].copy_from_slice(&self.from_seq.to_le_bytes());
        b[Q_TO..Q_MAX].copy_from_slice(&self.to_seq.to_le_bytes());
        b[Q_MAX..Q_RESERVED].copy_from_slice(&self.max_records.to_le_bytes());
        b
    }

    /// Decodes and validates a request.
    pub fn decode(b: &[u8]) -> Result<GapRequest, String> {
        if b.len() != REQUEST_LEN_BYTES {
            return Err(format!(
                "request is {} bytes, expected {REQUEST_LEN_BYTES}",
                b.len()
            ));
        }
        if b[0..4] != REQUEST_MAGIC {
            return Err("bad request magic".into());
        }
        if u16_at(b, 4) != FORMAT_VERSION {
            return Err(format!(
                "request version {}, expected {FORMAT_VERSION}",
                u16_at(b, 4)
            ));
        }
        if u16_at(b, 6) != 0 || u32_at(b, Q_RESERVED) != 0 {
            return Err("non-zero reserved bytes in request".into());
        }
        let r = GapRequest {
            from_seq: u64_at(b, Q_FROM),
            to_seq: u64_at(b, Q_TO),
            max_records: u32_at(b, Q_MAX),
        };
        if r.from_seq == 0 || r.to_seq < r.from_seq {
            return Err(format!(
                "bad range {}..={} (sequence numbers start at 1)",
                r.from_seq, r.to_seq
            ));
        }
        Ok(r)
    }
}

/// The header of a gap-fill reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GapReplyHeader {
    /// [`STATUS_OK`], [`STATUS_BAD_REQUEST`] or [`STATUS_JOURNAL_ERROR`].
    pub status: u16,
    /// Entries that follow (status 0).
    pub count: u32,
    /// The journal's last committed sequence number when the reply was made (0: empty).
    pub head_seq: u64,
    /// Its hash.
    pub head_hash: [u8; HASH_LEN_BYTES],
}

impl GapReplyHeader {
    /// Writes the header into `b[..64]`.
    pub fn encode_into(&self, b: &mut [u8]) {
        b[..REPLY_HEADER_LEN_BYTES].fill(0);
        b[0..4].copy_from_slice(&REPLY_MAGIC);
        b[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[R_STATUS..R_COUNT].copy_from_slice(&self.status.to_le_bytes());
        b[R_COUNT..R_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
        b[R_HEAD_SEQ..R_HEAD_HASH].copy_from_slice(&self.head_seq.to_le_bytes());
        b[R_HEAD_HASH..R_HEAD_HASH + HASH_LEN_BYTES].copy_from_slice(&self.head_hash);
    }

    /// Decodes a reply header; returns it and the bytes after it.
    pub fn decode(b: &[u8]) -> Result<(GapReplyHeader, &[u8]), JournalError> {
        if b.len() < REPLY_HEADER_LEN_BYTES || b[0..4] != REPLY_MAGIC {
            return Err(JournalError::Protocol(
                "not a gap-fill reply (bad magic or short)".into(),
            ));
        }
        if u16_at(b, 4) != FORMAT_VERSION {
            return Err(JournalError::Protocol(format!(
                "gap-fill reply version {}, expected {FORMAT_VERSION}",
                u16_at(b, 4)
            )));
        }
        let mut head_hash = [0u8; HASH_LEN_BYTES];
        head_hash.copy_from_slice(&b[R_HEAD_HASH..R_HEAD_HASH + HASH_LEN_BYTES]);
        Ok((
            GapReplyHeader {
                status: u16_at(b, R_STATUS),
                count: u32_at(b, R_COUNT),
                head_seq: u64_at(b, R_HEAD_SEQ),
                head_hash,
            },
            &b[REPLY_HEADER_LEN_BYTES..],
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pub_messages_round_trip(
            recs in proptest::collection::vec(
                (any::<u64>(), any::<u64>(), any::<u16>(), any::<[u8; 32]>(),
                 proptest::collection::vec(any::<u8>(), 0..200)),
                0..20)
        ) {
            let mut buf = Vec::with_capacity(PUB_BATCH_HEADER_LEN_BYTES + recs.len() * (56 + 208));
            buf.resize(PUB_BATCH_HEADER_LEN_BYTES, 0);
            for (seq, ts, kind, hash, payload) in &recs {
                push_entry(&mut buf, *seq, hash, *kind, *ts, payload);
            }
            write_pub_header(&mut buf, recs.len() as u16);
            let got = decode_pub(&buf).unwrap();
            prop_assert_eq!(got.len(), recs.len());
            for (e, (seq, ts, kind, hash, payload)) in got.iter().zip(&recs) {
                prop_assert_eq!((e.seq, e.ts_ns, e.kind, &e.hash, e.payload), (*seq, *ts, *kind, hash, payload.as_slice()));
            }
        }

        #[test]
        fn a_count_the_bytes_cannot_hold_is_refused(count in 1usize..=u32::MAX as usize, len in 0usize..600) {
            let b = vec![0u8; len];
            if count > len / ENTRY_HEADER_LEN_BYTES {
                let err = decode_entries(&b, count).unwrap_err().to_string();
                prop_assert!(err.contains("claims"), "{}", err);
            }
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_pub(&bytes);
            let _ = GapRequest::decode(&bytes);
            let _ = GapReplyHeader::decode(&bytes);
            let _ = decode_entries(&bytes, 3);
        }
    }

    #[test]
    fn requests_are_validated() {
        let r = GapRequest {
            from_seq: 5,
            to_seq: 9,
            max_records: 2,
        };
        assert_eq!(GapRequest::decode(&r.encode()), Ok(r));
        let bad = GapRequest { from_seq: 0, ..r };
        assert!(GapRequest::decode(&bad.encode()).is_err());
        let bad = GapRequest { from_seq: 10, ..r };
        assert!(GapRequest::decode(&bad.encode()).is_err());
        assert!(GapRequest::decode(&r.encode()[..31]).is_err());
        let h = GapReplyHeader {
            status: 0,
            count: 3,
            head_seq: 77,
            head_hash: [4u8; 32],
        };
        let mut b = [0u8; 70];
        h.encode_into(&mut b);
        let (d, rest) = GapReplyHeader::decode(&b).unwrap();
        assert_eq!(d, h);
        assert_eq!(rest.len(), 6);
    }
}
