//! The poller against a real HTTP JSON-RPC source and a real nats-server (issue 3, "Done when"):
//! what is stored in `LIGHTCL_STATUS`, how errors are counted, restarts of either side, control.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use lightcl_core::SyncStatus;
use lightcl_harness::HttpAnswer;
use lightcl_harness::mock_source::Failure;
use lightcl_poller::RunError;
use lightcl_proto::v1;

const OK: &str = "lightcl_poller_polls_total{result=\"ok\"}";
const ERR: &str = "lightcl_poller_polls_total{result=\"error\"}";
const PUB_OK: &str = "lightcl_poller_publishes_total{result=\"ok\"}";
const PUB_DUP: &str = "lightcl_poller_publishes_total{result=\"duplicate\"}";
const KINDS: [&str; 6] = ["timeout", "http", "rpc", "decode", "too_large", "wrong_chain"];

fn kind(k: &str) -> String {
    format!("lightcl_poller_poll_errors_total{{kind=\"{k}\"}}")
}

async fn kinds(p: &Running) -> BTreeMap<&'static str, f64> {
    let m = p.metrics().await;
    KINDS.iter().map(|k| (*k, metric(&m, &kind(k)))).collect()
}

fn has(stored: &[Stored], s: &SyncStatus) -> bool {
    stored.iter().any(|m| &m.status == s)
}

