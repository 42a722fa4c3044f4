//! # lightcl-jsonrpc
//!
//! A small JSON-RPC 2.0 client over HTTP/1.1 used to talk to the trusted consensus source
//! (`optimism_syncStatus`), our L1 RPC (`eth_getBlockByNumber` batches) and the execution
//! client's Engine API (with a JWT).
//!
//! What it decides and guarantees:
//! - every call is bounded by the configured timeout (connect + request + reading the body);
//! - a response body is never buffered past `max_response_bytes` (default 4 MiB);
//! - with a JWT secret, *every* request carries `Authorization: Bearer <HS256 JWT>` with a fresh
//!   `iat` (the Engine API rejects tokens older than ±60 s);
//! - a batch is sent as one HTTP request and the answers are matched back by `id`, so the result
//!   vector is in request order whatever order the server answers in;
//! - every failure is one [`RpcError`] that knows its [`Severity`] (retry, re-plan or stop) and a
//!   stable short [`kind`](RpcError::kind) label for metrics.
//!
//! Connections are kept alive and reused (hyper-util's pooled client). Only `http://` URLs are
//! supported.
//!
//! ```no_run
//! # async fn demo() -> Result<(), lightcl_jsonrpc::RpcError> {
//! use lightcl_jsonrpc::{Client, ClientConfig};
//! use serde_json::json;
//!
//! let url = "http://127.0.0.1:8545".parse().expect("valid url");
//! let client = Client::new(ClientConfig::new(url))?; // 10 s timeout, 4 MiB limit, no JWT
//! let status = client.call("optimism_syncStatus", json!([])).await?;
//! let chain: String = client.call_as("eth_chainId", json!([])).await?;
//! let blocks = client
//!     .batch(&[
//!         ("eth_getBlockByNumber", json!(["0x1", false])),
//!         ("eth_getBlockByNumber", json!(["0x2", false])),
//!     ])
//!     .await?; // Vec<Result<Value, JsonRpcErrorObject>>, in request order
//! # let _ = (status, chain, blocks);
//! # Ok(()) }
//! ```
//!
//! For the Engine API, load the secret with [`load_jwt_secret`] and put it in
//! [`ClientConfig::jwt`]. A `401` answer then maps to [`Severity::Fatal`] with a message pointing
//! at the JWT secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_rpc_types_engine::{Claims, JwtSecret};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lightcl_core::Severity;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;
use url::Url;

/// Default limit on a response body: 4 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Default per-call timeout: 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a non-2xx body is kept in [`RpcError::HttpStatus`].
const SNIPPET_BYTES: usize = 256;

/// Client configuration.
#[derive(Clone)]
pub struct ClientConfig {
    /// Endpoint, `http://host:port[/path]`.
    pub url: Url,
    /// Bound on one call (connect, send, read the whole body).
    pub timeout: Duration,
    /// Largest accepted response body in bytes.
    pub max_response_bytes: usize,
    /// Engine API JWT secret; when set every request is authenticated.
    pub jwt: Option<JwtSecret>,
}

