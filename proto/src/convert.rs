//! Conversions between `lightcl.v1` messages and `lightcl-core` types.

#![allow(missing_docs)]

use crate::{names, v1};
use alloy_primitives::B256;
use lightcl_core::engine::{EngineSnapshot, FcuAnswer, Phase};
use lightcl_core::revision::Position;
use lightcl_core::validate::{Accepted, L1Evidence, RejectReason, Rejection};
use lightcl_core::{BlockId, L1BlockRef, L1View, L2BlockRef, SyncStatus, Target};

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
    /// The bus message of one poll of `source_id`: the status as read, when the poll returned
    /// (`observed_at_ms`) and the poller's sequence number of the poll.
    pub fn from_core(
        chain_id: u64,
        source_id: &str,
        status: &SyncStatus,
        observed_at_ms: u64,
        poll_seq: u64,
    ) -> Self {
        Self {
            chain_id,
            source_id: source_id.to_owned(),
            observed_at_ms,
            poll_seq,
            status: Some(status.into()),
        }
    }

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
            epoch: t.epoch,
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
            epoch: self.epoch,
            revision: self.revision,
            unsafe_l2: req_l2(&self.unsafe_l2, "unsafe_l2")?,
            safe_l2: req_l2(&self.safe_l2, "safe_l2")?,
            local_safe_l2: req_l2(&self.local_safe_l2, "local_safe_l2")?,
            finalized_l2: req_l2(&self.finalized_l2, "finalized_l2")?,
            current_l1: req_l1(&self.current_l1, "current_l1")?,
        })
    }
}

/// A ref as an optional field: an unset (all-zero) ref is left absent.
fn set_l1(r: L1BlockRef) -> Option<v1::L1BlockRef> {
    (!r.is_unset()).then(|| r.into())
}

/// An [`L1View`] from its three optional fields; `None` when `head` is absent or unset (a
/// message of a version without the fields). A present field that does not convert is an
/// error naming it.
fn l1_view(
    head: &Option<v1::L1BlockRef>,
    safe: &Option<v1::L1BlockRef>,
    finalized: &Option<v1::L1BlockRef>,
) -> Result<Option<L1View>, ProtoError> {
    let Some(head) = opt_l1(head, "head_l1")?.filter(|h| !h.is_unset()) else {
        return Ok(None);
    };
    Ok(Some(L1View {
        head,
        safe: opt_l1(safe, "safe_l1")?.unwrap_or_default(),
        finalized: opt_l1(finalized, "finalized_l1")?.unwrap_or_default(),
    }))
}

impl v1::Target {
    /// Sets the validator's L1 view (`head_l1`, `safe_l1`, `finalized_l1`; unset refs absent).
    pub fn set_l1_view(&mut self, v: &L1View) {
        self.head_l1 = set_l1(v.head);
        self.safe_l1 = set_l1(v.safe);
        self.finalized_l1 = set_l1(v.finalized);
    }

    /// The validator's L1 view carried with the target; `None` on a target without `head_l1`.
    pub fn l1_view(&self) -> Result<Option<L1View>, ProtoError> {
        l1_view(&self.head_l1, &self.safe_l1, &self.finalized_l1)
    }
}

/// A message as its bus readers use it: the protobuf message on the wire, its full name (the
/// `Lightcl-Message` header) and the strict conversion every reader applies. A message that
/// does not decode or convert is poison, never a silently zeroed value.
pub trait FromWire: Sized {
    /// The protobuf message on the wire.
    type Wire: prost::Message + Default;
    /// Its full name, e.g. `lightcl.v1.Target` (see [`crate::names`]).
    const NAME: &'static str;
    /// Converts a decoded message; an error names the offending field.
    fn from_wire(wire: Self::Wire) -> Result<Self, ProtoError>;
}

impl FromWire for Target {
    type Wire = v1::Target;
    const NAME: &'static str = names::TARGET;
    fn from_wire(wire: v1::Target) -> Result<Self, ProtoError> {
        wire.to_core()
    }
}

