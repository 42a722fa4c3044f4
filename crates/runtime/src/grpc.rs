//! gRPC scaffolding: serve the control service with `grpc.health.v1` (SERVING only while
//! [`Readiness`] is ready), server reflection v1, optional TLS and graceful shutdown; bearer
//! token [`Auth`] for control calls; and the connection/stream limits of [`GrpcLimits`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::Stream;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, PollSemaphore};
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Status};
use tonic_health::ServingStatus;

use crate::admin::Readiness;
use crate::error::ServeError;

/// gRPC service names, for [`GrpcOptions::health_service`].
pub mod names {
    /// `lightcl.v1.PollerControl`
    pub const POLLER_CONTROL: &str = "lightcl.v1.PollerControl";
    /// `lightcl.v1.ValidatorControl`
    pub const VALIDATOR_CONTROL: &str = "lightcl.v1.ValidatorControl";
    /// `lightcl.v1.EngineDriverControl`
    pub const ENGINE_DRIVER_CONTROL: &str = "lightcl.v1.EngineDriverControl";
}

/// Bearer-token authorization for control calls.
///
/// Mutating calls always need the token; when no token is configured they are refused (safe by
/// default). Read calls need it only with `require_for_reads`. Comparison is constant-time and
/// the token is never logged or printed (`Debug` redacts it).
///
/// ```
/// use lightcl_runtime::Auth;
/// let auth = Auth::new(Some("s3cret".into()), false);
/// let mut req = tonic::Request::new(());
/// assert!(auth.check_mutation(&req).is_err());
/// req.metadata_mut().insert("authorization", "Bearer s3cret".parse().unwrap());
/// assert!(auth.check_mutation(&req).is_ok());
/// assert!(auth.check_read(&tonic::Request::new(())).is_ok());
/// ```
#[derive(Clone)]
pub struct Auth {
    token: Option<Arc<str>>,
    require_for_reads: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("require_for_reads", &self.require_for_reads)
            .finish()
    }
}

impl Auth {
    /// Auth with an optional token.
    pub fn new(token: Option<String>, require_for_reads: bool) -> Self {
        Self { token: token.map(Arc::from), require_for_reads }
    }

    /// True when a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Authorize a mutating call (Pause, Resume, Resync): `UNAUTHENTICATED` unless the request
    /// carries `authorization: Bearer <token>` and a token is configured.
    #[allow(clippy::result_large_err)] // tonic::Status is what handlers return
    pub fn check_mutation<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Err(Status::unauthenticated(
                "mutating calls are disabled: no token configured (--grpc.token-file)",
            ));
        };
        check(token, req)
    }

    /// Authorize a read-only call (GetStatus, WatchStatus): open unless `require_for_reads`.
    #[allow(clippy::result_large_err)]
    pub fn check_read<T>(&self, req: &Request<T>) -> Result<(), Status> {
        if !self.require_for_reads {
            return Ok(());
        }
        match &self.token {
            Some(token) => check(token, req),
            None => Err(Status::unauthenticated("reads require a token but none is configured")),
        }
    }
}

#[allow(clippy::result_large_err)]
fn check<T>(token: &str, req: &Request<T>) -> Result<(), Status> {
    let Some(value) = req.metadata().get("authorization") else {
        return Err(Status::unauthenticated("missing bearer token"));
    };
    let presented = value.as_bytes();
    let presented = presented.strip_prefix(b"Bearer ").unwrap_or(b"");
    if constant_time_eq(presented, token.as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated("invalid bearer token"))
    }
}

/// Equality whose running time does not depend on where the inputs differ (only on length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Install aws-lc-rs as the process-wide rustls crypto provider (idempotent). Needed before
/// any rustls use because the workspace enables both `ring` and `aws-lc-rs` in rustls, and
/// rustls then refuses to pick one itself. [`serve_grpc`] calls it when TLS is on.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is fine.
    lightcl_rpc::tls::install_default_provider();
}

