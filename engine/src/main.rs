//! `engine`: the order engine binary (`engine run`, `engine replay`). All logic lives in the
//! library; this file parses the command line, sets up logging and prints errors with their
//! chain.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use engine::cli::{Cli, Command};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => engine::app::serve(a),
        Command::Replay(a) => engine::app::replay(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
