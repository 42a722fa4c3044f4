//! OTLP/gRPC export over `https://` to a tonic receiver whose certificate a test CA signed,
//! trusted through [`OtlpOptions::tls_roots`]. One test per binary: `init` installs
//! process-global state.

mod common;

use std::time::Duration;

use lightcl_harness::otlp::OtlpReceiver;
use lightcl_harness::wait;
use lightcl_telemetry::{LogFormat, OtlpOptions, OtlpProtocol, TelemetryConfig, TrustRoots};
use tonic::transport::{Identity, ServerTlsConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_export_over_tls_trusts_the_configured_ca() {
    // tonic's TLS server takes rustls' process default (two providers are compiled in).
    lightcl_rpc::tls::install_default_provider();
    let ca = common::TestCa::new();
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(&ca.leaf_pem, &ca.key_pem));
    let rx = OtlpReceiver::start_tls(tls).await.unwrap();

    let cfg = TelemetryConfig {
        otlp_endpoint: Some(rx.endpoint()),
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

    // Whether or not a span arrives in time, the assertion below says what came.
    let _ = wait::until_async(Duration::from_secs(10), wait::POLL, || {
        std::future::ready(!rx.spans().is_empty())
    })
    .await;
    let got: Vec<_> = rx.spans().into_iter().map(|s| (s.service, s.name)).collect();
    assert_eq!(got, vec![("poller".to_owned(), "poller.poll".to_owned())]);

    guard.shutdown().await;
}
