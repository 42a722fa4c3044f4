//! Validator decisions (docs/architecture.md#validator): whether a raw status from a source becomes the next
//! [`Target`], or a typed [`Rejection`].
//!
//! A status goes through, in order:
//! 1. chain and structural checks ([`Validator::plan`]): required refs set, `current_l1` set
//!    (else "source not ready"), `finalized ≤ safe ≤ local_safe ≤ unsafe` by number;
//! 2. the L1 check plan ([`L1Plan`]): the distinct L1 block numbers to read with one JSON-RPC
//!    batch (plus the `latest` and `finalized` tags), including what the regression rules need
//!    (the previous target's safe L1 origin and `current_l1`, when the status steps back);
//! 3. judging the fetched blocks ([`Validator::decide`]): number then the hash the node
//!    returned; `unsafe_l2.l1origin` is lenient (accepted above our L1 head);
//! 4. the regression/replay rules against the previous target, then the k-of-n quorum.
//!
//! Invariants: a target is only produced from a status that passed every check; it is never
//! partial; its position is the previous one's next ([`crate::revision::next_position`]: same
//! epoch and revision + 1, or a new epoch at revision 1, never a wrapped value); finalized never goes backwards nor
//! changes hash at an already-finalized number; an older status replayed without an L1 reorg
//! produces nothing. [`Validator::decide`] does not move the state forward: the service calls
//! [`Validator::commit`] only once the target is stored, so a failed publish changes nothing.
//!
//! Blocks at or below our L1's finalized block are immutable and may be cached
//! ([`L1Cache`], [`cacheable`]); nothing else is.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::B256;

use crate::retreat::{self, History, RetreatError};
use crate::revision::{Position, PositionError, epoch_plausible, next_position};
use crate::status::{BlockId, L1BlockRef, L2BlockRef, SyncStatus};
use crate::target::{L1View, Target};

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

/// Settings of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// The L2 chain id statuses must belong to.
    pub chain_id: u64,
    /// k of [`crate::quorum`] (the service combines several sources; decisions here judge one
    /// status).
    pub quorum: usize,
}

/// One raw status as received from the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Chain id the poller stamped on it.
    pub chain_id: u64,
    /// The source it came from.
    pub source_id: String,
    /// The status.
    pub status: SyncStatus,
}

/// Which reference a check or a rejection is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefName {
    /// `unsafe_l2`.
    UnsafeL2,
    /// `safe_l2`.
    SafeL2,
    /// `local_safe_l2`.
    LocalSafeL2,
    /// `finalized_l2`.
    FinalizedL2,
    /// `current_l1`.
    CurrentL1,
    /// `safe_l2.l1origin`.
    SafeL1Origin,
    /// `local_safe_l2.l1origin`.
    LocalSafeL1Origin,
    /// `finalized_l2.l1origin`.
    FinalizedL1Origin,
    /// `unsafe_l2.l1origin` (lenient).
    UnsafeL1Origin,
    /// The previous target's `safe_l2.l1origin` (probed for the L1-reorg rule).
    PrevSafeL1Origin,
    /// The previous target's `current_l1` (probed for the replay rule).
    PrevCurrentL1,
}

impl RefName {
    /// The JSON path of the reference, e.g. `safe_l2.l1origin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnsafeL2 => "unsafe_l2",
            Self::SafeL2 => "safe_l2",
            Self::LocalSafeL2 => "local_safe_l2",
            Self::FinalizedL2 => "finalized_l2",
            Self::CurrentL1 => "current_l1",
            Self::SafeL1Origin => "safe_l2.l1origin",
            Self::LocalSafeL1Origin => "local_safe_l2.l1origin",
            Self::FinalizedL1Origin => "finalized_l2.l1origin",
            Self::UnsafeL1Origin => "unsafe_l2.l1origin",
            Self::PrevSafeL1Origin => "previous_target.safe_l2.l1origin",
            Self::PrevCurrentL1 => "previous_target.current_l1",
        }
    }
}

