//! # lightcl-bus
//!
//! The NATS JetStream side of lightcl (docs/bus.md): subject and stream names, idempotent
//! topology, deduplicated publishing, typed durable consumers and the engine-state KV bucket.
//!
//! What it decides and guarantees:
//! - **Topology** ([`ensure_topology`]) is created idempotently by whichever service starts
//!   first; replicas are configurable (1 locally, 3 in a cluster).
//! - **Publishing** ([`Publisher`]) awaits the PubAck under a timeout and retries with the *same*
//!   `Nats-Msg-Id`, so a retry never stores a second copy. A CAS publish
//!   ([`Publisher::publish_expecting`]) uses `Nats-Expected-Last-Subject-Sequence`: two writers
//!   racing on one subject cannot both succeed ([`BusError::WrongLastSequence`]).
//! - **Consuming** ([`TypedConsumer`]) yields decoded protobuf messages with their stream
//!   sequence and trace context. A message that does not decode is acked, counted and logged
//!   with its subject and sequence — never an error that stops the stream. Consumers keep
//!   working across a NATS restart (they are re-created when the server forgets them).
//!   [`LatestConsumer`] follows the newest message of one subject, converted to its core type
//!   ([`lightcl_proto::FromWire`]), and is re-created from the newest message after every
//!   reconnect ([`Bus::connection`]).
//! - **Names and ids** are defined once: subjects, streams, the bucket, its keys and consumer
//!   names in [`subjects`], every `Nats-Msg-Id` in [`ids`].
//! - **Engine states** ([`EngineStates`]): drivers write their key, `lightctl` reads the fleet.
//! - **Single-writer leases** ([`LeaseStore`]): one compare-and-set key per execution client in
//!   the same bucket, `lease.<chain>.<el_id>` ([`el_lease_id`]: derived from the EL's JWT secret).
//! - Every payload is protobuf with `Content-Type: application/x-protobuf` and
//!   `Lightcl-Message: <message name>`; W3C `traceparent`/`tracestate` ride in the headers.
//!
//! ```no_run
//! # async fn demo(args: lightcl_bus::NatsArgs) -> Result<(), lightcl_bus::BusError> {
//! use lightcl_bus::{Bus, Publisher, subjects};
//! let bus = Bus::connect(&args, "lightcl-poller").await?; // never fails because NATS is down
//! bus.ensure_topology().await?;                         // retry this while it fails
//! let publisher = Publisher::new(bus.jetstream(), args.publish_timeout);
//! let msg = lightcl_proto::v1::RawStatus::default();
//! let ack = publisher
//!     .publish(&subjects::status(10, "src"), lightcl_proto::names::RAW_STATUS, &msg, Some("id"))
//!     .await?;
//! # let _ = ack; Ok(()) }
//! ```

mod config;
mod consume;
mod error;
pub mod ids;
mod kv;
mod latest;
mod lease;
mod publish;
mod retry;
pub mod subjects;
mod topology;

pub use config::{Bus, ConnectionState, NatsArgs};
pub use consume::{ConsumerSpec, CoreCopies, Delivery, StartAt, TypedConsumer};
pub use error::{BoxError, BusError, ConfigProblem, DecodeError, Named, NoPubAck};
pub use ids::{rejection_msg_id, status_content_hash, status_msg_id, target_msg_id};
pub use kv::{EngineChange, EngineEntry, EngineStates};
pub use latest::{Latest, LatestConsumer};
pub use lease::{LeaseEntry, LeaseStore, LeaseValue, el_lease_id};
pub use publish::{
    CONTENT_TYPE_PROTOBUF, LastMessage, MESSAGE_HEADER, NewestValid, Published, Publisher,
    RecentValid, decode_message, decode_typed, last_message, newest_valid, recent_valid,
    trace_headers,
};
pub use topology::{StreamSpec, ensure_topology, stream_specs};
