//! The engine-driver's side of the bus (docs/bus.md): the newest target of
//! `lightcl.target.<chain>` into a watch channel, and the EngineState into KV
//! `lightcl-engine` under `<chain>.<node>`.
//!
//! NATS may be down at start-up or go away later: everything here waits and retries, marks
//! the `nats` readiness condition, and never ends the process.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use futures::StreamExt;
use lightcl_bus::NatsArgs;
use lightcl_core::Target;
use lightcl_proto::v1;
use lightcl_runtime::{Backoff, Readiness};
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Stream holding validated targets.
pub const TARGETS_STREAM: &str = "LIGHTCL_TARGETS";
/// KV bucket of engine states.
pub const ENGINE_BUCKET: &str = "lightcl-engine";

/// Subject of a chain's targets.
pub fn target_subject(chain_id: u64) -> String {
    format!("lightcl.target.{chain_id}")
}

/// KV key of one driver's state.
pub fn engine_key(chain_id: u64, node_id: &str) -> String {
    format!("{chain_id}.{node_id}")
}

/// A target as received, with the W3C trace headers it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetMsg {
    /// The target.
    pub target: Target,
    /// `traceparent`/`tracestate`, when present.
    pub trace: HashMap<String, String>,
    /// Wall-clock ms of the poll that observed these heads (0 when unknown).
    pub observed_at_ms: u64,
}

/// A bus failure.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Connecting failed.
    #[error("NATS connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A JetStream call failed.
    #[error("JetStream {what}: {reason}")]
    JetStream {
        /// What was attempted.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

fn js_err(what: &'static str) -> impl Fn(&dyn std::fmt::Display) -> BusError {
    move |e| BusError::JetStream { what, reason: e.to_string() }
}

/// Connection state from the client's events: up or down, and how many times it (re)connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ConnState {
    connected: bool,
    generation: u64,
}

async fn connect(
    cfg: &NatsArgs,
    state: watch::Sender<ConnState>,
) -> Result<async_nats::Client, BusError> {
    let err = |e: &dyn std::fmt::Display| BusError::Connect {
        url: cfg.url.clone(),
        reason: e.to_string(),
    };
    let opts =
        cfg.connect_options("lightcl-engine-driver").await.map_err(|e| err(&e))?.event_callback(
            move |event| {
                let state = state.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => state.send_modify(|s| {
                            s.connected = true;
                            s.generation += 1;
                        }),
                        async_nats::Event::Disconnected | async_nats::Event::Closed => {
                            state.send_modify(|s| s.connected = false);
                        }
                        _ => {}
                    }
                }
            },
        );
    opts.connect(cfg.url.as_str()).await.map_err(|e| err(&e))
}

/// What the bus task needs.
#[derive(Debug)]
pub struct BusParts {
    /// Connection settings.
    pub nats: NatsArgs,
    /// `--chain-id`.
    pub chain_id: u64,
    /// `--node-id`.
    pub node_id: String,
    /// Where the newest target goes.
    pub targets: watch::Sender<Option<TargetMsg>>,
    /// Connection flag for the status.
    pub connected: watch::Sender<bool>,
    /// The driver's status (its `state` is put to KV on change).
    pub status: watch::Receiver<v1::EngineDriverStatus>,
    /// Readiness (`nats` condition).
    pub readiness: Readiness,
    /// Metrics.
    pub metrics: Metrics,
}

