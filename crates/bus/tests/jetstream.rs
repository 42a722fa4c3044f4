//! The bus against a real nats-server: topology, dedupe, CAS, consumers across a restart,
//! poisoned messages, trace headers and the engine-state bucket.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use lightcl_bus::{
    Bus, BusError, ConsumerSpec, EngineStates, NatsArgs, Publisher, StartAt, TypedConsumer,
    last_message, subjects,
};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait::{self, Deadline};
use lightcl_proto::{names, v1};

const DEADLINE: Duration = Duration::from_secs(15);

async fn bus(server: &NatsServer) -> Bus {
    let bus = Bus::connect(&NatsArgs::local(server.url()), "bus-test").await.unwrap();
    wait::until_async(DEADLINE, Duration::from_millis(50), || bus.ensure_topology())
        .await
        .unwrap_or_else(|t| panic!("topology: {t}"));
    bus
}

fn target(revision: u64) -> v1::Target {
    v1::Target { chain_id: 10, revision, ..Default::default() }
}

fn targets_consumer(bus: &Bus, durable: Option<&str>, start: StartAt) -> TypedConsumer<v1::Target> {
    TypedConsumer::new(
        bus.jetstream(),
        ConsumerSpec {
            stream: subjects::TARGETS_STREAM.into(),
            filter_subject: subjects::target(10),
            durable: durable.map(Into::into),
            start,
            ack_wait: Duration::from_secs(5),
        },
        names::TARGET,
    )
}

async fn next<M: prost::Message + Default>(c: &mut TypedConsumer<M>) -> lightcl_bus::Delivery<M> {
    tokio::time::timeout(DEADLINE, c.next()).await.expect("a message within the deadline")
}

