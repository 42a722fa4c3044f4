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
mod kv;
mod publish;
pub mod subjects;
mod topology;

pub use config::{Bus, NatsArgs};
pub use consume::{ConsumerSpec, Delivery, StartAt, TypedConsumer};
pub use error::BusError;
pub use kv::EngineStates;
pub use publish::{
    CONTENT_TYPE_PROTOBUF, LastMessage, MESSAGE_HEADER, Published, Publisher, decode_message,
    last_message,
};
pub use topology::{StreamSpec, ensure_topology, stream_specs};

use sha2::{Digest, Sha256};

/// The `Nats-Msg-Id` of a raw status (docs/bus.md#message-ids): a hash of the chain, the source, the status
/// content and the heartbeat slot, so replicas and retries within a slot collapse to one
/// message while a heartbeat in a new slot is never swallowed by the duplicate window.
pub fn status_msg_id(
    chain_id: u64,
    source_id: &str,
    status: &lightcl_core::SyncStatus,
    heartbeat_slot: u64,
) -> String {
    let mut h = Sha256::new();
    h.update(chain_id.to_be_bytes());
    h.update((source_id.len() as u64).to_be_bytes());
    h.update(source_id.as_bytes());
    h.update(status_content_hash(status));
    h.update(heartbeat_slot.to_be_bytes());
    hex::encode(h.finalize())
}

/// A stable hash of a status's content (its protobuf encoding), for change detection.
pub fn status_content_hash(status: &lightcl_core::SyncStatus) -> [u8; 32] {
    use prost::Message;
    let encoded = lightcl_proto::v1::SyncStatus::from(status).encode_to_vec();
    Sha256::digest(&encoded).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcl_core::SyncStatus;

    #[test]
    fn status_msg_id_depends_on_every_input() {
        let s = SyncStatus::default();
        let mut s2 = s.clone();
        s2.unsafe_l2.number = 1;
        let base = status_msg_id(10, "a", &s, 5);
        assert_eq!(base, status_msg_id(10, "a", &s, 5), "deterministic");
        assert_ne!(base, status_msg_id(11, "a", &s, 5));
        assert_ne!(base, status_msg_id(10, "b", &s, 5));
        assert_ne!(base, status_msg_id(10, "a", &s2, 5));
        assert_ne!(base, status_msg_id(10, "a", &s, 6));
        assert_eq!(base.len(), 64);
    }
}
