//! Unit tests: every rule and every rejection reason, by name.

use super::*;

pub(super) const CHAIN: u64 = 10;

pub(super) fn hash(n: u64, fork: u8) -> B256 {
    let mut b = [0u8; 32];
    b[0] = fork + 1;
    b[24..].copy_from_slice(&n.to_be_bytes());
    B256::from(b)
}

/// A model L1 chain: the canonical hash at each number, and the finalized number.
#[derive(Debug, Clone)]
pub(super) struct L1 {
    pub forks: Vec<u8>,
    pub finalized: u64,
}

impl L1 {
    pub fn new(len: u64) -> Self {
        Self { forks: vec![0; len as usize + 1], finalized: len / 2 }
    }

    pub fn head(&self) -> u64 {
        self.forks.len() as u64 - 1
    }

    pub fn block(&self, n: u64) -> Option<L1BlockRef> {
        let fork = *self.forks.get(n as usize)?;
        Some(L1BlockRef {
            hash: hash(n, fork),
            number: n,
            parent_hash: hash(n.saturating_sub(1), fork),
            timestamp: 12 * n,
        })
    }

    /// The id at `n`; above our head, the id the next block would have on this fork (a
    /// source whose L1 is ahead of ours).
    pub fn id(&self, n: u64) -> BlockId {
        match self.block(n) {
            Some(b) => b.id(),
            None => BlockId { hash: hash(n, *self.forks.last().unwrap_or(&0)), number: n },
        }
    }

    /// Replaces the last `depth` blocks with a new fork (as `anvil_reorg`).
    pub fn reorg(&mut self, depth: u64, fork: u8) {
        let len = self.forks.len();
        for f in &mut self.forks[len - depth as usize..] {
            *f = fork;
        }
    }

    pub fn mine(&mut self, n: u64) {
        let fork = *self.forks.last().unwrap_or(&0);
        for _ in 0..n {
            self.forks.push(fork);
        }
    }

    pub fn answer(&self, plan: &L1Plan) -> L1Answers {
        L1Answers {
            head: self.block(self.head()).unwrap_or_default(),
            finalized: self.block(self.finalized),
            safe: None,
            blocks: plan.numbers().into_iter().map(|n| (n, self.block(n))).collect(),
        }
    }
}

/// L2 block `n` on L2 fork `fork`, with L1 origin `n / 2` taken from `l1`.
pub(super) fn l2(l1: &L1, n: u64, fork: u8) -> L2BlockRef {
    L2BlockRef {
        hash: hash(n, 100 + fork),
        number: n,
        parent_hash: hash(n.saturating_sub(1), 100 + fork),
        timestamp: 1_000 + 2 * n,
        l1origin: l1.id(n / 2),
        sequence_number: 0,
    }
}

/// A status with unsafe/safe/finalized L2 numbers and `current_l1` at `cur` (all from `l1`).
pub(super) fn status(l1: &L1, unsafe_n: u64, safe_n: u64, fin_n: u64, cur: u64) -> SyncStatus {
    SyncStatus {
        current_l1: l1.block(cur).unwrap_or_default(),
        head_l1: l1.block(l1.head()).unwrap_or_default(),
        unsafe_l2: l2(l1, unsafe_n, 0),
        safe_l2: l2(l1, safe_n, 0),
        finalized_l2: l2(l1, fin_n, 0),
        ..SyncStatus::default()
    }
}

pub(super) fn obs(source: &str, status: SyncStatus) -> Observation {
    Observation { chain_id: CHAIN, source_id: source.into(), status }
}

pub(super) fn validator(quorum: usize) -> Validator {
    Validator::new(ValidatorConfig { chain_id: CHAIN, quorum }, None)
}

/// Plans, answers from `l1`, decides; commits an accepted target.
pub(super) fn run(v: &mut Validator, l1: &L1, o: &Observation) -> Verdict {
    let answers = match v.plan(o) {
        Ok(p) => l1.answer(&p),
        Err(_) => L1Answers::default(),
    };
    let verdict = v.decide(o, &answers);
    if let Verdict::Accept(a) = &verdict {
        v.commit(a.target);
    }
    verdict
}

