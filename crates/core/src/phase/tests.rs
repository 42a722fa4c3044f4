use super::sim::{Rec, World, at, run};
use super::*;

const B: i64 = 2_000;
/// Heads become answerable this long after their timestamp.
const A: i64 = 300;
/// Read latency bound once converged: bracket precision + margin + jitter.
const CLOSE: i64 = PRECISION_MS + MARGIN_MS + MAX_JITTER_MS as i64;

fn lock() -> PhaseLock {
    PhaseLock::new(Duration::from_millis(B as u64), 7)
}

fn steady(n: usize) -> World {
    World::new().extend(2, n, A, 0, 0, 0)
}

/// How long after its head became answerable each new head was read, from poll `from` on.
fn latencies(recs: &[Rec], from: usize) -> Vec<i64> {
    recs[from..]
        .iter()
        .filter(|r| r.new_head)
        .filter_map(|r| r.read.map(|h| r.sent - h.answerable_ms))
        .collect()
}

fn modes(recs: &[Rec]) -> Vec<Mode> {
    recs.iter().map(|r| r.mode).collect()
}

#[test]
fn locks_after_three_consistent_heads_then_polls_just_after_each_head() {
    let w = steady(60);
    let mut l = lock();
    let recs = run(&w, &mut l, at(0) + 1_234, w.end_ms(), |_, _| false);
    // The anchor, then three samples at the fixed cadence.
    assert_eq!(modes(&recs[..4]), [Mode::Learning, Mode::Learning, Mode::Learning, Mode::Locked]);
    for r in &recs[..3] {
        assert_eq!(r.plan, Plan { at_ms: (r.sent + B) as u64, kind: Kind::Cadence });
    }
    assert!(recs[3..].iter().all(|r| r.mode == Mode::Locked), "{:?}", modes(&recs));
    assert_eq!(l.block_time(), Some(Duration::from_secs(2)));
    // Learning saw each head up to 2 s late; probing narrows that to the bound within a few
    // blocks, and from then on every poll reads a new head (one poll per block).
    let tail = &recs[20..];
    assert!(tail.iter().all(|r| r.new_head && r.plan.kind == Kind::Aimed), "{tail:?}");
    let lat = latencies(&recs, 20);
    assert!(lat.iter().all(|d| (0..=CLOSE).contains(d)), "{lat:?}");
    let offset = l.offset_ms().expect("locked");
    assert!((A..=A + PRECISION_MS).contains(&offset), "{offset}");
    let follow_ups = recs.iter().filter(|r| r.plan.kind == Kind::FollowUp).count();
    assert!(follow_ups <= 4, "{follow_ups} follow-ups while probing");
}

#[test]
fn fixed_and_learning_keep_the_fixed_cadence() {
    let w = steady(3);
    let mut l = lock();
    assert_eq!(l.mode(), Mode::Fixed);
    let recs = run(&w, &mut l, at(0) + 10, at(6), |i, _| i == 1);
    assert_eq!(modes(&recs), [Mode::Learning, Mode::Fixed, Mode::Learning]);
    for r in &recs {
        assert_eq!(r.plan, Plan { at_ms: (r.sent + B) as u64, kind: Kind::Cadence });
    }
}

#[test]
fn a_failed_poll_falls_back_and_the_lock_is_relearned() {
    let w = steady(40);
    let mut l = lock();
    let recs = run(&w, &mut l, at(0) + 1_234, w.end_ms(), |i, _| i == 20);
    assert_eq!(recs[19].mode, Mode::Locked);
    assert_eq!((recs[20].mode, recs[20].plan.kind), (Mode::Fixed, Kind::Cadence));
    // The next new head anchors a new run, three more lock again.
    assert_eq!(
        modes(&recs[21..25]),
        [Mode::Learning, Mode::Learning, Mode::Learning, Mode::Locked]
    );
    assert!(recs[25..].iter().all(|r| r.mode == Mode::Locked));
}