#[tokio::test(flavor = "multi_thread")]
async fn topology_is_idempotent_even_concurrently() {
    let server = NatsServer::start().await.unwrap();
    let a = bus(&server).await;
    a.ensure_topology().await.unwrap();
    let b = Bus::connect(&NatsArgs::local(server.url()), "second").await.unwrap();
    let (r1, r2) = tokio::join!(a.ensure_topology(), b.ensure_topology());
    r1.unwrap();
    r2.unwrap();
    let js = a.jetstream();
    for spec in lightcl_bus::stream_specs() {
        let info = js.get_stream(spec.name).await.unwrap().info().await.unwrap().clone();
        assert_eq!(info.config.subjects, vec![spec.subjects.to_string()]);
    }
    assert!(js.get_key_value(subjects::ENGINE_BUCKET).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_message_id_is_stored_once() {
    let server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let p = Publisher::new(bus.jetstream(), Duration::from_secs(2));
    let subject = subjects::status(10, "src");
    let msg = v1::RawStatus { chain_id: 10, source_id: "src".into(), ..Default::default() };
    let first = p.publish(&subject, names::RAW_STATUS, &msg, Some("same-id")).await.unwrap();
    let second = p.publish(&subject, names::RAW_STATUS, &msg, Some("same-id")).await.unwrap();
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.sequence, second.sequence);
    let third = p.publish(&subject, names::RAW_STATUS, &msg, Some("other-id")).await.unwrap();
    assert!(!third.duplicate);
    let info = bus
        .jetstream()
        .get_stream(subjects::STATUS_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn cas_publish_refuses_a_stale_expectation() {
    let server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let p = Publisher::new(bus.jetstream(), Duration::from_secs(2));
    let subject = subjects::target(10);
    let a = p.publish_expecting(&subject, names::TARGET, &target(1), None, 0).await.unwrap();
    let b =
        p.publish_expecting(&subject, names::TARGET, &target(2), None, a.sequence).await.unwrap();
    // A second writer still believing `a` was last loses.
    let lost = p.publish_expecting(&subject, names::TARGET, &target(2), None, a.sequence).await;
    assert!(matches!(lost, Err(BusError::WrongLastSequence { .. })), "{lost:?}");
    assert_eq!(lost.unwrap_err().severity(), lightcl_core::Severity::Reset);
    let last = last_message::<v1::Target>(
        &bus.jetstream(),
        subjects::TARGETS_STREAM,
        &subject,
        names::TARGET,
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(last.sequence, b.sequence);
    assert_eq!(last.message.revision, 2);
    let empty = last_message::<v1::Target>(
        &bus.jetstream(),
        subjects::TARGETS_STREAM,
        &subjects::target(99),
        names::TARGET,
    )
    .await
    .unwrap();
    assert!(empty.is_none());
    // A missing stream is an error, not an empty subject.
    let missing =
        last_message::<v1::Target>(&bus.jetstream(), "NO_SUCH_STREAM", &subject, names::TARGET)
            .await;
    assert!(missing.is_err(), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poisoned_message_is_acked_counted_and_skipped() {
    let server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let js = bus.jetstream();
    let subject = subjects::target(10);
    js.publish(subject.clone(), bytes::Bytes::from_static(&[0xff, 0xff, 0xff, 0x01]))
        .await
        .unwrap()
        .await
        .unwrap();
    let mut wrong_type = HeaderMap::new();
    wrong_type.insert(lightcl_bus::MESSAGE_HEADER, names::REJECTION);
    js.publish_with_headers(subject.clone(), wrong_type, bytes::Bytes::new())
        .await
        .unwrap()
        .await
        .unwrap();
    let p = Publisher::new(js.clone(), Duration::from_secs(2));
    p.publish(&subject, names::TARGET, &target(7), None).await.unwrap();
    let mut c = targets_consumer(&bus, Some("poison-test"), StartAt::All);
    let bad = c.undecodable();
    let d = next(&mut c).await;
    assert_eq!(d.message.revision, 7);
    d.ack().await.unwrap();
    assert_eq!(bad.load(Ordering::Relaxed), 2);
    // Nothing is redelivered: the poisoned messages were acked.
    let info = js
        .get_stream(subjects::TARGETS_STREAM)
        .await
        .unwrap()
        .consumer_info("poison-test")
        .await
        .unwrap();
    assert_eq!(info.num_ack_pending, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_durable_consumer_survives_a_server_restart_and_loses_nothing() {
    let mut server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let p = Publisher::new(bus.jetstream(), Duration::from_secs(2));
    let subject = subjects::target(10);
    let mut c = targets_consumer(&bus, Some("restart-test"), StartAt::All);
    p.publish(&subject, names::TARGET, &target(1), Some("t1")).await.unwrap();
    let d = next(&mut c).await;
    assert_eq!(d.message.revision, 1);
    d.ack().await.unwrap();
    server.restart().await.unwrap();
    // Publishes acked after the restart must all arrive, in order.
    let deadline = Deadline::after(DEADLINE);
    for rev in 2..=4u64 {
        let (msg, id) = (target(rev), format!("t{rev}"));
        wait::until_async(deadline, Duration::ZERO, || {
            p.publish(&subject, names::TARGET, &msg, Some(&id))
        })
        .await
        .unwrap_or_else(|t| panic!("publish after restart: {t}"));
    }
    // At least once: revision 1 may come again (its ack can be lost with the server that
    // restarted right after it); every later one arrives, in order.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let d = next(&mut c).await;
        d.ack().await.unwrap();
        let rev = d.message.revision;
        if rev > 1 && !seen.contains(&rev) {
            seen.push(rev);
        }
    }
    assert_eq!(seen, vec![2, 3, 4]);
    assert!(bus.is_connected());
}

#[tokio::test(flavor = "multi_thread")]
async fn last_per_subject_consumers_start_at_the_newest_and_carry_trace_headers() {
    let server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let js = bus.jetstream();
    let subject = subjects::target(10);
    let p = Publisher::new(js.clone(), Duration::from_secs(2));
    p.publish(&subject, names::TARGET, &target(1), None).await.unwrap();
    let mut h = HeaderMap::new();
    h.insert(lightcl_bus::MESSAGE_HEADER, names::TARGET);
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    h.insert("traceparent", tp);
    use prost::Message;
    js.publish_with_headers(subject.clone(), h, target(2).encode_to_vec().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut c = targets_consumer(&bus, None, StartAt::LastPerSubject);
    let d = next(&mut c).await;
    assert_eq!(d.message.revision, 2, "starts at the newest");
    assert_eq!(d.trace.get("traceparent").map(String::as_str), Some(tp));
    p.publish(&subject, names::TARGET, &target(3), None).await.unwrap();
    assert_eq!(next(&mut c).await.message.revision, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_states_round_trip_through_the_bucket() {
    let server = NatsServer::start().await.unwrap();
    let bus = bus(&server).await;
    let kv = EngineStates::open(&bus.jetstream(), 1).await.unwrap();
    for node in ["b", "a"] {
        let s = v1::EngineState {
            chain_id: 10,
            node_id: node.into(),
            applied_revision: 3,
            ..Default::default()
        };
        kv.put(&s).await.unwrap();
    }
    kv.put(&v1::EngineState { chain_id: 11, node_id: "x".into(), ..Default::default() })
        .await
        .unwrap();
    let got = kv.get(10, "a").await.unwrap().unwrap();
    assert_eq!(got.applied_revision, 3);
    assert!(kv.get(10, "zz").await.unwrap().is_none());
    let all: Vec<String> = kv.list(10).await.unwrap().into_iter().map(|s| s.node_id).collect();
    assert_eq!(all, vec!["a", "b"]);
    let bad = kv
        .put(&v1::EngineState { chain_id: 10, node_id: "a.b".into(), ..Default::default() })
        .await;
    assert!(matches!(bad, Err(BusError::InvalidToken { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_to_a_down_server_does_not_fail_and_recovers() {
    let mut server = NatsServer::start().await.unwrap();
    let url = server.url();
    server.stop();
    let bus = Bus::connect(&NatsArgs::local(url), "late").await.unwrap();
    assert!(!bus.is_connected());
    server.start_again().await.unwrap();
    let mut connected = bus.connected();
    tokio::time::timeout(DEADLINE, connected.wait_for(|c| *c)).await.unwrap().unwrap();
    bus.ensure_topology().await.unwrap();
}

#[tokio::test]
async fn unreadable_secret_files_name_their_flag() {
    let mut args = NatsArgs::local("nats://127.0.0.1:1");
    args.token_file = Some("/nonexistent/token".into());
    let e = Bus::connect(&args, "x").await.unwrap_err();
    assert!(e.to_string().contains("--nats.token-file"), "{e}");
    assert_eq!(e.severity(), lightcl_core::Severity::Fatal);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let mut args = NatsArgs::local("nats://127.0.0.1:1");
    args.user = Some("u".into());
    args.password_file = Some(empty);
    let e = Bus::connect(&args, "x").await.unwrap_err();
    assert!(e.to_string().contains("--nats.password-file"), "{e}");
}
