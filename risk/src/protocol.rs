//! The risk wire protocol: binary batch requests and replies (this module), plus the JSON
//! single-order and admin requests on the same socket (see [`crate::service`]). The server
//! tells them apart by the first byte: `R` (the binary magic) or `{` (after optional
//! whitespace). `docs/formats/risk-protocol.md` repeats these layouts for outside readers.
//!
//! All integers are little-endian. Reserved bytes are written as zero and must read as zero.
//!
//! ```text
//! Batch request, version 1: REQUEST_HEADER_LEN_BYTES (32) + count × ORDER_LEN_BYTES (48)
//!  0       4       6       8               16              24      28      32
//!  +-------+-------+-------+---------------+---------------+-------+-------+----------------
//!  | magic | ver   | type  | batch_id      | now_ns        | count | 0     | count orders,
//!  | "RSKQ"| u16=1 | u16=1 | u64           | u64           | u32   | u32   | 48 bytes each
//!  +-------+-------+-------+---------------+---------------+-------+-------+ (orders::codec)
//!
//! Batch request, version 2: REQUEST_V2_HEADER_LEN_BYTES (40) + count × 48
//!  0       4       6       8               16              24      28      32              40
//!  +-------+-------+-------+---------------+---------------+-------+-------+---------------+---
//!  | magic | ver   | type  | batch_id      | now_ns        | count | 0     | session_id    | count
//!  | "RSKQ"| u16=2 | u16=1 | u64           | u64           | u32   | u32   | u64, ≠ 0      | orders
//!  +-------+-------+-------+---------------+---------------+-------+-------+---------------+---
//!
//! Void request (version 2 only): 40 + count × 8
//!  0       4       6       8               16              24      28      32              40
//!  +-------+-------+-------+---------------+---------------+-------+-------+---------------+---
//!  | magic | ver   | type  | request_id    | 0             | count | 0     | session_id    | count
//!  | "RSKQ"| u16=2 | u16=2 | u64           | u64           | u32   | u32   | u64, ≠ 0      | batch
//!  +-------+-------+-------+---------------+---------------+-------+-------+---------------+ ids u64
//!
//! Hello request (version 2 only): HELLO_REQUEST_LEN_BYTES (64)
//!  0       4       6       8               16              24      28      32              40
//!  +-------+-------+-------+---------------+---------------+-------+-------+---------------+
//!  | magic | ver   | type  | request_id    | 0             | count | 0     | session_id    |
//!  | "RSKQ"| u16=2 | u16=3 | u64           | u64           | u32=1 | u32   | u64, ≠ 0      |
//!  +-------+-------+-------+---------------+---------------+-------+-------+---------------+
//!  40              48              56      60      64
//!  +---------------+---------------+-------+-------+
//!  | prev_session  | journaled     |journ. | 0     |  the session the client's journal ends
//!  | u64 (0: none) | batch u64     |orders |  u32  |  on, the newest of its batches the
//!  |               |               |u32    |       |  journal holds, and how many of that
//!  +---------------+---------------+-------+-------+  batch's orders (from its first) it holds
//!
//! Reply: REPLY_HEADER_LEN_BYTES (24) + count × VERDICT_LEN_BYTES (16) + text_len
//!  0       4       6       8               16      20      24
//!  +-------+-------+-------+---------------+-------+-------+---------------------------------
//!  | magic | ver   |status | batch_id      | count |text   | count verdicts, then text_len
//!  | "RSKA"| u16=1 | u16   | u64           | u32   |len u32| bytes of UTF-8 error text
//!  +-------+-------+-------+---------------+-------+-------+---------------------------------
//!
//! Verdict (16 bytes), one per order, in request order:
//!  0               8       10                      16
//!  +---------------+-------+-----------------------+
//!  | order_id u64  |reason | 0 (6 bytes)           |
//!  |               |u16    |                       |
//!  +---------------+-------+-----------------------+
//!
//! Hello result (16 bytes), the one entry of a hello reply:
//!  0               8       10      12              16
//!  +---------------+-------+-------+---------------+
//!  | voided u64    |outcome| 0     | max_batch u32 |
//!  |               |u16    | u16   |               |
//!  +---------------+-------+-------+---------------+
//!
//! Void result (16 bytes), one per batch id of a void request, in request order:
//!  0               8       10                      16
//!  +---------------+-------+-----------------------+
//!  | batch_id u64  |outcome| 0 (6 bytes)           |
//!  |               |u16    |                       |
//!  +---------------+-------+-----------------------+
//! ```
//!
//! `status` 0 (`ok`) carries `count` verdicts or void results (= the request's count) and no
//! text; any other status carries none and a short text. `batch_id` echoes the request's
//! (0 when the request was too broken to read it). The reply layout is the same for both
//! request versions and keeps `ver` = 1.

use orders::{Order, Reason, ORDER_LEN_BYTES};

use crate::undo::VoidOutcome;

/// First four bytes of a batch request.
pub const REQUEST_MAGIC: [u8; 4] = *b"RSKQ";
/// First four bytes of a binary reply.
pub const REPLY_MAGIC: [u8; 4] = *b"RSKA";
/// Protocol version of the reply layout (the same for both request versions), and of the
/// version-1 request header (no session).
pub const PROTOCOL_VERSION: u16 = 1;
/// Request version 2: the header carries the client's session id (needed to void a batch).
pub const PROTOCOL_VERSION_2: u16 = 2;
/// Request type: a batch of orders to check.
pub const REQUEST_TYPE_CHECK: u16 = 1;
/// Request type (version 2): void batches the client timed out on.
pub const REQUEST_TYPE_VOID: u16 = 2;
/// Request type (version 2): a client's first request to a server: it learns the server's
/// batch bound, and reconciles the server with the client's journal after a restart.
pub const REQUEST_TYPE_HELLO: u16 = 3;
/// Request type (version 2): account names the client's orders may carry, bound to their ids
/// (the engine's name table, `orders::account_names`), so that limits keyed by name apply.
pub const REQUEST_TYPE_NAMES: u16 = 4;
/// Bytes of one entry of a names request: `id u32 | name_len u16 | 0 u16 | name [32]`.
pub const NAME_ENTRY_LEN_BYTES: usize = 40;
/// Most entries of one names request (and never more than the server's `max_batch`: an entry
/// is smaller than an order, so a names request is never larger than a batch).
pub const NAMES_PER_REQUEST_MAX: usize = 1024;

