//! Phase-locked polling against a source producing one unsafe head per second (issue 18): the
//! poller locks onto the heads, falls back to the fixed cadence when they stop, and locks again
//! when they resume; with `--poll.phase-lock=false` it stays on the fixed cadence.

mod common;

use std::time::Duration;

use common::*;
use lightcl_core::SyncStatus;
use lightcl_harness::mock_source::{Heads, MockSource, synthetic_status};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const MODE: &str = "lightcl_poller_phase_lock_mode";
const FIXED: f64 = 0.0;
const LOCKED: f64 = 2.0;

/// Unsafe head `n` with timestamp `ts` (s).
fn head(n: u64, ts: u64) -> SyncStatus {
    let mut s =
        synthetic_status(Heads { l1: 200, unsafe_l2: n, safe_l2: n - 10, finalized_l2: n - 20 });
    s.unsafe_l2.timestamp = ts;
    s
}

/// Serves heads `first, first + 1, ...`, one per wall-clock second from the next one on, each
/// timestamped with its second and answerable 100 ms into it (the simulated chain's clock, not a
/// synchronisation), until `stop` fires; returns the next head number.
fn produce(source: MockSource, first: u64, stop: CancellationToken) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let t0 = now_ms() / 1_000 + 1;
        let mut n = first;
        loop {
            let ts = t0 + (n - first);
            let wait = Duration::from_millis((ts * 1_000 + 100).saturating_sub(now_ms()));
            tokio::select! {
                () = stop.cancelled() => return n,
                () = tokio::time::sleep(wait) => source.set_status(head(n, ts)),
            }
            n += 1;
        }
    })
}

async fn wait_mode(p: &Running, mode: f64, what: &str) {
    let reached = wait::until_async(Duration::from_secs(40), wait::POLL, || async {
        p.metric(MODE).await == mode
    })
    .await;
    if let Err(t) = reached {
        panic!("{what}: {MODE} = {} ({t})", p.metric(MODE).await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_onto_the_heads_falls_back_when_they_stop_and_relearns() {
    let env = Env::new().await;
    env.source.set_status(head(1_000, now_ms() / 1_000));
    let stop = CancellationToken::new();
    let producer = produce(env.source.clone(), 1_001, stop.clone());
    let flags = [("--poll-interval", "1s"), ("--heartbeat", "2s"), ("--max-backoff", "1s")];
    let locked = env.start(&flags).await;
    let fixed = env
        .start(&[&flags[..], &[("--source-id", "fixed"), ("--poll.phase-lock", "false")]].concat())
        .await;

    wait_mode(&locked, LOCKED, "locks after a few heads").await;
    assert_eq!(fixed.metric(MODE).await, FIXED, "--poll.phase-lock=false never locks");

    // The source stops producing heads: back to the fixed cadence within about two blocks, and
    // polls go on.
    stop.cancel();
    let next = producer.await.expect("producer");
    wait_mode(&locked, FIXED, "falls back once no head came for two blocks").await;
    let polls = env.source.requests(SYNC);
    assert!(
        env.source.wait_for_requests(SYNC, polls + 4, Duration::from_secs(20)).await,
        "polls go on while the source is stalled"
    );
    assert_eq!(locked.metric(MODE).await, FIXED, "no lock without new heads");

    // Heads again (timestamps from now on: a changed phase): learned and locked again.
    let stop = CancellationToken::new();
    let producer = produce(env.source.clone(), next, stop.clone());
    wait_mode(&locked, LOCKED, "relearns when heads resume").await;
    assert_eq!(fixed.metric(MODE).await, FIXED);
    let m = locked.metrics().await;
    assert_eq!(metric(&m, "lightcl_poller_polls_total{result=\"error\"}"), 0.0, "{m}");

    stop.cancel();
    producer.await.expect("producer");
    locked.stop().await;
    fixed.stop().await;
}
