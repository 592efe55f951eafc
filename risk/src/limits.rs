//! Every compile-time limit of the risk crate, in one place, units last.
//!
//! Run-time limits (order sizes, collars, position limits, capacities) come from the limits
//! file (see [`crate::config`]); the constants here bound what that file and the wire protocol
//! may ask for, and give the defaults of the server and the client.

/// Most orders one binary batch request may carry unless the server is started with a smaller
/// `--max-batch`. 1024 orders × 48 bytes = 48 KiB per request: large enough to amortise a
/// loopback round trip (~30–60 µs) to a few tens of nanoseconds per order, small enough that
/// one batch never holds the REQ socket for long.
pub const MAX_BATCH_ORDERS_DEFAULT: usize = 1024;
/// Hard upper bound on `max_batch_orders` (server and client). Bounds the request buffer at
/// `REQUEST_HEADER_LEN_BYTES + 65_536 × 48` ≈ 3 MiB.
pub const MAX_BATCH_ORDERS_MAX: usize = 65_536;
const _: () = assert!(MAX_BATCH_ORDERS_DEFAULT <= MAX_BATCH_ORDERS_MAX);

/// Batch records of the undo log: the newest batches whose effects the server can undo, for a
/// `void` (batches a client gave up on: the newest ones matter, a few more cover a void that
/// itself timed out) and for the reconciliation of a `hello` after the client's restart: the
/// batches it had sent but not journaled when it died (its journal ring and the batch in
/// flight; small batches at moderate rates, fewer full ones at the highest rates). Each record
/// is 32 bytes; the op ring ([`UNDO_RING_BATCHES`]) bounds how many orders they may hold.
pub const UNDO_BATCHES_MAX: usize = 64;
/// The undo log's op ring holds `UNDO_OPS_PER_ORDER × max_batch × UNDO_RING_BATCHES` ops:
/// 16 full batches, so the default engine (a journal ring of 8,192 orders and batches of 1,024
/// orders, one more in flight) can be reconciled after a `kill -9` at full speed. ~6 MiB at
/// `max_batch` 1024 (≤ 48 bytes per op), touched only as it fills.
pub const UNDO_RING_BATCHES: usize = 16;
const _: () = assert!(UNDO_RING_BATCHES <= UNDO_BATCHES_MAX);
/// Undo-log ops reserved per order of a batch: a new order records up to ~10 (its account,
/// symbol and position when new, the throttle, open exposure, the reference when first set,
/// the horizon ring push and the slot, the id it evicts from the horizon and that slot), a
/// cancel 2, a fill 4. A batch whose ops exceed its share borrows from older records; one that
/// does not fit the whole log (a time horizon expiring thousands of ids at once) cannot be
/// voided.
pub const UNDO_OPS_PER_ORDER: usize = 8;
/// Most batch ids one `void` request may name (and a client remembers per endpoint).
pub const VOID_BATCH_IDS_MAX: usize = 16;
/// Client sessions whose highest applied batch id the server remembers (to answer `too-old`
/// rather than `unknown` for a batch it applied but can no longer undo), with the newest of
/// their batches it can no longer undo and the session they continue (`hello`).
pub const SESSIONS_TRACKED_MAX: usize = 64;
/// Sessions ended by a reconciliation (`hello`) whose batches the server refuses should one
/// still arrive (a request of the dead client queued in the network).
pub const RETIRED_SESSIONS_MAX: usize = 64;
/// Batches voided before they arrived that the server refuses should they arrive late.
pub const VOID_TOMBSTONES_MAX: usize = 256;
const _: () = assert!(VOID_TOMBSTONES_MAX >= VOID_BATCH_IDS_MAX);

/// The client's default time budget for one batch round trip (the source design's 100 ms).
pub const RISK_TIMEOUT_MS_DEFAULT: u64 = 100;

/// How long the server waits in `zmq_poll` before it looks at its stop / reload flags again.
/// Bounds the time SIGINT / SIGTERM / SIGHUP take to act.
pub const SERVER_POLL_INTERVAL_MS: u64 = 50;

/// Send timeout of the server's REP socket: a reply that cannot be queued within this time
/// (the requester vanished and its pipe is full) is dropped and counted.
pub const SERVER_SEND_TIMEOUT_MS: i32 = 1_000;

/// Hard cap on any frame libzmq will accept on a tcp/ipc server socket (`ZMQ_MAXMSGSIZE`).
/// Frames between the protocol's limit (`request_len_bytes_max`) and this cap get an error
/// reply; frames above it make libzmq drop the connection, so the sender sees a timeout.
pub const SERVER_FRAME_LEN_BYTES_HARD_MAX: i64 = 64 * 1024 * 1024;

/// Longest error text placed in an error reply (bytes of UTF-8, truncated at a char boundary).
pub const ERROR_TEXT_LEN_BYTES_MAX: usize = 256;