impl ClientConfig {
    /// A config with the defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_MAX_RESPONSE_BYTES`], no JWT.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            jwt: None,
        }
    }

    /// Set the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Set the JWT secret.
    pub fn with_jwt(mut self, jwt: JwtSecret) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Set the response size limit.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The JWT secret is never printed.
        f.debug_struct("ClientConfig")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("jwt", &self.jwt.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A JSON-RPC error object as sent by the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct JsonRpcErrorObject {
    /// Error code (e.g. -32601 method not found, -38002 invalid forkchoice state).
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// Optional extra data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl JsonRpcErrorObject {
    /// How a caller should react to this error code.
    ///
    /// -32601 (method not found) and -32602 (invalid params) are configuration/version
    /// mismatches → `Fatal`; -38002 (Engine API invalid forkchoice state) → `Reset`; everything
    /// else (internal errors, node-specific codes) → `Temporary`.
    pub fn severity(&self) -> Severity {
        match self.code {
            -32601 | -32602 => Severity::Fatal,
            -38002 => Severity::Reset,
            _ => Severity::Temporary,
        }
    }
}

/// Any failure of a JSON-RPC call.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The client configuration is unusable (e.g. not an `http://` URL).
    #[error("invalid JSON-RPC client config: {0}")]
    Config(String),
    /// No complete answer within the timeout.
    #[error("{method}: timed out after {after:?}")]
    Timeout {
        /// Method (or `batch(n)`).
        method: String,
        /// The configured timeout.
        after: Duration,
    },
    /// Could not connect (refused, unreachable, DNS).
    #[error("{method}: cannot connect: {reason}")]
    Connect {
        /// Method (or `batch(n)`).
        method: String,
        /// Underlying error text.
        reason: String,
    },
    /// The connection broke while sending or receiving.
    #[error("{method}: transport error: {reason}")]
    Transport {
        /// Method (or `batch(n)`).
        method: String,
        /// Underlying error text.
        reason: String,
    },
    /// The server answered with a non-2xx HTTP status.
    #[error("{method}: HTTP {status}{hint}: {body}")]
    HttpStatus {
        /// Method (or `batch(n)`).
        method: String,
        /// HTTP status code.
        status: u16,
        /// First bytes of the body (lossy UTF-8).
        body: String,
        /// Operator hint (e.g. about the JWT secret on 401); may be empty.
        hint: &'static str,
    },
    /// The response body exceeded `max_response_bytes`.
    #[error("{method}: response body larger than {limit} bytes")]
    TooLarge {
        /// Method (or `batch(n)`).
        method: String,
        /// The configured limit.
        limit: usize,
    },
    /// The response body is not JSON.
    #[error("{method}: malformed JSON response: {reason}")]
    Json {
        /// Method (or `batch(n)`).
        method: String,
        /// Parser error.
        reason: String,
    },
    /// The server returned a JSON-RPC error object.
    #[error("{method}: {error}")]
    Rpc {
        /// Method.
        method: String,
        /// The error object.
        error: JsonRpcErrorObject,
    },
    /// Valid JSON but not a valid JSON-RPC response (wrong id, missing result, ...), or a result
    /// that does not deserialize into the requested type.
    #[error("{method}: bad JSON-RPC response: {reason}")]
    BadResponse {
        /// Method (or `batch(n)`).
        method: String,
        /// What was wrong.
        reason: String,
    },
    /// The JWT could not be signed.
    #[error("cannot sign the Engine API JWT: {0}")]
    Jwt(String),
}

impl RpcError {
    /// How a caller should react.
    ///
    /// Timeouts, connect/transport failures, 5xx/408/429, oversized or malformed bodies and bad
    /// response shapes are `Temporary`; 401/403 (JWT secret mismatch), other 4xx, config and JWT
    /// signing errors are `Fatal`; JSON-RPC error objects follow
    /// [`JsonRpcErrorObject::severity`].
    pub fn severity(&self) -> Severity {
        match self {
            Self::Config(_) | Self::Jwt(_) => Severity::Fatal,
            Self::Timeout { .. }
            | Self::Connect { .. }
            | Self::Transport { .. }
            | Self::TooLarge { .. }
            | Self::Json { .. }
            | Self::BadResponse { .. } => Severity::Temporary,
            Self::HttpStatus { status, .. } => match *status {
                408 | 429 | 500..=599 => Severity::Temporary,
                _ => Severity::Fatal,
            },
            Self::Rpc { error, .. } => error.severity(),
        }
    }

