//! # lightcl-telemetry
//!
//! Logs, traces and metrics plumbing shared by every lightcl binary.
//!
//! - [`init`] installs the global `tracing` subscriber: an `EnvFilter` from `RUST_LOG`
//!   (default `info`), text or JSON logs on stderr, and — when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set — an OpenTelemetry layer exporting spans over
//!   OTLP in batches, with `service.name` set. Internal h2/hyper/tonic/tower spans are never
//!   exported (that would feed the exporter's own traffic back into itself).
//! - The W3C `traceparent`/`tracestate` propagator is always installed, so context flows
//!   through gRPC metadata ([`inject_context`]/[`extract_context`]) and any string map such as
//!   NATS headers ([`inject_map`]/[`extract_map`]) even when export is off.
//! - [`metrics::registry`] builds a prometheus-client registry with the `lightcl_<service>_`
//!   prefix.
//!
//! ## OTLP export (the OpenTelemetry exporter spec's variables)
//!
//! - **Protocol**: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`:
//!   `grpc` (the default) or `http/protobuf`. Anything else (`http/json` included) makes
//!   [`init`] fail with a [`TelemetryError::Exporter`] naming the variable and the accepted
//!   values (the services exit 64 on it).
//! - **Endpoint**: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as is; with `http/protobuf`,
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is a base URL that gets `/v1/traces` appended
//!   (`https://collector:4318` → `https://collector:4318/v1/traces`). A gRPC endpoint without
//!   a scheme is `https://` unless `OTEL_EXPORTER_OTLP_(TRACES_)INSECURE=true`. Export is off
//!   without an endpoint, with `OTEL_SDK_DISABLED=true` or with `OTEL_TRACES_EXPORTER=none`.
//! - **Headers, timeout**: `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS` (`k=v,k2=v2`, read by the
//!   opentelemetry-otlp builders) and `OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT` (milliseconds,
//!   default 10 s, bounding each export). Userinfo in the endpoint URL is sent as an
//!   `Authorization: Basic` header.
//! - **TLS**: `https://` works with both protocols: rustls with the aws-lc-rs provider (no
//!   OpenSSL), certificates verified against the system store, or `SSL_CERT_FILE` /
//!   `SSL_CERT_DIR` when set (`lightcl_rpc::tls::system_roots`); [`init_with`] takes other
//!   [`TrustRoots`]. gRPC runs on tonic's rustls transport; OTLP/HTTP on hyper-util with
//!   lightcl-rpc's HTTPS connector.
//! - **No secrets in logs**: the endpoint is only ever shown as `scheme://host:port`
//!   (`lightcl_rpc::redact_url`), in errors and logs alike; the OpenTelemetry crates' own debug
//!   events that carry the full URL are not logged.
//!
//! Invariants: `init` succeeds at most once per process (a second call returns
//! [`TelemetryError::AlreadyInitialized`]); OTLP export needs a live multi-thread tokio runtime,
//! and the blocking flush runs off the async workers ([`TelemetryGuard::shutdown`]).
//!
//! ```no_run
//! use lightcl_telemetry::{LogFormat, TelemetryConfig};
//!
//! #[tokio::main]
//! async fn main() -> eyre::Result<()> {
//!     let guard = lightcl_telemetry::init(TelemetryConfig::new("poller", LogFormat::Text))?;
//!     tracing::info!(chain_id = 10, "started");
//!     // ... run ...
//!     guard.shutdown().await; // flush spans before exiting
//!     Ok(())
//! }
//! ```
//!
//! Exporting over OTLP/HTTP to a collector with a private CA, whatever the environment says:
//!
//! ```no_run
//! # async fn f(ca: std::sync::Arc<rustls::RootCertStore>) -> eyre::Result<()> {
//! use lightcl_telemetry::{LogFormat, OtlpOptions, OtlpProtocol, TelemetryConfig, TrustRoots};
//!
//! let config = TelemetryConfig {
//!     otlp_endpoint: Some("https://collector.internal:4318/v1/traces".into()),
//!     ..TelemetryConfig::new("poller", LogFormat::Json)
//! };
//! let otlp = OtlpOptions {
//!     protocol: Some(OtlpProtocol::HttpProtobuf),
//!     tls_roots: TrustRoots::Custom(ca),
//! };
//! let guard = lightcl_telemetry::init_with(config, otlp)?;
//! # guard.shutdown().await; Ok(()) }
//! ```
//!
//! Propagating over gRPC:
//!
//! ```no_run
//! use tracing_opentelemetry::OpenTelemetrySpanExt;
//! // client side, e.g. in an interceptor
//! let mut req = tonic::Request::new(());
//! lightcl_telemetry::inject_context(&tracing::Span::current().context(), req.metadata_mut());
//! // server side
//! let span = tracing::info_span!("control.pause");
//! let _ = span.set_parent(lightcl_telemetry::extract_context(req.metadata()));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry::{Context, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

