//! The client against real local HTTP servers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alloy_rpc_types_engine::JwtSecret;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lightcl_core::Severity;
use lightcl_jsonrpc::{Client, ClientConfig, JwtFileError, RpcError, load_jwt_secret};
use serde_json::{Value, json};

type Reply = Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>;
type Handler = Arc<dyn Fn(HeaderMap, Value) -> Reply + Send + Sync>;

/// A real HTTP/1.1 server on 127.0.0.1:0 running `handler` for each request.
struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

async fn serve(handler: impl Fn(HeaderMap, Value) -> Reply + Send + Sync + 'static) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let handler: Handler = Arc::new(handler);
    let conns = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            conns.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        Ok::<_, std::convert::Infallible>(handler(parts.headers, value).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server { addr, connections }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap();
    Box::pin(async move { resp })
}

/// Answers every request (single or batch) with `result = {"method": m, "params": p}`.
fn echo(_: HeaderMap, req: Value) -> Reply {
    let answer = |r: &Value| json!({"jsonrpc": "2.0", "id": r["id"], "result": {"method": r["method"], "params": r["params"]}});
    let body = match &req {
        Value::Array(items) => Value::Array(items.iter().rev().map(answer).collect()), // reversed order
        one => answer(one),
    };
    reply(StatusCode::OK, body.to_string())
}

fn client(addr: SocketAddr) -> Client {
    client_with(addr, |c| c)
}

fn client_with(addr: SocketAddr, f: impl FnOnce(ClientConfig) -> ClientConfig) -> Client {
    let cfg = ClientConfig::new(format!("http://{addr}").parse().unwrap())
        .with_timeout(Duration::from_secs(2));
    Client::new(f(cfg)).unwrap()
}

#[tokio::test]
async fn call_success_and_connection_reuse() {
    let srv = serve(echo).await;
    let c = client(srv.addr);
    let v = c.call("optimism_syncStatus", Value::Null).await.unwrap();
    assert_eq!(v, json!({"method": "optimism_syncStatus", "params": []}));
    #[derive(serde::Deserialize)]
    struct Echo {
        method: String,
        params: Vec<u64>,
    }
    let e: Echo = c.call_as("eth_chainId", json!([7])).await.unwrap();
    assert_eq!((e.method.as_str(), e.params), ("eth_chainId", vec![7]));
    assert_eq!(
        srv.connections.load(Ordering::SeqCst),
        1,
        "keep-alive: one TCP connection for two calls"
    );
}

#[tokio::test]
async fn call_as_wrong_type_is_bad_response() {
    let srv = serve(echo).await;
    let err = client(srv.addr).call_as::<u64>("eth_chainId", json!([])).await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
}

#[tokio::test]
async fn json_rpc_error_object() {
    let srv = serve(|_, req| {
        reply(StatusCode::OK, json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32601, "message": "method not found", "data": "x"}}).to_string())
    })
    .await;
    let err = client(srv.addr).call("optimism_syncStatus", json!([])).await.unwrap_err();
    let obj = err.rpc_error().expect("rpc error object");
    assert_eq!(
        (obj.code, obj.message.as_str(), obj.data.clone()),
        (-32601, "method not found", Some(json!("x")))
    );
    assert_eq!(err.kind(), "rpc");
    assert_eq!(err.severity(), Severity::Fatal);
    assert!(err.to_string().contains("optimism_syncStatus"), "{err}");
}

#[tokio::test]
async fn batch_is_one_request_and_matched_by_id() {
    let srv = serve(|_, req| {
        // Answer in reverse order, with an error for the middle call.
        let items = req.as_array().unwrap().clone();
        let answers: Vec<Value> = items
            .iter()
            .rev()
            .map(|r| {
                if r["params"][0] == json!("0x2") {
                    json!({"jsonrpc": "2.0", "id": r["id"], "error": {"code": -32000, "message": "header not found"}})
                } else {
                    json!({"jsonrpc": "2.0", "id": r["id"], "result": r["params"][0]})
                }
            })
            .collect();
        reply(StatusCode::OK, Value::Array(answers).to_string())
    })
    .await;
    let c = client(srv.addr);
    let calls: Vec<(&str, Value)> =
        (1..=3).map(|n| ("eth_getBlockByNumber", json!([format!("0x{n}"), false]))).collect();
    let out = c.batch(&calls).await.unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_ref().unwrap(), &json!("0x1"));
    assert_eq!(out[1].as_ref().unwrap_err().code, -32000);
    assert_eq!(out[2].as_ref().unwrap(), &json!("0x3"));
    assert!(c.batch(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn batch_missing_answer_is_an_error() {
    let srv = serve(|_, req| {
        let first = &req.as_array().unwrap()[0];
        reply(
            StatusCode::OK,
            json!([{"jsonrpc": "2.0", "id": first["id"], "result": 1}]).to_string(),
        )
    })
    .await;
    let err = client(srv.addr).batch(&[("a", json!([])), ("b", json!([]))]).await.unwrap_err();
    assert_eq!(err.kind(), "bad_response");
    assert!(err.to_string().contains("no answer for id"), "{err}");
}

#[tokio::test]
async fn batch_unknown_id_is_an_error() {
    let srv = serve(|_, _| {
        reply(StatusCode::OK, json!([{"jsonrpc": "2.0", "id": 999_999, "result": 1}]).to_string())
    })
    .await;
    let err = client(srv.addr).batch(&[("a", json!([]))]).await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
}

#[tokio::test]
async fn mismatched_id_is_an_error() {
    let srv = serve(|_, _| {
        reply(StatusCode::OK, json!({"jsonrpc": "2.0", "id": 424_242, "result": 1}).to_string())
    })
    .await;
    let err = client(srv.addr).call("a", json!([])).await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
}

#[tokio::test]
async fn timeout() {
    let srv = serve(|_, _| {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Response::new(Full::new(Bytes::from_static(b"{}")))
        })
    })
    .await;
    let c = client_with(srv.addr, |c| c.with_timeout(Duration::from_millis(200)));
    let started = std::time::Instant::now();
    let err = c.call("slow", json!([])).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert_eq!((err.kind(), err.severity()), ("timeout", Severity::Temporary));
}

