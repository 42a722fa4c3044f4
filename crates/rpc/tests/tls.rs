//! `https://` endpoints against real TLS servers on 127.0.0.1 with a CA made in the test:
//! trusted and untrusted CAs, a plain-HTTP port, userinfo credentials, a stalled handshake and
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` (in child processes, as the trust store is loaded once per
//! process from the environment).

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::StatusCode;
use lightcl_core::Severity;
use lightcl_rpc::tls::TrustRoots;
use lightcl_rpc::{Client, ClientConfig, Endpoint, HttpError, NO_PARAMS, RpcError};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use support::{Seen, echo, reply, serve, serve_tls};

const API_KEY: &str = "apikey-7f3a9c0e11d24b58";

/// A CA and a server certificate for 127.0.0.1 / localhost signed by it.
struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: Arc<rustls::ServerConfig>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn make_pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.use_authority_key_identifier_extension = true;
    let leaf = leaf.signed_by(&leaf_key, &*ca).unwrap();

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .unwrap();
    Pki { ca_pem: ca.pem(), ca_der: ca.der().clone(), server: Arc::new(server) }
}

fn roots(ca: &CertificateDer<'static>) -> TrustRoots {
    let mut store = rustls::RootCertStore::empty();
    store.add(ca.clone()).unwrap();
    TrustRoots::Custom(Arc::new(store))
}

fn client(url: &str, roots: TrustRoots, timeout: Duration) -> Client {
    let endpoint = Endpoint::parse("--l1.rpc", url).unwrap();
    Client::new(ClientConfig::new(endpoint).with_roots(roots).with_timeout(timeout)).unwrap()
}

fn kind_sev(err: &RpcError) -> (&'static str, Severity) {
    (err.kind(), err.severity())
}

#[tokio::test]
async fn trusted_ca_works_and_the_path_is_sent() {
    let pki = make_pki("good");
    let srv = serve_tls(pki.server.clone(), echo).await;
    let url = format!("https://127.0.0.1:{}/v2/{API_KEY}", srv.addr.port());
    let c = client(&url, roots(&pki.ca_der), Duration::from_secs(5));
    assert_eq!(c.endpoint().to_string(), format!("https://127.0.0.1:{}", srv.addr.port()));

    let v: Value = c.request("eth_chainId", NO_PARAMS).await.unwrap();
    assert_eq!(v, json!({"method": "eth_chainId", "params": []}));
    let out: Vec<Result<Value, RpcError>> =
        c.batch("eth_getBlockByNumber", &[("0x1", false)]).await.unwrap();
    assert_eq!(out[0].as_ref().unwrap()["params"], json!(["0x1", false]));

    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    assert!(reqs.iter().all(|r| r.path == format!("/v2/{API_KEY}")), "{reqs:?}");
    assert_eq!(srv.connections(), 1, "one TLS connection, kept alive");
}

#[tokio::test]
async fn untrusted_ca_is_a_tls_error_without_the_key() {
    let (server_pki, other) = (make_pki("server"), make_pki("other"));
    let srv = serve_tls(server_pki.server.clone(), echo).await;
    let url = format!("https://127.0.0.1:{}/v2/{API_KEY}", srv.addr.port());
    let c = client(&url, roots(&other.ca_der), Duration::from_secs(5));
    let started = Instant::now();
    let err = c.request::<_, Value>("eth_chainId", NO_PARAMS).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    assert!(matches!(err, RpcError::Http(HttpError::Tls { .. })), "{err:?}");
    assert_eq!(kind_sev(&err), ("tls", Severity::Temporary), "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("https://127.0.0.1:{}", srv.addr.port())), "{text}");
    assert!(
        text.contains("UnknownIssuer") && text.contains("not signed by a trusted CA"),
        "{text}"
    );
    assert!(text.contains("SSL_CERT_FILE"), "the hint names the fix: {text}");
    assert!(!text.contains(API_KEY) && !format!("{err:?}").contains(API_KEY), "{err:?}");
    assert!(srv.requests().is_empty(), "no request went past the failed handshake");
}

#[tokio::test]
async fn https_to_a_plain_http_port_fails_fast_with_tls() {
    let srv = serve(echo).await;
    let url = format!("https://127.0.0.1:{}/v2/{API_KEY}", srv.addr.port());
    let timeout = Duration::from_secs(10);
    let c = client(&url, roots(&make_pki("any").ca_der), timeout);
    let started = Instant::now();
    let err = c.request::<_, Value>("eth_chainId", NO_PARAMS).await.unwrap_err();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "well within the {timeout:?} timeout: {took:?}");
    assert_eq!(kind_sev(&err), ("tls", Severity::Temporary), "{err}");
    assert!(err.to_string().contains("speaking TLS"), "{err}");
    assert!(!err.to_string().contains(API_KEY), "{err}");
}

#[tokio::test]
async fn userinfo_is_basic_auth_and_never_shown() {
    let pki = make_pki("auth");
    let basic = base64::engine::general_purpose::STANDARD.encode("user:secret");
    let expected = format!("Basic {basic}");
    let srv = serve_tls(pki.server.clone(), move |req: &Seen| {
        let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth == Some(expected.as_str()) && req.body["method"] == "eth_chainId" {
            echo(req)
        } else {
            // An error page echoing what it was sent, as some proxies do.
            reply(
                StatusCode::UNAUTHORIZED,
                format!("denied {} auth={auth:?} (user:secret)", req.path),
            )
        }
    })
    .await;
    let port = srv.addr.port();
    let url = format!("https://user:secret@127.0.0.1:{port}/");
    let c = client(&url, roots(&pki.ca_der), Duration::from_secs(5));
    let v: Value = c.request("eth_chainId", NO_PARAMS).await.unwrap();
    assert_eq!(v["method"], "eth_chainId");
    let reqs = srv.requests();
    assert_eq!(reqs[0].path, "/", "userinfo is not in the request target");
    assert_eq!(reqs[0].headers["authorization"], format!("Basic {basic}").as_str());

    // Errors: an HTTP error echoing the credentials, and a TLS failure.
    let http_err = c.request::<_, Value>("eth_other", NO_PARAMS).await.unwrap_err();
    assert_eq!(http_err.http_status(), Some(401), "{http_err}");
    assert!(http_err.to_string().contains("credentials"), "{http_err}");
    let untrusting = client(&url, roots(&make_pki("other").ca_der), Duration::from_secs(5));
    let tls_err = untrusting.request::<_, Value>("eth_chainId", NO_PARAMS).await.unwrap_err();
    assert_eq!(tls_err.kind(), "tls", "{tls_err}");
    for err in [&http_err, &tls_err] {
        let text = format!("{err} {err:?} {c:?} {untrusting:?}");
        assert!(text.contains(&format!("https://127.0.0.1:{port}")), "{text}");
        for secret in ["secret", "user:", &basic] {
            assert!(!text.contains(secret), "{secret:?} leaked: {text}");
        }
    }
}

#[tokio::test]
async fn timeout_covers_a_handshake_that_never_completes() {
    // Accepts TCP, then neither reads nor writes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let _ = accepted_tx.send(());
        let _hold = socket;
        std::future::pending::<()>().await;
    });
    let url = format!("https://127.0.0.1:{}/v2/{API_KEY}", addr.port());
    let c = client(&url, roots(&make_pki("stall").ca_der), Duration::from_millis(300));
    let started = Instant::now();
    let err = c.request::<_, Value>("eth_chainId", NO_PARAMS).await.unwrap_err();
    let took = started.elapsed();
    assert!(accepted.try_recv().is_ok(), "the TCP connection was accepted");
    assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3), "{took:?}");
    assert!(
        matches!(&err, RpcError::Http(HttpError::Timeout { after, .. }) if *after == Duration::from_millis(300)),
        "{err}"
    );
    assert_eq!(kind_sev(&err), ("timeout", Severity::Temporary));
    assert!(!err.to_string().contains(API_KEY), "{err}");
}

/// Set in a child process: the URL the child test calls.
const CHILD_URL: &str = "LIGHTCL_RPC_TLS_CHILD_URL";
/// Set in a child process: `ok` (the call must work) or `tls` (it must fail with kind tls).
const CHILD_EXPECT: &str = "LIGHTCL_RPC_TLS_CHILD_EXPECT";
const CHILD_TEST: &str = "child_call_with_system_roots";

/// Runs only in a child process started by `ssl_cert_file_and_dir_are_honoured` (does nothing
/// without its marker variable): one call with the process's system trust store.
#[tokio::test]
async fn child_call_with_system_roots() {
    let Ok(url) = std::env::var(CHILD_URL) else { return };
    let expect = std::env::var(CHILD_EXPECT).unwrap();
    let endpoint = Endpoint::parse("--l1.rpc", &url).unwrap();
    let config = ClientConfig::new(endpoint).with_timeout(Duration::from_secs(10));
    assert!(matches!(config.roots, TrustRoots::System));
    let result = Client::new(config).unwrap().request::<_, Value>("eth_chainId", NO_PARAMS).await;
    match (expect.as_str(), result) {
        ("ok", Ok(v)) => assert_eq!(v["method"], "eth_chainId"),
        ("tls", Err(e)) => assert_eq!(e.kind(), "tls", "{e}"),
        (expect, other) => panic!("expected {expect}, got {other:?}"),
    }
    println!("CHILD-CHECKED {expect}");
}

/// Runs this test binary's `child_call_with_system_roots` with `env` (and without any inherited
/// `SSL_CERT_FILE` / `SSL_CERT_DIR`); returns its exit success and output.
async fn run_child(url: &str, expect: &str, env: &[(&str, &std::path::Path)]) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", CHILD_TEST, "--nocapture"])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env(CHILD_URL, url)
        .env(CHILD_EXPECT, expect)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the child finishes")
        .unwrap();
    let text = format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn ssl_cert_file_and_dir_are_honoured() {
    let pki = make_pki("env");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir(&empty_dir).unwrap();

    let srv = serve_tls(pki.server.clone(), echo).await;
    let url = format!("https://127.0.0.1:{}/v2/{API_KEY}", srv.addr.port());

    // SSL_CERT_FILE names our CA: the system store is replaced by it and the call works.
    let (ok, out) = run_child(&url, "ok", &[("SSL_CERT_FILE", &ca_file)]).await;
    assert!(ok, "{out}");
    assert!(out.contains("CHILD-CHECKED ok") && out.contains("1 passed"), "{out}");
    assert_eq!(srv.requests().len(), 1, "the child's call reached the server");

    // SSL_CERT_DIR names an empty directory: nothing is trusted, the call fails with tls.
    let (ok, out) = run_child(&url, "tls", &[("SSL_CERT_DIR", &empty_dir)]).await;
    assert!(ok, "{out}");
    assert!(out.contains("CHILD-CHECKED tls") && out.contains("1 passed"), "{out}");
    assert_eq!(srv.requests().len(), 1, "the second child never got past the handshake");
}

#[test]
fn trust_roots_debug_and_store() {
    let pki = make_pki("dbg");
    let r = roots(&pki.ca_der);
    assert_eq!(format!("{r:?}"), "Custom(1 roots)");
    assert_eq!(r.store().len(), 1);
    assert_eq!(format!("{:?}", TrustRoots::default()), "System");
}