/// A target as the engine-drivers follow it: the core target and when a poll observed its
/// heads (`observed_at_ms`, 0 when unknown), for the end-to-end lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUpdate {
    /// The target.
    pub target: Target,
    /// Wall-clock ms of the poll that observed these heads (0 when unknown).
    pub observed_at_ms: u64,
    /// The validator's L1 view at validation time (`None` from validators without it).
    pub l1: Option<L1View>,
}

impl FromWire for TargetUpdate {
    type Wire = v1::Target;
    const NAME: &'static str = names::TARGET;
    fn from_wire(wire: v1::Target) -> Result<Self, ProtoError> {
        Ok(Self {
            target: wire.to_core()?,
            observed_at_ms: wire.observed_at_ms,
            l1: wire.l1_view()?,
        })
    }
}

/// A source's status as the validator's vote window reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStatus {
    /// Chain id the poller stamped on it.
    pub chain_id: u64,
    /// The source.
    pub source_id: String,
    /// Wall-clock ms of the poll.
    pub observed_at_ms: u64,
    /// The status.
    pub status: SyncStatus,
}

impl FromWire for SourceStatus {
    type Wire = v1::RawStatus;
    const NAME: &'static str = names::RAW_STATUS;
    fn from_wire(wire: v1::RawStatus) -> Result<Self, ProtoError> {
        let status = wire.core_status()?;
        Ok(Self {
            chain_id: wire.chain_id,
            source_id: wire.source_id,
            observed_at_ms: wire.observed_at_ms,
            status,
        })
    }
}

impl From<&L1Evidence> for v1::L1Evidence {
    fn from(e: &L1Evidence) -> Self {
        Self {
            checked: e.checked.iter().map(|b| (*b).into()).collect(),
            l1_head: Some(e.l1_head.into()),
            l1_finalized: Some(e.l1_finalized.into()),
        }
    }
}

impl v1::Target {
    /// The bus message of an accepted status: the target with its evidence and sources, the
    /// time the status was observed and the time it was validated.
    /// The validator's L1 view (`head_l1`, `safe_l1`, `finalized_l1`) comes from the same
    /// L1 batch as the evidence.
    pub fn from_accepted(a: &Accepted, observed_at_ms: u64, validated_at_ms: u64) -> Self {
        let mut m = Self {
            evidence: Some((&a.evidence).into()),
            source_ids: a.source_ids.clone(),
            l1_retreat: a.retreat,
            observed_at_ms,
            validated_at_ms,
            ..Self::from_core(&a.target)
        };
        m.set_l1_view(&a.evidence.view);
        m
    }
}

impl From<RejectReason> for v1::RejectionReason {
    fn from(r: RejectReason) -> Self {
        use v1::RejectionReason as P;
        match r {
            RejectReason::MissingRef => P::MissingRef,
            RejectReason::BadOrdering => P::BadOrdering,
            RejectReason::SourceNotReady => P::SourceNotReady,
            RejectReason::L1NotFound => P::L1NotFound,
            RejectReason::L1Mismatch => P::L1Mismatch,
            RejectReason::L1Unavailable => P::L1Unavailable,
            RejectReason::FinalizedRegression => P::FinalizedRegression,
            RejectReason::FinalizedConflict => P::FinalizedConflict,
            RejectReason::SafeReplay => P::SafeReplay,
            RejectReason::StatusReplay => P::StatusReplay,
            RejectReason::NoQuorum => P::NoQuorum,
            RejectReason::WrongChain => P::WrongChain,
        }
    }
}

impl TryFrom<v1::RejectionReason> for RejectReason {
    type Error = ProtoError;
    fn try_from(r: v1::RejectionReason) -> Result<Self, ProtoError> {
        RejectReason::ALL.into_iter().find(|c| v1::RejectionReason::from(*c) == r).ok_or_else(
            || ProtoError::new("reason", format!("{} has no core reason", r.as_str_name())),
        )
    }
}

