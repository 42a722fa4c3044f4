//! A simulated external consensus node (op-node / kona-node) for tests.
//!
//! [`MockSource`] is a real HTTP/1.1 JSON-RPC server on `127.0.0.1:<random port>` (no JWT)
//! serving `optimism_syncStatus` (from a settable [`SyncStatus`], in the exact wire format),
//! `optimism_rollupConfig` and `eth_chainId`. The handle is cloneable and lets a test inject
//! failures ([`Failure`]), count requests per method, and stop/restart the server on the same
//! port (source down, then up again). Batches are answered too. Unknown methods get -32601.
//!
//! [`synthetic_status`] builds a consistent `SyncStatus` from a few numbers.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lightcl_harness::mock_source::{Failure, Heads, MockSource, synthetic_status};
//! use std::time::Duration;
//!
//! let status = synthetic_status(Heads { l1: 100, unsafe_l2: 600, safe_l2: 590, finalized_l2: 500 });
//! let source = MockSource::start(10, status).await?;
//! let url = source.url(); // "http://127.0.0.1:PORT"
//! source.set_status(synthetic_status(Heads { l1: 101, unsafe_l2: 606, safe_l2: 600, finalized_l2: 500 }));
//! source.set_failure(Failure::Delay(Duration::from_secs(5)));
//! source.set_failure(Failure::None);
//! assert_eq!(source.requests("optimism_syncStatus"), 0);
//! source.stop().await;     // connection refused from now on
//! source.restart().await?; // same port again
//! # let _ = url; Ok(()) }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use alloy_primitives::B256;
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lightcl_core::{BlockId, L1BlockRef, L2BlockRef, SyncStatus};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::wait;

/// How the mock answers (applies to every method).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Failure {
    /// Answer normally.
    #[default]
    None,
    /// Answer with a JSON-RPC error object.
    RpcError {
        /// Error code.
        code: i64,
        /// Error message.
        message: String,
    },
    /// HTTP 200 with a body that is not JSON.
    MalformedJson,
    /// HTTP 200 with a valid-looking JSON body of this many bytes (e.g. 8 MiB).
    Oversized(usize),
    /// Answer correctly, but only after this delay.
    Delay(Duration),
    /// HTTP 500 with a short text body.
    Http500,
}

#[derive(Debug)]
struct State {
    chain_id: u64,
    status: SyncStatus,
    /// Raw `optimism_syncStatus` result overriding `status` (for malformed/odd payloads).
    raw_status: Option<Value>,
    failure: Failure,
    counts: HashMap<String, u64>,
}

struct Inner {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Mutex<Option<CancellationToken>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(c) = self.server.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            c.cancel();
        }
    }
}

/// A running mock consensus node; cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct MockSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MockSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockSource").field("addr", &self.inner.addr).finish()
    }
}

impl MockSource {
    /// Start serving `status` for L2 chain `chain_id` on `127.0.0.1:0`.
    pub async fn start(chain_id: u64, status: SyncStatus) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            chain_id,
            status,
            raw_status: None,
            failure: Failure::None,
            counts: HashMap::new(),
        }));
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, state.clone(), cancel.clone()));
        Ok(Self { inner: Arc::new(Inner { addr, state, server: Mutex::new(Some(cancel)) }) })
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Replace the status served by `optimism_syncStatus` (clears any raw override).
    pub fn set_status(&self, status: SyncStatus) {
        let mut s = self.state();
        s.status = status;
        s.raw_status = None;
    }

    /// Serve this exact JSON as the `optimism_syncStatus` result (e.g. a status with a bad
    /// hash or a missing field), until the next [`set_status`](Self::set_status).
    pub fn set_status_json(&self, result: Value) {
        self.state().raw_status = Some(result);
    }

    /// The status currently served.
    pub fn status(&self) -> SyncStatus {
        self.state().status.clone()
    }

    /// Change the chain id reported by `optimism_rollupConfig` and `eth_chainId`.
    pub fn set_chain_id(&self, chain_id: u64) {
        self.state().chain_id = chain_id;
    }

    /// Serve another node at once: `chain_id` (for `optimism_rollupConfig` and `eth_chainId`)
    /// and `status` change together under one lock, so no request sees the new chain with the
    /// old status or the reverse (e.g. a DNS or load-balancer switch to a node of another chain).
    pub fn set_chain(&self, chain_id: u64, status: SyncStatus) {
        let mut s = self.state();
        s.chain_id = chain_id;
        s.status = status;
        s.raw_status = None;
    }

    /// The chain id currently served.
    pub fn chain_id(&self) -> u64 {
        self.state().chain_id
    }

    /// Set how the mock answers from now on ([`Failure::None`] to heal).
    pub fn set_failure(&self, failure: Failure) {
        self.state().failure = failure;
    }

    /// Requests received for `method` (each call of a batch counts).
    pub fn requests(&self, method: &str) -> u64 {
        self.state().counts.get(method).copied().unwrap_or(0)
    }

    /// Requests received over all methods.
    pub fn total_requests(&self) -> u64 {
        self.state().counts.values().sum()
    }

    /// Wait until `requests(method) >= n` or `timeout` passes; returns whether it was reached.
    pub async fn wait_for_requests(&self, method: &str, n: u64, timeout: Duration) -> bool {
        let every = Duration::from_millis(5);
        wait::until_async(timeout, every, || std::future::ready(self.requests(method) >= n))
            .await
            .is_ok()
    }

    /// Stop listening and drop every open connection (clients see connection refused/reset).
    /// Idempotent.
    pub async fn stop(&self) {
        let token = self.inner.server.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(token) = token {
            token.cancel();
            // Wait (bounded) until the port is really closed.
            let addr = self.inner.addr;
            let _ = wait::until_async(Duration::from_secs(5), Duration::from_millis(5), || async {
                tokio::net::TcpStream::connect(addr).await.is_err()
            })
            .await;
        }
    }

    /// Listen again on the same port (after [`stop`](Self::stop)); keeps status, failure mode
    /// and counters. No-op while running.
    pub async fn restart(&self) -> std::io::Result<()> {
        if self.inner.server.lock().unwrap_or_else(PoisonError::into_inner).is_some() {
            return Ok(());
        }
        let addr = self.inner.addr;
        let listener =
            wait::until_async(Duration::from_secs(5), wait::POLL, || TcpListener::bind(addr))
                .await
                .map_err(|t| t.last_error.expect("a failed bind"))?;
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, self.inner.state.clone(), cancel.clone()));
        *self.inner.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(cancel);
        Ok(())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn serve(listener: TcpListener, state: Arc<Mutex<State>>, cancel: CancellationToken) {
    // Connections live in the JoinSet: dropping it on stop aborts them, closing the sockets.
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else { continue };
        let state = state.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
    drop(listener);
    conns.shutdown().await;
}