    /// Stable short label for metrics: `config`, `timeout`, `connect`, `transport`, `http`,
    /// `too_large`, `json`, `rpc`, `bad_response`, `jwt`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Timeout { .. } => "timeout",
            Self::Connect { .. } => "connect",
            Self::Transport { .. } => "transport",
            Self::HttpStatus { .. } => "http",
            Self::TooLarge { .. } => "too_large",
            Self::Json { .. } => "json",
            Self::Rpc { .. } => "rpc",
            Self::BadResponse { .. } => "bad_response",
            Self::Jwt(_) => "jwt",
        }
    }

    /// The JSON-RPC error object, if the server sent one.
    pub fn rpc_error(&self) -> Option<&JsonRpcErrorObject> {
        match self {
            Self::Rpc { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A failure to load a JWT secret file.
#[derive(Debug, thiserror::Error)]
pub enum JwtFileError {
    /// The file could not be read.
    #[error("cannot read JWT secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not 64 hex digits.
    #[error(
        "JWT secret file {path}: expected 64 hex characters (optionally 0x-prefixed), found {found}"
    )]
    Length {
        /// The file.
        path: PathBuf,
        /// Number of characters found (after trimming and removing `0x`).
        found: usize,
    },
    /// Contains a non-hex character.
    #[error("JWT secret file {path}: not hex: {reason}")]
    Hex {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Load an Engine API JWT secret: 64 hex characters, optional `0x`, surrounding whitespace
/// ignored. The secret itself never appears in an error message.
pub fn load_jwt_secret(path: &Path) -> Result<JwtSecret, JwtFileError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| JwtFileError::Read { path: path.to_owned(), source })?;
    parse_jwt_secret(&text).map_err(|e| match e {
        SecretParse::Length(found) => JwtFileError::Length { path: path.to_owned(), found },
        SecretParse::Hex(reason) => JwtFileError::Hex { path: path.to_owned(), reason },
    })
}

enum SecretParse {
    Length(usize),
    Hex(String),
}

fn parse_jwt_secret(text: &str) -> Result<JwtSecret, SecretParse> {
    let t = text.trim();
    let hex = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    let found = hex.chars().count();
    if found != 64 {
        return Err(SecretParse::Length(found));
    }
    if let Some((i, c)) = hex.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(SecretParse::Hex(format!("invalid character {c:?} at position {i}")));
    }
    JwtSecret::from_hex(hex).map_err(|e| SecretParse::Hex(e.to_string()))
}

/// A JSON-RPC over HTTP client. Cheap to clone (shares the connection pool).
#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    inner: Arc<Inner>,
}

struct Inner {
    uri: Uri,
    config: ClientConfig,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("config", &self.inner.config).finish()
    }
}

