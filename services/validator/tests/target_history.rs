//! The validator's target history against a real nats-server and anvil
//! (docs/bus.md#target-revisions): an undecodable newest target is skipped, counted and the
//! revisions continue from the newest decodable one; a target at revision `u64::MAX` starts a
//! new epoch instead of wrapping; an empty subject starts a new, later epoch.

mod common;

use std::time::Duration;

use common::*;
use lightcl_bus::subjects;
use lightcl_proto::{names, v1};

#[tokio::test(flavor = "multi_thread")]
async fn an_undecodable_newest_target_is_skipped_and_counted() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let first = env.wait_targets(1).await.remove(0);
    assert_eq!(first.revision, 1);
    assert!(first.epoch > 1_600_000_000_000, "epoch from the clock: {}", first.epoch);
    v.stop().await;

    // A target that decodes but does not convert (no refs), stored as the newest.
    let poison =
        v1::Target { chain_id: CHAIN, epoch: first.epoch, revision: 50, ..Default::default() };
    env.publisher
        .publish(&subjects::target(CHAIN), names::TARGET, &poison, Some("poison"))
        .await
        .unwrap();

    let v = env.start(&[]).await;
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(3).await;
    assert_eq!((t[2].epoch, t[2].revision), (first.epoch, 2), "continues from revision 1");
    let admin = v.bound.admin;
    wait::until_async(Duration::from_secs(5), wait::POLL, || async move {
        http_get(admin, "/metrics").await.body.contains("lightcl_validator_skipped_targets_total 1")
    })
    .await
    .expect("the skipped target counted once");
    assert_eq!(http_get(admin, "/ready").await.status, 200);
    // Later statuses do not count it again.
    env.publish("a", &env.status(74, 64, 20, 40)).await;
    env.wait_targets(4).await;
    let m = http_get(admin, "/metrics").await.body;
    assert!(m.contains("lightcl_validator_skipped_targets_total 1"), "{m}");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn revision_u64_max_starts_a_new_epoch() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let first = env.wait_targets(1).await.remove(0);
    let forged = v1::Target { revision: u64::MAX, ..first.clone() };
    env.publisher
        .publish(&subjects::target(CHAIN), names::TARGET, &forged, Some("forged"))
        .await
        .unwrap();
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(3).await;
    assert!(t[2].epoch > first.epoch, "{} > {}", t[2].epoch, first.epoch);
    assert_eq!(t[2].revision, 1, "never wrapped");
    assert_eq!(http_get(v.bound.admin, "/ready").await.status, 200);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_subject_starts_a_later_epoch() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let first = env.wait_targets(1).await.remove(0);
    v.stop().await;
    env.bus.jetstream().get_stream(subjects::TARGETS_STREAM).await.unwrap().purge().await.unwrap();
    let v = env.start(&[]).await;
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(1).await;
    assert!(t[0].epoch > first.epoch, "{} > {}", t[0].epoch, first.epoch);
    assert_eq!(t[0].revision, 1);
    v.stop().await;
}
