//! # lightcl-rpc
//!
//! Every outbound JSON-RPC call of lightcl — the consensus source (`optimism_syncStatus`), our
//! L1 (`eth_getBlockByNumber` batches) and the execution client's Engine API — goes through
//! alloy's `RpcClient` / `RootProvider` running on [`HttpTransport`], our hyper + rustls
//! transport (no OpenSSL, no second OpenTelemetry).
//!
//! What it decides and guarantees:
//! - endpoints are `http://` or `https://` ([`Endpoint::parse`] names the flag otherwise) and
//!   are printed only as `scheme://host:port`: API keys in paths, queries and userinfo never
//!   reach a log, an error, a span or a metric ([`Endpoint`], [`redact_url`]);
//! - `https://` verifies certificates against the system store, or `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` when set ([`tls`]); a TLS failure is an error of kind `tls` naming the
//!   endpoint and the cause;
//! - one timeout bounds a whole call, body included; a body above the limit is refused without
//!   being buffered whole; with a JWT secret every request carries a fresh HS256 token;
//! - batch answers are matched by id, a single answer must carry the request's id;
//! - every failure is one [`RpcError`] that knows its [`Severity`](lightcl_core::Severity)
//!   (retry, re-plan or stop) and a stable [`kind`](RpcError::kind) label for metrics; a 401/403
//!   from an Engine API names `--l2.jwt-secret`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lightcl_rpc::RpcError> {
//! use lightcl_rpc::{Client, ClientConfig, Endpoint};
//! use serde_json::Value;
//!
//! let endpoint = Endpoint::parse("--l1.rpc", "https://eth.example/v2/KEY").expect("valid");
//! let client = Client::new(ClientConfig::new(endpoint))?; // 10 s timeout, 4 MiB limit
//! let status: Value = client.request("optimism_syncStatus", Vec::<Value>::new()).await?;
//! let blocks: Vec<Result<Value, _>> = client
//!     .batch("eth_getBlockByNumber", &[("0x1", false), ("0x2", false)])
//!     .await?; // in request order
//! # let _ = (status, blocks);
//! # Ok(()) }
//! ```

mod client;
mod endpoint;
mod error;
mod jwt;
pub mod tls;
pub mod transport;

pub use client::{Client, ClientConfig, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT};
pub use endpoint::{Endpoint, EndpointError, redact_url};
pub use error::{Cause, HttpError, INVALID_FORKCHOICE_STATE, RpcError, code_severity};
pub use jwt::{JwtFileError, load_jwt_secret};
pub use transport::HttpTransport;

/// Params of a call that takes none: serialized as `[]` (some servers refuse a missing
/// `params`).
pub const NO_PARAMS: Vec<()> = Vec::new();
