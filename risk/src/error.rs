//! The crate's error type. A risk *rejection* is never an error: it is a [`orders::Reason`].

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::protocol::ProtocolError;

/// What went wrong in the risk service or client (not a verdict).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RiskError {
    /// A ZeroMQ call failed.
    #[error("zmq {what} failed")]
    Zmq {
        /// Which call (`bind tcp://…`, `socket`, …).
        what: String,
        /// libzmq's error.
        #[source]
        source: zmq::Error,
    },
    /// An endpoint refused by the security policy (remote without authentication, no ZAP
    /// handler, unreadable credentials).
    #[error(transparent)]
    Auth(#[from] zauth::AuthError),
    /// An endpoint string is unusable (empty, or contains a NUL byte).
    #[error("bad endpoint {0:?}: must be a non-empty zmq endpoint without NUL bytes")]
    Endpoint(String),
    /// No endpoint given.
    #[error("no endpoint given")]
    NoEndpoints,
    /// `max_batch` outside `1..=MAX_BATCH_ORDERS_MAX`.
    #[error("max batch {0} is outside 1..={max}", max = crate::limits::MAX_BATCH_ORDERS_MAX)]
    MaxBatch(usize),
    /// A zero timeout.
    #[error("the risk timeout must be > 0")]
    ZeroTimeout,
    /// The limits file was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A reload was asked for but the service has no limits file.
    #[error("reload asked for, but this risk service was started without a limits file")]
    NoConfigPath,
    /// A limits file names an account whose name has no id here.
    #[error("{0} (account names get their ids when the engine starts: restart it to add one)")]
    AccountName(String),
    /// The audit journal could not be read.
    #[error("cannot read the audit journal in {}", dir.display())]
    Journal {
        /// Journal directory.
        dir: PathBuf,
        /// The journal's error.
        #[source]
        source: audit::JournalError,
    },
    /// A decision record of the journal does not decode.
    #[error("journal record {seq} in {} is not a valid decision", dir.display())]
    JournalRecord {
        /// Journal directory.
        dir: PathBuf,
        /// Sequence number of the record.
        seq: u64,
        /// Why it does not decode.
        #[source]
        source: orders::DecodeError,
    },
    /// A frame did not decode.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The embedded server thread could not be started.
    #[error("cannot start the embedded risk server thread")]
    Spawn(#[source] std::io::Error),
    /// The embedded server thread panicked.
    #[error("the embedded risk server thread panicked")]
    ThreadPanicked,
    /// A hello got no reply in time.
    #[error("risk service {endpoint} did not answer a hello within {wait_ms} ms")]
    HelloTimeout {
        /// The endpoint.
        endpoint: String,
        /// How long the client waited.
        wait_ms: u64,
    },
    /// A hello was answered with an error reply (an older server answers `unsupported-type`).
    #[error("risk service {endpoint} answered a hello with {status}: {text}")]
    HelloRefused {
        /// The endpoint.
        endpoint: String,
        /// The reply's status name.
        status: &'static str,
        /// The reply's error text.
        text: String,
    },
    /// A hello's reply could not be read, or was not the reply to it.
    #[error("risk service {endpoint} answered a hello with an unusable reply")]
    HelloReply {
        /// The endpoint.
        endpoint: String,
    },
    /// A names request was not answered `ok` (in time).
    #[error("risk service {endpoint} did not take the account names: {text}")]
    Names {
        /// The endpoint.
        endpoint: String,
        /// What happened (the reply's status and text, a timeout, an unusable reply).
        text: String,
    },
}

impl RiskError {
    pub(crate) fn zmq(what: impl Into<String>, source: zmq::Error) -> Self {
        RiskError::Zmq {
            what: what.into(),
            source,
        }
    }
}

/// Refuses endpoints libzmq (or the `zmq` crate, which panics on NUL) cannot take.
pub(crate) fn check_endpoint(endpoint: &str) -> Result<(), RiskError> {
    if endpoint.is_empty() || endpoint.contains('\0') {
        return Err(RiskError::Endpoint(endpoint.to_owned()));
    }
    Ok(())
}

/// An error and its sources, joined with `: ` (for logs and admin replies).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
