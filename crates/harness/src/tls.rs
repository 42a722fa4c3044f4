//! Real TLS on loopback for tests: a private CA and an HTTPS reverse proxy in front of a mock.
//!
//! [`TestCa`] is a fresh certificate authority made with `rcgen` inside the test; it issues
//! server certificates for `127.0.0.1` and `localhost` and hands out its root as a rustls
//! [`RootCertStore`](rustls::RootCertStore) (in-process clients) or as a PEM file (a spawned
//! process pointed at it with `SSL_CERT_FILE`). It also issues leaf certificates as PEM files
//! for spawned servers ([`TestCa::server_cert`]) and clients of mutual TLS
//! ([`TestCa::client_cert`]). Everything uses the aws-lc-rs provider explicitly; no
//! process-default `CryptoProvider` is needed.
//!
//! [`TlsFront`] listens on `https://127.0.0.1:<random port>` and forwards every request to a
//! plain-HTTP upstream such as [`MockEl`](crate::mock_el::MockEl) or
//! [`MockSource`](crate::mock_source::MockSource). With an API key ([`FrontOptions::api_key`])
//! it behaves like a hosted RPC provider (`https://host/v2/<key>`): only paths under
//! `/v2/<key>` are forwarded, with that prefix stripped, and anything else gets HTTP 401.
//!
//! ```no_run
//! # async fn demo(upstream: std::net::SocketAddr) -> std::io::Result<()> {
//! use lightcl_harness::tls::{FrontOptions, TestCa, TlsFront};
//!
//! let ca = TestCa::new("l1");
//! let front = TlsFront::start(&ca, upstream, FrontOptions { api_key: Some("k3y".into()) }).await?;
//! let url = front.url(); // "https://127.0.0.1:PORT/v2/k3y"
//! let roots = ca.root_store(); // trust this in the client under test
//! # let _ = (url, roots); Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete the TLS handshake before it counts as failed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A private certificate authority generated in the test (ECDSA P-256, never written anywhere
/// unless [`write_pem`](Self::write_pem) is called).
pub struct TestCa {
    name: String,
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("name", &self.name).finish_non_exhaustive()
    }
}

impl TestCa {
    /// A fresh CA whose subject is `CN=<name> test CA`; `name` also names its PEM file.
    ///
    /// # Panics
    ///
    /// If key generation or signing fails (it does not with aws-lc-rs).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        params.distinguished_name.push(DnType::OrganizationName, "lightcl-harness");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA certificate");
        Self { name: name.to_owned(), issuer }
    }

    /// The CA certificate in PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate in DER.
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Write the CA certificate to `<dir>/<name>-ca.pem` and return that path (for a spawned
    /// process: `SSL_CERT_FILE=<path>`).
    ///
    /// # Panics
    ///
    /// If the file cannot be written.
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("{}-ca.pem", self.name));
        std::fs::write(&path, self.ca_pem())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// A root store trusting exactly this CA.
    pub fn root_store(&self) -> Arc<rustls::RootCertStore> {
        let mut store = rustls::RootCertStore::empty();
        store.add(self.ca_der()).expect("the CA certificate parses");
        Arc::new(store)
    }

    /// A server config (aws-lc-rs, TLS 1.2 and 1.3, ALPN `http/1.1`) presenting a freshly
    /// issued leaf certificate for `127.0.0.1` and `localhost`, signed by this CA; the chain
    /// sent is leaf + CA.
    ///
    /// # Panics
    ///
    /// If issuing the certificate fails (it does not with aws-lc-rs).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let (leaf, key) = self.server_leaf();
        let chain = vec![leaf.der().clone(), self.ca_der()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("aws-lc-rs supports the default TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the issued certificate matches its key");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A freshly issued server leaf certificate for `127.0.0.1` and `localhost` and its key.
    fn server_leaf(&self) -> (rcgen::Certificate, KeyPair) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("valid subject alt names");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate server key");
        let leaf = params.signed_by(&key, &self.issuer).expect("sign server certificate");
        (leaf, key)
    }

    /// A freshly issued server certificate for `127.0.0.1` and `localhost` (as
    /// [`server_config`](Self::server_config) presents), in PEM, for a spawned server such as
    /// nats-server (`tls { cert_file, key_file }`).
    ///
    /// # Panics
    ///
    /// If issuing the certificate fails (it does not with aws-lc-rs).
    pub fn server_cert(&self) -> IssuedCert {
        let (leaf, key) = self.server_leaf();
        IssuedCert { cert_pem: leaf.pem(), key_pem: key.serialize_pem() }
    }

    /// A freshly issued client certificate (`CN=<common_name>`, extended key usage
    /// `clientAuth`) signed by this CA, in PEM: what a client presents for mutual TLS.
    ///
    /// # Panics
    ///
    /// If issuing the certificate fails (it does not with aws-lc-rs).
    pub fn client_cert(&self, common_name: &str) -> IssuedCert {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("generate client key");
        let leaf = params.signed_by(&key, &self.issuer).expect("sign client certificate");
        IssuedCert { cert_pem: leaf.pem(), key_pem: key.serialize_pem() }
    }
}

/// A leaf certificate issued by a [`TestCa`] with its private key, both PEM (the key as
/// PKCS#8). `Debug` does not show the key.
#[derive(Clone)]
pub struct IssuedCert {
    /// The leaf certificate (without the CA).
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// Where [`IssuedCert::write_pem`] put the certificate and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// `<dir>/<stem>.pem`.
    pub cert: PathBuf,
    /// `<dir>/<stem>-key.pem`.
    pub key: PathBuf,
}

