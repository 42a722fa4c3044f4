//! A validated target: what the validator publishes and the engine-driver follows.

use crate::status::{L1BlockRef, L2BlockRef};

/// The heads one validated status asks every execution client to follow.
///
/// Only the validator creates targets, and only from statuses that passed every check;
/// `revision` strictly increases per chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Target {
    /// L2 chain id.
    pub chain_id: u64,
    /// Strictly increasing per chain; a driver ignores any revision not above the last seen.
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
