//! The benchmark's external consensus node: a real HTTP/1.1 JSON-RPC server on loopback that
//! serves `optimism_syncStatus` (plus `optimism_rollupConfig` and `eth_chainId`) and records,
//! in-process, the [`Instant`] it first answered a poll with each unsafe head. Latencies are
//! measured from that moment (the serving poll), not from when the head changed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use alloy_primitives::B256;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lightcl_core::SyncStatus;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::{BenchError, Ctx};

#[derive(Debug, Default)]
struct State {
    /// The `result` JSON of `optimism_syncStatus`, pre-serialised.
    status_json: String,
    unsafe_hash: B256,
    /// First time each unsafe head was served.
    served: HashMap<B256, Instant>,
}

#[derive(Debug)]
struct Inner {
    chain_id: u64,
    state: Mutex<State>,
    status_requests: AtomicU64,
    requests: AtomicU64,
}

/// A running benchmark source; stops when dropped.
#[derive(Debug, Clone)]
pub struct BenchSource {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl BenchSource {
    /// Starts on `127.0.0.1:0` serving `status` for chain `chain_id`.
    pub async fn start(chain_id: u64, status: &SyncStatus) -> Result<Self, BenchError> {
        let listener = TcpListener::bind("127.0.0.1:0").await.ctx("binding the source")?;
        let addr = listener.local_addr().ctx("source address")?;
        let inner = Arc::new(Inner {
            chain_id,
            state: Mutex::new(State::default()),
            status_requests: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let cancel = CancellationToken::new();
        tokio::spawn(serve(listener, inner.clone(), cancel.clone()));
        let s = Self { addr, inner, _stop: Arc::new(StopOnDrop(cancel)) };
        s.set_status(status)?;
        Ok(s)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serve `status` from now on.
    pub fn set_status(&self, status: &SyncStatus) -> Result<(), BenchError> {
        let json = serde_json::to_string(status).ctx("encoding a status")?;
        let mut s = self.state();
        s.status_json = json;
        s.unsafe_hash = status.unsafe_l2.hash;
        Ok(())
    }

    /// When each unsafe head was first served (drained: the map starts empty again).
    pub fn take_served(&self) -> HashMap<B256, Instant> {
        std::mem::take(&mut self.state().served)
    }

    /// `optimism_syncStatus` calls answered so far.
    pub fn status_requests(&self) -> u64 {
        self.inner.status_requests.load(Ordering::Relaxed)
    }

    /// HTTP requests received so far (any method).
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn serve(listener: TcpListener, inner: Arc<Inner>, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        let (inner, cancel) = (inner.clone(), cancel.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(handle(&inner, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                () = cancel.cancelled() => {}
                _ = conn => {}
            }
        });
    }
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    inner.requests.fetch_add(1, Ordering::Relaxed);
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return reply(String::from("{}")),
    };
    let call: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let text = match call.get("method").and_then(Value::as_str) {
        Some("optimism_syncStatus") => {
            inner.status_requests.fetch_add(1, Ordering::Relaxed);
            let id = serde_json::to_string(&id).unwrap_or_else(|_| "null".into());
            let mut s = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{}}}"#, s.status_json);
            // The moment the poll is answered with this head (the body is complete).
            let head = s.unsafe_hash;
            s.served.entry(head).or_insert_with(Instant::now);
            text
        }
        Some("optimism_rollupConfig") => json!({"jsonrpc": "2.0", "id": id,
            "result": lightcl_harness::mock_source::rollup_config(inner.chain_id)})
        .to_string(),
        Some("eth_chainId") => {
            json!({"jsonrpc": "2.0", "id": id, "result": format!("0x{:x}", inner.chain_id)})
                .to_string()
        }
        _ => json!({"jsonrpc": "2.0", "id": id,
            "error": {"code": -32601, "message": "method not found"}})
        .to_string(),
    };
    reply(text)
}

fn reply(body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}
