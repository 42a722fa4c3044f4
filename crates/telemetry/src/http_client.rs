//! The HTTP client under OTLP/HTTP export: hyper-util's pooled client over lightcl-rpc's
//! connector (rustls with aws-lc-rs, the system trust store or the given roots).
//!
//! The batch span processor exports from its own thread, outside any tokio runtime, so each
//! request runs as a task on the runtime `init` was called in. One timeout bounds the whole
//! exchange (connect, TLS, request, response body); the response body is capped. Errors and
//! logs show the endpoint as `scheme://host:port` only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use lightcl_rpc::Endpoint;
use lightcl_rpc::tls::{TrustRoots, https_connector, tls_cause};
use opentelemetry_http::{HttpClient, HttpError, ResponseBodyTooLarge};

/// Largest response body read (an OTLP export response is a few bytes).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// `opentelemetry_http::HttpClient` for the OTLP/HTTP span exporter. Cheap to clone.
#[derive(Clone)]
pub(crate) struct OtlpHttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    /// Only for display and scrubbing: requests carry their own URI.
    endpoint: Endpoint,
    /// The last export failed (log a failure once, and the recovery).
    failing: AtomicBool,
}

impl std::fmt::Debug for OtlpHttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpHttpClient")
            .field("endpoint", &self.inner.endpoint)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Why one export request failed; the text never holds the endpoint's path, query or userinfo.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("OTLP export to {endpoint} timed out after {timeout:?}")]
    Timeout { endpoint: String, timeout: Duration },
    #[error("OTLP export to {endpoint} failed: {reason}")]
    Failed { endpoint: String, reason: String },
}

impl OtlpHttpClient {
    /// A client for `endpoint`, trusting `roots` for `https://`, bounding each export by
    /// `timeout`, running requests on `runtime`.
    pub(crate) fn new(
        endpoint: Endpoint,
        roots: &TrustRoots,
        timeout: Duration,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let http = Client::builder(TokioExecutor::new()).build(https_connector(roots, timeout));
        Self {
            inner: Arc::new(Inner {
                http,
                runtime,
                timeout,
                endpoint,
                failing: AtomicBool::new(false),
            }),
        }
    }

    fn failed(&self, reason: String) -> SendError {
        SendError::Failed {
            endpoint: self.inner.endpoint.redacted().to_owned(),
            reason: self.inner.endpoint.scrub(&reason),
        }
    }

    /// Log the first failure of a run of failures (with its cause) and the recovery after one.
    fn note(&self, outcome: Result<(), &str>) {
        let endpoint = self.inner.endpoint.redacted();
        match outcome {
            Ok(()) => {
                if self.inner.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint, "OTLP span export recovered");
                }
            }
            Err(error) => {
                if !self.inner.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(endpoint, error, "OTLP span export failing; spans may be lost");
                }
            }
        }
    }
}

/// The failure in `err`'s chain, TLS causes spelled out.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    if let Some(tls) = find_tls(err) {
        return format!("TLS: {tls}");
    }
    let mut parts = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// [`tls_cause`], also looking inside nested `std::io::Error`s: hyper-rustls wraps
/// tokio-rustls' `io::Error(rustls::Error)` in another `io::Error`, whose `source()` skips
/// both.
fn find_tls(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = tls_cause(e) {
            return Some(found);
        }
        if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref)
            && let Some(found) = find_tls(inner)
        {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

#[tonic::async_trait]
impl HttpClient for OtlpHttpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let this = self.clone();
        let task = self.inner.runtime.spawn(async move {
            let exchange = async {
                let response = this
                    .inner
                    .http
                    .request(request.map(Full::new))
                    .await
                    .map_err(|e| Box::new(this.failed(describe(&e))) as HttpError)?;
                let (parts, body) = response.into_parts();
                let body = Limited::new(body, MAX_RESPONSE_BYTES).collect().await.map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        Box::new(ResponseBodyTooLarge::new()) as HttpError
                    } else {
                        Box::new(this.failed(format!("reading the response: {}", describe(&*e))))
                    }
                })?;
                Ok(Response::from_parts(parts, body.to_bytes()))
            };
            match tokio::time::timeout(this.inner.timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(SendError::Timeout {
                    endpoint: this.inner.endpoint.redacted().to_owned(),
                    timeout: this.inner.timeout,
                }) as HttpError),
            }
        });
        let result = match task.await {
            Ok(result) => result,
            Err(_) => {
                Err(Box::new(self.failed("the tokio runtime has shut down".into())) as HttpError)
            }
        };
        match &result {
            Ok(r) if r.status().is_success() => self.note(Ok(())),
            Ok(r) => self.note(Err(&format!("HTTP {}", r.status()))),
            Err(e) => self.note(Err(&e.to_string())),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_common as common;

    const SECRET: &str = "k3y-0123456789abcdef";

    fn client(url: &str, roots: &TrustRoots, timeout: Duration) -> OtlpHttpClient {
        let endpoint = Endpoint::parse("test", url).unwrap();
        OtlpHttpClient::new(endpoint, roots, timeout, tokio::runtime::Handle::current())
    }

    fn post(url: &str) -> Request<Bytes> {
        Request::post(url).body(Bytes::from_static(b"")).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn untrusted_certificate_is_a_tls_error_without_secrets() {
        let ca = common::TestCa::new();
        let rx = common::HttpReceiver::start(Some(ca.server_config())).await;
        let url = format!("https://{}/{SECRET}/v1/traces?key={SECRET}", rx.addr);
        // An empty store trusts nobody (the system store would not trust the test CA either).
        let roots = TrustRoots::Custom(Arc::new(rustls::RootCertStore::empty()));
        let c = client(&url, &roots, Duration::from_secs(5));
        let err = c.send_bytes(post(&url)).await.unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("OTLP export to https://{} failed: TLS: ", rx.addr)),
            "{err}"
        );
        assert!(err.contains("not signed by a trusted CA"), "{err}");
        assert!(!err.contains(SECRET), "{err}");

        // Trusting the CA, the same request gets through.
        let c = client(&url, &TrustRoots::Custom(ca.root_store()), Duration::from_secs(5));
        let ok = c.send_bytes(post(&url)).await.unwrap();
        assert_eq!(ok.status(), http::StatusCode::NOT_FOUND); // not /v1/traces: the receiver's 404
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_collector_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts and never answers.
        let hold = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                conns.push(s);
            }
        });
        let url = format!("http://{addr}/{SECRET}");
        let c = client(&url, &TrustRoots::System, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let err = c.send_bytes(post(&url)).await.unwrap_err().to_string();
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(err, format!("OTLP export to http://{addr} timed out after 300ms"));
        hold.abort();
    }

    #[test]
    fn works_from_a_thread_outside_the_runtime() {
        // The batch span processor calls the client from its own thread.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let rx = rt.block_on(common::HttpReceiver::start(None));
        let url = format!("{}/v1/traces", rx.base_url());
        let c = OtlpHttpClient::new(
            Endpoint::parse("test", &url).unwrap(),
            &TrustRoots::System,
            Duration::from_secs(5),
            rt.handle().clone(),
        );
        let status = std::thread::spawn(move || {
            // A bare executor, no tokio context.
            let fut = c.send_bytes(post(&url));
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut fut = std::pin::pin!(fut);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                    break r.map(|r| r.status());
                }
                assert!(std::time::Instant::now() < deadline, "no answer");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .join()
        .unwrap();
        // An empty body is an empty export request: the receiver accepts it.
        assert_eq!(status.unwrap(), http::StatusCode::OK);
        drop(rx);
    }
}
