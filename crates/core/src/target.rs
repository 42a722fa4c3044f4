//! A validated target: what the validator publishes and the engine-driver follows.

use crate::status::{L1BlockRef, L2BlockRef};

/// The heads one validated status asks every execution client to follow.
///
/// Only the validator creates targets, and only from statuses that passed every check;
/// `(epoch, revision)` strictly increases per chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Target {
    /// L2 chain id.
    pub chain_id: u64,
    /// When the validator's target history began (Unix ms of its clock; 0 for targets of
    /// versions without the field). See [`crate::revision`].
    pub epoch: u64,
    /// Strictly increasing within an epoch; a driver ignores a target whose
    /// `(epoch, revision)` is not newer than the last seen ([`crate::revision::is_newer`]).
    pub revision: u64,
    /// The source's unsafe (tip) head.
    pub unsafe_l2: L2BlockRef,
    /// The source's (cross-)safe head: the EL's `safe` label.
    pub safe_l2: L2BlockRef,
    /// The source's local-safe head (equals `safe_l2` when the source did not report one).
    pub local_safe_l2: L2BlockRef,
    /// The source's finalized head: the EL's `finalized` label.
    pub finalized_l2: L2BlockRef,
    /// The L1 block the source had derived up to (checked canonical on our L1).
    pub current_l1: L1BlockRef,
}

/// The validator's view of its own L1 when it accepted a target: what an op-node reports as
/// `head_l1`, `safe_l1` and `finalized_l1`. Carried next to the target on the bus
/// (`lightcl.v1.Target` fields `head_l1`, `safe_l1`, `finalized_l1`), not in [`Target`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct L1View {
    /// Our L1 node's `latest` block.
    pub head: L1BlockRef,
    /// Our L1 node's `safe` block (its `finalized` block when the node has no `safe` tag;
    /// unset when it has neither).
    pub safe: L1BlockRef,
    /// Our L1 node's `finalized` block (unset when the node has none).
    pub finalized: L1BlockRef,
}
