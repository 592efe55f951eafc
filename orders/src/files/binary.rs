//! The compact binary order file: a 24-byte header, then fixed-size little-endian records in the
//! [`crate::codec`] layout. [`crate::files::OrderFile::open`] reads the whole file into memory
//! (no memory map: a file truncated by another process while mapped would kill us with
//! SIGBUS; `docs/formats/orders.md` has the load times of both).
//!
//! ```text
//! Binary order file, all integers little-endian
//!  0                               8       10      12              16                              24
//!  +-------------------------------+-------+-------+---------------+-------------------------------+
//!  | magic "ORDRBIN\0" (8 bytes)   |version|record |reserved u32   | count u64                     |
//!  | 4f 52 44 52 42 49 4e 00       |u16 = 1|len u16|= 0            | (number of records)           |
//!  |                               |       |= 48   |               |                               |
//!  +-------------------------------+-------+-------+---------------+-------------------------------+
//!  24: record 0 (ORDER_LEN_BYTES = 48, orders::codec layout)
//!  72: record 1
//!  ...
//!  file length = 24 + count × 48 exactly (no trailing bytes)
//! ```
//!
//! Everything is checked at open ([`check_header`], then every record is decoded), so a file
//! that loads holds only valid orders. A resume reads only the records from its resume point
//! ([`read_records`] after a seek, through [`crate::files::OrderFile::open_deferred`]): those
//! before it are not read, so not validated.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::error::{FileError, FileErrorKind, Location};
use crate::codec::{decode_order, encode_order, DecodeError, ORDER_LEN_BYTES};
use crate::model::Order;

/// Magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"ORDRBIN\0";
/// The only version written and read.
pub const VERSION: u16 = 1;
/// Size of the file header.
pub const HEADER_LEN_BYTES: usize = 24;
/// Records read (and decoded) per read call by [`read_records`]: 48 KiB, cache-sized.
const READ_CHUNK_RECORDS: usize = 1024;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 8;
const RECORD_LEN_OFFSET: usize = 10;
const RESERVED_OFFSET: usize = 12;
const COUNT_OFFSET: usize = 16;
const _: () = assert!(MAGIC_OFFSET + MAGIC.len() == VERSION_OFFSET);
const _: () = assert!(VERSION_OFFSET + 2 == RECORD_LEN_OFFSET);
const _: () = assert!(RECORD_LEN_OFFSET + 2 == RESERVED_OFFSET);
const _: () = assert!(RESERVED_OFFSET + 4 == COUNT_OFFSET);
const _: () = assert!(COUNT_OFFSET + 8 == HEADER_LEN_BYTES);
// Records stay 8-byte aligned in the file (the header is a multiple of 8, and so is a record).
const _: () = assert!(HEADER_LEN_BYTES % 8 == 0 && ORDER_LEN_BYTES % 8 == 0);
// The record length is stored in a u16.
const _: () = assert!(ORDER_LEN_BYTES <= u16::MAX as usize);

/// Byte offset of record `index`.
pub fn record_offset(index: u64) -> u64 {
    HEADER_LEN_BYTES as u64 + index * ORDER_LEN_BYTES as u64
}

