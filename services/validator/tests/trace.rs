//! One trace from the poll to the forkchoice update: the validator continues the status's W3C
//! trace and hands it on in the target's headers. (Own test binary: it installs a global
//! tracing subscriber with the OpenTelemetry layer.)

mod common;

use async_nats::HeaderMap;
use common::*;
use lightcl_bus::subjects;
use lightcl_proto::{names, v1};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::layer::SubscriberExt;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread")]
async fn the_target_continues_the_status_trace() {
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    lightcl_telemetry::install_propagator();

    let env = Env::new().await;
    let v = env.start(&[]).await;
    let raw = v1::RawStatus {
        chain_id: CHAIN,
        source_id: "a".into(),
        observed_at_ms: 1,
        poll_seq: 1,
        status: Some((&env.status(70, 60, 20, 38)).into()),
    };
    let mut h = HeaderMap::new();
    h.insert("Content-Type", "application/x-protobuf");
    h.insert(lightcl_bus::MESSAGE_HEADER, names::RAW_STATUS);
    h.insert("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01").as_str());
    let js = env.bus.jetstream();
    js.publish_with_headers(
        subjects::status(CHAIN, "a"),
        h,
        prost::Message::encode_to_vec(&raw).into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    env.wait_targets(1).await;

    let last = lightcl_bus::last_message::<v1::Target>(
        &js,
        subjects::TARGETS_STREAM,
        &subjects::target(CHAIN),
        names::TARGET,
    )
    .await
    .unwrap()
    .unwrap();
    let parent = last.trace.get("traceparent").expect("target carries traceparent");
    assert!(parent.contains(TRACE_ID), "{parent}");
    assert!(!parent.contains("00f067aa0ba902b7"), "a child span of the status's, not a copy");
    v.stop().await;
}
