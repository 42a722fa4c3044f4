//! OTLP export end to end against an in-process OTLP/gRPC receiver. One test per binary:
//! `init` installs process-global state.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightcl_telemetry::{LogFormat, TelemetryConfig, TelemetryError};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Capture {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().unwrap().push(r.into_inner());
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// (service.name, span name, trace id, span id, parent span id) of a received span.
type Received = (String, String, Vec<u8>, Vec<u8>, Vec<u8>);

/// Every received span.
fn spans(cap: &Capture) -> Vec<Received> {
    let mut out = Vec::new();
    for req in cap.0.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push((
                        service.clone(),
                        s.name.clone(),
                        s.trace_id.clone(),
                        s.span_id.clone(),
                        s.parent_span_id.clone(),
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_under_one_trace() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cap = Capture::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(cap.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let cfg = TelemetryConfig {
        service_name: "poller".into(),
        log_format: LogFormat::Json,
        otlp_endpoint: Some(format!("http://{addr}")),
    };
    let guard = lightcl_telemetry::init(cfg).unwrap();
    assert!(guard.exporting());

    // A parent span, a child, and a "remote" span continued from gRPC metadata.
    let mut md = tonic::metadata::MetadataMap::new();
    {
        let poll = tracing::info_span!("poll", chain_id = 10);
        let _g = poll.enter();
        tracing::info_span!("publish").in_scope(|| {
            let req = lightcl_telemetry::trace_interceptor(tonic::Request::new(())).unwrap();
            md = req.metadata().clone();
            assert_eq!(
                lightcl_telemetry::current_context_map().get("traceparent").map(String::as_str),
                md.get("traceparent").and_then(|v| v.to_str().ok())
            );
        });
    }
    {
        let handler = tracing::info_span!("control.pause");
        lightcl_telemetry::set_parent_from_metadata(&handler, &md);
        let _g = handler.enter();
        tracing::info!("handled");
    }
    // Debug spans and transport-internal targets are filtered out.
    tracing::debug_span!("too_verbose").in_scope(|| {});
    tracing::info_span!(target: "h2::proto", "h2_internal").in_scope(|| {});

    guard.force_flush().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = spans(&cap);
        if got.len() >= 3 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let find = |name: &str| {
        got.iter()
            .find(|s| s.1 == name)
            .unwrap_or_else(|| panic!("no span {name}: {got:?}"))
            .clone()
    };
    let (poll, publish, pause) = (find("poll"), find("publish"), find("control.pause"));
    assert_eq!(poll.0, "poller");
    assert_eq!(poll.2, publish.2, "child in the same trace");
    assert_eq!(publish.4, poll.3, "publish's parent is poll");
    assert_eq!(pause.2, poll.2, "remote continuation shares the trace id");
    assert_eq!(pause.4, publish.3, "pause's parent is the injected span");
    assert!(got.iter().all(|s| s.1 != "too_verbose" && s.1 != "h2_internal"), "{got:?}");

    // A second init is an error, not a panic.
    let again = lightcl_telemetry::init(TelemetryConfig::new("x", LogFormat::Text));
    assert!(matches!(again, Err(TelemetryError::AlreadyInitialized)));

    guard.shutdown().await;
}
