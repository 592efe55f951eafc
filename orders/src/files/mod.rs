//! Order files: CSV, a compact binary format, and LOBSTER message files (plain or gzipped).
//! `docs/formats/orders.md` describes each format byte for byte.
//!
//! [`OrderFile::open`] detects the format (unless [`LoadOptions::format`] names it), reads and
//! validates every order up front, and then hands them out cheaply with [`OrderFile::get`] and
//! [`OrderFile::iter`]. Detection, in order:
//!
//! 1. gzip magic `1f 8b` → decompress (at most [`LoadOptions::max_inflated_bytes`]), then
//!    detect on the content;
//! 2. the binary magic `ORDRBIN\0` → [`Format::Binary`];
//! 3. a first line starting `Time,Type` (a LOBSTER header) → [`Format::Lobster`];
//! 4. a first line naming an `order_id` column → [`Format::Csv`];
//! 5. a first line of 6 or 7 comma-separated fields whose first 6 are numbers →
//!    [`Format::Lobster`];
//! 6. anything else: [`FileErrorKind::UnknownFormat`].
//!
//! Bad input is a [`FileError`] naming the file, the line and column (text) or record and byte
//! offset (binary), and what was expected. With [`LoadOptions::max_errors`] = N, up to N bad
//! lines of a text file are skipped and counted ([`OrderFile::skipped`]; the first
//! [`limits::SKIPPED_LISTED_MAX`] with their locations in [`OrderFile::skipped_errors`]); the
//! next one is an error. Binary files are machine-written and never skipped: any bad record is
//! an error.
//!
//! Every file is read into memory at open, and nothing reads it again: a file that another
//! process truncates or rewrites while we replay it changes nothing for us (no memory map, so
//! no SIGBUS; `docs/formats/orders.md` has the load times that decided it).
//!
//! A resume reads a binary file from an index: [`OrderFile::open_deferred`] checks the header
//! against the file's length, and [`DeferredOrderFile::load_from`] reads and validates only
//! the records from that index (those before it are not read). Text and gzipped files are read
//! whole either way.

mod binary;
mod csv_file;
mod error;
pub mod limits;
mod lobster;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use binary::VERSION as BINARY_VERSION;
pub use binary::{HEADER_LEN_BYTES as BINARY_HEADER_LEN_BYTES, MAGIC as BINARY_MAGIC};
pub use csv_file::HEADER as CSV_HEADER;
pub use error::{Column, FileError, FileErrorKind, Location};
pub use lobster::{parse_time_ns as parse_lobster_time_ns, LobsterCounts};

use crate::account_names::AccountNames;
use crate::model::{Order, Symbol};
use limits::{
    GZIP_INFLATED_BYTES_MAX_DEFAULT, GZIP_MAGIC, LOBSTER_ACCOUNTS_DEFAULT, SKIPPED_LISTED_MAX,
    SNIPPET_BYTES_MAX, WRITE_BUFFER_BYTES,
};

/// An order-file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// CSV with a header naming the columns.
    Csv,
    /// The compact binary format (24-byte header, 48-byte records).
    Binary,
    /// A LOBSTER message file (read only).
    Lobster,
}

impl Format {
    /// `csv`, `binary` or `lobster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Binary => "binary",
            Format::Lobster => "lobster",
        }
    }

    /// The format an output path asks for by its extension: `.csv` → CSV, `.bin` → binary
    /// (any case); `None` otherwise.
    pub fn from_extension(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("csv") {
            Some(Format::Csv)
        } else if ext.eq_ignore_ascii_case("bin") {
            Some(Format::Binary)
        } else {
            None
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not `csv`, `binary` or `lobster`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: expected csv, binary or lobster")]
pub struct UnknownFormatName(pub String);

impl FromStr for Format {
    type Err = UnknownFormatName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Format::Csv, Format::Binary, Format::Lobster]
            .into_iter()
            .find(|f| s.eq_ignore_ascii_case(f.as_str()))
            .ok_or_else(|| UnknownFormatName(s.to_owned()))
    }
}

