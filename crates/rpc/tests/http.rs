//! The client against real local HTTP servers: calls, batches, answer checks, timeouts, body
//! limits, classification of failures, the Engine API JWT and secret files.

#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_provider::Provider;
use alloy_rpc_types_engine::JwtSecret;
use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use lightcl_core::Severity;
use lightcl_rpc::{
    Client, ClientConfig, Endpoint, HttpError, JwtFileError, NO_PARAMS, RpcError, load_jwt_secret,
};
use serde_json::{Value, json};
use support::{Seen, echo, reply, reply_chunked, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn client(addr: SocketAddr) -> Client {
    client_with(addr, |c| c)
}

fn client_with(addr: SocketAddr, f: impl FnOnce(ClientConfig) -> ClientConfig) -> Client {
    client_url(&format!("http://{addr}"), f)
}

fn client_url(url: &str, f: impl FnOnce(ClientConfig) -> ClientConfig) -> Client {
    let endpoint = Endpoint::parse("--l1.rpc", url).unwrap();
    let cfg = ClientConfig::new(endpoint).with_timeout(Duration::from_secs(5));
    Client::new(f(cfg)).unwrap()
}

/// A raw TCP server for one connection: reads the request head, then runs `respond` on the
/// socket (which is dropped when `respond` returns).
async fn raw_server<F, Fut>(respond: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        respond(s).await;
    });
    addr
}

fn kind_sev(err: &RpcError) -> (&'static str, Severity) {
    (err.kind(), err.severity())
}

#[tokio::test]
async fn call_success_and_connection_reuse() {
    let srv = serve(echo).await;
    let c = client(srv.addr);
    let v: Value = c.request("optimism_syncStatus", NO_PARAMS).await.unwrap();
    assert_eq!(v, json!({"method": "optimism_syncStatus", "params": []}));

    #[derive(Debug, serde::Deserialize)]
    struct Echo {
        method: String,
        params: Vec<u64>,
    }
    let e: Echo = c.request("eth_chainId", [7u64]).await.unwrap();
    assert_eq!((e.method.as_str(), e.params), ("eth_chainId", vec![7]));
    let e: Echo = c.request("eth_chainId", (8u64, 9u64)).await.unwrap();
    assert_eq!(e.params, vec![8, 9]);

    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.path, "/");
        assert_eq!(r.body["jsonrpc"], "2.0");
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(r.headers.get("authorization").is_none(), "no credentials configured");
    }
    assert_eq!(srv.connections(), 1, "keep-alive: one TCP connection for three calls");
}

#[tokio::test]
async fn json_call_and_mixed_method_batch() {
    let srv = serve(echo).await;
    let c = client(srv.addr);
    // `null` params are sent as `[]`.
    let v = c.call("optimism_syncStatus", Value::Null).await.unwrap();
    assert_eq!(v, json!({"method": "optimism_syncStatus", "params": []}));
    let v = c.call("eth_getBalance", json!(["0xabc", "latest"])).await.unwrap();
    assert_eq!(v, json!({"method": "eth_getBalance", "params": ["0xabc", "latest"]}));

    // Different methods in one batch; the server answers in reverse order.
    let out = c
        .batch_calls(&[
            ("eth_chainId", Value::Null),
            ("eth_blockNumber", json!([])),
            ("net_version", json!([1])),
        ])
        .await
        .unwrap();
    let got: Vec<Value> = out.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        got,
        vec![
            json!({"method": "eth_chainId", "params": []}),
            json!({"method": "eth_blockNumber", "params": []}),
            json!({"method": "net_version", "params": [1]}),
        ]
    );
    assert!(c.batch_calls(&[]).await.unwrap().is_empty());
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 3, "two calls and one batch");
    assert_eq!(reqs[2].body.as_array().map(Vec::len), Some(3));
    assert_eq!(srv.connections(), 1);

    // A missing answer in a mixed batch is that call's error, naming its method.
    let srv = serve(|req: &Seen| {
        let first = &req.body[0];
        reply(
            StatusCode::OK,
            json!([{"jsonrpc": "2.0", "id": first["id"], "result": 1}]).to_string(),
        )
    })
    .await;
    let out =
        client(srv.addr).batch_calls(&[("a", json!([])), ("b_method", json!([]))]).await.unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &json!(1));
    let err = out[1].as_ref().unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
    assert!(err.to_string().contains("b_method"), "{err}");
}

