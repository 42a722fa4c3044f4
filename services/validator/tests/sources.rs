//! Several sources against a real nats-server and a real anvil L1 (in-process validator): a
//! liar never chooses a label under a quorum, and failover with `--quorum 1` leaves a stalled
//! or repeatedly rejected source for another one.

mod common;

use std::time::Duration;

use alloy_primitives::B256;
use common::*;
use lightcl_core::SyncStatus;
use lightcl_proto::v1;

fn hash_of(b: &Option<v1::L2BlockRef>) -> B256 {
    b.as_ref().map(|b| B256::from_slice(&b.hash)).unwrap_or_default()
}

/// The status with one label replaced by a block that is not the chain's (same number and L1
/// origin, so every L1 check passes).
fn forge(mut s: SyncStatus, label: &str) -> SyncStatus {
    let fake = B256::repeat_byte(0xfa);
    match label {
        "finalized" => s.finalized_l2.hash = fake,
        "unsafe" => s.unsafe_l2.hash = fake,
        "safe" => s.safe_l2.hash = fake,
        _ => unreachable!("{label}"),
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn under_a_quorum_a_liar_never_chooses_a_label() {
    let mut env = Env::new().await;
    let v = env.start(&["--quorum", "2"]).await;
    let honest = env.status(70, 60, 20, 38);
    // The liar copies the honest status but reports a made-up finalized.
    env.publish("liar", &forge(honest.clone(), "finalized")).await;
    env.publish("a", &honest).await;
    // Two reporters, but not of the same finalized: no target yet.
    let r = env.wait_rejections(2).await;
    assert_eq!(r[1].ref_name, "finalized_l2", "{r:?}");
    assert!(env.targets().await.is_empty());
    env.publish("b", &honest).await;
    let t = env.wait_targets(1).await;
    assert_eq!(hash_of(&t[0].finalized_l2), honest.finalized_l2.hash, "liar chose finalized");
    assert_eq!(t[0].source_ids, vec!["a".to_owned(), "b".to_owned(), "liar".to_owned()]);

    // The sources move on; the liar's tip is made up now, its finalized still.
    let next = env.status(74, 62, 24, 38);
    env.publish("liar", &forge(forge(next.clone(), "unsafe"), "finalized")).await;
    env.publish("a", &next).await;
    let t = env.wait_targets(2).await;
    // The safe head has two reporters (a and the liar's honest copy); the tip and finalized
    // only one each: they stay at the newest ones two sources agree on.
    assert_eq!(t[1].safe_l2.as_ref().map(|b| b.number), Some(62));
    assert_eq!(hash_of(&t[1].unsafe_l2), honest.unsafe_l2.hash);
    assert_eq!(hash_of(&t[1].finalized_l2), honest.finalized_l2.hash);
    env.publish("b", &next).await;
    let t = env.wait_targets(3).await;
    assert_eq!(hash_of(&t[2].unsafe_l2), next.unsafe_l2.hash);
    assert_eq!(hash_of(&t[2].finalized_l2), next.finalized_l2.hash);
    env.wait_consumed().await;
    let fake = B256::repeat_byte(0xfa);
    for t in env.targets().await {
        for b in [&t.unsafe_l2, &t.safe_l2, &t.local_safe_l2, &t.finalized_l2] {
            assert_ne!(hash_of(b), fake, "a fabricated block reached revision {}", t.revision);
        }
    }
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_leaves_a_stalled_source() {
    let mut env = Env::new().await;
    // One block time of stall (2 s in these statuses' timestamps) with the 1 s floor.
    let v = env.start(&["--failover.stall-blocks", "1", "--failover.hold", "1m"]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    env.publish("b", &env.status(69, 59, 20, 38)).await;
    let t = env.wait_targets(1).await;
    assert_eq!(t[0].source_ids, vec!["a".to_owned()], "the first choice is the highest head");
    // b's statuses are recorded but not followed while a is healthy.
    env.publish("b", &env.status(71, 61, 20, 38)).await;
    env.wait_consumed().await;
    assert_eq!(env.targets().await.len(), 1, "followed b while a was healthy");
    // a stalls (sends nothing); b keeps moving: b is followed once a's stall bound passed.
    let mut head = 72;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let switched = loop {
        head += 1;
        env.publish("b", &env.status(head, head - 10, 20, 38)).await;
        if let Some(t) = env.targets().await.into_iter().find(|t| t.source_ids == ["b"]) {
            break t;
        }
        assert!(tokio::time::Instant::now() < deadline, "never followed b after a stalled");
        // b's block cadence (the simulated source producing heads), not a synchronisation.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(switched.unsafe_l2.unwrap().number > 71);
    v.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failover_leaves_a_source_rejected_three_times_in_a_row() {
    let mut env = Env::new().await;
    let v = env.start(&["--failover.hold", "1m"]).await;
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    env.wait_targets(1).await;
    env.publish("b", &env.status(70, 60, 20, 38)).await;
    // a lies about its safe head's L1 origin: rejected by the L1 check, three times.
    for n in 0..3 {
        let mut s = env.status(72 + n, 62, 20, 38);
        s.safe_l2.l1origin.hash = B256::repeat_byte(0xee);
        env.publish("a", &s).await;
    }
    let r = env.wait_rejections(3).await;
    assert!(r.iter().all(|r| r.source_id == "a"), "{r:?}");
    // b is followed from now on.
    env.publish("b", &env.status(75, 64, 22, 38)).await;
    let t = env.wait_targets(2).await;
    assert_eq!(t[1].source_ids, vec!["b".to_owned()]);
    assert_eq!(t[1].unsafe_l2.as_ref().map(|b| b.number), Some(75));
    v.stop().await;
}