/// How to load an order file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// The format; `None` detects it from the content (see the module docs).
    pub format: Option<Format>,
    /// LOBSTER only: the symbol of every order; `None` takes it from the file name
    /// (`TICKER_DATE_...`). CSV and binary files carry their own symbols and ignore it.
    pub symbol: Option<Symbol>,
    /// Bad lines of a text file to skip (and count) before failing; 0 fails on the first.
    pub max_errors: u64,
    /// LOBSTER only: accounts to spread orders over (`account = 1 + order_id % N`), ≥ 1.
    pub lobster_accounts: u32,
    /// Gzipped files only: the most bytes the content may inflate to; past it the load fails
    /// with [`FileErrorKind::GzipTooLarge`] (default [`GZIP_INFLATED_BYTES_MAX_DEFAULT`]).
    pub max_inflated_bytes: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            format: None,
            symbol: None,
            max_errors: 0,
            lobster_accounts: LOBSTER_ACCOUNTS_DEFAULT,
            max_inflated_bytes: GZIP_INFLATED_BYTES_MAX_DEFAULT,
        }
    }
}

/// Counts bad lines of a text file against `max_errors`, keeping the first few errors.
#[derive(Debug)]
pub(crate) struct BadLines {
    max_errors: u64,
    skipped: u64,
    listed: Vec<FileError>,
}

impl BadLines {
    pub(crate) fn new(max_errors: u64) -> Self {
        BadLines {
            max_errors,
            skipped: 0,
            listed: Vec::new(),
        }
    }

    /// Skips a bad line if the allowance permits, else returns its error.
    pub(crate) fn skip(&mut self, e: FileError) -> Result<(), FileError> {
        if self.skipped < self.max_errors {
            self.skipped += 1;
            if self.listed.len() < SKIPPED_LISTED_MAX {
                self.listed.push(e);
            }
            return Ok(());
        }
        if self.max_errors == 0 {
            return Err(e);
        }
        let max_errors = self.max_errors;
        Err(e.map_kind(|problem| FileErrorKind::TooManyBadLines {
            max_errors,
            problem: Box::new(problem),
        }))
    }

    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// All orders of a file, read and validated at open, held in memory.
pub struct OrderFile {
    path: PathBuf,
    format: Format,
    gzipped: bool,
    /// Index of `orders[0]` in the file: records before it were not read
    /// ([`DeferredOrderFile::load_from`]); 0 for a file read whole.
    first: usize,
    orders: Vec<Order>,
    skipped: u64,
    skipped_errors: Vec<FileError>,
    lobster: Option<LobsterCounts>,
    /// The account names of a CSV file, file-local ids in first-seen order
    /// ([`crate::account_names`]); empty for other formats.
    account_names: AccountNames,
}

/// An order file opened by [`OrderFile::open_deferred`]: a binary file whose header was
/// checked and whose records are not read yet, or any other file already read whole.
#[derive(Debug)]
pub struct DeferredOrderFile(Deferred);

#[derive(Debug)]
enum Deferred {
    Loaded(OrderFile),
    Binary {
        path: PathBuf,
        file: File,
        file_len: u64,
        count: u64,
    },
}

impl DeferredOrderFile {
    /// Number of orders in the file (for a binary file, its header's count).
    pub fn len(&self) -> u64 {
        match &self.0 {
            Deferred::Loaded(f) => f.len() as u64,
            Deferred::Binary { count, .. } => *count,
        }
    }

    /// Whether the file holds no orders.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the records are still to be read ([`DeferredOrderFile::load_from`] reads only
    /// those from its index): a plain binary file.
    pub fn is_deferred(&self) -> bool {
        matches!(self.0, Deferred::Binary { .. })
    }

