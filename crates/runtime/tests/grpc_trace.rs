//! A gRPC call continues the caller's trace: the server's `grpc.request` span is exported under
//! the client's trace id (own test binary: telemetry init is process-global).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightcl_runtime::{GrpcOptions, Readiness, serve_grpc};
use lightcl_telemetry::{LogFormat, TelemetryConfig};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

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

/// (span name, trace id, parent span id) of every received span.
fn spans(cap: &Capture) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let reqs = cap.0.lock().unwrap();
    reqs.iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.name.clone(), s.trace_id.clone(), s.parent_span_id.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_span_continues_the_client_trace() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    let cap = Capture::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(cap.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let guard = lightcl_telemetry::init(TelemetryConfig {
        service_name: "poller".into(),
        log_format: LogFormat::Text,
        otlp_endpoint: Some(format!("http://{otlp}")),
    })
    .unwrap();

    let cancel = CancellationToken::new();
    let opts = GrpcOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        health_service: "lightcl.v1.PollerControl",
        readiness: Readiness::default(),
    };
    let routes = tonic::service::Routes::new(
        tonic_reflection::server::Builder::configure().build_v1alpha().unwrap(),
    );
    let (addr, _task) = serve_grpc(opts, routes, cancel.clone()).await.unwrap();
    let ch = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let client_span = tracing::info_span!("lightctl.status");
    let trace_id = client_span.context().span().span_context().trace_id();
    async {
        let mut health = HealthClient::with_interceptor(ch, lightcl_telemetry::trace_interceptor);
        health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
    }
    .instrument(client_span)
    .await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let server = loop {
        guard.force_flush().await;
        let got = spans(&cap);
        if let Some(s) = got.iter().find(|s| s.0 == "grpc.request") {
            break s.clone();
        }
        assert!(Instant::now() < deadline, "no grpc.request span exported: {got:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(server.1, trace_id.to_bytes().to_vec(), "server span in the client's trace");
    assert!(!server.2.is_empty(), "server span has a remote parent");
    cancel.cancel();
    guard.shutdown().await;
}
