//! The single-writer lease keys of the `lightcl-engine` bucket
//! (docs/architecture.md#single-writer): one key `lease.<chain>.<el_id>` per execution client,
//! written only with compare-and-set. What to write and when is decided by
//! [`lightcl_core::lease::Lease`]; [`LeaseStore`] only reads, writes and watches the key.

use async_nats::jetstream::{self, kv};
use futures::{Stream, StreamExt};
use lightcl_proto::v1::EngineLease;
use prost::Message;
use sha2::{Digest, Sha256};

use crate::BusError;
use crate::error::{DecodeError, Named};
use crate::subjects::lease_key;
use crate::topology::ensure_engine_bucket;

/// Domain separation of [`el_lease_id`] (a new version changes every EL's id).
const EL_ID_DOMAIN: &[u8] = b"lightcl-lease-v1";

/// The EL identity of a lease: the first 16 hex characters (64 bits) of
/// `sha256("lightcl-lease-v1" || secret)`, `secret` the EL's JWT secret (32 bytes).
///
/// The JWT secret is what makes an Engine API endpoint one EL's: two drivers configured for the
/// same EL share it whatever their node ids, URLs (`localhost` or a service name) or hosts, so
/// they contend for one key. Two ELs configured with the same secret share a lease too (one of
/// their drivers stays on standby): safe, but give every EL its own secret. The id reveals
/// nothing usable about the secret (a truncated hash of 256 random bits).
pub fn el_lease_id(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(EL_ID_DOMAIN);
    h.update(secret);
    let digest = h.finalize();
    hex::encode(&digest[..8])
}

/// What the lease key holds at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseValue {
    /// A holder's value.
    Held(EngineLease),
    /// A value that does not decode (still a revision: someone holds the key).
    Undecodable(String),
    /// Deleted or purged (a holder released it).
    Removed,
}

/// The lease key as read (a get or a watch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseEntry {
    /// The KV revision (stream sequence) of this value.
    pub revision: u64,
    /// The value.
    pub value: LeaseValue,
}

impl LeaseEntry {
    /// The holder's instance id, `None` when removed; an undecodable value is held by an
    /// unknown holder (`"?"`).
    pub fn holder(&self) -> Option<&str> {
        match &self.value {
            LeaseValue::Held(l) => Some(&l.holder),
            LeaseValue::Undecodable(_) => Some("?"),
            LeaseValue::Removed => None,
        }
    }

    fn from_kv(revision: u64, operation: kv::Operation, value: &[u8]) -> Self {
        let value = match operation {
            kv::Operation::Delete | kv::Operation::Purge => LeaseValue::Removed,
            kv::Operation::Put => match EngineLease::decode(value) {
                Ok(l) => LeaseValue::Held(l),
                Err(source) => LeaseValue::Undecodable(
                    DecodeError::Protobuf { len: value.len(), source }.to_string(),
                ),
            },
        };
        Self { revision, value }
    }
}

/// One EL's lease key in the `lightcl-engine` bucket.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    store: kv::Store,
    key: String,
}