impl IssuedCert {
    /// Write the certificate to `<dir>/<stem>.pem` and the key to `<dir>/<stem>-key.pem`.
    ///
    /// # Panics
    ///
    /// If a file cannot be written.
    pub fn write_pem(&self, dir: &Path, stem: &str) -> CertFiles {
        let files = CertFiles {
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        };
        for (path, pem) in [(&files.cert, &self.cert_pem), (&files.key, &self.key_pem)] {
            std::fs::write(path, pem).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        }
        files
    }
}

/// How a [`TlsFront`] behaves.
#[derive(Debug, Clone, Default)]
pub struct FrontOptions {
    /// When set, act like a hosted RPC provider: only paths under `/v2/<key>` are forwarded
    /// (with that prefix stripped); every other request gets HTTP 401.
    pub api_key: Option<String>,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    forwarded: AtomicU64,
    handshake_failures: AtomicU64,
    unauthorized: AtomicU64,
}

/// A TLS-terminating HTTP/1.1 reverse proxy on `127.0.0.1:<random port>` in front of a
/// plain-HTTP upstream. Keep-alive connections are served; the proxy (its accept loop and
/// every open connection) stops when the handle is dropped.
#[derive(Debug)]
pub struct TlsFront {
    addr: SocketAddr,
    api_key: Option<String>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsFront {
    /// Listen on `127.0.0.1:0` with a certificate issued by `ca` and forward to `upstream`
    /// (`http://<upstream>`), on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub async fn start(
        ca: &TestCa,
        upstream: SocketAddr,
        opts: FrontOptions,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let proxy = Arc::new(Proxy {
            upstream,
            api_key: opts.api_key.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            counters: counters.clone(),
        });
        let acceptor = TlsAcceptor::from(ca.server_config());
        let task = tokio::spawn(accept_loop(listener, acceptor, proxy));
        Ok(Self { addr, api_key: opts.api_key, counters, task })
    }

    /// The listen address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The endpoint a client should use: `https://127.0.0.1:<port>/v2/<key>` with an API key,
    /// else `https://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        match &self.api_key {
            Some(key) => format!("{}/v2/{key}", self.base_url()),
            None => format!("{}/", self.base_url()),
        }
    }

    /// TLS connections accepted (handshake completed); a keep-alive client making several
    /// requests counts once.
    pub fn connections(&self) -> u64 {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// Requests passed on to the upstream (whether or not it answered; one that did not gets
    /// HTTP 502).
    pub fn forwarded(&self) -> u64 {
        self.counters.forwarded.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed or timed out (e.g. a client that does not trust the CA).
    pub fn handshake_failures(&self) -> u64 {
        self.counters.handshake_failures.load(Ordering::SeqCst)
    }

    /// Requests answered with HTTP 401 because the API key in the path was wrong or missing.
    pub fn unauthorized(&self) -> u64 {
        self.counters.unauthorized.load(Ordering::SeqCst)
    }
}

struct Proxy {
    upstream: SocketAddr,
    api_key: Option<String>,
    client: Client<HttpConnector, Incoming>,
    counters: Arc<Counters>,
}

type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Accept connections until aborted; the connection tasks live in a `JoinSet`, so aborting
/// this task drops them too.
async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, proxy: Arc<Proxy>) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                conns.spawn(serve_conn(tcp, acceptor.clone(), proxy.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "tls front: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(tcp: TcpStream, acceptor: TlsAcceptor, proxy: Arc<Proxy>) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => {
            proxy.counters.connections.fetch_add(1, Ordering::SeqCst);
            tls
        }
        Ok(Err(e)) => {
            proxy.counters.handshake_failures.fetch_add(1, Ordering::SeqCst);
            tracing::debug!(error = %e, "tls front: handshake failed");
            return;
        }
        Err(_) => {
            proxy.counters.handshake_failures.fetch_add(1, Ordering::SeqCst);
            tracing::debug!("tls front: handshake timed out");
            return;
        }
    };
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(error = %e, "tls front: connection ended with an error");
    }
}

/// Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(body.as_bytes()))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

impl Proxy {
    /// The upstream path for `path`, or `None` when the API key does not match.
    fn upstream_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        let Some(key) = &self.api_key else {
            return Some(path);
        };
        let rest = path.strip_prefix("/v2/")?.strip_prefix(key.as_str())?;
        match rest {
            "" => Some("/"),
            rest if rest.starts_with('/') => Some(rest),
            _ => None, // "/v2/<key>xyz": a different key
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let (mut parts, body) = req.into_parts();
        let Some(path) = self.upstream_path(parts.uri.path()) else {
            self.counters.unauthorized.fetch_add(1, Ordering::SeqCst);
            return text(StatusCode::UNAUTHORIZED, "invalid or missing API key\n");
        };
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let Ok(uri) = format!("http://{}{path_and_query}", self.upstream).parse::<Uri>() else {
            return text(StatusCode::BAD_REQUEST, "bad request target\n");
        };
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers);
        if let Ok(host) = HeaderValue::from_str(&self.upstream.to_string()) {
            parts.headers.insert(header::HOST, host);
        }
        self.counters.forwarded.fetch_add(1, Ordering::SeqCst);
        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(e) => {
                tracing::debug!(error = %e, "tls front: upstream request failed");
                text(StatusCode::BAD_GATEWAY, "upstream unavailable\n")
            }
        }
    }
}