fn accepted(v: Verdict) -> Accepted {
    match v {
        Verdict::Accept(a) => *a,
        other => panic!("expected a target, got {other:?}"),
    }
}

fn rejected(v: Verdict) -> Rejection {
    match v {
        Verdict::Reject(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn consistent_status_becomes_target_with_revision_one() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let s = status(&l1, 60, 50, 20, 30);
    let a = accepted(run(&mut v, &l1, &obs("a", s.clone())));
    assert_eq!(a.target.revision, 1);
    assert_eq!(a.target.chain_id, CHAIN);
    assert_eq!(a.target.safe_l2, s.safe_l2);
    assert_eq!(a.target.local_safe_l2, s.safe_l2, "missing local_safe means safe");
    assert_eq!(a.target.unsafe_l2, s.unsafe_l2);
    assert_eq!(a.target.finalized_l2, s.finalized_l2);
    assert_eq!(a.target.current_l1, s.current_l1);
    assert_eq!(a.source_ids, vec!["a".to_string()]);
    assert!(!a.kept_current_l1 && !a.l1_reorg);
    assert_eq!(a.evidence.l1_head, l1.id(40));
    assert_eq!(a.evidence.l1_finalized, l1.id(20));
    // The full refs: `safe` falls back to `finalized` on a node without the tag.
    let view = a.evidence.view;
    assert_eq!(
        (view.head.id(), view.safe.id(), view.finalized.id()),
        (l1.id(40), l1.id(20), l1.id(20))
    );
    assert_eq!(view.head, l1.block(40).unwrap());
    // safe origin 25, finalized origin 10, current_l1 30, unsafe origin 30 (dedup).
    assert_eq!(a.evidence.checked, vec![l1.id(10), l1.id(25), l1.id(30)]);
    assert_eq!(v.last(), Some(&a.target));
}

#[test]
fn revisions_continue_after_restore() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let a = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    let mut restarted = Validator::new(*v.config(), Some(a.target));
    let b = accepted(run(&mut restarted, &l1, &obs("a", status(&l1, 62, 52, 20, 31))));
    assert_eq!(b.target.revision, 2);
}

#[test]
fn decide_does_not_commit() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let o = obs("a", status(&l1, 60, 50, 20, 30));
    let answers = l1.answer(&v.plan(&o).unwrap());
    let a = accepted(v.decide(&o, &answers));
    assert_eq!(v.last(), None);
    // The same status decided again (e.g. after a failed publish) gives the same target.
    assert_eq!(accepted(v.decide(&o, &answers)).target, a.target);
    v.commit(a.target);
    // Committing an older revision never moves the state back.
    v.commit(Target { revision: 0, ..a.target });
    assert_eq!(v.last(), Some(&a.target));
}

#[test]
fn identical_status_is_unchanged() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let o = obs("a", status(&l1, 60, 50, 20, 30));
    accepted(run(&mut v, &l1, &o));
    assert_eq!(run(&mut v, &l1, &o), Verdict::Unchanged);
    assert_eq!(v.last().unwrap().revision, 1);
}

#[test]
fn plan_has_distinct_numbers_for_every_ref() {
    let l1 = L1::new(40);
    let v = validator(1);
    let mut s = status(&l1, 70, 50, 20, 33);
    s.local_safe_l2 = Some(l2(&l1, 56, 0));
    let plan = v.plan(&obs("a", s)).unwrap();
    let refs: Vec<_> = plan.checks.iter().map(|c| (c.ref_name, c.kind)).collect();
    assert_eq!(
        refs,
        vec![
            (RefName::SafeL1Origin, CheckKind::Strict),
            (RefName::LocalSafeL1Origin, CheckKind::Strict),
            (RefName::FinalizedL1Origin, CheckKind::Strict),
            (RefName::CurrentL1, CheckKind::Strict),
            (RefName::UnsafeL1Origin, CheckKind::Lenient),
        ]
    );
    assert_eq!(plan.numbers(), vec![10, 25, 28, 33, 35]);
}

