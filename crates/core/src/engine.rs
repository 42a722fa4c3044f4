//! Engine-driver decisions (docs/architecture.md#engine-driver): what forkchoice update to send to the execution
//! client, and what to do with its answer.
//!
//! [`follow`] is the follow table: one pure function from the target, the EL's view and what
//! the EL accepted to the forkchoice update to send (or the block to read first).
//! [`Planner`] is a pure state machine sequencing around it: every input (a target, an EL read,
//! an FCU answer, a timer, a control command) returns the [`Action`]s the service must perform,
//! and the service feeds the results back in. Retries, SYNCING re-sends and probes, the −38002
//! recovery, dedupe of identical updates and blocked targets live there; targets are told apart
//! by their full position (epoch, revision), never by the revision alone, which repeats across
//! epochs. Time is an input (`now_ms`), nothing here sleeps or does I/O.
//!
//! Invariants upheld for every [`Action::SendFcu`]:
//! - the head is non-zero and was never answered INVALID;
//! - `finalized.number ≤ safe.number ≤ head.number`;
//! - before the first VALID, safe and finalized are zero; after it, both are set;
//! - finalized is never below the last finalized the EL accepted, nor a different hash at the
//!   same number.
//!
//! A planned update that breaks one of them is refused with a typed [`Refusal`] and reported
//! as an [`Alert`], never sent. A target that is not newer than the last one seen
//! ([`crate::revision::is_newer`]: a later epoch, or a higher revision in the same epoch) is
//! ignored, so replays and stale targets plan nothing; a new epoch (the validator lost its
//! target history) is followed, and the invariants above still apply to it (finalized never
//! moves backwards whatever the epoch).

use std::collections::HashSet;

use alloy_primitives::B256;

use crate::revision::{Position, is_newer};
use crate::status::{BlockId, L1BlockRef, L2BlockRef};
use crate::target::Target;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// Tunables of the planner. Durations are in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannerConfig {
    /// Head = the target's `unsafe_l2` (tip following) when true, its `local_safe_l2` otherwise.
    pub follow_unsafe: bool,
    /// Delay before the first re-send after a SYNCING answer (≤ 100 ms keeps labels landing).
    pub syncing_first_retry_ms: u64,
    /// Cap of the SYNCING re-send backoff: the periodic refresh while the EL syncs.
    pub syncing_max_retry_ms: u64,
    /// While waiting to re-send after SYNCING, read the EL's heads this often and re-send at
    /// once when the EL reports the head as its latest block (op-reth makes a downloaded sync
    /// target canonical by itself, without the labels). 0 disables the probe.
    pub syncing_probe_ms: u64,
    /// Delay before the first retry after an error or timeout.
    pub error_first_retry_ms: u64,
    /// Cap of the error backoff.
    pub error_max_retry_ms: u64,
}

impl Default for PlannerConfig {
    fn default() -> Self {
        Self {
            follow_unsafe: true,
            syncing_first_retry_ms: 50,
            syncing_max_retry_ms: 1_000,
            syncing_probe_ms: 100,
            error_first_retry_ms: 200,
            error_max_retry_ms: 5_000,
        }
    }
}

/// A forkchoice state (`engine_forkchoiceUpdatedV3` with null attributes). A zero label is the
/// unset [`BlockId`] (hash zero, number 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Forkchoice {
    /// `headBlockHash` (with its number, for the invariant checks).
    pub head: BlockId,
    /// `safeBlockHash`.
    pub safe: BlockId,
    /// `finalizedBlockHash`.
    pub finalized: BlockId,
}

/// The driver's sync phase with its EL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The EL's heads have not been read yet; nothing is planned.
    Starting,
    /// No VALID answer yet: labels are sent as zero.
    InitialSync,
    /// The EL answered VALID at least once (or already had a finalized block): all three
    /// labels are sent.
    Following,
}

/// The EL's heads as read with `eth_getBlockByNumber("latest"|"safe"|"finalized")`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ElHeads {
    /// The EL's head block.
    pub latest: BlockId,
    /// The EL's safe block, if it has one.
    pub safe: Option<BlockId>,
    /// The EL's finalized block, if it has one.
    pub finalized: Option<BlockId>,
}

/// The result of reading the EL's block at one number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ElBlock {
    /// The EL has a canonical block there.
    Found(BlockId),
    /// The EL has no block there (it is still syncing).
    NotFound,
    /// The read failed (transport or RPC error).
    Error(String),
}

/// The EL's answer to a forkchoice update.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FcuOutcome {
    /// Head known, executed and canonical; labels applied.
    Valid,
    /// Head unknown or not yet validated; labels NOT applied.
    Syncing,
    /// Head (or an ancestor) invalid.
    Invalid {
        /// Last valid ancestor, when the EL said.
        latest_valid_hash: Option<B256>,
        /// The EL's explanation.
        validation_error: Option<String>,
    },
    /// JSON-RPC error −38002: safe/finalized are not on the head's chain.
    InvalidForkchoiceState {
        /// The EL's error message.
        message: String,
    },
    /// Any other error, or a timeout: temporary.
    Error {
        /// What went wrong.
        message: String,
    },
}

