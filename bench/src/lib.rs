//! The bench tools behind the `bench` binary, as a library so that tests reach them:
//!
//! - [`gen`]: `bench gen`, a deterministic synthetic order flow ([`gen::Generator`]).
//! - [`convert`]: `bench convert`, order files from any loadable format to CSV or binary.
//! - [`plot`]: `bench plot`, pictures from a results directory.
//! - [`sink`]: `bench sink`, the engine's downstream end for tests and benchmarks.
//! - [`baseline`]: `bench baseline`, the source design (one JSON REQ per order) for comparison.
//! - [`send`]: `bench send`, an order file pushed into `engine run`'s PULL ingress.
//! - [`summary`]: `bench summary`, a results directory as text, the targets checked.
//! - [`limits`]: the named limits of these tools.
//!
//! Each subcommand module has a clap `*Args` struct and a `run(args) -> anyhow::Result<ExitCode>`
//! (the CLI glue), beside typed-error library functions.
#![forbid(unsafe_code)]

pub mod baseline;
pub mod convert;
pub mod gen;
pub mod limits;
pub mod plot;
pub mod send;
pub mod sink;
pub mod summary;