#[test]
fn plan_probes_previous_views_only_when_stepping_back() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    let forward = v.plan(&obs("a", status(&l1, 62, 52, 20, 31))).unwrap();
    assert!(forward.checks.iter().all(|c| c.kind != CheckKind::Probe));
    let back = v.plan(&obs("a", status(&l1, 62, 40, 20, 29))).unwrap();
    let probes: Vec<_> = back
        .checks
        .iter()
        .filter(|c| c.kind == CheckKind::Probe)
        .map(|c| (c.ref_name, c.block))
        .collect();
    assert_eq!(
        probes,
        vec![(RefName::PrevSafeL1Origin, l1.id(25)), (RefName::PrevCurrentL1, l1.id(30))]
    );
}

#[test]
fn wrong_chain_is_rejected() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let mut o = obs("a", status(&l1, 60, 50, 20, 30));
    o.chain_id = 11;
    let r = rejected(run(&mut v, &l1, &o));
    assert_eq!(r.reason, RejectReason::WrongChain);
    assert!(r.message.contains("chain 11"), "{r}");
}

#[test]
fn unset_current_l1_is_source_not_ready() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let mut s = status(&l1, 60, 50, 20, 30);
    s.current_l1 = L1BlockRef::default();
    let r = rejected(run(&mut v, &l1, &obs("a", s)));
    assert_eq!(r.reason, RejectReason::SourceNotReady);
    assert_eq!(r.ref_name, Some(RefName::CurrentL1));
}

#[test]
fn unset_required_refs_are_missing_ref() {
    let l1 = L1::new(40);
    for (name, set) in [
        (
            RefName::UnsafeL2,
            (|s: &mut SyncStatus| s.unsafe_l2 = L2BlockRef::default()) as fn(&mut SyncStatus),
        ),
        (RefName::SafeL2, |s| s.safe_l2 = L2BlockRef::default()),
        (RefName::LocalSafeL2, |s| s.local_safe_l2 = Some(L2BlockRef::default())),
        (RefName::FinalizedL2, |s| s.finalized_l2 = L2BlockRef::default()),
    ] {
        let mut v = validator(1);
        let mut s = status(&l1, 60, 50, 20, 30);
        set(&mut s);
        let r = rejected(run(&mut v, &l1, &obs("a", s)));
        assert_eq!(r.reason, RejectReason::MissingRef, "{name}");
        assert_eq!(r.ref_name, Some(name));
        assert!(r.message.contains(name.as_str()), "{r}");
    }
}

#[test]
fn genesis_refs_with_a_hash_are_set() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    // Finalized at L2 genesis (number 0, non-zero hash) is fine.
    accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 0, 30))));
}

#[test]
fn bad_ordering_is_rejected_for_each_pair() {
    let l1 = L1::new(40);
    type Make = fn(&L1) -> SyncStatus;
    let cases: [(Make, RefName); 3] = [
        (|l1| status(l1, 60, 50, 51, 30), RefName::FinalizedL2),
        (
            |l1| {
                let mut s = status(l1, 60, 50, 20, 30);
                s.local_safe_l2 = Some(l2(l1, 49, 0));
                s
            },
            RefName::SafeL2,
        ),
        (
            |l1| {
                let mut s = status(l1, 60, 50, 20, 30);
                s.local_safe_l2 = Some(l2(l1, 61, 0));
                s
            },
            RefName::LocalSafeL2,
        ),
    ];
    for (make, name) in cases {
        let mut v = validator(1);
        let r = rejected(run(&mut v, &l1, &obs("a", make(&l1))));
        assert_eq!(r.reason, RejectReason::BadOrdering, "{name}");
        assert_eq!(r.ref_name, Some(name));
    }
    // safe above unsafe (no local_safe): reported on local_safe (= safe) vs unsafe.
    let mut v = validator(1);
    let r = rejected(run(&mut v, &l1, &obs("a", status(&l1, 49, 50, 20, 30))));
    assert_eq!(r.reason, RejectReason::BadOrdering);
}

