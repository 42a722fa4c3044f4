//! OTLP/gRPC export over `https://` to a tonic receiver whose certificate a test CA signed,
//! trusted through [`OtlpOptions::tls_roots`]. One test per binary: `init` installs
//! process-global state.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lightcl_telemetry::{LogFormat, OtlpOptions, OtlpProtocol, TelemetryConfig, TrustRoots};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(String, String)>>>);

#[tonic::async_trait]
impl TraceService for Capture {
    async fn export(
        &self,
        r: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.lock().unwrap().extend(common::span_names(r.get_ref()));
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_over_tls_trusts_the_configured_ca() {
    // tonic's TLS server takes rustls' process default (two providers are compiled in).
    lightcl_rpc::tls::install_default_provider();
    let ca = common::TestCa::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cap = Capture::default();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&ca.leaf_pem, &ca.key_pem));
    tokio::spawn(
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(TraceServiceServer::new(cap.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let cfg = TelemetryConfig {
        otlp_endpoint: Some(format!("https://{addr}")),
        ..TelemetryConfig::new("poller", LogFormat::Text)
    };
    let otlp = OtlpOptions {
        protocol: Some(OtlpProtocol::Grpc),
        tls_roots: TrustRoots::Custom(ca.root_store()),
    };
    let guard = lightcl_telemetry::init_with(cfg, otlp).unwrap();
    assert!(guard.exporting());

    tracing::info_span!("poller.poll").in_scope(|| tracing::info!("polled"));
    guard.force_flush().await;

    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        let got = cap.0.lock().unwrap().clone();
        if !got.is_empty() || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(got, vec![("poller".to_owned(), "poller.poll".to_owned())]);

    guard.shutdown().await;
}