impl std::fmt::Display for RefName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a status was rejected. Maps 1:1 onto `lightcl.v1.RejectionReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// A required ref is unset (all-zero).
    MissingRef,
    /// `finalized ≤ safe ≤ local_safe ≤ unsafe` is violated.
    BadOrdering,
    /// `current_l1` is unset: the source is (re)starting.
    SourceNotReady,
    /// Our L1 has no block at the referenced number.
    L1NotFound,
    /// Our L1 has a different block at the referenced number.
    L1Mismatch,
    /// Our L1 could not be reached (decided by the service after retries).
    L1Unavailable,
    /// `finalized_l2` went backwards.
    FinalizedRegression,
    /// A different hash at an already-finalized number: critical.
    FinalizedConflict,
    /// `safe_l2` went backwards (or changed at the same number) without an L1 reorg.
    SafeReplay,
    /// `current_l1` went backwards together with safe or finalized: a replay.
    StatusReplay,
    /// Fewer than k sources reported this `safe_l2`.
    NoQuorum,
    /// The status belongs to another chain.
    WrongChain,
}

impl RejectReason {
    /// True for the rules that refuse a status only for being older than the stored target
    /// (`safe_replay`, `status_replay`, `finalized_regression`): what an honest status handled
    /// late looks like, not proof the source is wrong.
    pub fn is_behind(self) -> bool {
        matches!(self, Self::SafeReplay | Self::StatusReplay | Self::FinalizedRegression)
    }

    /// Every reason, for exhaustive tests and metric pre-registration.
    pub const ALL: [Self; 12] = [
        Self::MissingRef,
        Self::BadOrdering,
        Self::SourceNotReady,
        Self::L1NotFound,
        Self::L1Mismatch,
        Self::L1Unavailable,
        Self::FinalizedRegression,
        Self::FinalizedConflict,
        Self::SafeReplay,
        Self::StatusReplay,
        Self::NoQuorum,
        Self::WrongChain,
    ];

    /// Stable snake_case name (metric label, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingRef => "missing_ref",
            Self::BadOrdering => "bad_ordering",
            Self::SourceNotReady => "source_not_ready",
            Self::L1NotFound => "l1_not_found",
            Self::L1Mismatch => "l1_mismatch",
            Self::L1Unavailable => "l1_unavailable",
            Self::FinalizedRegression => "finalized_regression",
            Self::FinalizedConflict => "finalized_conflict",
            Self::SafeReplay => "safe_replay",
            Self::StatusReplay => "status_replay",
            Self::NoQuorum => "no_quorum",
            Self::WrongChain => "wrong_chain",
        }
    }

    /// True for reasons an operator must hear about loudly (a source contradicting finality).
    pub fn is_critical(self) -> bool {
        matches!(self, Self::FinalizedConflict)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected status: the reason, a human message and, when the reason is about one
/// reference, its name, number and the expected/actual hashes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// Machine-readable reason.
    pub reason: RejectReason,
    /// Human-readable explanation.
    pub message: String,
    /// The reference the reason is about.
    pub ref_name: Option<RefName>,
    /// Its block number (0 when not about one block).
    pub number: u64,
    /// The hash the status (or the previous target) claims.
    pub expected: Option<B256>,
    /// The hash our L1 (or the new status) has there.
    pub actual: Option<B256>,
}

impl Rejection {
    /// A rejection not tied to one reference.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            ref_name: None,
            number: 0,
            expected: None,
            actual: None,
        }
    }

    fn about(
        mut self,
        r: RefName,
        number: u64,
        expected: Option<B256>,
        actual: Option<B256>,
    ) -> Self {
        self.ref_name = Some(r);
        self.number = number;
        self.expected = expected;
        self.actual = actual;
        self
    }

    /// "Our L1 could not be reached" (the service decides when to give up).
    pub fn l1_unavailable(detail: impl std::fmt::Display) -> Self {
        Self::new(RejectReason::L1Unavailable, format!("our L1 RPC is unavailable: {detail}"))
    }
}

/// How a fetched block is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// Must exist with this hash.
    Strict,
    /// Accepted when above our L1 head; otherwise must exist with this hash.
    Lenient,
    /// Not a requirement: tells whether a previous view is still canonical.
    Probe,
}

/// One L1 reference to compare with our L1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct L1Check {
    /// Which reference.
    pub ref_name: RefName,
    /// Its number and claimed hash.
    pub block: BlockId,
    /// How to judge it.
    pub kind: CheckKind,
}

/// The L1 reads one status needs: every check plus the `latest` and `finalized` tags, all
/// answered by one JSON-RPC batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct L1Plan {
    /// Checks in reporting order (the first failing strict/lenient check is reported).
    pub checks: Vec<L1Check>,
}

impl L1Plan {
    /// Distinct block numbers to read, ascending.
    pub fn numbers(&self) -> Vec<u64> {
        self.checks.iter().map(|c| c.block.number).collect::<BTreeSet<_>>().into_iter().collect()
    }

    /// Numbers still to fetch after taking what `cache` holds, and the cached blocks.
    pub fn split(&self, cache: &L1Cache) -> (Vec<u64>, BTreeMap<u64, L1BlockRef>) {
        let mut fetch = Vec::new();
        let mut cached = BTreeMap::new();
        for n in self.numbers() {
            match cache.get(n) {
                Some(b) => {
                    cached.insert(n, *b);
                }
                None => fetch.push(n),
            }
        }
        (fetch, cached)
    }
}

/// What our L1 answered for a plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct L1Answers {
    /// Our L1 head (`latest`).
    pub head: L1BlockRef,
    /// Our L1 finalized block (`finalized`), if the node has one.
    pub finalized: Option<L1BlockRef>,
    /// Our L1 safe block (`safe`), if the node has one.
    pub safe: Option<L1BlockRef>,
    /// The block at each planned number; `None` when the node has none there.
    pub blocks: BTreeMap<u64, Option<L1BlockRef>>,
}

/// The L1 blocks a target was checked against.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct L1Evidence {
    /// Every block compared and found canonical, ascending by number.
    pub checked: Vec<BlockId>,
    /// Our L1 head at check time.
    pub l1_head: BlockId,
    /// Our L1 finalized block at check time (unset when none).
    pub l1_finalized: BlockId,
    /// Our L1 head, safe and finalized blocks at check time, as full refs (what the
    /// engine-drivers serve as `head_l1`, `safe_l1`, `finalized_l1`).
    pub view: L1View,
}

/// A status accepted as the next target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The next target (position = [`next_position`] of the previous one).
    pub target: Target,
    /// The L1 blocks it was checked against.
    pub evidence: L1Evidence,
    /// The sources behind it (the status's source; the service puts a quorum's supporters
    /// here).
    pub source_ids: Vec<String>,
    /// True when `current_l1` stepped back and the previous one was kept.
    pub kept_current_l1: bool,
    /// True when safe stepped back because the previous safe L1 origin was reorged out.
    pub l1_reorg: bool,
    /// True for a retreat published by the L1 watch ([`crate::retreat`]), not from a status.
    pub retreat: bool,
}

/// The decision about one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Publish this target, then [`Validator::commit`] it.
    Accept(Box<Accepted>),
    /// The status passed every check but says exactly what the last target says: publish
    /// nothing (a duplicate or a heartbeat; also how a second replica learns it lost a race).
    Unchanged,
    /// Publish this rejection.
    Reject(Rejection),
    /// The status passed every check but no position exists for a next target (the clock
    /// reads 0, or the stored target's revision and epoch are both at `u64::MAX`): publish
    /// nothing and tell the operator.
    NoPosition(PositionError),
}

/// True when our L1 block at `number` may be cached: at or below our L1 finalized block.
pub fn cacheable(number: u64, l1_finalized: Option<u64>) -> bool {
    l1_finalized.is_some_and(|f| number <= f)
}

/// A cache of finalized (immutable) L1 blocks by number, bounded; evicts the lowest numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L1Cache {
    blocks: BTreeMap<u64, L1BlockRef>,
    capacity: usize,
}

impl L1Cache {
    /// An empty cache holding at most `capacity` blocks.
    pub fn new(capacity: usize) -> Self {
        Self { blocks: BTreeMap::new(), capacity }
    }

    /// The cached block at `number`.
    pub fn get(&self, number: u64) -> Option<&L1BlockRef> {
        self.blocks.get(&number)
    }

    /// Number of cached blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Caches every fetched block at or below the answers' finalized block; returns how many
    /// were added.
    pub fn record(&mut self, answers: &L1Answers) -> usize {
        let fin = answers.finalized.map(|f| f.number);
        let mut added = 0;
        for (n, b) in &answers.blocks {
            if let Some(b) = b
                && b.number == *n
                && cacheable(*n, fin)
                && self.blocks.insert(*n, *b).is_none()
            {
                added += 1;
            }
        }
        while self.blocks.len() > self.capacity {
            self.blocks.pop_first();
        }
        added
    }
}

/// The validator's per-chain state machine.
#[derive(Debug, Clone)]
pub struct Validator {
    cfg: ValidatorConfig,
    last: Option<Target>,
    /// The clock (Unix ms) a new epoch is taken from; see [`Validator::set_clock`].
    now_ms: u64,
    /// The newest position the engine-drivers report; see [`Validator::set_drivers_newest`].
    drivers_newest: Option<Position>,
    /// Earlier stored targets: what a retreat may go back to ([`crate::retreat`]).
    history: History,
}

/// What one L1 watch tick decides ([`Validator::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchVerdict {
    /// The newest target's safe and local-safe L1 origins are canonical (or there is no
    /// target): publish nothing.
    Canonical,
    /// Publish this retreat (`retreat` set, no source), then [`Validator::commit`] it.
    Retreat(Box<Accepted>),
    /// A retreat is needed but cannot be computed: publish nothing, tell the operator.
    Stuck(RetreatError),
    /// A retreat is needed but no position exists for it.
    NoPosition(PositionError),
}

