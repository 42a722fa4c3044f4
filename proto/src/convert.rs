//! Conversions between `lightcl.v1` messages and `lightcl-core` types.

#![allow(missing_docs)]

use crate::v1;
use alloy_primitives::B256;
use lightcl_core::{BlockId, L1BlockRef, L2BlockRef, SyncStatus, Target};

/// A protobuf message that does not convert to a core type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protobuf field `{field}`: {reason}")]
pub struct ProtoError {
    /// Path of the offending field, e.g. `status.safe_l2.l1origin.hash`.
    pub field: String,
    /// What was wrong.
    pub reason: String,
}

impl ProtoError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// Reads a 32-byte hash from protobuf bytes.
pub fn hash_from_bytes(b: &[u8], field: &str) -> Result<B256, ProtoError> {
    if b.len() != 32 {
        return Err(ProtoError::new(field, format!("hash must be 32 bytes, got {}", b.len())));
    }
    Ok(B256::from_slice(b))
}

/// Reads an optional hash: empty bytes mean "none".
pub fn opt_hash_from_bytes(b: &[u8], field: &str) -> Result<Option<B256>, ProtoError> {
    if b.is_empty() { Ok(None) } else { hash_from_bytes(b, field).map(Some) }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

/// Takes a required sub-message, naming it when missing.
pub fn required<'a, T>(m: &'a Option<T>, path: &str) -> Result<&'a T, ProtoError> {
    m.as_ref().ok_or_else(|| ProtoError::new(path, "missing (required)"))
}

impl From<BlockId> for v1::BlockId {
    fn from(b: BlockId) -> Self {
        Self { hash: b.hash.to_vec(), number: b.number }
    }
}

impl From<L1BlockRef> for v1::L1BlockRef {
    fn from(b: L1BlockRef) -> Self {
        Self {
            hash: b.hash.to_vec(),
            number: b.number,
            parent_hash: b.parent_hash.to_vec(),
            timestamp: b.timestamp,
        }
    }
}

impl From<L2BlockRef> for v1::L2BlockRef {
    fn from(b: L2BlockRef) -> Self {
        Self {
            hash: b.hash.to_vec(),
            number: b.number,
            parent_hash: b.parent_hash.to_vec(),
            timestamp: b.timestamp,
            l1origin: Some(b.l1origin.into()),
            sequence_number: b.sequence_number,
        }
    }
}

impl From<&SyncStatus> for v1::SyncStatus {
    fn from(s: &SyncStatus) -> Self {
        Self {
            current_l1: Some(s.current_l1.into()),
            current_l1_finalized: s.current_l1_finalized.map(Into::into),
            head_l1: Some(s.head_l1.into()),
            safe_l1: Some(s.safe_l1.into()),
            finalized_l1: Some(s.finalized_l1.into()),
            unsafe_l2: Some(s.unsafe_l2.into()),
            safe_l2: Some(s.safe_l2.into()),
            finalized_l2: Some(s.finalized_l2.into()),
            pending_safe_l2: s.pending_safe_l2.map(Into::into),
            cross_unsafe_l2: s.cross_unsafe_l2.map(Into::into),
            local_safe_l2: s.local_safe_l2.map(Into::into),
        }
    }
}

/// Converts a `BlockId` message, `path` naming it in errors.
pub fn block_id(m: &v1::BlockId, path: &str) -> Result<BlockId, ProtoError> {
    Ok(BlockId { hash: hash_from_bytes(&m.hash, &join(path, "hash"))?, number: m.number })
}

/// Converts an `L1BlockRef` message, `path` naming it in errors.
pub fn l1_ref(m: &v1::L1BlockRef, path: &str) -> Result<L1BlockRef, ProtoError> {
    Ok(L1BlockRef {
        hash: hash_from_bytes(&m.hash, &join(path, "hash"))?,
        number: m.number,
        parent_hash: hash_from_bytes(&m.parent_hash, &join(path, "parent_hash"))?,
        timestamp: m.timestamp,
    })
}