impl FcuOutcome {
    /// The answer's kind, without details.
    pub fn kind(&self) -> FcuAnswer {
        match self {
            Self::Valid => FcuAnswer::Valid,
            Self::Syncing => FcuAnswer::Syncing,
            Self::Invalid { .. } => FcuAnswer::Invalid,
            Self::InvalidForkchoiceState { .. } => FcuAnswer::InvalidForkchoiceState,
            Self::Error { .. } => FcuAnswer::Error,
        }
    }
}

/// Kind of the EL's last answer to a forkchoice update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FcuAnswer {
    /// VALID.
    Valid,
    /// SYNCING.
    Syncing,
    /// INVALID.
    Invalid,
    /// Error −38002.
    InvalidForkchoiceState,
    /// Other error or timeout.
    Error,
}

/// A planned forkchoice update that breaks an invariant: a lying source or a bug. Never sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Refusal {
    /// The head hash is zero.
    #[error("refused forkchoice: head is zero")]
    ZeroHead,
    /// The head was answered INVALID before.
    #[error("refused forkchoice: head {0} was declared INVALID by the EL")]
    InvalidHead(BlockId),
    /// Safe is above the head.
    #[error("refused forkchoice: safe {safe} is above head {head}")]
    SafeAboveHead {
        /// Planned safe.
        safe: BlockId,
        /// Planned head.
        head: BlockId,
    },
    /// Finalized is above safe.
    #[error("refused forkchoice: finalized {finalized} is above safe {safe}")]
    FinalizedAboveSafe {
        /// Planned finalized.
        finalized: BlockId,
        /// Planned safe.
        safe: BlockId,
    },
    /// Finalized is below what the EL already accepted.
    #[error("refused forkchoice: finalized {planned} is below the EL's finalized {accepted}")]
    FinalizedRegression {
        /// Finalized the EL accepted.
        accepted: BlockId,
        /// Planned finalized.
        planned: BlockId,
    },
    /// Finalized names a different block at the EL's finalized number.
    #[error("refused forkchoice: finalized {planned} conflicts with the EL's finalized {accepted}")]
    FinalizedConflict {
        /// Finalized the EL accepted.
        accepted: BlockId,
        /// Planned finalized.
        planned: BlockId,
    },
    /// A non-zero label before the first VALID (a bug).
    #[error("refused forkchoice: non-zero safe/finalized before the first VALID")]
    LabelsBeforeFirstValid,
    /// A zero label after the first VALID (the target lacks safe or finalized).
    #[error("refused forkchoice: zero safe/finalized after the EL synced")]
    ZeroLabelAfterSync,
}

/// The EL's canonical block at the chosen head's number, as far as the planner knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElAtHead {
    /// Not read for this head.
    NotRead,
    /// The EL has a block with this hash there.
    Found(B256),
    /// The EL has no block there (it is still syncing).
    NotFound,
    /// Reading it failed.
    ReadError,
}

impl From<&ElBlock> for ElAtHead {
    fn from(b: &ElBlock) -> Self {
        match b {
            ElBlock::Found(id) => Self::Found(id.hash),
            ElBlock::NotFound => Self::NotFound,
            ElBlock::Error(_) => Self::ReadError,
        }
    }
}

/// The EL as the planner sees it (input of [`follow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ElView {
    /// The EL's head, from its last read or the last VALID answer.
    pub head: BlockId,
    /// The EL's block at the chosen head's number.
    pub at_head: ElAtHead,
}

/// What the EL accepted so far (input of [`follow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Applied {
    /// The last forkchoice the EL accepted; its `finalized` is the floor.
    pub forkchoice: Forkchoice,
    /// The EL answered VALID once (or had a finalized block at start-up): labels are sent.
    pub first_valid: bool,
}

/// What [`follow`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Follow {
    /// Send this update; it keeps the invariants (INVALID heads aside: [`check_forkchoice`]).
    Send(Forkchoice),
    /// Read the EL's canonical block at this number first, then decide again.
    ReadBlock {
        /// The chosen head's number.
        number: u64,
    },
    /// Reading that block failed: send nothing this round.
    Skip,
    /// The update the table picks breaks an invariant: never send it.
    Refuse(Refusal),
}

