//! The validator against a real anvil L1 and a real nats-server (issue 4, "Done when").

mod common;

use std::time::Duration;

use common::*;
use lightcl_harness::HttpAnswer;
use lightcl_proto::v1::RejectionReason as R;

#[tokio::test(flavor = "multi_thread")]
async fn consistent_status_becomes_target_with_one_l1_request_per_status() {
    let mut env = Env::new().await;
    // Requests are counted: no L1 watch reads in between.
    let v = env.start(&["--l1.watch-interval=0s"]).await;
    let base = env.proxy.requests();
    let base_calls = env.proxy.calls();

    let s1 = env.status(70, 60, 20, 38);
    env.publish("a", &s1).await;
    let t = env.wait_targets(1).await;
    assert_eq!(env.proxy.requests(), base + 1, "one L1 HTTP request for the status");
    let t1 = &t[0];
    assert_eq!(t1.revision, 1);
    assert_eq!(t1.chain_id, CHAIN);
    let core = t1.to_core().unwrap();
    assert_eq!(core.safe_l2, s1.safe_l2);
    assert_eq!(core.unsafe_l2, s1.unsafe_l2);
    assert_eq!(core.local_safe_l2, s1.safe_l2);
    assert_eq!(core.finalized_l2, s1.finalized_l2);
    assert_eq!(core.current_l1, s1.current_l1);
    assert_eq!(t1.source_ids, vec!["a".to_owned()]);
    let ev = t1.evidence.as_ref().unwrap();
    let checked: Vec<u64> = ev.checked.iter().map(|b| b.number).collect();
    assert_eq!(checked, vec![10, 30, 35, 38], "finalized, safe, unsafe origins and current_l1");
    assert_eq!(ev.l1_head.as_ref().unwrap().number, 40);
    assert_eq!(ev.l1_finalized.as_ref().unwrap().number, 32);
    // The validator's L1 view, full refs from the same batch (for the drivers' syncStatus).
    let view = t1.l1_view().unwrap().expect("head_l1, safe_l1, finalized_l1");
    assert_eq!(
        view.head.id(),
        lightcl_proto::convert::block_id(ev.l1_head.as_ref().unwrap(), "").unwrap()
    );
    assert_eq!(view.finalized.number, 32);
    assert!((32..=40).contains(&view.safe.number), "safe {}", view.safe.number);
    assert!(t1.validated_at_ms > 0);

    // Next status: again exactly one L1 request (block 10 now comes from the finalized cache).
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(2).await;
    assert_eq!(t[1].revision, 2);
    assert_eq!(env.proxy.requests(), base + 2);
    // Batches: latest + finalized + safe + 10, 30, 35, 38; then + 31, 36, 39 (10 came from the
    // cache).
    assert_eq!(env.proxy.calls() - base_calls, 7 + 6);

    let HttpAnswer { status: code, body: metrics, .. } = http_get(v.bound.admin, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("lightcl_validator_statuses_total{verdict=\"target\",reason=\"\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("lightcl_validator_l1_cache_hits_total 1"), "{metrics}");
    assert!(metrics.contains("lightcl_validator_last_target_revision 2"), "{metrics}");
    assert!(metrics.contains("lightcl_validator_last_target_safe 62"), "{metrics}");
    assert!(metrics.contains("lightcl_validator_l1_requests_total{outcome=\"ok\"}"), "{metrics}");
    assert!(metrics.contains("lightcl_validator_l1_batch_size_count"), "{metrics}");
    assert!(metrics.contains("lightcl_validator_l1_request_duration_seconds_count"), "{metrics}");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_canonical_l1_refs_are_rejected_naming_the_ref() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    let bogus = alloy_primitives::B256::repeat_byte(0xbb);

    let mut bad_safe = env.status(70, 60, 20, 38);
    bad_safe.safe_l2.l1origin.hash = bogus;
    let mut bad_fin = env.status(70, 60, 20, 38);
    bad_fin.finalized_l2.l1origin.hash = bogus;
    let mut bad_cur = env.status(70, 60, 20, 38);
    bad_cur.current_l1.hash = bogus;
    for s in [&bad_safe, &bad_fin, &bad_cur] {
        env.publish("a", s).await;
    }
    let r = env.wait_rejections(3).await;
    let got: Vec<_> = r.iter().map(|r| (reason(r), r.ref_name.as_str(), r.number)).collect();
    assert_eq!(
        got,
        vec![
            (R::L1Mismatch, "safe_l2.l1origin", 30),
            (R::L1Mismatch, "finalized_l2.l1origin", 10),
            (R::L1Mismatch, "current_l1", 38),
        ]
    );
    for (rej, n) in r.iter().zip([30usize, 10, 38]) {
        assert_eq!(h(&rej.expected_hash), bogus);
        assert_eq!(h(&rej.actual_hash), env.l1[n].hash, "actual = our L1's hash");
        assert!(rej.status.is_some());
        assert!(rej.message.contains(&rej.ref_name), "{}", rej.message);
    }
    // current_l1 beyond our L1: not found.
    let mut ahead = env.status(70, 60, 20, 38);
    ahead.current_l1.number = 45;
    env.publish("a", &ahead).await;
    let r = env.wait_rejections(4).await;
    assert_eq!((reason(&r[3]), r[3].ref_name.as_str()), (R::L1NotFound, "current_l1"));
    assert!(env.targets().await.is_empty(), "no target from a failing status");

    // A good status still gets revision 1.
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    assert_eq!(env.wait_targets(1).await[0].revision, 1);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_l1_reorg_old_statuses_fail_and_a_lower_safe_head_is_accepted() {
    let mut env = Env::new().await;
    // The status path alone (the L1 watch would retreat first; it has its own test).
    let v = env.start(&["--l1.watch-interval=0s"]).await;
    env.publish("a", &env.status(78, 70, 20, 39)).await;
    env.wait_targets(1).await;

    // Replace blocks 35..=40, all above our L1's finalized block (32).
    let old_l1 = env.l1.clone();
    env.anvil.reorg(6).await.unwrap();
    env.refresh_l1().await;
    assert_ne!(env.l1[35].hash, old_l1[35].hash);
    assert_eq!(env.l1[34].hash, old_l1[34].hash);

    // Built on the old L1: rejected.
    env.publish("a", &status_on(&old_l1, 80, 72, 20, 39)).await;
    let r = env.wait_rejections(1).await;
    assert_eq!((reason(&r[0]), r[0].ref_name.as_str()), (R::L1Mismatch, "safe_l2.l1origin"));

    // Built on the new L1 with a lower safe head: accepted (the previous safe origin, block
    // 35, is no longer canonical).
    let s = env.status(66, 64, 20, 34);
    env.publish("a", &s).await;
    let t = env.wait_targets(2).await;
    let core = t[1].to_core().unwrap();
    assert_eq!((t[1].revision, core.safe_l2.number), (2, 64));
    assert_eq!(core.current_l1, s.current_l1, "the old current_l1 was reorged out");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_l1_watch_retreats_at_once_to_the_newest_canonical_labels() {
    let mut env = Env::new().await;
    let v = env.start(&["--l1.watch-interval=200ms"]).await;
    // Safe heads 60, 66, 70 with L1 origins 30, 33, 35 (L2 block n has origin n / 2).
    for (u, s, cur) in [(70, 60, 38), (74, 66, 38), (78, 70, 39)] {
        env.publish("a", &env.status(u, s, 20, cur)).await;
    }
    env.wait_targets(3).await;
    // A restarted validator reads its retreat candidates back from the stream.
    v.stop().await;

    // Replace blocks 35..=40: the newest safe head's origin is gone, 33 stays.
    let old_l1 = env.l1.clone();
    env.anvil.reorg(6).await.unwrap();
    env.refresh_l1().await;
    assert_ne!(env.l1[35].hash, old_l1[35].hash);
    let v = env.start(&["--l1.watch-interval=200ms"]).await;

    // No status needed: the watch publishes the retreat.
    let t = env.wait_targets(4).await;
    let r = &t[3];
    let core = r.to_core().unwrap();
    assert!(r.l1_retreat && r.source_ids.is_empty(), "{r:?}");
    assert_eq!(r.revision, 4);
    assert_eq!(core.safe_l2.number, 66, "the newest earlier safe head still canonical");
    assert_eq!(core.safe_l2.l1origin, env.l1[33].id());
    assert_eq!(core.local_safe_l2, core.safe_l2);
    assert_eq!(core.unsafe_l2.number, 78, "the head is kept");
    assert_eq!(core.finalized_l2.number, 20, "finalized never moves");
    assert_eq!(core.current_l1, env.l1[33], "current_l1 falls back to the safe origin");
    let checked: Vec<u64> = r.evidence.as_ref().unwrap().checked.iter().map(|b| b.number).collect();
    assert_eq!(checked, vec![10, 33]);
    let metrics = http_get(v.bound.admin, "/metrics").await.body;
    assert!(metrics.contains("lightcl_validator_retreats_total 1"), "{metrics}");

    // The source's stale view is refused; its re-derived view is followed.
    env.publish("a", &status_on(&old_l1, 80, 72, 20, 39)).await;
    let rj = env.wait_rejections(1).await;
    assert_eq!((reason(&rj[0]), rj[0].ref_name.as_str()), (R::L1Mismatch, "safe_l2.l1origin"));
    env.publish("a", &env.status(80, 72, 20, 39)).await;
    let t = env.wait_targets(5).await;
    assert!(!t[4].l1_retreat);
    assert_eq!(t[4].to_core().unwrap().safe_l2.number, 72);
    // The watch stays quiet on canonical labels.
    env.wait_consumed().await;
    assert_eq!(env.targets().await.len(), 5);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replays_regressions_and_a_restarting_source() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    let s1 = env.status(70, 60, 20, 38);
    env.publish("a", &s1).await;
    env.wait_targets(1).await;

    // Replayed older status (lower safe, no L1 reorg).
    env.publish("a", &env.status(60, 50, 20, 30)).await;
    // Finalized going backwards.
    env.publish("a", &env.status(72, 62, 18, 39)).await;
    let r = env.wait_rejections(2).await;
    assert_eq!((reason(&r[0]), r[0].ref_name.as_str()), (R::SafeReplay, "safe_l2"));
    assert_eq!((reason(&r[1]), r[1].ref_name.as_str()), (R::FinalizedRegression, "finalized_l2"));

    // A source re-reading L1 after a restart: only current_l1 stepped back.
    env.publish("a", &env.status(72, 62, 20, 25)).await;
    let t = env.wait_targets(2).await;
    let core = t[1].to_core().unwrap();
    assert_eq!(core.safe_l2.number, 62);
    assert_eq!(core.current_l1, s1.current_l1, "previous current_l1 kept");
    assert_eq!(env.targets().await.len(), 2);

    // The same status again (e.g. a second poller of the same source): no new target.
    env.publish("a", &env.status(72, 62, 20, 25)).await;
    env.wait_consumed().await;
    assert_eq!(env.targets().await.len(), 2);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_validator_continues_the_revisions() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    env.wait_targets(1).await;
    v.stop().await;

    let v = env.start(&[]).await;
    // The regression rules apply as before the restart...
    env.publish("a", &env.status(60, 50, 20, 30)).await;
    assert_eq!(reason(&env.wait_rejections(1).await[0]), R::SafeReplay);
    // ...and the revision sequence continues.
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(2).await;
    assert_eq!(t.iter().map(|t| t.revision).collect::<Vec<_>>(), vec![1, 2]);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_store_one_target_per_status() {
    let mut env = Env::new().await;
    let a = env.start(&[]).await;
    let b = env.start(&[]).await;
    // Published back to back: the replicas race for them.
    let t = race_eight_statuses(&mut env).await;
    // Every status has exactly one outcome: a target or a (replay) rejection.
    assert_eq!(t.len() + env.rejections().await.len(), 8);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn l1_down_means_no_target_until_it_returns() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.proxy.set_down(true);
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let admin = v.bound.admin;
    wait::until_async(Duration::from_secs(10), wait::POLL, || async move {
        http_get(admin, "/ready").await.status == 503
    })
    .await
    .expect("/ready answers 503");
    assert!(env.targets().await.is_empty(), "nothing unchecked is published");
    assert!(env.rejections().await.is_empty(), "still retrying within the budget");

    env.proxy.set_down(false);
    let t = env.wait_targets(1).await;
    assert_eq!(t[0].revision, 1);
    wait::until_async(Duration::from_secs(10), wait::POLL, || async move {
        http_get(admin, "/ready").await.status == 200
    })
    .await
    .expect("/ready answers 200");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn l1_down_past_the_budget_is_rejected_as_unavailable() {
    let mut env = Env::new().await;
    let v = env.start(&["--l1.retry-budget", "500ms"]).await;
    env.proxy.set_down(true);
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let r = env.wait_rejections(1).await;
    assert_eq!(reason(&r[0]), R::L1Unavailable);
    assert!(env.targets().await.is_empty());
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_shows_status_and_pauses() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    let mut c = v.control().await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    env.publish("a", &env.status(60, 50, 20, 30)).await;
    env.wait_rejections(1).await;
    env.wait_consumed().await;
    let s = c.get_status(lightcl_proto::v1::GetStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.chain_id, CHAIN);
    assert!(s.ready && s.nats_connected && s.l1_reachable && !s.paused);
    assert_eq!(s.last_target.as_ref().unwrap().revision, 1);
    assert_eq!((s.accepted, s.rejected), (1, 1));
    assert_eq!(reason(&s.recent_rejections[0]), R::SafeReplay);

    // Pause needs the token.
    let err = c.pause(lightcl_proto::v1::PauseRequest { reason: "x".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut req = tonic::Request::new(lightcl_proto::v1::PauseRequest { reason: "test".into() });
    req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    assert!(c.pause(req).await.unwrap().into_inner().paused);
    let mut watch =
        c.watch_status(lightcl_proto::v1::WatchStatusRequest {}).await.unwrap().into_inner();
    loop {
        let s = watch.message().await.unwrap().unwrap();
        if s.paused {
            break;
        }
    }
    // While paused the status stays in the stream.
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let js = env.bus.jetstream();
    wait::until_async(Duration::from_secs(5), wait::POLL, || {
        let js = js.clone();
        async move {
            let Ok(stream) = js.get_stream(lightcl_bus::subjects::STATUS_STREAM).await else {
                return false;
            };
            let Ok(mut cons) = stream
                .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                    "lightcl-validator-10",
                )
                .await
            else {
                return false;
            };
            cons.info().await.is_ok_and(|i| i.num_pending + i.num_ack_pending as u64 >= 1)
        }
    })
    .await
    .expect("the status stays pending while paused");
    assert_eq!(env.targets().await.len(), 1);

    let mut req = tonic::Request::new(lightcl_proto::v1::ResumeRequest {});
    req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    assert!(!c.resume(req).await.unwrap().into_inner().paused);
    assert_eq!(env.wait_targets(2).await[1].revision, 2);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_a_nats_restart() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    env.wait_targets(1).await;

    env.nats.restart().await.unwrap();
    let admin = v.bound.admin;
    // The client reconnects on its own; the validator's consumer is re-created.
    wait::until_async(Duration::from_secs(15), wait::POLL, || async {
        env.bus.is_connected() && http_get(admin, "/ready").await.status == 200
    })
    .await
    .expect("reconnected and ready");
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    let t = env.wait_targets(2).await;
    assert_eq!(t[1].revision, 2);
    wait::until_async(Duration::from_secs(5), wait::POLL, || async move {
        http_get(admin, "/metrics").await.body.contains("lightcl_validator_nats_reconnects_total 1")
    })
    .await
    .expect("one NATS reconnect counted");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quorum_waits_for_k_sources_with_the_same_labels() {
    let mut env = Env::new().await;
    let v = env.start(&["--quorum", "2"]).await;
    let s = env.status(70, 60, 20, 38);
    env.publish("a", &s).await;
    let r = env.wait_rejections(1).await;
    // One source: not even the tip has two reporters.
    assert_eq!((reason(&r[0]), r[0].ref_name.as_str()), (R::NoQuorum, "unsafe_l2"));
    // A second source with the same tip but another safe head does not help: the safe labels
    // (local safe falls back to safe) have one reporter each.
    let mut other = s.clone();
    other.safe_l2.hash = alloy_primitives::B256::repeat_byte(7);
    env.publish("b", &other).await;
    let r = env.wait_rejections(2).await;
    assert_eq!((reason(&r[1]), r[1].ref_name.as_str()), (R::NoQuorum, "local_safe_l2"));
    // It agrees: quorum reached.
    env.publish("b", &s).await;
    let t = env.wait_targets(1).await;
    assert_eq!(t[0].source_ids, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(t[0].safe_l2.as_ref().unwrap().number, 60);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_target_race_reloads_and_decides_again() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    let base = env.proxy.requests();
    // Hold the validator inside its L1 read...
    env.proxy.set_delay(Duration::from_millis(700));
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        env.proxy.requests() > base
    })
    .await
    .expect("an L1 request");
    // ...while "another replica" stores revision 1.
    let other = env.status(60, 50, 20, 30);
    let foreign = lightcl_core::Target {
        chain_id: CHAIN,
        epoch: 0,
        revision: 1,
        unsafe_l2: other.unsafe_l2,
        safe_l2: other.safe_l2,
        local_safe_l2: other.safe_l2,
        finalized_l2: other.finalized_l2,
        current_l1: other.current_l1,
    };
    env.publisher
        .publish(
            &lightcl_bus::subjects::target(CHAIN),
            lightcl_proto::names::TARGET,
            &lightcl_proto::v1::Target::from_core(&foreign),
            Some("foreign-1"),
        )
        .await
        .unwrap();
    env.proxy.set_delay(Duration::ZERO);
    // The CAS publish fails, the validator reloads revision 1 and stores revision 2.
    let t = env.wait_targets(2).await;
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].revision, t[0].safe_l2.as_ref().unwrap().number), (1, 50));
    assert_eq!((t[1].revision, t[1].safe_l2.as_ref().unwrap().number), (2, 60));
    let HttpAnswer { body: metrics, .. } = http_get(v.bound.admin, "/metrics").await;
    assert!(metrics.contains("lightcl_validator_cas_conflicts_total 1"), "{metrics}");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_verdict_other_than_a_target_is_taken_on_the_newest_stored_target() {
    let mut env = Env::new().await;
    let v = env.start(&["--l1.watch-interval=0s"]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let mine = env.wait_targets(1).await[0].to_core().unwrap();
    // "Another replica" stores the next target, with a lower safe head (as a retreat does).
    let lower = env.status(70, 56, 20, 38).safe_l2;
    let foreign = lightcl_core::Target {
        revision: mine.revision + 1,
        safe_l2: lower,
        local_safe_l2: lower,
        ..mine
    };
    env.publisher
        .publish(
            &lightcl_bus::subjects::target(CHAIN),
            lightcl_proto::names::TARGET,
            &lightcl_proto::v1::Target::from_core(&foreign),
            Some("foreign-2"),
        )
        .await
        .unwrap();
    // Against the target this replica stored (safe 60, its origin canonical) safe 58 would be a
    // replay; the validator re-reads before rejecting and judges it against the newest: forward.
    env.publish("a", &env.status(72, 58, 20, 38)).await;
    let t = env.wait_targets(3).await;
    let core = t[2].to_core().unwrap();
    assert_eq!((t[2].revision, core.safe_l2.number), (3, 58));
    env.wait_consumed().await;
    assert!(env.rejections().await.is_empty());
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_statuses_are_acked_counted_and_skipped() {
    let mut env = Env::new().await;
    let v = env.start(&[]).await;
    let js = env.bus.jetstream();
    let subject = lightcl_bus::subjects::status(CHAIN, "a");
    // Not protobuf at all.
    js.publish(subject.clone(), bytes::Bytes::from_static(b"\xff\xff\xff"))
        .await
        .unwrap()
        .await
        .unwrap();
    // Protobuf, but without a status.
    let empty = lightcl_proto::v1::RawStatus { chain_id: CHAIN, ..Default::default() };
    js.publish(subject, prost::Message::encode_to_vec(&empty).into()).await.unwrap().await.unwrap();
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    assert_eq!(env.wait_targets(1).await[0].revision, 1);
    env.wait_consumed().await;
    let admin = v.bound.admin;
    wait::until_async(Duration::from_secs(5), wait::POLL, || async move {
        http_get(admin, "/metrics").await.body.contains("lightcl_validator_bad_messages_total 2")
    })
    .await
    .expect("two bad messages counted");
    assert!(env.rejections().await.is_empty());
    assert_eq!(http_get(admin, "/live").await.status, 200);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn early_copies_store_targets_once_and_leave_failures_to_the_stream() {
    let mut env = Env::new().await;
    // Requests are counted: no L1 watch reads in between.
    let v = env.start(&["--l1.watch-interval=0s", "--status.early-copies"]).await;
    let base = env.proxy.requests();
    // The first status is judged from the stream: until a delivery shows the consumer caught
    // up, a copy may be behind a backlog.
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    env.wait_targets(1).await;
    env.wait_consumed().await;
    // The next ones from their early copies; their stream deliveries are only acked.
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    env.wait_targets(2).await;
    env.publish("a", &env.status(74, 62, 20, 39)).await;
    env.wait_targets(3).await;
    env.wait_consumed().await;
    assert_eq!(env.proxy.requests(), base + 3, "one L1 request per status, whichever copy");
    let metrics = http_get(v.bound.admin, "/metrics").await.body;
    assert!(metrics.contains("lightcl_validator_early_targets_total 2"), "{metrics}");
    assert!(
        metrics.contains("lightcl_validator_statuses_total{verdict=\"target\",reason=\"\"} 3"),
        "{metrics}"
    );

    // A failing status stores nothing from its copy: the stream's delivery rejects it, once,
    // naming the ref; the good status after it is judged from the stream too (in order).
    let mut bad = env.status(76, 62, 20, 39);
    bad.current_l1.hash = alloy_primitives::B256::repeat_byte(0xbb);
    env.publish("a", &bad).await;
    env.publish("a", &env.status(78, 64, 20, 39)).await;
    let t = env.wait_targets(4).await;
    assert_eq!(t[3].to_core().unwrap().unsafe_l2.number, 78);
    env.wait_consumed().await;
    let r = env.rejections().await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((reason(&r[0]), r[0].ref_name.as_str()), (R::L1Mismatch, "current_l1"));
    assert_eq!(
        env.proxy.requests(),
        base + 6,
        "the failing status read twice (copy, stream), the next once"
    );
    let t = env.targets().await;
    let revisions: Vec<u64> = t.iter().map(|t| t.revision).collect();
    assert_eq!(revisions, vec![1, 2, 3, 4]);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_early_copies_every_status_is_judged_from_the_stream() {
    let mut env = Env::new().await;
    // The default.
    let v = env.start(&["--l1.watch-interval=0s"]).await;
    for (i, n) in [(1, 70), (2, 72), (3, 74)] {
        env.publish("a", &env.status(n, 60, 20, 38)).await;
        env.wait_targets(i).await;
    }
    env.wait_consumed().await;
    let metrics = http_get(v.bound.admin, "/metrics").await.body;
    assert!(metrics.contains("lightcl_validator_early_targets_total 0"), "{metrics}");
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_with_early_copies_keep_targets_fenced_and_the_newest_status_wins() {
    let mut env = Env::new().await;
    let a = env.start(&["--status.early-copies"]).await;
    let b = env.start(&["--status.early-copies"]).await;
    // A settled first status puts both replicas' consumers in step.
    env.publish("a", &env.status(60, 59, 20, 29)).await;
    env.wait_targets(1).await;
    env.wait_consumed().await;
    // Published back to back: copies and stream deliveries go to either replica.
    let t = race_eight_statuses(&mut env).await;
    // A status judged twice (its copy at one replica, its delivery at the other) may add a
    // rejection, only ever one that says it is behind (not the source's fault).
    let r = env.rejections().await;
    assert!(t.len() - 1 + r.len() >= 8, "every status has an outcome: {t:?} {r:?}");
    for rej in &r {
        assert!(
            matches!(reason(rej), R::SafeReplay | R::StatusReplay | R::FinalizedRegression),
            "only behind-the-target rejections: {rej:?}"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// Publishes eight statuses back to back (safe heads 60..=67), waits until they are consumed,
/// and checks the stored targets: contiguous revisions, at most one target per status, the
/// newest status last. Returns the targets.
async fn race_eight_statuses(env: &mut Env) -> Vec<lightcl_proto::v1::Target> {
    for i in 0..8u64 {
        env.publish("a", &env.status(62 + 2 * i, 60 + i, 20, 30 + i)).await;
    }
    env.wait_consumed().await;
    let t = env.targets().await;
    let revisions: Vec<u64> = t.iter().map(|t| t.revision).collect();
    assert_eq!(revisions, (1..=t.len() as u64).collect::<Vec<_>>(), "contiguous, no duplicates");
    let safes: Vec<u64> = t.iter().map(|t| t.safe_l2.as_ref().unwrap().number).collect();
    assert!(safes.windows(2).all(|w| w[0] < w[1]), "each status at most one target: {safes:?}");
    assert_eq!(*safes.last().unwrap(), 67, "the newest status always wins");
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn early_copies_that_fail_to_read_l1_or_to_decode_are_left_to_the_stream() {
    let mut env = Env::new().await;
    let v = env.start(&["--l1.watch-interval=0s", "--status.early-copies"]).await;
    let admin = v.bound.admin;
    let metric = |name: &'static str, want: u64| async move {
        let line = format!("{name} {want}");
        wait::until_async(Duration::from_secs(10), wait::POLL, || {
            let line = line.clone();
            async move { http_get(admin, "/metrics").await.body.lines().any(|l| l == line) }
        })
        .await
        .unwrap_or_else(|_| {
            let page = futures::executor::block_on(http_get(admin, "/metrics")).body;
            panic!("no line {line:?} in /metrics:\n{page}")
        });
    };
    // Caught up: the next copies are eligible.
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    env.wait_targets(1).await;
    env.wait_consumed().await;

    // L1 down while a copy is judged: nothing is stored from it, the stream's delivery retries
    // (not ready meanwhile) and stores the target once L1 is back.
    env.proxy.set_down(true);
    env.publish("a", &env.status(72, 62, 20, 39)).await;
    wait::until_async(Duration::from_secs(10), wait::POLL, || async move {
        http_get(admin, "/ready").await.status == 503
    })
    .await
    .expect("/ready answers 503 while L1 is down");
    assert_eq!(env.targets().await.len(), 1, "nothing unchecked is published");
    env.proxy.set_down(false);
    let t = env.wait_targets(2).await;
    assert_eq!((t[1].revision, t[1].to_core().unwrap().unsafe_l2.number), (2, 72));
    env.wait_consumed().await;
    metric("lightcl_validator_early_targets_total", 0).await;

    // A message that is no status: its copy is skipped, its stream delivery counted once.
    let js = env.bus.jetstream();
    let subject = lightcl_bus::subjects::status(CHAIN, "a");
    js.publish(subject, bytes::Bytes::from_static(b"\xff\xff\xff")).await.unwrap().await.unwrap();
    env.wait_consumed().await;
    metric("lightcl_validator_bad_messages_total", 1).await;
    // Copies work on after both: the next status is stored from its copy.
    env.publish("a", &env.status(74, 62, 20, 39)).await;
    let t = env.wait_targets(3).await;
    assert_eq!(t[2].to_core().unwrap().unsafe_l2.number, 74);
    metric("lightcl_validator_early_targets_total", 1).await;
    assert!(env.rejections().await.is_empty());
    assert_eq!(http_get(admin, "/live").await.status, 200);
    v.stop().await;
}
