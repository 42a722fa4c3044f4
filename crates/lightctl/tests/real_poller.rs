//! The real poller (in-process library object) polling the mock consensus node, publishing to a
//! real nats-server, operated with the real `lightctl` binary: status shows the heads the
//! source serves; pause stops polls and publishes, resume restarts them; a bad token changes
//! nothing.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{lightctl, write_file};
use lightcl_harness::mock_source::{Heads, MockSource, synthetic_status};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use tokio_util::sync::CancellationToken;

const CHAIN: u64 = 10;
const TOKEN: &str = "poller-token";

fn heads(u: u64) -> Heads {
    Heads { l1: 100 + u / 6, unsafe_l2: u, safe_l2: u - 10, finalized_l2: u - 40 }
}

/// Stored raw statuses on the chain's subjects.
async fn stored(js: &async_nats::jetstream::Context) -> u64 {
    let mut s = js.get_stream("LIGHTCL_STATUS").await.expect("stream");
    s.info().await.expect("info").state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lightctl_shows_the_source_heads_and_pauses_the_real_poller() {
    let nats = NatsServer::start().await.expect("nats-server");
    let source = MockSource::start(CHAIN, synthetic_status(heads(600))).await.expect("source");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = write_file(dir.path(), "token", TOKEN).display().to_string();
    let bad = write_file(dir.path(), "bad", "wrong").display().to_string();
    let cfg = lightcl_poller::Cli::try_parse_from([
        "lightcl-poller",
        "--chain-id",
        "10",
        "--nats.url",
        &nats.url(),
        "--l2.follow.source",
        &source.url(),
        "--source-id",
        "op-node-a",
        "--poll-interval",
        "50ms",
        "--heartbeat",
        "1h",
        "--grpc.addr",
        "127.0.0.1:0",
        "--admin.addr",
        "127.0.0.1:0",
        "--grpc.token-file",
        &token,
        "--shutdown-grace",
        "3s",
    ])
    .expect("flags")
    .into_config()
    .expect("config");
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(lightcl_poller::run(cfg, cancel.clone(), move |b| {
        let _ = tx.send(b);
    }));
    let bound =
        tokio::time::timeout(Duration::from_secs(10), rx).await.expect("binds").expect("ok");
    let grpc = format!("http://{}", bound.grpc);
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));

    // Status: the heads the source serves, once polled.
    let shows = |u: u64| {
        let grpc = grpc.clone();
        async move {
            let r = lightctl(&["status", "-o", "json", "--poller", &grpc]).await;
            let p = &r.json()["pollers"][0]["status"];
            p["last_status"]["unsafe_l2"]["number"].as_u64() == Some(u)
                && p["last_status"]["safe_l2"]["number"].as_u64() == Some(u - 10)
                && p["last_status"]["finalized_l2"]["number"].as_u64() == Some(u - 40)
                && p["source_id"] == "op-node-a"
                && p["ready"] == true
        }
    };
    wait::until_async(Duration::from_secs(15), wait::POLL, || shows(600))
        .await
        .expect("lightctl shows the source's heads");
    wait::until_async(Duration::from_secs(10), wait::POLL, || async { stored(&js).await == 1 })
        .await
        .expect("one status stored");

    // A bad token: refused, polling goes on.
    let r = lightctl(&["pause", "poller", &grpc, "--token-file", &bad]).await;
    assert_eq!(r.code, 3, "{r:?}");
    source.set_status(synthetic_status(heads(606)));
    wait::until_async(Duration::from_secs(10), wait::POLL, || shows(606))
        .await
        .expect("still polling after the refused pause");
    wait::until_async(Duration::from_secs(10), wait::POLL, || async { stored(&js).await == 2 })
        .await
        .expect("the change is stored");

    // Paused: no polls, no publishes, even though the source moves on.
    let r = lightctl(&["pause", "poller", &grpc, "--token-file", &token]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = lightctl(&["status", "-o", "json", "--poller", &grpc]).await;
    assert_eq!(r.json()["pollers"][0]["status"]["paused"], true);
    // A poll that was in flight when the pause landed may still finish: settle on a count.
    let settled = source.requests("optimism_syncStatus");
    assert!(
        !source
            .wait_for_requests("optimism_syncStatus", settled + 2, Duration::from_millis(600))
            .await,
        "at most one in-flight poll finishes after the pause"
    );
    let polls = source.requests("optimism_syncStatus");
    source.set_status(synthetic_status(heads(612)));
    assert!(
        !source
            .wait_for_requests("optimism_syncStatus", polls + 1, Duration::from_millis(500))
            .await,
        "no poll while paused"
    );
    assert_eq!(stored(&js).await, 2, "no publish while paused");

    // Resumed: the new head is polled and stored.
    let r = lightctl(&["resume", "poller", &grpc, "--token-file", &token]).await;
    assert_eq!(r.code, 0, "{r:?}");
    wait::until_async(Duration::from_secs(10), wait::POLL, || shows(612))
        .await
        .expect("polling again after resume");
    wait::until_async(Duration::from_secs(10), wait::POLL, || async { stored(&js).await == 3 })
        .await
        .expect("publishing again");

    cancel.cancel();
    let res =
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("stops").expect("task");
    assert!(res.is_ok(), "clean stop: {res:?}");
}