impl Validator {
    /// A validator continuing after `last` (the newest stored target, if any).
    pub fn new(cfg: ValidatorConfig, last: Option<Target>) -> Self {
        let mut history = History::default();
        if let Some(t) = last {
            history.record(t);
        }
        Self { cfg, last, now_ms: 1, drivers_newest: None, history }
    }

    /// The settings.
    pub fn config(&self) -> &ValidatorConfig {
        &self.cfg
    }

    /// The last committed target.
    pub fn last(&self) -> Option<&Target> {
        self.last.as_ref()
    }

    /// Sets the clock (Unix ms) the next decision takes a new epoch from when it starts a new
    /// history; the service sets it before each decision (a new validator reads 1 ms).
    pub fn set_clock(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Sets the newest position any engine-driver of the chain reports having seen or applied
    /// (None: none known). When it is ahead of the stored newest target (an older backup of the
    /// stream was restored), the next target starts a new epoch above it (see
    /// [`next_position`]); otherwise it changes nothing.
    pub fn set_drivers_newest(&mut self, newest: Option<Position>) {
        self.drivers_newest = newest;
    }

    /// The position the next target would get (see [`next_position`]).
    pub fn next_position(&self) -> Result<Position, PositionError> {
        next_position(self.last.as_ref().map(Position::of), self.drivers_newest, self.now_ms)
    }

    /// Replaces the state with the newest stored target (after a restart or a lost race).
    pub fn restore(&mut self, last: Option<Target>) {
        if let Some(t) = last {
            self.history.record(t);
        }
        self.last = last;
    }

    /// Remembers earlier stored targets (oldest first) as retreat candidates, e.g. read back
    /// from the stream at start-up.
    pub fn remember(&mut self, targets: impl IntoIterator<Item = Target>) {
        for t in targets {
            self.history.record(t);
        }
    }

    /// The retreat candidates.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// One L1 watch tick's reads ([`retreat::watch_plan`]); `None` without a target.
    pub fn watch_plan(&self) -> Option<L1Plan> {
        self.last.as_ref().map(retreat::watch_plan)
    }

    /// True when `answers` show the newest target's safe or local-safe origin reorged out.
    pub fn needs_retreat(&self, answers: &L1Answers) -> bool {
        self.last.as_ref().is_some_and(|l| retreat::reorged(l, answers))
    }

    /// The reads a retreat needs ([`retreat::retreat_plan`]); `None` without a target.
    pub fn retreat_plan(&self) -> Option<L1Plan> {
        self.last.as_ref().map(|l| retreat::retreat_plan(l, &self.history))
    }

    /// Decides a watch tick from our L1's answers to [`Validator::retreat_plan`]; does not
    /// commit (see [`crate::retreat`] for the rules).
    pub fn watch(&self, answers: &L1Answers) -> WatchVerdict {
        let Some(last) = &self.last else { return WatchVerdict::Canonical };
        let r = match retreat::retreat(last, &self.history, answers) {
            Ok(None) => return WatchVerdict::Canonical,
            Ok(Some(r)) => r,
            Err(e) => return WatchVerdict::Stuck(e),
        };
        let next = match self.next_position() {
            Ok(p) => p,
            Err(e) => return WatchVerdict::NoPosition(e),
        };
        let target = Target { epoch: next.epoch, revision: next.revision, ..r.apply(last) };
        let view = l1_view(answers);
        WatchVerdict::Retreat(Box::new(Accepted {
            target,
            evidence: L1Evidence {
                checked: r.checked,
                l1_head: view.head.id(),
                l1_finalized: view.finalized.id(),
                view,
            },
            source_ids: Vec::new(),
            kept_current_l1: false,
            l1_reorg: true,
            retreat: true,
        }))
    }

    /// Records that `target` was stored: it becomes the previous target of the next decision.
    pub fn commit(&mut self, target: Target) {
        let replaces = |l: &Target| {
            Position::of(&target) > Position::of(l) || !epoch_plausible(l.epoch, self.now_ms)
        };
        if self.last.as_ref().is_none_or(replaces) {
            self.last = Some(target);
            self.history.record(target);
        }
    }

    /// Chain and structural checks, then the L1 reads this status needs.
    pub fn plan(&self, obs: &Observation) -> Result<L1Plan, Rejection> {
        if obs.chain_id != self.cfg.chain_id {
            return Err(Rejection::new(
                RejectReason::WrongChain,
                format!(
                    "status is for chain {}, this validator serves chain {}",
                    obs.chain_id, self.cfg.chain_id
                ),
            ));
        }
        check_structure(&obs.status)?;
        let s = &obs.status;
        let local_safe = s.local_safe();
        let mut checks = vec![
            strict(RefName::SafeL1Origin, s.safe_l2.l1origin),
            strict(RefName::LocalSafeL1Origin, local_safe.l1origin),
            strict(RefName::FinalizedL1Origin, s.finalized_l2.l1origin),
            strict(RefName::CurrentL1, s.current_l1.id()),
            L1Check {
                ref_name: RefName::UnsafeL1Origin,
                block: s.unsafe_l2.l1origin,
                kind: CheckKind::Lenient,
            },
        ];
        if let Some(p) = &self.last {
            if safe_stepped_back(&s.safe_l2, &p.safe_l2) {
                checks.push(probe(RefName::PrevSafeL1Origin, p.safe_l2.l1origin));
            }
            if l1_stepped_back(&s.current_l1, &p.current_l1) {
                checks.push(probe(RefName::PrevCurrentL1, p.current_l1.id()));
            }
        }
        Ok(L1Plan { checks })
    }

    /// Judges a status against our L1's answers and the previous target; does not commit the
    /// target. (Several sources are combined before, by [`crate::quorum`].)
    pub fn decide(&mut self, obs: &Observation, answers: &L1Answers) -> Verdict {
        let plan = match self.plan(obs) {
            Ok(p) => p,
            Err(r) => return Verdict::Reject(r),
        };
        let judged = match judge(&plan, answers) {
            Ok(j) => j,
            Err(r) => return Verdict::Reject(r),
        };
        let s = &obs.status;

        let mut current_l1 = s.current_l1;
        let mut kept_current_l1 = false;
        let mut l1_reorg = false;
        if let Some(p) = &self.last {
            // Finalized: never backwards, never another hash at the same number.
            if s.finalized_l2.number < p.finalized_l2.number {
                return Verdict::Reject(
                    Rejection::new(
                        RejectReason::FinalizedRegression,
                        format!(
                            "finalized_l2 went backwards from {} to {}",
                            p.finalized_l2.id(),
                            s.finalized_l2.id()
                        ),
                    )
                    .about(
                        RefName::FinalizedL2,
                        s.finalized_l2.number,
                        Some(p.finalized_l2.hash),
                        Some(s.finalized_l2.hash),
                    ),
                );
            }
            if s.finalized_l2.number == p.finalized_l2.number
                && s.finalized_l2.hash != p.finalized_l2.hash
            {
                return Verdict::Reject(
                    Rejection::new(
                        RejectReason::FinalizedConflict,
                        format!(
                            "CRITICAL: finalized_l2 #{} has hash {} but the finalized target has {}",
                            s.finalized_l2.number, s.finalized_l2.hash, p.finalized_l2.hash
                        ),
                    )
                    .about(RefName::FinalizedL2, s.finalized_l2.number, Some(p.finalized_l2.hash), Some(s.finalized_l2.hash)),
                );
            }
            // Safe: backwards only after an L1 reorg of the previous safe origin.
            if safe_stepped_back(&s.safe_l2, &p.safe_l2) {
                match judged.probe(RefName::PrevSafeL1Origin) {
                    Some(false) => l1_reorg = true,
                    Some(true) => {
                        return Verdict::Reject(
                            Rejection::new(
                                RejectReason::SafeReplay,
                                format!(
                                    "safe_l2 stepped back from {} to {} while the previous safe L1 origin {} is still canonical",
                                    p.safe_l2.id(),
                                    s.safe_l2.id(),
                                    p.safe_l2.l1origin
                                ),
                            )
                            .about(RefName::SafeL2, s.safe_l2.number, Some(p.safe_l2.hash), Some(s.safe_l2.hash)),
                        );
                    }
                    None => return Verdict::Reject(not_fetched(p.safe_l2.l1origin.number)),
                }
            }
            // current_l1: a restarting source re-reads L1 from an older block.
            if l1_stepped_back(&s.current_l1, &p.current_l1) {
                match judged.probe(RefName::PrevCurrentL1) {
                    Some(false) => {}
                    Some(true) => {
                        // A restarting source keeps its safe and finalized heads; one whose
                        // safe or finalized steps back too is replaying an old status. Its
                        // tip may be behind (a driver never rewinds the EL's tip for it).
                        let heads_back = s.safe_l2.number < p.safe_l2.number
                            || s.finalized_l2.number < p.finalized_l2.number;
                        if heads_back {
                            return Verdict::Reject(
                                Rejection::new(
                                    RejectReason::StatusReplay,
                                    format!(
                                        "current_l1 stepped back from {} to {} together with the L2 heads while the previous current_l1 is still canonical",
                                        p.current_l1.id(),
                                        s.current_l1.id()
                                    ),
                                )
                                .about(RefName::CurrentL1, s.current_l1.number, Some(p.current_l1.hash), Some(s.current_l1.hash)),
                            );
                        }
                        current_l1 = p.current_l1;
                        kept_current_l1 = true;
                    }
                    None => return Verdict::Reject(not_fetched(p.current_l1.number)),
                }
            }
        }

        let next = match self.next_position() {
            Ok(p) => p,
            Err(e) => return Verdict::NoPosition(e),
        };
        let target = Target {
            chain_id: self.cfg.chain_id,
            epoch: next.epoch,
            revision: next.revision,
            unsafe_l2: s.unsafe_l2,
            safe_l2: s.safe_l2,
            local_safe_l2: s.local_safe(),
            finalized_l2: s.finalized_l2,
            current_l1,
        };
        // Only a continued history can be "unchanged": a new epoch is always published.
        if let Some(p) = self.last.as_ref().filter(|p| p.epoch == next.epoch) {
            let same =
                Target { epoch: p.epoch, revision: p.revision, chain_id: p.chain_id, ..target };
            if same == *p {
                return Verdict::Unchanged;
            }
        }
        let mut evidence = judged.evidence;
        if kept_current_l1 {
            evidence.checked.push(current_l1.id());
            evidence.checked.sort_by_key(|b| (b.number, b.hash));
            evidence.checked.dedup();
        }
        Verdict::Accept(Box::new(Accepted {
            target,
            evidence,
            source_ids: vec![obs.source_id.clone()],
            kept_current_l1,
            l1_reorg,
            retreat: false,
        }))
    }
}

impl From<&crate::quorum::NoQuorum> for Rejection {
    fn from(e: &crate::quorum::NoQuorum) -> Self {
        use crate::quorum::Label;
        let name = match e.label {
            Label::Unsafe => RefName::UnsafeL2,
            Label::LocalSafe => RefName::LocalSafeL2,
            Label::Safe => RefName::SafeL2,
            Label::Finalized => RefName::FinalizedL2,
            Label::CurrentL1 => RefName::CurrentL1,
        };
        Self::new(RejectReason::NoQuorum, e.to_string()).about(name, 0, None, None)
    }
}

/// Structural checks of one status (docs/architecture.md#structural-checks), in order: `current_l1` set, required refs
/// set, `finalized ≤ safe ≤ local_safe ≤ unsafe` by number.
pub fn check_structure(s: &SyncStatus) -> Result<(), Rejection> {
    if s.current_l1.is_unset() {
        return Err(Rejection::new(
            RejectReason::SourceNotReady,
            "current_l1 is unset: the source is (re)starting and has not read L1 yet",
        )
        .about(RefName::CurrentL1, 0, None, None));
    }
    let local_safe = s.local_safe();
    let refs = [
        (RefName::UnsafeL2, &s.unsafe_l2),
        (RefName::SafeL2, &s.safe_l2),
        (RefName::LocalSafeL2, &local_safe),
        (RefName::FinalizedL2, &s.finalized_l2),
    ];
    for (name, r) in refs {
        if r.is_unset() {
            return Err(Rejection::new(
                RejectReason::MissingRef,
                format!("{name} is unset (zero hash and number)"),
            )
            .about(name, 0, None, None));
        }
    }
    let order = [
        (RefName::FinalizedL2, &s.finalized_l2, RefName::SafeL2, &s.safe_l2),
        (RefName::SafeL2, &s.safe_l2, RefName::LocalSafeL2, &local_safe),
        (RefName::LocalSafeL2, &local_safe, RefName::UnsafeL2, &s.unsafe_l2),
    ];
    for (lo_name, lo, hi_name, hi) in order {
        if lo.number > hi.number {
            return Err(Rejection::new(
                RejectReason::BadOrdering,
                format!("{lo_name} #{} is above {hi_name} #{}", lo.number, hi.number),
            )
            .about(lo_name, lo.number, None, None));
        }
    }
    Ok(())
}

/// Outcome of comparing the fetched blocks with a plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Judged {
    evidence: L1Evidence,
    probes: Vec<(RefName, bool)>,
}

