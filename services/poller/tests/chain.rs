//! The source's chain identity while running: a source that starts serving another chain (a
//! DNS or load-balancer change), periodically or across an outage, is refused — nothing of it
//! is published, the poller is not ready and counts it — and followed again once it serves
//! `--chain-id` again.

mod common;

use std::time::Duration;

use common::*;
use lightcl_core::SyncStatus;
use lightcl_proto::v1;

const CFG: &str = "optimism_rollupConfig";
const OTHER: u64 = 11;
const ERR: &str = "lightcl_poller_polls_total{result=\"error\"}";
const MISMATCHES: &str = "lightcl_poller_chain_mismatches_total";
const WRONG: &str = "lightcl_poller_wrong_chain";
const WRONG_KIND: &str = "lightcl_poller_poll_errors_total{kind=\"wrong_chain\"}";
const CHECKS_OK: &str = "lightcl_poller_chain_checks_total{result=\"ok\"}";
const CHECKS_WRONG: &str = "lightcl_poller_chain_checks_total{result=\"wrong_chain\"}";

/// A status of the other chain's node (heads far from any `status(n)` of these tests).
fn foreign(n: u64) -> SyncStatus {
    status(10_000 + n)
}

fn has(stored: &[Stored], s: &SyncStatus) -> bool {
    stored.iter().any(|m| &m.status == s)
}

/// Waits (bounded) until the source received `n` more chain checks than `from`.
async fn more_checks(env: &Env, from: u64, n: u64) {
    assert!(
        env.source.wait_for_requests(CFG, from + n, Duration::from_secs(10)).await,
        "the poller stopped re-checking the chain ({} checks, expected {})",
        env.source.requests(CFG),
        from + n
    );
}

/// The refused state: not ready naming `chain`, alive, the incident counted once, the error
/// shown by the control API with both chain ids.
async fn assert_refused(p: &Running) {
    p.wait_ready(503).await;
    let (_, body) = p.ready().await;
    assert!(body.lines().any(|l| l.trim() == "chain"), "/ready names chain: {body}");
    assert_eq!(p.live().await, 200);
    assert!(!p.handle.is_finished(), "a chain change at run time is no exit");
    let m = p.metrics().await;
    assert_eq!(metric(&m, MISMATCHES), 1.0, "one incident, however many re-checks: {m}");
    assert_eq!(metric(&m, WRONG), 1.0, "{m}");
    assert!(metric(&m, WRONG_KIND) >= 1.0, "{m}");
    assert!(metric(&m, CHECKS_WRONG) >= 1.0, "{m}");
    let mut c = p.control().await;
    let s = c.get_status(v1::GetStatusRequest {}).await.unwrap().into_inner();
    assert!(!s.ready, "{s:?}");
    assert!(
        s.last_error.contains(&OTHER.to_string()) && s.last_error.contains(&CHAIN.to_string()),
        "last_error names both chains: {:?}",
        s.last_error
    );
}

