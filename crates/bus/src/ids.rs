//! Every `Nats-Msg-Id` (docs/bus.md#message-ids), so a retry, a redelivery or a second replica
//! never stores a second copy within the duplicate window.

use alloy_primitives::keccak256;
use lightcl_core::{SyncStatus, Target};
use prost::Message;
use sha2::{Digest, Sha256};

/// The id of a raw status: a hash of the chain, the source, the status content and the
/// heartbeat slot, so replicas and retries within a slot collapse to one message while a
/// heartbeat in a new slot is never swallowed by the duplicate window.
pub fn status_msg_id(
    chain_id: u64,
    source_id: &str,
    status: &SyncStatus,
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
pub fn status_content_hash(status: &SyncStatus) -> [u8; 32] {
    let encoded = lightcl_proto::v1::SyncStatus::from(status).encode_to_vec();
    Sha256::digest(&encoded).into()
}

/// The id of a target: `target-<chain>-<revision>-<hash>`, `<hash>` the 0x-hex keccak-256 of
/// the protobuf encoding of the target's position and heads alone (chain id, epoch, revision,
/// the refs; no evidence, sources or times). A
/// retried publish of the same decision is a duplicate; a different target at the same
/// revision (another replica's decision) is not, and is stopped by the compare-and-set.
pub fn target_msg_id(target: &Target) -> String {
    let heads = lightcl_proto::v1::Target::from_core(target).encode_to_vec();
    format!("target-{}-{}-{}", target.chain_id, target.revision, keccak256(heads))
}

/// The id of a rejection: `rejected-<chain>-<stream sequence of the rejected status>`, so a
/// redelivered status that is rejected again maps to the same id.
pub fn rejection_msg_id(chain_id: u64, status_sequence: u64) -> String {
    format!("rejected-{chain_id}-{status_sequence}")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn target_msg_id_covers_the_heads_only() {
        let t = Target { chain_id: 10, revision: 7, ..Target::default() };
        let id = target_msg_id(&t);
        let hash = keccak256(lightcl_proto::v1::Target::from_core(&t).encode_to_vec());
        assert_eq!(id, format!("target-10-7-{hash}"));
        assert!(id.starts_with("target-10-7-0x") && id.len() == "target-10-7-0x".len() + 64);
        let mut other = t;
        other.safe_l2.number = 1;
        assert_ne!(target_msg_id(&other), id, "another decision at the same revision");
    }

    #[test]
    fn rejection_msg_id_is_the_status_sequence() {
        assert_eq!(rejection_msg_id(10, 42), "rejected-10-42");
    }
}