/// Size of the request header.
pub const REQUEST_HEADER_LEN_BYTES: usize = 32;
const RQ_MAGIC_OFFSET: usize = 0;
const RQ_VERSION_OFFSET: usize = 4;
const RQ_TYPE_OFFSET: usize = 6;
const RQ_BATCH_ID_OFFSET: usize = 8;
const RQ_NOW_OFFSET: usize = 16;
const RQ_COUNT_OFFSET: usize = 24;
const RQ_RESERVED_OFFSET: usize = 28;
const _: () = assert!(RQ_RESERVED_OFFSET + 4 == REQUEST_HEADER_LEN_BYTES);
/// Size of the version-2 request header (the version-1 header plus the session id).
pub const REQUEST_V2_HEADER_LEN_BYTES: usize = 40;
const RQ_SESSION_OFFSET: usize = 32;
const _: () = assert!(RQ_SESSION_OFFSET + 8 == REQUEST_V2_HEADER_LEN_BYTES);
/// Bytes of one batch id in a void request.
pub const VOID_BATCH_ID_LEN_BYTES: usize = 8;
/// Size of a hello request: the version-2 header and the client's [`JournalPoint`].
pub const HELLO_REQUEST_LEN_BYTES: usize = 64;
const HQ_PREV_SESSION_OFFSET: usize = 40;
const HQ_JOURNALED_BATCH_OFFSET: usize = 48;
const HQ_JOURNALED_ORDERS_OFFSET: usize = 56;
const HQ_RESERVED_OFFSET: usize = 60;
const _: () = assert!(HQ_PREV_SESSION_OFFSET == REQUEST_V2_HEADER_LEN_BYTES);
const _: () = assert!(HQ_RESERVED_OFFSET + 4 == HELLO_REQUEST_LEN_BYTES);
const H_VOIDED_OFFSET: usize = 0;
const H_OUTCOME_OFFSET: usize = 8;
const H_RESERVED_OFFSET: usize = 10;
const H_MAX_BATCH_OFFSET: usize = 12;
const _: () = assert!(H_MAX_BATCH_OFFSET + 4 == VERDICT_LEN_BYTES);

/// Size of the reply header.
pub const REPLY_HEADER_LEN_BYTES: usize = 24;
const RP_MAGIC_OFFSET: usize = 0;
const RP_VERSION_OFFSET: usize = 4;
const RP_STATUS_OFFSET: usize = 6;
const RP_BATCH_ID_OFFSET: usize = 8;
const RP_COUNT_OFFSET: usize = 16;
const RP_TEXT_LEN_OFFSET: usize = 20;
const _: () = assert!(RP_TEXT_LEN_OFFSET + 4 == REPLY_HEADER_LEN_BYTES);

/// Size of one verdict.
pub const VERDICT_LEN_BYTES: usize = 16;
const V_ORDER_ID_OFFSET: usize = 0;
const V_REASON_OFFSET: usize = 8;
const V_RESERVED_OFFSET: usize = 10;
const _: () = assert!(V_RESERVED_OFFSET + 6 == VERDICT_LEN_BYTES);

// The binary magic must never look like JSON (`{` or whitespace) to the server's dispatch.
const _: () = assert!(REQUEST_MAGIC[0] != b'{' && !REQUEST_MAGIC[0].is_ascii_whitespace());

/// Bytes of a (version-1) batch request with `count` orders.
pub const fn request_len_bytes(count: usize) -> usize {
    REQUEST_HEADER_LEN_BYTES + count * ORDER_LEN_BYTES
}

/// Bytes of a version-2 batch request with `count` orders.
pub const fn request_v2_len_bytes(count: usize) -> usize {
    REQUEST_V2_HEADER_LEN_BYTES + count * ORDER_LEN_BYTES
}

/// Bytes of a void request naming `count` batches.
pub const fn void_request_len_bytes(count: usize) -> usize {
    REQUEST_V2_HEADER_LEN_BYTES + count * VOID_BATCH_ID_LEN_BYTES
}

/// Bytes of an `ok` reply with `count` verdicts.
pub const fn reply_len_bytes(count: usize) -> usize {
    REPLY_HEADER_LEN_BYTES + count * VERDICT_LEN_BYTES
}

/// Reply status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Status {
    /// Verdicts follow.
    Ok = 0,
    /// The request could not be read (bad magic, truncated, reserved bytes set, …).
    Malformed = 1,
    /// More orders than the server's `max_batch`, or a frame above its size limit.
    TooLarge = 2,
    /// A protocol version the server does not speak.
    UnsupportedVersion = 3,
    /// A request type the server does not know.
    UnsupportedType = 4,
    /// The batch was voided (by a void request of its session) before it arrived: nothing was
    /// applied. Only a client that already gave up on the batch can see it.
    Voided = 5,
}

impl Status {
    /// Decodes a status code.
    pub fn from_u16(v: u16) -> Option<Status> {
        match v {
            0 => Some(Status::Ok),
            1 => Some(Status::Malformed),
            2 => Some(Status::TooLarge),
            3 => Some(Status::UnsupportedVersion),
            4 => Some(Status::UnsupportedType),
            5 => Some(Status::Voided),
            _ => None,
        }
    }

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Malformed => "malformed",
            Status::TooLarge => "too-large",
            Status::UnsupportedVersion => "unsupported-version",
            Status::UnsupportedType => "unsupported-type",
            Status::Voided => "voided",
        }
    }
}