#[test]
fn non_canonical_l1_refs_are_l1_mismatch_naming_the_ref() {
    let l1 = L1::new(40);
    type Set = fn(&mut SyncStatus, B256);
    let cases: [(RefName, Set, u64); 5] = [
        (RefName::SafeL1Origin, |s, h| s.safe_l2.l1origin.hash = h, 25),
        (
            RefName::LocalSafeL1Origin,
            |s, h| {
                let mut ls = s.safe_l2;
                ls.l1origin.hash = h;
                s.local_safe_l2 = Some(ls);
            },
            25,
        ),
        (RefName::FinalizedL1Origin, |s, h| s.finalized_l2.l1origin.hash = h, 10),
        (RefName::CurrentL1, |s, h| s.current_l1.hash = h, 30),
        (RefName::UnsafeL1Origin, |s, h| s.unsafe_l2.l1origin.hash = h, 30),
    ];
    for (name, set, n) in cases {
        let mut v = validator(1);
        let mut s = status(&l1, 60, 50, 20, 30);
        let bogus = hash(n, 77);
        set(&mut s, bogus);
        let r = rejected(run(&mut v, &l1, &obs("a", s)));
        assert_eq!(r.reason, RejectReason::L1Mismatch, "{name}");
        assert_eq!(r.ref_name, Some(name));
        assert_eq!(r.number, n);
        assert_eq!(r.expected, Some(bogus));
        assert_eq!(r.actual, Some(l1.id(n).hash));
        assert!(r.message.contains(name.as_str()), "{r}");
    }
}

#[test]
fn missing_l1_block_is_l1_not_found() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    // current_l1 above our L1 head: strict, so not found.
    let mut s = status(&l1, 60, 50, 20, 30);
    s.current_l1 = L1BlockRef { hash: hash(45, 0), number: 45, ..s.current_l1 };
    let r = rejected(run(&mut v, &l1, &obs("a", s)));
    assert_eq!(r.reason, RejectReason::L1NotFound);
    assert_eq!(r.ref_name, Some(RefName::CurrentL1));
    assert_eq!((r.number, r.expected, r.actual), (45, Some(hash(45, 0)), None));
}

#[test]
fn unsafe_origin_above_our_head_is_accepted() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let mut s = status(&l1, 60, 50, 20, 30);
    s.unsafe_l2.l1origin = BlockId { hash: hash(41, 5), number: 41 };
    let a = accepted(run(&mut v, &l1, &obs("a", s)));
    assert!(a.evidence.checked.iter().all(|b| b.number != 41));
}

#[test]
fn unsafe_origin_at_or_below_head_must_exist_and_match() {
    let mut l1 = L1::new(40);
    let mut v = validator(1);
    let mut s = status(&l1, 60, 50, 20, 30);
    s.unsafe_l2.l1origin = BlockId { hash: hash(40, 5), number: 40 };
    let r = rejected(run(&mut v, &l1, &obs("a", s.clone())));
    assert_eq!((r.reason, r.ref_name), (RejectReason::L1Mismatch, Some(RefName::UnsafeL1Origin)));
    // A node that lost a block it reported at or below its head: not found.
    l1.forks.truncate(40);
    let mut answers = l1.answer(&v.plan(&obs("a", s.clone())).unwrap());
    answers.head = L1BlockRef { number: 40, ..answers.head };
    let r = rejected(v.decide(&obs("a", s), &answers));
    assert_eq!((r.reason, r.ref_name), (RejectReason::L1NotFound, Some(RefName::UnsafeL1Origin)));
}

#[test]
fn a_block_answered_for_another_number_does_not_count() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let o = obs("a", status(&l1, 60, 50, 20, 30));
    let mut answers = l1.answer(&v.plan(&o).unwrap());
    answers.blocks.insert(25, l1.block(24));
    let r = rejected(v.decide(&o, &answers));
    assert_eq!((r.reason, r.number), (RejectReason::L1NotFound, 25));
}