impl v1::Rejection {
    /// The bus message of a rejected raw status: the status as received, the rule's reason
    /// and the ref, number and hashes it names.
    pub fn from_core(raw: &v1::RawStatus, r: &Rejection, rejected_at_ms: u64) -> Self {
        Self {
            chain_id: raw.chain_id,
            source_id: raw.source_id.clone(),
            poll_seq: raw.poll_seq,
            status: raw.status.clone(),
            reason: v1::RejectionReason::from(r.reason) as i32,
            message: r.message.clone(),
            ref_name: r.ref_name.map(|n| n.as_str().to_owned()).unwrap_or_default(),
            number: r.number,
            expected_hash: r.expected.map(|h| h.to_vec()).unwrap_or_default(),
            actual_hash: r.actual.map(|h| h.to_vec()).unwrap_or_default(),
            rejected_at_ms,
        }
    }
}

impl From<Phase> for v1::SyncPhase {
    fn from(p: Phase) -> Self {
        match p {
            Phase::Starting => Self::Unspecified,
            Phase::InitialSync => Self::InitialSync,
            Phase::Following => Self::Following,
        }
    }
}

impl From<v1::SyncPhase> for Phase {
    /// `Unspecified` is a driver that has not read its EL's heads yet.
    fn from(p: v1::SyncPhase) -> Self {
        match p {
            v1::SyncPhase::Unspecified => Self::Starting,
            v1::SyncPhase::InitialSync => Self::InitialSync,
            v1::SyncPhase::Following => Self::Following,
        }
    }
}

impl From<FcuAnswer> for v1::FcuAnswer {
    fn from(a: FcuAnswer) -> Self {
        match a {
            FcuAnswer::Valid => Self::Valid,
            FcuAnswer::Syncing => Self::Syncing,
            FcuAnswer::Invalid => Self::Invalid,
            FcuAnswer::InvalidForkchoiceState => Self::InvalidForkchoiceState,
            FcuAnswer::Error => Self::Error,
        }
    }
}

impl From<v1::FcuAnswer> for Option<FcuAnswer> {
    /// `Unspecified` is "no answer yet".
    fn from(a: v1::FcuAnswer) -> Self {
        match a {
            v1::FcuAnswer::Unspecified => None,
            v1::FcuAnswer::Valid => Some(FcuAnswer::Valid),
            v1::FcuAnswer::Syncing => Some(FcuAnswer::Syncing),
            v1::FcuAnswer::Invalid => Some(FcuAnswer::Invalid),
            v1::FcuAnswer::InvalidForkchoiceState => Some(FcuAnswer::InvalidForkchoiceState),
            v1::FcuAnswer::Error => Some(FcuAnswer::Error),
        }
    }
}

impl v1::EngineState {
    /// The KV value of one engine-driver (`chain_id`, `node_id`) for a planner snapshot taken
    /// at `updated_at_ms`.
    pub fn from_snapshot(
        chain_id: u64,
        node_id: &str,
        s: &EngineSnapshot,
        updated_at_ms: u64,
    ) -> Self {
        Self {
            chain_id,
            node_id: node_id.to_owned(),
            phase: v1::SyncPhase::from(s.phase) as i32,
            head: Some(s.applied.head.into()),
            safe: Some(s.applied.safe.into()),
            finalized: Some(s.applied.finalized.into()),
            target_revision: s.target_position.revision,
            applied_revision: s.applied_position.revision,
            last_answer: s.last_answer.map_or(v1::FcuAnswer::Unspecified, Into::into) as i32,
            last_error: s.last_error.clone().unwrap_or_default(),
            current_l1: s.current_l1.map(Into::into),
            updated_at_ms,
            target_head: Some(s.target_head.into()),
            target_epoch: s.target_position.epoch,
            applied_epoch: s.applied_position.epoch,
            ..Default::default()
        }
    }

    /// Sets the L1 view served with `current_l1` (`head_l1`, `safe_l1`, `finalized_l1`).
    pub fn set_l1_view(&mut self, v: Option<&L1View>) {
        let v = v.copied().unwrap_or_default();
        self.head_l1 = set_l1(v.head);
        self.safe_l1 = set_l1(v.safe);
        self.finalized_l1 = set_l1(v.finalized);
    }

