//! `LatestConsumer` against a real nats-server: it starts at the newest message, skips and
//! counts poisoned ones, and after a server restart is re-created from the newest message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use lightcl_bus::{Bus, Latest, LatestConsumer, MESSAGE_HEADER, NatsArgs, Publisher, subjects};
use lightcl_core::Target;
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use lightcl_proto::{TargetUpdate, names, v1};
use prost::Message;

const DEADLINE: Duration = Duration::from_secs(15);
const CHAIN: u64 = 10;

async fn connect(server: &NatsServer) -> Bus {
    Bus::connect(&NatsArgs::local(server.url()), "latest-test").await.unwrap()
}

fn target(revision: u64) -> v1::Target {
    let mut m = v1::Target::from_core(&Target { chain_id: CHAIN, revision, ..Target::default() });
    m.observed_at_ms = 1000 + revision;
    m
}

async fn publish(p: &Publisher, revision: u64) {
    let subject = subjects::target(CHAIN);
    let (m, id) = (target(revision), format!("t{revision}"));
    wait::until_async(DEADLINE, Duration::from_millis(50), || {
        p.publish(&subject, names::TARGET, &m, Some(&id))
    })
    .await
    .expect("publish");
}

async fn next(c: &mut LatestConsumer<TargetUpdate>) -> Latest<TargetUpdate> {
    tokio::time::timeout(DEADLINE, c.next()).await.expect("a message within the deadline")
}

#[tokio::test(flavor = "multi_thread")]
async fn starts_at_the_newest_skips_poison_and_after_a_restart_continues_from_the_newest() {
    let mut server = NatsServer::start().await.unwrap();
    let bus = connect(&server).await;
    wait::until_async(DEADLINE, Duration::from_millis(50), || bus.ensure_topology())
        .await
        .expect("topology");
    let js = bus.jetstream();
    let p = Publisher::new(js.clone(), Duration::from_secs(2));
    let subject = subjects::target(CHAIN);
    publish(&p, 1).await;
    let mut h = HeaderMap::new();
    h.insert(MESSAGE_HEADER, names::TARGET);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    h.insert("traceparent", tp);
    js.publish_with_headers(subject.clone(), h, target(2).encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let hooked = Arc::new(AtomicU64::new(0));
    let counter = hooked.clone();
    let mut c = LatestConsumer::<TargetUpdate>::new(&bus, subjects::TARGETS_STREAM, &subject)
        .on_poisoned(move || {
            counter.fetch_add(1, Ordering::Relaxed);
        });
    let poisoned = c.poisoned();
    let d = next(&mut c).await;
    assert_eq!(d.message.target.revision, 2, "starts at the newest");
    assert_eq!(d.message.observed_at_ms, 1002);
    assert_eq!(d.subject, subject);
    assert_eq!(d.trace.get("traceparent").map(String::as_str), Some(tp));

    // Poison: garbage, a target that decodes but does not convert, another message type.
    js.publish(subject.clone(), bytes::Bytes::from_static(&[0xff, 0x01, 0x02]))
        .await
        .unwrap()
        .await
        .unwrap();
    let mut short = target(9);
    short.safe_l2.as_mut().unwrap().hash = vec![1; 31];
    js.publish(subject.clone(), short.encode_to_vec().into()).await.unwrap().await.unwrap();
    let mut wrong = HeaderMap::new();
    wrong.insert(MESSAGE_HEADER, names::REJECTION);
    js.publish_with_headers(subject.clone(), wrong, target(9).encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish(&p, 3).await;
    let d = next(&mut c).await;
    assert_eq!(d.message.target.revision, 3, "poison skipped");
    assert_eq!(poisoned.load(Ordering::Relaxed), 3);
    assert_eq!(hooked.load(Ordering::Relaxed), 3);

    // A restart while nobody reads; two targets land meanwhile. The next read re-creates the
    // consumer at once (not after the client's ~30 s heartbeat check) from the newest target.
    let before = bus.connection().borrow().generation;
    server.restart().await.unwrap();
    let mut connection = bus.connection();
    tokio::time::timeout(DEADLINE, connection.wait_for(|s| s.connected && s.generation > before))
        .await
        .expect("reconnected within the deadline")
        .unwrap();
    publish(&p, 4).await;
    publish(&p, 5).await;
    let mut after = Vec::new();
    while after.last() != Some(&5) {
        after.push(next(&mut c).await.message.target.revision);
    }
    assert!(
        after.iter().all(|r| *r >= 4),
        "nothing older than the newest at re-creation: {after:?}"
    );
    assert!(after.windows(2).all(|w| w[0] < w[1]), "in order: {after:?}");
    assert_eq!(poisoned.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_started_before_any_writer_creates_the_topology_and_waits() {
    let server = NatsServer::start().await.unwrap();
    let bus = connect(&server).await;
    let subject = subjects::target(CHAIN);
    let mut c = LatestConsumer::<TargetUpdate>::new(&bus, subjects::TARGETS_STREAM, &subject);
    let reader = tokio::spawn(async move { next(&mut c).await });
    // The reader created the streams; a writer that does not create them can publish.
    let js = bus.jetstream();
    wait::until_async(DEADLINE, Duration::from_millis(50), || {
        js.get_stream(subjects::TARGETS_STREAM)
    })
    .await
    .expect("stream created by the reader");
    let p = Publisher::new(js.clone(), Duration::from_secs(2));
    publish(&p, 1).await;
    let d = reader.await.unwrap();
    assert_eq!(d.message.target.revision, 1);
}
