//! `EngineStates` against a real nats-server: the drivers' writer (`publish_changes`) and the
//! readers' API (`open_existing`, `entries`, `watch`) that `lightctl` uses.

use std::time::Duration;

use futures::StreamExt;
use lightcl_bus::{Bus, EngineChange, EngineStates, NatsArgs, subjects};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use lightcl_proto::v1;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(15);

fn state(node: &str, applied_revision: u64) -> v1::EngineState {
    v1::EngineState { chain_id: 10, node_id: node.into(), applied_revision, ..Default::default() }
}

async fn connected(server: &NatsServer) -> Bus {
    let bus = Bus::connect(&NatsArgs::local(server.url()), "kv-test").await.unwrap();
    let mut c = bus.connected();
    tokio::time::timeout(DEADLINE, c.wait_for(|c| *c)).await.unwrap().unwrap();
    bus
}

/// Polls `get` until it returns a state with `applied_revision == want`.
async fn wait_revision(kv: &EngineStates, node: &str, want: u64) {
    let revision = || async { kv.get(10, node).await.unwrap().map(|s| s.applied_revision) };
    let reached =
        wait::until_async(DEADLINE, wait::POLL, || async { revision().await == Some(want) }).await;
    if reached.is_err() {
        panic!("{node}: {:?}, want {want}", revision().await);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drivers_publish_their_state_on_change_and_at_shutdown() {
    let server = NatsServer::start().await.unwrap();
    let bus = connected(&server).await;
    // Readers never create the bucket.
    assert!(EngineStates::open_existing(&bus.jetstream()).await.unwrap().is_none());

    let (tx, rx) = watch::channel((0u8, state("n1", 1)));
    let cancel = CancellationToken::new();
    let writer = {
        let (bus, cancel) = (bus.clone(), cancel.clone());
        tokio::spawn(async move {
            EngineStates::publish_changes(&bus, rx, |(_, s)| s.clone(), Duration::ZERO, &cancel)
                .await;
        })
    };
    // The writer created the bucket.
    let kv = wait::until_async(DEADLINE, wait::POLL, || async {
        EngineStates::open_existing(&bus.jetstream()).await.unwrap()
    })
    .await
    .expect("bucket never created");
    wait_revision(&kv, "n1", 1).await;
    tx.send_replace((1, state("n1", 2)));
    wait_revision(&kv, "n1", 2).await;
    // The final state, set as the driver stops, is put once more.
    tx.send_replace((2, state("n1", 3)));
    cancel.cancel();
    tokio::time::timeout(DEADLINE, writer).await.unwrap().unwrap();
    wait_revision(&kv, "n1", 3).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_list_and_watch_entries_including_undecodable_ones() {
    let server = NatsServer::start().await.unwrap();
    let bus = connected(&server).await;
    let kv = EngineStates::open(&bus.jetstream(), 1).await.unwrap();
    kv.put(&state("b", 1)).await.unwrap();
    kv.put(&state("a", 2)).await.unwrap();
    kv.put(&v1::EngineState { chain_id: 11, node_id: "x".into(), ..Default::default() })
        .await
        .unwrap();
    let raw = bus.jetstream().get_key_value(subjects::ENGINE_BUCKET).await.unwrap();
    raw.put(subjects::engine_key(10, "bad"), bytes::Bytes::from_static(b"\xff\xff\xff"))
        .await
        .unwrap();

    let reader = EngineStates::open_existing(&bus.jetstream()).await.unwrap().unwrap();
    let entries = reader.entries(Some(10)).await.unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["10.a", "10.b", "10.bad"]);
    assert!(entries[2].state.is_err());
    assert_eq!(reader.entries(None).await.unwrap().len(), 4);
    let listed: Vec<String> =
        reader.list(10).await.unwrap().into_iter().map(|s| s.node_id).collect();
    assert_eq!(listed, ["a", "b"], "list skips what does not decode");

    let mut changes = reader.watch(Some(10)).await.unwrap().boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(DEADLINE, changes.next()).await.unwrap().unwrap().unwrap() {
            EngineChange::Put(e) => seen.push(e.key.clone()),
            EngineChange::Removed(k) => panic!("removed {k}"),
        }
    }
    seen.sort();
    assert_eq!(seen, ["10.a", "10.b", "10.bad"], "history first, chain 11 filtered out");
    raw.delete(subjects::engine_key(10, "b")).await.unwrap();
    match tokio::time::timeout(DEADLINE, changes.next()).await.unwrap().unwrap().unwrap() {
        EngineChange::Removed(k) => assert_eq!(k, "10.b"),
        EngineChange::Put(e) => panic!("put {}", e.key),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_within_the_minimum_interval_are_coalesced_into_one_put() {
    let server = NatsServer::start().await.unwrap();
    let bus = connected(&server).await;
    let (tx, rx) = watch::channel((0u8, state("n1", 1)));
    let cancel = CancellationToken::new();
    let writer = {
        let (bus, cancel) = (bus.clone(), cancel.clone());
        tokio::spawn(async move {
            let min = Duration::from_millis(400);
            EngineStates::publish_changes(&bus, rx, |(_, s)| s.clone(), min, &cancel).await;
        })
    };
    let kv = wait::until_async(DEADLINE, wait::POLL, || async {
        EngineStates::open_existing(&bus.jetstream()).await.unwrap()
    })
    .await
    .expect("bucket never created");
    wait_revision(&kv, "n1", 1).await;
    // Nineteen changes in a burst: the newest is written, once.
    for r in 2..=20u64 {
        tx.send_replace((u8::try_from(r).unwrap(), state("n1", r)));
    }
    wait_revision(&kv, "n1", 20).await;
    let raw = bus.jetstream().get_key_value(subjects::ENGINE_BUCKET).await.unwrap();
    let key = subjects::engine_key(10, "n1");
    let puts = || async { raw.entry(key.clone()).await.unwrap().map(|e| e.revision) };
    assert_eq!(puts().await, Some(2), "one put at start, one for the burst");
    // The final state at shutdown is written at once.
    tx.send_replace((21, state("n1", 21)));
    cancel.cancel();
    tokio::time::timeout(DEADLINE, writer).await.unwrap().unwrap();
    wait_revision(&kv, "n1", 21).await;
    assert_eq!(puts().await, Some(3));
}