/// Limits of the gRPC control port (docs/operations.md#hardening-the-control-and-admin-ports).
/// [`GrpcLimits::default`] is what every service uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcLimits {
    /// TCP connections served at once; further ones wait in the listen backlog until one
    /// closes.
    pub max_connections: usize,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` per connection (open calls, streams included).
    pub max_concurrent_streams: u32,
    /// Calls being handled at once per connection (tonic `concurrency_limit_per_connection`).
    pub concurrency_per_connection: usize,
    /// `WatchStatus` streams open at once on this service, over all connections; one more
    /// gets `RESOURCE_EXHAUSTED` until a stream ends.
    pub max_watch_streams: usize,
    /// HTTP/2 PING sent after this much idle time on a connection...
    pub keepalive_interval: Duration,
    /// ...and the connection is closed when its ack does not come within this (dead client).
    pub keepalive_timeout: Duration,
    /// TCP keepalive on accepted sockets (the kernel drops peers that vanished).
    pub tcp_keepalive: Duration,
    /// Deadline for handling one call up to its response headers (a `WatchStatus` stream runs
    /// on after its headers).
    pub call_timeout: Duration,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            max_concurrent_streams: 64,
            concurrency_per_connection: 32,
            max_watch_streams: 64,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            tcp_keepalive: Duration::from_secs(60),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Where and how to serve gRPC.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    /// Listen address (port 0 allowed).
    pub addr: SocketAddr,
    /// TLS identity, if any (see [`crate::CommonArgs::tls`]).
    pub tls: Option<ServerTlsConfig>,
    /// Fully-qualified name reported by `grpc.health.v1` (see [`names`]); the overall `""`
    /// status follows it too.
    pub health_service: &'static str,
    /// SERVING while ready, NOT_SERVING otherwise.
    pub readiness: Readiness,
    /// Connection, stream and keepalive limits.
    pub limits: GrpcLimits,
}

/// Serve `routes` (your control service, e.g.
/// `Routes::new(PollerControlServer::new(svc))`) plus health and reflection. Returns the bound
/// address once listening; the task ends after `cancel` fired and open calls finished (streams
/// made with [`crate::watch_stream`] end on the same token).
///
/// ```no_run
/// # async fn demo<S: lightcl_proto::v1::poller_control_server::PollerControl>(svc: S)
/// # -> Result<(), lightcl_runtime::ServeError> {
/// use lightcl_proto::v1::poller_control_server::PollerControlServer;
/// use lightcl_runtime::{GrpcOptions, Readiness, grpc::names, serve_grpc};
/// let cancel = tokio_util::sync::CancellationToken::new();
/// let readiness = Readiness::new(&["nats"]);
/// let opts = GrpcOptions {
///     addr: "127.0.0.1:0".parse().unwrap(),
///     tls: None,
///     health_service: names::POLLER_CONTROL,
///     readiness,
///     limits: Default::default(),
/// };
/// let routes = tonic::service::Routes::new(PollerControlServer::new(svc));
/// let (addr, task) = serve_grpc(opts, routes, cancel.clone()).await?;
/// # let _ = (addr, task); Ok(()) }
/// ```
pub async fn serve_grpc(
    opts: GrpcOptions,
    routes: Routes,
    cancel: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<Result<(), tonic::transport::Error>>), ServeError> {
    let addr = opts.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { flag: "--grpc.addr", addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind {
        flag: "--grpc.addr",
        addr,
        source,
    })?;

    let (reporter, health) = tonic_health::server::health_reporter();
    let status =
        |ready: bool| if ready { ServingStatus::Serving } else { ServingStatus::NotServing };
    let initial = status(opts.readiness.is_ready());
    reporter.set_service_status(opts.health_service, initial).await;
    reporter.set_service_status("", initial).await;

    // Advertise only what this server serves: the lightcl.v1 descriptor set holds all three
    // control services, and listing them all would point clients at UNIMPLEMENTED ones.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lightcl_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name(opts.health_service)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()
        .map_err(ServeError::Reflection)?;

    let limits = opts.limits;
    // Every call runs in an info span `grpc.request` continuing the caller's W3C trace.
    let mut builder = Server::builder()
        .concurrency_limit_per_connection(limits.concurrency_per_connection)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .timeout(limits.call_timeout)
        .trace_fn(|req: &http::Request<()>| {
            let span = tracing::info_span!(
                "grpc.request",
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.method = %req.uri().path(),
            );
            lightcl_telemetry::set_parent_from_http(&span, req.headers());
            span
        });
    if let Some(tls) = opts.tls.clone() {
        install_crypto_provider();
        builder = builder.tls_config(tls).map_err(ServeError::Tls)?;
    }
    let mut builder = builder.layer(WatchCapLayer {
        slots: Arc::new(Semaphore::new(limits.max_watch_streams)),
        max: limits.max_watch_streams,
    });
    let router = builder.add_routes(routes).add_service(health).add_service(reflection);

    // Health follows readiness until shutdown.
    let mut rx = opts.readiness.subscribe();
    let health_cancel = cancel.clone();
    let name = opts.health_service;
    tokio::spawn(async move {
        loop {
            let ready = rx.borrow_and_update().values().all(|v| *v);
            reporter.set_service_status(name, status(ready)).await;
            reporter.set_service_status("", status(ready)).await;
            tokio::select! {
                () = health_cancel.cancelled() => break,
                changed = rx.changed() => if changed.is_err() {
                    // Every Readiness handle is gone: the state can no longer change.
                    health_cancel.cancelled().await;
                    break;
                },
            }
        }
        reporter.set_service_status(name, ServingStatus::NotServing).await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
    });

    tracing::info!(addr = %bound, tls = opts.tls.is_some(), service = name, "gRPC listening");
    let incoming = CappedIncoming {
        inner: TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(limits.tcp_keepalive)),
        slots: PollSemaphore::new(Arc::new(Semaphore::new(limits.max_connections))),
        permit: None,
    };
    let task =
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, cancel.cancelled_owned()));
    Ok((bound, task))
}

