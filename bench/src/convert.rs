//! `bench convert IN OUT`: converts any loadable order file (CSV, binary, LOBSTER, plain or
//! gzipped) to CSV or binary. CSV ↔ binary is lossless: converting a file written by `bench gen`
//! or `bench convert` to the other format and back gives the same bytes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use orders::files::{self, FileError, Format, LoadOptions, OrderFile};
use orders::Symbol;

/// A format the tools can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// CSV with the header `order_id,account,symbol,side,qty,price,ts_ns,kind`.
    Csv,
    /// The compact binary order file (24-byte header, 48-byte records).
    Binary,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Format {
        match f {
            OutputFormat::Csv => Format::Csv,
            OutputFormat::Binary => Format::Binary,
        }
    }
}

/// A format the tools can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// CSV with a header naming the columns.
    Csv,
    /// The compact binary order file.
    Binary,
    /// A LOBSTER message file.
    Lobster,
}

impl From<InputFormat> for Format {
    fn from(f: InputFormat) -> Format {
        match f {
            InputFormat::Csv => Format::Csv,
            InputFormat::Binary => Format::Binary,
            InputFormat::Lobster => Format::Lobster,
        }
    }
}

/// Why a conversion failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The output format was not given and the extension does not tell it.
    #[error(
        "cannot tell the output format of {0}: name it .csv or .bin, or pass --format csv|binary"
    )]
    OutputFormat(PathBuf),
    /// Loading or writing a file failed.
    #[error(transparent)]
    File(#[from] FileError),
}

/// The format to write: `flag` if given, else from the extension of `out`.
pub fn resolve_output_format(
    out: &Path,
    flag: Option<OutputFormat>,
) -> Result<Format, ConvertError> {
    match flag {
        Some(f) => Ok(f.into()),
        None => {
            Format::from_extension(out).ok_or_else(|| ConvertError::OutputFormat(out.to_path_buf()))
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// The input's format.
    pub input_format: Format,
    /// Whether the input was gzipped.
    pub gzipped: bool,
    /// Orders written.
    pub orders: u64,
    /// Bad input lines skipped under `max_errors`.
    pub skipped: u64,
    /// Where they are: the first 20 errors, then `… and N more` (`OrderFile::skipped_report`).
    pub skipped_report: Vec<String>,
}

/// Loads `input` and writes every order to `output` in `format`.
pub fn convert(
    input: &Path,
    output: &Path,
    format: Format,
    opts: &LoadOptions,
) -> Result<ConvertReport, ConvertError> {
    let file = OrderFile::open(input, opts)?;
    let orders = files::write_orders(output, format, file.iter())?;
    Ok(ConvertReport {
        input_format: file.format(),
        gzipped: file.gzipped(),
        orders,
        skipped: file.skipped(),
        skipped_report: file.skipped_report(),
    })
}

/// `bench convert`: converts an order file.
#[derive(Debug, Clone, clap::Args)]
pub struct ConvertArgs {
    /// Input file: CSV, binary or LOBSTER, plain or gzipped (detected from the content).
    pub input: PathBuf,
    /// Output file (replaced atomically).
    pub output: PathBuf,
    /// Output format; by default from the extension of OUTPUT (.csv or .bin).
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// Input format, when detection should be skipped.
    #[arg(long, value_enum)]
    pub input_format: Option<InputFormat>,
    /// LOBSTER input: the symbol of every order (default: the file name up to the first '_').
    #[arg(long)]
    pub symbol: Option<String>,
    /// Bad input lines to skip (and count) before failing; 0 fails on the first.
    #[arg(long, default_value_t = 0)]
    pub max_errors: u64,
    /// LOBSTER input: accounts to spread orders over (account = 1 + order_id % N).
    #[arg(long, default_value_t = orders::files::limits::LOBSTER_ACCOUNTS_DEFAULT)]
    pub lobster_accounts: u32,
}

/// Runs `bench convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let format = resolve_output_format(&args.output, args.format)?;
    let symbol = args
        .symbol
        .as_deref()
        .map(Symbol::new)
        .transpose()
        .context("bad --symbol")?;
    let opts = LoadOptions {
        format: args.input_format.map(Format::from),
        symbol,
        max_errors: args.max_errors,
        lobster_accounts: args.lobster_accounts,
        ..LoadOptions::default()
    };
    let report = convert(&args.input, &args.output, format, &opts).with_context(|| {
        format!(
            "cannot convert {} to {}",
            args.input.display(),
            args.output.display()
        )
    })?;
    for line in &report.skipped_report {
        tracing::warn!("skipped {line}");
    }
    println!(
        "bench convert: {} ({}{}) -> {} ({format}): {} orders, {} bad lines skipped",
        args.input.display(),
        report.input_format,
        if report.gzipped { ", gzipped" } else { "" },
        args.output.display(),
        report.orders,
        report.skipped,
    );
    Ok(ExitCode::SUCCESS)
}