#[test]
fn unanswered_number_is_l1_unavailable() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let o = obs("a", status(&l1, 60, 50, 20, 30));
    let mut answers = l1.answer(&v.plan(&o).unwrap());
    answers.blocks.remove(&25);
    let r = rejected(v.decide(&o, &answers));
    assert_eq!(r.reason, RejectReason::L1Unavailable);
    assert_eq!(Rejection::l1_unavailable("timeout").reason, RejectReason::L1Unavailable);
}

#[test]
fn finalized_backwards_is_finalized_regression() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    let r = rejected(run(&mut v, &l1, &obs("a", status(&l1, 62, 52, 18, 31))));
    assert_eq!(r.reason, RejectReason::FinalizedRegression);
    assert_eq!(r.ref_name, Some(RefName::FinalizedL2));
    assert_eq!(v.last().unwrap().revision, 1);
}

#[test]
fn other_hash_at_finalized_number_is_critical_conflict() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let first = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    let mut s = status(&l1, 62, 52, 20, 31);
    s.finalized_l2 = l2(&l1, 20, 3);
    let r = rejected(run(&mut v, &l1, &obs("a", s)));
    assert_eq!(r.reason, RejectReason::FinalizedConflict);
    assert!(r.reason.is_critical());
    assert_eq!(r.expected, Some(first.target.finalized_l2.hash));
    assert_eq!(r.actual, Some(hash(20, 103)));
    assert!(RejectReason::ALL.iter().filter(|r| r.is_critical()).count() == 1);
}

#[test]
fn safe_backwards_without_l1_reorg_is_safe_replay() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    let r = rejected(run(&mut v, &l1, &obs("a", status(&l1, 60, 44, 20, 30))));
    assert_eq!(r.reason, RejectReason::SafeReplay);
    assert_eq!((r.ref_name, r.number), (Some(RefName::SafeL2), 44));
    // Another block at the same safe number is a replay too.
    let mut s = status(&l1, 60, 50, 20, 30);
    s.safe_l2 = l2(&l1, 50, 4);
    let r = rejected(run(&mut v, &l1, &obs("a", s)));
    assert_eq!(r.reason, RejectReason::SafeReplay);
}

#[test]
fn safe_backwards_after_l1_reorg_is_accepted() {
    let mut l1 = L1::new(40);
    let mut v = validator(1);
    accepted(run(&mut v, &l1, &obs("a", status(&l1, 70, 60, 20, 35))));
    // L1 reorgs its last 10 blocks (31..=40): the previous safe origin (30) survives,
    // current_l1 (35) does not.
    l1.reorg(10, 1);
    // A status built on the old L1 is rejected.
    let old = status(&L1::new(40), 72, 62, 20, 36);
    let r = rejected(run(&mut v, &l1, &obs("a", old)));
    assert_eq!(r.reason, RejectReason::L1Mismatch);
    // The previous safe origin (30) is still canonical: a lower safe is still a replay.
    let r = rejected(run(&mut v, &l1, &obs("a", status(&l1, 70, 58, 20, 34))));
    assert_eq!(r.reason, RejectReason::SafeReplay);
    // Deeper reorg that takes out the previous safe origin (30): lower safe accepted.
    l1.reorg(12, 2);
    let a = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 56, 20, 28))));
    assert!(a.l1_reorg);
    assert_eq!(a.target.safe_l2.number, 56);
    assert_eq!(a.target.current_l1, l1.block(28).unwrap(), "previous current_l1 was reorged out");
    assert!(!a.kept_current_l1);
    assert_eq!(a.target.revision, 2);
}