    /// The orders from index `first` (0-based) on. A binary file's records before `first`
    /// are neither read nor validated (a seek past them); those from `first` are read and
    /// validated as [`OrderFile::open`] does (a bad one is an error naming its index and byte
    /// offset; a file that shrank or grew since it was opened is refused). A file read whole
    /// at open (text, gzip) keeps all its orders. `first` above the count is the count.
    ///
    /// [`OrderFile::len`] is the file's count either way; [`OrderFile::get`] panics below
    /// [`OrderFile::first_index`].
    pub fn load_from(self, first: u64) -> Result<OrderFile, FileError> {
        match self.0 {
            Deferred::Loaded(f) => Ok(f),
            Deferred::Binary {
                path,
                mut file,
                file_len,
                count,
            } => {
                let first = first.min(count);
                file.seek(SeekFrom::Start(binary::record_offset(first)))
                    .map_err(io_error(&path, "cannot seek"))?;
                let orders = binary::read_records(&path, &mut file, first, count, file_len)?;
                Ok(OrderFile {
                    path,
                    format: Format::Binary,
                    gzipped: false,
                    // `first <= count`, and `count - first` orders fit in memory (they were
                    // reserved), so `first` fits a usize wherever a file this size loads.
                    first: usize::try_from(first).unwrap_or(usize::MAX),
                    orders,
                    skipped: 0,
                    skipped_errors: Vec::new(),
                    lobster: None,
                    account_names: AccountNames::default(),
                })
            }
        }
    }
}

impl fmt::Debug for OrderFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderFile")
            .field("path", &self.path)
            .field("format", &self.format)
            .field("gzipped", &self.gzipped)
            .field("len", &self.len())
            .field("skipped", &self.skipped)
            .finish()
    }
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError::new(path, Location::File, FileErrorKind::Io { action, source })
}

impl OrderFile {
    /// Opens, detects, reads and validates an order file.
    ///
    /// The whole file is read into memory (a gzipped one is inflated as it is read, up to
    /// [`LoadOptions::max_inflated_bytes`]); nothing reads the file again, so another process
    /// truncating or rewriting it afterwards changes nothing here.
    pub fn open(path: &Path, opts: &LoadOptions) -> Result<OrderFile, FileError> {
        OrderFile::open_deferred(path, opts)?.load_from(0)
    }

    /// Opens an order file and checks what can be checked without reading its orders: a
    /// plain (not gzipped) binary file is opened and its header checked against its length
    /// (O(1)), its records are read by [`DeferredOrderFile::load_from`]; any other file (CSV,
    /// LOBSTER, gzipped) is read and validated whole here, as by [`OrderFile::open`].
    ///
    /// A resume uses it to read only the records from its resume point
    /// (`engine replay --resume`): the restart does not grow with the orders already decided.
    pub fn open_deferred(path: &Path, opts: &LoadOptions) -> Result<DeferredOrderFile, FileError> {
        check_options(path, opts)?;
        let mut file = File::open(path).map_err(io_error(path, "cannot open"))?;
        let len = file
            .metadata()
            .map_err(io_error(path, "cannot read metadata"))?
            .len();
        if len == 0 {
            return Err(FileError::new(path, Location::File, FileErrorKind::Empty));
        }
        let mut head = [0u8; BINARY_HEADER_LEN_BYTES];
        let head_len =
            binary::read_up_to(&mut file, &mut head).map_err(io_error(path, "cannot read"))?;
        let head_bytes = &head[..head_len];
        let loaded = |f| Ok(DeferredOrderFile(Deferred::Loaded(f)));
        if head_bytes.starts_with(&GZIP_MAGIC) {
            let data = inflate(path, head_bytes.chain(file), opts.max_inflated_bytes)?;
            return loaded(OrderFile::from_content(path, &data, true, opts)?);
        }
        let binary = match opts.format {
            Some(f) => f == Format::Binary,
            None => binary::has_magic(head_bytes),
        };
        if binary {
            let count = binary::check_header_of(path, head_bytes, len)?;
            return Ok(DeferredOrderFile(Deferred::Binary {
                path: path.to_path_buf(),
                file,
                file_len: len,
                count,
            }));
        }
        let mut bytes = Vec::new();
        usize::try_from(len)
            .ok()
            .and_then(|n| bytes.try_reserve_exact(n).ok())
            .ok_or_else(|| {
                FileError::new(path, Location::File, FileErrorKind::TooLarge { bytes: len })
            })?;
        bytes.extend_from_slice(head_bytes);
        // Reads to the end, whatever the length is now: a file that shrank or grew since the
        // metadata was read is validated as it was read.
        file.read_to_end(&mut bytes)
            .map_err(io_error(path, "cannot read"))?;
        loaded(OrderFile::from_content(path, &bytes, false, opts)?)
    }

