//! Bus errors.

use lightcl_core::Severity;

/// A failure talking to NATS / JetStream.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A configuration value is unusable (names the flag).
    #[error("{flag}: {reason}")]
    Config {
        /// The flag, e.g. `--nats.creds`.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An id that must be a single NATS subject token is not.
    #[error(
        "invalid {what} {value:?}: must be a non-empty NATS token without '.', '*', '>' or whitespace"
    )]
    InvalidToken {
        /// What the id is (e.g. "source id").
        what: &'static str,
        /// The value.
        value: String,
    },
    /// Not connected, or the request timed out.
    #[error("NATS unavailable during {what}: {reason}")]
    Unavailable {
        /// The operation.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The CAS publish lost: someone else wrote the subject since the expected sequence.
    #[error("wrong last sequence on {subject}: expected {expected}")]
    WrongLastSequence {
        /// The subject.
        subject: String,
        /// The sequence we expected to be last.
        expected: u64,
    },
    /// JetStream refused an operation.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// The operation.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A stored message did not decode.
    #[error("undecodable {expected} at {subject} seq {sequence}: {reason}")]
    Decode {
        /// The expected message name.
        expected: &'static str,
        /// The subject.
        subject: String,
        /// Stream sequence.
        sequence: u64,
        /// Why.
        reason: String,
    },
}

impl BusError {
    /// The flag a connect-time failure is about and why: a config error names its flag,
    /// anything else is blamed on `--nats.url`.
    pub fn flag_reason(&self) -> (&'static str, String) {
        match self {
            Self::Config { flag, reason } => (flag, reason.clone()),
            other => ("--nats.url", other.to_string()),
        }
    }

    /// How to handle the failure.
    pub fn severity(&self) -> Severity {
        match self {
            Self::Config { .. } | Self::InvalidToken { .. } => Severity::Fatal,
            Self::WrongLastSequence { .. } => Severity::Reset,
            Self::Unavailable { .. } | Self::JetStream { .. } | Self::Decode { .. } => {
                Severity::Temporary
            }
        }
    }

    pub(crate) fn js(what: &'static str, e: impl std::fmt::Display) -> Self {
        Self::JetStream { what, reason: e.to_string() }
    }
}
