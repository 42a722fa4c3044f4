//! OTLP/HTTP (protobuf) export over `https://` to a receiver whose certificate a test CA
//! signed, trusted through [`OtlpOptions::tls_roots`]. Userinfo in the endpoint is sent as
//! Basic auth. One test per binary: `init` installs process-global state.

mod common;

use base64::Engine as _;
use lightcl_telemetry::{LogFormat, OtlpOptions, OtlpProtocol, TelemetryConfig, TrustRoots};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_export_trusts_the_configured_ca() {
    let ca = common::TestCa::new();
    let rx = common::HttpReceiver::start(Some(ca.server_config())).await;
    let base = rx.base_url();
    assert!(base.starts_with("https://"));
    let endpoint = base.replacen("https://", "https://otel:s3cret@", 1) + "/v1/traces";
    let cfg = TelemetryConfig {
        otlp_endpoint: Some(endpoint),
        ..TelemetryConfig::new("engine-driver", LogFormat::Json)
    };
    let otlp = OtlpOptions {
        protocol: Some(OtlpProtocol::HttpProtobuf),
        tls_roots: TrustRoots::Custom(ca.root_store()),
    };
    let guard = lightcl_telemetry::init_with(cfg, otlp).unwrap();

    tracing::info_span!("driver.fcu").in_scope(|| tracing::info!("sent"));
    guard.force_flush().await;

    let got = rx.wait_for_span("driver.fcu").await.unwrap_or_else(|| {
        panic!("no span received over TLS: {:?}", rx.received());
    });
    assert_eq!(got.path, "/v1/traces");
    assert_eq!(got.spans, vec![("engine-driver".to_owned(), "driver.fcu".to_owned())]);
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("otel:s3cret"));
    assert_eq!(got.headers.get("authorization").unwrap().to_str().unwrap(), expected);

    guard.shutdown().await;
}