#[test]
fn a_stalled_source_falls_back_to_the_fixed_cadence_and_relearns_when_heads_return() {
    // 20 heads, then nothing for 20 s, then heads again (the sequencer catching up first).
    let w = steady(20).extend(2, 40, A, 0, 0, 20_000);
    let stall_end = w.heads[21].answerable_ms;
    let mut l = lock();
    let recs = run(&w, &mut l, at(0) + 1_234, w.end_ms(), |_, _| false);
    let last_before = recs.iter().rposition(|r| r.sent < stall_end).expect("polls");
    let in_stall: Vec<&Rec> = recs[..=last_before].iter().filter(|r| r.sent > at(40)).collect();
    // Locked until the missing head is overdue: one follow-up, then the fixed cadence; fixed
    // once no new head came for more than two block times.
    let first_fixed = recs.iter().position(|r| r.mode == Mode::Fixed).expect("falls back");
    let r = &recs[first_fixed];
    assert!(r.sent - r.first_read > STALL_BLOCKS * B, "{r:?}");
    assert!(r.sent - r.first_read <= STALL_BLOCKS * B + B + B / 8 + CLOSE, "{r:?}");
    assert!(recs[..first_fixed].iter().filter(|r| r.plan.kind == Kind::FollowUp).count() <= 4);
    assert!(in_stall.iter().filter(|r| r.mode == Mode::Fixed).count() >= 5, "{in_stall:?}");
    for r in recs[first_fixed..=last_before].iter() {
        assert_eq!((r.mode, r.plan.kind), (Mode::Fixed, Kind::Cadence), "{r:?}");
        assert_eq!(r.plan.at_ms as i64, r.sent + B);
    }
    // Heads again: learning, then locked, and close to the heads once caught up.
    assert_eq!(recs[last_before + 1].mode, Mode::Learning);
    let relocked = recs.iter().rposition(|r| r.mode != Mode::Locked).expect("relearned") + 1;
    assert!(relocked < recs.len() - 15, "locked again: {:?}", modes(&recs[last_before..]));
    let lat = latencies(&recs, relocked + 16);
    assert!(lat.iter().all(|d| (0..=CLOSE).contains(d)), "{lat:?}");
}

#[test]
fn a_block_time_change_falls_back_and_relearns() {
    let w = steady(20).extend(1, 60, A, 0, 0, 0);
    let mut l = lock();
    let recs = run(&w, &mut l, at(0) + 1_234, w.end_ms(), |_, _| false);
    let change = recs
        .iter()
        .position(|r| r.read.is_some_and(|h| h.head.number > 1020))
        .expect("reads the new blocks");
    assert_eq!(recs[change - 1].mode, Mode::Locked);
    assert_eq!(recs[change].mode, Mode::Learning);
    assert_eq!(recs[change].block_after, Some(1_000));
    assert!(recs.last().is_some_and(|r| r.mode == Mode::Locked));
    assert_eq!(l.block_time(), Some(Duration::from_secs(1)));
    // With 1 s blocks and a 2 s interval, one aimed poll every two blocks.
    assert!(recs[recs.len() - 5..].iter().all(|r| r.plan.kind == Kind::Aimed));
}

#[test]
fn a_missed_block_or_a_head_going_back_falls_back() {
    let w = steady(10);
    let mut l = lock();
    let recs = run(&w, &mut l, at(0) + 1_234, w.end_ms(), |_, _| false);
    assert_eq!(l.mode(), Mode::Locked);
    let last = recs.last().and_then(|r| r.read).expect("read").head;
    let sent = recs.last().expect("polls").plan.at_ms;
    // Two blocks on instead of one: learning, from that head.
    let skip = Head { number: last.number + 2, timestamp: last.timestamp + 4 };
    let p = l.step(Poll { sent_ms: sent, head: Some(skip) });
    assert_eq!((l.mode(), p.kind), (Mode::Learning, Kind::Cadence));
    assert_eq!(p.at_ms, sent + B as u64);
    let back = Head { number: last.number, timestamp: last.timestamp };
    l.step(Poll { sent_ms: sent + 2_000, head: Some(back) });
    assert_eq!(l.mode(), Mode::Learning);
    assert_eq!(l.offset_ms(), None, "nothing sampled since the anchor");
}

