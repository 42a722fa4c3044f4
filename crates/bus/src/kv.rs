//! The `lightcl-engine` KV bucket: what each engine-driver applied (docs/bus.md#engine-state-kv-bucket).
//!
//! [`EngineStates`] is the one API of the bucket: the engine-drivers write their own key with
//! [`EngineStates::publish_changes`], `lightctl` reads the fleet with
//! [`EngineStates::open_existing`], [`EngineStates::entries`] and [`EngineStates::watch`].

use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode, context::GetStreamErrorKind, kv};
use futures::{Stream, StreamExt};
use lightcl_proto::v1::EngineState;
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::BusError;
use crate::config::Bus;
use crate::error::{DecodeError, Named};
use crate::retry::Retry;
use crate::subjects::{
    ENGINE_BUCKET, ENGINE_BUCKET_STREAM, check_token, engine_key, engine_key_filter,
    engine_key_node, is_lease_key,
};
use crate::topology::ensure_engine_bucket;

/// Access to the engine-state bucket.
#[derive(Debug, Clone)]
pub struct EngineStates {
    store: kv::Store,
}

/// One key of the bucket as stored: a driver's state, or why its value does not decode.
#[derive(Debug)]
pub struct EngineEntry {
    /// The key, `<chain>.<node>`.
    pub key: String,
    /// The decoded value.
    pub state: Result<EngineState, DecodeError>,
}

/// A change of the bucket seen by [`EngineStates::watch`].
#[derive(Debug)]
pub enum EngineChange {
    /// A key was written.
    Put(Box<EngineEntry>),
    /// A key was deleted or purged.
    Removed(String),
}

fn decode_entry(key: &str, value: &[u8]) -> EngineEntry {
    let state = EngineState::decode(value)
        .map_err(|source| DecodeError::Protobuf { len: value.len(), source });
    EngineEntry { key: key.to_owned(), state }
}

impl EngineStates {
    /// Opens the bucket, creating it with `replicas` when missing (engine-drivers).
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, BusError> {
        Ok(Self { store: ensure_engine_bucket(js, replicas).await? })
    }

    /// Opens the bucket without creating it (readers such as `lightctl`, which may not write):
    /// `None` when it does not exist yet — no driver ever started, an empty fleet.
    pub async fn open_existing(js: &jetstream::Context) -> Result<Option<Self>, BusError> {
        if let Err(e) = js.get_stream(ENGINE_BUCKET_STREAM).await {
            if let GetStreamErrorKind::JetStream(inner) = e.kind()
                && inner.error_code() == ErrorCode::STREAM_NOT_FOUND
            {
                return Ok(None);
            }
            return Err(BusError::js("look up KV bucket", Named::new(ENGINE_BUCKET, e)));
        }
        let store = js
            .get_key_value(ENGINE_BUCKET)
            .await
            .map_err(|e| BusError::js("open KV bucket", Named::new(ENGINE_BUCKET, e)))?;
        Ok(Some(Self { store }))
    }

    /// Stores one driver's state under `<chain>.<node>`; returns the KV revision.
    pub async fn put(&self, state: &EngineState) -> Result<u64, BusError> {
        check_token("node id", &state.node_id)?;
        let key = engine_key(state.chain_id, &state.node_id);
        self.store
            .put(&key, state.encode_to_vec().into())
            .await
            .map_err(|e| BusError::unavailable("KV put", Named::new(key, e)))
    }

    /// Reads one driver's state.
    pub async fn get(&self, chain_id: u64, node_id: &str) -> Result<Option<EngineState>, BusError> {
        let key = engine_key(chain_id, node_id);
        let value = self
            .store
            .get(&key)
            .await
            .map_err(|e| BusError::unavailable("KV get", Named::new(key.clone(), e)))?;
        value
            .map(|v| {
                decode_entry(&key, &v).state.map_err(|source| BusError::Decode {
                    expected: lightcl_proto::names::ENGINE_STATE,
                    subject: key.clone(),
                    sequence: 0,
                    source,
                })
            })
            .transpose()
    }