impl Client {
    /// Build a client. Fails only on an unusable config (non-`http` URL, zero limit).
    pub fn new(config: ClientConfig) -> Result<Self, RpcError> {
        if config.url.scheme() != "http" {
            return Err(RpcError::Config(format!(
                "unsupported URL scheme {:?} in {} (only http:// is supported)",
                config.url.scheme(),
                config.url
            )));
        }
        if config.max_response_bytes == 0 {
            return Err(RpcError::Config("max_response_bytes must be > 0".into()));
        }
        let uri: Uri = config
            .url
            .as_str()
            .parse()
            .map_err(|e| RpcError::Config(format!("invalid URL {}: {e}", config.url)))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout));
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { http, inner: Arc::new(Inner { uri, config, next_id: AtomicU64::new(1) }) })
    }

    /// The configured endpoint.
    pub fn url(&self) -> &Url {
        &self.inner.config.url
    }

    /// Call `method` with `params` (normally a JSON array; `Value::Null` sends `[]`) and return
    /// its `result`.
    ///
    /// Runs in an info span `jsonrpc.call` (fields `rpc.method`, `server.address`, and
    /// `error.kind` on failure), so the request shows up in traces as a child of the caller.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let span = tracing::info_span!(
            "jsonrpc.call",
            otel.kind = "client",
            rpc.method = method,
            server.address = self.host(),
            error.kind = tracing::field::Empty,
        );
        let res = self.call_inner(method, params).instrument(span.clone()).await;
        record_error(&span, &res);
        res
    }

    async fn call_inner(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": norm(params)});
        let bytes = self.send(method, body).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RpcError::Json { method: method.to_owned(), reason: e.to_string() })?;
        let Value::Object(mut obj) = value else {
            return Err(bad(method, "response is not a JSON object"));
        };
        // A top-level error (e.g. a parse error) may come back with a null id.
        if let Some(err) = obj.remove("error").filter(|e| !e.is_null()) {
            let error = serde_json::from_value::<JsonRpcErrorObject>(err)
                .map_err(|e| bad(method, &format!("malformed error object: {e}")))?;
            return Err(RpcError::Rpc { method: method.to_owned(), error });
        }
        match obj.get("id") {
            Some(v) if v.as_u64() == Some(id) => {}
            other => {
                return Err(bad(
                    method,
                    &format!("response id {other:?} does not match request id {id}"),
                ));
            }
        }
        obj.remove("result").ok_or_else(|| bad(method, "response has neither result nor error"))
    }

    /// [`call`](Self::call) and deserialize the result into `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, RpcError> {
        let v = self.call(method, params).await?;
        serde_json::from_value(v).map_err(|e| bad(method, &format!("unexpected result: {e}")))
    }

    /// Send `calls` as ONE HTTP request (a JSON-RPC batch). The answers are matched by id and
    /// returned in request order; each is the result or the server's error object for that call.
    /// A missing or duplicated answer fails the whole batch ([`RpcError::BadResponse`]).
    ///
    /// Runs in an info span `jsonrpc.batch` (fields `rpc.batch_size`, `rpc.method` of the first
    /// call, `server.address`, and `error.kind` on failure).
    pub async fn batch(
        &self,
        calls: &[(&str, Value)],
    ) -> Result<Vec<Result<Value, JsonRpcErrorObject>>, RpcError> {
        let span = tracing::info_span!(
            "jsonrpc.batch",
            otel.kind = "client",
            rpc.batch_size = calls.len(),
            rpc.method = calls.first().map(|c| c.0).unwrap_or(""),
            server.address = self.host(),
            error.kind = tracing::field::Empty,
        );
        let res = self.batch_inner(calls).instrument(span.clone()).await;
        record_error(&span, &res);
        res
    }

    async fn batch_inner(
        &self,
        calls: &[(&str, Value)],
    ) -> Result<Vec<Result<Value, JsonRpcErrorObject>>, RpcError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let label = format!("batch({})", calls.len());
        let first = self.inner.next_id.fetch_add(calls.len() as u64, Ordering::Relaxed);
        let body = Value::Array(
            calls
                .iter()
                .enumerate()
                .map(|(i, (m, p))| json!({"jsonrpc": "2.0", "id": first + i as u64, "method": m, "params": norm(p.clone())}))
                .collect(),
        );
        let bytes = self.send(&label, body).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RpcError::Json { method: label.clone(), reason: e.to_string() })?;
        let answers = match value {
            Value::Array(a) => a,
            // A server that rejects the whole batch answers with a single error object.
            Value::Object(mut o) => {
                if let Some(err) = o.remove("error").filter(|e| !e.is_null()) {
                    let error = serde_json::from_value::<JsonRpcErrorObject>(err)
                        .map_err(|e| bad(&label, &format!("malformed error object: {e}")))?;
                    return Err(RpcError::Rpc { method: label, error });
                }
                return Err(bad(&label, "batch response is not an array"));
            }
            _ => return Err(bad(&label, "batch response is not an array")),
        };
        let mut out: Vec<Option<Result<Value, JsonRpcErrorObject>>> = vec![None; calls.len()];
        for answer in answers {
            let Value::Object(mut obj) = answer else {
                return Err(bad(&label, "batch answer is not an object"));
            };
            let idx = obj
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| id.checked_sub(first))
                .filter(|i| *i < calls.len() as u64)
                .ok_or_else(|| {
                    bad(&label, &format!("answer with unknown id {:?}", obj.get("id")))
                })? as usize;
            if out[idx].is_some() {
                return Err(bad(
                    &label,
                    &format!("duplicate answer for id {}", first + idx as u64),
                ));
            }
            let entry = if let Some(err) = obj.remove("error").filter(|e| !e.is_null()) {
                Err(serde_json::from_value::<JsonRpcErrorObject>(err)
                    .map_err(|e| bad(&label, &format!("malformed error object: {e}")))?)
            } else {
                Ok(obj.remove("result").ok_or_else(|| {
                    bad(
                        &label,
                        &format!(
                            "answer for id {} has neither result nor error",
                            first + idx as u64
                        ),
                    )
                })?)
            };
            out[idx] = Some(entry);
        }
        out.into_iter()
            .enumerate()
            .map(|(i, a)| {
                a.ok_or_else(|| {
                    bad(&label, &format!("no answer for id {} ({})", first + i as u64, calls[i].0))
                })
            })
            .collect()
    }

    fn host(&self) -> String {
        let u = &self.inner.config.url;
        match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => String::new(),
        }
    }

    /// POST one JSON body and read the response body within the timeout and size limit.
    async fn send(&self, method: &str, body: Value) -> Result<Bytes, RpcError> {
        let cfg = &self.inner.config;
        let fut = async {
            let mut req = Request::post(self.inner.uri.clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(secret) = &cfg.jwt {
                let token = secret
                    .encode(&Claims { iat: unix_secs(), exp: None })
                    .map_err(|e| RpcError::Jwt(e.to_string()))?;
                req = req.header(AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| RpcError::Config(format!("cannot build request: {e}")))?;
            let resp = self.http.request(req).await.map_err(|e| {
                let reason = error_chain(&e);
                if e.is_connect() {
                    RpcError::Connect { method: method.to_owned(), reason }
                } else {
                    RpcError::Transport { method: method.to_owned(), reason }
                }
            })?;
            let status = resp.status();
            if !status.is_success() {
                let snippet = match read_limited(resp.into_body(), SNIPPET_BYTES * 16, method).await
                {
                    Ok(b) => snippet(&b),
                    Err(_) => String::from("<unreadable body>"),
                };
                let hint = if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
                {
                    " (authentication refused: check that the JWT secret matches the server's)"
                } else {
                    ""
                };
                return Err(RpcError::HttpStatus {
                    method: method.to_owned(),
                    status: status.as_u16(),
                    body: snippet,
                    hint,
                });
            }
            let declared = resp
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > cfg.max_response_bytes as u64) {
                return Err(RpcError::TooLarge {
                    method: method.to_owned(),
                    limit: cfg.max_response_bytes,
                });
            }
            read_limited(resp.into_body(), cfg.max_response_bytes, method).await
        };
        tokio::time::timeout(cfg.timeout, fut)
            .await
            .map_err(|_| RpcError::Timeout { method: method.to_owned(), after: cfg.timeout })?
    }
}

