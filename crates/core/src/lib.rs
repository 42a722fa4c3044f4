//! # lightcl-core
//!
//! The domain core of lightcl: the `optimism_syncStatus` types and every decision the
//! pipeline makes, as pure functions with no I/O, no clock and no async runtime.
//!
//! - [`status`]: the wire format of `optimism_syncStatus` and of `eth_getBlockByNumber` blocks.
//! - [`poll`]: when the poller publishes a status (change detection, heartbeat slots).
//! - [`phase`]: when the poller polls (the fixed cadence, or phase-locked to the chain's blocks).
//! - [`validate`]: what the validator decides about a raw status (structural checks, which L1
//!   blocks to fetch and how to judge them, regression/replay rules, quorum).
//! - [`early`]: when the validator judges a status from its early (core-NATS) copy, before
//!   the status stream delivers it, without changing the order or the outcome of decisions.
//! - [`revision`]: the order of targets (epoch, revision): the validator's next position and
//!   the driver's "is this target newer" rule, with checked arithmetic.
//! - [`retreat`]: the L1 watch: which earlier validated labels the validator publishes at
//!   once when our L1 reorganises under the newest target.
//! - [`engine`]: what the engine-driver sends to its execution client (head choice, the follow
//!   cases, forkchoice invariants, reactions to the EL's answers).
//!
//! Services perform the actions these functions return; they never decide on their own.
//! Invariants upheld here: no target is produced from a status that failed a check; a planned
//! forkchoice update always satisfies `finalized ≤ safe ≤ head`, never lowers finalized and
//! never names a head the EL declared INVALID.

pub mod early;
pub mod engine;
pub mod lease;
pub mod phase;
pub mod poll;
pub mod quorum;
pub mod retreat;
pub mod revision;
pub mod severity;
pub mod status;
pub mod target;
pub mod validate;

pub use alloy_primitives::B256;
pub use severity::Severity;
pub use status::{BlockId, L1BlockRef, L2BlockRef, ParseError, SyncStatus};
pub use target::{L1View, Target};