#[tokio::test]
async fn provider_typed_calls_and_classify() {
    let srv = serve(|req: &Seen| match req.body["method"].as_str() {
        Some("eth_chainId") => reply(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": req.body["id"], "result": "0xa"}).to_string(),
        ),
        _ => reply(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": req.body["id"], "error": {"code": -32601, "message": "nope"}})
                .to_string(),
        ),
    })
    .await;
    let c = client(srv.addr);
    assert_eq!(c.provider().get_chain_id().await.unwrap(), 10);
    let err = c.provider().get_block_number().await.unwrap_err();
    let err = c.classify("eth_blockNumber", err);
    assert_eq!(err.rpc_code(), Some(-32601));
    assert_eq!(kind_sev(&err), ("rpc", Severity::Fatal));
    assert!(err.to_string().contains("eth_blockNumber"), "{err}");
}

#[tokio::test]
async fn wrong_result_type_is_json() {
    let srv = serve(echo).await;
    let err = client(srv.addr).request::<_, u64>("eth_chainId", NO_PARAMS).await.unwrap_err();
    assert_eq!(kind_sev(&err), ("json", Severity::Temporary), "{err}");
    assert!(matches!(&err, RpcError::Decode { method, .. } if method == "eth_chainId"), "{err}");
}

#[tokio::test]
async fn json_rpc_error_object() {
    let srv = serve(|req: &Seen| {
        reply(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": req.body["id"], "error": {"code": -32601, "message": "method not found", "data": "x"}})
                .to_string(),
        )
    })
    .await;
    let err =
        client(srv.addr).request::<_, Value>("optimism_syncStatus", NO_PARAMS).await.unwrap_err();
    assert!(
        matches!(&err, RpcError::Rpc { code: -32601, message, method, endpoint }
            if message == "method not found" && method == "optimism_syncStatus"
                && *endpoint == format!("http://{}", srv.addr)),
        "{err:?}"
    );
    assert_eq!(err.rpc_code(), Some(-32601));
    assert_eq!(err.http_status(), None);
    assert_eq!(kind_sev(&err), ("rpc", Severity::Fatal));
    assert!(err.to_string().contains("optimism_syncStatus"), "{err}");
}

#[tokio::test]
async fn json_rpc_error_codes_decide_severity() {
    for (code, severity) in [
        (-32602, Severity::Fatal),
        (lightcl_rpc::INVALID_FORKCHOICE_STATE, Severity::Reset),
        (-32000, Severity::Temporary),
        (-32603, Severity::Temporary),
    ] {
        let srv = serve(move |req: &Seen| {
            reply(
                StatusCode::OK,
                json!({"jsonrpc": "2.0", "id": req.body["id"], "error": {"code": code, "message": "m"}})
                    .to_string(),
            )
        })
        .await;
        let err = client(srv.addr).request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
        assert_eq!((err.rpc_code(), err.severity()), (Some(code), severity), "{err}");
    }
}