mod error;
mod http_client;
pub mod metrics;
mod otlp;
/// The export tests' CA and OTLP/HTTP receiver, for the unit tests too.
#[cfg(test)]
#[path = "../tests/common/mod.rs"]
mod test_common;

pub use error::TelemetryError;
pub use lightcl_rpc::tls::TrustRoots;
pub use otlp::OtlpProtocol;

/// Filter applied to spans exported over OTLP: our spans at `info`+, transport internals off.
pub const OTEL_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off";

/// Log filter when `RUST_LOG` is unset: `info`, with the OpenTelemetry SDK's own chatter at
/// `warn`.
pub const DEFAULT_LOG_FILTER: &str = "info,opentelemetry=warn,opentelemetry_sdk=warn";

/// How long a shutdown waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// What to initialise. `Debug` shows the endpoint as `scheme://host:port` only.
#[derive(Clone)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans, e.g. `poller` (`OTEL_SERVICE_NAME` overrides it).
    pub service_name: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// OTLP endpoint, used as is (for `http/protobuf` the full URL, e.g.
    /// `https://collector:4318/v1/traces`); `None` reads `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
    /// then `OTEL_EXPORTER_OTLP_ENDPOINT` (see the crate docs). No endpoint → no export.
    pub otlp_endpoint: Option<String>,
}

impl std::fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryConfig")
            .field("service_name", &self.service_name)
            .field("log_format", &self.log_format)
            .field("otlp_endpoint", &self.otlp_endpoint.as_deref().map(lightcl_rpc::redact_url))
            .finish()
    }
}

impl TelemetryConfig {
    /// Config with the endpoint taken from the environment.
    pub fn new(service_name: impl Into<String>, log_format: LogFormat) -> Self {
        Self { service_name: service_name.into(), log_format, otlp_endpoint: None }
    }
}