async fn handle(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(req.into_body(), 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return reply(StatusCode::BAD_REQUEST, format!("cannot read request: {e}")),
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        let err = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}});
        return reply(StatusCode::OK, err.to_string());
    };
    let calls: Vec<&Value> = match &request {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    let failure = {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        for c in &calls {
            let m = c.get("method").and_then(Value::as_str).unwrap_or("<none>").to_owned();
            *s.counts.entry(m).or_default() += 1;
        }
        s.failure.clone()
    };
    match failure {
        Failure::None => {}
        Failure::Delay(d) => tokio::time::sleep(d).await,
        Failure::MalformedJson => {
            return reply(StatusCode::OK, "{\"jsonrpc\": \"2.0\", \"id\": ".into());
        }
        Failure::Oversized(n) => {
            let mut big = String::with_capacity(n + 64);
            big.push_str("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"");
            big.extend(std::iter::repeat_n('a', n.saturating_sub(big.len() + 2)));
            big.push_str("\"}");
            return reply(StatusCode::OK, big);
        }
        Failure::Http500 => {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, "internal server error".into());
        }
        Failure::RpcError { code, message } => {
            let answers: Vec<Value> = calls
                .iter()
                .map(|c| json!({"jsonrpc": "2.0", "id": c.get("id"), "error": {"code": code, "message": message}}))
                .collect();
            return reply(StatusCode::OK, one_or_many(&request, answers));
        }
    }
    let (chain_id, status) = {
        let s = state.lock().unwrap_or_else(PoisonError::into_inner);
        let status = match &s.raw_status {
            Some(raw) => Ok(raw.clone()),
            None => serde_json::to_value(&s.status),
        };
        (s.chain_id, status)
    };
    let answers: Vec<Value> = calls
        .iter()
        .map(|c| {
            let id = c.get("id").cloned().unwrap_or(Value::Null);
            match c.get("method").and_then(Value::as_str) {
                Some("optimism_syncStatus") => match &status {
                    Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
                    Err(e) => rpc_error(id, -32603, &format!("cannot encode status: {e}")),
                },
                Some("optimism_rollupConfig") => {
                    json!({"jsonrpc": "2.0", "id": id, "result": rollup_config(chain_id)})
                }
                Some("eth_chainId") => {
                    json!({"jsonrpc": "2.0", "id": id, "result": format!("0x{chain_id:x}")})
                }
                Some(m) => rpc_error(
                    id,
                    -32601,
                    &format!("the method {m} does not exist/is not available"),
                ),
                None => rpc_error(id, -32600, "invalid request"),
            }
        })
        .collect();
    reply(StatusCode::OK, one_or_many(&request, answers))
}

fn one_or_many(request: &Value, mut answers: Vec<Value>) -> String {
    if request.is_array() || answers.len() != 1 {
        Value::Array(answers).to_string()
    } else {
        answers.remove(0).to_string()
    }
}

fn rpc_error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

/// The `optimism_rollupConfig` result the mock serves (the fields lightcl reads, plus a few
/// realistic ones).
pub fn rollup_config(l2_chain_id: u64) -> Value {
    json!({
        "genesis": {
            "l1": {"hash": l1_block_hash(0), "number": 0},
            "l2": {"hash": l2_block_hash(0), "number": 0},
            "l2_time": GENESIS_TIME,
        },
        "block_time": 2,
        "max_sequencer_drift": 600,
        "seq_window_size": 3600,
        "channel_timeout": 300,
        "l1_chain_id": 900,
        "l2_chain_id": l2_chain_id,
    })
}

