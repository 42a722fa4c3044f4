//! A gRPC call continues the caller's trace: the server's `grpc.request` span is exported under
//! the client's trace id (own test binary: telemetry init is process-global).

use std::time::Duration;

use lightcl_harness::otlp::OtlpReceiver;
use lightcl_harness::wait;
use lightcl_runtime::{GrpcOptions, Readiness, serve_grpc};
use lightcl_telemetry::{LogFormat, TelemetryConfig};
use opentelemetry::trace::TraceContextExt;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_span_continues_the_client_trace() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let guard = lightcl_telemetry::init(TelemetryConfig {
        service_name: "poller".into(),
        log_format: LogFormat::Text,
        otlp_endpoint: Some(otlp.endpoint()),
    })
    .unwrap();

    let cancel = CancellationToken::new();
    let opts = GrpcOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        health_service: "lightcl.v1.PollerControl",
        readiness: Readiness::default(),
        limits: Default::default(),
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

    let exported = wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        guard.force_flush().await;
        otlp.spans().into_iter().find(|s| s.name == "grpc.request")
    })
    .await;
    let server = exported
        .unwrap_or_else(|t| panic!("{t}: no grpc.request span exported: {:?}", otlp.spans()));
    assert_eq!(server.trace_id, trace_id.to_string(), "server span in the client's trace");
    assert!(!server.parent_span_id.is_empty(), "server span has a remote parent");
    cancel.cancel();
    guard.shutdown().await;
}