#[tokio::test]
async fn batch_is_one_request_and_matched_by_id() {
    let srv = serve(|req: &Seen| {
        // Answer in reverse order, with an error for the middle call.
        let items = req.body.as_array().cloned().unwrap_or_default();
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
    let params: Vec<(String, bool)> = (1..=3).map(|n| (format!("0x{n}"), false)).collect();
    let out: Vec<Result<Value, RpcError>> = c.batch("eth_getBlockByNumber", &params).await.unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].as_ref().unwrap(), &json!("0x1"));
    let e = out[1].as_ref().unwrap_err();
    assert_eq!((e.rpc_code(), e.severity()), (Some(-32000), Severity::Temporary), "{e}");
    assert!(e.to_string().contains("header not found"), "{e}");
    assert_eq!(out[2].as_ref().unwrap(), &json!("0x3"));

    let reqs = srv.requests();
    assert_eq!(reqs.len(), 1, "a batch is one HTTP request");
    let sent = reqs[0].body.as_array().expect("a JSON array");
    assert_eq!(sent.len(), 3);
    for (i, r) in sent.iter().enumerate() {
        assert_eq!(r["method"], "eth_getBlockByNumber");
        assert_eq!(r["params"], json!([format!("0x{}", i + 1), false]));
    }
    let ids: std::collections::HashSet<String> = sent.iter().map(|r| r["id"].to_string()).collect();
    assert_eq!(ids.len(), 3, "distinct ids: {sent:?}");

    // An empty batch sends nothing.
    let empty: Vec<Result<Value, RpcError>> = c.batch("x", &[] as &[(u8,)]).await.unwrap();
    assert!(empty.is_empty());
    assert_eq!(srv.requests().len(), 1);
}

#[tokio::test]
async fn batch_missing_answer_is_that_calls_error() {
    let srv = serve(|req: &Seen| {
        let first = &req.body[0];
        reply(
            StatusCode::OK,
            json!([{"jsonrpc": "2.0", "id": first["id"], "result": 1}]).to_string(),
        )
    })
    .await;
    let out: Vec<Result<u64, RpcError>> =
        client(srv.addr).batch("eth_getBalance", &[("a",), ("b",)]).await.unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &1);
    let err = out[1].as_ref().unwrap_err();
    assert_eq!(kind_sev(err), ("bad_response", Severity::Temporary), "{err}");
    assert!(err.to_string().contains("no response for request id"), "{err}");
    assert!(err.to_string().contains("eth_getBalance"), "{err}");
}

#[tokio::test]
async fn batch_with_unknown_ids_only() {
    let srv = serve(|_: &Seen| {
        reply(StatusCode::OK, json!([{"jsonrpc": "2.0", "id": 999_999, "result": 1}]).to_string())
    })
    .await;
    let out: Vec<Result<u64, RpcError>> = client(srv.addr).batch("a", &[(1,)]).await.unwrap();
    let err = out[0].as_ref().unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
}

#[tokio::test]
async fn batch_refused_whole_or_answered_with_one_success() {
    // A server that refuses the whole batch answers with one error object.
    let srv = serve(|_: &Seen| {
        reply(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "batch too large"}})
                .to_string(),
        )
    })
    .await;
    let err = client(srv.addr).batch::<_, Value>("a", &[(1,), (2,)]).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32600), "{err}");
    assert!(err.to_string().contains("batch(2)"), "{err}");

    let srv = serve(|req: &Seen| {
        reply(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": req.body[0]["id"], "result": 1}).to_string(),
        )
    })
    .await;
    let err = client(srv.addr).batch::<_, Value>("a", &[(1,), (2,)]).await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");
}

#[tokio::test]
async fn single_answer_with_mismatched_id_is_an_error() {
    let srv = serve(|_: &Seen| {
        reply(StatusCode::OK, json!({"jsonrpc": "2.0", "id": 424_242, "result": 1}).to_string())
    })
    .await;
    let err = client(srv.addr).request::<_, Value>("a", NO_PARAMS).await.unwrap_err();
    assert_eq!(kind_sev(&err), ("bad_response", Severity::Temporary), "{err}");
    assert!(err.to_string().contains("does not match request id"), "{err}");

    // A batch array answering a single call is refused too.
    let srv = serve(|req: &Seen| {
        reply(
            StatusCode::OK,
            json!([{"jsonrpc": "2.0", "id": req.body["id"], "result": 1}]).to_string(),
        )
    })
    .await;
    let err = client(srv.addr).request::<_, Value>("a", NO_PARAMS).await.unwrap_err();
    assert_eq!(err.kind(), "bad_response", "{err}");

    // An error object with a null id (the server could not read the id) is kept as the error.
    let srv = serve(|_: &Seen| {
        reply(
            StatusCode::OK,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}})
                .to_string(),
        )
    })
    .await;
    let err = client(srv.addr).request::<_, Value>("a", NO_PARAMS).await.unwrap_err();
    assert_eq!(err.rpc_code(), Some(-32700), "{err}");
}

