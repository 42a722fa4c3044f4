//! Property tests: random status sequences from several sources (duplicates, replays, L1
//! reorgs, source restarts, lying sources) against a model L1, checking the validator's
//! invariants with an independent oracle.

use proptest::prelude::*;

use super::tests::{L1, hash, l2, obs, run, status, validator};
use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// A fresh status from `source`: safe/unsafe/finalized moves, current_l1 offset, and an
    /// optional corruption (`lie`: 0 none, 1 bad ordering, 2 bad L1 hash, 3 unset current_l1,
    /// 4 stale L1 view).
    Status { source: u8, safe_step: i8, unsafe_gap: u8, fin_gap: u8, cur_back: u8, lie: u8 },
    /// Replay one of the earlier accepted statuses.
    Replay(usize),
    /// Re-send the last accepted status (duplicate / heartbeat).
    Duplicate,
    /// Mine blocks on L1.
    Mine(u8),
    /// Reorg the last blocks of L1.
    Reorg(u8),
    /// A restarting source: current_l1 far back, heads as before.
    Restart(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..3, -4i8..6, 0u8..8, 0u8..30, 0u8..4, prop_oneof![6 => Just(0u8), 1 => 1u8..5])
            .prop_map(|(source, safe_step, unsafe_gap, fin_gap, cur_back, lie)| Op::Status {
                source, safe_step, unsafe_gap, fin_gap, cur_back, lie
            }),
        2 => any::<usize>().prop_map(Op::Replay),
        1 => Just(Op::Duplicate),
        2 => (1u8..4).prop_map(Op::Mine),
        1 => (1u8..12).prop_map(Op::Reorg),
        1 => (1u8..20).prop_map(Op::Restart),
    ]
}

/// Independent oracle: is `id` canonical on `l1`?
fn canonical(l1: &L1, id: BlockId) -> bool {
    l1.block(id.number).is_some_and(|b| b.hash == id.hash)
}

struct World {
    l1: L1,
    v: Validator,
    /// Safe L2 number each new status builds on (the sources' shared progress).
    safe: u64,
    /// Accepted statuses with the reorg epoch they were accepted in.
    history: Vec<(SyncStatus, u64)>,
    epoch: u64,
    stale_view: Option<L1>,
    fork: u8,
    targets: Vec<Target>,
    accepted: usize,
}

impl World {
    fn new(quorum: usize) -> Self {
        Self {
            l1: L1::new(40),
            v: validator(quorum),
            safe: 60,
            history: Vec::new(),
            epoch: 0,
            stale_view: None,
            fork: 0,
            targets: Vec::new(),
            accepted: 0,
        }
    }

    fn submit(&mut self, source: &str, s: SyncStatus) -> Result<Verdict, TestCaseError> {
        let prev = self.v.last().copied();
        let verdict = run(&mut self.v, &self.l1, &obs(source, s.clone()));
        if let Verdict::Accept(a) = &verdict {
            let t = a.target;
            self.accepted += 1;
            // No target from a status failing a check (oracle, not the rules' own code).
            prop_assert!(check_structure(&s).is_ok());
            let ls = s.local_safe();
            for id in [s.safe_l2.l1origin, ls.l1origin, s.finalized_l2.l1origin, t.current_l1.id()]
            {
                prop_assert!(canonical(&self.l1, id), "target built on non-canonical {id}");
            }
            let uo = s.unsafe_l2.l1origin;
            prop_assert!(uo.number > self.l1.head() || canonical(&self.l1, uo));
            prop_assert_eq!(t.safe_l2, s.safe_l2);
            prop_assert_eq!(t.finalized_l2, s.finalized_l2);
            if let Some(p) = prev {
                prop_assert_eq!(t.revision, p.revision + 1, "revisions step by one");
                prop_assert!(t.finalized_l2.number >= p.finalized_l2.number, "finalized decreased");
                if t.finalized_l2.number == p.finalized_l2.number {
                    prop_assert_eq!(t.finalized_l2.hash, p.finalized_l2.hash);
                }
                if t.safe_l2.number < p.safe_l2.number {
                    prop_assert!(
                        !canonical(&self.l1, p.safe_l2.l1origin),
                        "safe stepped back without an L1 reorg"
                    );
                }
                prop_assert!(
                    t != Target { revision: t.revision, ..p },
                    "unchanged target published"
                );
            } else {
                prop_assert_eq!(t.revision, 1);
            }
            self.targets.push(t);
            self.history.push((s, self.epoch));
        } else {
            prop_assert_eq!(self.v.last().copied(), prev, "state moved without a target");
        }
        Ok(verdict)
    }

    fn fresh_status(
        &self,
        safe_step: i8,
        unsafe_gap: u8,
        fin_gap: u8,
        cur_back: u8,
    ) -> (u64, SyncStatus) {
        let safe = self.safe.saturating_add_signed(safe_step as i64).clamp(4, 2 * self.l1.head());
        let l1 = &self.l1;
        // current_l1 near our L1 head, and never below what safe was derived from.
        let cur = l1.head().saturating_sub(cur_back as u64).max(safe / 2);
        let fin_floor = self.v.last().map_or(0, |t| t.finalized_l2.number);
        let fin = safe.saturating_sub(fin_gap as u64).max(fin_floor.min(safe));
        let mut s = status(l1, safe + unsafe_gap as u64, safe, fin, cur.min(l1.head()));
        if let Some(t) = self.v.last()
            && t.finalized_l2.number == fin
        {
            s.finalized_l2 = t.finalized_l2;
        }
        (safe, s)
    }
}

