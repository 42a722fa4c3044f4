//! The HTTP transport under alloy's `RpcClient`: hyper + rustls, with the guarantees alloy's
//! own HTTP transport lacks. One timeout bounds the whole exchange (connect, TLS, send, reading
//! the body); a body above the limit is refused without being buffered whole; with a JWT secret
//! every request carries a fresh HS256 token; a single answer must carry the request's id (alloy
//! matches batch answers by id itself); every failure is an [`HttpError`] naming the endpoint as
//! `scheme://host:port`.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy_json_rpc::{Id, RequestPacket, ResponsePacket, ResponsePayload};
use alloy_rpc_types_engine::{Claims, JwtSecret};
use alloy_transport::{TransportError, TransportErrorKind, TransportFut};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tracing::Instrument;

use crate::Endpoint;
use crate::error::{HttpError, bounded};
use crate::tls::{TrustRoots, https_connector, tls_cause};

/// How much of a non-2xx body is read for the error message.
const ERROR_BODY_BYTES: usize = 4096;

/// Settings of one transport.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Where to send requests.
    pub endpoint: Endpoint,
    /// Bound on one exchange, body included.
    pub timeout: Duration,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
    /// Engine API secret: every request is authenticated with it.
    pub jwt: Option<JwtSecret>,
    /// Trusted CAs for `https://`.
    pub roots: TrustRoots,
}

/// A `tower::Service<RequestPacket>` that alloy's `RpcClient` runs on. Cheap to clone (the
/// connection pool is shared).
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    basic_auth: Option<HeaderValue>,
    config: TransportConfig,
    host_port: String,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the JWT secret, never the URL's secret parts.
        f.debug_struct("HttpTransport")
            .field("endpoint", &self.inner.config.endpoint)
            .field("timeout", &self.inner.config.timeout)
            .field("max_response_bytes", &self.inner.config.max_response_bytes)
            .field("jwt", &self.inner.config.jwt.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HttpTransport {
    /// Builds the transport; fails only on an unusable config (the message names no secret).
    pub fn new(config: TransportConfig) -> Result<Self, String> {
        if config.max_response_bytes == 0 {
            return Err("max_response_bytes must be above zero".into());
        }
        if config.timeout.is_zero() {
            return Err("timeout must be above zero".into());
        }
        // Userinfo travels as HTTP basic auth, not in the request target.
        let mut url = config.endpoint.url().clone();
        let basic_auth = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            let user = percent_decode(url.username());
            let pass = url.password().map(percent_decode).unwrap_or_default();
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            let mut v = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| format!("{}: userinfo is not a valid header", config.endpoint))?;
            v.set_sensitive(true);
            let _ = url.set_username("");
            let _ = url.set_password(None);
            Some(v)
        };
        let uri: Uri = url
            .as_str()
            .parse()
            .map_err(|_| format!("{}: not a valid HTTP request URI", config.endpoint))?;
        let http = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https_connector(&config.roots, config.timeout));
        let host_port = config.endpoint.host_port();
        Ok(Self { inner: Arc::new(Inner { http, uri, basic_auth, config, host_port }) })
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.config.endpoint
    }

    async fn exchange(self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let (label, span) = match &req {
            RequestPacket::Single(r) => (
                r.method().to_owned(),
                tracing::info_span!(
                    "jsonrpc.call",
                    otel.kind = "client",
                    rpc.method = r.method(),
                    server.address = %self.inner.host_port,
                    error.kind = tracing::field::Empty,
                ),
            ),
            RequestPacket::Batch(v) => (
                format!("batch({})", v.len()),
                tracing::info_span!(
                    "jsonrpc.batch",
                    otel.kind = "client",
                    rpc.batch_size = v.len(),
                    rpc.method = v.first().map(|r| r.method()).unwrap_or(""),
                    server.address = %self.inner.host_port,
                    error.kind = tracing::field::Empty,
                ),
            ),
        };
        let res = self.exchange_inner(&req, &label).instrument(span.clone()).await;
        if let Err(e) = &res {
            span.record("error.kind", transport_error_kind(e));
        }
        res
    }

    async fn exchange_inner(
        &self,
        req: &RequestPacket,
        label: &str,
    ) -> Result<ResponsePacket, TransportError> {
        let body = serde_json::to_vec(req).map_err(TransportError::ser_err)?;
        let cfg = &self.inner.config;
        let bytes =
            tokio::time::timeout(cfg.timeout, self.post(label, body)).await.map_err(|_| {
                custom(HttpError::Timeout {
                    endpoint: cfg.endpoint.redacted().to_owned(),
                    method: label.to_owned(),
                    after: cfg.timeout,
                })
            })??;
        let packet = decode_response(&bytes).map_err(|e| {
            let excerpt = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            TransportError::deser_err(e, cfg.endpoint.scrub(&excerpt))
        })?;
        check_answer(req, packet).map_err(|reason| match reason {
            Mismatch::WholeBatchFailed(payload) => TransportError::ErrorResp(payload),
            Mismatch::Bad(reason) => custom(HttpError::BadResponse {
                endpoint: cfg.endpoint.redacted().to_owned(),
                method: label.to_owned(),
                reason,
            }),
        })
    }

    /// POSTs `body` and reads the answer's body within the size limit.
    async fn post(&self, label: &str, body: Vec<u8>) -> Result<Bytes, TransportError> {
        let cfg = &self.inner.config;
        let ep = || cfg.endpoint.redacted().to_owned();
        let mut req = Request::post(self.inner.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secret) = &cfg.jwt {
            let token = secret
                .encode(&Claims { iat: unix_secs(), exp: None })
                .map_err(|e| custom(HttpError::Jwt(e.to_string())))?;
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| custom(HttpError::Jwt(e.to_string())))?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        } else if let Some(basic) = &self.inner.basic_auth {
            req = req.header(AUTHORIZATION, basic.clone());
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| {
            custom(HttpError::Transport {
                endpoint: ep(),
                method: label.into(),
                source: Arc::new(e),
            })
        })?;
        let resp = self.inner.http.request(req).await.map_err(|e| {
            let method = label.to_owned();
            if tls_cause(&e).is_some() {
                custom(HttpError::Tls { endpoint: ep(), method, source: Arc::new(e) })
            } else if e.is_connect() {
                custom(HttpError::Connect { endpoint: ep(), method, source: Arc::new(e) })
            } else {
                custom(HttpError::Transport { endpoint: ep(), method, source: Arc::new(e) })
            }
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = match read_limited(resp.into_body(), ERROR_BODY_BYTES).await {
                Ok(Ok(b)) => bounded(&cfg.endpoint.scrub(&String::from_utf8_lossy(&b))),
                Ok(Err(_)) => "<body longer than 4 KiB>".into(),
                Err(_) => "<unreadable body>".into(),
            };
            let hint = match (status, cfg.jwt.is_some()) {
                (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, true) => {
                    " (the execution client refused our JWT: check that --l2.jwt-secret is the EL's secret)"
                }
                (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, false) => {
                    " (the endpoint refused the request: check the credentials or API key in its URL)"
                }
                _ => "",
            };
            return Err(custom(HttpError::Status {
                endpoint: ep(),
                method: label.into(),
                status: status.as_u16(),
                body,
                hint,
            }));
        }
        let too_large = || {
            custom(HttpError::TooLarge {
                endpoint: ep(),
                method: label.into(),
                limit: cfg.max_response_bytes,
            })
        };
        let declared = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cfg.max_response_bytes as u64) {
            return Err(too_large());
        }
        match read_limited(resp.into_body(), cfg.max_response_bytes).await {
            Ok(Ok(b)) => Ok(b),
            Ok(Err(Oversized)) => Err(too_large()),
            Err(e) => Err(custom(HttpError::Transport {
                endpoint: ep(),
                method: label.into(),
                source: Arc::new(e),
            })),
        }
    }
}