/// OTLP export settings that are not read from the environment (for tests and embedders);
/// the default reads the protocol from the environment and trusts the system store.
#[derive(Debug, Clone, Default)]
pub struct OtlpOptions {
    /// The protocol; `None` reads `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, then
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (default `grpc`).
    pub protocol: Option<OtlpProtocol>,
    /// CAs trusted for an `https://` endpoint, both protocols: by default the system store, or
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` when set.
    pub tls_roots: TrustRoots,
}

/// Keeps the trace pipeline alive; flush it with [`shutdown`](Self::shutdown) before exiting
/// (dropping it also flushes, blocking).
#[must_use = "dropping the guard shuts the trace exporter down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// True when spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Export buffered spans now (blocking work runs on a blocking thread).
    pub async fn force_flush(&self) {
        if let Some(p) = self.provider.clone() {
            let res = tokio::task::spawn_blocking(move || p.force_flush()).await;
            if let Ok(Err(e)) = res {
                tracing::warn!(error = %e, "span flush failed");
            }
        }
    }

    /// Flush and stop the exporter.
    pub async fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            let res =
                tokio::task::spawn_blocking(move || p.shutdown_with_timeout(FLUSH_TIMEOUT)).await;
            if let Ok(Err(e)) = res {
                eprintln!("telemetry: span exporter shutdown failed: {e}");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(p) = self.provider.take() else { return };
        let flush = move || {
            if let Err(e) = p.shutdown_with_timeout(FLUSH_TIMEOUT) {
                eprintln!("telemetry: span exporter shutdown failed: {e}");
            }
        };
        // Never block an async worker outright: hand its core away first.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(flush);
            }
            _ => {
                let _ = std::thread::spawn(flush).join();
            }
        }
    }
}

/// Install logging, the W3C propagator and (if configured) OTLP trace export. Call once, inside
/// a multi-thread tokio runtime when exporting.
pub fn init(config: TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    init_with(config, OtlpOptions::default())
}

/// [`init`] with OTLP settings that override the environment's (protocol, trusted CAs).
pub fn init_with(
    config: TelemetryConfig,
    otlp: OtlpOptions,
) -> Result<TelemetryGuard, TelemetryError> {
    if INITIALIZED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialized);
    }
    let result = try_init(config, otlp);
    if result.is_err() {
        INITIALIZED.store(false, Ordering::SeqCst);
    }
    result
}

fn try_init(config: TelemetryConfig, otlp: OtlpOptions) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            EnvFilter::try_new(&v).map_err(|e| TelemetryError::Filter(format!("{v:?}: {e}")))?
        }
        _ => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    let fmt = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(log_writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(log_writer)
            .boxed(),
    };

    let target =
        otlp::resolve(&|k| std::env::var(k).ok(), config.otlp_endpoint.as_deref(), otlp.protocol)?;
    let provider = match &target {
        Some(t) => Some(build_provider(t, &otlp.tls_roots, &config.service_name)?),
        None => None,
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(config.service_name.clone()))
            .with_filter(EnvFilter::new(OTEL_FILTER))
    });

    let logged = filter.and(tracing_subscriber::filter::filter_fn(no_full_url));
    let registry = tracing_subscriber::registry().with(fmt.with_filter(logged)).with(otel);
    if registry.try_init().is_err() {
        if let Some(p) = provider {
            let _ = std::thread::spawn(move || p.shutdown()).join();
        }
        return Err(TelemetryError::AlreadyInitialized);
    }
    global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(p) = &provider {
        global::set_tracer_provider(p.clone());
    }
    if let Some(t) = &target {
        // `Endpoint` displays as `scheme://host:port` only.
        tracing::info!(protocol = %t.protocol, endpoint = %t.endpoint, "exporting spans over OTLP");
    }
    Ok(TelemetryGuard { provider })
}

/// False for the OpenTelemetry crates' internal events that carry a full URL: with their
/// `internal-logs` feature (off in this build of opentelemetry-otlp, but one dependency asking
/// for it turns it on) the OTLP exporters log the endpoint, path and query included, at debug
/// level. Never logged.
fn no_full_url(meta: &tracing::Metadata<'_>) -> bool {
    !(meta.is_event()
        && meta.target().starts_with("opentelemetry")
        && (meta.fields().field("url").is_some() || meta.fields().field("endpoint").is_some()))
}

fn build_provider(
    target: &otlp::OtlpTarget,
    roots: &TrustRoots,
    service_name: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoRuntime);
    }
    let exporter = otlp::build_exporter(target, roots)?;
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| service_name.to_owned());
    let resource = Resource::builder().with_service_name(name).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) =
            (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(&value))
        {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|k| match k {
                KeyRef::Ascii(k) => k.as_str(),
                KeyRef::Binary(k) => k.as_str(),
            })
            .collect()
    }
}

/// Write `cx` as W3C `traceparent`/`tracestate` into gRPC metadata.
pub fn inject_context(cx: &Context, metadata: &mut MetadataMap) {
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut MetadataInjector(metadata)));
}

/// Read the W3C context from gRPC metadata (an empty context if absent or malformed).
pub fn extract_context(metadata: &MetadataMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&MetadataExtractor(metadata)))
}

/// `cx` as W3C header pairs (`traceparent`, `tracestate`), e.g. for NATS message headers.
pub fn inject_map(cx: &Context) -> HashMap<String, String> {
    let mut map = HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(cx, &mut map));
    map
}