/// The source serves `--chain-id` again with `back`: published, ready, the gauge cleared.
async fn assert_resumes(env: &Env, p: &Running, back: &SyncStatus) {
    env.source.set_chain(CHAIN, back.clone());
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        has(&env.stored(SRC).await, back)
    })
    .await
    .expect("the status is published again once the source serves --chain-id");
    p.wait_ready(200).await;
    let m = p.metrics().await;
    assert_eq!(metric(&m, WRONG), 0.0, "{m}");
    assert_eq!(metric(&m, MISMATCHES), 1.0, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_switching_chain_is_refused_from_the_first_poll_until_it_switches_back() {
    let env = Env::new().await;
    // Interval = poll interval: every poll is checked before its status is published.
    let p = env.start(&[("--source.chain-check-interval", "50ms")]).await;
    env.wait_stored(SRC, 1).await[0].check(SRC, &status(0));
    let (s0, c0) = (env.source.requests(SYNC), env.source.requests(CFG));
    assert!(env.source.wait_for_requests(SYNC, s0 + 5, Duration::from_secs(10)).await);
    let (s1, c1) = (env.source.requests(SYNC), env.source.requests(CFG));
    assert!((s1 - s0).abs_diff(c1 - c0) <= 2, "{} polls, {} checks", s1 - s0, c1 - c0);

    // The node behind the URL now serves another chain.
    let before = env.stored(SRC).await.len();
    env.source.set_chain(OTHER, foreign(1));
    p.wait_metric(MISMATCHES, 1.0).await;
    assert_refused(&p).await;
    // Keeps re-checking (with backoff); each refused check is a failed poll.
    let c = env.source.requests(CFG);
    let wrong = p.metric(WRONG_KIND).await;
    more_checks(&env, c, 3).await;
    p.wait_metric(WRONG_KIND, wrong + 2.0).await;
    assert_eq!(p.metric(MISMATCHES).await, 1.0);
    // At most the one poll in flight at the switch was stored after it, and it carried the
    // old chain's status: not one status of the other chain.
    let stored = env.stored(SRC).await;
    assert!(stored.len() <= before + 1, "published while refused: {}", stored.len() - before);
    assert!(stored.iter().all(|m| m.status == status(0)), "only the old chain's status");

    assert_resumes(&env, &p, &status(2)).await;
    assert!(!has(&env.stored(SRC).await, &foreign(1)), "the other chain's status never stored");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chain_is_rechecked_periodically_and_a_change_stops_publishing() {
    let env = Env::new().await;
    let p = env.start(&[("--source.chain-check-interval", "500ms")]).await;
    env.wait_stored(SRC, 1).await;

    // While polls succeed, a check per interval, not per poll.
    let (s0, c0) = (env.source.requests(SYNC), env.source.requests(CFG));
    more_checks(&env, c0, 2).await;
    let (s1, c1) = (env.source.requests(SYNC), env.source.requests(CFG));
    assert!(s1 - s0 >= 2 * (c1 - c0), "{} polls, {} checks", s1 - s0, c1 - c0);
    assert!(p.metric(CHECKS_OK).await >= (c1 - 1) as f64, "every check counted");

    // Another chain: found by the next periodic check (statuses read before it may have been
    // published: the interval bounds that window); from then on nothing is published.
    env.source.set_chain(OTHER, foreign(1));
    p.wait_metric(MISMATCHES, 1.0).await;
    assert_refused(&p).await;
    let n = env.stored(SRC).await.len();
    let c = env.source.requests(CFG);
    env.source.set_status(foreign(2));
    more_checks(&env, c, 3).await;
    let stored = env.stored(SRC).await;
    assert_eq!(stored.len(), n, "published after the change was detected");
    assert!(!has(&stored, &foreign(2)));

    assert_resumes(&env, &p, &status(3)).await;
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_outage_the_chain_is_checked_before_the_first_publish() {
    let env = Env::new().await;
    // The default interval (60 s): within this test only a reconnect triggers a check.
    let p = env.start(&[]).await;
    env.wait_stored(SRC, 1).await;
    let c0 = env.source.requests(CFG);
    let s0 = env.source.requests(SYNC);
    assert!(env.source.wait_for_requests(SYNC, s0 + 5, Duration::from_secs(10)).await);
    assert_eq!(env.source.requests(CFG), c0, "no check within the interval while polls succeed");

    // An outage, back with the same chain: checked once, then published.
    env.source.stop().await;
    let e = p.metric(ERR).await;
    p.wait_metric(ERR, e + 1.0).await;
    env.source.set_status(status(1));
    env.source.restart().await.unwrap();
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        has(&env.stored(SRC).await, &status(1))
    })
    .await
    .expect("published after the outage");
    assert_eq!(env.source.requests(CFG), c0 + 1, "checked once, after the reconnect");
    p.wait_ready(200).await;

    // An outage, back as a node of another chain: not one status published.
    env.source.stop().await;
    let e = p.metric(ERR).await;
    p.wait_metric(ERR, e + 1.0).await;
    p.wait_ready(503).await;
    let n = env.stored(SRC).await.len();
    env.source.set_chain(OTHER, foreign(1));
    env.source.restart().await.unwrap();
    p.wait_metric(MISMATCHES, 1.0).await;
    assert_refused(&p).await;
    let c = env.source.requests(CFG);
    more_checks(&env, c, 3).await;
    let stored = env.stored(SRC).await;
    assert_eq!(stored.len(), n, "published from the other chain's node");
    assert!(!has(&stored, &foreign(1)));

    // Down again while refused and back still wrong: still refused, the same incident.
    env.source.stop().await;
    let e = p.metric(ERR).await;
    p.wait_metric(ERR, e + 1.0).await;
    env.source.restart().await.unwrap();
    let c = env.source.requests(CFG);
    more_checks(&env, c, 2).await;
    assert_refused(&p).await;
    assert_eq!(env.stored(SRC).await.len(), n);

    assert_resumes(&env, &p, &status(2)).await;
    p.stop().await;
}
