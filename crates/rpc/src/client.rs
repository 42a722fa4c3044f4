//! [`Client`]: alloy's `RootProvider` / `RpcClient` on our [`HttpTransport`], with every error
//! classified into an [`RpcError`].

use std::time::Duration;

use alloy_json_rpc::{RpcRecv, RpcSend};
use alloy_provider::RootProvider;
use alloy_rpc_client::RpcClient;
use alloy_rpc_types_engine::JwtSecret;
use alloy_transport::TransportError;
use serde_json::Value;

use crate::tls::TrustRoots;
use crate::transport::{HttpTransport, TransportConfig};
use crate::{Endpoint, RpcError};

/// Default limit on a response body: 4 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Default bound on one call: 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The endpoint (`http://` or `https://`).
    pub endpoint: Endpoint,
    /// Bound on one call: connect, TLS, send, read the whole body.
    pub timeout: Duration,
    /// Largest accepted response body.
    pub max_response_bytes: usize,
    /// Engine API secret; when set every request carries a fresh HS256 JWT.
    pub jwt: Option<JwtSecret>,
    /// Trusted CAs for `https://` (default: the system store, `SSL_CERT_FILE`/`SSL_CERT_DIR`).
    pub roots: TrustRoots,
}

impl ClientConfig {
    /// Defaults: [`DEFAULT_TIMEOUT`], [`DEFAULT_MAX_RESPONSE_BYTES`], no JWT, system roots.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            jwt: None,
            roots: TrustRoots::System,
        }
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the JWT secret.
    pub fn with_jwt(mut self, jwt: JwtSecret) -> Self {
        self.jwt = Some(jwt);
        self
    }

    /// Sets the body limit.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Sets the trusted CAs.
    pub fn with_roots(mut self, roots: TrustRoots) -> Self {
        self.roots = roots;
        self
    }
}

/// A JSON-RPC client of one endpoint. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Client {
    rpc: RpcClient,
    provider: RootProvider,
    endpoint: Endpoint,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("endpoint", &self.endpoint).finish()
    }
}

impl Client {
    /// Builds a client. Fails only on an unusable config (zero limit or timeout).
    pub fn new(config: ClientConfig) -> Result<Self, RpcError> {
        let endpoint = config.endpoint.clone();
        let transport = HttpTransport::new(TransportConfig {
            endpoint: config.endpoint,
            timeout: config.timeout,
            max_response_bytes: config.max_response_bytes,
            jwt: config.jwt,
            roots: config.roots,
        })
        .map_err(RpcError::Config)?;
        let rpc = RpcClient::new(transport, false);
        let provider = RootProvider::new(rpc.clone());
        Ok(Self { rpc, provider, endpoint })
    }

    /// The endpoint (displays as `scheme://host:port`).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// alloy's provider, for typed calls (`eth_chainId`, the Engine API); classify its errors
    /// with [`classify`](Self::classify).
    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    /// Classifies an error of a call to `method` made through [`provider`](Self::provider).
    pub fn classify(&self, method: &str, err: TransportError) -> RpcError {
        RpcError::from_alloy(&self.endpoint, method, err)
    }

    /// Calls `method` with `params` (a tuple or array; `[(); 0]`-like empty params are sent as
    /// `[]`) and decodes its result into `R`.
    pub async fn request<P: RpcSend, R: RpcRecv>(
        &self,
        method: &str,
        params: P,
    ) -> Result<R, RpcError> {
        self.rpc.request(method.to_owned(), params).await.map_err(|e| self.classify(method, e))
    }

    /// [`request`](Self::request) with JSON params (`null` is sent as `[]`) and a JSON result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        self.request(method, no_null(params)).await
    }

    /// Several different calls in ONE HTTP request (a JSON-RPC batch), JSON in and out;
    /// answers in request order (matched by id).
    pub async fn batch_calls(
        &self,
        calls: &[(&str, Value)],
    ) -> Result<Vec<Result<Value, RpcError>>, RpcError> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = self.rpc.new_batch();
        let mut waiters = Vec::with_capacity(calls.len());
        for (method, params) in calls {
            let params = no_null(params.clone());
            let w = batch
                .add_call::<Value, Value>(method.to_string(), &params)
                .map_err(|e| self.classify(method, e))?;
            waiters.push((*method, w));
        }
        let label = format!("batch({})", calls.len());
        batch.send().await.map_err(|e| self.classify(&label, e))?;
        let mut out = Vec::with_capacity(waiters.len());
        for (method, w) in waiters {
            out.push(w.await.map_err(|e| self.classify(method, e)));
        }
        Ok(out)
    }

    /// Calls `method` once per element of `params` in ONE HTTP request (a JSON-RPC batch).
    /// Answers are matched by id and returned in request order, each the decoded result or that
    /// call's error; a missing answer is an error of that call.
    pub async fn batch<P: RpcSend, R: RpcRecv>(
        &self,
        method: &str,
        params: &[P],
    ) -> Result<Vec<Result<R, RpcError>>, RpcError> {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = self.rpc.new_batch();
        let mut waiters = Vec::with_capacity(params.len());
        for p in params {
            let w = batch
                .add_call::<P, R>(method.to_owned(), p)
                .map_err(|e| self.classify(method, e))?;
            waiters.push(w);
        }
        let label = format!("batch({})", params.len());
        batch.send().await.map_err(|e| self.classify(&label, e))?;
        let mut out = Vec::with_capacity(waiters.len());
        for w in waiters {
            out.push(w.await.map_err(|e| self.classify(method, e)));
        }
        Ok(out)
    }
}

/// Some servers refuse `"params": null`: send `[]` instead.
fn no_null(params: Value) -> Value {
    if params.is_null() { Value::Array(Vec::new()) } else { params }
}
