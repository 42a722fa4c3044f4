//! Shared by the export tests: a private CA made with rcgen, and an in-process OTLP/HTTP
//! receiver (plain or behind TLS) that decodes `POST /v1/traces` bodies with prost.
#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lightcl_harness::wait;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::task::JoinHandle;

/// A test CA and one leaf certificate for `127.0.0.1` / `localhost` it signed.
pub struct TestCa {
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The leaf certificate, PEM.
    pub leaf_pem: String,
    /// The leaf's private key, PEM (PKCS#8).
    pub key_pem: String,
    leaf_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        // A distinct name per CA: rustls picks the issuer by name.
        static SERIAL: AtomicU64 = AtomicU64::new(0);
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            format!("lightcl-telemetry test CA {n} ({})", std::process::id()),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();
        Self {
            leaf_pem: leaf.pem(),
            key_pem: key.serialize_pem(),
            leaf_der: leaf.der().clone(),
            key_der: key.serialize_der(),
            ca,
        }
    }

    /// The CA certificate, PEM (for `SSL_CERT_FILE`).
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A root store trusting exactly this CA.
    pub fn root_store(&self) -> Arc<rustls::RootCertStore> {
        let mut store = rustls::RootCertStore::empty();
        store.add(self.ca.der().clone()).unwrap();
        Arc::new(store)
    }

    /// A rustls server config presenting the leaf (aws-lc-rs, ALPN `http/1.1`).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.leaf_der.clone(), self.ca.der().clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// One export request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub headers: http::HeaderMap,
    /// `(service.name, span name)` of every span in the body.
    pub spans: Vec<(String, String)>,
}

/// An OTLP/HTTP trace receiver on a loopback port; dropping it stops the server.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    tls: bool,
    got: Arc<Mutex<Vec<Received>>>,
    task: JoinHandle<()>,
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpReceiver {
    /// Serves plain HTTP, or HTTPS with `tls`.
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let sink = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, sink) = (acceptor.clone(), sink.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, sink.clone()));
                    let builder = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            // A client that does not trust us aborts the handshake: fine.
                            let Ok(tls) = a.accept(tcp).await else { return };
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Self { addr, tls: is_tls, got, task }
    }

    /// `http(s)://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits up to 10 s for a span named `name`; returns the request that carried it.
    pub async fn wait_for_span(&self, name: &str) -> Option<Received> {
        wait::until_async(Duration::from_secs(10), wait::POLL, || {
            std::future::ready(
                self.received().into_iter().find(|r| r.spans.iter().any(|s| s.1 == name)),
            )
        })
        .await
        .ok()
    }
}

async fn handle(
    req: Request<Incoming>,
    sink: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    if parts.method != hyper::Method::POST || parts.uri.path() != "/v1/traces" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    }
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"bad protobuf")));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return Ok(r);
    };
    sink.lock().unwrap().push(Received {
        path: parts.uri.path().to_owned(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        headers: parts.headers.clone(),
        spans: span_names(&export),
    });
    let answer = ExportTraceServiceResponse { partial_success: None }.encode_to_vec();
    let mut r = Response::new(Full::new(Bytes::from(answer)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    Ok(r)
}

/// `(service.name, span name)` of every span in `req`.
pub fn span_names(req: &ExportTraceServiceRequest) -> Vec<(String, String)> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            out.extend(ss.spans.iter().map(|s| (service.clone(), s.name.clone())));
        }
    }
    out
}