impl Judged {
    fn probe(&self, r: RefName) -> Option<bool> {
        self.probes.iter().find(|(n, _)| *n == r).map(|(_, c)| *c)
    }
}

/// Our L1's labels as an [`L1View`]: `safe` falls back to `finalized` for a node without the
/// `safe` tag (never ahead of the real safe block, so never claims more than L1 has).
pub fn l1_view(answers: &L1Answers) -> L1View {
    let finalized = answers.finalized.unwrap_or_default();
    L1View { head: answers.head, safe: answers.safe.unwrap_or(finalized), finalized }
}

/// Compares every check with what our L1 returned (number, then the node's hash).
fn judge(plan: &L1Plan, answers: &L1Answers) -> Result<Judged, Rejection> {
    let mut out = Judged {
        evidence: L1Evidence {
            checked: Vec::new(),
            l1_head: answers.head.id(),
            l1_finalized: answers.finalized.map(|f| f.id()).unwrap_or_default(),
            view: l1_view(answers),
        },
        probes: Vec::new(),
    };
    let mut checked = BTreeSet::new();
    for c in &plan.checks {
        let n = c.block.number;
        let Some(fetched) = answers.blocks.get(&n) else {
            return Err(not_fetched(n).about(c.ref_name, n, Some(c.block.hash), None));
        };
        // A block answered for another number is no answer for this one.
        let found = fetched.filter(|b| b.number == n);
        match c.kind {
            CheckKind::Probe => {
                out.probes.push((c.ref_name, found.is_some_and(|b| b.hash == c.block.hash)));
            }
            CheckKind::Lenient if n > answers.head.number && found.is_none() => {}
            CheckKind::Strict | CheckKind::Lenient => match found {
                None => {
                    return Err(Rejection::new(
                        RejectReason::L1NotFound,
                        format!(
                            "{}: our L1 has no block #{n} (expected {})",
                            c.ref_name, c.block.hash
                        ),
                    )
                    .about(c.ref_name, n, Some(c.block.hash), None));
                }
                Some(b) if b.hash != c.block.hash => {
                    return Err(Rejection::new(
                        RejectReason::L1Mismatch,
                        format!(
                            "{}: our L1 block #{n} is {}, the status says {}",
                            c.ref_name, b.hash, c.block.hash
                        ),
                    )
                    .about(c.ref_name, n, Some(c.block.hash), Some(b.hash)));
                }
                Some(b) => {
                    checked.insert((b.number, b.hash));
                }
            },
        }
    }
    out.evidence.checked =
        checked.into_iter().map(|(number, hash)| BlockId { hash, number }).collect();
    Ok(out)
}

fn strict(ref_name: RefName, block: BlockId) -> L1Check {
    L1Check { ref_name, block, kind: CheckKind::Strict }
}

fn probe(ref_name: RefName, block: BlockId) -> L1Check {
    L1Check { ref_name, block, kind: CheckKind::Probe }
}

fn not_fetched(n: u64) -> Rejection {
    Rejection::l1_unavailable(format!("block #{n} was not fetched"))
}

/// Safe moved to a lower number, or to another block at the same number.
fn safe_stepped_back(new: &L2BlockRef, prev: &L2BlockRef) -> bool {
    new.number < prev.number || (new.number == prev.number && new.hash != prev.hash)
}

/// `current_l1` moved to a lower number, or to another block at the same number.
fn l1_stepped_back(new: &L1BlockRef, prev: &L1BlockRef) -> bool {
    new.number < prev.number || (new.number == prev.number && new.hash != prev.hash)
}
