//! The order engine: pinned stages on lock-free rings, from order in to PUSH out, journaled
//! first.
//!
//! ```text
//!  orders ──► ingress ──ring──► risk ──ring──► journal ──ring──► egress ──► PUSH downstream
//!  (file replay      stamp t_sched,     batch ≤ B orders   append to the         one frame per
//!   or ZMQ PULL)     t_in               into one REQ;      hash-chained log,     batch; latency
//!                                       ≤ timeout          publish, hand on      ends here
//! ```
//!
//! - [`stages`]: the four stages and the items on their rings; [`pipeline`] wires them into
//!   named (optionally pinned) threads joined by `rtrb` rings allocated at start-up.
//! - [`threading`]: how stages map onto threads (`dedicated`, `shared`, `auto`);
//!   [`waitset`]: what a shared thread blocks on when idle.
//! - [`idle`]: spin / yield / backoff idle strategies; [`wake`]: the wake-up hand-off that
//!   lets a parked stage be unparked by its neighbour; [`schedule`]: open-loop replay timing.
//! - [`frames`]: ingress (binary + JSON) and egress wire frames.
//! - [`latency`], [`metrics`], [`report`]: HdrHistogram recording, Prometheus counters, the
//!   replay report.
//! - [`config`], [`cli`], [`app`]: the `engine run` / `engine replay` commands;
//!   [`recovery`]: restart from the journal's tail in one pass; [`snapshots`]: the risk-state
//!   snapshots that keep that tail short.
//! - [`limits`]: every named bound.
//!
//! Guarantees (see `docs/engine.md`): every order taken in ends with exactly one decision
//! record, in decision order; an accepted order is pushed only after its record is in the
//! journal; no stage waits on risk longer than the timeout; after `kill -9`, `--resume`
//! continues the chain without deciding any order twice.
// `unsafe` lives in one place, `waitset` (borrowing ZeroMQ's notification descriptors for
// `ppoll`), which allows it for itself.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod account_names;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod downstream_watch;
pub mod frames;
pub mod hints;
pub mod idle;
pub mod latency;
pub mod limits;
pub mod metrics;
pub mod out_format;
pub mod pipeline;
pub mod recovery;
pub mod redelivery;
pub mod report;
pub mod schedule;
pub mod snapshots;
pub mod stages;
pub mod threading;
pub mod topology;
pub mod waitset;
pub mod wake;
