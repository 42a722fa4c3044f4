//! TLS for every outbound HTTPS connection: rustls with the aws-lc-rs provider (no OpenSSL),
//! trusting the system store. As OpenSSL and Go programs do, `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` replace the system store when set, so a private CA works by pointing them at
//! its certificate.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;

/// Which certificates a client trusts.
#[derive(Clone, Default)]
pub enum TrustRoots {
    /// The system store, or `SSL_CERT_FILE` / `SSL_CERT_DIR` when set (loaded once).
    #[default]
    System,
    /// Exactly these roots (tests, embedders).
    Custom(Arc<RootCertStore>),
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::System => f.write_str("System"),
            Self::Custom(r) => write!(f, "Custom({} roots)", r.len()),
        }
    }
}

impl TrustRoots {
    /// The roots as a store.
    pub fn store(&self) -> Arc<RootCertStore> {
        match self {
            Self::System => system_roots(),
            Self::Custom(r) => r.clone(),
        }
    }
}

/// The system trust store (honouring `SSL_CERT_FILE` and `SSL_CERT_DIR`), loaded once per
/// process. Certificates that cannot be read are skipped with a warning; an empty store makes
/// every HTTPS connection fail with an "unknown issuer" TLS error, which says so.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "skipping unreadable trusted certificates");
            }
            let mut store = RootCertStore::empty();
            let (added, ignored) = store.add_parsable_certificates(loaded.certs);
            if ignored > 0 {
                tracing::warn!(ignored, "skipping unparsable trusted certificates");
            }
            if added == 0 {
                tracing::warn!(
                    "no trusted CA certificates found (system store, SSL_CERT_FILE, SSL_CERT_DIR): \
                     https:// endpoints will fail certificate checks"
                );
            }
            Arc::new(store)
        })
        .clone()
}

/// Makes aws-lc-rs the process-wide rustls provider, for libraries that take the process
/// default (tonic's TLS server and client). Needed because another dependency (async-nats) also
/// enables rustls' `ring`, and with two providers compiled in rustls cannot pick one. Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// A rustls client config trusting `roots` (TLS 1.2 and 1.3, aws-lc-rs).
pub fn client_config(roots: &TrustRoots) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots.store())
        .with_no_client_auth();
    Arc::new(config)
}

/// A connector for `http://` and `https://` URLs: TCP with `TCP_NODELAY` and a connect
/// timeout, then TLS for `https://` (HTTP/1.1 only).
pub fn https_connector(
    roots: &TrustRoots,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*client_config(roots)).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

/// The TLS failure in an error chain, if any: a rustls error (certificate, handshake,
/// protocol), found also inside `std::io::Error`s, however deeply nested (hyper-rustls wraps
/// tokio-rustls's `io::Error`, which wraps the rustls error, in another `io::Error`), whose
/// `source()` skips the error they wrap.
pub fn tls_cause(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(describe(t));
        }
        cur = match e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    None
}

fn describe(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "{e}: the server's certificate is not signed by a trusted CA (add the CA with \
             SSL_CERT_FILE or SSL_CERT_DIR)"
        ),
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!("{e}: the certificate does not name this host")
        }
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            format!("{e}: is the server speaking TLS on this port?")
        }
        other => other.to_string(),
    }
}
