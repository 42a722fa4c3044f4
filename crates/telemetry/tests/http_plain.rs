//! OTLP/HTTP (protobuf) export to a plain `http://` in-process receiver. One test per binary:
//! `init` installs process-global state.

mod common;

use lightcl_telemetry::{LogFormat, OtlpOptions, OtlpProtocol, TelemetryConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_export_reaches_the_receiver() {
    let rx = common::HttpReceiver::start(None).await;
    let cfg = TelemetryConfig {
        otlp_endpoint: Some(format!("{}/v1/traces", rx.base_url())),
        ..TelemetryConfig::new("validator", LogFormat::Text)
    };
    let otlp = OtlpOptions { protocol: Some(OtlpProtocol::HttpProtobuf), ..OtlpOptions::default() };
    let guard = lightcl_telemetry::init_with(cfg, otlp).unwrap();
    assert!(guard.exporting());

    tracing::info_span!("validate", chain_id = 10).in_scope(|| {
        tracing::info_span!("l1.check").in_scope(|| tracing::info!("checked"));
    });
    guard.force_flush().await;

    let got = rx.wait_for_span("validate").await.unwrap_or_else(|| {
        panic!("no span received: {:?}", rx.received());
    });
    assert_eq!(got.path, "/v1/traces");
    assert_eq!(got.content_type, "application/x-protobuf");
    assert!(got.spans.contains(&("validator".to_owned(), "l1.check".to_owned())), "{got:?}");
    let ua = got.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(ua.starts_with("OTel-OTLP-Exporter-Rust/"), "{ua}");

    guard.shutdown().await;
}
