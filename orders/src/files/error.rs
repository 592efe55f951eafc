//! Errors of the order-file loaders and writers.
//!
//! Every error names the file, where in it the problem is (line and column for text files,
//! record index and byte offset for binary files) and what was expected, e.g.
//!
//! ```text
//! orders.csv: line 7, column 4 (side): expected B, S, BUY or SELL (any case), found "X"
//! orders.bin: record 12 (byte offset 600): bad side value 7
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use super::limits::FIELD_SHOWN_CHARS_MAX;
use crate::codec::DecodeError;
use crate::model::SymbolError;

/// A problem with an order file, with the file's path and the place in it.
#[derive(Debug, thiserror::Error)]
#[error("{}{location}: {kind}", path.display())]
pub struct FileError {
    path: PathBuf,
    location: Location,
    kind: FileErrorKind,
}

impl FileError {
    /// Builds an error.
    pub fn new(path: &Path, location: Location, kind: FileErrorKind) -> Self {
        FileError {
            path: path.to_path_buf(),
            location,
            kind,
        }
    }

    /// The file the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where in the file.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// What went wrong.
    pub fn kind(&self) -> &FileErrorKind {
        &self.kind
    }

    /// The same error with its kind replaced.
    pub(crate) fn map_kind(self, f: impl FnOnce(FileErrorKind) -> FileErrorKind) -> FileError {
        FileError {
            kind: f(self.kind),
            ..self
        }
    }

    /// The 1-based line, for errors in a text file.
    pub fn line(&self) -> Option<u64> {
        match self.location {
            Location::Line { line, .. } => Some(line),
            _ => None,
        }
    }
}

/// Where in a file an error is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Location {
    /// The file as a whole (I/O, empty file, unknown format, options).
    File,
    /// A line of a text file (1-based), and the column when one field is at fault.
    Line {
        /// 1-based line number.
        line: u64,
        /// The field at fault, if one is.
        column: Option<Column>,
    },
    /// A record of a binary file (0-based index) and the byte offset where it starts.
    Record {
        /// 0-based record index.
        index: u64,
        /// Byte offset of the record in the file.
        offset: u64,
    },
    /// A byte offset in a binary file (header fields).
    Offset(u64),
}

