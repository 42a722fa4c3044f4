//! [`TelemetryError`], in a module of its own so `otlp` can use it without importing the crate
//! root that re-exports `otlp`.

/// Why [`init`](crate::init) failed. The configuration errors ([`Filter`](Self::Filter),
/// [`Exporter`](Self::Exporter)) display as `<VARIABLE>: <reason>`.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `init` was already called in this process (or another subscriber is installed).
    #[error("telemetry already initialised in this process")]
    AlreadyInitialized,
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG: invalid filter: {0}")]
    Filter(String),
    /// OTLP export requested outside a tokio runtime.
    #[error("OTLP export needs a running tokio runtime (call init inside #[tokio::main])")]
    NoRuntime,
    /// The OTLP export settings are invalid (a bad endpoint or protocol) or the exporter could
    /// not be built. The message starts with the variable at fault, e.g.
    /// `OTEL_EXPORTER_OTLP_PROTOCOL: unsupported OTLP protocol "http/json"; accepted values:
    /// grpc, http/protobuf`, and shows an endpoint only as `scheme://host:port`.
    #[error("{0}")]
    Exporter(String),
}
