//! Integration: real nats-server, real HTTP + JWT to the mock EL, real `Target` protobufs.

mod common;

use std::time::Duration;

use alloy_primitives::B256;
use common::*;
use lightcl_harness::mock_el::{FcuReply, L2Chain};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::{HttpAnswer, http_get, wait};
use lightcl_proto::v1;

fn zero_labels(r: &lightcl_harness::mock_el::FcuRecord) -> bool {
    r.state.safe_block_hash == B256::ZERO && r.state.finalized_block_hash == B256::ZERO
}

#[tokio::test(flavor = "multi_thread")]
async fn initial_sync_sends_zero_labels_until_first_valid_then_all_three() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(80).await;
    let chain = L2Chain::new(40);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;

    assert!(
        el.wait_until(Duration::from_secs(10), |e| e.safe().number == 25
            && e.finalized().number == 20
            && e.head().number == 30)
            .await,
        "labels landed: head {} safe {} finalized {}",
        el.head().number,
        el.safe().number,
        el.finalized().number
    );
    let fcus = el.fcus();
    assert_eq!(fcus[0].reply, FcuReply::Syncing, "unknown head is SYNCING first");
    let first_valid = fcus.iter().position(|f| f.reply == FcuReply::Valid).expect("a VALID");
    assert!(
        fcus[..=first_valid].iter().all(zero_labels),
        "zero labels until the first VALID: {fcus:?}"
    );
    let after = &fcus[first_valid + 1..];
    assert!(
        after.iter().any(|f| !zero_labels(f) && f.reply == FcuReply::Valid),
        "then all three: {after:?}"
    );
    assert_eq!(el.check_invariants(), Ok(()));

    // EngineState in KV.
    assert!(
        wait::until_async(Duration::from_secs(5), wait::POLL, || async {
            pubr.engine_state("n1").await.is_some_and(|s| {
                s.phase == v1::SyncPhase::Following as i32
                    && s.safe.as_ref().is_some_and(|b| b.number == 25)
                    && s.finalized.as_ref().is_some_and(|b| b.number == 20)
                    && s.last_answer == v1::FcuAnswer::Valid as i32
                    && s.applied_revision == 1
                    && s.current_l1.is_some()
            })
        })
        .await
        .is_ok(),
        "engine state published: {:?}",
        pubr.engine_state("n1").await
    );

    // Metrics and readiness.
    let HttpAnswer { status: code, body, .. } = http_get(d.bound.admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("lightcl_engine_driver_fcu_total{answer=\"valid\"}"), "{body}");
    assert!(body.contains("lightcl_engine_driver_fcu_total{answer=\"syncing\"}"), "{body}");
    assert!(body.contains("lightcl_engine_driver_applied_safe 25"), "{body}");
    assert!(body.contains("lightcl_engine_driver_sync_phase 2"), "{body}");
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        http_get(d.bound.admin, "/ready").await.status == 200
    })
    .await
    .unwrap();
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn labels_land_while_the_tip_moves_every_500ms() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(150).await;
    let mut chain = L2Chain::new(20);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;

    let rounds = 10u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(500));
    let mut safes = Vec::new();
    let mut landed_before_next = Vec::new();
    for rev in 1..=rounds {
        ticker.tick().await;
        // What had landed when the tip moves on.
        landed_before_next.push(el.safe().number);
        let new = chain.extend(1);
        el.add_network_blocks(new);
        let tip = chain.tip().number;
        pubr.publish(&target(rev, &chain, tip, tip - 4, tip - 8)).await;
        safes.push(tip - 4);
    }
    // Round k (k ≥ 3) starts after the safe head of round k-2 landed.
    for k in 3..=rounds as usize {
        assert!(
            landed_before_next[k - 1] >= safes[k - 3],
            "round {k}: EL safe {} lags target safe {} (landed {landed_before_next:?}, targets {safes:?})",
            landed_before_next[k - 1],
            safes[k - 3]
        );
    }
    let last = *safes.last().expect("rounds");
    assert!(el.wait_until(Duration::from_secs(5), |e| e.safe().number == last).await);
    assert_eq!(el.head().hash, chain.tip().hash, "head follows the tip");
    // Every new head was answered SYNCING first (the mock downloads it).
    let fcus = el.fcus();
    let mut seen = std::collections::HashSet::new();
    for f in &fcus {
        if seen.insert(f.state.head_block_hash) {
            assert_eq!(f.reply, FcuReply::Syncing, "first answer for a new head");
        }
    }
    assert!(seen.len() >= rounds as usize, "tip following advances head each target");
    assert_eq!(el.check_invariants(), Ok(()));
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn tip_following_advances_head_each_target_and_ignores_garbage() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(30);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    for (rev, tip) in (20..26).enumerate() {
        pubr.publish(&target(rev as u64 + 1, &chain, tip, tip - 5, tip - 10)).await;
        assert!(
            el.wait_until(Duration::from_secs(5), |e| e.head().number == tip
                && e.safe().number == tip - 5)
                .await,
            "head {tip} applied"
        );
        if rev == 2 {
            // An undecodable message is skipped, not fatal.
            pubr.publish_raw(vec![0xff, 0x01, 0x02]).await;
            let mut bad = v1::Target::from_core(&target(99, &chain, 29, 25, 20));
            bad.safe_l2.as_mut().expect("safe").hash = vec![1, 2, 3];
            pubr.publish_raw(prost::Message::encode_to_vec(&bad)).await;
        }
    }
    let HttpAnswer { body, .. } = http_get(d.bound.admin, "/metrics").await;
    assert!(body.contains("lightcl_engine_driver_bad_messages_total 2"), "{body}");
    // A stale revision (replay) changes nothing.
    let before = el.fcus().len();
    pubr.publish(&target(3, &chain, 29, 25, 20)).await;
    pubr.publish(&target(7, &chain, 26, 21, 16)).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.head().number == 26).await);
    assert!(el.fcus()[before..].iter().all(|f| f.state.head_block_hash != chain.at(29).hash));
    assert_eq!(el.check_invariants(), Ok(()));
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn reorged_target_same_height_other_hash_moves_head() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(50).await;
    let a = L2Chain::new(30);
    let b = a.fork(25, 7, 30);
    el.set_network_chain(&a);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    pubr.publish(&target(1, &a, 30, 24, 20)).await;
    assert!(
        el.wait_until(Duration::from_secs(5), |e| e.head().hash == a.at(30).hash
            && e.safe().number == 24)
            .await
    );
    el.add_network_blocks(b.blocks().iter().copied());
    pubr.publish(&target(2, &b, 30, 26, 20)).await;
    assert!(
        el.wait_until(Duration::from_secs(8), |e| e.head().hash == b.at(30).hash
            && e.safe().hash == b.at(26).hash)
            .await,
        "reorg applied: head {:?}",
        el.head()
    );
    let reads_at_30 = el
        .calls()
        .iter()
        .filter(|c| c.method == "eth_getBlockByNumber" && c.params[0] == "0x1e")
        .count();
    assert!(reads_at_30 >= 1, "the driver compared the EL's block at the target height");
    assert_eq!(el.check_invariants(), Ok(()));
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_forkchoice_state_triggers_a_reread_and_a_corrected_fcu() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let a = L2Chain::new(20);
    let b = a.fork(12, 3, 20);
    el.seed(&a, 14, 10, 5);
    el.add_network_blocks(b.blocks().iter().copied());
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    // A torn status: unsafe on fork b, safe still on fork a above the fork point.
    let mut t = target(1, &b, 20, 10, 5);
    t.safe_l2 = a.at(13);
    t.local_safe_l2 = a.at(13);
    pubr.publish(&t).await;
    let corrected = |e: &lightcl_harness::mock_el::MockEl| {
        e.fcus().iter().any(|f| {
            f.reply == FcuReply::Valid
                && f.state.head_block_hash == b.at(20).hash
                && f.state.safe_block_hash == a.at(10).hash
                && f.state.finalized_block_hash == a.at(5).hash
        })
    };
    assert!(
        el.wait_until(Duration::from_secs(8), corrected).await,
        "corrected FCU: {:?}",
        el.fcus()
    );
    let calls = el.calls();
    let rejected = calls
        .iter()
        .position(|c| {
            c.fcu.as_ref().is_some_and(|f| matches!(f.reply, FcuReply::Error { code: -38002, .. }))
        })
        .expect("a -38002");
    let reread: Vec<_> = calls[rejected + 1..]
        .iter()
        .take_while(|c| c.fcu.is_none())
        .filter(|c| c.method == "eth_getBlockByNumber")
        .map(|c| c.params[0].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(reread, ["latest", "safe", "finalized"], "heads re-read before the next FCU");
    // A consistent target afterwards is applied normally.
    pubr.publish(&target(2, &b, 20, 16, 12)).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.safe().hash == b.at(16).hash).await);
    assert_eq!(el.check_invariants(), Ok(()));
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_head_is_never_sent_again() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(30);
    el.set_network_chain(&chain);
    el.seed(&chain, 20, 15, 10);
    el.force_invalid(chain.at(25).hash);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    let bad = chain.at(25).hash;
    pubr.publish(&target(1, &chain, 25, 18, 12)).await;
    assert!(
        el.wait_until(Duration::from_secs(5), |e| e
            .fcus()
            .iter()
            .any(|f| matches!(f.reply, FcuReply::Invalid { .. })))
            .await
    );
    for rev in 2..=3 {
        pubr.publish(&target(rev, &chain, 25, 18 + rev, 12)).await;
        assert!(
            wait::until_async(Duration::from_secs(5), wait::POLL, || async {
                pubr.engine_state("n1").await.is_some_and(|s| s.target_revision == rev)
            })
            .await
            .is_ok(),
            "revision {rev} seen"
        );
    }
    pubr.publish(&target(4, &chain, 24, 22, 12)).await;
    assert!(
        el.wait_until(Duration::from_secs(5), |e| e.head().number == 24 && e.safe().number == 22)
            .await
    );
    let with_bad = el.fcus().iter().filter(|f| f.state.head_block_hash == bad).count();
    assert_eq!(with_bad, 1, "the INVALID head was sent exactly once");
    // The engine state is written after the FCU answer, asynchronously (rate-limited puts).
    let state = wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        pubr.engine_state("n1").await.filter(|s| s.head.as_ref().map(|h| h.number) == Some(24))
    })
    .await
    .expect("the engine state shows head 24");
    assert_eq!(state.target_revision, 4);
    let HttpAnswer { body, .. } = http_get(d.bound.admin, "/metrics").await;
    assert!(body.contains("lightcl_engine_driver_alerts_total{kind=\"invalid_head\"} 1"), "{body}");
    assert!(
        body.contains("lightcl_engine_driver_alerts_total{kind=\"target_head_invalid\"} 2"),
        "{body}"
    );
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_of_100_targets_during_a_slow_fcu_applies_only_the_newest() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(130);
    el.set_network_chain(&chain);
    el.seed(&chain, 10, 8, 5);
    el.set_fcu_latency(Duration::from_millis(1_000));
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    pubr.publish(&target(1, &chain, 20, 15, 10)).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.fcu_started_count() >= 1).await);
    for rev in 2..=101u64 {
        let tip = 19 + rev;
        pubr.publish(&target(rev, &chain, tip, tip - 5, tip - 10)).await;
    }
    assert!(
        el.wait_until(Duration::from_secs(15), |e| e.head().number == 120
            && e.safe().number == 115)
            .await,
        "newest applied"
    );
    let fcus = el.fcus();
    assert!(fcus.len() <= 10, "coalesced, not 100 FCUs: {} sent", fcus.len());
    let heads: std::collections::BTreeSet<u64> = fcus
        .iter()
        .map(|f| {
            (0..=130).find(|n| chain.at(*n).hash == f.state.head_block_hash).unwrap_or(u64::MAX)
        })
        .collect();
    assert!(heads.len() <= 3, "only the first and the newest heads (maybe one more): {heads:?}");
    assert!(heads.contains(&120));
    assert_eq!(el.check_invariants(), Ok(()));
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn el_down_for_a_while_driver_survives_and_catches_up() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(60);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.safe().number == 25).await);
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        http_get(d.bound.admin, "/ready").await.status == 200
    })
    .await
    .unwrap();

    el.stop().await;
    pubr.publish(&target(2, &chain, 40, 35, 30)).await;
    wait::until_async(Duration::from_secs(8), wait::POLL, || async {
        http_get(d.bound.admin, "/ready").await.status == 503
    })
    .await
    .expect("not ready while the EL is down");
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        pubr.engine_state("n1").await.is_some_and(|s| {
            s.last_answer == v1::FcuAnswer::Error as i32 && !s.last_error.is_empty()
        })
    })
    .await
    .unwrap();
    pubr.publish(&target(3, &chain, 50, 45, 40)).await;
    assert!(!d.task.is_finished(), "the driver survives");
    el.restart().await.expect("EL back");
    assert!(
        el.wait_until(Duration::from_secs(10), |e| e.head().number == 50
            && e.safe().number == 45
            && e.finalized().number == 40)
            .await,
        "caught up"
    );
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        http_get(d.bound.admin, "/ready").await.status == 200
    })
    .await
    .unwrap();
    assert_eq!(el.check_invariants(), Ok(()));
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_driver_resumes_from_newest_target_and_el_heads() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(60);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d1 = start_driver(&nats.url(), &el, "n1", &[]).await;
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.finalized().number == 20).await);
    d1.stop().await.expect("clean stop");

    // While the driver is down the validator keeps publishing.
    pubr.publish(&target(2, &chain, 40, 35, 30)).await;
    pubr.publish(&target(3, &chain, 45, 40, 35)).await;
    let before = el.fcus().len();
    let d2 = start_driver(&nats.url(), &el, "n1", &[]).await;
    assert!(
        el.wait_until(Duration::from_secs(8), |e| e.head().number == 45
            && e.safe().number == 40
            && e.finalized().number == 35)
            .await
    );
    let second = &el.fcus()[before..];
    assert!(
        second.iter().all(|f| f.state.head_block_hash != chain.at(40).hash),
        "not the stale target"
    );
    assert!(second.iter().all(|f| !zero_labels(f)), "the EL was synced: labels at once");
    assert_eq!(el.check_invariants(), Ok(()), "finalized never moved back across restarts");
    d2.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_status_endpoint_parses_and_matches_the_el() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(40);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &["--rpc.addr", "127.0.0.1:0"]).await;
    let t = target(1, &chain, 36, 30, 24);
    pubr.publish(&t).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.safe().number == 30).await);
    let rpc = d.bound.rpc.expect("rpc enabled");
    let client = lightcl_rpc::Client::new(lightcl_rpc::ClientConfig::new(
        format!("http://{rpc}").parse().expect("url"),
    ))
    .expect("client");
    // Not ready (an error) until the safe head is applied and current_l1 mirrored; never a
    // half-filled status.
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        match client.call("optimism_syncStatus", serde_json::json!([])).await {
            Ok(_) => true,
            Err(e) => {
                assert!(e.to_string().contains("sync status not ready"), "{e}");
                false
            }
        }
    })
    .await
    .expect("served once the target is applied");
    let v = client.call("optimism_syncStatus", serde_json::json!([])).await.expect("syncStatus");
    let s = lightcl_core::SyncStatus::from_value(&v).expect("parses with the core types");
    assert_eq!(lightcl_harness::op_batcher::check(&s, None), Ok(()), "op-batcher acts on it");
    let view = l1_view(&t);
    assert_eq!((s.head_l1, s.safe_l1, s.finalized_l1), (view.head, view.safe, view.finalized));
    assert_eq!(s.current_l1, t.current_l1);
    assert_eq!(s.unsafe_l2, chain.at(36));
    assert_eq!(s.safe_l2, chain.at(30));
    assert_eq!(s.local_safe_l2, Some(chain.at(30)));
    assert_eq!(s.finalized_l2, chain.at(24));
    assert_eq!(s.unsafe_l2.hash, el.head().hash);
    wait::until_async(Duration::from_secs(3), wait::POLL, || async {
        let v =
            client.call("optimism_syncStatus", serde_json::json!([])).await.expect("syncStatus");
        lightcl_core::SyncStatus::from_value(&v).is_ok_and(|s| s.current_l1 == t.current_l1)
    })
    .await
    .expect("current_l1 mirrored once safe reached");
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_follow_unsafe_the_head_is_the_local_safe_head() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(40);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let d = start_driver(&nats.url(), &el, "n1", &["--follow-unsafe", "false"]).await;
    let mut t = target(1, &chain, 38, 30, 24);
    t.local_safe_l2 = chain.at(33);
    pubr.publish(&t).await;
    assert!(
        el.wait_until(Duration::from_secs(5), |e| e.head().number == 33 && e.safe().number == 30)
            .await,
        "head {}",
        el.head().number
    );
    assert!(el.fcus().iter().all(|f| f.state.head_block_hash != chain.at(38).hash));
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_chain_on_the_el_is_refused() {
    let nats = NatsServer::start().await.expect("nats-server");
    let mut cfg = lightcl_harness::mock_el::MockElConfig::new(secret());
    cfg.chain_id = 8453;
    let el = lightcl_harness::mock_el::MockEl::start(cfg).await.expect("mock EL");
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    let res =
        tokio::time::timeout(Duration::from_secs(10), d.task).await.expect("stops").expect("task");
    match res {
        Err(lightcl_engine_driver::RunError::Config(e)) => assert_eq!(e.flag, "--chain-id"),
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(el.fcus().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_down_at_start_and_restarted_the_driver_waits_and_recovers() {
    let mut nats = NatsServer::start().await.expect("nats-server");
    nats.stop();
    let el = mock_el(0).await;
    let chain = L2Chain::new(60);
    el.set_network_chain(&chain);
    let d = start_driver(&nats.url(), &el, "n1", &[]).await;
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        http_get(d.bound.admin, "/ready").await.status == 503
    })
    .await
    .expect("not ready without NATS");
    assert!(!d.task.is_finished());

    nats.restart().await.expect("nats-server restart");
    let pubr = Publisher::connect(&nats.url()).await;
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    assert!(
        el.wait_until(Duration::from_secs(10), |e| e.safe().number == 25).await,
        "follows once NATS is up"
    );
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        http_get(d.bound.admin, "/ready").await.status == 200
    })
    .await
    .unwrap();

    // A NATS restart mid-run: the consumer recovers and the state lands in KV again.
    nats.restart().await.expect("nats-server restart");
    let pubr = Publisher::connect(&nats.url()).await;
    pubr.publish(&target(2, &chain, 40, 35, 30)).await;
    assert!(
        el.wait_until(Duration::from_secs(10), |e| e.safe().number == 35).await,
        "follows after a NATS restart"
    );
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        pubr.engine_state("n1").await.is_some_and(|s| s.safe.is_some_and(|b| b.number == 35))
    })
    .await
    .unwrap();
    d.stop().await.expect("clean stop");
}