/// Converts an `L2BlockRef` message, `path` naming it in errors.
pub fn l2_ref(m: &v1::L2BlockRef, path: &str) -> Result<L2BlockRef, ProtoError> {
    let origin_path = join(path, "l1origin");
    Ok(L2BlockRef {
        hash: hash_from_bytes(&m.hash, &join(path, "hash"))?,
        number: m.number,
        parent_hash: hash_from_bytes(&m.parent_hash, &join(path, "parent_hash"))?,
        timestamp: m.timestamp,
        l1origin: block_id(required(&m.l1origin, &origin_path)?, &origin_path)?,
        sequence_number: m.sequence_number,
    })
}

/// Converts a required `L1BlockRef` sub-message.
pub fn req_l1(m: &Option<v1::L1BlockRef>, path: &str) -> Result<L1BlockRef, ProtoError> {
    l1_ref(required(m, path)?, path)
}

/// Converts a required `L2BlockRef` sub-message.
pub fn req_l2(m: &Option<v1::L2BlockRef>, path: &str) -> Result<L2BlockRef, ProtoError> {
    l2_ref(required(m, path)?, path)
}

fn opt_l1(m: &Option<v1::L1BlockRef>, path: &str) -> Result<Option<L1BlockRef>, ProtoError> {
    m.as_ref().map(|m| l1_ref(m, path)).transpose()
}

fn opt_l2(m: &Option<v1::L2BlockRef>, path: &str) -> Result<Option<L2BlockRef>, ProtoError> {
    m.as_ref().map(|m| l2_ref(m, path)).transpose()
}

/// Converts a `SyncStatus` message, `path` naming it in errors.
pub fn sync_status(m: &v1::SyncStatus, path: &str) -> Result<SyncStatus, ProtoError> {
    let p = |n: &str| join(path, n);
    Ok(SyncStatus {
        current_l1: req_l1(&m.current_l1, &p("current_l1"))?,
        current_l1_finalized: opt_l1(&m.current_l1_finalized, &p("current_l1_finalized"))?,
        head_l1: opt_l1(&m.head_l1, &p("head_l1"))?.unwrap_or_default(),
        safe_l1: opt_l1(&m.safe_l1, &p("safe_l1"))?.unwrap_or_default(),
        finalized_l1: opt_l1(&m.finalized_l1, &p("finalized_l1"))?.unwrap_or_default(),
        unsafe_l2: req_l2(&m.unsafe_l2, &p("unsafe_l2"))?,
        safe_l2: req_l2(&m.safe_l2, &p("safe_l2"))?,
        finalized_l2: req_l2(&m.finalized_l2, &p("finalized_l2"))?,
        pending_safe_l2: opt_l2(&m.pending_safe_l2, &p("pending_safe_l2"))?,
        cross_unsafe_l2: opt_l2(&m.cross_unsafe_l2, &p("cross_unsafe_l2"))?,
        local_safe_l2: opt_l2(&m.local_safe_l2, &p("local_safe_l2"))?,
    })
}

impl TryFrom<&v1::SyncStatus> for SyncStatus {
    type Error = ProtoError;
    fn try_from(m: &v1::SyncStatus) -> Result<Self, ProtoError> {
        sync_status(m, "")
    }
}

impl v1::RawStatus {
    /// The carried status as a core type.
    pub fn core_status(&self) -> Result<SyncStatus, ProtoError> {
        sync_status(required(&self.status, "status")?, "status")
    }
}

impl v1::Target {
    /// Builds the bus message for a core target; evidence, sources and timings start empty.
    pub fn from_core(t: &Target) -> Self {
        Self {
            chain_id: t.chain_id,
            revision: t.revision,
            unsafe_l2: Some(t.unsafe_l2.into()),
            safe_l2: Some(t.safe_l2.into()),
            local_safe_l2: Some(t.local_safe_l2.into()),
            finalized_l2: Some(t.finalized_l2.into()),
            current_l1: Some(t.current_l1.into()),
            ..Default::default()
        }
    }

