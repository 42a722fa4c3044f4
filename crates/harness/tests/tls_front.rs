//! The TLS front: a private CA, a keyed HTTPS reverse proxy, and clients that do or do not
//! trust it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lightcl_harness::tls::{FrontOptions, TestCa, TlsFront};
use lightcl_harness::wait;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const KEY: &str = "s3cr3t-api-key";

/// A plain-HTTP upstream that answers every request with what it received, as JSON.
struct Echo {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let answer = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "authorization": parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        "body": String::from_utf8_lossy(&body),
    });
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-upstream", "echo")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap();
    Ok(resp)
}

async fn start_echo() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(echo))
                    .await;
            });
        }
    });
    Echo { addr, task }
}

/// A client config trusting `roots` (no ALPN: hyper-rustls adds its own).
fn client_config(roots: Arc<rustls::RootCertStore>) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTPS client (hyper-util + hyper-rustls, as lightcl's clients are built).
fn https_client(roots: Arc<rustls::RootCertStore>) -> HttpsClient {
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(client_config(roots))
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

fn post(url: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(header::AUTHORIZATION, "Bearer jwt.token.here")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

async fn read(resp: Response<Incoming>) -> (StatusCode, http::HeaderMap, String) {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn keyed_front(ca: &TestCa, upstream: &Echo) -> TlsFront {
    TlsFront::start(ca, upstream.addr, FrontOptions { api_key: Some(KEY.to_owned()) })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_through_the_key_path_with_headers_and_body() {
    let upstream = start_echo().await;
    let ca = TestCa::new("provider");
    let front = keyed_front(&ca, &upstream).await;
    assert_eq!(front.url(), format!("https://127.0.0.1:{}/v2/{KEY}", front.addr().port()));
    assert_eq!(front.base_url(), format!("https://{}", front.addr()));

    let client = https_client(ca.root_store());
    let resp = client.request(post(&front.url(), r#"{"id":1}"#)).await.unwrap();
    let (status, headers, body) = read(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-upstream"], "echo", "upstream headers come back");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/", "the /v2/<key> prefix is stripped");
    assert_eq!(v["authorization"], "Bearer jwt.token.here", "Authorization is forwarded");
    assert_eq!(v["body"], r#"{"id":1}"#);
    assert_eq!(front.forwarded(), 1);
    assert_eq!(front.unauthorized(), 0);
    assert_eq!(front.handshake_failures(), 0);

    // A sub-path and a query survive too.
    let resp = client.request(post(&format!("{}/sub/path?x=1", front.url()), "")).await.unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/sub/path");
    assert_eq!(v["query"], "x=1");
    assert_eq!(front.forwarded(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_or_missing_key_gets_401_without_reaching_the_upstream() {
    let upstream = start_echo().await;
    let ca = TestCa::new("provider");
    let front = keyed_front(&ca, &upstream).await;
    let client = https_client(ca.root_store());

    let wrong = [
        format!("{}/v2/not-the-key", front.base_url()),
        format!("{}/v2/{KEY}extra", front.base_url()),
        format!("{}/", front.base_url()),
        format!("{}/{KEY}", front.base_url()),
    ];
    for (i, url) in wrong.iter().enumerate() {
        let resp = client.request(post(url, "{}")).await.unwrap();
        let (status, _, body) = read(resp).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{url}");
        assert!(!body.is_empty());
        assert!(!body.contains(KEY), "the 401 body must not leak the key: {body}");
        assert_eq!(front.unauthorized(), i as u64 + 1);
    }
    assert_eq!(front.forwarded(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trusting_another_ca_fails_the_handshake() {
    let upstream = start_echo().await;
    let ca = TestCa::new("provider");
    let other = TestCa::new("other");
    let front = keyed_front(&ca, &upstream).await;

    let client = https_client(other.root_store());
    let err = client.request(post(&front.url(), "{}")).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    wait::until_async(Duration::from_secs(10), Duration::from_millis(10), || {
        std::future::ready(front.handshake_failures() == 1)
    })
    .await
    .expect("timed out waiting for handshake_failures() == 1");
    assert_eq!(front.connections(), 0);
    assert_eq!(front.forwarded(), 0);
    assert_eq!(front.unauthorized(), 0);

    // The front still serves a client that trusts its CA.
    let resp = https_client(ca.root_store()).request(post(&front.url(), "{}")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(front.handshake_failures(), 1);
    assert_eq!(front.connections(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_requests_share_one_keep_alive_connection() {
    let upstream = start_echo().await;
    let ca = TestCa::new("provider");
    let front = keyed_front(&ca, &upstream).await;

    // One TCP + TLS connection, made by hand, carrying both requests.
    let mut config = client_config(ca.root_store());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(front.addr()).await.unwrap();
    let server_name = ServerName::IpAddress(front.addr().ip().into());
    let tls = connector.connect(server_name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await.unwrap();
    let conn = tokio::spawn(conn);

    for i in 1..=2u64 {
        sender.ready().await.unwrap();
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/v2/{KEY}/req{i}"))
            .header(header::HOST, front.addr().to_string())
            .body(Full::new(Bytes::from(format!("body {i}"))))
            .unwrap();
        let (status, _, body) = read(sender.send_request(req).await.unwrap()).await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["path"], format!("/req{i}"));
        assert_eq!(v["body"], format!("body {i}"));
        assert_eq!(front.forwarded(), i);
    }
    assert!(!conn.is_finished(), "the connection is still open after both requests");
    assert_eq!(front.connections(), 1, "both requests on one connection");
    drop(sender);
    conn.await.unwrap().unwrap();
    assert_eq!(front.handshake_failures(), 0);

    // The pooled client reuses its connection as well.
    let client = https_client(ca.root_store());
    for _ in 0..2 {
        let resp = client.request(post(&front.url(), "{}")).await.unwrap();
        assert_eq!(read(resp).await.0, StatusCode::OK);
    }
    assert_eq!(front.forwarded(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_key_every_path_is_forwarded_and_the_ca_is_exported_as_pem() {
    let upstream = start_echo().await;
    let ca = TestCa::new("node");
    let front = TlsFront::start(&ca, upstream.addr, FrontOptions::default()).await.unwrap();
    assert_eq!(front.url(), format!("{}/", front.base_url()));

    let client = https_client(ca.root_store());
    let resp = client.request(post(&format!("{}/a/b", front.base_url()), "")).await.unwrap();
    let (status, _, body) = read(resp).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["path"], "/a/b");
    assert_eq!(front.forwarded(), 1);

    let dir = tempfile::tempdir().unwrap();
    let path = ca.write_pem(dir.path());
    assert_eq!(path, dir.path().join("node-ca.pem"));
    let pem = std::fs::read_to_string(&path).unwrap();
    assert_eq!(pem, ca.ca_pem());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
}