#[tokio::test]
async fn timeout_bounds_a_stalled_body() {
    // Headers and the start of the body, then nothing (the connection stays open).
    let (tx, mut headers_sent) = tokio::sync::oneshot::channel();
    let addr = raw_server(|mut s| async move {
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\":")
            .await
            .unwrap();
        s.flush().await.unwrap();
        let _ = tx.send(());
        std::future::pending::<()>().await;
    })
    .await;
    let c = client_with(addr, |c| c.with_timeout(Duration::from_millis(300)));
    let started = Instant::now();
    let err = c.request::<_, Value>("slow", NO_PARAMS).await.unwrap_err();
    let took = started.elapsed();
    assert!(headers_sent.try_recv().is_ok(), "the server had sent the headers");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    assert!(
        matches!(&err, RpcError::Http(HttpError::Timeout { after, method, .. })
            if *after == Duration::from_millis(300) && method == "slow"),
        "{err}"
    );
    assert_eq!(kind_sev(&err), ("timeout", Severity::Temporary));
}

#[tokio::test]
async fn timeout_bounds_a_server_that_never_answers() {
    let srv = serve(|_: &Seen| Box::pin(std::future::pending())).await;
    let c = client_with(srv.addr, |c| c.with_timeout(Duration::from_millis(200)));
    let started = Instant::now();
    let err = c.batch::<_, Value>("slow", &[(1,)]).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(kind_sev(&err), ("timeout", Severity::Temporary), "{err}");
    assert!(err.to_string().contains("batch(1)"), "{err}");
}

#[tokio::test]
async fn oversized_body_with_content_length() {
    let big = Bytes::from(vec![b' '; 2 * 1024 * 1024]);
    let srv = serve(move |_: &Seen| reply(StatusCode::OK, big.clone())).await;
    let c = client_with(srv.addr, |c| c.with_max_response_bytes(1024 * 1024));
    let err = c.request::<_, Value>("big", NO_PARAMS).await.unwrap_err();
    assert!(matches!(err, RpcError::Http(HttpError::TooLarge { limit: 1_048_576, .. })), "{err}");
    assert_eq!(kind_sev(&err), ("too_large", Severity::Temporary));
}

#[tokio::test]
async fn oversized_chunked_body() {
    // Chunked, no content-length, finite.
    let body = format!(r#"{{"jsonrpc":"2.0","id":0,"result":"{}"}}"#, "a".repeat(8192));
    let srv = serve(move |_: &Seen| reply_chunked(body.clone(), 1000)).await;
    let c = client_with(srv.addr, |c| c.with_max_response_bytes(4096));
    let err = c.request::<_, Value>("big", NO_PARAMS).await.unwrap_err();
    assert!(matches!(err, RpcError::Http(HttpError::TooLarge { limit: 4096, .. })), "{err}");

    // Chunked and endless: the limit must stop reading.
    let addr = raw_server(|mut s| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            .await;
        let chunk = format!("10000\r\n{}\r\n", " ".repeat(0x10000));
        while s.write_all(chunk.as_bytes()).await.is_ok() {}
    })
    .await;
    let c = client_with(addr, |c| c.with_max_response_bytes(256 * 1024));
    let err = c.request::<_, Value>("endless", NO_PARAMS).await.unwrap_err();
    assert!(matches!(err, RpcError::Http(HttpError::TooLarge { limit: 262_144, .. })), "{err}");
}

#[tokio::test]
async fn body_exactly_at_the_limit_is_accepted() {
    let body = json!({"jsonrpc": "2.0", "id": 0, "result": "0x1"}).to_string();
    let len = body.len();
    let b = body.clone();
    let srv = serve(move |req: &Seen| {
        // alloy numbers calls from 0; keep the id the client sent.
        let text = b.replacen("\"id\":0", &format!("\"id\":{}", req.body["id"]), 1);
        reply_chunked(text, 7)
    })
    .await;
    let c = client_with(srv.addr, |c| c.with_max_response_bytes(len));
    let v: Value = c.request("x", NO_PARAMS).await.unwrap();
    assert_eq!(v, json!("0x1"));
    let c = client_with(srv.addr, |c| c.with_max_response_bytes(len - 1));
    let err = c.request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
    assert_eq!(err.kind(), "too_large", "{err}");
}

