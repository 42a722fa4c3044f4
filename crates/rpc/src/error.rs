//! Every failure of an outbound call, classified: how to react ([`Severity`]) and a stable
//! short [`kind`](RpcError::kind) label for metrics. Messages name the endpoint as
//! `scheme://host:port` only.

use std::sync::Arc;
use std::time::Duration;

use alloy_json_rpc::RpcError as AlloyRpcError;
use alloy_transport::{TransportError, TransportErrorKind};
use lightcl_core::Severity;

/// JSON-RPC error code: the Engine API refused the forkchoice state (labels inconsistent).
pub const INVALID_FORKCHOICE_STATE: i64 = -38002;

/// The cause of a failure below JSON-RPC (a hyper, I/O or rustls error), kept whole: it is the
/// error's [`source`](std::error::Error::source), and messages show it on one line.
pub type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A failure below JSON-RPC: connecting, TLS, HTTP, limits. Raised by the transport and carried
/// through alloy as a custom transport error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    /// No complete answer (connect, send, whole body) within the timeout.
    #[error("{endpoint} {method}: timed out after {after:?}")]
    Timeout {
        /// Redacted endpoint.
        endpoint: String,
        /// Method, or `batch(n)`.
        method: String,
        /// The timeout.
        after: Duration,
    },
    /// TCP connect failed (refused, unreachable, DNS).
    #[error("{endpoint} {method}: cannot connect: {}", chain(.source.as_ref()))]
    Connect {
        /// Redacted endpoint.
        endpoint: String,
        /// Method, or `batch(n)`.
        method: String,
        /// Cause (shown with its whole chain).
        #[source]
        source: Cause,
    },
    /// The TLS handshake failed (untrusted CA, wrong name, not TLS).
    #[error("{endpoint} {method}: TLS handshake failed: {}", tls_reason(.source.as_ref()))]
    Tls {
        /// Redacted endpoint.
        endpoint: String,
        /// Method, or `batch(n)`.
        method: String,
        /// Cause: an error chain holding a rustls error (shown as that, with a hint).
        #[source]
        source: Cause,
    },
    /// The connection broke while sending or receiving.
    #[error("{endpoint} {method}: transport error: {}", chain(.source.as_ref()))]
    Transport {
        /// Redacted endpoint.
        endpoint: String,
        /// Method, or `batch(n)`.
        method: String,
        /// Cause (shown with its whole chain).
        #[source]
        source: Cause,
    },
    /// A non-2xx HTTP status.
    #[error("{endpoint} {method}: HTTP {status}{hint}: {body}")]
    Status {
        /// Redacted endpoint.
        endpoint: String,
        /// Method, or `batch(n)`.
        method: String,
        /// HTTP status code.
        status: u16,
        /// The start of the body, secrets scrubbed.
        body: String,
        /// Operator hint (which flag to check); may be empty.
        hint: &'static str,
    },
    /// The body is larger than the limit (refused before it is buffered whole).
    #[error("{endpoint} {method}: response body larger than {limit} bytes")]
    TooLarge {
        /// Redacted endpoint.
        endpoint: String,
        /// Method, or `batch(n)`.
        method: String,
        /// The limit.
        limit: usize,
    },
    /// Valid JSON-RPC framing but not an answer to what was asked (wrong id, a batch answered
    /// with a non-error single object).
    #[error("{endpoint} {method}: bad JSON-RPC response: {reason}")]
    BadResponse {
        /// Redacted endpoint.
        endpoint: String,
        /// Method, or `batch(n)`.
        method: String,
        /// What was wrong.
        reason: String,
    },
    /// The Engine API JWT could not be signed.
    #[error("cannot sign the Engine API JWT: {0}")]
    Jwt(String),
}

impl HttpError {
    fn severity(&self) -> Severity {
        match self {
            Self::Jwt(_) => Severity::Fatal,
            Self::Status { status, .. } => match *status {
                408 | 429 | 500..=599 => Severity::Temporary,
                _ => Severity::Fatal,
            },
            Self::Timeout { .. }
            | Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Transport { .. }
            | Self::TooLarge { .. }
            | Self::BadResponse { .. } => Severity::Temporary,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Connect { .. } => "connect",
            Self::Tls { .. } => "tls",
            Self::Transport { .. } => "transport",
            Self::Status { .. } => "http",
            Self::TooLarge { .. } => "too_large",
            Self::BadResponse { .. } => "bad_response",
            Self::Jwt(_) => "jwt",
        }
    }
}

