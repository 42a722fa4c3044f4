//! Streams and the KV bucket, created idempotently.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use crate::BusError;
use crate::error::Named;
use crate::subjects::{
    ENGINE_BUCKET, REJECTED_STREAM, REJECTED_SUBJECTS, STATUS_STREAM, STATUS_SUBJECTS,
    TARGET_SUBJECTS, TARGETS_STREAM,
};

/// One stream's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Stream name.
    pub name: &'static str,
    /// Subjects it captures.
    pub subjects: &'static str,
    /// Maximum age of a message.
    pub max_age: Duration,
    /// Messages kept per subject (-1: unlimited).
    pub max_per_subject: i64,
}

/// Duplicate window of every stream (JetStream default).
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The streams of docs/bus.md#streams.
pub fn stream_specs() -> [StreamSpec; 3] {
    [
        StreamSpec {
            name: STATUS_STREAM,
            subjects: STATUS_SUBJECTS,
            max_age: Duration::from_secs(3600),
            max_per_subject: -1,
        },
        StreamSpec {
            name: TARGETS_STREAM,
            subjects: TARGET_SUBJECTS,
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_per_subject: 10_000,
        },
        StreamSpec {
            name: REJECTED_STREAM,
            subjects: REJECTED_SUBJECTS,
            max_age: Duration::from_secs(3600),
            max_per_subject: 1_000,
        },
    ]
}

fn stream_config(spec: &StreamSpec, replicas: usize) -> stream::Config {
    stream::Config {
        name: spec.name.to_owned(),
        subjects: vec![spec.subjects.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: spec.max_age,
        max_messages_per_subject: spec.max_per_subject,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the streams and the `lightcl-engine` bucket when missing; safe to call from many
/// services at once. An existing stream is left as it is (an operator may have tuned it).
pub async fn ensure_topology(js: &jetstream::Context, replicas: usize) -> Result<(), BusError> {
    for spec in stream_specs() {
        js.get_or_create_stream(stream_config(&spec, replicas))
            .await
            .map_err(|e| BusError::js("create stream", Named::new(spec.name, e)))?;
    }
    ensure_engine_bucket(js, replicas).await?;
    Ok(())
}

/// Opens (creating if needed) the engine-state bucket.
pub(crate) async fn ensure_engine_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    if let Ok(store) = js.get_key_value(ENGINE_BUCKET).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: ENGINE_BUCKET.to_owned(),
            history: 5,
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Lost a creation race: open the winner's bucket.
        Err(e) => js
            .get_key_value(ENGINE_BUCKET)
            .await
            .map_err(|_| BusError::js("create KV bucket", Named::new(ENGINE_BUCKET, e))),
    }
}