#[tokio::test]
async fn oversized_body() {
    // Chunked (no content-length) and declared-length variants.
    let big = vec![b' '; 2 * 1024 * 1024];
    let srv = serve(move |_, _| reply(StatusCode::OK, big.clone())).await;
    let c = client_with(srv.addr, |c| c.with_max_response_bytes(1024 * 1024));
    let err = c.call("big", json!([])).await.unwrap_err();
    assert!(matches!(err, RpcError::TooLarge { limit: 1_048_576, .. }), "{err}");
    assert_eq!(err.kind(), "too_large");

    // Chunked, no content-length, endless: the limit must stop reading.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await;
        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
        while s.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    let c = client_with(addr, |c| c.with_max_response_bytes(256 * 1024));
    let err = c.call("endless", json!([])).await.unwrap_err();
    assert!(matches!(err, RpcError::TooLarge { limit: 262_144, .. }), "{err}");
}

#[tokio::test]
async fn malformed_json() {
    let srv = serve(|_, _| reply(StatusCode::OK, "{not json")).await;
    let err = client(srv.addr).call("x", json!([])).await.unwrap_err();
    assert_eq!((err.kind(), err.severity()), ("json", Severity::Temporary), "{err}");
}

#[tokio::test]
async fn http_500() {
    let srv = serve(|_, _| reply(StatusCode::INTERNAL_SERVER_ERROR, "database on fire")).await;
    let err = client(srv.addr).call("x", json!([])).await.unwrap_err();
    assert!(
        matches!(&err, RpcError::HttpStatus { status: 500, body, .. } if body == "database on fire"),
        "{err}"
    );
    assert_eq!((err.kind(), err.severity()), ("http", Severity::Temporary));
}

#[tokio::test]
async fn connection_refused() {
    // Bind then drop to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = client(addr).call("x", json!([])).await.unwrap_err();
    assert_eq!((err.kind(), err.severity()), ("connect", Severity::Temporary), "{err}");
}

/// A server that validates `Authorization: Bearer <jwt>` like an execution client does.
async fn jwt_server(secret: JwtSecret, seen: Arc<AtomicUsize>) -> Server {
    serve(move |headers, req| {
        let ok = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| secret.validate(t).is_ok());
        if ok {
            seen.fetch_add(1, Ordering::SeqCst);
            echo(headers, req)
        } else {
            reply(StatusCode::UNAUTHORIZED, "unauthorized")
        }
    })
    .await
}

#[tokio::test]
async fn jwt_header_present_and_valid() {
    let secret = JwtSecret::random();
    let seen = Arc::new(AtomicUsize::new(0));
    let srv = jwt_server(secret, seen.clone()).await;
    let c = client_with(srv.addr, |c| c.with_jwt(secret));
    c.call("engine_forkchoiceUpdatedV3", json!([])).await.unwrap();
    c.batch(&[("engine_exchangeCapabilities", json!([[]]))]).await.unwrap();
    assert_eq!(seen.load(Ordering::SeqCst), 2, "every request authenticated");

    // Without a JWT the same server refuses.
    let err = client(srv.addr).call("x", json!([])).await.unwrap_err();
    assert!(matches!(err, RpcError::HttpStatus { status: 401, .. }), "{err}");
}

#[tokio::test]
async fn wrong_jwt_secret_is_fatal() {
    let srv = jwt_server(JwtSecret::random(), Arc::new(AtomicUsize::new(0))).await;
    let c = client_with(srv.addr, |c| c.with_jwt(JwtSecret::random()));
    let err = c.call("engine_forkchoiceUpdatedV3", json!([])).await.unwrap_err();
    assert_eq!((err.kind(), err.severity()), ("http", Severity::Fatal));
    assert!(err.to_string().contains("JWT secret"), "{err}");
}

#[test]
fn jwt_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let hex = "0123456789abcdef".repeat(4);
    let a = load_jwt_secret(&write("a", &format!("\n  0x{hex}  \n"))).unwrap();
    let b = load_jwt_secret(&write("b", &hex)).unwrap();
    assert_eq!(a, b);

    let err = load_jwt_secret(&write("short", &hex[..60])).unwrap_err();
    assert!(matches!(err, JwtFileError::Length { found: 60, .. }), "{err}");
    let err = load_jwt_secret(&write("nothex", &format!("{}xy", &hex[..62]))).unwrap_err();
    assert!(matches!(err, JwtFileError::Hex { .. }), "{err}");
    assert!(!err.to_string().contains(&hex[..62]), "secret must not leak into the error");
    let err = load_jwt_secret(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, JwtFileError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}