impl tower::Service<RequestPacket> for HttpTransport {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        Box::pin(self.clone().exchange(req))
    }
}

/// Parses a JSON-RPC answer (one object or a batch array). Public for the decoder fuzz tests.
pub fn decode_response(bytes: &[u8]) -> Result<ResponsePacket, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// Why an answer does not answer the request.
enum Mismatch {
    /// A server that refuses a whole batch answers with one error object.
    WholeBatchFailed(alloy_json_rpc::ErrorPayload),
    /// Anything else that does not fit.
    Bad(String),
}

/// Checks that `answer` answers `req`: a single call's answer carries its id (an error object
/// with a null id is a server-level failure and kept), a batch gets an array.
fn check_answer(req: &RequestPacket, answer: ResponsePacket) -> Result<ResponsePacket, Mismatch> {
    match (req, answer) {
        (RequestPacket::Single(r), ResponsePacket::Single(a)) => {
            let null_id_error =
                matches!(a.id, Id::None) && matches!(a.payload, ResponsePayload::Failure(_));
            if a.id != *r.id() && !null_id_error {
                return Err(Mismatch::Bad(format!(
                    "answer id {} does not match request id {}",
                    a.id,
                    r.id()
                )));
            }
            Ok(ResponsePacket::Single(a))
        }
        (RequestPacket::Single(_), ResponsePacket::Batch(_)) => {
            Err(Mismatch::Bad("a batch answer to a single call".into()))
        }
        (RequestPacket::Batch(_), ResponsePacket::Batch(v)) => Ok(ResponsePacket::Batch(v)),
        (RequestPacket::Batch(_), ResponsePacket::Single(a)) => match a.payload {
            ResponsePayload::Failure(p) => Err(Mismatch::WholeBatchFailed(p)),
            ResponsePayload::Success(_) => {
                Err(Mismatch::Bad("a single success object answering a batch".into()))
            }
        },
    }
}

/// The body is larger than the limit.
struct Oversized;

/// Reads `body` up to `limit` bytes; stops reading (and drops the connection) past it.
async fn read_limited(
    mut body: hyper::body::Incoming,
    limit: usize,
) -> Result<Result<Bytes, Oversized>, hyper::Error> {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if buf.len() + data.len() > limit {
                return Ok(Err(Oversized));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Ok(Bytes::from(buf)))
}

fn custom(e: HttpError) -> TransportError {
    TransportErrorKind::custom(e)
}

/// The metric label of a transport-level failure (for the span's `error.kind`).
fn transport_error_kind(e: &TransportError) -> &'static str {
    use alloy_json_rpc::RpcError as E;
    match e {
        E::Transport(TransportErrorKind::Custom(inner)) => inner
            .downcast_ref::<HttpError>()
            .map_or("transport", |h| crate::RpcError::Http(h.clone()).kind()),
        E::DeserError { .. } => "json",
        E::ErrorResp(_) => "rpc",
        _ => "transport",
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