impl LeaseStore {
    /// Opens the bucket (created with `replicas` when missing, as [`crate::EngineStates::open`])
    /// for the lease of EL `el_id` ([`el_lease_id`]) of `chain_id`.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        chain_id: u64,
        el_id: &str,
    ) -> Result<Self, BusError> {
        let store = ensure_engine_bucket(js, replicas).await?;
        Ok(Self { store, key: lease_key(chain_id, el_id) })
    }

    /// The key, `lease.<chain>.<el_id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The key's newest value (`None`: never written).
    pub async fn get(&self) -> Result<Option<LeaseEntry>, BusError> {
        let entry = self
            .store
            .entry(self.key.clone())
            .await
            .map_err(|e| BusError::unavailable("KV get", Named::new(self.key.clone(), e)))?;
        Ok(entry.map(|e| LeaseEntry::from_kv(e.revision, e.operation, &e.value)))
    }

    /// Writes `value` if the key is still at revision `expect` (0: absent, never written or
    /// removed); returns the new revision. Someone else's write in between is
    /// [`BusError::WrongLastSequence`] and nothing is stored.
    pub async fn write(&self, value: &EngineLease, expect: u64) -> Result<u64, BusError> {
        let bytes = value.encode_to_vec().into();
        let lost = || BusError::WrongLastSequence { subject: self.key.clone(), expected: expect };
        if expect == 0 {
            self.store.create(&self.key, bytes).await.map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => lost(),
                _ => BusError::unavailable("KV create", Named::new(self.key.clone(), e)),
            })
        } else {
            self.store.update(&self.key, bytes, expect).await.map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => lost(),
                _ => BusError::unavailable("KV update", Named::new(self.key.clone(), e)),
            })
        }
    }

    /// Deletes the key if it is still at `revision` (a holder releasing its lease at shutdown,
    /// so that a standby need not wait for it to expire).
    pub async fn release(&self, revision: u64) -> Result<(), BusError> {
        self.store.delete_expect_revision(&self.key, Some(revision)).await.map_err(|e| {
            match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => {
                    BusError::WrongLastSequence { subject: self.key.clone(), expected: revision }
                }
                _ => BusError::unavailable("KV delete", Named::new(self.key.clone(), e)),
            }
        })
    }

    /// Every holder's value the key's history still keeps (the bucket keeps a few revisions
    /// per key), oldest first; values that do not decode are left out. After a release deleted
    /// the key, the value before the delete is here: a driver taking the key over reads what
    /// the released holder stored (its EL's INVALID heads) before it writes.
    pub async fn held_history(&self) -> Result<Vec<EngineLease>, BusError> {
        let history =
            self.store.history(&self.key).await.map_err(|e| {
                BusError::unavailable("KV history", Named::new(self.key.clone(), e))
            })?;
        let entries: Vec<_> = history.collect().await;
        let mut out = Vec::new();
        for e in entries {
            let e = e.map_err(|e| BusError::unavailable("KV history", e))?;
            if e.operation == kv::Operation::Put
                && let Ok(l) = EngineLease::decode(e.value.as_ref())
            {
                out.push(l);
            }
        }
        Ok(out)
    }

    /// The key's current value (when there is one), then every change, in revision order.
    pub async fn watch(
        &self,
    ) -> Result<impl Stream<Item = Result<LeaseEntry, BusError>> + Send + 'static, BusError> {
        let w = self
            .store
            .watch_with_history(&self.key)
            .await
            .map_err(|e| BusError::unavailable("KV watch", Named::new(self.key.clone(), e)))?;
        Ok(w.map(|entry| {
            let e = entry.map_err(|e| BusError::unavailable("KV watch", e))?;
            Ok(LeaseEntry::from_kv(e.revision, e.operation, &e.value))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_el_id_depends_on_the_secret_only() {
        let a = el_lease_id(&[1u8; 32]);
        assert_eq!(a, el_lease_id(&[1u8; 32]), "deterministic");
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, el_lease_id(&[2u8; 32]));
        // sha256("lightcl-lease-v1" || 0x01 * 32), first 8 bytes: pinned, the id is a contract
        // (a changed derivation would let an old and a new driver drive one EL together).
        let mut h = Sha256::new();
        h.update(b"lightcl-lease-v1");
        h.update([1u8; 32]);
        assert_eq!(a, hex::encode(&h.finalize()[..8]));
        assert!(crate::subjects::check_token("el id", &a).is_ok());
    }

    #[test]
    fn entries_name_their_holder() {
        let held = LeaseEntry::from_kv(
            3,
            kv::Operation::Put,
            &EngineLease { holder: "n1-ab".into(), ..Default::default() }.encode_to_vec(),
        );
        assert_eq!((held.revision, held.holder()), (3, Some("n1-ab")));
        let removed = LeaseEntry::from_kv(4, kv::Operation::Delete, &[]);
        assert_eq!(removed.holder(), None);
        let garbage = LeaseEntry::from_kv(5, kv::Operation::Put, &[0xff, 0xff, 0xff]);
        assert!(matches!(garbage.value, LeaseValue::Undecodable(_)));
        assert_eq!(garbage.holder(), Some("?"));
    }
}