/// Runs the bus side until `cancel`: connects (retrying), then consumes targets and publishes
/// engine states; on shutdown, puts the final state once more.
pub async fn run(p: BusParts, cancel: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let (conn_tx, conn_rx) = watch::channel(ConnState::default());
    let client = loop {
        let attempt = tokio::select! {
            () = cancel.cancelled() => return,
            r = connect(&p.nats, conn_tx.clone()) => r,
        };
        match attempt {
            Ok(c) => break c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to NATS; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    };
    let js = jetstream::new(client.clone());
    let watch_conn = tokio::spawn(watch_connection(
        conn_rx.clone(),
        p.connected.clone(),
        p.readiness.clone(),
        cancel.clone(),
    ));
    let kv_task = tokio::spawn(publish_states(
        client.clone(),
        js.clone(),
        usize::from(p.nats.replicas),
        engine_key(p.chain_id, &p.node_id),
        p.status.clone(),
        cancel.clone(),
    ));
    consume_targets(&js, &p, conn_rx, &cancel).await;
    let _ = watch_conn.await;
    let _ = kv_task.await;
    if client.connection_state() == async_nats::connection::State::Connected {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    }
}

async fn watch_connection(
    mut state: watch::Receiver<ConnState>,
    connected: watch::Sender<bool>,
    readiness: Readiness,
    cancel: CancellationToken,
) {
    loop {
        let up = state.borrow_and_update().connected;
        readiness.set("nats", up);
        connected.send_if_modified(|c| std::mem::replace(c, up) != up);
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

/// The shared topology (every stream and the KV bucket, as the other services create them),
/// then the targets stream.
async fn ensure_stream(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<stream::Stream, BusError> {
    lightcl_bus::ensure_topology(js, replicas).await.map_err(|e| js_err("create topology")(&e))?;
    js.get_stream(TARGETS_STREAM).await.map_err(|e| js_err("get stream LIGHTCL_TARGETS")(&e))
}

async fn consume_targets(
    js: &jetstream::Context,
    p: &BusParts,
    mut conn: watch::Receiver<ConnState>,
    cancel: &CancellationToken,
) {
    let subject = target_subject(p.chain_id);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let generation = conn.borrow_and_update().generation;
        let attempt = async {
            let stream = ensure_stream(js, usize::from(p.nats.replicas)).await?;
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: subject.clone(),
                    deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                    ..Default::default()
                })
                .await
                .map_err(|e| js_err("create consumer")(&e))?;
            consumer.messages().await.map_err(|e| js_err("consume")(&e))
        };
        let mut messages = tokio::select! {
            () = cancel.cancelled() => return,
            r = attempt => match r {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot consume targets; retrying");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
            }
        };
        tracing::info!(%subject, "consuming targets from the newest");
        backoff.reset();
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return,
                n = messages.next() => n,
                changed = conn.changed() => {
                    // After a reconnect (e.g. a server restart) pending pulls and the consumer
                    // itself may be gone and heartbeat detection takes ~30 s: start over from
                    // the newest target now (the planner ignores revisions already seen).
                    if changed.is_ok() && conn.borrow_and_update().generation != generation {
                        tracing::info!("NATS reconnected; re-creating the target consumer");
                        // Generation 0 → 1 is the first connection's event arriving late, not a
                        // reconnect.
                        if generation > 0 {
                            p.metrics.nats_reconnects_total.inc();
                        }
                        break;
                    }
                    continue;
                }
            };
            match next {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "target consumer error; re-creating");
                    break;
                }
                Some(Ok(msg)) => {
                    let seq = msg.info().map(|i| i.stream_sequence).unwrap_or_default();
                    match decode_target_msg(&msg.payload) {
                        Ok((target, observed_at_ms)) => {
                            let trace = trace_headers(msg.headers.as_ref());
                            p.targets.send_replace(Some(TargetMsg {
                                target,
                                trace,
                                observed_at_ms,
                            }));
                        }
                        Err(e) => {
                            p.metrics.bad_messages_total.inc();
                            tracing::error!(subject = %msg.subject, seq, error = %e, "undecodable target message; skipped");
                        }
                    }
                }
            }
        }
    }
}

fn trace_headers(h: Option<&async_nats::HeaderMap>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(h) = h {
        for key in ["traceparent", "tracestate"] {
            if let Some(v) = h.get(key) {
                out.insert(key.to_owned(), v.as_str().to_owned());
            }
        }
    }
    out
}

/// Decodes a `Target` message into the core type (hashes must be 32 bytes, refs present).
pub fn decode_target(payload: &[u8]) -> Result<Target, String> {
    decode_target_msg(payload).map(|(t, _)| t)
}

/// Like [`decode_target`], also returning the message's `observed_at_ms`.
pub fn decode_target_msg(payload: &[u8]) -> Result<(Target, u64), String> {
    let m = v1::Target::decode(payload).map_err(|e| format!("protobuf: {e}"))?;
    let t = m.to_core().map_err(|e| e.to_string())?;
    Ok((t, m.observed_at_ms))
}

async fn ensure_bucket(js: &jetstream::Context, replicas: usize) -> Result<kv::Store, BusError> {
    if let Ok(s) = js.get_key_value(ENGINE_BUCKET).await {
        return Ok(s);
    }
    lightcl_bus::ensure_topology(js, replicas).await.map_err(|e| js_err("create topology")(&e))?;
    js.get_key_value(ENGINE_BUCKET).await.map_err(|e| js_err("open KV lightcl-engine")(&e))
}

async fn publish_states(
    client: async_nats::Client,
    js: jetstream::Context,
    replicas: usize,
    key: String,
    mut status: watch::Receiver<v1::EngineDriverStatus>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut store: Option<kv::Store> = None;
    let mut last_put: Option<v1::EngineState> = None;
    let mut stopping = false;
    loop {
        let state = status.borrow_and_update().state.clone().unwrap_or_default();
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        if stopping && !connected {
            tracing::warn!(%key, "NATS unreachable at shutdown: final engine state not published");
            return;
        }
        if last_put.as_ref() != Some(&state) {
            let put = async {
                if store.is_none() {
                    store = Some(ensure_bucket(&js, replicas).await?);
                }
                let Some(s) = &store else { return Ok(()) };
                s.put(&key, state.encode_to_vec().into())
                    .await
                    .map_err(|e| js_err("KV put")(&e))?;
                Ok::<_, BusError>(())
            };
            // While running, a put is abandoned on shutdown; the final one gets one short try.
            let limit = if stopping { Duration::from_secs(1) } else { Duration::from_secs(2) };
            let r = tokio::select! {
                r = tokio::time::timeout(limit, put) => r,
                () = cancel.cancelled(), if !stopping => {
                    stopping = true;
                    continue;
                }
            };
            match r {
                Ok(Ok(())) => {
                    last_put = Some(state);
                    backoff.reset();
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, %key, "cannot publish the engine state; retrying");
                    store = None;
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        () = cancel.cancelled() => stopping = true,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                    continue;
                }
                Err(_) => {
                    tracing::warn!(%key, "engine state put timed out; retrying");
                    store = None;
                    if stopping {
                        return;
                    }
                    continue;
                }
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            () = cancel.cancelled() => stopping = true,
            changed = status.changed() => if changed.is_err() { stopping = true },
        }
    }
}
