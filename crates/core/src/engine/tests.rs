//! Unit tests: every plan case and every EL answer, by name.

use super::*;

pub(super) fn hash(n: u64, fork: u8) -> B256 {
    let mut b = [0u8; 32];
    b[0] = fork + 1;
    b[24..].copy_from_slice(&n.to_be_bytes());
    B256::from(b)
}

pub(super) fn id(n: u64, fork: u8) -> BlockId {
    BlockId { hash: hash(n, fork), number: n }
}

pub(super) fn l2(n: u64, fork: u8) -> L2BlockRef {
    L2BlockRef {
        hash: hash(n, fork),
        number: n,
        parent_hash: hash(n.saturating_sub(1), fork),
        timestamp: 1_000 + 2 * n,
        l1origin: BlockId { hash: hash(n / 4, 9), number: n / 4 },
        sequence_number: n % 4,
    }
}

pub(super) fn target(rev: u64, unsafe_n: u64, safe_n: u64, fin_n: u64, fork: u8) -> Target {
    Target {
        chain_id: 10,
        epoch: 0,
        revision: rev,
        unsafe_l2: l2(unsafe_n, fork),
        safe_l2: l2(safe_n, fork),
        local_safe_l2: l2(safe_n, fork),
        finalized_l2: l2(fin_n, fork),
        current_l1: L1BlockRef {
            hash: hash(rev, 8),
            number: rev.saturating_add(100),
            parent_hash: hash(rev.saturating_sub(1), 8),
            timestamp: 5,
        },
    }
}

fn fc(head: BlockId, safe: BlockId, finalized: BlockId) -> Forkchoice {
    Forkchoice { head, safe, finalized }
}

fn zero() -> BlockId {
    BlockId::default()
}

fn sends(actions: &[Action]) -> Vec<Forkchoice> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::SendFcu(f) => Some(*f),
            _ => None,
        })
        .collect()
}

fn without_publish(actions: Vec<Action>) -> Vec<Action> {
    actions.into_iter().filter(|a| *a != Action::PublishEngineState).collect()
}

fn genesis_heads() -> ElHeads {
    ElHeads { latest: id(0, 0), safe: Some(id(0, 0)), finalized: Some(id(0, 0)) }
}

/// A planner that read a fresh EL (genesis only).
fn fresh() -> Planner {
    let mut p = Planner::new(PlannerConfig::default());
    assert_eq!(without_publish(p.start(0)), vec![Action::ReadElHeads]);
    p.on_el_heads(Ok(genesis_heads()), 0);
    assert_eq!(p.phase(), Phase::InitialSync);
    p
}

/// A planner in the following phase with the EL at head `n`, safe `s`, finalized `f` (fork 0).
fn following(n: u64, s: u64, f: u64) -> Planner {
    let mut p = Planner::new(PlannerConfig::default());
    p.start(0);
    p.on_el_heads(
        Ok(ElHeads { latest: id(n, 0), safe: Some(id(s, 0)), finalized: Some(id(f, 0)) }),
        0,
    );
    assert_eq!(p.phase(), Phase::Following);
    p
}

#[test]
fn start_reads_el_heads_before_planning() {
    let mut p = Planner::new(PlannerConfig::default());
    assert_eq!(p.phase(), Phase::Starting);
    assert_eq!(without_publish(p.start(0)), vec![Action::ReadElHeads]);
    // A target arriving before the heads are known is recorded, not planned.
    assert!(sends(&p.on_target(target(1, 10, 5, 2, 0), 1)).is_empty());
    let out = p.on_el_heads(Ok(genesis_heads()), 2);
    assert_eq!(sends(&out), vec![fc(id(10, 0), zero(), zero())]);
}

#[test]
fn el_heads_error_retries_with_backoff() {
    let mut p = Planner::new(PlannerConfig::default());
    p.start(0);
    let out = without_publish(p.on_el_heads(Err("connection refused".into()), 0));
    assert_eq!(out, vec![Action::ScheduleRetry { after_ms: 200 }]);
    assert_eq!(
        without_publish(p.on_timer(100)),
        vec![Action::ScheduleRetry { after_ms: 100 }],
        "an early timer call only re-arms"
    );
    assert_eq!(without_publish(p.on_timer(200)), vec![Action::ReadElHeads]);
    let out = without_publish(p.on_el_heads(Err("connection refused".into()), 200));
    assert_eq!(out, vec![Action::ScheduleRetry { after_ms: 400 }]);
    assert!(p.snapshot().last_error.is_some_and(|e| e.contains("connection refused")));
}

#[test]
fn restarted_driver_starts_from_el_heads() {
    let p = following(50, 40, 30);
    let s = p.snapshot();
    assert_eq!(s.phase, Phase::Following);
    assert_eq!(s.applied, fc(id(50, 0), id(40, 0), id(30, 0)));
}

#[test]
fn restarted_driver_never_moves_finalized_below_el() {
    let mut p = following(50, 40, 30);
    // The target's finalized (20) is below the EL's (30): only finalized is held.
    let out = p.on_target(target(7, 60, 45, 20, 0), 0);
    assert_eq!(sends(&out), vec![fc(id(60, 0), id(45, 0), id(30, 0))]);
    // A safe below the EL's finalized too: safe stands at the held finalized.
    p.on_fcu_answer(FcuOutcome::Valid, 1);
    let out = p.on_target(target(8, 62, 25, 20, 0), 0);
    assert_eq!(sends(&out), vec![fc(id(62, 0), id(30, 0), id(30, 0))]);
}

