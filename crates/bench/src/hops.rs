//! The bus's floor: what one message hop through nats-server costs on this machine, with no
//! lightcl code in it. A core-NATS publish → subscriber (the route an early copy of a status
//! takes) and a JetStream publish → ordered consumer (the route every target takes: stored,
//! then delivered), one message at a time at the latency benchmark's pace, publisher and
//! receiver on separate connections.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use lightcl_harness::nats::{NatsOptions, NatsServer};

use crate::error::{BenchError, Ctx, failed};
use crate::rig::ticker;
use crate::stats::Summary;

/// Settings of the hop benchmark (its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Messages measured per route.
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Time between messages (the latency benchmark's head interval).
    #[arg(long, default_value = "25ms", value_parser = humantime::parse_duration)]
    pub every: Duration,
    /// Payload size in bytes (a target is about 400).
    #[arg(long, default_value_t = 400)]
    pub size: usize,
    /// Warm-up messages per route (not measured).
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
}

/// Runs the benchmark and prints one line per route.
pub async fn run(o: &Options) -> Result<(), BenchError> {
    let dir = tempfile::Builder::new().prefix("lightcl-hops-").tempdir().ctx("temp dir")?;
    let mut nats = NatsServer::start_with(NatsOptions {
        store_dir: Some(dir.path().join("nats")),
        ready_timeout: Duration::from_secs(20),
        ..NatsOptions::default()
    })
    .await
    .ctx("nats-server ready")?;
    let sender = async_nats::connect(nats.url()).await.ctx("NATS")?;
    let receiver = async_nats::connect(nats.url()).await.ctx("NATS")?;
    let payload = bytes::Bytes::from(vec![0x5a_u8; o.size]);
    println!(
        "hops: {} messages per route, one every {:?}, {} bytes, file-backed stream",
        o.messages, o.every, o.size
    );

    // Core NATS: publish → subscriber.
    let mut sub = receiver.subscribe("hop.core").await.ctx("subscribe")?;
    receiver.flush().await.ctx("flush")?;
    let mut core = Vec::with_capacity(o.messages);
    let mut tick = ticker(o.every);
    for i in 0..o.warmup + o.messages {
        tick.tick().await;
        let t = Instant::now();
        // No flush: the connection writes at once, as the services' publishes do.
        sender.publish("hop.core", payload.clone()).await.ctx("publish")?;
        next_within(sub.next()).await?;
        if i >= o.warmup {
            core.push(t.elapsed());
        }
    }

    // JetStream: publish → stored → ordered push consumer (the engine-driver's kind).
    let js = jetstream::new(sender.clone());
    js.create_stream(stream::Config {
        name: "HOPS".into(),
        subjects: vec!["hop.js".into()],
        storage: stream::StorageType::File,
        max_messages_per_subject: 64,
        ..Default::default()
    })
    .await
    .ctx("stream")?;
    let rjs = jetstream::new(receiver.clone());
    let ordered = rjs
        .get_stream("HOPS")
        .await
        .ctx("stream")?
        .create_consumer(consumer::push::OrderedConfig {
            deliver_subject: receiver.new_inbox(),
            filter_subject: "hop.js".into(),
            deliver_policy: consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .ctx("ordered consumer")?;
    let mut messages = ordered.messages().await.ctx("messages")?;
    let (mut stored, mut acked) = (Vec::with_capacity(o.messages), Vec::with_capacity(o.messages));
    for i in 0..o.warmup + o.messages {
        tick.tick().await;
        let t = Instant::now();
        let ack = js.publish("hop.js", payload.clone()).await.ctx("publish")?;
        next_within(messages.next()).await?.ctx("delivery")?;
        let delivered = t.elapsed();
        ack.await.ctx("PubAck")?;
        if i >= o.warmup {
            stored.push(delivered);
            acked.push(t.elapsed());
        }
    }
    for (name, d) in [
        ("core NATS, publish -> subscriber", &core),
        ("JetStream, publish -> ordered consumer", &stored),
        ("JetStream, publish -> delivered and PubAck back", &acked),
    ] {
        if let Some(s) = Summary::of(d) {
            println!("  {name}: {s}");
        }
    }
    drop((sender, receiver));
    nats.terminate(Duration::from_secs(5)).await;
    Ok(())
}

/// The next item of a message stream, or an error after 5 s.
async fn next_within<T>(next: impl Future<Output = Option<T>>) -> Result<T, BenchError> {
    tokio::time::timeout(Duration::from_secs(5), next)
        .await
        .map_err(|_| failed("waiting for a message", "none within 5 s"))?
        .ok_or_else(|| failed("waiting for a message", "the subscription ended"))
}