/// The follow table (docs/architecture.md#follow-algorithm): the update that makes the EL
/// follow `target` — H = `target.head` (the chosen head) with the target's safe and finalized.
///
/// | EL view | update |
/// |---|---|
/// | (1) EL head number < H.number | FCU(H, safe, finalized): catch up, the EL syncs |
/// | (2) EL head is H | FCU(H, safe, finalized), no read needed |
/// | (2) EL block at H.number not read | [`Follow::ReadBlock`] at H.number first |
/// | (2) … not found (still syncing) | FCU(H, safe, finalized) |
/// | (2) … read error | [`Follow::Skip`]: nothing this round |
/// | (2) … H's hash | FCU(EL head, safe, finalized): labels only, never rewind the head |
/// | (2) … another hash (reorg) | FCU(H, safe, finalized) |
///
/// Initial sync: until `applied.first_valid`, safe and finalized are sent as zero. A target
/// finalized below the EL's accepted one is held there ([`hold_finalized`]). Invariants, else
/// [`Follow::Refuse`]: head ≠ 0; finalized ≤ safe ≤ head; finalized neither below
/// `applied.forkchoice.finalized` nor another hash at its number.
pub fn follow(target: Forkchoice, el: ElView, applied: Applied) -> Follow {
    let h = target.head;
    let head = match el.at_head {
        _ if el.head.number < h.number => h,
        ElAtHead::NotRead if el.head.hash == h.hash => h,
        ElAtHead::NotRead => return Follow::ReadBlock { number: h.number },
        ElAtHead::ReadError => return Follow::Skip,
        ElAtHead::Found(hash) if hash == h.hash => el.head,
        ElAtHead::NotFound | ElAtHead::Found(_) => h,
    };
    let (safe, finalized) = if applied.first_valid {
        hold_finalized(&target, applied.forkchoice.finalized)
    } else {
        Default::default()
    };
    let fc = Forkchoice { head, safe, finalized };
    match check_invariants(&fc, applied.first_valid, applied.forkchoice.finalized) {
        Ok(()) => Follow::Send(fc),
        Err(refusal) => Follow::Refuse(refusal),
    }
}

/// The safe and finalized labels to send: the target's, except that a finalized below the one
/// the EL already accepted is held at the EL's (moving an EL over from another consensus
/// client whose finalized is ahead of our source's): head and safe keep following, finalized
/// waits until the target's passes the EL's. Safe is then never sent below the held finalized
/// (the held block itself stands in for it).
fn hold_finalized(target: &Forkchoice, accepted: BlockId) -> (BlockId, BlockId) {
    if accepted.is_unset() || target.finalized.number >= accepted.number {
        return (target.safe, target.finalized);
    }
    let safe = if target.safe.number >= accepted.number { target.safe } else { accepted };
    (safe, accepted)
}

/// Something an operator must hear about (logged loudly, counted, published as last error).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Alert {
    /// A planned update was refused; the target is dropped until a newer one arrives.
    Refused {
        /// Position of the target it was planned for.
        position: Position,
        /// Why.
        refusal: Refusal,
    },
    /// The EL answered INVALID: the head is never sent again.
    InvalidHead {
        /// The head.
        head: BlockId,
        /// Last valid ancestor, when the EL said.
        latest_valid_hash: Option<B256>,
        /// The EL's explanation.
        validation_error: Option<String>,
    },
    /// A target names a head the EL declared INVALID earlier: nothing is planned for it.
    TargetHeadInvalid {
        /// Position of the target.
        position: Position,
        /// The head.
        head: BlockId,
    },
    /// Even the EL's own labels with the target head were rejected with −38002: the target is
    /// dropped until a newer one arrives.
    ForkchoiceStateRejected {
        /// The rejected state.
        state: Forkchoice,
        /// The EL's message.
        message: String,
    },
}

/// What the service must do next. Actions are executed in order; results are fed back with
/// [`Planner::on_el_heads`], [`Planner::on_el_block`] and [`Planner::on_fcu_answer`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send `engine_forkchoiceUpdatedV3(state, null)`.
    SendFcu(Forkchoice),
    /// Read the EL's `latest`, `safe` and `finalized` blocks.
    ReadElHeads,
    /// Read the EL's block at this number.
    ReadElBlock {
        /// Block number.
        number: u64,
    },
    /// Call [`Planner::on_timer`] after this delay (replaces any earlier schedule).
    ScheduleRetry {
        /// Delay in milliseconds.
        after_ms: u64,
    },
    /// The [`EngineSnapshot`] changed: publish it.
    PublishEngineState,
    /// Tell the operator.
    Alert(Alert),
}

