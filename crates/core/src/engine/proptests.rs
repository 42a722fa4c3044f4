//! Property tests: random sequences of targets (duplicates, stale revisions, reorgs, source
//! restarts, lying sources) and EL answers, checking the planner's invariants on every
//! planned forkchoice update; and random inputs of the follow table ([`follow`]), checking its
//! rows and invariants directly and that the planner does what it decides.

use proptest::prelude::*;

use super::tests::{hash, id, l2, target};
use super::*;

#[derive(Debug, Clone)]
enum Op {
    /// A target: revision step (may be ≤ 0: stale/replay), unsafe number, safe/finalized gaps,
    /// fork, and whether the source lies (finalized above safe).
    Target {
        rev_step: i8,
        unsafe_n: u64,
        safe_gap: u64,
        fin_gap: u64,
        fork: u8,
        lie: bool,
    },
    /// Answer whatever is outstanding (the value picks the answer).
    Answer(u8, u64, u8),
    Timer,
    Resync,
    Pause,
    Resume,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-2i8..4, 0u64..40, 0u64..6, 0u64..6, 0u8..3, prop::bool::weighted(0.05)).prop_map(
            |(rev_step, unsafe_n, safe_gap, fin_gap, fork, lie)| Op::Target {
                rev_step, unsafe_n, safe_gap, fin_gap, fork, lie
            }
        ),
        6 => (any::<u8>(), 0u64..45, 0u8..3).prop_map(|(a, n, f)| Op::Answer(a, n, f)),
        2 => Just(Op::Timer),
        1 => Just(Op::Resync),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
    ]
}