#[test]
fn current_l1_backwards_alone_keeps_previous_current_l1() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let first = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    // A restarted source re-reads L1 from 22 while its heads moved on.
    let a = accepted(run(&mut v, &l1, &obs("a", status(&l1, 64, 52, 20, 22))));
    assert!(a.kept_current_l1);
    assert_eq!(a.target.current_l1, first.target.current_l1);
    assert_eq!(a.target.safe_l2.number, 52);
    assert!(a.evidence.checked.contains(&l1.id(30)));
    // Same heads again, still re-reading: nothing new.
    assert_eq!(run(&mut v, &l1, &obs("a", status(&l1, 64, 52, 20, 25))), Verdict::Unchanged);
    // Caught up: its own current_l1 again.
    let b = accepted(run(&mut v, &l1, &obs("a", status(&l1, 64, 52, 20, 33))));
    assert!(!b.kept_current_l1);
    assert_eq!(b.target.current_l1, l1.block(33).unwrap());
}

#[test]
fn restarting_source_with_its_tip_behind_is_not_a_replay() {
    let l1 = L1::new(40);
    let mut v = validator(1);
    let first = accepted(run(&mut v, &l1, &obs("a", status(&l1, 70, 50, 20, 30))));
    // Re-reading L1 from 22, safe and finalized kept, its tip behind the previous one: not a
    // replay; the previous current_l1 is kept.
    let a = accepted(run(&mut v, &l1, &obs("a", status(&l1, 64, 52, 20, 22))));
    assert!(a.kept_current_l1);
    assert_eq!(a.target.current_l1, first.target.current_l1);
    assert_eq!((a.target.unsafe_l2.number, a.target.safe_l2.number), (64, 52));
}

#[test]
fn current_l1_backwards_with_heads_backwards_is_status_replay() {
    let mut l1 = L1::new(40);
    let mut v = validator(1);
    accepted(run(&mut v, &l1, &obs("a", status(&l1, 70, 60, 20, 38))));
    // Only block 30 (the previous safe origin) is replaced, the previous current_l1 (38)
    // stays canonical: safe may step back, but current_l1 stepping back with it is a replay.
    l1.forks[30] = 3;
    let r = rejected(run(&mut v, &l1, &obs("a", status(&l1, 70, 56, 20, 29))));
    assert_eq!(r.reason, RejectReason::StatusReplay);
    assert_eq!((r.ref_name, r.number), (Some(RefName::CurrentL1), 29));
}

#[test]
fn cache_only_holds_finalized_blocks() {
    let l1 = L1::new(40); // finalized 20
    let v = validator(1);
    let plan = v.plan(&obs("a", status(&l1, 60, 50, 20, 30))).unwrap();
    let mut cache = L1Cache::new(8);
    let (fetch, cached) = plan.split(&cache);
    assert_eq!(fetch, vec![10, 25, 30]);
    assert!(cached.is_empty());
    assert_eq!(cache.record(&l1.answer(&plan)), 1, "only #10 is at or below finalized #20");
    assert_eq!(cache.get(10), l1.block(10).as_ref());
    assert!(cache.get(25).is_none());
    let (fetch, cached) = plan.split(&cache);
    assert_eq!(fetch, vec![25, 30]);
    assert_eq!(cached.keys().copied().collect::<Vec<_>>(), vec![10]);
    assert!(cacheable(20, Some(20)) && !cacheable(21, Some(20)) && !cacheable(0, None));
    // Bounded: the lowest numbers go first.
    let mut small = L1Cache::new(2);
    let answers = L1Answers {
        head: l1.block(40).unwrap(),
        finalized: l1.block(20),
        safe: None,
        blocks: [1, 2, 3].into_iter().map(|n| (n, l1.block(n))).collect(),
    };
    small.record(&answers);
    assert_eq!((small.len(), small.get(1).is_none()), (2, true));
}

#[test]
fn every_reason_has_a_distinct_name() {
    let names: BTreeSet<_> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names.len(), RejectReason::ALL.len());
    let r = Rejection::new(RejectReason::NoQuorum, "x");
    assert_eq!(r.to_string(), "no_quorum: x");
}