#[test]
fn a_late_head_gets_one_follow_up_and_a_later_one_gives_up() {
    // Head 1031 is 150 ms late (its follow-up reads it), head 1041 is 900 ms late (its
    // follow-up misses it too).
    let mut w = steady(60);
    w.heads[31].answerable_ms += 150;
    w.heads[41].answerable_ms += 900;
    let mut l = lock();
    let recs = run(&w, &mut l, at(0) + 1_234, w.end_ms(), |_, _| false);
    let after = |n: u64| {
        let i = recs
            .iter()
            .position(|r| r.plan.kind == Kind::FollowUp && r.aim_before == Some(n))
            .unwrap_or_else(|| panic!("a follow-up for head {n}"));
        (&recs[i], &recs[i + 1])
    };
    let (missed, follow_up) = after(1031);
    assert!(missed.read.is_some_and(|h| h.head.number == 1030) && missed.mode == Mode::Locked);
    let wait = missed.plan.at_ms as i64 - missed.sent;
    assert!((B / 8..=B / 8 + MAX_JITTER_MS as i64).contains(&wait), "{wait}");
    assert!(follow_up.read.is_some_and(|h| h.head.number == 1031));
    assert_eq!(follow_up.mode, Mode::Locked, "the follow-up read it: still locked");

    let (_, follow_up) = after(1041);
    assert!(follow_up.read.is_some_and(|h| h.head.number == 1040), "still late");
    assert_eq!((follow_up.mode, follow_up.plan.kind), (Mode::Learning, Kind::Cadence));
    let follow_ups = recs.iter().filter(|r| r.plan.kind == Kind::FollowUp);
    assert_eq!(follow_ups.filter(|r| r.aim_before == Some(1041)).count(), 1);
    assert!(recs.last().is_some_and(|r| r.mode == Mode::Locked), "relearned");
}

#[test]
fn jitter_comes_from_the_seed() {
    let w = steady(30);
    let trace = |seed| {
        let mut l = PhaseLock::new(Duration::from_millis(B as u64), seed);
        let recs = run(&w, &mut l, at(0) + 1_234, w.end_ms(), |_, _| false);
        recs.iter().map(|r| r.plan).collect::<Vec<_>>()
    };
    assert_eq!(trace(1), trace(1), "deterministic for one seed");
    assert_ne!(trace(1), trace(2), "another seed polls at other instants");
    let mut l = lock();
    let draws: Vec<i64> = (0..1_000).map(|_| l.jitter()).collect();
    assert!(draws.iter().all(|j| (0..=MAX_JITTER_MS as i64).contains(j)));
    assert!(draws.contains(&0) && draws.contains(&(MAX_JITTER_MS as i64)));
}

#[test]
fn reset_forgets_the_pattern_but_not_the_credit() {
    let w = steady(20);
    let mut l = lock();
    run(&w, &mut l, at(0) + 1_234, w.end_ms(), |_, _| false);
    assert_eq!(l.mode(), Mode::Locked);
    let credit = l.credit;
    l.reset();
    assert_eq!((l.mode(), l.block_time(), l.offset_ms()), (Mode::Fixed, None, None));
    assert_eq!(l.credit, credit);
    let p = l.step(Poll { sent_ms: 5, head: Some(Head { number: 1, timestamp: 1 }) });
    assert_eq!((l.mode(), p), (Mode::Learning, Plan { at_ms: 5 + B as u64, kind: Kind::Cadence }));
}

#[test]
fn odd_timestamps_do_not_lock_or_panic() {
    let mut l = lock();
    let heads = [(1, u64::MAX), (2, u64::MAX), (3, 5), (4, 5), (6, 8), (9, 9)];
    for (i, (number, timestamp)) in heads.into_iter().enumerate() {
        let sent = 1_000 + i as u64 * 2_000;
        let p = l.step(Poll { sent_ms: sent, head: Some(Head { number, timestamp }) });
        assert_eq!(p, Plan { at_ms: sent + B as u64, kind: Kind::Cadence });
        assert_ne!(l.mode(), Mode::Locked);
    }
    assert_eq!(l.block_time(), None, "1 s over 3 blocks is no whole number of ms per block");
    let p = l.step(Poll { sent_ms: u64::MAX, head: Some(Head { number: 10, timestamp: 0 }) });
    assert_eq!(p.kind, Kind::Cadence);
}