#[test]
fn case1_el_behind_sends_target_head_with_zero_labels_during_initial_sync() {
    let mut p = fresh();
    let out = p.on_target(target(1, 10, 5, 2, 0), 0);
    assert_eq!(sends(&out), vec![fc(id(10, 0), zero(), zero())]);
}

#[test]
fn first_valid_switches_to_following_and_sends_all_three_labels() {
    let mut p = fresh();
    p.on_target(target(1, 10, 5, 2, 0), 0);
    let out = p.on_fcu_answer(FcuOutcome::Valid, 1);
    assert_eq!(p.phase(), Phase::Following);
    assert_eq!(sends(&out), vec![fc(id(10, 0), id(5, 0), id(2, 0))]);
    assert!(out.contains(&Action::PublishEngineState));
    let out = p.on_fcu_answer(FcuOutcome::Valid, 2);
    assert!(sends(&out).is_empty());
    assert_eq!(p.snapshot().applied, fc(id(10, 0), id(5, 0), id(2, 0)));
    assert_eq!(p.snapshot().applied_position, Position { epoch: 0, revision: 1 });
}

#[test]
fn case1_following_sends_target_head_and_labels() {
    let mut p = following(10, 5, 2);
    let out = p.on_target(target(1, 20, 12, 4, 0), 0);
    assert_eq!(sends(&out), vec![fc(id(20, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn case2_not_found_pushes_target_head() {
    let mut p = following(30, 5, 2);
    let out = without_publish(p.on_target(target(1, 20, 12, 4, 0), 0));
    assert_eq!(out, vec![Action::ReadElBlock { number: 20 }]);
    let out = p.on_el_block(20, ElBlock::NotFound, 1);
    assert_eq!(sends(&out), vec![fc(id(20, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn case2_rpc_error_skips_round_and_retries() {
    let mut p = following(30, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    let out = without_publish(p.on_el_block(20, ElBlock::Error("timeout".into()), 1));
    assert_eq!(out, vec![Action::ScheduleRetry { after_ms: 200 }]);
    assert_eq!(without_publish(p.on_timer(201)), vec![Action::ReadElBlock { number: 20 }]);
}

#[test]
fn case2_same_hash_sends_labels_only_without_rewinding_head() {
    let mut p = following(30, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    let out = p.on_el_block(20, ElBlock::Found(id(20, 0)), 1);
    assert_eq!(sends(&out), vec![fc(id(30, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn case2_other_hash_reorgs_to_target_head() {
    let mut p = following(30, 5, 2);
    p.on_target(target(1, 20, 12, 4, 1), 0);
    let out = p.on_el_block(20, ElBlock::Found(id(20, 0)), 1);
    // Fork 1 shares nothing with fork 0 in these ids, but labels follow the target.
    let t = target(1, 20, 12, 4, 1);
    assert_eq!(sends(&out), vec![fc(t.unsafe_l2.id(), t.safe_l2.id(), t.finalized_l2.id())]);
}

#[test]
fn el_head_equal_to_target_head_needs_no_read() {
    let mut p = following(20, 5, 2);
    let out = p.on_target(target(1, 20, 12, 4, 0), 0);
    assert_eq!(sends(&out), vec![fc(id(20, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn stale_answer_for_another_number_is_ignored() {
    let mut p = following(30, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    assert!(p.on_el_block(21, ElBlock::NotFound, 1).is_empty());
    assert!(p.on_fcu_answer(FcuOutcome::Valid, 1).is_empty());
    assert!(p.is_busy());
}

#[test]
fn follow_unsafe_off_uses_local_safe_as_head() {
    let cfg = PlannerConfig { follow_unsafe: false, ..PlannerConfig::default() };
    let mut p = Planner::new(cfg);
    p.start(0);
    p.on_el_heads(
        Ok(ElHeads { latest: id(3, 0), safe: Some(id(2, 0)), finalized: Some(id(1, 0)) }),
        0,
    );
    let mut t = target(1, 20, 12, 4, 0);
    t.local_safe_l2 = l2(14, 0);
    let out = p.on_target(t, 0);
    assert_eq!(sends(&out), vec![fc(id(14, 0), id(12, 0), id(4, 0))]);
}

/// A following planner without the SYNCING head probe.
fn following_no_probe(n: u64, s: u64, f: u64) -> Planner {
    let mut p = Planner::new(PlannerConfig { syncing_probe_ms: 0, ..PlannerConfig::default() });
    p.start(0);
    p.on_el_heads(
        Ok(ElHeads { latest: id(n, 0), safe: Some(id(s, 0)), finalized: Some(id(f, 0)) }),
        0,
    );
    p
}

#[test]
fn syncing_does_not_apply_labels_and_resends_promptly_then_backs_off() {
    let mut p = following_no_probe(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    let out = without_publish(p.on_fcu_answer(FcuOutcome::Syncing, 10));
    assert_eq!(out, vec![Action::ScheduleRetry { after_ms: 50 }]);
    assert_eq!(p.snapshot().applied, fc(id(10, 0), id(5, 0), id(2, 0)), "labels not applied");
    let want = fc(id(20, 0), id(12, 0), id(4, 0));
    assert_eq!(sends(&p.on_timer(60)), vec![want]);
    assert_eq!(
        without_publish(p.on_fcu_answer(FcuOutcome::Syncing, 70)),
        vec![Action::ScheduleRetry { after_ms: 100 }]
    );
    assert_eq!(sends(&p.on_timer(170)), vec![want]);
    assert_eq!(
        without_publish(p.on_fcu_answer(FcuOutcome::Syncing, 180)),
        vec![Action::ScheduleRetry { after_ms: 200 }]
    );
    for _ in 0..10 {
        p.on_timer(u64::MAX / 2);
        p.on_fcu_answer(FcuOutcome::Syncing, 0);
    }
    assert_eq!(sends(&p.on_timer(u64::MAX / 2)), vec![want], "periodic refresh");
    let out = p.on_fcu_answer(FcuOutcome::Syncing, 0);
    assert!(out.contains(&Action::ScheduleRetry { after_ms: 1_000 }), "capped: {out:?}");
    p.on_timer(u64::MAX / 2);
    p.on_fcu_answer(FcuOutcome::Valid, 0);
    assert_eq!(p.snapshot().applied, want);
}

#[test]
fn syncing_resends_at_once_when_el_reports_the_head() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    p.on_fcu_answer(FcuOutcome::Syncing, 0);
    assert_eq!(without_publish(p.resync(5)), vec![Action::ReadElHeads]);
    let out = p.on_el_heads(
        Ok(ElHeads { latest: id(20, 0), safe: Some(id(5, 0)), finalized: Some(id(2, 0)) }),
        6,
    );
    assert_eq!(sends(&out), vec![fc(id(20, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn new_head_while_syncing_is_sent_at_once() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    p.on_fcu_answer(FcuOutcome::Syncing, 0);
    let out = p.on_target(target(2, 21, 12, 4, 0), 1);
    assert_eq!(sends(&out), vec![fc(id(21, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn identical_fcu_is_deduped_after_valid() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    p.on_fcu_answer(FcuOutcome::Valid, 0);
    // Same heads, newer revision (a heartbeat): nothing to send.
    let out = p.on_target(target(2, 20, 12, 4, 0), 1);
    assert!(sends(&out).is_empty());
    assert!(!p.is_busy());
    assert_eq!(p.snapshot().applied_position, Position { epoch: 0, revision: 2 });
}

#[test]
fn identical_fcu_while_syncing_waits_for_the_scheduled_refresh() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    p.on_fcu_answer(FcuOutcome::Syncing, 0);
    assert!(sends(&p.on_target(target(2, 20, 12, 4, 0), 1)).is_empty());
    assert_eq!(sends(&p.on_timer(100)).len(), 1);
}

#[test]
fn stale_and_replayed_targets_plan_nothing() {
    let mut p = following(10, 5, 2);
    p.on_target(target(5, 20, 12, 4, 0), 0);
    p.on_fcu_answer(FcuOutcome::Valid, 0);
    assert!(p.on_target(target(5, 30, 12, 4, 0), 1).is_empty(), "replay of revision 5");
    assert!(p.on_target(target(3, 40, 12, 4, 0), 1).is_empty(), "stale revision");
    assert_eq!(p.target().map(|t| t.revision), Some(5));
}

#[test]
fn targets_during_an_inflight_fcu_are_coalesced_to_the_newest() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    for rev in 2..=101 {
        assert!(sends(&p.on_target(target(rev, 20 + rev, 12, 4, 0), 1)).is_empty());
    }
    let out = p.on_fcu_answer(FcuOutcome::Valid, 2);
    assert_eq!(sends(&out), vec![fc(id(121, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn invalid_head_is_alerted_and_never_planned_again() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    let out = p.on_fcu_answer(
        FcuOutcome::Invalid {
            latest_valid_hash: Some(hash(19, 0)),
            validation_error: Some("bad".into()),
        },
        0,
    );
    assert!(out.iter().any(
        |a| matches!(a, Action::Alert(Alert::InvalidHead { head, .. }) if *head == id(20, 0))
    ));
    assert!(sends(&out).is_empty());
    assert!(p.is_invalid(&hash(20, 0)));
    assert!(p.on_timer(u64::MAX).is_empty(), "no retry after INVALID");
    // A newer target naming the same head plans nothing.
    let out = p.on_target(target(2, 20, 13, 4, 0), 1);
    assert!(sends(&out).is_empty());
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Alert(Alert::TargetHeadInvalid { position: Position { revision: 2, .. }, .. })
    )));
    // A target with another head goes ahead.
    assert_eq!(sends(&p.on_target(target(3, 21, 13, 4, 0), 2)).len(), 1);
}

#[test]
fn invalid_forkchoice_state_rereads_heads_and_sends_corrected_fcu() {
    let mut p = following(14, 10, 5);
    // Head on fork 1 (branching at 12), safe from fork 0 at 13: not on the head's chain.
    let mut t = target(1, 20, 13, 5, 1);
    t.safe_l2 = l2(13, 0);
    t.finalized_l2 = l2(5, 0);
    p.on_target(t, 0);
    let out = without_publish(p.on_fcu_answer(
        FcuOutcome::InvalidForkchoiceState { message: "safe not canonical".into() },
        1,
    ));
    assert_eq!(out, vec![Action::ReadElHeads]);
    // op-reth moved the head before rejecting the labels.
    let out = p.on_el_heads(
        Ok(ElHeads { latest: id(20, 1), safe: Some(id(10, 0)), finalized: Some(id(5, 0)) }),
        2,
    );
    assert_eq!(sends(&out), vec![fc(id(20, 1), id(10, 0), id(5, 0))], "head with the EL's labels");
    p.on_fcu_answer(FcuOutcome::Valid, 3);
    assert!(!p.is_busy());
    // The next target is planned normally again.
    let out = p.on_target(target(2, 21, 15, 6, 1), 4);
    assert_eq!(sends(&out), vec![fc(id(21, 1), id(15, 1), id(6, 1))]);
}

#[test]
fn invalid_forkchoice_state_for_the_corrected_fcu_alerts_and_waits() {
    let mut p = following(14, 10, 5);
    p.on_target(target(1, 20, 13, 5, 0), 0);
    p.on_fcu_answer(FcuOutcome::InvalidForkchoiceState { message: "x".into() }, 1);
    p.on_el_heads(
        Ok(ElHeads { latest: id(14, 0), safe: Some(id(10, 0)), finalized: Some(id(5, 0)) }),
        2,
    );
    let out = p.on_fcu_answer(FcuOutcome::InvalidForkchoiceState { message: "y".into() }, 3);
    assert!(out.iter().any(|a| matches!(a, Action::Alert(Alert::ForkchoiceStateRejected { .. }))));
    assert!(sends(&out).is_empty());
    assert!(!p.is_busy());
    assert!(p.on_timer(u64::MAX).is_empty());
}

#[test]
fn error_is_temporary_and_retried_with_backoff() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    let want = fc(id(20, 0), id(12, 0), id(4, 0));
    let mut delays = Vec::new();
    for i in 0..7 {
        let out = p.on_fcu_answer(FcuOutcome::Error { message: "connection refused".into() }, i);
        for a in out {
            if let Action::ScheduleRetry { after_ms } = a {
                delays.push(after_ms);
            }
        }
        assert_eq!(sends(&p.on_timer(u64::MAX / 2)), vec![want]);
    }
    assert_eq!(delays, vec![200, 400, 800, 1600, 3200, 5000, 5000]);
    p.on_fcu_answer(FcuOutcome::Valid, 0);
    assert_eq!(p.snapshot().last_error, None);
}

#[test]
fn refusals_are_typed() {
    let none = HashSet::new();
    let f = Phase::Following;
    let ok = fc(id(10, 0), id(8, 0), id(5, 0));
    assert_eq!(check_forkchoice(&ok, f, id(5, 0), &none), Ok(()));
    assert_eq!(
        check_forkchoice(&fc(zero(), zero(), zero()), Phase::InitialSync, zero(), &none),
        Err(Refusal::ZeroHead)
    );
    assert_eq!(
        check_forkchoice(&fc(id(10, 0), id(11, 0), id(5, 0)), f, zero(), &none),
        Err(Refusal::SafeAboveHead { safe: id(11, 0), head: id(10, 0) })
    );
    assert_eq!(
        check_forkchoice(&fc(id(10, 0), id(8, 0), id(9, 0)), f, zero(), &none),
        Err(Refusal::FinalizedAboveSafe { finalized: id(9, 0), safe: id(8, 0) })
    );
    assert_eq!(
        check_forkchoice(&ok, f, id(6, 0), &none),
        Err(Refusal::FinalizedRegression { accepted: id(6, 0), planned: id(5, 0) })
    );
    assert_eq!(
        check_forkchoice(&ok, f, id(5, 1), &none),
        Err(Refusal::FinalizedConflict { accepted: id(5, 1), planned: id(5, 0) })
    );
    assert_eq!(
        check_forkchoice(&ok, Phase::InitialSync, zero(), &none),
        Err(Refusal::LabelsBeforeFirstValid)
    );
    assert_eq!(
        check_forkchoice(&fc(id(10, 0), zero(), zero()), f, zero(), &none),
        Err(Refusal::ZeroLabelAfterSync)
    );
    let bad: HashSet<B256> = [hash(10, 0)].into_iter().collect();
    assert_eq!(check_forkchoice(&ok, f, zero(), &bad), Err(Refusal::InvalidHead(id(10, 0))));
    assert!(Refusal::ZeroHead.to_string().contains("head is zero"));
}

#[test]
fn lying_source_is_refused_not_sent() {
    let mut p = following(10, 5, 2);
    let mut t = target(1, 20, 12, 4, 0);
    t.finalized_l2 = l2(15, 0); // finalized above safe
    let out = p.on_target(t, 0);
    assert!(sends(&out).is_empty());
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Alert(Alert::Refused { refusal: Refusal::FinalizedAboveSafe { .. }, .. })
    )));
    assert!(p.snapshot().last_error.is_some());
    // Conflicting finalized at the accepted number.
    let out = p.on_target(target(2, 20, 12, 2, 3), 1);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Alert(Alert::Refused { refusal: Refusal::FinalizedConflict { .. }, .. })
    )));
}

#[test]
fn current_l1_is_mirrored_once_the_applied_safe_reaches_the_target_safe() {
    let mut p = following(10, 5, 2);
    let t = target(1, 20, 12, 4, 0);
    p.on_target(t, 0);
    assert_eq!(p.snapshot().current_l1, None);
    p.on_fcu_answer(FcuOutcome::Syncing, 1);
    assert_eq!(p.snapshot().current_l1, None, "not before the labels land");
    p.on_timer(1_000);
    p.on_fcu_answer(FcuOutcome::Valid, 1_001);
    assert_eq!(p.snapshot().current_l1, Some(t.current_l1));
    // A newer target whose safe is already applied is mirrored immediately.
    let t2 = target(2, 20, 12, 4, 0);
    p.on_target(t2, 1_002);
    assert_eq!(p.snapshot().current_l1, Some(t2.current_l1));
}

#[test]
fn pause_holds_fcus_and_resume_plans_the_newest() {
    let mut p = following(10, 5, 2);
    p.pause();
    assert!(p.snapshot().paused);
    assert!(sends(&p.on_target(target(1, 20, 12, 4, 0), 0)).is_empty());
    assert!(sends(&p.on_target(target(2, 22, 12, 4, 0), 0)).is_empty());
    assert_eq!(sends(&p.resume(1)), vec![fc(id(22, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn resync_during_an_fcu_rereads_after_the_answer() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    assert!(without_publish(p.resync(1)).is_empty());
    let out = without_publish(p.on_fcu_answer(FcuOutcome::Valid, 2));
    assert_eq!(out, vec![Action::ReadElHeads]);
}

#[test]
fn engine_state_is_published_only_on_change() {
    let mut p = following(10, 5, 2);
    assert!(p.on_target(target(1, 20, 12, 4, 0), 0).contains(&Action::PublishEngineState));
    assert!(p.on_fcu_answer(FcuOutcome::Valid, 0).contains(&Action::PublishEngineState));
    assert!(!p.on_timer(5).contains(&Action::PublishEngineState));
    assert!(p.resume(6).is_empty());
}

#[test]
fn backoff_doubles_and_caps() {
    assert_eq!(backoff(100, 1_000, 0), 100);
    assert_eq!(backoff(100, 1_000, 3), 800);
    assert_eq!(backoff(100, 1_000, 4), 1_000);
    assert_eq!(backoff(100, 1_000, u32::MAX), 1_000);
}

#[test]
fn syncing_probe_resends_as_soon_as_the_el_reports_the_head() {
    let mut p = following(10, 5, 2);
    let want = fc(id(20, 0), id(12, 0), id(4, 0));
    p.on_target(target(1, 20, 12, 4, 0), 0);
    assert_eq!(
        without_publish(p.on_fcu_answer(FcuOutcome::Syncing, 0)),
        vec![Action::ScheduleRetry { after_ms: 50 }]
    );
    p.on_timer(50);
    assert_eq!(
        without_publish(p.on_fcu_answer(FcuOutcome::Syncing, 50)),
        vec![Action::ScheduleRetry { after_ms: 100 }]
    );
    p.on_timer(150);
    // Backoff 200 ms now: the probe (100 ms) comes first.
    assert_eq!(
        without_publish(p.on_fcu_answer(FcuOutcome::Syncing, 150)),
        vec![Action::ScheduleRetry { after_ms: 100 }]
    );
    assert_eq!(without_publish(p.on_timer(250)), vec![Action::ReadElHeads]);
    // The EL made the downloaded head canonical by itself (labels not applied): re-send now.
    let heads = ElHeads { latest: id(20, 0), safe: Some(id(5, 0)), finalized: Some(id(2, 0)) };
    let out = p.on_el_heads(Ok(heads), 251);
    assert_eq!(sends(&out), vec![want]);
    p.on_fcu_answer(FcuOutcome::Valid, 260);
    assert_eq!(p.snapshot().applied, want);
}

#[test]
fn syncing_probe_keeps_the_scheduled_resend_otherwise() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    for t in [0, 50] {
        p.on_fcu_answer(FcuOutcome::Syncing, t);
        p.on_timer(t + 1_000);
    }
    p.on_fcu_answer(FcuOutcome::Syncing, 150);
    assert_eq!(without_publish(p.on_timer(250)), vec![Action::ReadElHeads]);
    // Still the old head: no FCU, the next probe is armed (re-send due at 350).
    let out = without_publish(
        p.on_el_heads(Ok(ElHeads { latest: id(10, 0), safe: None, finalized: None }), 250),
    );
    assert_eq!(out, vec![Action::ScheduleRetry { after_ms: 100 }]);
    // An early timer call re-arms instead of doing nothing.
    assert_eq!(without_publish(p.on_timer(300)), vec![Action::ScheduleRetry { after_ms: 50 }]);
    // A failed probe changes nothing either.
    let out = without_publish(p.on_el_heads(Err("boom".into()), 300));
    assert!(out.is_empty(), "not awaiting a probe: {out:?}");
    assert_eq!(
        sends(&p.on_timer(350)),
        vec![fc(id(20, 0), id(12, 0), id(4, 0))],
        "the scheduled re-send"
    );
}

#[test]
fn a_new_target_during_a_probe_is_planned_after_it() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    for t in [0, 50] {
        p.on_fcu_answer(FcuOutcome::Syncing, t);
        p.on_timer(t + 1_000);
    }
    p.on_fcu_answer(FcuOutcome::Syncing, 150);
    assert_eq!(without_publish(p.on_timer(250)), vec![Action::ReadElHeads]);
    assert!(sends(&p.on_target(target(2, 21, 12, 4, 0), 251)).is_empty(), "probe outstanding");
    let out = p.on_el_heads(Ok(ElHeads { latest: id(10, 0), safe: None, finalized: None }), 252);
    assert_eq!(sends(&out), vec![fc(id(21, 0), id(12, 0), id(4, 0))]);
}

#[test]
fn case2_after_syncing_rereads_the_el_head_before_labels_only() {
    // EL at A30; the target reorgs to B30 (same height).
    let mut p = following(30, 24, 20);
    let t = target(1, 30, 26, 20, 1);
    let mut t = t;
    t.finalized_l2 = l2(20, 0);
    assert_eq!(without_publish(p.on_target(t, 0)), vec![Action::ReadElBlock { number: 30 }]);
    let out = p.on_el_block(30, ElBlock::Found(id(30, 0)), 1);
    assert_eq!(sends(&out), vec![fc(id(30, 1), id(26, 1), id(20, 0))]);
    p.on_fcu_answer(FcuOutcome::Syncing, 2);
    // op-reth adopted B30 by itself; our view (A30) is stale: read the heads, not block 30.
    assert_eq!(without_publish(p.on_timer(1_000)), vec![Action::ReadElHeads]);
    let heads = ElHeads { latest: id(30, 1), safe: Some(id(24, 0)), finalized: Some(id(20, 0)) };
    let out = p.on_el_heads(Ok(heads), 1_001);
    assert_eq!(sends(&out), vec![fc(id(30, 1), id(26, 1), id(20, 0))], "labels at B30, never A30");
}

/// `follow` inputs: EL head `el`, block at H's number `at`, accepted finalized `floor`.
fn follow_at(want: Forkchoice, el: BlockId, at: ElAtHead, floor: BlockId, synced: bool) -> Follow {
    let applied = Applied { forkchoice: fc(el, zero(), floor), first_valid: synced };
    follow(want, ElView { head: el, at_head: at }, applied)
}

#[test]
fn follow_table_row_by_row() {
    let want = fc(id(20, 0), id(12, 0), id(4, 0));
    let floor = id(2, 0);
    let send = |head| Follow::Send(fc(head, id(12, 0), id(4, 0)));
    // (1) EL head below H: FCU(H), whatever was read.
    for at in
        [ElAtHead::NotRead, ElAtHead::ReadError, ElAtHead::NotFound, ElAtHead::Found(hash(20, 1))]
    {
        assert_eq!(follow_at(want, id(10, 0), at, floor, true), send(id(20, 0)), "{at:?}");
    }
    // (2) EL head is H: no read needed.
    assert_eq!(follow_at(want, id(20, 0), ElAtHead::NotRead, floor, true), send(id(20, 0)));
    // (2) EL at or above H's number, block there not read yet: read it first.
    assert_eq!(
        follow_at(want, id(30, 0), ElAtHead::NotRead, floor, true),
        Follow::ReadBlock { number: 20 }
    );
    assert_eq!(
        follow_at(want, id(20, 1), ElAtHead::NotRead, floor, true),
        Follow::ReadBlock { number: 20 },
        "same number, another hash"
    );
    // (2) not found: push H.
    assert_eq!(follow_at(want, id(30, 0), ElAtHead::NotFound, floor, true), send(id(20, 0)));
    // (2) read error: nothing this round.
    assert_eq!(follow_at(want, id(30, 0), ElAtHead::ReadError, floor, true), Follow::Skip);
    // (2) same hash: labels only, the EL's head stays.
    let at = ElAtHead::Found(hash(20, 0));
    assert_eq!(follow_at(want, id(30, 0), at, floor, true), send(id(30, 0)));
    // (2) another hash: reorg to H.
    let at = ElAtHead::Found(hash(20, 1));
    assert_eq!(follow_at(want, id(30, 1), at, floor, true), send(id(20, 0)));
    assert_eq!(ElAtHead::from(&ElBlock::Found(id(20, 1))), at);
    assert_eq!(ElAtHead::from(&ElBlock::NotFound), ElAtHead::NotFound);
    assert_eq!(ElAtHead::from(&ElBlock::Error("x".into())), ElAtHead::ReadError);
}

#[test]
fn follow_sends_zero_labels_until_the_first_valid() {
    let want = fc(id(20, 0), id(12, 0), id(4, 0));
    assert_eq!(
        follow_at(want, id(0, 0), ElAtHead::NotRead, zero(), false),
        Follow::Send(fc(id(20, 0), zero(), zero()))
    );
    let at = ElAtHead::Found(hash(20, 0));
    assert_eq!(
        follow_at(want, id(30, 0), at, zero(), false),
        Follow::Send(fc(id(30, 0), zero(), zero())),
        "labels only, still zero"
    );
    // A lying target breaks nothing while labels are zero.
    let lie = fc(id(20, 0), id(25, 0), id(26, 0));
    assert_eq!(
        follow_at(lie, id(0, 0), ElAtHead::NotRead, zero(), false),
        Follow::Send(fc(id(20, 0), zero(), zero()))
    );
}

#[test]
fn follow_refuses_what_breaks_an_invariant() {
    let el = id(10, 0);
    let read = ElAtHead::NotFound;
    let cases = [
        (fc(zero(), id(12, 0), id(4, 0)), zero(), Refusal::ZeroHead),
        (
            fc(id(20, 0), id(21, 0), id(4, 0)),
            zero(),
            Refusal::SafeAboveHead { safe: id(21, 0), head: id(20, 0) },
        ),
        (
            fc(id(20, 0), id(12, 0), id(13, 0)),
            zero(),
            Refusal::FinalizedAboveSafe { finalized: id(13, 0), safe: id(12, 0) },
        ),
        (
            fc(id(20, 0), id(12, 0), id(4, 0)),
            id(4, 1),
            Refusal::FinalizedConflict { accepted: id(4, 1), planned: id(4, 0) },
        ),
        (fc(id(20, 0), zero(), zero()), zero(), Refusal::ZeroLabelAfterSync),
    ];
    for (want, floor, refusal) in cases {
        assert_eq!(follow_at(want, el, read, floor, true), Follow::Refuse(refusal), "{want:?}");
    }
    // A finalized below the EL's is held at the EL's, head and safe follow.
    assert_eq!(
        follow_at(fc(id(20, 0), id(12, 0), id(4, 0)), el, read, id(5, 0), true),
        Follow::Send(fc(id(20, 0), id(12, 0), id(5, 0)))
    );
    assert_eq!(
        follow_at(fc(zero(), zero(), zero()), el, read, zero(), false),
        Follow::Refuse(Refusal::ZeroHead)
    );
    // Labels only: the EL's head (30) is checked, not H (20).
    let want = fc(id(20, 0), id(25, 0), id(4, 0));
    let at = ElAtHead::Found(hash(20, 0));
    assert_eq!(
        follow_at(want, id(30, 0), at, zero(), true),
        Follow::Send(fc(id(30, 0), id(25, 0), id(4, 0)))
    );
}

fn at_epoch(epoch: u64, t: Target) -> Target {
    Target { epoch, ..t }
}

#[test]
fn new_epoch_is_followed_old_epoch_replay_is_not() {
    let now = 1_700_000_000_000;
    let mut p = following(10, 5, 2);
    p.set_wall_clock(now);
    let old = at_epoch(now - 1_000, target(900, 20, 12, 4, 0));
    assert_eq!(sends(&p.on_target(old, 0)), vec![fc(id(20, 0), id(12, 0), id(4, 0))]);
    p.on_fcu_answer(FcuOutcome::Valid, 1);
    // The validator lost its history: a later epoch starts again at revision 1.
    let new = at_epoch(now, target(1, 30, 20, 4, 0));
    assert_eq!(sends(&p.on_target(new, 2)), vec![fc(id(30, 0), id(20, 0), id(4, 0))]);
    p.on_fcu_answer(FcuOutcome::Valid, 3);
    // The old epoch's newest target re-delivered: ignored, whatever its revision.
    assert!(p.on_target(old, 4).is_empty());
    assert!(p.on_target(at_epoch(now - 1_000, target(u64::MAX, 40, 30, 5, 0)), 5).is_empty());
    assert_eq!(p.target().map(|t| (t.epoch, t.revision)), Some((now, 1)));
    // An epoch far in the future (forged) is ignored and wedges nothing.
    assert!(p.on_target(at_epoch(u64::MAX, target(2, 40, 30, 5, 0)), 6).is_empty());
    let next = at_epoch(now, target(2, 40, 30, 5, 0));
    assert_eq!(sends(&p.on_target(next, 7)), vec![fc(id(40, 0), id(30, 0), id(5, 0))]);
}

#[test]
fn new_epoch_never_moves_finalized_backwards() {
    let now = 1_700_000_000_000;
    let mut p = following(50, 40, 30);
    p.set_wall_clock(now);
    // A new epoch whose finalized (20) is below the EL's (30): the head and safe move on,
    // finalized stays at 30.
    let out = p.on_target(at_epoch(now, target(1, 60, 45, 20, 0)), 0);
    let sent = sends(&out);
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!((sent[0].head.number, sent[0].safe.number, sent[0].finalized.number), (60, 45, 30));
}

#[test]
fn revision_u64_max_does_not_wedge_the_driver() {
    let now = 1_700_000_000_000;
    let mut p = following(10, 5, 2);
    p.set_wall_clock(now);
    let forged = at_epoch(now, target(u64::MAX, 20, 12, 4, 0));
    assert!(!sends(&p.on_target(forged, 0)).is_empty());
    p.on_fcu_answer(FcuOutcome::Valid, 1);
    // The validator's next target after it: a later epoch at revision 1.
    let next = crate::revision::next_position(Some(Position::of(&forged)), None, now).unwrap();
    let t = Target { epoch: next.epoch, revision: next.revision, ..target(0, 30, 20, 4, 0) };
    assert_eq!(sends(&p.on_target(t, 2)), vec![fc(id(30, 0), id(20, 0), id(4, 0))]);
}

/// Two epochs with the same revision number are different targets: keyed by revision alone,
/// an INVALID answer for (old epoch, 5) blocked (new epoch, 5), arrived meanwhile, for good.
#[test]
fn an_invalid_head_blocks_its_position_not_the_same_revision_of_a_new_epoch() {
    let now = 1_700_000_000_000;
    let mut p = following(10, 5, 2);
    p.set_wall_clock(now);
    let old = at_epoch(now - 1_000, target(5, 20, 12, 4, 0));
    assert_eq!(sends(&p.on_target(old, 0)), vec![fc(id(20, 0), id(12, 0), id(4, 0))]);
    // While that update is in flight the validator starts a new epoch; same revision number.
    let new = at_epoch(now, target(5, 21, 12, 4, 0));
    assert!(sends(&p.on_target(new, 1)).is_empty(), "one update in flight");
    let invalid = FcuOutcome::Invalid { latest_valid_hash: None, validation_error: None };
    let out = p.on_fcu_answer(invalid, 2);
    assert_eq!(sends(&out), vec![fc(id(21, 0), id(12, 0), id(4, 0))], "the new epoch's target");
    let out = p.on_fcu_answer(FcuOutcome::Valid, 3);
    assert!(sends(&out).is_empty());
    assert_eq!(p.snapshot().applied_position, Position { epoch: now, revision: 5 });
}

/// The applied position follows a new epoch even when its revision is lower: keyed by
/// revision alone, the applied target stayed the old epoch's revision 50 (`max(50, 1)`).
#[test]
fn applied_position_follows_a_new_epoch_at_a_lower_revision() {
    let now = 1_700_000_000_000;
    let mut p = following(10, 5, 2);
    p.set_wall_clock(now);
    let old = at_epoch(now - 1_000, target(50, 20, 12, 4, 0));
    assert_eq!(sends(&p.on_target(old, 0)), vec![fc(id(20, 0), id(12, 0), id(4, 0))]);
    p.on_fcu_answer(FcuOutcome::Valid, 1);
    assert_eq!(p.snapshot().applied_position, Position { epoch: now - 1_000, revision: 50 });
    // A new epoch at revision 1 with the same heads: nothing to send, but it is applied.
    let new = at_epoch(now, target(1, 20, 12, 4, 0));
    assert!(sends(&p.on_target(new, 2)).is_empty());
    let snap = p.snapshot();
    assert_eq!(snap.target_position, Position { epoch: now, revision: 1 });
    assert_eq!(snap.applied_position, Position { epoch: now, revision: 1 });
}

#[test]
fn a_new_heads_first_resend_is_prompt_after_a_syncing_streak() {
    let mut p = following_no_probe(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    // A long SYNCING streak for head 20: the re-send delay reaches its 1 s cap.
    let mut t = 0;
    for _ in 0..8 {
        p.on_fcu_answer(FcuOutcome::Syncing, t);
        t += 2_000;
        p.on_timer(t);
    }
    let out = without_publish(p.on_fcu_answer(FcuOutcome::Syncing, t));
    assert_eq!(out, vec![Action::ScheduleRetry { after_ms: 1_000 }]);
    // A new head: sent at once, and its first SYNCING re-send comes after 50 ms, not 1 s.
    assert_eq!(sends(&p.on_target(target(2, 21, 12, 4, 0), t + 1)).len(), 1);
    let out = without_publish(p.on_fcu_answer(FcuOutcome::Syncing, t + 2));
    assert_eq!(out, vec![Action::ScheduleRetry { after_ms: 50 }]);
}

#[test]
fn the_syncing_probe_backs_off_with_the_resends() {
    let mut p = following(10, 5, 2);
    p.on_target(target(1, 20, 12, 4, 0), 0);
    let mut gaps = Vec::new();
    let mut t = 0;
    for _ in 0..8 {
        let out = without_publish(p.on_fcu_answer(FcuOutcome::Syncing, t));
        if let [Action::ScheduleRetry { after_ms }] = out[..] {
            gaps.push(after_ms);
        }
        t += 2_000;
        p.on_timer(t);
    }
    // First the re-sends themselves (50, 100 ms), then probes every 100 ms while the re-send
    // is up to 400 ms away, then a quarter of the capped 1 s re-send: 250 ms.
    assert_eq!(gaps, vec![50, 100, 100, 100, 200, 250, 250, 250]);
    assert_eq!(probe_every(100, 1_000), 250);
    assert_eq!(probe_every(0, 1_000), 0);
}

#[test]
fn remembered_invalid_heads_are_never_sent() {
    let mut p = following(10, 5, 2);
    p.remember_invalid([hash(20, 0), B256::ZERO]);
    assert_eq!(p.invalid_heads(), vec![hash(20, 0)]);
    let out = p.on_target(target(1, 20, 12, 4, 0), 0);
    assert!(sends(&out).is_empty(), "{out:?}");
    assert!(out.iter().any(|a| matches!(a, Action::Alert(Alert::TargetHeadInvalid { .. }))));
    // Another head is followed as usual.
    assert_eq!(sends(&p.on_target(target(2, 21, 12, 4, 0), 1)).len(), 1);
}
