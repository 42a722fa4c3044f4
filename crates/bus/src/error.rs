//! Bus errors.

use std::path::PathBuf;
use std::time::Duration;

use lightcl_core::Severity;
use lightcl_proto::ProtoError;

/// The underlying cause of a NATS or JetStream failure (an `async_nats` error, or one of the
/// typed errors below).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure talking to NATS / JetStream.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A configuration value is unusable (names the flag).
    #[error("{flag}: {source}")]
    Config {
        /// The flag, e.g. `--nats.creds`.
        flag: &'static str,
        /// What is wrong with it.
        #[source]
        source: ConfigProblem,
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
    #[error("NATS unavailable during {what}: {source}")]
    Unavailable {
        /// The operation.
        what: &'static str,
        /// Why.
        #[source]
        source: BoxError,
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
    #[error("JetStream {what}: {source}")]
    JetStream {
        /// The operation.
        what: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A stored message did not decode.
    #[error("undecodable {expected} at {subject} seq {sequence}: {source}")]
    Decode {
        /// The expected message name.
        expected: &'static str,
        /// The subject (or KV key).
        subject: String,
        /// Stream sequence (0 for a KV value).
        sequence: u64,
        /// Why.
        #[source]
        source: DecodeError,
    },
}

impl BusError {
    /// The flag a connect-time failure is about and why: a config error names its flag,
    /// anything else is blamed on `--nats.url`.
    pub fn flag_reason(&self) -> (&'static str, String) {
        match self {
            Self::Config { flag, source } => (flag, source.to_string()),
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

    pub(crate) fn js(what: &'static str, e: impl Into<BoxError>) -> Self {
        Self::JetStream { what, source: e.into() }
    }

    pub(crate) fn unavailable(what: &'static str, e: impl Into<BoxError>) -> Self {
        Self::Unavailable { what, source: e.into() }
    }
}

/// What is wrong with a NATS flag.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// A secret file cannot be read.
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A secret file holds nothing but whitespace.
    #[error("{} is empty", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A credentials or CA file is missing (or a directory).
    #[error("{} is not a readable file", .path.display())]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// A flag that only works together with another one was given alone.
    #[error("requires {other}")]
    Requires {
        /// The missing flag.
        other: &'static str,
    },
    /// A TLS certificate or key file is not usable PEM (or the key is not the certificate's).
    #[error("{}: {reason}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why (never the file's content).
        reason: String,
    },
    /// The credentials file does not parse.
    #[error("{}: {source}", .path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server URL (list) is unusable.
    #[error("{url}: {source}")]
    Url {
        /// The URL as printed (`scheme://host:port`).
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
}

/// Why a bus payload is not the expected message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Its `Lightcl-Message` header names another message.
    #[error("carries {found}, expected {expected}")]
    WrongMessage {
        /// The name in the header.
        found: String,
        /// The expected name.
        expected: &'static str,
    },
    /// The payload is not valid protobuf for the message.
    #[error("protobuf: {source}")]
    Protobuf {
        /// Payload length in bytes.
        len: usize,
        /// Why prost refused it.
        #[source]
        source: prost::DecodeError,
    },
    /// It decoded but does not convert to the core type (a 31-byte hash, a missing ref).
    #[error(transparent)]
    Convert(#[from] ProtoError),
}

/// An error about one named thing: a stream, a subject, a KV key.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {source}")]
pub struct Named {
    /// The stream, subject or key.
    pub name: String,
    /// What went wrong with it.
    #[source]
    pub source: BoxError,
}

impl Named {
    pub(crate) fn new(name: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self { name: name.into(), source: source.into() }
    }
}

/// No PubAck arrived in time.
#[derive(Debug, thiserror::Error)]
#[error("no PubAck within {0:?}")]
pub struct NoPubAck(pub Duration);
