//! Without an endpoint `init` only installs logging and the propagator (own process: global
//! state).

use lightcl_telemetry::{LogFormat, TelemetryConfig, TelemetryError, extract_map, inject_map};
use opentelemetry::trace::TraceContextExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_only() {
    let cfg = TelemetryConfig {
        otlp_endpoint: None,
        ..TelemetryConfig::new("validator", LogFormat::Text)
    };
    // The environment may set an endpoint for the whole test run; this test only makes sense
    // without one.
    if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
    {
        return;
    }
    let guard = lightcl_telemetry::init(cfg).unwrap();
    assert!(!guard.exporting());
    tracing::info!("hello");
    // The propagator is installed even without export.
    let mut map = std::collections::HashMap::new();
    map.insert(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    );
    let cx = extract_map(&map);
    assert!(cx.span().span_context().is_valid());
    assert_eq!(inject_map(&cx).get("traceparent"), map.get("traceparent"));
    assert!(matches!(
        lightcl_telemetry::init(TelemetryConfig::new("validator", LogFormat::Text)),
        Err(TelemetryError::AlreadyInitialized)
    ));
    guard.shutdown().await;
}