/// What happened in one run.
#[derive(Debug, Default)]
struct Trace {
    /// Every violated property, with context.
    violations: Vec<String>,
    /// Number of FCUs planned (to make sure runs are not vacuous overall).
    fcus: usize,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Io {
    None,
    Heads,
    Block(u64),
    Fcu(Forkchoice),
}

fn run(ops: &[Op], follow_unsafe: bool) -> Trace {
    let cfg = PlannerConfig { follow_unsafe, ..PlannerConfig::default() };
    let mut p = Planner::new(cfg);
    let mut tr = Trace::default();
    let mut io = Io::None;
    let mut now = 0u64;
    let mut max_rev: Option<u64> = None;
    let mut rev = 0u64;
    let mut seen_valid = false;
    let mut restarted = false;
    let mut accepted_fin = BlockId::default();
    let mut invalid: HashSet<B256> = HashSet::new();

    let handle = |out: Vec<Action>,
                  io: &mut Io,
                  tr: &mut Trace,
                  seen_valid: bool,
                  accepted_fin: BlockId,
                  invalid: &HashSet<B256>| {
        for a in out {
            let new_io = match a {
                Action::SendFcu(fc) => {
                    tr.fcus += 1;
                    let zero_labels = fc.safe.is_unset() && fc.finalized.is_unset();
                    if fc.head.hash == B256::ZERO {
                        tr.violations.push(format!("zero head {fc:?}"));
                    }
                    if invalid.contains(&fc.head.hash) {
                        tr.violations.push(format!("INVALID head planned again {fc:?}"));
                    }
                    if !seen_valid && !zero_labels {
                        tr.violations.push(format!("labels before first VALID {fc:?}"));
                    }
                    if !zero_labels {
                        if !(fc.finalized.number <= fc.safe.number
                            && fc.safe.number <= fc.head.number)
                        {
                            tr.violations.push(format!("ordering {fc:?}"));
                        }
                        if fc.finalized.number < accepted_fin.number
                            || (fc.finalized.number == accepted_fin.number
                                && !accepted_fin.is_unset()
                                && fc.finalized.hash != accepted_fin.hash)
                        {
                            tr.violations
                                .push(format!("finalized {fc:?} below accepted {accepted_fin:?}"));
                        }
                    }
                    Io::Fcu(fc)
                }
                Action::ReadElHeads => Io::Heads,
                Action::ReadElBlock { number } => Io::Block(number),
                _ => continue,
            };
            if *io != Io::None {
                tr.violations.push(format!("two I/O actions outstanding: {io:?} then {new_io:?}"));
            }
            *io = new_io;
        }
    };

    let out = p.start(now);
    handle(out, &mut io, &mut tr, seen_valid, accepted_fin, &invalid);
    for op in ops {
        now += 7;
        let out = match *op {
            Op::Target { rev_step, unsafe_n, safe_gap, fin_gap, fork, lie } => {
                rev = rev.saturating_add_signed(i64::from(rev_step));
                let safe_n = unsafe_n.saturating_sub(safe_gap);
                let fin_n = if lie { safe_n + 1 } else { safe_n.saturating_sub(fin_gap) };
                let t = target(rev, unsafe_n, safe_n, fin_n, fork);
                let stale = max_rev.is_some_and(|m| rev <= m);
                max_rev = max_rev.max(Some(rev));
                let out = p.on_target(t, now);
                if stale && !out.is_empty() {
                    tr.violations.push(format!("stale target {rev} planned {out:?}"));
                }
                out
            }
            Op::Answer(a, n, f) => match std::mem::replace(&mut io, Io::None) {
                Io::None => p.on_timer(now),
                Io::Heads => {
                    if a % 5 == 0 {
                        p.on_el_heads(Err("down".into()), now)
                    } else {
                        let fin = if a % 3 == 0 { None } else { Some(id(n / 3, 0)) };
                        if let Some(fin) = fin
                            && fin.number > accepted_fin.number
                        {
                            accepted_fin = fin;
                        }
                        let heads =
                            ElHeads { latest: id(n, f), safe: Some(id(n / 2, 0)), finalized: fin };
                        let starting = p.phase() == Phase::Starting;
                        let out = p.on_el_heads(Ok(heads), now);
                        if starting && fin.is_some_and(|f| f.number > 0) {
                            // A restarted driver: the EL synced before, labels are allowed.
                            restarted = true;
                            seen_valid = true;
                        }
                        out
                    }
                }
                Io::Block(number) => {
                    let b = match a % 3 {
                        0 => ElBlock::NotFound,
                        1 => ElBlock::Error("timeout".into()),
                        _ => ElBlock::Found(id(number, f)),
                    };
                    p.on_el_block(number, b, now)
                }
                Io::Fcu(fc) => {
                    let outcome = match a % 8 {
                        0..=2 => FcuOutcome::Valid,
                        3 | 4 => FcuOutcome::Syncing,
                        5 => {
                            FcuOutcome::Invalid { latest_valid_hash: None, validation_error: None }
                        }
                        6 => FcuOutcome::InvalidForkchoiceState { message: "-38002".into() },
                        _ => FcuOutcome::Error { message: "timeout".into() },
                    };
                    match outcome {
                        FcuOutcome::Valid => {
                            seen_valid = true;
                            if !fc.finalized.is_unset() {
                                accepted_fin = fc.finalized;
                            }
                        }
                        FcuOutcome::Invalid { .. } => {
                            invalid.insert(fc.head.hash);
                        }
                        _ => {}
                    }
                    p.on_fcu_answer(outcome, now)
                }
            },
            Op::Timer => {
                now += 10_000;
                p.on_timer(now)
            }
            Op::Resync => p.resync(now),
            Op::Pause => p.pause(),
            Op::Resume => p.resume(now),
        };
        handle(out, &mut io, &mut tr, seen_valid, accepted_fin, &invalid);
        if p.phase() == Phase::Following && !seen_valid && !restarted {
            tr.violations.push("following without a VALID".into());
        }
    }
    tr
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// No planned FCU ever breaks an invariant, in tip-following mode.
    #[test]
    fn planned_fcus_keep_invariants_following_unsafe(ops in ops()) {
        let tr = run(&ops, true);
        prop_assert!(tr.violations.is_empty(), "{:?}", tr.violations);
    }

    /// The same with head = local safe.
    #[test]
    fn planned_fcus_keep_invariants_following_local_safe(ops in ops()) {
        let tr = run(&ops, false);
        prop_assert!(tr.violations.is_empty(), "{:?}", tr.violations);
    }

    /// A stale or replayed target never produces an action, whatever came before.
    #[test]
    fn replayed_or_stale_target_plans_nothing(ops in ops(), back in 0u64..3) {
        let cfg = PlannerConfig::default();
        let mut p = Planner::new(cfg);
        p.start(0);
        p.on_el_heads(Ok(ElHeads { latest: id(0, 0), safe: None, finalized: None }), 0);
        let mut rev = 10u64;
        for (i, o) in ops.iter().enumerate() {
            if let Op::Target { unsafe_n, fork, .. } = *o {
                rev += 1;
                p.on_target(target(rev, unsafe_n, unsafe_n / 2, unsafe_n / 4, fork), i as u64);
            }
        }
        let replay = target(rev.saturating_sub(back), 40, 20, 10, 1);
        if p.target().is_some() {
            prop_assert!(p.on_target(replay, 1_000).is_empty());
        }
    }

    /// An INVALID head is never planned again, even when later targets name it.
    #[test]
    fn invalid_head_never_planned_again(heads in prop::collection::vec(1u64..6, 1..40)) {
        let mut p = Planner::new(PlannerConfig::default());
        p.start(0);
        p.on_el_heads(Ok(ElHeads { latest: id(0, 0), safe: None, finalized: None }), 0);
        let mut invalid = HashSet::new();
        for (i, n) in heads.iter().enumerate() {
            let out = p.on_target(target(i as u64 + 1, *n, 0, 0, 0), i as u64);
            for a in out {
                if let Action::SendFcu(fc) = a {
                    prop_assert!(!invalid.contains(&fc.head.hash));
                    invalid.insert(fc.head.hash);
                    p.on_fcu_answer(FcuOutcome::Invalid { latest_valid_hash: None, validation_error: None }, i as u64);
                }
            }
        }
    }
}

#[test]
fn simulator_is_not_vacuous() {
    // A plain sequence must plan FCUs, so the properties above check something.
    let ops: Vec<Op> = (0..30)
        .flat_map(|i| {
            [
                Op::Target {
                    rev_step: 1,
                    unsafe_n: 10 + i,
                    safe_gap: 2,
                    fin_gap: 2,
                    fork: 0,
                    lie: false,
                },
                Op::Answer(1, 0, 0),
                Op::Answer(1, 0, 0),
            ]
        })
        .collect();
    let tr = run(&ops, true);
    assert!(tr.violations.is_empty(), "{:?}", tr.violations);
    assert!(tr.fcus >= 30, "only {} FCUs", tr.fcus);
    let _ = l2(0, 0);
}

/// One call of [`follow`]: block ids are `id(number, fork)`, so a hash names one number, as on a
/// chain; the EL's block at H's number, when found, is `id(H.number, fork)`.
#[derive(Debug, Clone, Copy)]
struct FollowCase {
    target: Forkchoice,
    el: ElView,
    applied: Applied,
}

impl FollowCase {
    fn h(&self) -> BlockId {
        self.target.head
    }

