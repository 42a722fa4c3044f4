//! Property tests: random target histories built on a model L1, then a random L1 reorg; the
//! retreat is checked against an independent oracle of what is canonical.

use std::collections::BTreeMap;

use alloy_primitives::B256;
use proptest::prelude::*;

use super::*;
use crate::validate::{Validator, ValidatorConfig, WatchVerdict};

/// A model L1: blocks below `split` are shared by every fork; from `split` on, fork `fork`.
#[derive(Debug, Clone, Copy)]
struct Chain {
    fork: u8,
    split: u64,
    head: u64,
}

fn l1_hash(fork: u8, split: u64, n: u64) -> B256 {
    let f = if n < split { 0 } else { fork };
    let mut b = [0u8; 32];
    b[0] = 0x11;
    b[1] = f;
    b[24..].copy_from_slice(&n.to_be_bytes());
    B256::from(b)
}

impl Chain {
    fn hash(&self, n: u64) -> B256 {
        l1_hash(self.fork, self.split, n)
    }

    fn block(&self, n: u64) -> Option<L1BlockRef> {
        (n <= self.head).then(|| L1BlockRef {
            hash: self.hash(n),
            number: n,
            parent_hash: if n == 0 { B256::ZERO } else { self.hash(n - 1) },
            timestamp: n * 12,
        })
    }

    fn canonical(&self, id: BlockId) -> bool {
        self.block(id.number).is_some_and(|b| b.hash == id.hash)
    }

    /// Answers to `plan` (plus the tags), as our L1 node would give them.
    fn answer(&self, plan: &L1Plan) -> L1Answers {
        let mut blocks = BTreeMap::new();
        for n in plan.numbers() {
            blocks.insert(n, self.block(n));
        }
        L1Answers {
            head: self.block(self.head).unwrap_or_default(),
            finalized: self.block(0),
            safe: None,
            blocks,
        }
    }
}

/// An L2 block at `n` whose origin (block `n / 2`) is on `chain`.
fn l2(n: u64, chain: &Chain) -> L2BlockRef {
    let mut h = [0u8; 32];
    h[0] = 0x22;
    h[1] = chain.fork;
    h[2] = u8::try_from(chain.split.min(255)).unwrap_or(255);
    h[24..].copy_from_slice(&n.to_be_bytes());
    L2BlockRef {
        hash: B256::from(h),
        number: n,
        l1origin: BlockId { hash: chain.hash(n / 2), number: n / 2 },
        ..L2BlockRef::default()
    }
}

#[derive(Debug, Clone)]
struct Case {
    /// The L1 every target was validated on, and the targets (oldest first).
    targets: Vec<Target>,
    /// Our L1 after the reorg.
    after: Chain,
}

/// One step of the L2 heads: (finalized, safe, local-safe, unsafe) increments, and whether the
/// target was validated on an older L1 branch (fork 2 from a random split).
fn steps() -> impl Strategy<Value = Vec<(u8, u8, u8, u8, Option<u64>)>> {
    prop::collection::vec(
        (0u8..3, 0u8..4, 0u8..4, 0u8..5, prop::option::weighted(0.15, 1u64..40)),
        1..24,
    )
}

fn case() -> impl Strategy<Value = Case> {
    (steps(), 1u64..30, 0u64..30, 1u8..4).prop_map(|(steps, split, extra, fork)| {
        let before = Chain { fork: 0, split: u64::MAX, head: 200 };
        let (mut f, mut s, mut ls, mut u) = (2u64, 4u64, 6u64, 8u64);
        let mut targets = Vec::new();
        for (i, (df, ds, dl, du, old)) in steps.into_iter().enumerate() {
            f += u64::from(df);
            s = (s + u64::from(ds)).max(f);
            ls = (ls + u64::from(dl)).max(s);
            u = (u + u64::from(du)).max(ls);
            let on = old.map_or(before, |split| Chain { fork: 2, split, head: 200 });
            let fin_on = before; // finalized was validated against finalized L1
            let rev = u64::try_from(i).unwrap_or(u64::MAX) + 1;
            targets.push(Target {
                chain_id: 10,
                epoch: 1,
                revision: rev,
                unsafe_l2: l2(u, &on),
                safe_l2: l2(s, &on),
                local_safe_l2: l2(ls, &on),
                finalized_l2: l2(f, &fin_on),
                current_l1: on.block(ls / 2 + 1).unwrap_or_default(),
            });
        }
        // The reorg: from `split`, a new branch as long as before plus `extra` (maybe shorter).
        let last_origin = targets.last().map_or(0, |t| t.unsafe_l2.number / 2 + 1);
        let after = Chain { fork, split, head: split.max(last_origin.saturating_sub(extra)) };
        Case { targets, after }
    })
}