/// Read the W3C context from header pairs (an empty context if absent or malformed).
pub fn extract_map(map: &HashMap<String, String>) -> Context {
    global::get_text_map_propagator(|p| p.extract(map))
}

/// The current `tracing` span's context as W3C header pairs (for a NATS publish).
pub fn current_context_map() -> HashMap<String, String> {
    inject_map(&tracing::Span::current().context())
}

/// Make `span` a child of the context carried in `metadata` (no-op without a valid context or
/// without the OpenTelemetry layer).
pub fn set_parent_from_metadata(span: &tracing::Span, metadata: &MetadataMap) {
    let cx = extract_context(metadata);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

struct HttpExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Read the W3C context from HTTP headers (an empty context if absent or malformed).
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HttpExtractor(headers)))
}

/// Make `span` a child of the context carried in HTTP headers (e.g. in a tonic `trace_fn`).
pub fn set_parent_from_http(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = extract_http(headers);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// A tonic client interceptor that injects the current span's context into every request:
/// `PollerControlClient::with_interceptor(channel, lightcl_telemetry::trace_interceptor)`.
#[allow(clippy::result_large_err)] // the signature tonic requires
pub fn trace_interceptor(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_context(&tracing::Span::current().context(), req.metadata_mut());
    Ok(req)
}

/// Install only the W3C propagator (for tests and tools that do not call [`init`]).
pub fn install_propagator() {
    global::set_text_map_propagator(TraceContextPropagator::new());
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable text lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?} (expected text or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

static LOGS_MUTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Stops all further log output of this process (lines already written stay). A service calls
/// it right before printing its final one-line error and exiting, so no background task's log
/// line lands after that line.
pub fn mute_logs() {
    LOGS_MUTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// stderr, or nowhere once [`mute_logs`] was called.
fn log_writer() -> Box<dyn std::io::Write> {
    if LOGS_MUTED.load(std::sync::atomic::Ordering::SeqCst) {
        Box::new(std::io::sink())
    } else {
        Box::new(std::io::stderr())
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    use super::*;

    fn remote_cx() -> Context {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn metadata_round_trip() {
        install_propagator();
        let mut md = MetadataMap::new();
        inject_context(&remote_cx(), &mut md);
        assert_eq!(
            md.get("traceparent").unwrap().to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let cx = extract_context(&md);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(sc.trace_id(), TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap());
        assert!(sc.is_remote());
    }

    #[test]
    fn map_round_trip_and_garbage() {
        install_propagator();
        let map = inject_map(&remote_cx());
        assert!(map.contains_key("traceparent"));
        let cx = extract_map(&map);
        assert_eq!(
            cx.span().span_context().span_id(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap()
        );

        let mut bad = HashMap::new();
        bad.insert("traceparent".to_owned(), "garbage".to_owned());
        assert!(!extract_map(&bad).span().span_context().is_valid());
        assert!(!extract_context(&MetadataMap::new()).span().span_context().is_valid());
    }

    #[test]
    fn opentelemetry_events_with_a_url_are_not_logged() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let layer = tracing_subscriber::fmt::layer().with_writer(move || out.clone()).with_filter(
            EnvFilter::new("debug").and(tracing_subscriber::filter::filter_fn(no_full_url)),
        );
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let url = "https://c:4318/k3y-0123456789/v1/traces";
            tracing::debug!(target: "opentelemetry-otlp", name = "HttpClient.NetworkError", url, "x");
            tracing::debug!(target: "opentelemetry-otlp", endpoint = url, "TonicChannelBuilt");
            tracing::debug!(target: "opentelemetry-otlp", "kept without a url");
            tracing::debug!(target: "lightcl_telemetry", endpoint = "https://c:4318", "kept: ours");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("k3y"), "{text}");
        assert!(text.contains("kept without a url") && text.contains("kept: ours"), "{text}");
    }

    #[test]
    fn log_format_parses() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!("xml".parse::<LogFormat>().is_err());
    }
}
