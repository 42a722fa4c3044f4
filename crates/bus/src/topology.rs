//! Streams and the KV bucket, created idempotently; an existing one whose settings differ
//! from the configured ones is updated to them (docs/bus.md#streams).

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
    /// Maximum age of a message (zero: no age limit).
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
            // No age limit: the newest target is the validator's state and must never expire
            // (docs/bus.md#target-revisions); the per-subject limit bounds the history.
            max_age: Duration::ZERO,
            max_per_subject: 1_000,
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

/// KV bucket history (values kept per key).
pub const ENGINE_HISTORY: i64 = 5;

/// The settings an existing stream must converge to: `wanted`'s replicas, limits, duplicate
/// window, direct get and subjects over everything else of `current` (None: already equal).
pub fn converged(current: &stream::Config, wanted: &stream::Config) -> Option<stream::Config> {
    let mut next = current.clone();
    next.subjects.clone_from(&wanted.subjects);
    next.max_age = wanted.max_age;
    next.max_messages_per_subject = wanted.max_messages_per_subject;
    next.duplicate_window = wanted.duplicate_window;
    next.num_replicas = wanted.num_replicas;
    next.allow_direct = wanted.allow_direct;
    (next != *current).then_some(next)
}

/// Creates the streams and the `lightcl-engine` bucket when missing; safe to call from many
/// services at once. An existing stream or bucket whose replicas, limits, duplicate window or
/// subjects differ from the configured ones is updated; when the server refuses (e.g. more
/// replicas than a single server has), the reason is logged at error level and the existing
/// settings stay in use.
pub async fn ensure_topology(js: &jetstream::Context, replicas: usize) -> Result<(), BusError> {
    for spec in stream_specs() {
        let wanted = stream_config(&spec, replicas);
        let mut stream = js
            .get_or_create_stream(wanted.clone())
            .await
            .map_err(|e| BusError::js("create stream", Named::new(spec.name, e)))?;
        let info = stream
            .info()
            .await
            .map_err(|e| BusError::js("stream info", Named::new(spec.name, e)))?;
        converge(js, &info.config, &wanted).await;
    }
    ensure_engine_bucket(js, replicas).await?;
    Ok(())
}

/// Updates an existing stream to `wanted` when its settings differ; logs why not otherwise.
async fn converge(js: &jetstream::Context, current: &stream::Config, wanted: &stream::Config) {
    let Some(next) = converged(current, wanted) else { return };
    let (name, from, to) = (&current.name, describe(current), describe(&next));
    match js.update_stream(&next).await {
        Ok(_) => {
            tracing::warn!(stream = %name, from = %from, to = %to, "stream settings updated to the configured ones")
        }
        Err(e) => tracing::error!(
            stream = %name,
            from = %from,
            to = %to,
            error = %e,
            "stream settings differ from the configured ones and cannot be updated; the existing settings stay in use (fix the stream or --nats.replicas)"
        ),
    }
}

fn describe(c: &stream::Config) -> String {
    format!(
        "replicas={} max_age={:?} max_msgs_per_subject={} duplicate_window={:?} allow_direct={} subjects={:?}",
        c.num_replicas,
        c.max_age,
        c.max_messages_per_subject,
        c.duplicate_window,
        c.allow_direct,
        c.subjects
    )
}

/// Opens (creating if needed) the engine-state bucket.
pub(crate) async fn ensure_engine_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, BusError> {
    if let Ok(store) = js.get_key_value(ENGINE_BUCKET).await {
        converge_engine_bucket(js, replicas).await;
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: ENGINE_BUCKET.to_owned(),
            history: ENGINE_HISTORY,
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

/// Updates the bucket's stream (`KV_<bucket>`) when its replicas or history differ.
async fn converge_engine_bucket(js: &jetstream::Context, replicas: usize) {
    let name = format!("KV_{ENGINE_BUCKET}");
    let current = match js.get_stream(&name).await {
        Ok(mut s) => match s.info().await {
            Ok(info) => info.config.clone(),
            Err(e) => {
                tracing::error!(stream = %name, error = %e, "cannot read the KV bucket's settings");
                return;
            }
        },
        Err(e) => {
            tracing::error!(stream = %name, error = %e, "cannot read the KV bucket's settings");
            return;
        }
    };
    let wanted = stream::Config {
        num_replicas: replicas,
        max_messages_per_subject: ENGINE_HISTORY,
        ..current.clone()
    };
    converge(js, &current, &wanted).await;
}