/// Why a frame did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Shorter than a header.
    #[error("frame of {got} bytes is shorter than the {expected}-byte header")]
    Short {
        /// Header size.
        expected: usize,
        /// Frame size.
        got: usize,
    },
    /// Wrong magic.
    #[error("bad magic {0:02x?}")]
    Magic([u8; 4]),
    /// Unsupported version.
    #[error("unsupported protocol version {0} (this side speaks {PROTOCOL_VERSION})")]
    Version(u16),
    /// Unknown request type.
    #[error("unknown request type {0}")]
    Type(u16),
    /// A reserved field is not zero.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// The frame length does not match the count.
    #[error("frame is {got} bytes but its header announces {expected}")]
    Length {
        /// Length implied by the header.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// More orders than allowed.
    #[error("batch of {count} orders exceeds the maximum of {max}")]
    TooLarge {
        /// Orders announced.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Unknown status code in a reply.
    #[error("unknown reply status {0}")]
    Status(u16),
    /// Unknown reason code in a verdict.
    #[error("unknown reason code {0}")]
    Reason(u16),
    /// A version-2 request with session id 0.
    #[error("a version-2 request needs a non-zero session id")]
    Session,
    /// A void request naming no batch, or more than allowed.
    #[error("a void request names {count} batches, not 1..={max}")]
    VoidCount {
        /// Batches named.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// Unknown outcome code in a void result.
    #[error("unknown void outcome code {0}")]
    Outcome(u16),
    /// A hello request whose count is not 1.
    #[error("a hello request carries count 1, not {0}")]
    HelloCount(u32),
    /// A names request with no entry, or more than allowed.
    #[error("a names request carries {count} names, not 1..={max}")]
    NamesCount {
        /// Entries.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A names request entry that is not a valid binding.
    #[error("names request entry {index}: {what}")]
    NameEntry {
        /// Its index.
        index: usize,
        /// What is wrong.
        what: String,
    },
}

impl ProtocolError {
    /// The reply status a server answers this request error with.
    pub fn status(&self) -> Status {
        match self {
            ProtocolError::Version(_) => Status::UnsupportedVersion,
            ProtocolError::Type(_) => Status::UnsupportedType,
            ProtocolError::TooLarge { .. } => Status::TooLarge,
            _ => Status::Malformed,
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// A decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Client-chosen id, echoed in the reply (a void request's own id for a void).
    pub batch_id: u64,
    /// The client's clock (ns), used for the order-rate throttle and the duplicate horizon.
    pub now_ns: u64,
    /// Number of orders (batch ids for a void).
    pub count: u32,
    /// [`REQUEST_TYPE_CHECK`] or [`REQUEST_TYPE_VOID`].
    pub kind: u16,
    /// The client's session (0 for a version-1 request).
    pub session_id: u64,
}

impl RequestHeader {
    /// Bytes of the header (32 for version 1, 40 for version 2).
    pub fn header_len_bytes(&self) -> usize {
        if self.session_id == 0 {
            REQUEST_HEADER_LEN_BYTES
        } else {
            REQUEST_V2_HEADER_LEN_BYTES
        }
    }
}

/// Writes the header fields shared by both versions.
fn encode_header(version: u16, kind: u16, id: u64, now_ns: u64, count: usize, out: &mut [u8]) {
    out[RQ_MAGIC_OFFSET..RQ_VERSION_OFFSET].copy_from_slice(&REQUEST_MAGIC);
    out[RQ_VERSION_OFFSET..RQ_TYPE_OFFSET].copy_from_slice(&version.to_le_bytes());
    out[RQ_TYPE_OFFSET..RQ_BATCH_ID_OFFSET].copy_from_slice(&kind.to_le_bytes());
    out[RQ_BATCH_ID_OFFSET..RQ_NOW_OFFSET].copy_from_slice(&id.to_le_bytes());
    out[RQ_NOW_OFFSET..RQ_COUNT_OFFSET].copy_from_slice(&now_ns.to_le_bytes());
    out[RQ_COUNT_OFFSET..RQ_RESERVED_OFFSET].copy_from_slice(&(count as u32).to_le_bytes());
    out[RQ_RESERVED_OFFSET..REQUEST_HEADER_LEN_BYTES].fill(0);
}

/// Writes a version-2 batch request (with the client's `session_id`, which must not be 0)
/// into `out` and returns its length.
///
/// # Panics
/// If `out` is shorter than [`request_v2_len_bytes`]`(orders.len())` (a programming error).
pub fn encode_request_v2(
    session_id: u64,
    batch_id: u64,
    now_ns: u64,
    orders: &[Order],
    out: &mut [u8],
) -> usize {
    debug_assert_ne!(session_id, 0);
    let len = request_v2_len_bytes(orders.len());
    let out = &mut out[..len];
    let kind = REQUEST_TYPE_CHECK;
    encode_header(
        PROTOCOL_VERSION_2,
        kind,
        batch_id,
        now_ns,
        orders.len(),
        out,
    );
    out[RQ_SESSION_OFFSET..REQUEST_V2_HEADER_LEN_BYTES].copy_from_slice(&session_id.to_le_bytes());
    for (i, o) in orders.iter().enumerate() {
        let at = REQUEST_V2_HEADER_LEN_BYTES + i * ORDER_LEN_BYTES;
        orders::encode_order(o, &mut out[at..at + ORDER_LEN_BYTES]);
    }
    len
}

/// Writes a void request (session `session_id`, naming `batch_ids`) into `out` and returns its
/// length.
///
/// # Panics
/// If `out` is shorter than [`void_request_len_bytes`]`(batch_ids.len())`.
pub fn encode_void_request(
    session_id: u64,
    request_id: u64,
    batch_ids: &[u64],
    out: &mut [u8],
) -> usize {
    let len = void_request_len_bytes(batch_ids.len());
    let out = &mut out[..len];
    let kind = REQUEST_TYPE_VOID;
    encode_header(
        PROTOCOL_VERSION_2,
        kind,
        request_id,
        0,
        batch_ids.len(),
        out,
    );
    out[RQ_SESSION_OFFSET..REQUEST_V2_HEADER_LEN_BYTES].copy_from_slice(&session_id.to_le_bytes());
    for (i, id) in batch_ids.iter().enumerate() {
        let at = REQUEST_V2_HEADER_LEN_BYTES + i * VOID_BATCH_ID_LEN_BYTES;
        out[at..at + VOID_BATCH_ID_LEN_BYTES].copy_from_slice(&id.to_le_bytes());
    }
    len
}

/// The client's view of its journal in a hello request: the session its journal ends on, the
/// newest batch of that session whose verdicts the journal holds, and how many of that
/// batch's orders (from its first) it holds (`prev_session` 0: none, nothing to reconcile).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalPoint {
    /// The session of the last decision record (0: none).
    pub prev_session: u64,
    /// Its `risk_batch` (`orders::Decision`).
    pub journaled_batch: u64,
    /// Its `risk_batch_orders`.
    pub journaled_orders: u32,
}

/// Writes a hello request (the new session `session_id`, which must not be 0, and where the
/// client's journal ends) into `out[..HELLO_REQUEST_LEN_BYTES]`; returns its length.
pub fn encode_hello_request(
    session_id: u64,
    request_id: u64,
    point: JournalPoint,
    out: &mut [u8],
) -> usize {
    let out = &mut out[..HELLO_REQUEST_LEN_BYTES];
    encode_header(
        PROTOCOL_VERSION_2,
        REQUEST_TYPE_HELLO,
        request_id,
        0,
        1,
        out,
    );
    out[RQ_SESSION_OFFSET..REQUEST_V2_HEADER_LEN_BYTES].copy_from_slice(&session_id.to_le_bytes());
    out[HQ_PREV_SESSION_OFFSET..HQ_JOURNALED_BATCH_OFFSET]
        .copy_from_slice(&point.prev_session.to_le_bytes());
    out[HQ_JOURNALED_BATCH_OFFSET..HQ_JOURNALED_ORDERS_OFFSET]
        .copy_from_slice(&point.journaled_batch.to_le_bytes());
    out[HQ_JOURNALED_ORDERS_OFFSET..HQ_RESERVED_OFFSET]
        .copy_from_slice(&point.journaled_orders.to_le_bytes());
    out[HQ_RESERVED_OFFSET..HELLO_REQUEST_LEN_BYTES].fill(0);
    HELLO_REQUEST_LEN_BYTES
}

/// Length of a names request of `count` entries.
pub const fn names_request_len_bytes(count: usize) -> usize {
    REQUEST_V2_HEADER_LEN_BYTES + count * NAME_ENTRY_LEN_BYTES
}

/// Writes a names request binding `names` (`(id, name)`, at most [`NAMES_PER_REQUEST_MAX`],
/// each name at most 32 bytes) into `out` (cleared first).
pub fn encode_names_request(
    session_id: u64,
    request_id: u64,
    names: &[(u32, &str)],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.resize(names_request_len_bytes(names.len()), 0);
    encode_header(
        PROTOCOL_VERSION_2,
        REQUEST_TYPE_NAMES,
        request_id,
        0,
        names.len(),
        out,
    );
    out[RQ_SESSION_OFFSET..REQUEST_V2_HEADER_LEN_BYTES].copy_from_slice(&session_id.to_le_bytes());
    for (i, (id, name)) in names.iter().enumerate() {
        let at = REQUEST_V2_HEADER_LEN_BYTES + i * NAME_ENTRY_LEN_BYTES;
        let e = &mut out[at..at + NAME_ENTRY_LEN_BYTES];
        e[0..4].copy_from_slice(&id.to_le_bytes());
        let n = name.len().min(orders::account_names::ACCOUNT_NAME_LEN_MAX);
        e[4..6].copy_from_slice(&(n as u16).to_le_bytes());
        e[8..8 + n].copy_from_slice(&name.as_bytes()[..n]);
    }
}

/// Entry `index` of a validated names request frame: `(id, name)`, checked (an id of the
/// named range, a valid name, reserved and padding bytes zero).
pub fn names_request_entry(frame: &[u8], index: usize) -> Result<(u32, &str), ProtocolError> {
    let at = REQUEST_V2_HEADER_LEN_BYTES + index * NAME_ENTRY_LEN_BYTES;
    let e = &frame[at..at + NAME_ENTRY_LEN_BYTES];
    let bad = |what: String| ProtocolError::NameEntry { index, what };
    let id = u32_at(e, 0);
    let len = u16_at(e, 4) as usize;
    if u16_at(e, 6) != 0 {
        return Err(bad("reserved bytes are not zero".into()));
    }
    if len == 0 || len > orders::account_names::ACCOUNT_NAME_LEN_MAX {
        return Err(bad(format!("name length {len}")));
    }
    if e[8 + len..].iter().any(|&b| b != 0) {
        return Err(bad("padding after the name is not zero".into()));
    }
    if !orders::is_named_account(id) {
        return Err(bad(format!(
            "id {id} is below {}",
            orders::NAMED_ACCOUNT_BASE
        )));
    }
    let name = std::str::from_utf8(&e[8..8 + len]).map_err(|_| bad("name is not UTF-8".into()))?;
    orders::validate_account_name(name).map_err(|e| bad(e.to_string()))?;
    Ok((id, name))
}

/// The journal point of a validated hello request frame.
pub fn hello_journal_point(frame: &[u8]) -> JournalPoint {
    JournalPoint {
        prev_session: u64_at(frame, HQ_PREV_SESSION_OFFSET),
        journaled_batch: u64_at(frame, HQ_JOURNALED_BATCH_OFFSET),
        journaled_orders: u32_at(frame, HQ_JOURNALED_ORDERS_OFFSET),
    }
}

/// What a server answered a hello with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloResult {
    /// Batches of the previous session (and of sessions that continued it without journaling
    /// anything) that the server undid because the client's journal does not hold them.
    pub voided: u64,
    /// `voided`: the server now agrees with the journal (also when there was nothing to do);
    /// `unknown`: it has no record of the previous session; `too-old`: it applied batches the
    /// journal does not hold and can no longer undo them.
    pub outcome: VoidOutcome,
    /// The largest batch the server accepts (its `--max-batch`).
    pub max_batch: u32,
}

/// Writes the hello result (entry 0 of a reply, after the header).
pub fn encode_hello_result(r: &HelloResult, out: &mut [u8]) {
    let v = &mut out[REPLY_HEADER_LEN_BYTES..REPLY_HEADER_LEN_BYTES + VERDICT_LEN_BYTES];
    v[H_VOIDED_OFFSET..H_OUTCOME_OFFSET].copy_from_slice(&r.voided.to_le_bytes());
    v[H_OUTCOME_OFFSET..H_RESERVED_OFFSET].copy_from_slice(&(r.outcome as u16).to_le_bytes());
    v[H_RESERVED_OFFSET..H_MAX_BATCH_OFFSET].fill(0);
    v[H_MAX_BATCH_OFFSET..VERDICT_LEN_BYTES].copy_from_slice(&r.max_batch.to_le_bytes());
}

/// The hello result of a reply whose header validated with count 1.
pub fn decode_hello_result(frame: &[u8]) -> Result<HelloResult, ProtocolError> {
    let v = frame
        .get(REPLY_HEADER_LEN_BYTES..REPLY_HEADER_LEN_BYTES + VERDICT_LEN_BYTES)
        .ok_or(ProtocolError::Short {
            expected: REPLY_HEADER_LEN_BYTES + VERDICT_LEN_BYTES,
            got: frame.len(),
        })?;
    if v[H_RESERVED_OFFSET..H_MAX_BATCH_OFFSET] != [0, 0] {
        return Err(ProtocolError::Reserved);
    }
    let code = u16_at(v, H_OUTCOME_OFFSET);
    let outcome = VoidOutcome::from_u16(code).ok_or(ProtocolError::Outcome(code))?;
    Ok(HelloResult {
        voided: u64_at(v, H_VOIDED_OFFSET),
        outcome,
        max_batch: u32_at(v, H_MAX_BATCH_OFFSET),
    })
}

/// Batch id `i` of a validated void request frame.
pub fn void_batch_id(frame: &[u8], i: usize) -> u64 {
    u64_at(
        frame,
        REQUEST_V2_HEADER_LEN_BYTES + i * VOID_BATCH_ID_LEN_BYTES,
    )
}

/// Writes a version-1 batch request (no session: such a batch can never be voided) into
/// `out` and returns its length.
///
/// # Panics
/// If `out` is shorter than [`request_len_bytes`]`(orders.len())` (a programming error).
pub fn encode_request(batch_id: u64, now_ns: u64, orders: &[Order], out: &mut [u8]) -> usize {
    let len = request_len_bytes(orders.len());
    let out = &mut out[..len];
    out[RQ_MAGIC_OFFSET..RQ_VERSION_OFFSET].copy_from_slice(&REQUEST_MAGIC);
    out[RQ_VERSION_OFFSET..RQ_TYPE_OFFSET].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out[RQ_TYPE_OFFSET..RQ_BATCH_ID_OFFSET].copy_from_slice(&REQUEST_TYPE_CHECK.to_le_bytes());
    out[RQ_BATCH_ID_OFFSET..RQ_NOW_OFFSET].copy_from_slice(&batch_id.to_le_bytes());
    out[RQ_NOW_OFFSET..RQ_COUNT_OFFSET].copy_from_slice(&now_ns.to_le_bytes());
    out[RQ_COUNT_OFFSET..RQ_RESERVED_OFFSET].copy_from_slice(&(orders.len() as u32).to_le_bytes());
    out[RQ_RESERVED_OFFSET..REQUEST_HEADER_LEN_BYTES].fill(0);
    for (i, o) in orders.iter().enumerate() {
        let at = REQUEST_HEADER_LEN_BYTES + i * ORDER_LEN_BYTES;
        orders::encode_order(o, &mut out[at..at + ORDER_LEN_BYTES]);
    }
    len
}

/// The batch id of a frame that starts with the request magic, if it is long enough to hold
/// one (used to address error replies).
pub fn peek_batch_id(frame: &[u8]) -> u64 {
    if frame.len() >= RQ_NOW_OFFSET && frame[..4] == REQUEST_MAGIC {
        u64_at(frame, RQ_BATCH_ID_OFFSET)
    } else {
        0
    }
}

/// Validates a request frame: magic, version (1 or 2), type (check; void and hello in
/// version 2),
/// reserved bytes, a non-zero session id (version 2), `count ≤ max_batch` (a void: `1..=`
/// [`crate::limits::VOID_BATCH_IDS_MAX`]) and the frame length for the count. The orders
/// themselves are decoded one by one with [`request_order`].
pub fn decode_request_header(
    frame: &[u8],
    max_batch: usize,
) -> Result<RequestHeader, ProtocolError> {
    if frame.len() < REQUEST_HEADER_LEN_BYTES {
        return Err(ProtocolError::Short {
            expected: REQUEST_HEADER_LEN_BYTES,
            got: frame.len(),
        });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&frame[RQ_MAGIC_OFFSET..RQ_VERSION_OFFSET]);
    if magic != REQUEST_MAGIC {
        return Err(ProtocolError::Magic(magic));
    }
    let version = u16_at(frame, RQ_VERSION_OFFSET);
    if version != PROTOCOL_VERSION && version != PROTOCOL_VERSION_2 {
        return Err(ProtocolError::Version(version));
    }
    let kind = u16_at(frame, RQ_TYPE_OFFSET);
    let void = version == PROTOCOL_VERSION_2 && kind == REQUEST_TYPE_VOID;
    let hello = version == PROTOCOL_VERSION_2 && kind == REQUEST_TYPE_HELLO;
    let names = version == PROTOCOL_VERSION_2 && kind == REQUEST_TYPE_NAMES;
    if kind != REQUEST_TYPE_CHECK && !void && !hello && !names {
        return Err(ProtocolError::Type(kind));
    }
    if u32_at(frame, RQ_RESERVED_OFFSET) != 0 {
        return Err(ProtocolError::Reserved);
    }
    let session_id = if version == PROTOCOL_VERSION_2 {
        if frame.len() < REQUEST_V2_HEADER_LEN_BYTES {
            return Err(ProtocolError::Short {
                expected: REQUEST_V2_HEADER_LEN_BYTES,
                got: frame.len(),
            });
        }
        match u64_at(frame, RQ_SESSION_OFFSET) {
            0 => return Err(ProtocolError::Session),
            s => s,
        }
    } else {
        0
    };
    let count = u32_at(frame, RQ_COUNT_OFFSET);
    let expected = if hello {
        if count != 1 {
            return Err(ProtocolError::HelloCount(count));
        }
        if frame.len() == HELLO_REQUEST_LEN_BYTES && u32_at(frame, HQ_RESERVED_OFFSET) != 0 {
            return Err(ProtocolError::Reserved);
        }
        HELLO_REQUEST_LEN_BYTES
    } else if names {
        let max = NAMES_PER_REQUEST_MAX.min(max_batch.max(1));
        if count == 0 || count as usize > max {
            return Err(ProtocolError::NamesCount {
                count: count as usize,
                max,
            });
        }
        names_request_len_bytes(count as usize)
    } else if void {
        let max = crate::limits::VOID_BATCH_IDS_MAX;
        if count == 0 || count as usize > max {
            return Err(ProtocolError::VoidCount {
                count: count as usize,
                max,
            });
        }
        void_request_len_bytes(count as usize)
    } else {
        if count as usize > max_batch {
            return Err(ProtocolError::TooLarge {
                count: count as usize,
                max: max_batch,
            });
        }
        if session_id == 0 {
            request_len_bytes(count as usize)
        } else {
            request_v2_len_bytes(count as usize)
        }
    };
    if frame.len() != expected {
        return Err(ProtocolError::Length {
            expected,
            got: frame.len(),
        });
    }
    Ok(RequestHeader {
        batch_id: u64_at(frame, RQ_BATCH_ID_OFFSET),
        now_ns: u64_at(frame, RQ_NOW_OFFSET),
        count,
        kind,
        session_id,
    })
}

/// The raw bytes of order `i` of a validated batch request frame (either version).
pub fn request_order(frame: &[u8], i: usize) -> &[u8] {
    let header = if u16_at(frame, RQ_VERSION_OFFSET) == PROTOCOL_VERSION_2 {
        REQUEST_V2_HEADER_LEN_BYTES
    } else {
        REQUEST_HEADER_LEN_BYTES
    };
    let at = header + i * ORDER_LEN_BYTES;
    &frame[at..at + ORDER_LEN_BYTES]
}

/// The order id of raw order bytes, readable even when the rest does not decode.
pub fn raw_order_id(order: &[u8]) -> u64 {
    u64_at(order, 0)
}

/// A decoded reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyHeader {
    /// `ok`, or why the request failed.
    pub status: Status,
    /// The request's batch id.
    pub batch_id: u64,
    /// Verdicts that follow.
    pub count: u32,
    /// Bytes of error text after the verdicts.
    pub text_len: u32,
}

/// Writes a reply header into `out[..REPLY_HEADER_LEN_BYTES]`.
pub fn encode_reply_header(h: &ReplyHeader, out: &mut [u8]) {
    let out = &mut out[..REPLY_HEADER_LEN_BYTES];
    out[RP_MAGIC_OFFSET..RP_VERSION_OFFSET].copy_from_slice(&REPLY_MAGIC);
    out[RP_VERSION_OFFSET..RP_STATUS_OFFSET].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out[RP_STATUS_OFFSET..RP_BATCH_ID_OFFSET].copy_from_slice(&(h.status as u16).to_le_bytes());
    out[RP_BATCH_ID_OFFSET..RP_COUNT_OFFSET].copy_from_slice(&h.batch_id.to_le_bytes());
    out[RP_COUNT_OFFSET..RP_TEXT_LEN_OFFSET].copy_from_slice(&h.count.to_le_bytes());
    out[RP_TEXT_LEN_OFFSET..REPLY_HEADER_LEN_BYTES].copy_from_slice(&h.text_len.to_le_bytes());
}

/// Writes verdict `i` of a reply (after the header).
pub fn encode_verdict(i: usize, order_id: u64, reason: Reason, out: &mut [u8]) {
    let at = REPLY_HEADER_LEN_BYTES + i * VERDICT_LEN_BYTES;
    let v = &mut out[at..at + VERDICT_LEN_BYTES];
    v[V_ORDER_ID_OFFSET..V_REASON_OFFSET].copy_from_slice(&order_id.to_le_bytes());
    v[V_REASON_OFFSET..V_RESERVED_OFFSET].copy_from_slice(&reason.code().to_le_bytes());
    v[V_RESERVED_OFFSET..VERDICT_LEN_BYTES].fill(0);
}

/// Replaces `out` with an error reply (no verdicts, `text` truncated to
/// [`crate::limits::ERROR_TEXT_LEN_BYTES_MAX`] at a char boundary). Does not allocate when
/// `out` has room for a header and the longest text.
pub fn encode_error_reply(batch_id: u64, status: Status, text: &str, out: &mut Vec<u8>) {
    let mut end = text.len().min(crate::limits::ERROR_TEXT_LEN_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text.as_bytes()[..end];
    out.clear();
    out.resize(REPLY_HEADER_LEN_BYTES, 0);
    encode_reply_header(
        &ReplyHeader {
            status,
            batch_id,
            count: 0,
            text_len: text.len() as u32,
        },
        out,
    );
    out.extend_from_slice(text);
}

/// Validates a reply frame's header and its length; returns the header. A non-`ok` status is
/// returned as is (its text is [`reply_text`]).
pub fn decode_reply_header(frame: &[u8]) -> Result<ReplyHeader, ProtocolError> {
    if frame.len() < REPLY_HEADER_LEN_BYTES {
        return Err(ProtocolError::Short {
            expected: REPLY_HEADER_LEN_BYTES,
            got: frame.len(),
        });
    }
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&frame[RP_MAGIC_OFFSET..RP_VERSION_OFFSET]);
    if magic != REPLY_MAGIC {
        return Err(ProtocolError::Magic(magic));
    }
    let version = u16_at(frame, RP_VERSION_OFFSET);
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(version));
    }
    let code = u16_at(frame, RP_STATUS_OFFSET);
    let status = Status::from_u16(code).ok_or(ProtocolError::Status(code))?;
    let h = ReplyHeader {
        status,
        batch_id: u64_at(frame, RP_BATCH_ID_OFFSET),
        count: u32_at(frame, RP_COUNT_OFFSET),
        text_len: u32_at(frame, RP_TEXT_LEN_OFFSET),
    };
    let expected = (reply_len_bytes(h.count as usize)).saturating_add(h.text_len as usize);
    if frame.len() != expected {
        return Err(ProtocolError::Length {
            expected,
            got: frame.len(),
        });
    }
    Ok(h)
}