fn history_of(targets: &[Target]) -> History {
    let mut h = History::default();
    for t in targets {
        h.record(*t);
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_retreat_only_names_canonical_labels_and_never_moves_finalized(c in case()) {
        let last = *c.targets.last().unwrap();
        let history = history_of(&c.targets);
        let answers = c.after.answer(&retreat_plan(&last, &history));
        let safe_ok = c.after.canonical(last.safe_l2.l1origin);
        let local_ok = c.after.canonical(last.local_safe_l2.l1origin);
        prop_assert_eq!(reorged(&last, &answers), !(safe_ok && local_ok));
        match retreat(&last, &history, &answers) {
            Ok(None) => prop_assert!(safe_ok && local_ok),
            Err(RetreatError::FinalizedOriginGone(n)) => {
                prop_assert!(!(safe_ok && local_ok));
                prop_assert_eq!(n, last.finalized_l2.l1origin.number);
                prop_assert!(!c.after.canonical(last.finalized_l2.l1origin));
            }
            Err(e @ RetreatError::NotRead(_)) => prop_assert!(false, "{e}"),
            Ok(Some(r)) => {
                prop_assert!(!(safe_ok && local_ok));
                let t = r.apply(&last);
                // Every label set is canonical.
                prop_assert!(c.after.canonical(t.safe_l2.l1origin));
                prop_assert!(c.after.canonical(t.local_safe_l2.l1origin));
                prop_assert!(c.after.canonical(t.current_l1.id()));
                for b in &r.checked {
                    prop_assert!(c.after.canonical(*b));
                }
                // Finalized, unsafe and the position are untouched; safe never moves forward.
                prop_assert_eq!(t.finalized_l2, last.finalized_l2);
                prop_assert_eq!(t.unsafe_l2, last.unsafe_l2);
                prop_assert_eq!((t.epoch, t.revision), (last.epoch, last.revision));
                prop_assert!(t.safe_l2.number <= last.safe_l2.number);
                prop_assert!(t.local_safe_l2.number <= last.local_safe_l2.number);
                // Ordering holds.
                prop_assert!(t.finalized_l2.number <= t.safe_l2.number);
                prop_assert!(t.safe_l2.number <= t.local_safe_l2.number);
                prop_assert!(t.local_safe_l2.number <= t.unsafe_l2.number);
                prop_assert!(t.current_l1.number >= t.local_safe_l2.l1origin.number);
                // A canonical safe head is kept; otherwise the newest canonical one is taken.
                if safe_ok {
                    prop_assert_eq!(t.safe_l2, last.safe_l2);
                } else {
                    let better = c.targets.iter().map(|x| x.safe_l2).filter(|s| {
                        s.number > t.safe_l2.number
                            && s.number <= last.safe_l2.number
                            && c.after.canonical(s.l1origin)
                    });
                    prop_assert_eq!(better.count(), 0);
                }
            }
        }
    }

    #[test]
    fn the_watch_publishes_one_retreat_and_is_then_quiet(c in case()) {
        let mut v = Validator::new(ValidatorConfig { chain_id: 10, quorum: 1 }, None);
        v.set_clock(1_000);
        v.remember(c.targets[..c.targets.len() - 1].iter().copied());
        v.restore(c.targets.last().copied());
        let last = *v.last().unwrap();
        let watch = c.after.answer(&v.watch_plan().unwrap());
        let needs = v.needs_retreat(&watch);
        let answers = c.after.answer(&v.retreat_plan().unwrap());
        match v.watch(&answers) {
            WatchVerdict::Canonical => prop_assert!(!needs),
            WatchVerdict::Stuck(e) => {
                prop_assert!(needs);
                prop_assert_eq!(e, RetreatError::FinalizedOriginGone(last.finalized_l2.l1origin.number));
            }
            WatchVerdict::NoPosition(e) => prop_assert!(false, "{e}"),
            WatchVerdict::Retreat(a) => {
                prop_assert!(needs && a.retreat && a.source_ids.is_empty());
                prop_assert!(Position::of(&a.target) > Position::of(&last));
                prop_assert_eq!(a.target.finalized_l2, last.finalized_l2);
                v.commit(a.target);
                // Converged: the next tick finds nothing to do.
                let again = c.after.answer(&v.watch_plan().unwrap());
                prop_assert!(!v.needs_retreat(&again));
                let answers = c.after.answer(&v.retreat_plan().unwrap());
                prop_assert_eq!(v.watch(&answers), WatchVerdict::Canonical);
            }
        }
    }
}

use crate::revision::Position;

#[test]
fn the_history_is_bounded_and_keeps_repeated_labels_once() {
    let chain = Chain { fork: 0, split: u64::MAX, head: 500 };
    let mut h = History::default();
    for n in 0..(HISTORY_CAPACITY as u64 * 2) {
        let t = Target { safe_l2: l2(n, &chain), revision: n, ..Target::default() };
        h.record(t);
        h.record(Target { revision: n + 1000, ..t });
    }
    assert_eq!(h.len(), HISTORY_CAPACITY);
    assert_eq!(h.newest_first().next().unwrap().safe_l2.number, HISTORY_CAPACITY as u64 * 2 - 1);
}

#[test]
fn a_reorg_of_the_safe_origin_goes_back_to_the_newest_canonical_safe_head() {
    let before = Chain { fork: 0, split: u64::MAX, head: 30 };
    let t = |s: u64, on: &Chain| Target {
        chain_id: 10,
        epoch: 1,
        revision: s,
        unsafe_l2: l2(s + 4, on),
        safe_l2: l2(s, on),
        local_safe_l2: l2(s + 2, on),
        finalized_l2: l2(2, &before),
        current_l1: on.block(s / 2 + 2).unwrap_or_default(),
    };
    let targets: Vec<Target> = [4, 8, 12, 16, 20].iter().map(|s| t(*s, &before)).collect();
    // L1 reorged from block 7: safe #16 (origin 8) and #20 (origin 10) are gone, #12 (6) stays.
    let after = Chain { fork: 1, split: 7, head: 12 };
    let last = *targets.last().unwrap();
    let history = history_of(&targets);
    let answers = after.answer(&retreat_plan(&last, &history));
    let r = retreat(&last, &history, &answers).unwrap().unwrap();
    assert_eq!(r.safe_l2.number, 12);
    assert_eq!(r.local_safe_l2.number, 12, "local safe #14 (origin 7) is gone too");
    assert_eq!(r.current_l1.number, 6, "current_l1 falls back to the local safe origin");
    // Without any remembered canonical safe head, the finalized head is the safe head.
    let only_last = history_of(&[last]);
    let answers = after.answer(&retreat_plan(&last, &only_last));
    let r = retreat(&last, &only_last, &answers).unwrap().unwrap();
    assert_eq!((r.safe_l2, r.local_safe_l2), (last.finalized_l2, last.finalized_l2));
    // The watch plan alone is enough to see it; nothing read is nothing known.
    assert!(reorged(&last, &after.answer(&watch_plan(&last))));
    assert!(!reorged(&last, &L1Answers::default()));
    assert_eq!(
        retreat(&last, &history, &L1Answers::default()),
        Err(RetreatError::NotRead(last.safe_l2.l1origin.number))
    );
}
