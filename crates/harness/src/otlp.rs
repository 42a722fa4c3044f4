//! An in-process OTLP/gRPC trace receiver (the collector the tests point
//! `OTEL_EXPORTER_OTLP_ENDPOINT` at): it accepts `ExportTraceServiceRequest`s on a loopback port
//! and keeps every span, flattened into [`ReceivedSpan`]s (service name, ids in hex, kind and
//! attributes as strings) so tests need no OpenTelemetry types.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! let rx = lightcl_harness::otlp::OtlpReceiver::start().await?;
//! // run a service with OTEL_EXPORTER_OTLP_ENDPOINT=rx.endpoint() ...
//! let polls = rx.spans().into_iter().filter(|s| s.name == "poller.poll").count();
//! # let _ = polls; Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use tokio::task::JoinHandle;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status};

/// One received span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The exporter's `service.name` resource attribute (empty if absent).
    pub service: String,
    /// Span name.
    pub name: String,
    /// Trace id, 32 lowercase hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// Parent span id, 16 hex digits; empty for a root span.
    pub parent_span_id: String,
    /// `internal`, `server`, `client`, `producer`, `consumer` or `unspecified`.
    pub kind: &'static str,
    /// Attributes, values rendered as strings (ints in decimal, bools as `true`/`false`).
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    /// The attribute `key`, if set.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// True when this span has no parent.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<usize>>,
}

#[tonic::async_trait]
impl TraceService for Capture {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let got = flatten(r.into_inner());
        self.spans.lock().unwrap_or_else(PoisonError::into_inner).extend(got);
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// The receiver; dropping it stops the server.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    https: bool,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<usize>>,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Binds a free loopback port and serves OTLP/gRPC traces on it.
    pub async fn start() -> std::io::Result<Self> {
        Self::serve(None).await
    }

    /// Binds a free loopback port and serves OTLP/gRPC traces on it over TLS (`tls`: e.g. a
    /// leaf certificate a test CA signed); the endpoint is then `https://`.
    pub async fn start_tls(tls: ServerTlsConfig) -> std::io::Result<Self> {
        Self::serve(Some(tls)).await
    }

    async fn serve(tls: Option<ServerTlsConfig>) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let https = tls.is_some();
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).map_err(std::io::Error::other)?;
        }
        let cap = Capture::default();
        let (spans, requests) = (cap.spans.clone(), cap.requests.clone());
        let task = tokio::spawn(async move {
            let served = server
                .add_service(TraceServiceServer::new(cap))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "OTLP receiver stopped");
            }
        });
        Ok(Self { addr, https, spans, requests, task })
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS), the value for
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .map(|a| render(a.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    // An all-zero parent id also means "no parent".
                    parent_span_id: if s.parent_span_id.iter().all(|b| *b == 0) {
                        String::new()
                    } else {
                        hex(&s.parent_span_id)
                    },
                    kind: kind_name(s.kind),
                    attributes: attributes(&s.attributes),
                });
            }
        }
    }
    out
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), render(kv.value.as_ref()))).collect()
}

fn render(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex(b),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|x| render(Some(x))).collect();
            format!("[{}]", items.join(","))
        }
        Some(other) => format!("{other:?}"),
    }
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