/// Longest JSON request accepted (the source design's single-order JSON, or an admin request).
pub const JSON_REQUEST_LEN_BYTES_MAX: usize = 4096;

/// Reply buffer pre-allocated for JSON / text replies (an admin snapshot may grow past it;
/// that is a cold path).
pub const TEXT_REPLY_LEN_BYTES_INITIAL: usize = 4096;

// Capacities the limits file may ask for (each config value must be in 1..=MAX).
/// Most accounts the checker will hold.
pub const ACCOUNTS_MAX: u64 = 1 << 20;
/// Most symbols the checker will hold.
pub const SYMBOLS_MAX: u64 = 1 << 20;
/// Most (account, symbol) positions the checker pre-sizes for.
pub const POSITIONS_MAX: u64 = 1 << 24;
/// Most open orders the checker pre-sizes for.
pub const OPEN_ORDERS_MAX: u64 = 1 << 26;
/// Most order ids the duplicate detector remembers.
pub const DUPLICATE_HORIZON_ORDERS_MAX: u64 = 1 << 26;

/// Largest quantity any per-order limit may allow. Keeps every position sum
/// (`position + open buys + qty`) far inside `i64` (2^40 × 2^10 < 2^63).
pub const ORDER_QTY_LIMIT_MAX: u64 = 1 << 40;
const _: () = assert!((ORDER_QTY_LIMIT_MAX as i128) * 1024 < i64::MAX as i128);

/// Largest position limit (long or short) in shares.
pub const POSITION_QTY_LIMIT_MAX: u64 = 1 << 50;
const _: () =
    assert!(POSITION_QTY_LIMIT_MAX as i128 + ORDER_QTY_LIMIT_MAX as i128 <= i64::MAX as i128);

/// Largest order rate a throttle may allow (one order per nanosecond).
pub const ORDERS_PER_S_MAX: u64 = 1_000_000_000;
/// Nanoseconds per second, for the token bucket.
pub const NS_PER_S: u64 = 1_000_000_000;
/// Nanoseconds per millisecond.
pub const NS_PER_MS: u64 = 1_000_000;
const _: () = assert!(ORDERS_PER_S_MAX <= NS_PER_S);

/// Basis points in one (100 %).
pub const BPS_PER_UNIT: i128 = 10_000;
/// Widest collar in basis points (1000 % of the reference).
pub const COLLAR_BPS_MAX: u32 = 100_000;

/// Below this size the order-id table stays in the L2 cache and `Checker::prefetch` skips its
/// warm-up pass (measured: the pass costs ~5 ns per order and saves nothing there). 1 MiB is
/// the L2 size of the build machine's cores (AMD EPYC); most current x86 cores have 1–2 MiB.
pub const PREFETCH_TABLE_BYTES_MIN: usize = 1 << 20;
/// A batch is checked in chunks of this many orders, each after its own warm-up pass: the
/// chunk's ~2 cache lines per order (and their pages' TLB entries) are still warm when its
/// checks read them. One pass over a whole batch of 1024 touches ~2,048 lines on as many
/// pages, more than the L2 TLB holds, so the checks missed again.
pub const PREFETCH_CHUNK_ORDERS: usize = 64;
const _: () = assert!(PREFETCH_CHUNK_ORDERS >= 1);

/// Largest money value (currency units) a limit may name: 10^15. In notional ticks
/// (× 10 000) that is 10^19, far inside `i128`.
pub const MONEY_UNITS_MAX: f64 = 1e15;

// Built-in values of the limits file's optional keys (each within its bound above).
/// `global.duplicate_horizon_orders` when absent.
pub const DUPLICATE_HORIZON_ORDERS_DEFAULT: u64 = 1 << 16;
/// `capacity.max_accounts` when absent.
pub const CAPACITY_ACCOUNTS_DEFAULT: u64 = 1024;
/// `capacity.max_symbols` when absent.
pub const CAPACITY_SYMBOLS_DEFAULT: u64 = 1024;
/// `capacity.max_positions` when absent.
pub const CAPACITY_POSITIONS_DEFAULT: u64 = 1 << 14;
/// `capacity.max_open_orders` when absent.
pub const CAPACITY_OPEN_ORDERS_DEFAULT: u64 = 1 << 16;
const _: () = assert!(DUPLICATE_HORIZON_ORDERS_DEFAULT <= DUPLICATE_HORIZON_ORDERS_MAX);
const _: () = assert!(CAPACITY_ACCOUNTS_DEFAULT <= ACCOUNTS_MAX);
const _: () = assert!(CAPACITY_SYMBOLS_DEFAULT <= SYMBOLS_MAX);
const _: () = assert!(CAPACITY_POSITIONS_DEFAULT <= POSITIONS_MAX);
const _: () = assert!(CAPACITY_OPEN_ORDERS_DEFAULT <= OPEN_ORDERS_MAX);