    /// The carried target as a core type; every ref is required.
    pub fn to_core(&self) -> Result<Target, ProtoError> {
        Ok(Target {
            chain_id: self.chain_id,
            revision: self.revision,
            unsafe_l2: req_l2(&self.unsafe_l2, "unsafe_l2")?,
            safe_l2: req_l2(&self.safe_l2, "safe_l2")?,
            local_safe_l2: req_l2(&self.local_safe_l2, "local_safe_l2")?,
            finalized_l2: req_l2(&self.finalized_l2, "finalized_l2")?,
            current_l1: req_l1(&self.current_l1, "current_l1")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn h(b: u8) -> B256 {
        B256::repeat_byte(b)
    }

    fn l2(n: u64, b: u8) -> L2BlockRef {
        L2BlockRef {
            hash: h(b),
            number: n,
            parent_hash: h(b.wrapping_add(1)),
            timestamp: 1000 + n,
            l1origin: BlockId { hash: h(b.wrapping_add(2)), number: n / 2 },
            sequence_number: n % 3,
        }
    }

    fn status() -> SyncStatus {
        let l1 =
            |n, b| L1BlockRef { hash: h(b), number: n, parent_hash: h(b ^ 0xff), timestamp: n };
        SyncStatus {
            current_l1: l1(50, 1),
            current_l1_finalized: None,
            head_l1: l1(52, 2),
            safe_l1: l1(45, 3),
            finalized_l1: l1(40, 4),
            unsafe_l2: l2(100, 10),
            safe_l2: l2(90, 20),
            finalized_l2: l2(80, 30),
            pending_safe_l2: None,
            cross_unsafe_l2: Some(l2(100, 10)),
            local_safe_l2: Some(l2(95, 40)),
        }
    }

    #[test]
    fn sync_status_round_trips_through_bytes() {
        let s = status();
        let raw = v1::RawStatus {
            chain_id: 10,
            source_id: "src".into(),
            observed_at_ms: 1,
            poll_seq: 2,
            status: Some((&s).into()),
        };
        let decoded = v1::RawStatus::decode(raw.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.core_status().unwrap(), s);
    }

    #[test]
    fn short_hash_is_rejected_with_its_path() {
        let mut m: v1::SyncStatus = (&status()).into();
        m.safe_l2.as_mut().unwrap().l1origin.as_mut().unwrap().hash = vec![1; 31];
        let e = SyncStatus::try_from(&m).unwrap_err();
        assert_eq!(e.field, "safe_l2.l1origin.hash");
        assert!(e.reason.contains("32 bytes"));
    }

    #[test]
    fn missing_required_ref_is_rejected_with_its_path() {
        for name in ["current_l1", "unsafe_l2", "safe_l2", "finalized_l2"] {
            let mut m: v1::SyncStatus = (&status()).into();
            match name {
                "current_l1" => m.current_l1 = None,
                "unsafe_l2" => m.unsafe_l2 = None,
                "safe_l2" => m.safe_l2 = None,
                _ => m.finalized_l2 = None,
            }
            let e = SyncStatus::try_from(&m).unwrap_err();
            assert_eq!(e.field, name);
        }
        let raw = v1::RawStatus::default();
        assert_eq!(raw.core_status().unwrap_err().field, "status");
    }

    #[test]
    fn missing_optional_refs_stay_missing() {
        let mut m: v1::SyncStatus = (&status()).into();
        m.local_safe_l2 = None;
        m.head_l1 = None;
        let s = SyncStatus::try_from(&m).unwrap();
        assert!(s.local_safe_l2.is_none());
        assert!(s.head_l1.is_unset());
    }

    #[test]
    fn target_round_trips_and_requires_every_ref() {
        let s = status();
        let t = Target {
            chain_id: 10,
            revision: 7,
            unsafe_l2: s.unsafe_l2,
            safe_l2: s.safe_l2,
            local_safe_l2: s.local_safe(),
            finalized_l2: s.finalized_l2,
            current_l1: s.current_l1,
        };
        let m = v1::Target::from_core(&t);
        let back = v1::Target::decode(m.encode_to_vec().as_slice()).unwrap().to_core().unwrap();
        assert_eq!(back, t);
        let mut m2 = m.clone();
        m2.finalized_l2 = None;
        assert_eq!(m2.to_core().unwrap_err().field, "finalized_l2");
        let mut m3 = m;
        m3.current_l1.as_mut().unwrap().parent_hash = vec![];
        assert_eq!(m3.to_core().unwrap_err().field, "current_l1.parent_hash");
    }

    #[test]
    fn garbage_bytes_fail_to_decode_without_panicking() {
        let garbage = [0xffu8, 0xff, 0xff, 0x01, 0x02];
        assert!(v1::Target::decode(garbage.as_slice()).is_err());
    }
}