/// What the driver applied, as published to the `lightcl-engine` KV bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EngineSnapshot {
    /// Sync phase.
    pub phase: Phase,
    /// Heads the EL accepted (from VALID answers and EL reads); zero when unknown.
    pub applied: Forkchoice,
    /// Position of the newest target seen ((0, 0) before any).
    pub target_position: Position,
    /// Position of the target of the last VALID forkchoice ((0, 0) before any).
    pub applied_position: Position,
    /// The head the driver is pushing (zero before any target).
    pub target_head: BlockId,
    /// Kind of the last FCU answer.
    pub last_answer: Option<FcuAnswer>,
    /// The last error or alert text, cleared by a VALID answer.
    pub last_error: Option<String>,
    /// The target's `current_l1`, mirrored once the applied safe reached that target's safe.
    pub current_l1: Option<L1BlockRef>,
    /// Paused by the operator.
    pub paused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Nothing,
    ElHeads,
    /// Heads read while a SYNCING re-send is scheduled.
    Probe,
    ElBlock {
        number: u64,
    },
    Fcu {
        fc: Forkchoice,
        position: Position,
        fallback: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetryWhat {
    /// Re-plan (and re-send) for the newest target.
    Replan,
    /// Re-read the EL's heads.
    ReadHeads,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    at_ms: u64,
    what: RetryWhat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    fc: Forkchoice,
    answer: Option<FcuAnswer>,
}

/// The engine-driver's pure state machine (docs/architecture.md#engine-driver).
#[derive(Debug, Clone)]
pub struct Planner {
    cfg: PlannerConfig,
    phase: Phase,
    paused: bool,
    target: Option<Target>,
    /// Our view of the EL's head (`applied.head`) may be outdated: after SYNCING (op-reth
    /// adopts a downloaded sync target by itself), an error or INVALID. Before reading the
    /// EL's block at H's number (case 2), the heads are then re-read first.
    el_view_stale: bool,
    /// What the EL accepted: heads from VALID answers and EL reads (`head` is the EL's head).
    applied: Forkchoice,
    /// Position of the target of the last VALID forkchoice. Every bookkeeping of targets is
    /// keyed by the full position: revisions repeat across epochs.
    applied_position: Position,
    invalid: HashSet<B256>,
    awaiting: Awaiting,
    last_sent: Option<Sent>,
    retry: Option<Retry>,
    /// When to probe the EL's head while a SYNCING re-send is scheduled.
    probe_at: Option<u64>,
    syncing_attempts: u32,
    /// The head the SYNCING streak (`syncing_attempts`) is about: a new head starts over.
    syncing_head: Option<B256>,
    /// The probe interval of the current SYNCING streak (see [`probe_every`]).
    probe_every_ms: u64,
    error_attempts: u32,
    /// Position whose target is dropped (refused, INVALID head, rejected fallback).
    blocked: Option<Position>,
    /// Position being recovered after −38002: send the head with the EL's own labels.
    recovering: Option<Position>,
    resync_pending: bool,
    /// Wall clock (Unix ms) for the epoch plausibility check; None: not checked.
    wall_ms: Option<u64>,
    current_l1: Option<L1BlockRef>,
    last_answer: Option<FcuAnswer>,
    last_error: Option<String>,
    published: Option<EngineSnapshot>,
}

impl Planner {
    /// A planner that has not read the EL yet; call [`Planner::start`] first.
    pub fn new(cfg: PlannerConfig) -> Self {
        Self {
            cfg,
            phase: Phase::Starting,
            paused: false,
            target: None,
            el_view_stale: false,
            applied: Forkchoice::default(),
            applied_position: Position::default(),
            invalid: HashSet::new(),
            awaiting: Awaiting::Nothing,
            last_sent: None,
            retry: None,
            probe_at: None,
            syncing_attempts: 0,
            syncing_head: None,
            probe_every_ms: 0,
            error_attempts: 0,
            blocked: None,
            recovering: None,
            resync_pending: false,
            wall_ms: None,
            current_l1: None,
            last_answer: None,
            last_error: None,
            published: None,
        }
    }

    /// The planner's settings.
    pub fn config(&self) -> &PlannerConfig {
        &self.cfg
    }

    /// Current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The newest target seen.
    pub fn target(&self) -> Option<&Target> {
        self.target.as_ref()
    }

    /// The head chosen from a target (`unsafe_l2` when following the tip, else `local_safe_l2`).
    pub fn head_of(&self, t: &Target) -> L2BlockRef {
        if self.cfg.follow_unsafe { t.unsafe_l2 } else { t.local_safe_l2 }
    }

    /// True when `hash` was answered INVALID.
    pub fn is_invalid(&self, hash: &B256) -> bool {
        self.invalid.contains(hash)
    }

    /// Every head answered INVALID (sorted), for keeping them across restarts.
    pub fn invalid_heads(&self) -> Vec<B256> {
        let mut v: Vec<B256> = self.invalid.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// Heads an earlier run (or another driver of this EL) saw answered INVALID: never sent.
    pub fn remember_invalid(&mut self, heads: impl IntoIterator<Item = B256>) {
        self.invalid.extend(heads.into_iter().filter(|h| *h != B256::ZERO));
    }

    /// True while an EL read or an FCU is outstanding.
    pub fn is_busy(&self) -> bool {
        self.awaiting != Awaiting::Nothing
    }

    /// What to publish as engine state.
    pub fn snapshot(&self) -> EngineSnapshot {
        EngineSnapshot {
            phase: self.phase,
            applied: self.applied,
            target_position: self.target.as_ref().map(Position::of).unwrap_or_default(),
            applied_position: self.applied_position,
            target_head: self.target.map(|t| self.head_of(&t).id()).unwrap_or_default(),
            last_answer: self.last_answer,
            last_error: self.last_error.clone(),
            current_l1: self.current_l1,
            paused: self.paused,
        }
    }

    /// Start-up: read the EL's heads before planning anything.
    pub fn start(&mut self, _now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.awaiting == Awaiting::Nothing {
            self.begin(Awaiting::ElHeads, Action::ReadElHeads, &mut out);
        }
        self.finish(out)
    }

    /// Sets the wall clock (Unix ms) [`Planner::on_target`] checks a target's epoch against
    /// (an epoch too far in the future is ignored, see [`is_newer`]). `now_ms` elsewhere is a
    /// monotonic clock; the service sets this before each target.
    pub fn set_wall_clock(&mut self, unix_ms: u64) {
        self.wall_ms = Some(unix_ms);
    }

    /// A new target from the bus. One that is not newer than the newest seen
    /// ([`is_newer`]: a later epoch, or a higher revision in the same epoch) is ignored.
    pub fn on_target(&mut self, target: Target, _now_ms: u64) -> Vec<Action> {
        let wall = self.wall_ms.unwrap_or(u64::MAX);
        if !is_newer(self.target.as_ref().map(Position::of), Position::of(&target), wall) {
            return Vec::new();
        }
        self.target = Some(target);
        self.blocked = None;
        self.recovering = None;
        let mut out = Vec::new();
        self.plan(&mut out);
        self.finish(out)
    }

    /// The result of [`Action::ReadElHeads`].
    pub fn on_el_heads(&mut self, heads: Result<ElHeads, String>, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.awaiting == Awaiting::Probe {
            self.awaiting = Awaiting::Nothing;
            self.on_probe(heads, now_ms, &mut out);
            return self.finish(out);
        }
        if self.awaiting != Awaiting::ElHeads {
            return out;
        }
        self.awaiting = Awaiting::Nothing;
        match heads {
            Err(e) => {
                self.last_error = Some(format!("reading EL heads: {e}"));
                let after = self.error_backoff();
                self.schedule(now_ms, after, RetryWhat::ReadHeads, &mut out);
            }
            Ok(h) => {
                self.error_attempts = 0;
                self.absorb_heads(&h);
                if self.phase == Phase::Starting {
                    self.phase = if self.applied.finalized.number > 0 {
                        Phase::Following
                    } else {
                        Phase::InitialSync
                    };
                }
                // Fresh view of the EL: re-plan now (this also re-sends at once when the EL
                // reports the head it was syncing to).
                self.retry = None;
                self.probe_at = None;
                self.plan(&mut out);
            }
        }
        self.finish(out)
    }

    /// The EL's own view replaces ours; finalized only moves up.
    fn absorb_heads(&mut self, h: &ElHeads) {
        self.el_view_stale = false;
        self.applied.head = h.latest;
        self.applied.safe = h.safe.unwrap_or_default();
        if let Some(f) = h.finalized
            && f.number > self.applied.finalized.number
        {
            self.applied.finalized = f;
        }
    }

    /// A probe while SYNCING: re-send at once when the EL reports the head, else keep the
    /// scheduled re-send and probe again.
    fn on_probe(&mut self, heads: Result<ElHeads, String>, now_ms: u64, out: &mut Vec<Action>) {
        if let Ok(h) = &heads {
            self.absorb_heads(h);
            let pushing = self.last_sent.filter(|s| s.answer == Some(FcuAnswer::Syncing));
            if pushing.is_some_and(|s| s.fc.head.hash == h.latest.hash) {
                self.retry = None;
                self.probe_at = None;
                self.last_sent = None;
            }
        }
        self.plan(out);
        if self.awaiting == Awaiting::Nothing && self.retry.is_some() {
            let every = self.probe_every_ms.max(self.cfg.syncing_probe_ms);
            self.probe_at = Some(now_ms.saturating_add(every));
            self.arm(now_ms, out);
        }
    }

    /// Schedules the next timer call for the earliest of the re-send and the probe.
    fn arm(&self, now_ms: u64, out: &mut Vec<Action>) {
        let next = match (self.retry.map(|r| r.at_ms), self.probe_at) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        out.push(Action::ScheduleRetry { after_ms: next.saturating_sub(now_ms) });
    }

    /// The result of [`Action::ReadElBlock`].
    pub fn on_el_block(&mut self, number: u64, block: ElBlock, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.awaiting != (Awaiting::ElBlock { number }) {
            return out;
        }
        self.awaiting = Awaiting::Nothing;
        let Some(t) = self.target else { return self.finish(out) };
        let h = self.head_of(&t);
        if h.number != number || self.resync_pending || self.paused {
            // A newer target (or a command) arrived meanwhile: plan again from scratch.
            self.plan(&mut out);
            return self.finish(out);
        }
        let step = self.follow_step(&t, ElAtHead::from(&block));
        if let (Follow::Skip, ElBlock::Error(e)) = (&step, &block) {
            // Case 2, read error: skip this round, retry after the error backoff.
            self.last_error = Some(format!("reading EL block {number}: {e}"));
            let after = self.error_backoff();
            self.schedule(now_ms, after, RetryWhat::Replan, &mut out);
        } else {
            self.take(step, Position::of(&t), &mut out);
        }
        self.finish(out)
    }

    /// The EL's answer to the outstanding [`Action::SendFcu`].
    pub fn on_fcu_answer(&mut self, outcome: FcuOutcome, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let Awaiting::Fcu { fc, position, fallback } = self.awaiting else { return out };
        self.awaiting = Awaiting::Nothing;
        self.last_answer = Some(outcome.kind());
        if let Some(s) = self.last_sent.as_mut() {
            s.answer = Some(outcome.kind());
        }
        let newer_target = self.target.is_some_and(|t| Position::of(&t) != position);
        match outcome {
            FcuOutcome::Valid => {
                self.syncing_attempts = 0;
                self.syncing_head = None;
                self.error_attempts = 0;
                self.last_error = None;
                if self.phase == Phase::InitialSync {
                    self.phase = Phase::Following;
                }
                self.el_view_stale = false;
                self.applied.head = fc.head;
                if !fc.safe.is_unset() {
                    self.applied.safe = fc.safe;
                }
                if !fc.finalized.is_unset() {
                    self.applied.finalized = fc.finalized;
                }
                self.applied_position = position;
                if !fallback {
                    self.recovering = None;
                }
                self.plan(&mut out);
            }
            FcuOutcome::Syncing => {
                self.el_view_stale = true;
                // Each new head starts its own streak: its first re-send comes after
                // `syncing_first_retry_ms`, whatever the previous head's streak reached.
                if self.syncing_head != Some(fc.head.hash) {
                    self.syncing_head = Some(fc.head.hash);
                    self.syncing_attempts = 0;
                }
                let after = backoff(
                    self.cfg.syncing_first_retry_ms,
                    self.cfg.syncing_max_retry_ms,
                    self.syncing_attempts,
                );
                self.syncing_attempts = self.syncing_attempts.saturating_add(1);
                self.retry =
                    Some(Retry { at_ms: now_ms.saturating_add(after), what: RetryWhat::Replan });
                let probe = probe_every(self.cfg.syncing_probe_ms, after);
                self.probe_every_ms = probe;
                self.probe_at = (probe > 0 && probe < after).then(|| now_ms.saturating_add(probe));
                self.arm(now_ms, &mut out);
                if newer_target {
                    self.plan(&mut out);
                }
            }
            FcuOutcome::Invalid { latest_valid_hash, validation_error } => {
                self.el_view_stale = true;
                self.invalid.insert(fc.head.hash);
                self.blocked = Some(position);
                self.last_error = Some(format!(
                    "EL answered INVALID for head {}: {}",
                    fc.head,
                    validation_error.as_deref().unwrap_or("no reason given")
                ));
                out.push(Action::Alert(Alert::InvalidHead {
                    head: fc.head,
                    latest_valid_hash,
                    validation_error,
                }));
                if newer_target {
                    self.plan(&mut out);
                }
            }
            FcuOutcome::InvalidForkchoiceState { message } => {
                self.last_error = Some(format!("EL rejected forkchoice (-38002): {message}"));
                if fallback {
                    self.blocked = Some(position);
                    out.push(Action::Alert(Alert::ForkchoiceStateRejected { state: fc, message }));
                    if newer_target {
                        self.plan(&mut out);
                    }
                } else {
                    if !newer_target {
                        self.recovering = Some(position);
                    }
                    self.begin(Awaiting::ElHeads, Action::ReadElHeads, &mut out);
                }
            }
            FcuOutcome::Error { message } => {
                self.el_view_stale = true;
                self.last_error = Some(format!("forkchoice update failed: {message}"));
                let after = self.error_backoff();
                self.schedule(now_ms, after, RetryWhat::Replan, &mut out);
                if newer_target {
                    self.plan(&mut out);
                }
            }
        }
        self.finish(out)
    }

    /// A scheduled retry is due (see [`Action::ScheduleRetry`]). Early calls do nothing.
    pub fn on_timer(&mut self, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if self.awaiting != Awaiting::Nothing {
            // The outstanding answer re-arms the timer.
            return out;
        }
        let Some(r) = self.retry.filter(|r| now_ms >= r.at_ms) else {
            if self.probe_at.is_some_and(|p| now_ms >= p) {
                // Probe the EL's head; the scheduled re-send stays.
                self.probe_at = None;
                self.awaiting = Awaiting::Probe;
                out.push(Action::ReadElHeads);
            } else {
                self.arm(now_ms, &mut out);
            }
            return self.finish(out);
        };
        self.retry = None;
        self.probe_at = None;
        match r.what {
            RetryWhat::ReadHeads => self.begin(Awaiting::ElHeads, Action::ReadElHeads, &mut out),
            RetryWhat::Replan => {
                // The periodic refresh: an identical FCU is re-sent (no dedupe here).
                self.last_sent = None;
                self.plan(&mut out);
            }
        }
        self.finish(out)
    }

    /// Operator: stop sending forkchoice updates (targets are still recorded).
    pub fn pause(&mut self) -> Vec<Action> {
        self.paused = true;
        self.finish(Vec::new())
    }

    /// Operator: resume and plan for the newest target.
    pub fn resume(&mut self, _now_ms: u64) -> Vec<Action> {
        self.paused = false;
        let mut out = Vec::new();
        self.plan(&mut out);
        self.finish(out)
    }

    /// Operator (or the service): re-read the EL's heads and re-plan.
    pub fn resync(&mut self, _now_ms: u64) -> Vec<Action> {
        self.resync_pending = true;
        self.blocked = None;
        self.last_sent = None;
        let mut out = Vec::new();
        if self.awaiting == Awaiting::Nothing {
            self.retry = None;
            self.plan(&mut out);
        }
        self.finish(out)
    }

    /// The plan (docs/architecture.md#follow-algorithm) for the newest target, unless something
    /// is outstanding: the guards, a blocked or INVALID head, the −38002 recovery, then [`follow`].
    fn plan(&mut self, out: &mut Vec<Action>) {
        if self.awaiting != Awaiting::Nothing {
            return;
        }
        if self.resync_pending {
            self.resync_pending = false;
            self.begin(Awaiting::ElHeads, Action::ReadElHeads, out);
            return;
        }
        if self.paused || self.phase == Phase::Starting {
            return;
        }
        let Some(t) = self.target else { return };
        let position = Position::of(&t);
        if self.blocked == Some(position) {
            return;
        }
        let h = self.head_of(&t);
        if self.invalid.contains(&h.hash) {
            self.blocked = Some(position);
            self.last_error = Some(format!("target head {} was declared INVALID", h.id()));
            out.push(Action::Alert(Alert::TargetHeadInvalid { position, head: h.id() }));
            return;
        }
        if self.recovering == Some(position) {
            // After −38002: H with the labels the EL itself reports (zero in initial sync).
            let (safe, finalized) = match self.phase {
                Phase::Following => (self.applied.safe, self.applied.finalized),
                Phase::Starting | Phase::InitialSync => Default::default(),
            };
            self.submit(Forkchoice { head: h.id(), safe, finalized }, position, true, out);
            return;
        }
        let step = self.follow_step(&t, ElAtHead::NotRead);
        self.take(step, position, out);
    }

    /// [`follow`] for target `t`, with our view of the EL and what it accepted.
    fn follow_step(&self, t: &Target, at_head: ElAtHead) -> Follow {
        let target = Forkchoice {
            head: self.head_of(t).id(),
            safe: t.safe_l2.id(),
            finalized: t.finalized_l2.id(),
        };
        let el = ElView { head: self.applied.head, at_head };
        let first_valid = self.phase == Phase::Following;
        follow(target, el, Applied { forkchoice: self.applied, first_valid })
    }

    /// Carries out one step of the follow table for the target at `position`.
    fn take(&mut self, step: Follow, position: Position, out: &mut Vec<Action>) {
        match step {
            Follow::Send(fc) => self.submit(fc, position, false, out),
            Follow::Refuse(refusal) => self.refuse(position, refusal, out),
            // Labels only must not name a stale EL head: read the EL's heads first.
            Follow::ReadBlock { .. } if self.el_view_stale => {
                self.begin(Awaiting::ElHeads, Action::ReadElHeads, out);
            }
            Follow::ReadBlock { number } => {
                self.begin(Awaiting::ElBlock { number }, Action::ReadElBlock { number }, out);
            }
            // Only after a failed read, which `on_el_block` handles.
            Follow::Skip => {}
        }
    }

    /// Start one I/O action; a scheduled retry is superseded by it.
    fn begin(&mut self, awaiting: Awaiting, action: Action, out: &mut Vec<Action>) {
        self.retry = None;
        self.probe_at = None;
        self.awaiting = awaiting;
        out.push(action);
    }

    /// Check, dedupe and send one planned update.
    fn submit(
        &mut self,
        fc: Forkchoice,
        position: Position,
        fallback: bool,
        out: &mut Vec<Action>,
    ) {
        if let Err(refusal) =
            check_forkchoice(&fc, self.phase, self.applied.finalized, &self.invalid)
        {
            self.refuse(position, refusal, out);
            return;
        }
        if let Some(s) = self.last_sent
            && s.fc == fc
        {
            match s.answer {
                // Already applied: nothing to send.
                Some(FcuAnswer::Valid) => {
                    // Targets only get newer (`on_target`), so this is the newest position.
                    self.applied_position = self.applied_position.max(position);
                    return;
                }
                // A re-send is already scheduled (SYNCING refresh or error backoff).
                Some(FcuAnswer::Syncing | FcuAnswer::Error) if self.retry.is_some() => return,
                _ => {}
            }
        }
        self.last_sent = Some(Sent { fc, answer: None });
        self.begin(Awaiting::Fcu { fc, position, fallback }, Action::SendFcu(fc), out);
    }

    /// Never send an update that breaks an invariant: alert and block its target's position.
    fn refuse(&mut self, position: Position, refusal: Refusal, out: &mut Vec<Action>) {
        self.blocked = Some(position);
        self.last_error = Some(refusal.to_string());
        out.push(Action::Alert(Alert::Refused { position, refusal }));
    }

    /// Mirror the newest target's `current_l1` once the applied safe head reached its safe.
    fn mirror_current_l1(&mut self) {
        if self.phase != Phase::Following {
            return;
        }
        if let Some(t) = self.target
            && !t.current_l1.is_unset()
            && self.applied.safe == t.safe_l2.id()
        {
            self.current_l1 = Some(t.current_l1);
        }
    }

    fn error_backoff(&mut self) -> u64 {
        let after = backoff(
            self.cfg.error_first_retry_ms,
            self.cfg.error_max_retry_ms,
            self.error_attempts,
        );
        self.error_attempts = self.error_attempts.saturating_add(1);
        after
    }

    fn schedule(&mut self, now_ms: u64, after_ms: u64, what: RetryWhat, out: &mut Vec<Action>) {
        self.probe_at = None;
        self.retry = Some(Retry { at_ms: now_ms.saturating_add(after_ms), what });
        out.push(Action::ScheduleRetry { after_ms });
    }

    /// Appends [`Action::PublishEngineState`] when the snapshot changed.
    fn finish(&mut self, mut out: Vec<Action>) -> Vec<Action> {
        self.mirror_current_l1();
        let snap = self.snapshot();
        if self.published.as_ref() != Some(&snap) {
            self.published = Some(snap);
            out.push(Action::PublishEngineState);
        }
        out
    }
}

/// The SYNCING probe interval for a re-send due in `resend_ms`: `probe_ms`, or a quarter of
/// the re-send delay when that is longer, so a long streak of one state probes less often
/// (0: no probe).
pub fn probe_every(probe_ms: u64, resend_ms: u64) -> u64 {
    if probe_ms == 0 { 0 } else { probe_ms.max(resend_ms / 4) }
}

/// Exponential backoff: `first_ms * 2^attempt`, capped at `max_ms`.
pub fn backoff(first_ms: u64, max_ms: u64, attempt: u32) -> u64 {
    first_ms.saturating_mul(1u64 << attempt.min(20)).min(max_ms)
}

/// The forkchoice invariants (docs/architecture.md#forkchoice-invariants), checked before any update is sent.
///
/// `accepted_finalized` is the last finalized block the EL accepted (zero when none);
/// `invalid` holds the heads the EL answered INVALID.
pub fn check_forkchoice(
    fc: &Forkchoice,
    phase: Phase,
    accepted_finalized: BlockId,
    invalid: &HashSet<B256>,
) -> Result<(), Refusal> {
    if fc.head.hash != B256::ZERO && invalid.contains(&fc.head.hash) {
        return Err(Refusal::InvalidHead(fc.head));
    }
    check_invariants(fc, phase == Phase::Following, accepted_finalized)
}

/// The invariants [`follow`] keeps: [`check_forkchoice`] without the INVALID heads.
fn check_invariants(
    fc: &Forkchoice,
    first_valid: bool,
    accepted_finalized: BlockId,
) -> Result<(), Refusal> {
    if fc.head.hash == B256::ZERO {
        return Err(Refusal::ZeroHead);
    }
    if !first_valid {
        if !fc.safe.is_unset() || !fc.finalized.is_unset() {
            return Err(Refusal::LabelsBeforeFirstValid);
        }
        return Ok(());
    }
    if fc.safe.hash == B256::ZERO || fc.finalized.hash == B256::ZERO {
        return Err(Refusal::ZeroLabelAfterSync);
    }
    if fc.safe.number > fc.head.number {
        return Err(Refusal::SafeAboveHead { safe: fc.safe, head: fc.head });
    }
    if fc.finalized.number > fc.safe.number {
        return Err(Refusal::FinalizedAboveSafe { finalized: fc.finalized, safe: fc.safe });
    }
    if !accepted_finalized.is_unset() {
        if fc.finalized.number < accepted_finalized.number {
            return Err(Refusal::FinalizedRegression {
                accepted: accepted_finalized,
                planned: fc.finalized,
            });
        }
        if fc.finalized.number == accepted_finalized.number
            && fc.finalized.hash != accepted_finalized.hash
        {
            return Err(Refusal::FinalizedConflict {
                accepted: accepted_finalized,
                planned: fc.finalized,
            });
        }
    }
    Ok(())
}