    /// Every entry (of `chain_id`, when given), sorted by key; undecodable values included.
    /// Lease keys ([`crate::LeaseStore`]) are not engine states and never listed.
    pub async fn entries(&self, chain_id: Option<u64>) -> Result<Vec<EngineEntry>, BusError> {
        let mut keys = self.store.keys().await.map_err(|e| BusError::unavailable("KV keys", e))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| BusError::unavailable("KV keys", e))?;
            if is_lease_key(&key) || chain_id.is_some_and(|c| engine_key_node(c, &key).is_none()) {
                continue;
            }
            let value = self
                .store
                .get(&key)
                .await
                .map_err(|e| BusError::unavailable("KV get", Named::new(key.clone(), e)))?;
            if let Some(value) = value {
                out.push(decode_entry(&key, &value));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Every driver state of a chain, sorted by node id (undecodable entries are skipped with
    /// a warning).
    pub async fn list(&self, chain_id: u64) -> Result<Vec<EngineState>, BusError> {
        let mut out = Vec::new();
        for entry in self.entries(Some(chain_id)).await? {
            match entry.state {
                Ok(s) => out.push(s),
                Err(e) => tracing::warn!(key = %entry.key, error = %e, "skipping engine state"),
            }
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(out)
    }

    /// The current value of every key (of `chain_id`, when given), then every change; lease
    /// keys left out.
    pub async fn watch(
        &self,
        chain_id: Option<u64>,
    ) -> Result<impl Stream<Item = Result<EngineChange, BusError>> + Send + 'static, BusError> {
        let w = self
            .store
            .watch_with_history(engine_key_filter(chain_id))
            .await
            .map_err(|e| BusError::unavailable("KV watch", e))?;
        // The lease keys (`lease.<chain>.<el>`) share the bucket: not engine states.
        Ok(w.filter_map(|entry| {
            futures::future::ready(match entry {
                Err(e) => Some(Err(BusError::unavailable("KV watch", e))),
                Ok(e) if is_lease_key(&e.key) => None,
                Ok(e) => Some(Ok(match e.operation {
                    kv::Operation::Put => {
                        EngineChange::Put(Box::new(decode_entry(&e.key, &e.value)))
                    }
                    kv::Operation::Delete | kv::Operation::Purge => EngineChange::Removed(e.key),
                })),
            })
        }))
    }

    /// Keeps one engine-driver's key equal to the newest state in `states` until `cancel`
    /// (`state_of` picks the [`EngineState`] out of the watched value): a plain put on every
    /// change, at most one per `min_interval` (changes in between are coalesced into the next
    /// put of the newest state; each attempt bounded by 2 s, retried with backoff while NATS is unavailable; the
    /// bucket is created when missing), then once more at shutdown, bounded by 1 s and only
    /// when connected. Never fails: errors are logged and retried.
    pub async fn publish_changes<S>(
        bus: &Bus,
        mut states: watch::Receiver<S>,
        state_of: impl Fn(&S) -> EngineState,
        min_interval: Duration,
        cancel: &CancellationToken,
    ) {
        let js = bus.jetstream();
        let mut retry = Retry::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut store: Option<Self> = None;
        let mut last_put: Option<EngineState> = None;
        let mut last_put_at: Option<tokio::time::Instant> = None;
        let mut stopping = false;
        loop {
            // Coalesce: wait out the minimum interval, then put the newest state.
            if let Some(at) = last_put_at.filter(|_| !stopping) {
                let due = at + min_interval;
                if due > tokio::time::Instant::now() {
                    tokio::select! {
                        () = cancel.cancelled() => stopping = true,
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
            }
            let state = state_of(&states.borrow_and_update());
            let key = engine_key(state.chain_id, &state.node_id);
            if stopping && !bus.is_connected() {
                tracing::warn!(%key, "NATS unreachable at shutdown: final engine state not published");
                return;
            }
            if last_put.as_ref() != Some(&state) {
                let put = async {
                    if store.is_none() {
                        store = Some(Self::open(&js, bus.replicas()).await?);
                    }
                    let Some(s) = &store else { return Ok(()) };
                    s.put(&state).await.map(|_| ())
                };
                // While running, a put is abandoned on shutdown; the final one gets one short
                // try.
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
                        last_put_at = Some(tokio::time::Instant::now());
                        retry.reset();
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, %key, "cannot publish the engine state; retrying");
                        store = None;
                        if stopping {
                            return;
                        }
                        tokio::select! {
                            () = cancel.cancelled() => stopping = true,
                            () = tokio::time::sleep(retry.next_delay()) => {}
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
                changed = states.changed() => if changed.is_err() { stopping = true },
            }
        }
    }
}
