//! `lightcl_engine_driver_e2e_lag_seconds`: from the poll that observed a head (the target's
//! `observed_at_ms`) to the VALID forkchoice update that applied it. Real nats-server, mock EL.

mod common;

use std::time::Duration;

use common::*;
use lightcl_harness::mock_el::L2Chain;
use lightcl_harness::nats::NatsServer;
use lightcl_harness::{HttpAnswer, http_get, wait};
use lightcl_proto::v1;
use prost::Message;

/// Parses `<name> <value>` from a Prometheus text exposition.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn e2e_lag_is_observed_once_per_applied_target_with_an_observation_time() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(30);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    let HttpAnswer { body, .. } = http_get(d.bound.admin, "/metrics").await;
    assert!(
        body.contains("# HELP lightcl_engine_driver_e2e_lag_seconds Time from the poll"),
        "{body}"
    );
    assert_eq!(sample(&body, "lightcl_engine_driver_e2e_lag_seconds_count"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "lightcl_engine_driver_nats_reconnects_total"), Some(0.0), "{body}");

    // A head observed 1.5 s ago: one observation of at least 1.5 s (and not absurdly more).
    let mut m = v1::Target::from_core(&target(1, &chain, 20, 15, 10));
    m.observed_at_ms = lightcl_runtime::now_ms() - 1500;
    pubr.publish_raw(m.encode_to_vec()).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.head().number == 20).await);
    let count = |body: &str| sample(body, "lightcl_engine_driver_e2e_lag_seconds_count");
    let observed = wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        Some(http_get(d.bound.admin, "/metrics").await.body).filter(|b| count(b) == Some(1.0))
    })
    .await;
    let body = match observed {
        Ok(body) => body,
        Err(_) => {
            let body = http_get(d.bound.admin, "/metrics").await.body;
            assert_eq!(count(&body), Some(1.0), "{body}");
            body
        }
    };
    let sum = sample(&body, "lightcl_engine_driver_e2e_lag_seconds_sum").expect("sum");
    assert!((1.5..10.0).contains(&sum), "lag sum {sum}");

    // A target without an observation time is applied but not measured.
    pubr.publish(&target(2, &chain, 21, 16, 11)).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.head().number == 21).await);
    let HttpAnswer { body, .. } = http_get(d.bound.admin, "/metrics").await;
    assert_eq!(sample(&body, "lightcl_engine_driver_e2e_lag_seconds_count"), Some(1.0), "{body}");
    d.stop().await.expect("clean stop");
}
