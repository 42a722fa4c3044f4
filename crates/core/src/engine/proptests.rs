//! Property tests: random sequences of targets (duplicates, stale revisions, reorgs, source
//! restarts, lying sources) and EL answers, checking the planner's invariants on every
//! planned forkchoice update.

use proptest::prelude::*;

use super::tests::{id, l2, target};
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