/// Any failure of a call made through [`Client`](crate::Client).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The client could not be built (bad config).
    #[error("invalid JSON-RPC client config: {0}")]
    Config(String),
    /// Below JSON-RPC: connect, TLS, HTTP status, timeout, size.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The server answered with a JSON-RPC error object.
    #[error("{endpoint} {method}: JSON-RPC error {code}: {message}")]
    Rpc {
        /// Redacted endpoint.
        endpoint: String,
        /// Method.
        method: String,
        /// Error code (e.g. -32601 method not found, -38002 invalid forkchoice state).
        code: i64,
        /// Message, secrets scrubbed.
        message: String,
    },
    /// The answer is not JSON, or its result does not have the expected type.
    #[error("{endpoint} {method}: cannot decode the answer: {reason}")]
    Decode {
        /// Redacted endpoint.
        endpoint: String,
        /// Method.
        method: String,
        /// Parser error (with a bounded excerpt of the text).
        reason: String,
    },
    /// A batch came back without an answer for one of its calls, or with `null` where a value
    /// was required.
    #[error("{endpoint} {method}: {reason}")]
    MissingAnswer {
        /// Redacted endpoint.
        endpoint: String,
        /// Method.
        method: String,
        /// Which answer.
        reason: String,
    },
}

impl RpcError {
    /// How a caller reacts. Timeouts, connect/TLS/transport failures, 5xx/408/429, oversized or
    /// malformed answers are `Temporary`; 401/403 and other 4xx, config and JWT signing errors
    /// are `Fatal`; JSON-RPC error objects follow [`code_severity`].
    pub fn severity(&self) -> Severity {
        match self {
            Self::Config(_) => Severity::Fatal,
            Self::Http(e) => e.severity(),
            Self::Rpc { code, .. } => code_severity(*code),
            Self::Decode { .. } | Self::MissingAnswer { .. } => Severity::Temporary,
        }
    }

    /// Stable metric label: `config`, `timeout`, `connect`, `tls`, `transport`, `http`,
    /// `too_large`, `bad_response`, `jwt`, `rpc`, `json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Http(e) => e.kind(),
            Self::Rpc { .. } => "rpc",
            Self::Decode { .. } => "json",
            Self::MissingAnswer { .. } => "bad_response",
        }
    }

    /// The JSON-RPC error code, if the server sent an error object.
    pub fn rpc_code(&self) -> Option<i64> {
        match self {
            Self::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered with a non-2xx one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Self::Http(HttpError::Status { status, .. }) => Some(*status),
            _ => None,
        }
    }

    /// Classifies an error alloy returned for `method` on `endpoint`.
    pub(crate) fn from_alloy(
        endpoint: &crate::Endpoint,
        method: &str,
        err: TransportError,
    ) -> Self {
        let ep = endpoint.redacted().to_owned();
        let method = method.to_owned();
        match err {
            AlloyRpcError::ErrorResp(p) => Self::Rpc {
                endpoint: ep,
                method,
                code: p.code,
                message: bounded(&endpoint.scrub(&p.message)),
            },
            AlloyRpcError::NullResp => Self::MissingAnswer {
                endpoint: ep,
                method,
                reason: "null answer where a value was required".into(),
            },
            AlloyRpcError::DeserError { err, text } => Self::Decode {
                endpoint: ep,
                method,
                reason: format!("{err} in {}", bounded(&endpoint.scrub(&text))),
            },
            AlloyRpcError::SerError(e) => {
                Self::Config(format!("{method}: cannot encode params: {e}"))
            }
            AlloyRpcError::UnsupportedFeature(f) => {
                Self::Config(format!("{method}: unsupported: {f}"))
            }
            AlloyRpcError::LocalUsageError(e) => Self::Config(format!("{method}: {e}")),
            AlloyRpcError::Transport(kind) => match kind {
                TransportErrorKind::Custom(e) | TransportErrorKind::NonRetryable(e) => {
                    match e.downcast::<HttpError>() {
                        Ok(h) => Self::Http(*h),
                        Err(other) => Self::Http(HttpError::Transport {
                            endpoint: ep,
                            method,
                            source: Arc::from(other),
                        }),
                    }
                }
                TransportErrorKind::MissingBatchResponse(id) => Self::MissingAnswer {
                    endpoint: ep,
                    method,
                    reason: format!("the batch answer has no response for request id {id}"),
                },
                other => Self::Http(HttpError::Transport {
                    endpoint: ep,
                    method,
                    source: Arc::new(other),
                }),
            },
        }
    }
}

/// How to react to a JSON-RPC error code: -32601 (method not found) and -32602 (invalid
/// params) are configuration or version mismatches → `Fatal`; -38002 (invalid forkchoice
/// state) → `Reset`; everything else (internal errors, node-specific codes) → `Temporary`.
pub fn code_severity(code: i64) -> Severity {
    match code {
        -32601 | -32602 => Severity::Fatal,
        INVALID_FORKCHOICE_STATE => Severity::Reset,
        _ => Severity::Temporary,
    }
}

/// An error and its causes on one line (`a: b: c`): hyper's errors say little at the top
/// level.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// The rustls failure in a TLS error's chain, described with a hint (the whole chain when
/// there is none).
fn tls_reason(e: &(dyn std::error::Error + 'static)) -> String {
    crate::tls::tls_cause(e).unwrap_or_else(|| chain(e))
}

/// At most 256 characters of server-provided text, so an error message stays one line.
pub(crate) fn bounded(text: &str) -> String {
    const MAX: usize = 256;
    let t = text.trim();
    match t.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}