/// Verdict `i` of a reply whose header validated.
pub fn decode_verdict(frame: &[u8], i: usize) -> Result<(u64, Reason), ProtocolError> {
    let at = REPLY_HEADER_LEN_BYTES + i * VERDICT_LEN_BYTES;
    let v = &frame[at..at + VERDICT_LEN_BYTES];
    if v[V_RESERVED_OFFSET..].iter().any(|&b| b != 0) {
        return Err(ProtocolError::Reserved);
    }
    let code = u16_at(v, V_REASON_OFFSET);
    let reason = Reason::from_u16(code).ok_or(ProtocolError::Reason(code))?;
    Ok((u64_at(v, V_ORDER_ID_OFFSET), reason))
}

/// Writes void result `i` of a reply (after the header).
pub fn encode_void_result(i: usize, batch_id: u64, outcome: VoidOutcome, out: &mut [u8]) {
    let at = REPLY_HEADER_LEN_BYTES + i * VERDICT_LEN_BYTES;
    let v = &mut out[at..at + VERDICT_LEN_BYTES];
    v[V_ORDER_ID_OFFSET..V_REASON_OFFSET].copy_from_slice(&batch_id.to_le_bytes());
    v[V_REASON_OFFSET..V_RESERVED_OFFSET].copy_from_slice(&(outcome as u16).to_le_bytes());
    v[V_RESERVED_OFFSET..VERDICT_LEN_BYTES].fill(0);
}