    /// The L1 view stored with `current_l1`; `None` without `head_l1`.
    pub fn l1_view(&self) -> Result<Option<L1View>, ProtoError> {
        l1_view(&self.head_l1, &self.safe_l1, &self.finalized_l1)
    }

    /// Sets the full refs of the applied head, safe and finalized blocks (`None`: unknown).
    pub fn set_applied_refs(&mut self, [head, safe, finalized]: [Option<L2BlockRef>; 3]) {
        let set = |r: Option<L2BlockRef>| r.filter(|r| !r.is_unset()).map(Into::into);
        self.head_ref = set(head);
        self.safe_ref = set(safe);
        self.finalized_ref = set(finalized);
    }

    /// The full refs of the applied head, safe and finalized blocks stored with the state.
    pub fn applied_refs(&self) -> Result<[Option<L2BlockRef>; 3], ProtoError> {
        Ok([
            opt_l2(&self.head_ref, "head_ref")?,
            opt_l2(&self.safe_ref, "safe_ref")?,
            opt_l2(&self.finalized_ref, "finalized_ref")?,
        ])
    }

    /// The position of the newest target this driver has seen (None before any).
    pub fn target_position(&self) -> Option<Position> {
        let p = Position { epoch: self.target_epoch, revision: self.target_revision };
        (p.revision > 0).then_some(p)
    }