#[tokio::test]
async fn malformed_json() {
    let srv = serve(|_: &Seen| reply(StatusCode::OK, "{not json")).await;
    let err = client(srv.addr).request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
    assert_eq!(kind_sev(&err), ("json", Severity::Temporary), "{err}");
    assert!(err.to_string().contains("{not json"), "the excerpt is shown: {err}");
}

#[tokio::test]
async fn http_500() {
    let srv = serve(|_: &Seen| reply(StatusCode::INTERNAL_SERVER_ERROR, "database on fire")).await;
    let err = client(srv.addr).request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
    assert!(
        matches!(&err, RpcError::Http(HttpError::Status { status: 500, body, .. }) if body == "database on fire"),
        "{err}"
    );
    assert_eq!(err.http_status(), Some(500));
    assert_eq!(kind_sev(&err), ("http", Severity::Temporary));
}

#[tokio::test]
async fn http_status_severities() {
    for (status, severity) in [
        (StatusCode::TOO_MANY_REQUESTS, Severity::Temporary),
        (StatusCode::REQUEST_TIMEOUT, Severity::Temporary),
        (StatusCode::BAD_GATEWAY, Severity::Temporary),
        (StatusCode::NOT_FOUND, Severity::Fatal),
        (StatusCode::UNAUTHORIZED, Severity::Fatal),
    ] {
        let srv = serve(move |_: &Seen| reply(status, "no")).await;
        let err = client(srv.addr).request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
        assert_eq!(err.http_status(), Some(status.as_u16()), "{err}");
        assert_eq!(kind_sev(&err), ("http", severity), "{err}");
    }
}

#[tokio::test]
async fn connection_refused() {
    // Bind then drop to get a port nobody listens on.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = client(addr).request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
    assert_eq!(kind_sev(&err), ("connect", Severity::Temporary), "{err}");
    assert!(err.to_string().contains(&format!("http://{addr}")), "{err}");
    // Neither the message nor the error's Debug (with its source chain) names the URL's secrets.
    let c = client_url(&format!("http://u:pw-{KEY}@{addr}/v2/{KEY}?k={KEY}"), |c| c);
    let err = c.request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
    assert_eq!(kind_sev(&err), ("connect", Severity::Temporary), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains(KEY) && !text.contains("pw-"), "{text}");
}

#[tokio::test]
async fn connection_closed_without_an_answer_is_transport() {
    let addr = raw_server(|s| async move { drop(s) }).await;
    let err = client(addr).request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
    assert_eq!(kind_sev(&err), ("transport", Severity::Temporary), "{err}");
}

#[test]
fn unusable_config_is_refused() {
    let endpoint = Endpoint::parse("--l1.rpc", "http://127.0.0.1:1").unwrap();
    let err =
        Client::new(ClientConfig::new(endpoint.clone()).with_max_response_bytes(0)).unwrap_err();
    assert_eq!(kind_sev(&err), ("config", Severity::Fatal), "{err}");
    let err = Client::new(ClientConfig::new(endpoint).with_timeout(Duration::ZERO)).unwrap_err();
    assert_eq!(err.kind(), "config", "{err}");
}

const KEY: &str = "k3y0123456789abcdef";

