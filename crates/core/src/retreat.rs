//! L1 watch and retreat (docs/architecture.md#l1-watch-and-retreat): what the validator
//! publishes when its own L1 reorganises under the newest target, without waiting for the
//! source to notice.
//!
//! Every watch tick reads our L1 at the L1 origins of the newest target's safe and local-safe
//! heads ([`watch_plan`]). When either is no longer canonical ([`reorged`]), the validator reads
//! the origins of every earlier validated target it remembers ([`History`], [`retreat_plan`])
//! and [`retreat`] picks, per label, the newest one that is still canonical:
//! - `safe_l2`: the newest remembered safe head whose L1 origin is canonical, between the
//!   target's finalized head and its safe head by number; the finalized head itself when none;
//! - `local_safe_l2`: kept when its origin is canonical, else the newest remembered local-safe
//!   head with a canonical origin between the new safe head and the old local-safe head; the
//!   new safe head when none;
//! - `current_l1`: kept when canonical, else the newest remembered canonical one at or above
//!   the new local-safe head's origin; else that origin block itself.
//!
//! Invariants: a retreat never moves finalized (it is never lowered, and a finalized head
//! whose origin is gone stops the retreat instead: [`RetreatError::FinalizedOriginGone`]);
//! never moves safe or local safe forward; keeps `finalized ≤ safe ≤ local_safe ≤ unsafe`;
//! every label it sets has an L1 origin our L1 answered as canonical. The unsafe head is kept:
//! it is never checked strictly (its origin may be ahead of our L1) and the source replaces it.

use std::collections::VecDeque;

use crate::status::{BlockId, L1BlockRef, L2BlockRef};
use crate::target::Target;
use crate::validate::{CheckKind, L1Answers, L1Check, L1Plan, RefName};

#[cfg(test)]
mod proptests;

/// How many earlier targets the validator remembers as retreat candidates.
pub const HISTORY_CAPACITY: usize = 64;

/// The validated targets a retreat may go back to, newest last; bounded by
/// [`HISTORY_CAPACITY`] (the oldest are forgotten first).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    targets: VecDeque<Target>,
}

impl History {
    /// Remembers `t` (a target that was stored); the same labels twice in a row are kept once.
    pub fn record(&mut self, t: Target) {
        if self.targets.back().is_some_and(|b| same_labels(b, &t)) {
            return;
        }
        self.targets.push_back(t);
        while self.targets.len() > HISTORY_CAPACITY {
            self.targets.pop_front();
        }
    }

    /// Remembered targets, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().rev()
    }

    /// How many targets are remembered.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

fn same_labels(a: &Target, b: &Target) -> bool {
    a.safe_l2 == b.safe_l2
        && a.local_safe_l2 == b.local_safe_l2
        && a.finalized_l2 == b.finalized_l2
        && a.current_l1 == b.current_l1
}

/// Why no retreat can be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RetreatError {
    /// The finalized head's L1 origin is not canonical on our L1: nothing below it may be
    /// published (finalized never moves back), so the validator publishes nothing and alerts.
    #[error(
        "the L1 origin #{0} of the finalized L2 head is no longer canonical on our L1: \
         finalized cannot move back, nothing is published (is our L1 node on another chain?)"
    )]
    FinalizedOriginGone(u64),
    /// Our L1 was not asked (or did not answer) for a block the retreat needs.
    #[error("our L1 block #{0} was not read")]
    NotRead(u64),
}

/// The labels a retreat publishes in place of the newest target's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retreat {
    /// The new safe head (the finalized head when no remembered safe head is canonical).
    pub safe_l2: L2BlockRef,
    /// The new local-safe head.
    pub local_safe_l2: L2BlockRef,
    /// The new `current_l1`.
    pub current_l1: L1BlockRef,
    /// The canonical L1 blocks the new labels rest on (origins and `current_l1`), ascending.
    pub checked: Vec<BlockId>,
}

impl Retreat {
    /// `last` with these labels (position unchanged: the caller sets the next one).
    pub fn apply(&self, last: &Target) -> Target {
        Target {
            safe_l2: self.safe_l2,
            local_safe_l2: self.local_safe_l2,
            current_l1: self.current_l1,
            ..*last
        }
    }
}

fn probe(ref_name: RefName, block: BlockId) -> L1Check {
    L1Check { ref_name, block, kind: CheckKind::Probe }
}