/// Caps the `WatchStatus` streams open at once (see [`GrpcLimits::max_watch_streams`]): a slot
/// is taken when the call arrives and given back when its response body (the stream) is
/// dropped, however it ended.
#[derive(Debug, Clone)]
struct WatchCapLayer {
    slots: Arc<Semaphore>,
    max: usize,
}

impl<S> tower::Layer<S> for WatchCapLayer {
    type Service = WatchCap<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WatchCap { inner, slots: self.slots.clone(), max: self.max }
    }
}

#[derive(Debug, Clone)]
struct WatchCap<S> {
    inner: S,
    slots: Arc<Semaphore>,
    max: usize,
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;

impl<S> tower::Service<GrpcRequest> for WatchCap<S>
where
    S: tower::Service<GrpcRequest, Response = GrpcResponse>,
    S::Future: Send + 'static,
{
    type Response = GrpcResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<GrpcResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        if !req.uri().path().ends_with("/WatchStatus") {
            return Box::pin(self.inner.call(req));
        }
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let max = self.max;
            tracing::warn!(max, "WatchStatus refused: too many open streams");
            let status = Status::resource_exhausted(format!(
                "too many WatchStatus streams: this service serves at most {max} at once; \
                 close one or retry later"
            ));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let resp = call.await?;
            Ok(resp.map(|body| {
                tonic::body::Body::new(body.map_frame(move |frame| {
                    let _slot = &slot; // held until the stream's body is dropped
                    frame
                }))
            }))
        })
    }
}

/// The listener's connections, at most as many at once as `slots` has permits: the next one is
/// accepted only when a permit is free (the kernel backlog holds the rest).
struct CappedIncoming {
    inner: TcpIncoming,
    slots: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

impl Stream for CappedIncoming {
    type Item = io::Result<CappedConn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.permit.is_none() {
            match ready!(this.slots.poll_acquire(cx)) {
                Some(p) => this.permit = Some(p),
                None => return Poll::Ready(None),
            }
        }
        match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
            Some(Ok(stream)) => {
                let permit = this.permit.take();
                Poll::Ready(Some(Ok(CappedConn { stream, _permit: permit })))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => Poll::Ready(None),
        }
    }
}

/// An accepted connection holding its slot until it is dropped.
struct CappedConn {
    stream: TcpStream,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Connected for CappedConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for CappedConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut().insert("authorization", a.parse().unwrap());
        }
        r
    }

    #[test]
    fn mutation_needs_the_right_token() {
        let auth = Auth::new(Some("tok".into()), false);
        assert!(auth.check_mutation(&req(Some("Bearer tok"))).is_ok());
        for bad in [None, Some("Bearer tok2"), Some("Bearer to"), Some("tok"), Some("Basic tok")] {
            let e = auth.check_mutation(&req(bad)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        assert!(auth.check_read(&req(None)).is_ok());
    }

    #[test]
    fn no_token_configured_refuses_mutations() {
        let auth = Auth::new(None, false);
        let e = auth.check_mutation(&req(Some("Bearer anything"))).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("no token configured"));
    }

    #[test]
    fn reads_can_require_the_token() {
        let auth = Auth::new(Some("tok".into()), true);
        assert_eq!(auth.check_read(&req(None)).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(auth.check_read(&req(Some("Bearer tok"))).is_ok());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let auth = Auth::new(Some("topsecret".into()), false);
        assert!(!format!("{auth:?}").contains("topsecret"));
    }

    #[test]
    fn ct_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
