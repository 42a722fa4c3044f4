//! The validator's target history against a real nats-server and anvil
//! (docs/bus.md#target-revisions): an undecodable newest target is skipped, counted and the
//! revisions continue from the newest decodable one; a target at revision `u64::MAX` starts a
//! new epoch instead of wrapping; an empty subject starts a new, later epoch; a restored older
//! backup of the targets (older than what a driver applied, per the KV bucket) is overtaken by
//! a new epoch above the driver's position, whether the validator restarts or keeps running.

mod common;

use std::time::Duration;

use common::*;
use lightcl_bus::{EngineStates, subjects};
use lightcl_core::revision::{Position, is_newer};
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

/// Writes what a driver reports to the engine-state bucket: it saw and applied `applied`.
async fn driver_applied(env: &Env, node: &str, applied: Position) {
    let kv = EngineStates::open(&env.bus.jetstream(), 1).await.unwrap();
    let state = v1::EngineState {
        chain_id: CHAIN,
        node_id: node.into(),
        phase: v1::SyncPhase::Following as i32,
        target_epoch: applied.epoch,
        target_revision: applied.revision,
        applied_epoch: applied.epoch,
        applied_revision: applied.revision,
        updated_at_ms: lightcl_runtime::now_ms(),
        ..Default::default()
    };
    kv.put(&state).await.unwrap();
}

/// Replaces the stream's content with one older target (an operator restoring an old backup).
async fn restore_older_backup(env: &Env, older: &v1::Target) {
    env.bus.jetstream().get_stream(subjects::TARGETS_STREAM).await.unwrap().purge().await.unwrap();
    env.publisher
        .publish(&subjects::target(CHAIN), names::TARGET, older, Some("restored-backup"))
        .await
        .unwrap();
}

/// The newest stored target must be newer, for a driver, than what the driver applied.
fn assert_taken_by(t: &v1::Target, applied: Position) {
    let p = Position { epoch: t.epoch, revision: t.revision };
    let now = lightcl_runtime::now_ms();
    assert!(is_newer(Some(applied), p, now), "{p} is not newer than the applied {applied}");
    assert!(t.epoch > applied.epoch, "a new epoch: {p}");
    assert_eq!(t.revision, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_older_backup_is_overtaken_after_a_restart() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let first = env.wait_targets(1).await.remove(0);
    v.stop().await;

    // A driver applied (E, 50); the restored backup holds (E - 1000, 3).
    let e = first.epoch;
    let applied = Position { epoch: e, revision: 50 };
    driver_applied(&env, "n1", applied).await;
    driver_applied(&env, "n2", Position { epoch: e, revision: 49 }).await;
    let older = v1::Target { epoch: e - 1_000, revision: 3, ..first.clone() };
    restore_older_backup(&env, &older).await;

    let v = env.start(&[]).await;
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(2).await;
    assert_eq!((t[0].epoch, t[0].revision), (e - 1_000, 3), "the restored backup");
    assert_taken_by(&t[1], applied);
    // The new epoch then continues as usual.
    env.publish("a", &env.status(74, 64, 20, 40)).await;
    let t = env.wait_targets(3).await;
    assert_eq!((t[2].epoch, t[2].revision), (t[1].epoch, 2));
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restored_older_backup_is_overtaken_while_running() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let first = env.wait_targets(1).await.remove(0);

    // While the validator runs: a driver reports (E, 50) (the validator's KV watch sees it),
    // then the stream goes back to an older backup holding (E, 3), the same epoch.
    let e = first.epoch;
    let applied = Position { epoch: e, revision: 50 };
    driver_applied(&env, "n1", applied).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let older = v1::Target { revision: 3, ..first.clone() };
    restore_older_backup(&env, &older).await;

    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(2).await;
    assert_eq!((t[0].epoch, t[0].revision), (e, 3), "the restored backup");
    assert_taken_by(&t[1], applied);
    v.stop().await;
}