/// JSON-RPC params: `null` becomes `[]` (some servers reject a missing/null params).
fn norm(params: Value) -> Value {
    if params.is_null() { Value::Array(Vec::new()) } else { params }
}

fn record_error<T>(span: &tracing::Span, res: &Result<T, RpcError>) {
    if let Err(e) = res {
        span.record("error.kind", e.kind());
    }
}

fn bad(method: &str, reason: &str) -> RpcError {
    RpcError::BadResponse { method: method.to_owned(), reason: reason.to_owned() }
}

async fn read_limited(
    mut body: hyper::body::Incoming,
    limit: usize,
    method: &str,
) -> Result<Bytes, RpcError> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| RpcError::Transport {
            method: method.to_owned(),
            reason: error_chain(&e),
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(RpcError::TooLarge { method: method.to_owned(), limit });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(SNIPPET_BYTES)]);
    s.trim().to_owned()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_parsing() {
        let hex = "ab".repeat(32);
        assert!(parse_jwt_secret(&hex).is_ok());
        assert!(parse_jwt_secret(&format!("  0x{hex}\n")).is_ok());
        assert!(matches!(parse_jwt_secret(&hex[..62]), Err(SecretParse::Length(62))));
        let bad_hex = format!("zz{}", &hex[2..]);
        assert!(matches!(parse_jwt_secret(&bad_hex), Err(SecretParse::Hex(_))));
    }

    #[test]
    fn severities_and_kinds() {
        let http = |status| RpcError::HttpStatus {
            method: "m".into(),
            status,
            body: String::new(),
            hint: "",
        };
        assert_eq!(http(401).severity(), Severity::Fatal);
        assert_eq!(http(503).severity(), Severity::Temporary);
        assert_eq!(http(404).severity(), Severity::Fatal);
        assert_eq!(http(500).kind(), "http");
        let rpc = |code| RpcError::Rpc {
            method: "m".into(),
            error: JsonRpcErrorObject { code, message: String::new(), data: None },
        };
        assert_eq!(rpc(-32601).severity(), Severity::Fatal);
        assert_eq!(rpc(-38002).severity(), Severity::Reset);
        assert_eq!(rpc(-32000).severity(), Severity::Temporary);
        assert_eq!(rpc(-32000).kind(), "rpc");
    }

    #[test]
    fn only_http_urls() {
        let err =
            Client::new(ClientConfig::new("https://example.com".parse().unwrap())).unwrap_err();
        assert_eq!(err.kind(), "config");
        assert_eq!(err.severity(), Severity::Fatal);
    }
}