/// A column of a text file: 1-based position and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// 1-based position of the field in its line.
    pub index: usize,
    /// The column's name (from the CSV header, or the LOBSTER field name).
    pub name: &'static str,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File => Ok(()),
            Location::Line { line, column: None } => write!(f, ": line {line}"),
            Location::Line {
                line,
                column: Some(c),
            } => write!(f, ": line {line}, column {} ({})", c.index, c.name),
            Location::Record { index, offset } => {
                write!(f, ": record {index} (byte offset {offset})")
            }
            Location::Offset(offset) => write!(f, ": byte offset {offset}"),
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// Reading or writing failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done (`cannot open`, `cannot read`, ...).
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has no content.
    #[error("file is empty: expected a CSV header, a LOBSTER row or a binary order-file header")]
    Empty,
    /// The content is none of the known formats.
    #[error("unknown format: expected a CSV header naming order_id, a LOBSTER row of 6 or 7 numeric fields (or a `Time,Type,OrderId,...` header) or the binary magic \"ORDRBIN\\0\"; found {found:?}")]
    UnknownFormat {
        /// The start of the first line.
        found: String,
    },
    /// The gzip stream is damaged.
    #[error("gzip data is damaged: {0}")]
    Gzip(std::io::Error),
    /// The gzip stream inflates to more than [`crate::files::LoadOptions::max_inflated_bytes`]
    /// (a gzip bomb, or a file to decompress before loading).
    #[error("gzip data inflates to more than {max_bytes} bytes (the max_inflated_bytes bound): refused before it fills memory; if the file is genuine, decompress it first (a plain file is not bounded)")]
    GzipTooLarge {
        /// The bound.
        max_bytes: u64,
    },
    /// The file is larger than this process can hold in memory.
    #[error("file of {bytes} bytes does not fit in memory")]
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// A CSV header lacks required columns.
    #[error("missing required column(s) {missing}; the header has {found}")]
    MissingColumns {
        /// Comma-separated missing names.
        missing: String,
        /// The header as found.
        found: String,
    },
    /// A CSV header names a column twice.
    #[error("column {name:?} appears twice (columns {first} and {second})")]
    DuplicateColumn {
        /// The column.
        name: String,
        /// 1-based position of the first occurrence.
        first: usize,
        /// 1-based position of the second occurrence.
        second: usize,
    },
    /// A line has the wrong number of fields.
    #[error("expected {expected}, found {found}")]
    FieldCount {
        /// What the line should have (e.g. `6 or 7 fields`, `8 fields (as in the header)`).
        expected: String,
        /// What it has.
        found: usize,
    },
    /// A field does not hold what its column requires.
    #[error("expected {expected}, found {found:?}")]
    BadField {
        /// What the column requires.
        expected: &'static str,
        /// The text found (shortened to 40 characters).
        found: String,
    },
    /// A symbol could not be used.
    #[error("{0}")]
    Symbol(#[from] SymbolError),
    /// The LOBSTER symbol could not be derived from the file name.
    #[error("cannot take a symbol from the file name (expected TICKER_DATE_..., e.g. AAPL_2012-06-21_..._message_10.csv): {0}; pass the symbol explicitly (--symbol)")]
    SymbolFromName(String),
    /// The binary header's magic bytes are wrong.
    #[error("expected the magic bytes \"{expected}\", found \"{found}\"")]
    BadMagic {
        /// The magic of this format.
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// A binary header field holds an unsupported value.
    #[error("bad header field {field}: expected {expected}, found {found}")]
    BadHeader {
        /// Which field.
        field: &'static str,
        /// What is supported.
        expected: String,
        /// What the file holds.
        found: u64,
    },
    /// The binary file is shorter than its header says.
    #[error("file is truncated: expected {expected_bytes} bytes ({what}), found {found_bytes}")]
    Truncated {
        /// What should be there.
        what: String,
        /// Bytes needed.
        expected_bytes: u64,
        /// Bytes present.
        found_bytes: u64,
    },
    /// The binary file has bytes after its last record.
    #[error(
        "{extra_bytes} unexpected bytes after the last record (the header says {count} records)"
    )]
    TrailingBytes {
        /// Records announced by the header.
        count: u64,
        /// Bytes beyond them.
        extra_bytes: u64,
    },
    /// The CSV reader refused the text (e.g. a bad quote).
    #[error("{0}")]
    Csv(String),
    /// A binary record does not decode.
    #[error("{0}")]
    Record(#[from] DecodeError),
    /// More bad lines than `max_errors` allows; the location is the first line over the limit.
    #[error("{problem} (more than max_errors = {max_errors} bad lines)")]
    TooManyBadLines {
        /// The allowance.
        max_errors: u64,
        /// The problem with the line over the limit.
        problem: Box<FileErrorKind>,
    },
    /// An option cannot be used.
    #[error("bad option {option}: {problem}")]
    BadOption {
        /// Which option.
        option: &'static str,
        /// Why.
        problem: &'static str,
    },
    /// The output format cannot be written.
    #[error("cannot write the {0} format (only csv and binary are written)")]
    NotWritable(&'static str),
}

/// Shortens field text for an error message (at most 40 characters, on a char boundary).
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(FIELD_SHOWN_CHARS_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_line_column_and_expectation() {
        let e = FileError::new(
            Path::new("orders.csv"),
            Location::Line {
                line: 7,
                column: Some(Column {
                    index: 4,
                    name: "side",
                }),
            },
            FileErrorKind::BadField {
                expected: "B, S, BUY or SELL (any case)",
                found: "X".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "orders.csv: line 7, column 4 (side): expected B, S, BUY or SELL (any case), found \"X\""
        );
        assert_eq!(e.line(), Some(7));
        let e = FileError::new(
            Path::new("o.bin"),
            Location::Record {
                index: 12,
                offset: 600,
            },
            FileErrorKind::Record(DecodeError::Field {
                field: "side",
                value: 7,
            }),
        );
        assert_eq!(
            e.to_string(),
            "o.bin: record 12 (byte offset 600): bad side value 7"
        );
        assert_eq!(e.line(), None);
    }

    #[test]
    fn shorten_cuts_on_char_boundaries() {
        assert_eq!(shorten("abc"), "abc");
        let long = "é".repeat(50);
        let s = shorten(&long);
        assert!(s.ends_with("..."));
        assert_eq!(s.chars().count(), 43);
    }
}