/// Timestamp of the synthetic genesis (L1 and L2 block 0).
pub const GENESIS_TIME: u64 = 1_700_000_000;
/// L2 blocks per L1 block in the synthetic chain (2 s vs 12 s block time).
pub const L2_PER_L1: u64 = 6;

/// Deterministic synthetic L1 block hash for `number` (never zero).
pub fn l1_block_hash(number: u64) -> B256 {
    tagged_hash(0x11, number)
}

/// Deterministic synthetic L2 block hash for `number` (never zero).
pub fn l2_block_hash(number: u64) -> B256 {
    tagged_hash(0x22, number)
}

fn tagged_hash(tag: u8, number: u64) -> B256 {
    let mut b = [0u8; 32];
    b[0] = tag;
    b[24..].copy_from_slice(&number.to_be_bytes());
    B256::from(b)
}

/// The head numbers a synthetic status is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heads {
    /// L1 head (`current_l1`, `head_l1`); `safe_l1`/`finalized_l1` trail it by 2 and 4 blocks.
    pub l1: u64,
    /// `unsafe_l2` number.
    pub unsafe_l2: u64,
    /// `safe_l2` number (also `local_safe_l2`, `pending_safe_l2`, `cross_unsafe_l2` = unsafe).
    pub safe_l2: u64,
    /// `finalized_l2` number.
    pub finalized_l2: u64,
}

/// A consistent synthetic status: parent hashes chain, timestamps follow 12 s (L1) / 2 s (L2)
/// block times, each L2 block's L1 origin is block `n / 6` (capped at the L1 head) with the
/// matching [`l1_block_hash`], and every ref is set. All optional refs are present.
pub fn synthetic_status(heads: Heads) -> SyncStatus {
    synthetic_status_with(heads, l1_block_hash)
}

/// [`synthetic_status`] with L1 hashes from `l1_hash` (e.g. a real anvil chain's hashes, so the
/// status passes a validator's L1 canonical checks).
pub fn synthetic_status_with(heads: Heads, l1_hash: impl Fn(u64) -> B256) -> SyncStatus {
    let l1 = |n: u64| L1BlockRef {
        hash: l1_hash(n),
        number: n,
        parent_hash: if n == 0 { B256::ZERO } else { l1_hash(n - 1) },
        timestamp: GENESIS_TIME + 12 * n,
    };
    let l2 = |n: u64| {
        let origin = (n / L2_PER_L1).min(heads.l1);
        L2BlockRef {
            hash: l2_block_hash(n),
            number: n,
            parent_hash: if n == 0 { B256::ZERO } else { l2_block_hash(n - 1) },
            timestamp: GENESIS_TIME + 2 * n,
            l1origin: BlockId { hash: l1_hash(origin), number: origin },
            sequence_number: n - origin * L2_PER_L1,
        }
    };
    SyncStatus {
        current_l1: l1(heads.l1),
        current_l1_finalized: Some(l1(heads.l1.saturating_sub(4))),
        head_l1: l1(heads.l1),
        safe_l1: l1(heads.l1.saturating_sub(2)),
        finalized_l1: l1(heads.l1.saturating_sub(4)),
        unsafe_l2: l2(heads.unsafe_l2),
        safe_l2: l2(heads.safe_l2),
        finalized_l2: l2(heads.finalized_l2),
        pending_safe_l2: Some(l2(heads.safe_l2)),
        cross_unsafe_l2: Some(l2(heads.unsafe_l2)),
        local_safe_l2: Some(l2(heads.safe_l2)),
    }
}

#[cfg(test)]
mod tests {
    use lightcl_rpc::{Client, ClientConfig};

    use super::*;

    #[tokio::test]
    async fn set_chain_switches_chain_id_and_status_together() {
        let heads =
            |n: u64| Heads { l1: 100 + n, unsafe_l2: 600 + n, safe_l2: 590, finalized_l2: 500 };
        let src = MockSource::start(10, synthetic_status(heads(0))).await.unwrap();
        let c = Client::new(ClientConfig::new(src.url().parse().unwrap())).unwrap();
        src.set_status_json(json!({"not": "a status"}));
        src.set_chain(11, synthetic_status(heads(1)));
        assert_eq!(src.chain_id(), 11);
        assert_eq!(src.status(), synthetic_status(heads(1)));
        // One batch: both answers come from the new node (the raw override is cleared).
        let out = c
            .batch_calls(&[
                ("optimism_rollupConfig", json!([])),
                ("optimism_syncStatus", json!([])),
            ])
            .await
            .unwrap();
        assert_eq!(out[0].as_ref().unwrap()["l2_chain_id"], json!(11));
        let status = SyncStatus::from_value(out[1].as_ref().unwrap()).unwrap();
        assert_eq!(status, synthetic_status(heads(1)));
        src.set_chain_id(10);
        assert_eq!(src.chain_id(), 10);
    }
}
