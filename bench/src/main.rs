//! `bench`: order-file generator and converter, and the benchmark helpers.
//!
//! One subcommand per module of the `bench` library; adding one is a variant in [`Command`]
//! and an arm in [`main`].
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Order files and benchmark helpers for the trading pipeline.
#[derive(Debug, Parser)]
#[command(name = "bench", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// `--log-format text|json` (RUST_LOG sets the levels).
    #[command(flatten)]
    log: orders::logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a deterministic synthetic order file (new orders, cancels, fills and orders
    /// that break typical risk limits).
    Gen(bench::gen::GenArgs),
    /// Convert an order file (CSV, binary or LOBSTER, plain or gzipped) to CSV or binary.
    Convert(bench::convert::ConvertArgs),
    /// Draw latency and throughput pictures from a results directory.
    Plot(bench::plot::PlotArgs),
    /// Pull the engine's egress frames, count them, check for duplicates, gaps and order, and
    /// (optionally) that each order's record was already in the journal when it arrived.
    Sink(bench::sink::SinkArgs),
    /// Replay an order file the way the source design does (one synchronous JSON risk request
    /// per order, PUSH, PUB with a per-message SHA-256, no journal), for comparison.
    Baseline(bench::baseline::BaselineArgs),
    /// Feed `engine run`: push an order file into its PULL ingress as binary frames or JSON,
    /// at a fixed rate or as fast as it takes them.
    Send(bench::send::SendArgs),
    /// Print a results directory (as `scripts/bench.sh` writes it) as text: the scenarios side
    /// by side, and each benchmark target met or not.
    Summary(bench::summary::SummaryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = orders::logging::init(&cli.log) {
        orders::logging::print_final_error(&format!("bench: error: {e}"));
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Gen(args) => bench::gen::run(args),
        Command::Convert(args) => bench::convert::run(args),
        Command::Plot(args) => bench::plot::run(args),
        Command::Sink(args) => bench::sink::run(args),
        Command::Baseline(args) => bench::baseline::run(args),
        Command::Summary(args) => bench::summary::run(args),
        Command::Send(args) => bench::send::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            orders::logging::print_final_error(&format!("bench: error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