#[test]
fn epoch_starts_from_the_clock_and_is_kept_while_continuing() {
    let now = 1_700_000_000_000;
    let l1 = L1::new(40);
    let mut v = validator(1);
    v.set_clock(now);
    let a = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    assert_eq!((a.target.epoch, a.target.revision), (now, 1));
    v.set_clock(now + 5_000);
    let b = accepted(run(&mut v, &l1, &obs("a", status(&l1, 61, 50, 20, 30))));
    assert_eq!((b.target.epoch, b.target.revision), (now, 2), "continuing keeps the epoch");
    // A restart without history: a new, later epoch.
    let mut w = validator(1);
    w.set_clock(now + 9_000);
    let c = accepted(run(&mut w, &l1, &obs("a", status(&l1, 61, 50, 20, 30))));
    assert_eq!((c.target.epoch, c.target.revision), (now + 9_000, 1));
}

#[test]
fn revision_u64_max_starts_a_new_epoch_never_wraps() {
    let now = 1_700_000_000_000;
    let l1 = L1::new(40);
    let mut v = validator(1);
    v.set_clock(now);
    let a = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    // A forged target at u64::MAX becomes the stored newest one.
    v.restore(Some(Target { revision: u64::MAX, ..a.target }));
    let b = accepted(run(&mut v, &l1, &obs("a", status(&l1, 61, 50, 20, 30))));
    assert_eq!((b.target.epoch, b.target.revision), (now + 1, 1));
    // Even the same heads are published again under the new epoch.
    v.restore(Some(Target { revision: u64::MAX, ..b.target }));
    let c = accepted(run(&mut v, &l1, &obs("a", status(&l1, 61, 50, 20, 30))));
    assert_eq!((c.target.epoch, c.target.revision), (now + 2, 1));
    // Neither revision nor epoch can advance: refused with an error, nothing published.
    v.set_clock(u64::MAX);
    v.restore(Some(Target { epoch: u64::MAX, revision: u64::MAX, ..c.target }));
    let d = run(&mut v, &l1, &obs("a", status(&l1, 62, 50, 20, 30)));
    assert!(
        matches!(d, Verdict::NoPosition(crate::revision::PositionError::Exhausted(_))),
        "{d:?}"
    );
}

#[test]
fn a_driver_ahead_of_the_stored_target_starts_a_new_epoch_above_it() {
    let now = 1_700_000_000_000;
    let l1 = L1::new(40);
    let mut v = validator(1);
    v.set_clock(now);
    let a = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    // An older backup restored: the stored newest is an old epoch, a driver applied (now, 50).
    let restored = Target { epoch: now - 1_000, revision: 3, ..a.target };
    v.restore(Some(restored));
    let applied = Position { epoch: now, revision: 50 };
    v.set_drivers_newest(Some(applied));
    v.set_clock(now + 7);
    // The same heads as the restored target: still published, under a new epoch.
    let b = accepted(run(&mut v, &l1, &obs("a", status(&l1, 60, 50, 20, 30))));
    assert_eq!((b.target.epoch, b.target.revision), (now + 7, 1));
    assert!(crate::revision::is_newer(Some(applied), Position::of(&b.target), now + 7));
    v.commit(b.target);
    // Once stored, the history continues; the drivers' (older) position changes nothing.
    let c = accepted(run(&mut v, &l1, &obs("a", status(&l1, 61, 50, 20, 30))));
    assert_eq!((c.target.epoch, c.target.revision), (now + 7, 2));
}

#[test]
fn l1_view_takes_the_safe_tag_when_the_node_has_one() {
    let l1 = L1::new(40);
    let mut answers =
        L1Answers { head: l1.block(40).unwrap(), finalized: l1.block(20), ..L1Answers::default() };
    answers.safe = l1.block(30);
    let view = l1_view(&answers);
    assert_eq!((view.head.number, view.safe.number, view.finalized.number), (40, 30, 20));
    // Neither tag: only the head is known.
    let bare = L1Answers { head: l1.block(40).unwrap(), ..L1Answers::default() };
    let view = l1_view(&bare);
    assert!(view.safe.is_unset() && view.finalized.is_unset() && !view.head.is_unset());
}
