//! The one log set-up of the workspace's binaries (`engine`, `risk-server`, `audit`, `bench`),
//! behind the `logging` feature: every diagnostic goes through `tracing` to stderr, as text
//! (the default) or as one JSON object per line (`--log-format json`), filtered by `RUST_LOG`
//! (default `info`). What a command produces (reports, dumps, key files, bound endpoints) stays
//! on stdout and is not logging.
//!
//! It lives here, in the crate every binary already depends on, so that the flag, the filter
//! and the format are written once (docs/operations.md, "Logs").

use std::io::{IsTerminal, Write as _};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

/// The environment variable holding the level directives (`warn`, `engine=debug,info`, …).
pub const FILTER_ENV: &str = "RUST_LOG";

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event: timestamp, level, target, message and fields (colours only on a
    /// terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target` and `fields` (with `message`).
    Json,
}

/// The `--log-format` flag, flattened into each binary's command line (global: it may follow
/// the subcommand).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LogArgs {
    /// Log lines on stderr as `text` or `json` (one object per line: timestamp, level, target,
    /// fields). Levels come from RUST_LOG (default info; e.g. RUST_LOG=warn, RUST_LOG=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// The set-up failed: `RUST_LOG` does not parse, or a subscriber is already installed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` holds something that is not a filter directive.
    #[error(
        "{FILTER_ENV}={value:?} is not a log filter (e.g. info, warn, engine=debug): {source}"
    )]
    BadFilter {
        /// The variable's text.
        value: String,
        /// The parser's complaint.
        source: tracing_subscriber::filter::ParseError,
    },
    /// Another global subscriber was installed first.
    #[error("cannot install the log subscriber: {0}")]
    Install(String),
}

/// Whether the text format was chosen (progress bars are drawn only then).
static TEXT_FORMAT: AtomicBool = AtomicBool::new(true);
/// Whether [`init`] installed the subscriber.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// The filter of `RUST_LOG`'s text, `info` when it is unset or empty.
pub fn filter_from(value: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let builder = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into());
    match value.map(str::trim) {
        None | Some("") => Ok(builder.parse_lossy("")),
        Some(text) => builder
            .parse(text)
            .map_err(|source| LoggingError::BadFilter {
                value: text.to_owned(),
                source,
            }),
    }
}

/// Installs the global subscriber: stderr, `args.log_format`, the filter of `RUST_LOG`.
pub fn init(args: &LogArgs) -> Result<(), LoggingError> {
    let value = std::env::var(FILTER_ENV).ok();
    let filter = filter_from(value.as_deref())?;
    TEXT_FORMAT.store(args.log_format == LogFormat::Text, Relaxed);
    // A log line that cannot be written (stderr closed: a parent that stopped reading) is
    // dropped. tracing-subscriber's default reports the failure with `eprintln!`, which panics
    // on the same closed stderr: a ZAP handler thread logging a refusal died of it, and its
    // clients waited for an answer (audit/tests/security.rs).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let installed = match args.log_format {
        // Colour codes only on a terminal: a log redirected to a file or journald stays plain.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| LoggingError::Install(e.to_string()))?;
    INSTALLED.store(true, Relaxed);
    Ok(())
}

/// The CLI's final error print, the one place a binary writes to stderr itself: `text` as a
/// plain line (`engine`'s `error: …`, `audit: error: …`), whatever the log level; with
/// `--log-format json` an ERROR event of target `exit` instead, so that every stderr line stays
/// one JSON object (unless RUST_LOG turns errors off: then the plain line, never nothing).
pub fn print_final_error(text: &str) {
    if INSTALLED.load(Relaxed)
        && !TEXT_FORMAT.load(Relaxed)
        && tracing::enabled!(target: "exit", tracing::Level::ERROR)
    {
        tracing::error!(target: "exit", "{text}");
    } else {
        // Not `eprintln!`: it panics when stderr is closed, and the exit code would be lost.
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

/// Whether a progress bar or progress line may be drawn on stderr: only on a terminal, and
/// only with text logs (a JSON log is for machines; a bar would break its lines).
pub fn progress_on_terminal() -> bool {
    progress_allowed(std::io::stderr().is_terminal(), TEXT_FORMAT.load(Relaxed))
}

fn progress_allowed(stderr_is_terminal: bool, text_format: bool) -> bool {
    stderr_is_terminal && text_format
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
        #[command(subcommand)]
        cmd: Option<Sub>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum Sub {
        Go,
    }

    #[test]
    fn the_flag_defaults_to_text_and_is_global() {
        let cli = Cli::try_parse_from(["x"]).expect("parses");
        assert_eq!(cli.log.log_format, LogFormat::Text);
        let cli = Cli::try_parse_from(["x", "--log-format", "json", "go"]).expect("parses");
        assert_eq!(cli.log.log_format, LogFormat::Json);
        // After the subcommand too.
        let cli = Cli::try_parse_from(["x", "go", "--log-format", "json"]).expect("parses");
        assert_eq!(cli.log.log_format, LogFormat::Json);
        let err = Cli::try_parse_from(["x", "--log-format", "xml"]).expect_err("refused");
        assert!(err.to_string().contains("text"), "{err}");
    }

    #[test]
    fn the_filter_defaults_to_info_and_refuses_garbage() {
        let f = filter_from(None).expect("default");
        assert_eq!(f.max_level_hint(), Some(LevelFilter::INFO));
        let f = filter_from(Some("  ")).expect("empty");
        assert_eq!(f.max_level_hint(), Some(LevelFilter::INFO));
        let f = filter_from(Some("warn")).expect("warn");
        assert_eq!(f.max_level_hint(), Some(LevelFilter::WARN));
        let e = filter_from(Some("engine=loud")).expect_err("bad level");
        assert!(e.to_string().contains("RUST_LOG=\"engine=loud\""), "{e}");
    }

    #[test]
    fn progress_needs_a_terminal_and_text_logs() {
        assert!(progress_allowed(true, true));
        assert!(!progress_allowed(false, true));
        assert!(!progress_allowed(true, false));
    }
}
