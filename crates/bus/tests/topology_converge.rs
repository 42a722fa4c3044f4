//! Against a real nats-server: stream and KV settings converge to the configured ones at
//! start-up, the targets stream has no age limit, and the newest usable target is found past
//! undecodable ones.

use std::time::Duration;

use lightcl_bus::{Bus, NatsArgs, Publisher, newest_valid, stream_specs, subjects};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use lightcl_proto::{names, v1};

const DEADLINE: Duration = Duration::from_secs(15);

async fn bus(server: &NatsServer) -> Bus {
    let bus = Bus::connect(&NatsArgs::local(server.url()), "converge-test").await.unwrap();
    wait::until_async(DEADLINE, Duration::from_millis(50), || bus.ensure_topology())
        .await
        .unwrap_or_else(|t| panic!("topology: {t}"));
    bus
}

#[tokio::test(flavor = "multi_thread")]
async fn existing_stream_and_bucket_settings_converge() {
    let server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let js = bus.jetstream();
    // An operator (or an older version) left other limits on every stream and the bucket.
    for spec in stream_specs() {
        let mut s = js.get_stream(spec.name).await.unwrap();
        let mut cfg = s.info().await.unwrap().config.clone();
        cfg.max_age = Duration::from_secs(60);
        cfg.max_messages_per_subject = 3;
        cfg.duplicate_window = Duration::from_secs(30);
        js.update_stream(&cfg).await.unwrap();
    }
    let kv_name = format!("KV_{}", subjects::ENGINE_BUCKET);
    let mut kv = js.get_stream(&kv_name).await.unwrap();
    let mut cfg = kv.info().await.unwrap().config.clone();
    cfg.max_messages_per_subject = 1;
    js.update_stream(&cfg).await.unwrap();

    bus.ensure_topology().await.unwrap();
    for spec in stream_specs() {
        let mut s = js.get_stream(spec.name).await.unwrap();
        let c = s.info().await.unwrap().config.clone();
        assert_eq!(c.max_age, spec.max_age, "{}", spec.name);
        assert_eq!(c.max_messages_per_subject, spec.max_per_subject, "{}", spec.name);
        assert_eq!(c.duplicate_window, Duration::from_secs(120), "{}", spec.name);
        assert_eq!(c.num_replicas, 1);
    }
    let c = kv.info().await.unwrap().config.clone();
    assert_eq!(c.max_messages_per_subject, 5);

    // The newest target never ages out.
    let mut targets = js.get_stream(subjects::TARGETS_STREAM).await.unwrap();
    assert_eq!(targets.info().await.unwrap().config.max_age, Duration::ZERO);

    // Replicas cannot change on a single server: refused by the server, logged, not fatal.
    let three = Bus::connect(&NatsArgs { replicas: 3, ..NatsArgs::local(server.url()) }, "r3")
        .await
        .unwrap();
    three.ensure_topology().await.unwrap();
    let c = targets.info().await.unwrap().config.clone();
    assert_eq!(c.num_replicas, 1);
}

fn target(revision: u64) -> v1::Target {
    let t = lightcl_core::Target { chain_id: 10, revision, ..Default::default() };
    v1::Target::from_core(&t)
}

#[tokio::test(flavor = "multi_thread")]
async fn newest_valid_walks_back_past_undecodable_targets() {
    let server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let js = bus.jetstream();
    let p = Publisher::new(js.clone(), Duration::from_secs(2));
    let subject = subjects::target(10);
    let good = p.publish(&subject, names::TARGET, &target(7), Some("t7")).await.unwrap();
    // Another chain's target in between, then two poisoned ones on our subject.
    p.publish(&subjects::target(11), names::TARGET, &target(1), Some("o1")).await.unwrap();
    let bad1 = js.publish(subject.clone(), vec![0xff, 0xff, 0xff].into()).await.unwrap();
    let bad1 = bad1.await.unwrap().sequence;
    let bad2 = js.publish(subject.clone(), vec![0x0a, 0x05].into()).await.unwrap();
    let bad2 = bad2.await.unwrap().sequence;

    let found = newest_valid::<lightcl_core::Target>(&js, subjects::TARGETS_STREAM, &subject, 64)
        .await
        .unwrap();
    assert_eq!(found.last_sequence, bad2, "the CAS expectation is the real last message");
    let newest = found.newest.expect("the decodable target");
    assert_eq!(newest.sequence, good.sequence);
    assert_eq!(newest.message.1.revision, 7);
    let skipped: Vec<u64> = found
        .skipped
        .iter()
        .map(|e| match e {
            lightcl_bus::BusError::Decode { sequence, subject: s, .. } => {
                assert_eq!(s, &subject);
                *sequence
            }
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(skipped, vec![bad2, bad1]);

    // Bounded: looking back one sequence only finds nothing usable.
    let found = newest_valid::<lightcl_core::Target>(&js, subjects::TARGETS_STREAM, &subject, 1)
        .await
        .unwrap();
    assert!(found.newest.is_none());
    // Empty subject.
    let found = newest_valid::<lightcl_core::Target>(
        &js,
        subjects::TARGETS_STREAM,
        &subjects::target(12),
        8,
    )
    .await
    .unwrap();
    assert_eq!((found.last_sequence, found.newest.is_none()), (0, true));
}