/// One watch tick's reads: the L1 origins of `last`'s safe and local-safe heads.
pub fn watch_plan(last: &Target) -> L1Plan {
    L1Plan {
        checks: vec![
            probe(RefName::PrevSafeL1Origin, last.safe_l2.l1origin),
            probe(RefName::PrevSafeL1Origin, last.local_safe_l2.l1origin),
        ],
    }
}

/// True when our L1 answered a block at `id.number` with `id.hash`.
pub fn canonical(answers: &L1Answers, id: BlockId) -> bool {
    block_at(answers, id.number).is_some_and(|b| b.hash == id.hash)
}

fn block_at(answers: &L1Answers, number: u64) -> Option<L1BlockRef> {
    answers.blocks.get(&number).copied().flatten().filter(|b| b.number == number)
}

fn read(answers: &L1Answers, number: u64) -> bool {
    answers.blocks.contains_key(&number)
}

/// True when the answers (to at least [`watch_plan`]) show that the L1 origin of `last`'s
/// safe or local-safe head was reorged out. A block not read counts as canonical (nothing is
/// known against it).
pub fn reorged(last: &Target, answers: &L1Answers) -> bool {
    [last.safe_l2.l1origin, last.local_safe_l2.l1origin]
        .into_iter()
        .any(|o| read(answers, o.number) && !canonical(answers, o))
}

/// The reads a retreat needs: `last`'s origins, its finalized head's origin and `current_l1`,
/// and the same for every remembered target.
pub fn retreat_plan(last: &Target, history: &History) -> L1Plan {
    let mut checks = Vec::new();
    for t in std::iter::once(last).chain(history.newest_first()) {
        checks.push(probe(RefName::PrevSafeL1Origin, t.safe_l2.l1origin));
        checks.push(probe(RefName::PrevSafeL1Origin, t.local_safe_l2.l1origin));
        checks.push(probe(RefName::PrevCurrentL1, t.current_l1.id()));
    }
    checks.push(probe(RefName::FinalizedL1Origin, last.finalized_l2.l1origin));
    L1Plan { checks }
}

/// The retreat of `last` given our L1's answers to [`retreat_plan`]; `None` when the safe
/// and local-safe origins are both still canonical (nothing to do). See the module doc for
/// how each label is chosen.
pub fn retreat(
    last: &Target,
    history: &History,
    answers: &L1Answers,
) -> Result<Option<Retreat>, RetreatError> {
    let fin = last.finalized_l2;
    for o in [last.safe_l2.l1origin, last.local_safe_l2.l1origin, fin.l1origin] {
        if !read(answers, o.number) {
            return Err(RetreatError::NotRead(o.number));
        }
    }
    let canon = |id: BlockId| canonical(answers, id);
    let safe_ok = canon(last.safe_l2.l1origin);
    let local_ok = canon(last.local_safe_l2.l1origin);
    if safe_ok && local_ok {
        return Ok(None);
    }
    if !canon(fin.l1origin) {
        return Err(RetreatError::FinalizedOriginGone(fin.l1origin.number));
    }
    let newest = |pick: fn(&Target) -> L2BlockRef, lo: u64, hi: u64| {
        history
            .newest_first()
            .map(pick)
            .find(|r| (lo..=hi).contains(&r.number) && canon(r.l1origin))
    };
    let safe = if safe_ok {
        last.safe_l2
    } else {
        newest(|t| t.safe_l2, fin.number, last.safe_l2.number).unwrap_or(fin)
    };
    let local_safe = if local_ok && last.local_safe_l2.number >= safe.number {
        last.local_safe_l2
    } else {
        newest(|t| t.local_safe_l2, safe.number, last.local_safe_l2.number).unwrap_or(safe)
    };
    let floor = local_safe.l1origin.number;
    let current_l1 = if canon(last.current_l1.id()) && last.current_l1.number >= floor {
        last.current_l1
    } else {
        let remembered = history.newest_first().map(|t| t.current_l1).find(|c| {
            (floor..=last.current_l1.number.max(floor)).contains(&c.number) && canon(c.id())
        });
        match remembered {
            Some(c) => c,
            None => block_at(answers, floor)
                .filter(|b| b.hash == local_safe.l1origin.hash)
                .ok_or(RetreatError::NotRead(floor))?,
        }
    };
    let mut checked = vec![safe.l1origin, local_safe.l1origin, fin.l1origin, current_l1.id()];
    checked.sort_by_key(|b| (b.number, b.hash));
    checked.dedup();
    Ok(Some(Retreat { safe_l2: safe, local_safe_l2: local_safe, current_l1, checked }))
}
