//! OTLP export end to end against an in-process OTLP/gRPC receiver. One test per binary:
//! `init` installs process-global state.

use std::time::Duration;

use lightcl_harness::otlp::OtlpReceiver;
use lightcl_harness::wait;
use lightcl_telemetry::{LogFormat, TelemetryConfig, TelemetryError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_under_one_trace() {
    let otlp = OtlpReceiver::start().await.unwrap();

    let cfg = TelemetryConfig {
        service_name: "poller".into(),
        log_format: LogFormat::Json,
        otlp_endpoint: Some(otlp.endpoint()),
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
    // Whether or not 3 arrive in time, the assertions below say what is missing.
    let _ = wait::until_async(Duration::from_secs(10), wait::POLL, || {
        std::future::ready(otlp.spans().len() >= 3)
    })
    .await;
    let got = otlp.spans();
    let find = |name: &str| {
        got.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}: {got:?}"))
            .clone()
    };
    let (poll, publish, pause) = (find("poll"), find("publish"), find("control.pause"));
    assert_eq!(poll.service, "poller");
    assert_eq!(poll.trace_id, publish.trace_id, "child in the same trace");
    assert_eq!(publish.parent_span_id, poll.span_id, "publish's parent is poll");
    assert_eq!(pause.trace_id, poll.trace_id, "remote continuation shares the trace id");
    assert_eq!(pause.parent_span_id, publish.span_id, "pause's parent is the injected span");
    assert!(got.iter().all(|s| s.name != "too_verbose" && s.name != "h2_internal"), "{got:?}");

    // A second init is an error, not a panic.
    let again = lightcl_telemetry::init(TelemetryConfig::new("x", LogFormat::Text));
    assert!(matches!(again, Err(TelemetryError::AlreadyInitialized)));

    guard.shutdown().await;
}