/// Writes the header for `count` records into `out`.
pub fn encode_header(count: u64, out: &mut [u8; HEADER_LEN_BYTES]) {
    out[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
    out[VERSION_OFFSET..RECORD_LEN_OFFSET].copy_from_slice(&VERSION.to_le_bytes());
    out[RECORD_LEN_OFFSET..RESERVED_OFFSET]
        .copy_from_slice(&(ORDER_LEN_BYTES as u16).to_le_bytes());
    out[RESERVED_OFFSET..COUNT_OFFSET].fill(0);
    out[COUNT_OFFSET..HEADER_LEN_BYTES].copy_from_slice(&count.to_le_bytes());
}

/// Whether `bytes` start with the binary magic.
pub fn has_magic(bytes: &[u8]) -> bool {
    bytes.len() >= MAGIC.len() && bytes[..MAGIC.len()] == MAGIC
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

fn printable(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// Validates the header of a whole file and returns the record count: magic, version, record
/// length == 48, reserved == 0, and `count × 48 ==` the bytes after the header.
pub fn check_header(path: &Path, bytes: &[u8]) -> Result<u64, FileError> {
    let head = &bytes[..bytes.len().min(HEADER_LEN_BYTES)];
    check_header_of(path, head, bytes.len() as u64)
}

/// [`check_header`] from the first bytes of a file (`head`: all of them when the file is
/// shorter than the header) and the file's length.
pub fn check_header_of(path: &Path, head: &[u8], file_len: u64) -> Result<u64, FileError> {
    // A head shorter than the header of a file that is not: the file shrank while it was
    // read. Judge what was read.
    let file_len = if head.len() < HEADER_LEN_BYTES {
        head.len() as u64
    } else {
        file_len
    };
    let bytes = head;
    let err = |location, kind| FileError::new(path, location, kind);
    if bytes.len() >= MAGIC.len() && !has_magic(bytes) {
        return Err(err(
            Location::Offset(MAGIC_OFFSET as u64),
            FileErrorKind::BadMagic {
                expected: printable(&MAGIC),
                found: printable(&bytes[..MAGIC.len()]),
            },
        ));
    }
    if bytes.len() < HEADER_LEN_BYTES {
        return Err(err(
            Location::Offset(bytes.len() as u64),
            FileErrorKind::Truncated {
                what: format!("a {HEADER_LEN_BYTES}-byte header"),
                expected_bytes: HEADER_LEN_BYTES as u64,
                found_bytes: bytes.len() as u64,
            },
        ));
    }
    let version = u16_at(bytes, VERSION_OFFSET);
    if version != VERSION {
        return Err(err(
            Location::Offset(VERSION_OFFSET as u64),
            FileErrorKind::BadHeader {
                field: "version",
                expected: VERSION.to_string(),
                found: version.into(),
            },
        ));
    }
    let record_len = u16_at(bytes, RECORD_LEN_OFFSET);
    if record_len as usize != ORDER_LEN_BYTES {
        return Err(err(
            Location::Offset(RECORD_LEN_OFFSET as u64),
            FileErrorKind::BadHeader {
                field: "record length",
                expected: ORDER_LEN_BYTES.to_string(),
                found: record_len.into(),
            },
        ));
    }
    let reserved = u32_at(bytes, RESERVED_OFFSET);
    if reserved != 0 {
        return Err(err(
            Location::Offset(RESERVED_OFFSET as u64),
            FileErrorKind::BadHeader {
                field: "reserved",
                expected: "0".into(),
                found: reserved.into(),
            },
        ));
    }
    let count = u64_at(bytes, COUNT_OFFSET);
    let body = file_len - HEADER_LEN_BYTES as u64;
    let whole = body / ORDER_LEN_BYTES as u64;
    if count > whole {
        // The first record that is not complete in the file.
        let index = whole;
        return Err(err(
            Location::Record {
                index,
                offset: record_offset(index),
            },
            FileErrorKind::Truncated {
                what: format!(
                    "the {HEADER_LEN_BYTES}-byte header and {count} records of {ORDER_LEN_BYTES} bytes"
                ),
                expected_bytes: (count as u128 * ORDER_LEN_BYTES as u128
                    + HEADER_LEN_BYTES as u128)
                    .min(u64::MAX as u128) as u64,
                found_bytes: file_len,
            },
        ));
    }
    let expected_body = count * ORDER_LEN_BYTES as u64;
    if body != expected_body {
        return Err(err(
            Location::Offset(record_offset(count)),
            FileErrorKind::TrailingBytes {
                count,
                extra_bytes: body - expected_body,
            },
        ));
    }
    Ok(count)
}

/// Reads and decodes records `first..count` of a binary order file whose header was checked
/// ([`check_header_of`]: `count` records, `file_len` bytes), from `r` positioned at record
/// `first`. Records before `first` are neither read nor validated. A bad record is an error
/// naming its index and byte offset; a file that shrinks or grows while it is read is refused
/// as truncated, or as having bytes after the last record.
pub fn read_records(
    path: &Path,
    r: &mut impl Read,
    first: u64,
    count: u64,
    file_len: u64,
) -> Result<Vec<Order>, FileError> {
    let first = first.min(count);
    let mut out = Vec::new();
    usize::try_from(count - first)
        .ok()
        .and_then(|n| out.try_reserve_exact(n).ok())
        .ok_or_else(|| {
            FileError::new(
                path,
                Location::File,
                FileErrorKind::TooLarge { bytes: file_len },
            )
        })?;
    let io = |source| {
        FileError::new(
            path,
            Location::File,
            FileErrorKind::Io {
                action: "cannot read",
                source,
            },
        )
    };
    let mut buf = vec![0u8; READ_CHUNK_RECORDS * ORDER_LEN_BYTES];
    let mut index: u64 = first;
    while index < count {
        let n = (count - index).min(READ_CHUNK_RECORDS as u64) as usize;
        let want = &mut buf[..n * ORDER_LEN_BYTES];
        let got = read_up_to(r, want).map_err(io)?;
        for record in want[..got].chunks_exact(ORDER_LEN_BYTES) {
            out.push(decode_order(record).map_err(|e| record_error(path, index, e))?);
            index += 1;
        }
        if got < want.len() {
            // The file is shorter now than when its length was read.
            return Err(FileError::new(
                path,
                Location::Record {
                    index,
                    offset: record_offset(index),
                },
                FileErrorKind::Truncated {
                    what: format!(
                        "the {HEADER_LEN_BYTES}-byte header and {count} records of {ORDER_LEN_BYTES} bytes (the file shrank while it was read)"
                    ),
                    expected_bytes: record_offset(count),
                    found_bytes: record_offset(index) + (got % ORDER_LEN_BYTES) as u64,
                },
            ));
        }
    }
    // The file is longer now than when its length was read.
    let extra = io::copy(r, &mut io::sink()).map_err(io)?;
    if extra > 0 {
        return Err(FileError::new(
            path,
            Location::Offset(record_offset(count)),
            FileErrorKind::TrailingBytes {
                count,
                extra_bytes: extra,
            },
        ));
    }
    Ok(out)
}

/// Reads until `buf` is full or the end of the input; returns the bytes read.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Decodes every record of a file whose header was checked, naming the first bad one.
pub fn decode_records(path: &Path, bytes: &[u8], count: u64) -> Result<Vec<Order>, FileError> {
    // `check_header` matched `count` with the length of `bytes`: the capacity is what is there.
    let mut out = Vec::with_capacity(count as usize);
    let body = &bytes[HEADER_LEN_BYTES..HEADER_LEN_BYTES + count as usize * ORDER_LEN_BYTES];
    for (index, record) in body.chunks_exact(ORDER_LEN_BYTES).enumerate() {
        out.push(decode_order(record).map_err(|e| record_error(path, index as u64, e))?);
    }
    Ok(out)
}

/// The error for a record that does not decode.
pub fn record_error(path: &Path, index: u64, e: DecodeError) -> FileError {
    FileError::new(
        path,
        Location::Record {
            index,
            offset: record_offset(index),
        },
        FileErrorKind::Record(e),
    )
}

/// Streams `orders` as a binary order file into `w`: a header with a placeholder count, the
/// records, then the real count patched in. Returns the number of records.
pub fn write_to<W: Write + Seek>(
    w: &mut W,
    orders: impl IntoIterator<Item = Order>,
) -> io::Result<u64> {
    let mut header = [0u8; HEADER_LEN_BYTES];
    encode_header(0, &mut header);
    w.write_all(&header)?;
    let mut count: u64 = 0;
    let mut rec = [0u8; ORDER_LEN_BYTES];
    for order in orders {
        encode_order(&order, &mut rec);
        w.write_all(&rec)?;
        count += 1;
    }
    w.seek(SeekFrom::Start(COUNT_OFFSET as u64))?;
    w.write_all(&count.to_le_bytes())?;
    w.seek(SeekFrom::End(0))?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::model::Symbol;
    use std::io::Cursor;

    fn sample(n: u64) -> Vec<u8> {
        let orders = (0..n).map(|i| Order {
            order_id: i + 1,
            qty: 10,
            price: 1_000_000,
            account: 3,
            symbol: Symbol::new("AAPL").unwrap(),
            ..Order::default()
        });
        let mut cur = Cursor::new(Vec::new());
        assert_eq!(write_to(&mut cur, orders).unwrap(), n);
        cur.into_inner()
    }

    #[test]
    fn header_is_byte_exact() {
        let b = sample(2);
        assert_eq!(b.len(), 24 + 2 * 48);
        assert_eq!(&b[0..8], b"ORDRBIN\0");
        assert_eq!(&b[8..10], &[1, 0]);
        assert_eq!(&b[10..12], &[48, 0]);
        assert_eq!(&b[12..16], &[0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(check_header(Path::new("x"), &b).unwrap(), 2);
        assert_eq!(
            decode_records(Path::new("x"), &b, 2).unwrap()[1].order_id,
            2
        );
    }

    #[test]
    fn every_header_field_is_checked() {
        let p = Path::new("f.bin");
        let good = sample(1);
        let msg = |b: &[u8]| check_header(p, b).unwrap_err().to_string();

        let mut b = good.clone();
        b[0] = b'X';
        let m = msg(&b);
        assert!(m.contains("byte offset 0") && m.contains("magic"), "{m}");

        let mut b = good.clone();
        b[8] = 2;
        let m = msg(&b);
        assert!(m.contains("byte offset 8") && m.contains("version"), "{m}");

        let mut b = good.clone();
        b[10] = 40;
        let m = msg(&b);
        assert!(
            m.contains("byte offset 10") && m.contains("record length"),
            "{m}"
        );

        let mut b = good.clone();
        b[13] = 1;
        let m = msg(&b);
        assert!(
            m.contains("byte offset 12") && m.contains("reserved"),
            "{m}"
        );

        let m = msg(&good[..20]);
        assert!(
            m.contains("truncated") && m.contains("24-byte header"),
            "{m}"
        );

        let m = msg(&good[..good.len() - 1]);
        assert!(
            m.contains("record 0 (byte offset 24)") && m.contains("truncated"),
            "{m}"
        );

        let mut b = good.clone();
        b.extend_from_slice(&[0; 5]);
        let m = msg(&b);
        assert!(
            m.contains("byte offset 72") && m.contains("5 unexpected bytes"),
            "{m}"
        );

        // A count so large that count × 48 overflows is a truncation, not a panic.
        let mut b = good.clone();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(msg(&b).contains("truncated"));
    }

    /// `read_records` against a file whose length changes between its metadata and its reading.
    #[test]
    fn read_records_refuses_a_file_that_shrinks_or_grows_while_read() {
        let p = Path::new("f.bin");
        let b = sample(3000); // 3 read chunks
        let len = b.len() as u64;
        let read = |bytes: &[u8], claimed: u64| {
            let mut r = Cursor::new(bytes[HEADER_LEN_BYTES.min(bytes.len())..].to_vec());
            let count = check_header_of(p, &bytes[..HEADER_LEN_BYTES.min(bytes.len())], claimed)?;
            read_records(p, &mut r, 0, count, claimed)
        };
        assert_eq!(read(&b, len).unwrap().len(), 3000);
        // Shrank after the length was read: mid-record in the second chunk.
        let e = read(&b[..24 + 48 * 1500 + 7], len).unwrap_err().to_string();
        assert!(
            e.contains("record 1500 (byte offset 72024)")
                && e.contains("shrank")
                && e.contains("found 72031"),
            "{e}"
        );
        // Shrank below the header.
        let e = read(&b[..10], len).unwrap_err().to_string();
        assert!(
            e.contains("truncated") && e.contains("24-byte header"),
            "{e}"
        );
        // Grew.
        let mut longer = b.clone();
        longer.extend_from_slice(&[0; 5]);
        let e = read(&longer, len).unwrap_err().to_string();
        assert!(e.contains("5 unexpected bytes"), "{e}");
    }

    #[test]
    fn bad_record_is_named_with_index_and_offset() {
        let mut b = sample(3);
        b[24 + 2 * 48 + 44] = 9; // side of record 2
        let e = decode_records(Path::new("f.bin"), &b, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.bin: record 2 (byte offset 120): bad side value 9"
        );
    }
}