#[tokio::test]
async fn api_keys_in_the_url_are_sent_but_never_shown() {
    // The server echoes the request target in its errors, as some providers do.
    let srv = serve(|req: &Seen| {
        let path = req.path.clone();
        let auth = req.headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
        reply(
            StatusCode::FORBIDDEN,
            format!("forbidden: {path} auth={auth:?} key {KEY} user alice pass s3cr3t/passw0rd"),
        )
    })
    .await;
    let url = format!("http://alice:s3cr3t%2Fpassw0rd@{}/v2/{KEY}?apikey={KEY}x&chain=1", srv.addr);
    let c = client_url(&url, |c| c);
    let err = c.request::<_, Value>("eth_chainId", NO_PARAMS).await.unwrap_err();
    let reqs = srv.requests();
    assert_eq!(reqs[0].path, format!("/v2/{KEY}?apikey={KEY}x&chain=1"));
    let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cr3t/passw0rd");
    assert_eq!(reqs[0].headers["authorization"], format!("Basic {basic}").as_str());

    assert_eq!(kind_sev(&err), ("http", Severity::Fatal), "{err}");
    let text = format!("{err} {err:?} {c:?}");
    assert!(text.contains("credentials or API key"), "{text}");
    for secret in [KEY, "s3cr3t", "passw0rd", "alice", &basic] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains(&format!("http://{}", srv.addr)), "{text}");
}

/// A server that validates `Authorization: Bearer <jwt>` like an execution client does, and
/// records the tokens it accepted.
async fn jwt_server(
    secret: JwtSecret,
    accepted: Arc<std::sync::Mutex<Vec<String>>>,
) -> support::Server {
    serve(move |req: &Seen| {
        let token = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        match token {
            Some(t) if secret.validate(&t).is_ok() => {
                accepted.lock().unwrap().push(t);
                echo(req)
            }
            _ => reply(StatusCode::UNAUTHORIZED, "unauthorized"),
        }
    })
    .await
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn jwt_header_present_and_valid() {
    let secret = JwtSecret::random();
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let srv = jwt_server(secret, accepted.clone()).await;
    let c = client_with(srv.addr, |c| c.with_jwt(secret));
    let _: Value = c.request("engine_forkchoiceUpdatedV3", NO_PARAMS).await.unwrap();
    let out: Vec<Result<Value, RpcError>> =
        c.batch("engine_exchangeCapabilities", &[(Vec::<String>::new(),)]).await.unwrap();
    assert!(out[0].is_ok());
    let tokens = accepted.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2, "every request authenticated");
    for t in &tokens {
        let claims = t.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).unwrap(),
        )
        .unwrap();
        let iat = claims["iat"].as_u64().expect("iat");
        assert!(unix_now().abs_diff(iat) <= 5, "fresh iat: {claims}");
    }

    // Without a JWT the same server refuses.
    let err = client(srv.addr).request::<_, Value>("x", NO_PARAMS).await.unwrap_err();
    assert_eq!(err.http_status(), Some(401), "{err}");
    assert!(!err.to_string().contains("--l2.jwt-secret"), "no JWT configured: {err}");
}

#[tokio::test]
async fn wrong_jwt_secret_is_fatal() {
    let srv = jwt_server(JwtSecret::random(), Arc::default()).await;
    let c = client_with(srv.addr, |c| c.with_jwt(JwtSecret::random()));
    let err = c.request::<_, Value>("engine_forkchoiceUpdatedV3", NO_PARAMS).await.unwrap_err();
    assert_eq!(err.http_status(), Some(401), "{err}");
    assert_eq!(kind_sev(&err), ("http", Severity::Fatal));
    assert!(err.to_string().contains("--l2.jwt-secret"), "{err}");
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
    let c = load_jwt_secret(&write("c", &hex.to_uppercase())).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a, JwtSecret::from_hex(&hex).unwrap());

    let err = load_jwt_secret(&write("short", &hex[..60])).unwrap_err();
    assert!(matches!(err, JwtFileError::Length { found: 60, .. }), "{err}");
    let err = load_jwt_secret(&write("long", &format!("{hex}00"))).unwrap_err();
    assert!(matches!(err, JwtFileError::Length { found: 66, .. }), "{err}");
    let err = load_jwt_secret(&write("empty", "")).unwrap_err();
    assert!(matches!(err, JwtFileError::Length { found: 0, .. }), "{err}");
    let err = load_jwt_secret(&write("nothex", &format!("{}xy", &hex[..62]))).unwrap_err();
    assert!(matches!(err, JwtFileError::Hex { .. }), "{err}");
    assert!(!err.to_string().contains(&hex[..62]), "secret must not leak into the error");
    let err = load_jwt_secret(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(err, JwtFileError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}