    /// The position of the target of this driver's last VALID forkchoice (None before any).
    pub fn applied_position(&self) -> Option<Position> {
        let p = Position { epoch: self.applied_epoch, revision: self.applied_revision };
        (p.revision > 0).then_some(p)
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
    fn a_poll_becomes_a_raw_status() {
        let s = status();
        let m = v1::RawStatus::from_core(10, "src", &s, 7, 3);
        assert_eq!(
            (m.chain_id, m.source_id.as_str(), m.observed_at_ms, m.poll_seq),
            (10, "src", 7, 3)
        );
        assert_eq!(m.core_status().unwrap(), s);
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
        let t = target();
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

    fn target() -> Target {
        let s = status();
        Target {
            chain_id: 10,
            epoch: 1_700_000_000_000,
            revision: 7,
            unsafe_l2: s.unsafe_l2,
            safe_l2: s.safe_l2,
            local_safe_l2: s.local_safe(),
            finalized_l2: s.finalized_l2,
            current_l1: s.current_l1,
        }
    }

    #[test]
    fn targets_convert_from_the_wire_with_their_observation_time() {
        let mut m = v1::Target::from_core(&target());
        m.observed_at_ms = 1234;
        let u = TargetUpdate::from_wire(m.clone()).unwrap();
        assert_eq!(u, TargetUpdate { target: target(), observed_at_ms: 1234, l1: None });
        assert_eq!(Target::from_wire(m.clone()).unwrap(), target());
        assert_eq!(<TargetUpdate as FromWire>::NAME, names::TARGET);
        m.unsafe_l2.as_mut().unwrap().hash = vec![1, 2, 3];
        assert_eq!(TargetUpdate::from_wire(m).unwrap_err().field, "unsafe_l2.hash");
    }

    #[test]
    fn an_accepted_status_becomes_a_target_with_evidence_and_times() {
        let s = status();
        let a = Accepted {
            target: target(),
            evidence: L1Evidence {
                checked: vec![s.current_l1.id(), s.head_l1.id()],
                l1_head: s.head_l1.id(),
                l1_finalized: s.finalized_l1.id(),
                view: L1View { head: s.head_l1, safe: s.safe_l1, finalized: s.finalized_l1 },
            },
            source_ids: vec!["a".into(), "b".into()],
            kept_current_l1: false,
            l1_reorg: false,
            retreat: false,
        };
        let m = v1::Target::from_accepted(&a, 11, 22);
        assert_eq!(m.to_core().unwrap(), a.target);
        // The validator's L1 view travels with the target, and reaches the drivers.
        assert_eq!(m.l1_view().unwrap(), Some(a.evidence.view));
        let u = TargetUpdate::from_wire(m.clone()).unwrap();
        assert_eq!(u.l1, Some(a.evidence.view));
        let mut bad = m.clone();
        bad.safe_l1.as_mut().unwrap().hash = vec![1];
        assert_eq!(TargetUpdate::from_wire(bad).unwrap_err().field, "safe_l1.hash");
        // A node without `finalized`: the field is absent, the view has it unset.
        let mut no_fin = a.clone();
        no_fin.evidence.view.finalized = L1BlockRef::default();
        let m2 = v1::Target::from_accepted(&no_fin, 11, 22);
        assert!(m2.finalized_l1.is_none());
        assert_eq!(m2.l1_view().unwrap(), Some(no_fin.evidence.view));
        assert_eq!((m.observed_at_ms, m.validated_at_ms), (11, 22));
        assert_eq!(m.source_ids, a.source_ids);
        let ev = m.evidence.unwrap();
        let checked: Vec<BlockId> =
            ev.checked.iter().map(|b| block_id(b, "checked").unwrap()).collect();
        assert_eq!(checked, a.evidence.checked);
        assert_eq!(block_id(&ev.l1_head.unwrap(), "").unwrap(), a.evidence.l1_head);
        assert_eq!(block_id(&ev.l1_finalized.unwrap(), "").unwrap(), a.evidence.l1_finalized);
    }

    #[test]
    fn every_reject_reason_maps_to_a_distinct_proto_reason_and_back() {
        let mapped: std::collections::BTreeSet<i32> =
            RejectReason::ALL.iter().map(|r| v1::RejectionReason::from(*r) as i32).collect();
        assert_eq!(mapped.len(), RejectReason::ALL.len());
        assert!(!mapped.contains(&(v1::RejectionReason::Unspecified as i32)));
        for r in RejectReason::ALL {
            assert_eq!(RejectReason::try_from(v1::RejectionReason::from(r)), Ok(r));
        }
        assert_eq!(
            v1::RejectionReason::from(RejectReason::SafeReplay),
            v1::RejectionReason::SafeReplay
        );
        assert!(RejectReason::try_from(v1::RejectionReason::Unspecified).is_err());
    }

    #[test]
    fn a_rejection_carries_the_status_and_what_the_rule_names() {
        let raw = v1::RawStatus {
            chain_id: 10,
            source_id: "src".into(),
            observed_at_ms: 1,
            poll_seq: 42,
            status: Some((&status()).into()),
        };
        let r = Rejection {
            reason: RejectReason::L1Mismatch,
            message: "safe_l2.l1origin differs".into(),
            ref_name: Some(lightcl_core::validate::RefName::SafeL1Origin),
            number: 45,
            expected: Some(h(1)),
            actual: Some(h(2)),
        };
        let m = v1::Rejection::from_core(&raw, &r, 99);
        assert_eq!((m.chain_id, m.source_id.as_str(), m.poll_seq), (10, "src", 42));
        assert_eq!(m.status, raw.status);
        assert_eq!(m.reason, v1::RejectionReason::L1Mismatch as i32);
        assert_eq!(m.message, r.message);
        assert_eq!(m.ref_name, "safe_l2.l1origin");
        assert_eq!(m.number, 45);
        assert_eq!(hash_from_bytes(&m.expected_hash, "e").unwrap(), h(1));
        assert_eq!(hash_from_bytes(&m.actual_hash, "a").unwrap(), h(2));
        assert_eq!(m.rejected_at_ms, 99);
        let bare = v1::Rejection::from_core(&raw, &Rejection::new(RejectReason::NoQuorum, "x"), 1);
        assert!(bare.ref_name.is_empty() && bare.expected_hash.is_empty());
        assert!(bare.actual_hash.is_empty());
    }

    #[test]
    fn phases_and_answers_round_trip() {
        for p in [Phase::Starting, Phase::InitialSync, Phase::Following] {
            assert_eq!(Phase::from(v1::SyncPhase::from(p)), p);
        }
        assert_eq!(v1::SyncPhase::from(Phase::Starting), v1::SyncPhase::Unspecified);
        for a in [
            FcuAnswer::Valid,
            FcuAnswer::Syncing,
            FcuAnswer::Invalid,
            FcuAnswer::InvalidForkchoiceState,
            FcuAnswer::Error,
        ] {
            assert_eq!(Option::<FcuAnswer>::from(v1::FcuAnswer::from(a)), Some(a));
        }
        assert_eq!(Option::<FcuAnswer>::from(v1::FcuAnswer::Unspecified), None);
    }

    #[test]
    fn an_engine_snapshot_becomes_the_kv_value() {
        let s = status();
        let snap = EngineSnapshot {
            phase: Phase::Following,
            applied: lightcl_core::engine::Forkchoice {
                head: s.unsafe_l2.id(),
                safe: s.safe_l2.id(),
                finalized: s.finalized_l2.id(),
            },
            target_position: Position { epoch: 1_700_000_000_001, revision: 8 },
            applied_position: Position { epoch: 1_700_000_000_000, revision: 7 },
            target_head: s.unsafe_l2.id(),
            last_answer: Some(FcuAnswer::Syncing),
            last_error: Some("boom".into()),
            current_l1: Some(s.current_l1),
            paused: false,
        };
        let m = v1::EngineState::from_snapshot(10, "n1", &snap, 5);
        assert_eq!(m.target_position(), Some(snap.target_position));
        assert_eq!(m.applied_position(), Some(snap.applied_position));
        assert_eq!((m.chain_id, m.node_id.as_str(), m.updated_at_ms), (10, "n1", 5));
        assert_eq!(m.phase, v1::SyncPhase::Following as i32);
        assert_eq!(block_id(&m.head.unwrap(), "").unwrap(), snap.applied.head);
        assert_eq!(block_id(&m.safe.unwrap(), "").unwrap(), snap.applied.safe);
        assert_eq!(block_id(&m.finalized.unwrap(), "").unwrap(), snap.applied.finalized);
        assert_eq!(block_id(&m.target_head.unwrap(), "").unwrap(), snap.target_head);
        assert_eq!((m.target_revision, m.applied_revision), (8, 7));
        assert_eq!((m.target_epoch, m.applied_epoch), (1_700_000_000_001, 1_700_000_000_000));
        assert_eq!(v1::EngineState::default().applied_position(), None);
        assert_eq!(m.last_answer, v1::FcuAnswer::Syncing as i32);
        assert_eq!(m.last_error, "boom");
        assert_eq!(l1_ref(&m.current_l1.unwrap(), "").unwrap(), s.current_l1);
        let fresh =
            EngineSnapshot { last_answer: None, last_error: None, current_l1: None, ..snap };
        let m = v1::EngineState::from_snapshot(10, "n1", &fresh, 5);
        assert_eq!(m.last_answer, v1::FcuAnswer::Unspecified as i32);
        assert!(m.last_error.is_empty() && m.current_l1.is_none());
        assert_eq!(m.l1_view().unwrap(), None);
        assert_eq!(m.applied_refs().unwrap(), [None, None, None]);
        // The served L1 view and the applied refs round-trip through the KV value.
        let mut m = m;
        let view = L1View { head: s.head_l1, safe: s.safe_l1, finalized: s.finalized_l1 };
        m.set_l1_view(Some(&view));
        m.set_applied_refs([Some(s.unsafe_l2), None, Some(s.finalized_l2)]);
        let back = v1::EngineState::decode(m.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back.l1_view().unwrap(), Some(view));
        assert_eq!(back.applied_refs().unwrap(), [Some(s.unsafe_l2), None, Some(s.finalized_l2)]);
    }

    #[test]
    fn garbage_bytes_fail_to_decode_without_panicking() {
        let garbage = [0xffu8, 0xff, 0xff, 0x01, 0x02];
        assert!(v1::Target::decode(garbage.as_slice()).is_err());
    }
}
