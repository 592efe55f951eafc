//! Named limits and constants of the order-file loaders, in one place.

/// Accounts LOBSTER orders are spread over by default (`account = 1 + order_id % N`).
pub const LOBSTER_ACCOUNTS_DEFAULT: u32 = 16;

/// Nanoseconds per second (LOBSTER times are decimal seconds).
pub const NS_PER_SECOND: u64 = 1_000_000_000;

/// Decimal places of a LOBSTER time that are kept (nanoseconds); further digits are truncated.
pub const TIME_DECIMALS_KEPT: usize = 9;
const _: () = assert!(10u64.pow(TIME_DECIMALS_KEPT as u32) == NS_PER_SECOND);

/// Fields of a LOBSTER message row without the MPID column.
pub const LOBSTER_FIELDS_MIN: usize = 6;
/// Fields of a LOBSTER message row with the MPID column (newer exports).
pub const LOBSTER_FIELDS_MAX: usize = 7;
const _: () = assert!(LOBSTER_FIELDS_MAX == LOBSTER_FIELDS_MIN + 1);

/// First two bytes of a gzip stream (RFC 1952).
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Default bound on the inflated size of a gzipped order file (1 GiB): a gzip bomb (deflate
/// reaches ~1000:1) is refused once it passes this, instead of filling memory.
pub const GZIP_INFLATED_BYTES_MAX_DEFAULT: u64 = 1 << 30;

/// Skipped bad lines whose errors are kept to be shown (`--max-errors`); the count is exact.
pub const SKIPPED_LISTED_MAX: usize = 20;

/// Bytes of the first line quoted in an "unknown format" error.
pub const SNIPPET_BYTES_MAX: usize = 60;

/// Bytes of buffered output of the writers.
pub const WRITE_BUFFER_BYTES: usize = 1 << 16;

/// Characters of a bad field quoted in an error message (longer text is cut, with `...`).
pub const FIELD_SHOWN_CHARS_MAX: usize = 40;