    /// The EL is known to have H's hash at H's number.
    fn el_has_h(&self) -> bool {
        self.el.head.hash == self.h().hash || self.el.at_head == ElAtHead::Found(self.h().hash)
    }

    fn decide(&self) -> Follow {
        follow(self.target, self.el, self.applied)
    }
}

fn follow_case() -> impl Strategy<Value = FollowCase> {
    let target = (1u64..30, 0u8..3, 0u64..8, 0u64..8, 0u8..3, 0u8..12);
    let el = (0u8..4, 0u64..35, 0u8..3, 0u8..5, 0u8..3);
    let applied = (0u64..20, 0u8..2, any::<bool>());
    (target, el, applied).prop_map(|(t, e, a)| {
        let (h_n, h_fork, safe_gap, fin_gap, label_fork, lie) = t;
        let head = if lie == 0 { BlockId::default() } else { id(h_n, h_fork) };
        let mut safe_n = h_n.saturating_sub(safe_gap);
        let mut fin_n = safe_n.saturating_sub(fin_gap);
        match lie {
            1 => safe_n = h_n + 1,
            2 => fin_n = safe_n + 1,
            _ => {}
        }
        let target =
            Forkchoice { head, safe: id(safe_n, label_fork), finalized: id(fin_n, label_fork) };
        let (el_sel, el_n, el_fork, at_sel, at_fork) = e;
        let el_head = if el_sel == 0 { head } else { id(el_n, el_fork) };
        let at_head = match at_sel {
            0 => ElAtHead::NotRead,
            1 => ElAtHead::NotFound,
            2 => ElAtHead::ReadError,
            3 => ElAtHead::Found(hash(h_n, h_fork)),
            _ => ElAtHead::Found(hash(h_n, at_fork)),
        };
        let (floor_n, floor_fork, first_valid) = a;
        let floor = if floor_n == 0 { BlockId::default() } else { id(floor_n, floor_fork) };
        let applied = Applied {
            forkchoice: Forkchoice { head: el_head, safe: floor, finalized: floor },
            first_valid,
        };
        FollowCase { target, el: ElView { head: el_head, at_head }, applied }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// When the EL already has H's hash, the head sent is never below the EL's head.
    #[test]
    fn follow_never_sends_a_head_below_the_el_head_when_the_el_has_h(c in follow_case()) {
        if c.el_has_h()
            && let Follow::Send(fc) = c.decide()
        {
            prop_assert!(fc.head.number >= c.el.head.number, "{c:?} -> {fc:?}");
        }
    }

    /// Labels only (the EL has H, at or below its head): the head sent is the EL's own.
    #[test]
    fn follow_labels_only_never_changes_the_head(c in follow_case()) {
        let labels_only = c.el_has_h() && c.el.head.number >= c.h().number;
        if labels_only && let Follow::Send(fc) = c.decide() {
            prop_assert_eq!(fc.head, c.el.head, "{:?}", c);
        }
    }

    /// Never finalized above safe nor safe above head; finalized never below or beside the
    /// accepted one; never a zero head; labels are the target's once the EL synced.
    #[test]
    fn follow_never_sends_finalized_above_safe(c in follow_case()) {
        if let Follow::Send(fc) = c.decide() {
            prop_assert!(!fc.head.is_unset() && fc.head.hash != B256::ZERO, "{c:?}");
            prop_assert!(fc.head == c.h() || fc.head == c.el.head, "{c:?} -> {fc:?}");
            if c.applied.first_valid {
                prop_assert!(fc.finalized.number <= fc.safe.number, "{c:?} -> {fc:?}");
                prop_assert!(fc.safe.number <= fc.head.number, "{c:?} -> {fc:?}");
                let floor = c.applied.forkchoice.finalized;
                prop_assert!(fc.finalized.number >= floor.number, "{c:?} -> {fc:?}");
                let beside = fc.finalized.number == floor.number && fc.finalized != floor;
                prop_assert!(floor.is_unset() || !beside, "{c:?} -> {fc:?}");
                if c.target.finalized.number >= floor.number || floor.is_unset() {
                    prop_assert_eq!((fc.safe, fc.finalized), (c.target.safe, c.target.finalized));
                } else {
                    // Held: finalized stays the EL's, safe is the target's unless below it.
                    prop_assert_eq!(fc.finalized, floor, "{:?}", c);
                    let safe = if c.target.safe.number >= floor.number { c.target.safe } else { floor };
                    prop_assert_eq!(fc.safe, safe, "{:?}", c);
                }
            }
        }
    }

    /// A target finalized the EL cannot take (below its accepted one) holds only finalized:
    /// whenever the same target with the EL's finalized would be sent, it is sent, with the
    /// same head.
    #[test]
    fn head_keeps_moving_while_finalized_is_held(c in follow_case(), d in 1u64..4) {
        let mut c = c;
        c.applied.first_valid = true;
        let gap = c.target.safe.number.saturating_sub(c.target.finalized.number);
        prop_assume!(gap >= 1);
        let floor = id(c.target.finalized.number + d.min(gap), 0);
        c.applied.forkchoice.finalized = floor;
        let mut lifted = c;
        lifted.target.finalized = floor;
        if let Follow::Send(want) = lifted.decide() {
            prop_assert_eq!(c.decide(), Follow::Send(want), "{:?}", c);
        }
    }

    /// Before the first VALID: zero labels, and only a zero head is refused.
    #[test]
    fn follow_sends_zero_labels_before_the_first_valid(mut c in follow_case()) {
        c.applied.first_valid = false;
        match c.decide() {
            Follow::Send(fc) => {
                prop_assert!(fc.safe.is_unset() && fc.finalized.is_unset(), "{c:?} -> {fc:?}");
            }
            Follow::Refuse(r) => prop_assert_eq!(r, Refusal::ZeroHead),
            Follow::ReadBlock { .. } | Follow::Skip => {}
        }
    }

    /// The rows: the EL behind always gets H; a read happens only when none was made, a skip
    /// only after a failed one; not found and another hash push H.
    #[test]
    fn follow_keeps_the_rows_of_the_table(c in follow_case()) {
        let h = c.h();
        let sent_head = match c.decide() {
            Follow::Send(fc) => Some(fc.head),
            Follow::Refuse(_) => None,
            Follow::ReadBlock { number } => {
                prop_assert_eq!(number, h.number);
                prop_assert_eq!(c.el.at_head, ElAtHead::NotRead);
                prop_assert!(c.el.head.number >= h.number && c.el.head.hash != h.hash);
                return Ok(());
            }
            Follow::Skip => {
                prop_assert_eq!(c.el.at_head, ElAtHead::ReadError);
                prop_assert!(c.el.head.number >= h.number);
                return Ok(());
            }
        };
        let pushes_h = c.el.head.number < h.number
            || matches!(c.el.at_head, ElAtHead::NotFound)
            || matches!(c.el.at_head, ElAtHead::Found(x) if x != h.hash);
        if pushes_h && let Some(head) = sent_head {
            prop_assert_eq!(head, h, "{:?}", c);
        }
    }

    /// `follow` sends exactly what passes `check_forkchoice` (no INVALID heads known).
    #[test]
    fn follow_agrees_with_check_forkchoice(c in follow_case()) {
        let phase = if c.applied.first_valid { Phase::Following } else { Phase::InitialSync };
        let floor = c.applied.forkchoice.finalized;
        let none = HashSet::new();
        match c.decide() {
            Follow::Send(fc) => {
                prop_assert_eq!(check_forkchoice(&fc, phase, floor, &none), Ok(()));
            }
            Follow::Refuse(r) => prop_assert!(!matches!(r, Refusal::InvalidHead(_))),
            Follow::ReadBlock { .. } | Follow::Skip => {}
        }
    }

    /// The planner does what `follow` decides: for a new target, and with the block it read.
    #[test]
    fn planner_does_what_follow_decides(c in follow_case(), safe_n in 0u64..20) {
        prop_assume!(!c.h().is_unset());
        planner_does_what_follow_decides_for(c, safe_n)?;
    }
}

/// A planner that read the EL's heads from `c` gets `c`'s target: what it sends (or reads,
/// refuses, skips) is what [`follow`] decides, before and after the block read.
fn planner_does_what_follow_decides_for(c: FollowCase, safe_n: u64) -> Result<(), TestCaseError> {
    let mut p = Planner::new(PlannerConfig::default());
    p.start(0);
    let finalized = Some(c.applied.forkchoice.finalized);
    p.on_el_heads(Ok(ElHeads { latest: c.el.head, safe: Some(id(safe_n, 0)), finalized }), 0);
    let mut t = target(1, c.h().number, 0, 0, 0);
    let with = |r: L2BlockRef, b: BlockId| L2BlockRef { hash: b.hash, number: b.number, ..r };
    t.unsafe_l2 = with(t.unsafe_l2, c.h());
    t.safe_l2 = with(t.safe_l2, c.target.safe);
    t.finalized_l2 = with(t.finalized_l2, c.target.finalized);
    let snap = p.snapshot();
    let mut case = FollowCase {
        el: ElView { head: snap.applied.head, at_head: ElAtHead::NotRead },
        applied: Applied { forkchoice: snap.applied, first_valid: p.phase() == Phase::Following },
        ..c
    };
    let mut out = p.on_target(t, 1);
    if let Follow::ReadBlock { number } = case.decide() {
        prop_assert!(out.contains(&Action::ReadElBlock { number }), "{:?}", out);
        let block = match c.el.at_head {
            ElAtHead::NotRead | ElAtHead::NotFound => ElBlock::NotFound,
            ElAtHead::ReadError => ElBlock::Error("timeout".into()),
            ElAtHead::Found(hash) => ElBlock::Found(BlockId { hash, number }),
        };
        case.el.at_head = ElAtHead::from(&block);
        out = p.on_el_block(number, block, 2);
    }
    let sent: Vec<Forkchoice> = out
        .iter()
        .filter_map(|a| match a {
            Action::SendFcu(fc) => Some(*fc),
            _ => None,
        })
        .collect();
    match case.decide() {
        Follow::Send(fc) => prop_assert_eq!(sent, vec![fc]),
        Follow::Refuse(refusal) => {
            prop_assert!(sent.is_empty());
            let alert = Action::Alert(Alert::Refused {
                position: Position { epoch: 0, revision: 1 },
                refusal,
            });
            prop_assert!(out.contains(&alert), "{:?}", out);
        }
        Follow::Skip => {
            prop_assert!(sent.is_empty());
            prop_assert!(out.contains(&Action::ScheduleRetry { after_ms: 200 }), "{:?}", out);
        }
        Follow::ReadBlock { .. } => prop_assert!(false, "read twice: {:?}", out),
    }
    Ok(())
}

#[test]
fn follow_cases_reach_every_row() {
    // The properties above must see every decision, labels only and a reorg among the sends.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut read, mut skip, mut refuse, mut labels_only, mut push_h, mut zero) =
        (0, 0, 0, 0, 0, 0);
    for _ in 0..2_000 {
        let c = follow_case().new_tree(&mut runner).unwrap().current();
        match c.decide() {
            Follow::ReadBlock { .. } => read += 1,
            Follow::Skip => skip += 1,
            Follow::Refuse(_) => refuse += 1,
            Follow::Send(fc) if fc.head == c.el.head && fc.head != c.h() => labels_only += 1,
            Follow::Send(fc) if fc.safe.is_unset() => zero += 1,
            Follow::Send(_) => push_h += 1,
        }
    }
    for (what, n) in [
        ("read", read),
        ("skip", skip),
        ("refuse", refuse),
        ("labels only", labels_only),
        ("push H", push_h),
        ("zero labels", zero),
    ] {
        assert!(n >= 20, "only {n} cases of {what}");
    }
}