fn run_ops(quorum: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w = World::new(quorum);
    for op in ops {
        match op {
            Op::Status { source, safe_step, unsafe_gap, fin_gap, cur_back, lie } => {
                let (safe, mut s) = w.fresh_status(safe_step, unsafe_gap, fin_gap, cur_back);
                match lie {
                    1 => s.finalized_l2 = l2(&w.l1, s.safe_l2.number + 1, 0),
                    2 => s.safe_l2.l1origin.hash = hash(s.safe_l2.l1origin.number, 99),
                    3 => s.current_l1 = L1BlockRef::default(),
                    4 => {
                        if let Some(old) = &w.stale_view {
                            s = status(
                                old,
                                s.unsafe_l2.number,
                                safe,
                                s.finalized_l2.number,
                                old.head(),
                            );
                        }
                    }
                    _ => {}
                }
                // Every source reports the same heads (so quorums can form).
                let sources = if quorum > 1 { (0..quorum as u8).collect() } else { vec![source] };
                let mut any = false;
                for src in sources {
                    let v = w.submit(&format!("s{src}"), s.clone())?;
                    if lie != 0 && lie != 4 {
                        prop_assert!(matches!(v, Verdict::Reject(_)), "lying status got {v:?}");
                    }
                    any |= matches!(v, Verdict::Accept(_));
                }
                if any {
                    w.safe = safe;
                }
            }
            Op::Replay(i) => {
                if w.history.is_empty() {
                    continue;
                }
                let (s, epoch) = w.history[i % w.history.len()].clone();
                let last = *w.v.last().expect("history implies a target");
                let older = s.safe_l2.number < last.safe_l2.number
                    || s.finalized_l2.number < last.finalized_l2.number;
                let v = w.submit("s0", s)?;
                if older && epoch == w.epoch {
                    prop_assert!(
                        !matches!(v, Verdict::Accept(_)),
                        "replayed older status produced {v:?}"
                    );
                }
            }
            Op::Duplicate => {
                if let Some((s, epoch)) = w.history.last().cloned() {
                    let v = w.submit("s0", s)?;
                    // After an L1 reorg the same status may legitimately be news again.
                    if epoch == w.epoch {
                        prop_assert!(!matches!(v, Verdict::Accept(_)), "duplicate produced {v:?}");
                    }
                }
            }
            Op::Mine(n) => w.l1.mine(n as u64),
            Op::Reorg(d) => {
                w.stale_view = Some(w.l1.clone());
                w.fork = w.fork.wrapping_add(1).max(1);
                let depth = (d as u64).min(w.l1.head() - w.l1.finalized);
                w.l1.reorg(depth, w.fork);
                w.epoch += 1;
                // Sources re-derive: their safe head falls back below the reorged origins.
                w.safe = w.safe.min(2 * (w.l1.head() - depth)).max(4);
            }
            Op::Restart(back) => {
                let Some(t) = w.v.last().copied() else { continue };
                let cur = t.current_l1.number.saturating_sub(back as u64).max(t.safe_l2.number / 2);
                let mut s =
                    status(&w.l1, t.unsafe_l2.number, t.safe_l2.number, t.finalized_l2.number, cur);
                s.finalized_l2 = t.finalized_l2;
                s.unsafe_l2 = t.unsafe_l2;
                s.safe_l2 = t.safe_l2;
                s.local_safe_l2 = Some(t.local_safe_l2);
                let v = w.submit("s0", s)?;
                if let Verdict::Accept(a) = v {
                    prop_assert!(a.kept_current_l1 || !canonical(&w.l1, t.current_l1.id()));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn single_source_invariants(ops in prop::collection::vec(op(), 1..60)) {
        run_ops(1, ops)?;
    }

    /// Two sources interleaved, each status judged on its own (several sources are combined
    /// before the validator: see `quorum::proptests`): the invariants hold all the same.
    #[test]
    fn two_source_invariants(ops in prop::collection::vec(op(), 1..40)) {
        run_ops(2, ops)?;
    }
}

/// The generator is not vacuous: a plain forward sequence produces targets.
#[test]
fn forward_sequence_produces_targets() {
    let ops = (0..10)
        .map(|_| Op::Status {
            source: 0,
            safe_step: 2,
            unsafe_gap: 2,
            fin_gap: 10,
            cur_back: 0,
            lie: 0,
        })
        .chain([Op::Mine(2)])
        .collect::<Vec<_>>();
    let mut w = World::new(1);
    for op in ops {
        if let Op::Status { safe_step, unsafe_gap, fin_gap, cur_back, .. } = op {
            let (safe, s) = w.fresh_status(safe_step, unsafe_gap, fin_gap, cur_back);
            if matches!(w.submit("s0", s).unwrap(), Verdict::Accept(_)) {
                w.safe = safe;
            }
        }
    }
    assert_eq!(w.accepted, 10);
    assert_eq!(w.targets.last().unwrap().revision, 10);
}
