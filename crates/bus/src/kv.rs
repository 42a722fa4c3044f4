//! The `lightcl-engine` KV bucket: what each engine-driver applied.

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use lightcl_proto::v1::EngineState;
use prost::Message;

use crate::BusError;
use crate::subjects::engine_key;
use crate::topology::ensure_engine_bucket;

/// Access to the engine-state bucket.
#[derive(Debug, Clone)]
pub struct EngineStates {
    store: kv::Store,
}

impl EngineStates {
    /// Opens the bucket, creating it with `replicas` when missing.
    pub async fn open(js: &jetstream::Context, replicas: usize) -> Result<Self, BusError> {
        Ok(Self { store: ensure_engine_bucket(js, replicas).await? })
    }

    /// Stores one driver's state under `<chain>.<node>`; returns the KV revision.
    pub async fn put(&self, state: &EngineState) -> Result<u64, BusError> {
        crate::subjects::check_token("node id", &state.node_id)?;
        let key = engine_key(state.chain_id, &state.node_id);
        self.store
            .put(&key, state.encode_to_vec().into())
            .await
            .map_err(|e| BusError::Unavailable { what: "KV put", reason: e.to_string() })
    }

    /// Reads one driver's state.
    pub async fn get(&self, chain_id: u64, node_id: &str) -> Result<Option<EngineState>, BusError> {
        let key = engine_key(chain_id, node_id);
        let value = self
            .store
            .get(&key)
            .await
            .map_err(|e| BusError::Unavailable { what: "KV get", reason: e.to_string() })?;
        value
            .map(|v| {
                EngineState::decode(v.as_ref()).map_err(|e| BusError::Decode {
                    expected: lightcl_proto::names::ENGINE_STATE,
                    subject: key.clone(),
                    sequence: 0,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// Every driver state of a chain (undecodable entries are skipped with a warning).
    pub async fn list(&self, chain_id: u64) -> Result<Vec<EngineState>, BusError> {
        let prefix = format!("{chain_id}.");
        let mut keys = self
            .store
            .keys()
            .await
            .map_err(|e| BusError::Unavailable { what: "KV keys", reason: e.to_string() })?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key =
                key.map_err(|e| BusError::Unavailable { what: "KV keys", reason: e.to_string() })?;
            let Some(node) = key.strip_prefix(&prefix) else { continue };
            match self.get(chain_id, node).await {
                Ok(Some(s)) => out.push(s),
                Ok(None) => {}
                Err(e) => tracing::warn!(%key, error = %e, "skipping engine state"),
            }
        }
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(out)
    }
}
