//! The admin HTTP port: `/live`, `/ready`, `/metrics`.
//!
//! - `/live` is 200 while every loop registered with [`Liveness`] is running, 503 (naming the
//!   dead loops) once one has exited without a shutdown having been requested.
//! - `/ready` is 200 when every [`Readiness`] condition is set, else 503 with one line per
//!   unmet condition.
//! - `/metrics` is the Prometheus (OpenMetrics) text of the shared registry.
//!
//! Hardening (docs/operations.md#hardening-the-control-and-admin-ports): a request head must
//! arrive within [`ADMIN_HEADER_READ_TIMEOUT`] (a slowloris client is dropped), at most
//! [`ADMIN_MAX_CONNECTIONS`] connections are served at once (further ones wait in the listen
//! backlog), a request head is at most [`ADMIN_MAX_HEAD_BYTES`], and anything but `GET`/`HEAD`
//! gets a short `405` (its body is never read) and the connection is closed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::ServeError;

/// OpenMetrics text content type served on `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A connection whose request head (request line and headers) has not fully arrived this long
/// after the server started reading it is closed (slowloris).
pub const ADMIN_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; further ones are accepted only when one closes.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Largest request head accepted (hyper answers `431` above it).
pub const ADMIN_MAX_HEAD_BYTES: usize = 16 * 1024;

/// A cloneable set of named readiness conditions. Ready when every condition is set (and
/// trivially ready when there are none). Register the conditions at start-up as not ready, then
/// set/clear them as dependencies come and go.
///
/// ```
/// let r = lightcl_runtime::Readiness::new(&["nats", "source"]);
/// assert!(!r.is_ready());
/// r.set("nats", true);
/// r.set("source", true);
/// assert!(r.is_ready());
/// ```
#[derive(Clone, Debug)]
pub struct Readiness {
    tx: Arc<watch::Sender<BTreeMap<String, bool>>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Readiness {
    /// Readiness with `conditions`, all initially not ready.
    pub fn new(conditions: &[&str]) -> Self {
        let map = conditions.iter().map(|c| ((*c).to_owned(), false)).collect();
        Self { tx: Arc::new(watch::channel(map).0) }
    }

    /// Set condition `name` (adding it if unknown). Notifies watchers only on a change.
    pub fn set(&self, name: &str, ready: bool) {
        self.tx.send_if_modified(|m| match m.get_mut(name) {
            Some(v) if *v == ready => false,
            Some(v) => {
                *v = ready;
                true
            }
            None => {
                m.insert(name.to_owned(), ready);
                true
            }
        });
    }

    /// True when every condition is set.
    pub fn is_ready(&self) -> bool {
        self.tx.borrow().values().all(|v| *v)
    }

    /// Names of the conditions not set, sorted.
    pub fn not_ready(&self) -> Vec<String> {
        self.tx.borrow().iter().filter(|(_, v)| !**v).map(|(k, _)| k.clone()).collect()
    }

    /// A receiver notified on every change (use [`Readiness::is_ready`] or
    /// `rx.borrow().values().all(..)` to read it).
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, bool>> {
        self.tx.subscribe()
    }
}

/// Liveness of the service's long-running tasks: the [`Shell`](crate::Shell) records a critical
/// task that ended before [`Liveness::shutting_down`] was called, and `/live` then turns 503
/// (naming it) while the process stops.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    inner: Arc<Mutex<LivenessState>>,
}

#[derive(Debug, Default)]
struct LivenessState {
    dead: Vec<String>,
    shutting_down: bool,
}

impl Liveness {
    /// A fresh liveness tracker (alive).
    pub fn new() -> Self {
        Self::default()
    }

    /// Mark the process as shutting down: loops exiting from now on are expected.
    pub fn shutting_down(&self) {
        self.lock().shutting_down = true;
    }

    /// True while no registered loop has died unexpectedly.
    pub fn is_alive(&self) -> bool {
        self.lock().dead.is_empty()
    }

    /// Records that the loop `name` exited unexpectedly (no-op once shutting down). The
    /// [`Shell`](crate::Shell) calls it for a critical task that ended on its own.
    pub fn died(&self, name: &str) {
        let mut s = self.lock();
        if !s.shutting_down {
            s.dead.push(name.to_owned());
        }
    }

    /// Loops that exited unexpectedly.
    pub fn dead(&self) -> Vec<String> {
        self.lock().dead.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LivenessState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the admin server serves.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// Conditions behind `/ready`.
    pub readiness: Readiness,
    /// Loops behind `/live`.
    pub liveness: Liveness,
    /// Metrics behind `/metrics`.
    pub registry: Arc<Registry>,
}

/// Bind `addr` (port 0 allowed), log and return the bound address, and serve the admin
/// endpoints until `cancel` fires. The returned task ends after the listener closed and open
/// connections were asked to finish.
pub async fn serve_admin(
    addr: SocketAddr,
    state: AdminState,
    cancel: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { flag: "--admin.addr", addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind {
        flag: "--admin.addr",
        addr,
        source,
    })?;
    tracing::info!(addr = %bound, "admin HTTP listening (/live, /ready, /metrics)");
    let state = Arc::new(state);
    let slots = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            // Take a connection slot before accepting: above the cap, clients wait in the backlog.
            let permit = tokio::select! {
                () = cancel.cancelled() => break,
                p = slots.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let accepted = tokio::select! {
                () = cancel.cancelled() => break,
                a = listener.accept() => a,
            };
            let (stream, _) = match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    // e.g. EMFILE: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let state = state.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(route(&state, &req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(ADMIN_HEADER_READ_TIMEOUT)
                    .max_buf_size(ADMIN_MAX_HEAD_BYTES)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                tokio::select! {
                    res = conn.as_mut() => { if let Err(e) = res { tracing::debug!(error = %e, "admin connection error"); } }
                    () = cancel.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        tracing::debug!("admin HTTP stopped");
    });
    Ok((bound, task))
}

fn route(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        // Small and final: the body is never read, so the connection is not reused.
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        resp.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
        resp.headers_mut().insert(header::CONNECTION, http::HeaderValue::from_static("close"));
        return resp;
    }
    match req.uri().path() {
        "/live" => {
            let dead = state.liveness.dead();
            if dead.is_empty() {
                text(StatusCode::OK, "live\n".into())
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, format!("dead loops: {}\n", dead.join(", ")))
            }
        }
        "/ready" => {
            let missing = state.readiness.not_ready();
            if missing.is_empty() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                let mut body = String::from("not ready:\n");
                for m in missing {
                    body.push_str(&m);
                    body.push('\n');
                }
                text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        }
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
                Ok(()) => Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("encoding metrics failed: {e}\n"),
                ),
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found (try /live, /ready, /metrics)\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
