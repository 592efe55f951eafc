//! The risk service: pre-trade checks over ZeroMQ REQ/REP with a hard timeout, batched,
//! stateful and restartable.
//!
//! - [`config`]: the limits file (TOML) → validated [`Limits`].
//! - [`checks`]: each check as a small pure function returning a [`orders::Reason`].
//! - [`checker`]: [`Checker`], limits plus live state (positions, open orders, exposure,
//!   rate buckets, recent ids, trading states); [`Checker::apply_decision`] for recovery;
//!   [`Checker::void_batches`] to take back batches a client timed out on (undo log in
//!   `undo.rs`).
//! - [`protocol`]: the binary batch request / reply layout (`docs/formats/risk-protocol.md`).
//! - [`service`]: the request handler (binary batches, JSON orders, admin requests).
//! - [`server`]: the REP loop of `risk-server` and the embedded mode ([`spawn_embedded`]).
//! - [`client`]: [`RiskClient`], one REQ message per batch, timeout, Lazy Pirate, failover.
//! - [`recover`]: [`replay_journal`], state from the audit journal's decision records.
//! - [`limits`]: every compile-time limit, units last.
//! - [`metrics`]: the service's counters and the collector of `risk-server --metrics`.
//!
//! A rejection is a verdict ([`orders::Reason`]), never an error; [`RiskError`] is for
//! sockets, files and configuration.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod checker;
pub mod checks;
pub mod client;
pub mod config;
pub mod error;
mod hash;
mod idtable;
pub mod json_client;
pub mod limits;
pub mod metrics;
pub mod protocol;
pub mod recover;
pub mod server;
pub mod service;
mod undo;

pub use checker::state::{limits_digest, StateError};
pub use checker::{Checker, Scope, StateSnapshot};
pub use checks::PositionView;
pub use client::{BatchOutcome, BatchPoll, ClientStats, RiskClient, Waiting};
pub use config::{ConfigError, Limits, Problem, TradingState, UnknownPolicy};
pub use error::{error_chain, RiskError};
pub use json_client::{JsonClientStats, JsonRiskClient};
pub use protocol::{HelloResult, JournalPoint};
pub use recover::{replay_journal, ReplayStats};
pub use server::{spawn_embedded, spawn_embedded_with, EmbeddedRisk, Server};
pub use service::{JsonReplies, Service, ServiceOptions, ServiceStats};
pub use undo::VoidOutcome;