    /// Loads orders from the bytes of a file (plain or gzipped). `path` names the origin in
    /// errors and gives a LOBSTER file its symbol; nothing is read from it.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        opts: &LoadOptions,
    ) -> Result<OrderFile, FileError> {
        check_options(path, opts)?;
        if bytes.starts_with(&GZIP_MAGIC) {
            let data = inflate(path, bytes, opts.max_inflated_bytes)?;
            OrderFile::from_content(path, &data, true, opts)
        } else {
            OrderFile::from_content(path, bytes, false, opts)
        }
    }

    /// Detects and parses decompressed content.
    fn from_content(
        path: &Path,
        data: &[u8],
        gzipped: bool,
        opts: &LoadOptions,
    ) -> Result<OrderFile, FileError> {
        let format = match opts.format {
            Some(f) => f,
            None => detect(path, data)?,
        };
        let mut bad = BadLines::new(opts.max_errors);
        let mut lobster_counts = None;
        let mut account_names = AccountNames::default();
        let orders = match format {
            Format::Binary => {
                let count = binary::check_header(path, data)?;
                binary::decode_records(path, data, count)?
            }
            Format::Csv => {
                account_names = csv_file::file_names();
                csv_file::parse(path, text_of(data), &mut bad, &mut account_names)?
            }
            Format::Lobster => {
                let symbol = match opts.symbol {
                    Some(s) => s,
                    None => lobster::symbol_from_file_name(path)
                        .map_err(|k| FileError::new(path, Location::File, k))?,
                };
                if text_of(data).trim_ascii().is_empty() {
                    return Err(FileError::new(path, Location::File, FileErrorKind::Empty));
                }
                let (orders, counts) =
                    lobster::parse(path, text_of(data), symbol, opts.lobster_accounts, &mut bad)?;
                lobster_counts = Some(counts);
                orders
            }
        };
        Ok(OrderFile {
            path: path.to_path_buf(),
            format,
            gzipped,
            first: 0,
            orders,
            skipped: bad.skipped(),
            skipped_errors: bad.listed,
            lobster: lobster_counts,
            account_names,
        })
    }

    /// Number of orders in the file (those before [`OrderFile::first_index`] included).
    pub fn len(&self) -> usize {
        self.first.saturating_add(self.orders.len())
    }

    /// Whether the file holds no orders.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index of the first order held: 0, unless [`DeferredOrderFile::load_from`] skipped the
    /// records before it.
    pub fn first_index(&self) -> usize {
        self.first
    }

    /// Order `i` (0-based, index in the file): a copy.
    ///
    /// # Panics
    /// If `i >= self.len()` or `i < self.first_index()` ([`OrderFile::orders`]`.get(i)` does
    /// not panic).
    pub fn get(&self, i: usize) -> Order {
        match i.checked_sub(self.first).and_then(|k| self.orders.get(k)) {
            Some(order) => *order,
            None => panic!(
                "order index {i} out of range: {} holds orders {}..{}",
                self.path.display(),
                self.first,
                self.len()
            ),
        }
    }

    /// Every order held, in file order: from [`OrderFile::first_index`] (0 unless loaded
    /// from an index).
    pub fn orders(&self) -> &[Order] {
        &self.orders
    }

    /// Every order held, in file order (see [`OrderFile::orders`]).
    pub fn iter(&self) -> impl Iterator<Item = Order> + '_ {
        self.orders.iter().copied()
    }

    /// The file's format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bad lines skipped under [`LoadOptions::max_errors`].
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Where the orders came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was gzipped.
    pub fn gzipped(&self) -> bool {
        self.gzipped
    }

    /// The errors of the first [`SKIPPED_LISTED_MAX`] bad lines skipped under
    /// [`LoadOptions::max_errors`], in file order; each names its line (and column).
    pub fn skipped_errors(&self) -> &[FileError] {
        &self.skipped_errors
    }

    /// The skipped bad lines for a person to read: one line per listed error, then
    /// `… and N more` when more lines were skipped than are listed. Empty when none was.
    pub fn skipped_report(&self) -> Vec<String> {
        let mut out: Vec<String> = self.skipped_errors.iter().map(|e| e.to_string()).collect();
        let unlisted = self.skipped - self.skipped_errors.len() as u64;
        if unlisted > 0 {
            out.push(format!("… and {unlisted} more"));
        }
        out
    }

    /// The account names of the file (CSV only), with file-local ids in first-seen order from
    /// [`crate::account_names::NAMED_ACCOUNT_BASE`]: the orders carry these ids.
    pub fn account_names(&self) -> &AccountNames {
        &self.account_names
    }

    /// Rewrites every order's account through `map` (the engine maps file-local name ids to
    /// its journal's table). Orders before [`OrderFile::first_index`] are not held.
    pub fn map_accounts(&mut self, map: impl Fn(u32) -> u32) {
        for o in &mut self.orders {
            o.account = map(o.account);
        }
    }

    /// For a LOBSTER file, the rows imported per LOBSTER event type.
    pub fn lobster_counts(&self) -> Option<&LobsterCounts> {
        self.lobster.as_ref()
    }
}