/// Void result `i` of a reply whose header validated.
pub fn decode_void_result(frame: &[u8], i: usize) -> Result<(u64, VoidOutcome), ProtocolError> {
    let at = REPLY_HEADER_LEN_BYTES + i * VERDICT_LEN_BYTES;
    let v = &frame[at..at + VERDICT_LEN_BYTES];
    if v[V_RESERVED_OFFSET..].iter().any(|&b| b != 0) {
        return Err(ProtocolError::Reserved);
    }
    let code = u16_at(v, V_REASON_OFFSET);
    let outcome = VoidOutcome::from_u16(code).ok_or(ProtocolError::Outcome(code))?;
    Ok((u64_at(v, V_ORDER_ID_OFFSET), outcome))
}

/// The error text of a reply whose header validated (lossy UTF-8).
pub fn reply_text(frame: &[u8], h: &ReplyHeader) -> String {
    let at = reply_len_bytes(h.count as usize);
    String::from_utf8_lossy(&frame[at..at + h.text_len as usize]).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use orders::{OrderKind, Side, Symbol};
    use proptest::prelude::*;

    fn order(i: u64) -> Order {
        Order {
            order_id: i,
            ts_ns: i * 7,
            price: 1_852_500 + i as i64,
            qty: 100 + i,
            account: (i % 16) as u32 + 1,
            symbol: Symbol::new("AAPL").unwrap(),
            side: if i % 2 == 0 { Side::Buy } else { Side::Sell },
            kind: OrderKind::New,
        }
    }

    #[test]
    fn request_round_trip() {
        let orders: Vec<Order> = (1..=5).map(order).collect();
        let mut buf = vec![0u8; request_len_bytes(5)];
        let n = encode_request(42, 99, &orders, &mut buf);
        assert_eq!(n, 32 + 5 * 48);
        assert_eq!(&buf[..4], b"RSKQ");
        let h = decode_request_header(&buf, 8).unwrap();
        assert_eq!(
            h,
            RequestHeader {
                batch_id: 42,
                now_ns: 99,
                count: 5,
                kind: REQUEST_TYPE_CHECK,
                session_id: 0,
            }
        );
        for (i, o) in orders.iter().enumerate() {
            assert_eq!(orders::decode_order(request_order(&buf, i)).unwrap(), *o);
            assert_eq!(raw_order_id(request_order(&buf, i)), o.order_id);
        }
        assert_eq!(peek_batch_id(&buf), 42);
    }

    #[test]
    fn v2_request_and_void_round_trip() {
        let orders: Vec<Order> = (1..=3).map(order).collect();
        let mut buf = vec![0u8; request_v2_len_bytes(3)];
        let n = encode_request_v2(0xABCD, 42, 99, &orders, &mut buf);
        assert_eq!(n, 40 + 3 * 48);
        let h = decode_request_header(&buf, 8).unwrap();
        assert_eq!((h.batch_id, h.now_ns, h.count), (42, 99, 3));
        assert_eq!(
            (h.kind, h.session_id, h.header_len_bytes()),
            (1, 0xABCD, 40)
        );
        for (i, o) in orders.iter().enumerate() {
            assert_eq!(orders::decode_order(request_order(&buf, i)).unwrap(), *o);
        }
        assert_eq!(peek_batch_id(&buf), 42);
        // Session 0 is refused in version 2; a v1-sized frame with ver = 2 is short/long.
        let mut b = buf.clone();
        b[32..40].fill(0);
        assert_eq!(decode_request_header(&b, 8), Err(ProtocolError::Session));
        assert!(matches!(
            decode_request_header(&buf[..request_len_bytes(3)], 8),
            Err(ProtocolError::Length { .. })
        ));

        let mut v = vec![0u8; void_request_len_bytes(2)];
        assert_eq!(encode_void_request(7, 5, &[11, 12], &mut v), 56);
        let h = decode_request_header(&v, 1).unwrap();
        assert_eq!(
            (h.kind, h.session_id, h.count, h.batch_id),
            (REQUEST_TYPE_VOID, 7, 2, 5)
        );
        assert_eq!((void_batch_id(&v, 0), void_batch_id(&v, 1)), (11, 12));
        let mut none = vec![0u8; void_request_len_bytes(0)];
        encode_void_request(7, 5, &[], &mut none);
        assert!(matches!(
            decode_request_header(&none, 1),
            Err(ProtocolError::VoidCount { count: 0, .. })
        ));
        // A void in a version-1 header is an unknown type.
        let mut v1 = v.clone();
        v1[4] = 1;
        assert_eq!(decode_request_header(&v1, 8), Err(ProtocolError::Type(2)));

        let mut out = vec![0u8; reply_len_bytes(1)];
        encode_void_result(0, 11, VoidOutcome::TooOld, &mut out);
        assert_eq!(
            decode_void_result(&out, 0).unwrap(),
            (11, VoidOutcome::TooOld)
        );
        out[REPLY_HEADER_LEN_BYTES + 8] = 9;
        assert_eq!(decode_void_result(&out, 0), Err(ProtocolError::Outcome(9)));
    }

    #[test]
    fn names_requests_round_trip_and_refuse_bad_entries() {
        use orders::NAMED_ACCOUNT_BASE as B;
        let mut req = Vec::new();
        encode_names_request(9, 77, &[(B, "ACC11"), (B + 1, "desk-7")], &mut req);
        assert_eq!(req.len(), names_request_len_bytes(2));
        assert_eq!(req.len(), 40 + 2 * 40);
        let h = decode_request_header(&req, 16).unwrap();
        assert_eq!(
            (h.kind, h.batch_id, h.count, h.session_id),
            (REQUEST_TYPE_NAMES, 77, 2, 9)
        );
        assert_eq!(names_request_entry(&req, 0).unwrap(), (B, "ACC11"));
        assert_eq!(names_request_entry(&req, 1).unwrap(), (B + 1, "desk-7"));
        // Entry layout: id u32 | name_len u16 | 0 u16 | name [32] NUL-padded.
        assert_eq!(&req[40..48], &[0, 0, 0, 0x80, 5, 0, 0, 0]);
        assert_eq!(&req[48..53], b"ACC11");
        // More names than the server's batch bound: refused.
        assert!(matches!(
            decode_request_header(&req, 1),
            Err(ProtocolError::NamesCount { count: 2, max: 1 })
        ));
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut r = req.clone();
            edit(&mut r);
            names_request_entry(&r, 0).unwrap_err().to_string()
        };
        assert!(bad(&|r| r[46] = 1).contains("reserved"));
        assert!(bad(&|r| r[43] = 0).contains("below"));
        assert!(bad(&|r| r[60] = b'x').contains("padding"));
        assert!(bad(&|r| r[44] = 0).contains("length"));
        assert!(bad(&|r| r[48] = b' ').contains("account name"));
        // Version 1 has no names request.
        let mut v1 = req.clone();
        v1[4] = 1;
        assert!(decode_request_header(&v1, 16).is_err());
    }

    #[test]
    fn hello_round_trip() {
        let point = JournalPoint {
            prev_session: 0xFEED,
            journaled_batch: 41,
            journaled_orders: 3,
        };
        let mut buf = [0u8; HELLO_REQUEST_LEN_BYTES];
        assert_eq!(encode_hello_request(0xABCD, 7, point, &mut buf), 64);
        let h = decode_request_header(&buf, 1).unwrap();
        assert_eq!(
            (h.kind, h.session_id, h.batch_id, h.count),
            (REQUEST_TYPE_HELLO, 0xABCD, 7, 1)
        );
        assert_eq!(hello_journal_point(&buf), point);
        let mut b = buf;
        b[24] = 2;
        assert_eq!(
            decode_request_header(&b, 8),
            Err(ProtocolError::HelloCount(2))
        );
        assert!(matches!(
            decode_request_header(&buf[..56], 8),
            Err(ProtocolError::Length { .. })
        ));
        let mut b = buf;
        b[62] = 1;
        assert_eq!(decode_request_header(&b, 8), Err(ProtocolError::Reserved));
        let mut v1 = buf;
        v1[4] = 1;
        assert_eq!(decode_request_header(&v1, 8), Err(ProtocolError::Type(3)));

        let r = HelloResult {
            voided: 3,
            outcome: VoidOutcome::TooOld,
            max_batch: 16,
        };
        let mut out = vec![0u8; reply_len_bytes(1)];
        encode_hello_result(&r, &mut out);
        assert_eq!(decode_hello_result(&out).unwrap(), r);
        out[REPLY_HEADER_LEN_BYTES + 10] = 1;
        assert_eq!(decode_hello_result(&out), Err(ProtocolError::Reserved));
        assert!(decode_hello_result(&out[..30]).is_err());
    }

    #[test]
    fn request_errors_are_specific() {
        let orders: Vec<Order> = (1..=3).map(order).collect();
        let mut buf = vec![0u8; request_len_bytes(3)];
        encode_request(1, 0, &orders, &mut buf);
        assert_eq!(
            decode_request_header(&buf, 2).unwrap_err(),
            ProtocolError::TooLarge { count: 3, max: 2 }
        );
        assert_eq!(
            decode_request_header(&buf, 2).unwrap_err().status(),
            Status::TooLarge
        );
        assert!(matches!(
            decode_request_header(&buf[..100], 8),
            Err(ProtocolError::Length {
                expected: 176,
                got: 100
            })
        ));
        assert!(matches!(
            decode_request_header(&buf[..10], 8),
            Err(ProtocolError::Short { .. })
        ));
        let mut b = buf.clone();
        b[4] = 9;
        assert_eq!(decode_request_header(&b, 8), Err(ProtocolError::Version(9)));
        let mut b = buf.clone();
        b[6] = 2;
        assert_eq!(decode_request_header(&b, 8), Err(ProtocolError::Type(2)));
        let mut b = buf.clone();
        b[6] = 7;
        assert_eq!(decode_request_header(&b, 8), Err(ProtocolError::Type(7)));
        let mut b = buf.clone();
        b[30] = 1;
        assert_eq!(decode_request_header(&b, 8), Err(ProtocolError::Reserved));
        let mut b = buf;
        b[0] = b'X';
        assert!(matches!(
            decode_request_header(&b, 8),
            Err(ProtocolError::Magic(_))
        ));
    }

    #[test]
    fn reply_round_trip_and_error_reply() {
        let mut out = vec![0u8; reply_len_bytes(2)];
        encode_reply_header(
            &ReplyHeader {
                status: Status::Ok,
                batch_id: 7,
                count: 2,
                text_len: 0,
            },
            &mut out,
        );
        encode_verdict(0, 11, Reason::Accepted, &mut out);
        encode_verdict(1, 12, Reason::PriceCollar, &mut out);
        let h = decode_reply_header(&out).unwrap();
        assert_eq!((h.status, h.batch_id, h.count), (Status::Ok, 7, 2));
        assert_eq!(decode_verdict(&out, 0).unwrap(), (11, Reason::Accepted));
        assert_eq!(decode_verdict(&out, 1).unwrap(), (12, Reason::PriceCollar));

        let mut e = Vec::with_capacity(512);
        let long = "é".repeat(300);
        encode_error_reply(9, Status::Malformed, &long, &mut e);
        let h = decode_reply_header(&e).unwrap();
        assert_eq!((h.status, h.batch_id, h.count), (Status::Malformed, 9, 0));
        let text = reply_text(&e, &h);
        assert!(text.len() <= crate::limits::ERROR_TEXT_LEN_BYTES_MAX && text.starts_with("éé"));
        // A verdict with an unknown reason is refused.
        let mut bad = out.clone();
        bad[REPLY_HEADER_LEN_BYTES + 8] = 200;
        assert_eq!(decode_verdict(&bad, 0), Err(ProtocolError::Reason(200)));
        assert!(matches!(
            decode_reply_header(&out[..30]),
            Err(ProtocolError::Length { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_frames_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), magic in any::<bool>()) {
            let mut bytes = bytes;
            if magic && bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&REQUEST_MAGIC);
            }
            if let Ok(h) = decode_request_header(&bytes, 16) {
                for i in 0..h.count as usize {
                    let _ = orders::decode_order(request_order(&bytes, i));
                }
            }
            if let Ok(h) = decode_reply_header(&bytes) {
                for i in 0..h.count as usize {
                    let _ = decode_verdict(&bytes, i);
                }
                let _ = reply_text(&bytes, &h);
            }
            let _ = peek_batch_id(&bytes);
        }
    }
}
