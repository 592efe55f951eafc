//! `engine`: the order engine binary (`engine run`, `engine replay`). All logic lives in the
//! library; this file parses the command line, sets up logging and prints errors with their
//! chain.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use engine::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = orders::logging::init(&cli.log) {
        orders::logging::print_final_error(&format!("error: {e}"));
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Run(a) => engine::app::serve(a),
        Command::Replay(a) => engine::app::replay(*a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            orders::logging::print_final_error(&format!("error: {}", chain_text(&e)));
            ExitCode::from(2)
        }
    }
}

/// `{e:#}` without repeats: a cause whose text the message already ends with (a `{source}` in
/// a thiserror message) is not printed a second time.
fn chain_text(e: &anyhow::Error) -> String {
    let mut s = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if s.ends_with(&text) {
            continue;
        }
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&text);
    }
    s
}