fn check_options(path: &Path, opts: &LoadOptions) -> Result<(), FileError> {
    if opts.lobster_accounts == 0 {
        return Err(FileError::new(
            path,
            Location::File,
            FileErrorKind::BadOption {
                option: "lobster_accounts",
                problem: "must be at least 1",
            },
        ));
    }
    Ok(())
}

/// Inflates a gzip stream (all members), refusing content beyond `max_bytes` without reading
/// further.
fn inflate(path: &Path, compressed: impl Read, max_bytes: u64) -> Result<Vec<u8>, FileError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| FileError::new(path, Location::File, FileErrorKind::Gzip(e)))?;
    if out.len() as u64 > max_bytes {
        return Err(FileError::new(
            path,
            Location::File,
            FileErrorKind::GzipTooLarge { max_bytes },
        ));
    }
    Ok(out)
}

/// Text without a UTF-8 byte-order mark.
fn text_of(data: &[u8]) -> &[u8] {
    data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data)
}

/// Detects the format of (decompressed) file content.
fn detect(path: &Path, data: &[u8]) -> Result<Format, FileError> {
    if binary::has_magic(data) {
        return Ok(Format::Binary);
    }
    let text = text_of(data);
    let Some((line_no, first)) = text
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, l)| (i as u64 + 1, l.strip_suffix(b"\r").unwrap_or(l)))
        .find(|(_, l)| !l.trim_ascii().is_empty())
    else {
        return Err(FileError::new(path, Location::File, FileErrorKind::Empty));
    };
    if lobster::is_header(first) {
        // Checked first: a LOBSTER header may spell its id column `order_id`.
        Ok(Format::Lobster)
    } else if csv_file::is_header(first) {
        Ok(Format::Csv)
    } else if lobster::looks_like_row(first) {
        Ok(Format::Lobster)
    } else {
        let shown = &first[..first.len().min(SNIPPET_BYTES_MAX)];
        Err(FileError::new(
            path,
            Location::Line {
                line: line_no,
                column: None,
            },
            FileErrorKind::UnknownFormat {
                found: String::from_utf8_lossy(shown).into_owned(),
            },
        ))
    }
}

/// Writes through a temporary file beside `path`, then renames it into place, so that a
/// reader never sees a half-written file.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<u64>,
) -> Result<u64, FileError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, file);
        let count = write(&mut w)?;
        w.flush()?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(count)
    })();
    if result.is_err() {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_error(path, "cannot write"))
}

/// Writes `orders` as CSV (header `order_id,account,symbol,side,qty,price,ts_ns,kind`).
pub fn write_csv(path: &Path, orders: impl IntoIterator<Item = Order>) -> Result<(), FileError> {
    write_atomically(path, |w| csv_file::write_to(w, orders)).map(|_| ())
}

/// Writes `orders` as a binary order file.
pub fn write_binary(path: &Path, orders: impl IntoIterator<Item = Order>) -> Result<(), FileError> {
    write_atomically(path, |w| binary::write_to(w, orders)).map(|_| ())
}

/// Writes `orders` in `format` (CSV or binary) and returns how many were written.
pub fn write_orders(
    path: &Path,
    format: Format,
    orders: impl IntoIterator<Item = Order>,
) -> Result<u64, FileError> {
    match format {
        Format::Csv => write_atomically(path, |w| csv_file::write_to(w, orders)),
        Format::Binary => write_atomically(path, |w| binary::write_to(w, orders)),
        Format::Lobster => Err(FileError::new(
            path,
            Location::File,
            FileErrorKind::NotWritable("lobster"),
        )),
    }
}
