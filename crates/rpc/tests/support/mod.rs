//! Local HTTP/1.1 servers (plain or TLS) for the integration tests: each records what it was
//! asked and answers with a handler.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

/// A response body: a fixed one (with `content-length`) or chunked.
pub type Resp = Response<BoxBody<Bytes, Infallible>>;
/// What a handler returns.
pub type Reply = Pin<Box<dyn Future<Output = Resp> + Send>>;
type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The request target's path (and query).
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub body: Value,
}

/// A running server on 127.0.0.1.
pub struct Server {
    pub addr: SocketAddr,
    /// TCP connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// HTTP requests handled, in order.
    pub requests: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().unwrap().clone()
    }
}

/// A plain HTTP/1.1 server running `handler` for each request.
pub async fn serve(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
    serve_with(None, handler).await
}

/// An HTTPS (HTTP/1.1 over TLS) server running `handler` for each request.
pub async fn serve_tls(
    config: Arc<rustls::ServerConfig>,
    handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> Server {
    serve_with(Some(tokio_rustls::TlsAcceptor::from(config)), handler).await
}

async fn serve_with(
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let handler: Handler = Arc::new(handler);
    let (conns, reqs) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            conns.fetch_add(1, Ordering::SeqCst);
            let (handler, reqs, tls) = (handler.clone(), reqs.clone(), tls.clone());
            tokio::spawn(async move {
                match tls {
                    None => serve_conn(stream, handler, reqs).await,
                    Some(acceptor) => {
                        // A failed handshake (e.g. a client that does not trust us) ends here.
                        if let Ok(s) = acceptor.accept(stream).await {
                            serve_conn(s, handler, reqs).await;
                        }
                    }
                }
            });
        }
    });
    Server { addr, connections, requests }
}

async fn serve_conn<IO>(io: IO, handler: Handler, reqs: Arc<Mutex<Vec<Seen>>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let (handler, reqs) = (handler.clone(), reqs.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let seen = Seen {
                path: parts.uri.path_and_query().map_or_else(String::new, |p| p.to_string()),
                headers: parts.headers,
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            };
            reqs.lock().unwrap().push(seen.clone());
            Ok::<_, Infallible>(handler(&seen).await)
        }
    });
    let _ =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), svc).await;
}

/// A response with a fixed body (so with `content-length`).
pub fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()).boxed())
        .unwrap();
    Box::pin(async move { resp })
}

/// A 200 response whose body is sent chunked (no `content-length`), in pieces of `piece` bytes.
pub fn reply_chunked(body: impl Into<Bytes>, piece: usize) -> Reply {
    let body: Bytes = body.into();
    let chunks = body.chunks(piece.max(1)).map(Bytes::copy_from_slice).collect();
    let resp = Response::builder()
        .header("content-type", "application/json")
        .body(Chunked(chunks).boxed())
        .unwrap();
    Box::pin(async move { resp })
}

/// A body of unknown length: hyper sends it with `transfer-encoding: chunked`.
struct Chunked(std::collections::VecDeque<Bytes>);

impl Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// Answers every call (single or batch) with `result = {"method": m, "params": p}`; batch
/// answers come back in reverse order.
pub fn echo(req: &Seen) -> Reply {
    let answer = |r: &Value| {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": r["id"],
            "result": {"method": r["method"], "params": r["params"]},
        })
    };
    let body = match &req.body {
        Value::Array(items) => Value::Array(items.iter().rev().map(answer).collect()),
        one => answer(one),
    };
    reply(StatusCode::OK, body.to_string())
}