#[tokio::test(flavor = "multi_thread")]
async fn statuses_are_published_on_change_and_at_the_heartbeat_only() {
    let env = Env::new().await;
    let p = env.start(&[]).await;

    // Unchanged over many polls: one message per heartbeat slot, in consecutive slots.
    let first = env.wait_stored(SRC, 1).await;
    first[0].check(SRC, &status(0));
    let polls_at_first = env.source.requests(SYNC);
    let got = env.wait_stored(SRC, 3).await;
    let polls = env.source.requests(SYNC) - polls_at_first;
    assert!(polls >= 10, "only {polls} polls between the first and the third message");
    assert_eq!(got.len(), 3);
    let slots: Vec<u64> = got.iter().map(|s| s.slot(HEARTBEAT_MS)).collect();
    assert!(slots.windows(2).all(|w| w[1] == w[0] + 1), "one message per slot: {slots:?}");
    for s in &got {
        s.check(SRC, &status(0));
    }

    // Just after a heartbeat opened its slot (a slow observer waits for the next one), changes
    // are stored at once, within that slot.
    let mut n = got.len();
    let slot = loop {
        let s = env.wait_stored(SRC, n).await;
        let last = &s[n - 1];
        last.check(SRC, &status(0));
        let now = now_ms();
        if last.slot(HEARTBEAT_MS) == now / HEARTBEAT_MS && now % HEARTBEAT_MS < 300 {
            break last.slot(HEARTBEAT_MS);
        }
        n += 1;
        assert!(n < got.len() + 5, "never observed a heartbeat early in its slot");
    };
    env.source.set_status(status(1));
    let b = env.wait_stored(SRC, n + 1).await;
    env.source.set_status(status(2));
    let c = env.wait_stored(SRC, n + 2).await;
    b[n].check(SRC, &status(1));
    c[n + 1].check(SRC, &status(2));
    assert_eq!((b[n].slot(HEARTBEAT_MS), c[n + 1].slot(HEARTBEAT_MS)), (slot, slot), "delayed");

    // Unchanged again: the next message is the heartbeat of the next slot.
    let d = env.wait_stored(SRC, n + 3).await;
    assert_eq!(d.len(), n + 3);
    d[n + 2].check(SRC, &status(2));
    assert_eq!(d[n + 2].slot(HEARTBEAT_MS), slot + 1);
    let seqs: Vec<u64> = d.iter().map(|s| s.raw.poll_seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "poll_seq increases: {seqs:?}");

    // The poller itself publishes only these (JetStream did not have to drop any).
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        p.metric(PUB_OK).await as usize == env.stored(SRC).await.len()
    })
    .await
    .expect("every publish is stored once");
    let m = p.metrics().await;
    assert_eq!(metric(&m, PUB_DUP), 0.0, "{m}");
    assert_eq!(metric(&m, "lightcl_poller_publishes_total{result=\"error\"}"), 0.0, "{m}");
    assert!(metric(&m, OK) >= (polls + 5) as f64, "{m}");
    assert_eq!(metric(&m, ERR), 0.0, "{m}");
    assert_eq!(metric(&m, "lightcl_poller_observed_unsafe"), status(2).unsafe_l2.number as f64);
    assert_eq!(metric(&m, "lightcl_poller_observed_safe"), status(2).safe_l2.number as f64);
    assert_eq!(
        metric(&m, "lightcl_poller_observed_finalized"),
        status(2).finalized_l2.number as f64
    );
    assert!(metric(&m, "lightcl_poller_poll_duration_seconds_count") >= metric(&m, OK));
    assert_eq!(metric(&m, "lightcl_poller_paused"), 0.0, "{m}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pollers_of_one_source_store_each_status_once() {
    let env = Env::new().await;
    let a = env.start(&[]).await;
    let b = env.start(&[]).await;
    for n in 1..=4 {
        env.source.set_status(status(n));
        wait::until_async(Duration::from_secs(10), wait::POLL, || async {
            has(&env.stored(SRC).await, &status(n))
        })
        .await
        .expect("the status is stored");
    }
    // Both poll and publish; every publish is either the one stored copy or a duplicate.
    let sum = |series: &'static str| {
        let (a, b) = (&a, &b);
        async move { a.metric(series).await + b.metric(series).await }
    };
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        sum(PUB_OK).await as usize == env.stored(SRC).await.len()
    })
    .await
    .expect("every publish is stored once");
    assert!(sum(PUB_DUP).await >= 1.0, "the second poller's copies were duplicates");
    assert!(a.metric(OK).await >= 1.0 && b.metric(OK).await >= 1.0, "both poll");

    let stored = env.stored(SRC).await;
    let mut seen = std::collections::HashSet::new();
    for s in &stored {
        assert!(seen.insert((s.status.clone(), s.slot(HEARTBEAT_MS))), "stored twice: {s:?}");
    }
    for n in 0..=4 {
        assert!(has(&stored, &status(n)), "status {n} stored");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_of_another_chain_is_refused_naming_chain_id() {
    let env = Env::new().await;
    env.source.set_chain_id(11);
    match env.run_to_end(&[]).await {
        Err(RunError::Config(e)) => {
            assert_eq!(e.flag, "--chain-id", "{e}");
            assert!(e.reason.contains("11"), "names the source's chain: {e}");
        }
        other => panic!("expected a --chain-id config error, got {other:?}"),
    }
    assert!(env.source.requests("optimism_rollupConfig") >= 1);
    assert!(env.stored(SRC).await.is_empty(), "nothing published");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_down_at_start_and_later_is_retried_until_it_returns() {
    let env = Env::new().await;
    env.source.stop().await;
    let p = env.spawn(&[]).await;

    // Down at start: the chain check is retried (a refused connection counts as kind http),
    // not ready, alive, nothing published.
    p.wait_metric(&kind("http"), 3.0).await;
    let (code, body) = p.ready().await;
    assert_eq!(code, 503);
    assert!(body.contains("source"), "{body}");
    assert_eq!(p.live().await, 200);
    assert!(env.stored(SRC).await.is_empty());
    assert!(!p.handle.is_finished());

    // Recovers by itself.
    env.source.restart().await.unwrap();
    p.wait_ready(200).await;
    env.wait_stored(SRC, 1).await[0].check(SRC, &status(0));

    // Down again while running: failed polls.
    env.source.stop().await;
    let (e, h) = (p.metric(ERR).await, p.metric(&kind("http")).await);
    p.wait_metric(ERR, e + 1.0).await;
    p.wait_metric(&kind("http"), h + 1.0).await;
    p.wait_ready(503).await;
    let before = env.stored(SRC).await.len();
    env.source.set_status(status(1));
    let e = p.metric(ERR).await;
    p.wait_metric(ERR, e + 2.0).await;
    assert_eq!(env.stored(SRC).await.len(), before, "nothing published while it is down");
    assert_eq!(p.live().await, 200);

    env.source.restart().await.unwrap();
    p.wait_ready(200).await;
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        has(&env.stored(SRC).await, &status(1))
    })
    .await
    .expect("the status is stored");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_answers_are_counted_by_kind_never_published_and_survived() {
    let env = Env::new().await;
    let p = env.start(&[("--rpc-timeout", "300ms")]).await;
    env.wait_stored(SRC, 1).await;
    let mut c = p.control().await;
    // `None`: a status without safe_l2 (it fails to parse).
    let cases = [
        (Some(Failure::MalformedJson), "decode"),
        (Some(Failure::Oversized(5 << 20)), "too_large"),
        (Some(Failure::RpcError { code: -32000, message: "boom".into() }), "rpc"),
        (Some(Failure::Http500), "http"),
        (None, "decode"),
        (Some(Failure::Delay(Duration::from_millis(1_500))), "timeout"),
    ];
    for (n, (failure, k)) in cases.into_iter().enumerate() {
        let good = status(n as u64 + 1);
        let before = kinds(&p).await;
        let answer_failure = failure.is_some();
        match failure {
            Some(f) => env.source.set_failure(f),
            None => {
                let mut json = serde_json::to_value(&good).unwrap();
                json.as_object_mut().unwrap().remove("safe_l2").expect("had safe_l2");
                env.source.set_status_json(json);
            }
        }
        // Once one failure is counted no good answer is in flight: from now on nothing may be
        // stored, not even the new status the source holds behind the failure.
        p.wait_metric(&kind(k), before[k] + 1.0).await;
        let stored = env.stored(SRC).await.len();
        if answer_failure {
            env.source.set_status(good.clone());
        }
        p.wait_metric(&kind(k), before[k] + 3.0).await;
        assert_eq!(env.stored(SRC).await.len(), stored, "{k}: nothing published");
        assert_eq!(p.live().await, 200, "{k}: alive");
        let s = c.get_status(v1::GetStatusRequest {}).await.unwrap().into_inner();
        assert!(!s.last_error.is_empty(), "{k}: last_error is shown");
        let after = kinds(&p).await;
        for other in KINDS.iter().filter(|o| **o != k) {
            assert_eq!(after[other], before[other], "{k} counted as {other}");
        }

        // Healed: the source's status is published again.
        env.source.set_failure(Failure::None);
        env.source.set_status(good.clone());
        wait::until_async(Duration::from_secs(10), wait::POLL, || async {
            has(&env.stored(SRC).await, &good)
        })
        .await
        .expect("the status is stored");
        p.wait_ready(200).await;
    }
    let m = p.metrics().await;
    assert!(metric(&m, ERR) >= 18.0, "{m}");
    assert!(!p.handle.is_finished());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnects_and_publishes_again_after_a_nats_restart() {
    let mut env = Env::new().await;
    let p = env.start(&[]).await;
    env.wait_stored(SRC, 1).await;
    assert_eq!(
        p.metric("lightcl_poller_nats_reconnects_total").await,
        0.0,
        "the first connection is no reconnect"
    );

    env.nats.restart().await.unwrap();
    env.source.set_status(status(1));
    wait::until_async(Duration::from_secs(15), wait::POLL, || async {
        has(&env.stored(SRC).await, &status(1))
    })
    .await
    .expect("the status is stored");
    p.wait_ready(200).await;
    assert_eq!(p.wait_metric("lightcl_poller_nats_reconnects_total", 1.0).await, 1.0);

    // A longer outage: not ready meanwhile, the newest status once NATS is back.
    env.nats.stop();
    p.wait_ready(503).await;
    let (_, body) = p.ready().await;
    assert!(body.contains("nats"), "{body}");
    env.source.set_status(status(2));
    let ok = p.metric(OK).await;
    p.wait_metric(OK, ok + 2.0).await; // status 2 was polled while NATS was away
    assert_eq!(p.live().await, 200);
    env.nats.start_again().await.unwrap();
    wait::until_async(Duration::from_secs(15), wait::POLL, || async {
        has(&env.stored(SRC).await, &status(2))
    })
    .await
    .expect("the status is stored");
    p.wait_ready(200).await;
    assert_eq!(p.wait_metric("lightcl_poller_nats_reconnects_total", 2.0).await, 2.0);
    assert!(!p.handle.is_finished(), "no restart of its own");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_down_at_start_means_not_ready_until_it_comes() {
    let mut env = Env::new().await;
    env.nats.stop();
    let p = env.spawn(&[]).await;
    let admin = p.bound.admin;
    wait::until_async(Duration::from_secs(10), wait::POLL, || async move {
        let HttpAnswer { status: code, body, .. } = http_get(admin, "/ready").await;
        code == 503 && body.contains("nats")
    })
    .await
    .expect("/ready names nats");
    assert_eq!(p.live().await, 200);
    // Cancelled while still waiting for NATS: a clean, prompt exit.
    let other = env.spawn(&[]).await;
    let t = Instant::now();
    other.stop().await;
    assert!(t.elapsed() < Duration::from_secs(3), "stop took {:?}", t.elapsed());

    env.nats.start_again().await.unwrap();
    p.wait_ready(200).await;
    env.wait_stored(SRC, 1).await[0].check(SRC, &status(0));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn control_shows_the_heads_and_pause_stops_polling() {
    let env = Env::new().await;
    let p = env.start(&[]).await;
    env.wait_stored(SRC, 1).await;
    let mut c = p.control().await;
    let get = |c: &v1::poller_control_client::PollerControlClient<_>| {
        let mut c = c.clone();
        async move { c.get_status(v1::GetStatusRequest {}).await.unwrap().into_inner() }
    };
    let last = |s: &v1::PollerStatus| {
        s.last_status.as_ref().map(|m| SyncStatus::try_from(m).expect("valid last_status"))
    };

    let s = get(&c).await;
    assert_eq!((s.chain_id, s.source_id.as_str()), (CHAIN, SRC));
    assert!(s.source_url.starts_with(&env.source.url()), "{}", s.source_url);
    assert!(s.ready && s.nats_connected && !s.paused, "{s:?}");
    assert_eq!(last(&s), Some(status(0)));
    assert!(s.polls_ok >= 1 && s.published >= 1 && s.last_success_ms > 0, "{s:?}");
    env.source.set_status(status(1));
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        last(&get(&c).await) == Some(status(1))
    })
    .await
    .expect("WatchStatus shows the status");

    // No token or a wrong one: refused, no effect.
    let e = c.pause(v1::PauseRequest { reason: "x".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = c.pause(authed(v1::PauseRequest { reason: "x".into() }, "wrong")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(!get(&c).await.paused);
    let r = env.source.requests(SYNC);
    assert!(env.source.wait_for_requests(SYNC, r + 3, Duration::from_secs(5)).await, "polling");

    // Paused: no polls, no publishes.
    let st = c.pause(authed(v1::PauseRequest { reason: "test".into() }, TOKEN)).await.unwrap();
    assert!(st.into_inner().paused);
    let mut watch = c.watch_status(v1::WatchStatusRequest {}).await.unwrap().into_inner();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !watch.message().await.unwrap().expect("stream open").paused {}
    })
    .await
    .expect("WatchStatus never showed paused");
    p.wait_metric("lightcl_poller_paused", 1.0).await;
    let r = env.source.requests(SYNC);
    let stored = env.stored(SRC).await.len();
    env.source.set_status(status(2));
    // At most one poll was already in flight; then nothing for 10+ poll intervals.
    holds_for(Duration::from_millis(800), "paused poller polled", || async {
        env.source.requests(SYNC) <= r + 1
    })
    .await;
    assert_eq!(env.stored(SRC).await.len(), stored, "nothing published while paused");
    let e = c.resume(authed(v1::ResumeRequest {}, "wrong")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    assert!(get(&c).await.paused);

    // Resumed: polls and publishes again.
    let st = c.resume(authed(v1::ResumeRequest {}, TOKEN)).await.unwrap();
    assert!(!st.into_inner().paused);
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        has(&env.stored(SRC).await, &status(2))
    })
    .await
    .expect("the status is stored");
    assert!(env.source.wait_for_requests(SYNC, r + 3, Duration::from_secs(5)).await, "polling");
    assert_eq!(p.metric("lightcl_poller_paused").await, 0.0);
    assert_eq!(last(&get(&c).await), Some(status(2)));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn polls_are_single_flight_and_missed_ticks_are_skipped() {
    let env = Env::new().await;
    let p = env.start(&[("--rpc-timeout", "2s")]).await;
    let slow = Duration::from_millis(300);
    env.source.set_failure(Failure::Delay(slow));
    let r = env.source.requests(SYNC);
    assert!(env.source.wait_for_requests(SYNC, r + 1, Duration::from_secs(5)).await);
    let t1 = Instant::now();
    assert!(env.source.wait_for_requests(SYNC, r + 4, Duration::from_secs(10)).await);
    // Each poll starts only after the previous answer: 3 more need at least 3 x 300 ms.
    assert!(t1.elapsed() >= Duration::from_millis(850), "polls overlapped: {:?}", t1.elapsed());

    // Healed: the normal rate, no burst of the ticks missed meanwhile.
    env.source.set_failure(Failure::None);
    let r = env.source.requests(SYNC);
    assert!(env.source.wait_for_requests(SYNC, r + 2, Duration::from_secs(5)).await);
    let r = env.source.requests(SYNC);
    holds_for(Duration::from_millis(300), "missed ticks were bunched", || async {
        env.source.requests(SYNC) <= r + 300 / 50 + 2
    })
    .await;
    assert_eq!(p.metric(ERR).await, 0.0, "a slow answer within --rpc-timeout is no error");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_source_id_comes_from_the_url_host_and_port() {
    let env = Env::new().await;
    let mut args = env.args(&[]);
    let i = args.iter().position(|a| a == "--source-id").unwrap();
    args.drain(i..i + 2);
    let p = env.spawn_cli(clap::Parser::try_parse_from(args).expect("flags")).await;
    p.wait_ready(200).await;
    let mut c = p.control().await;
    let id = c.get_status(v1::GetStatusRequest {}).await.unwrap().into_inner().source_id;
    lightcl_bus::subjects::check_token("source id", &id).expect("a subject token");
    assert!(id.contains(&env.source.addr().port().to_string()), "{id}");
    env.wait_stored(&id, 1).await[0].check(&id, &status(0));
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_outage_does_not_slow_polling_down() {
    // A long backoff cap: if failed publishes backed off the polls, the status polled after
    // NATS returns would wait up to a minute.
    let mut env = Env::new().await;
    let p = env.start(&[("--max-backoff", "60s"), ("--nats.publish-timeout", "100ms")]).await;
    env.wait_stored(SRC, 1).await;
    env.nats.stop();
    env.source.set_status(status(1));
    let failed = "lightcl_poller_publishes_total{result=\"error\"}";
    p.wait_metric(failed, 8.0).await;
    // The source keeps being polled on its cadence while NATS is away.
    let ok = p.metric(OK).await;
    p.wait_metric(OK, ok + 3.0).await;
    assert_eq!(p.metric(ERR).await, 0.0, "the source never failed");
    env.nats.start_again().await.unwrap();
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        has(&env.stored(SRC).await, &status(1))
    })
    .await
    .expect("the status is stored");
    p.stop().await;
}
