//! The phase lock against random chains (block-time changes, stalls and catch-up, noisy and late
//! heads), random intervals and failed polls: the scheduling bounds always hold, and on a steady
//! chain it locks and then polls just after each head becomes answerable.

use std::collections::HashMap;

use proptest::prelude::*;

use super::sim::{Rec, World, at, noise, run};
use super::*;

/// A stretch of the chain with one block time and one answerable offset.
#[derive(Debug, Clone)]
struct Segment {
    block_s: u64,
    blocks: usize,
    offset_ms: i64,
    noise_ms: i64,
    /// Nothing new for this long before the segment (0: no stall).
    pause_ms: i64,
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        1u64..=2,
        1usize..25,
        -400i64..1_500,
        prop_oneof![Just(0i64), 0i64..400],
        prop_oneof![3 => Just(0i64), 1 => 0i64..15_000],
    )
        .prop_map(|(block_s, blocks, offset_ms, noise_ms, pause_ms)| Segment {
            block_s,
            blocks,
            offset_ms,
            noise_ms,
            pause_ms,
        })
}

fn interval() -> impl Strategy<Value = i64> {
    prop_oneof![Just(2_000i64), Just(1_000), Just(500), Just(3_000), Just(4_000), 100i64..6_000]
}

fn stall_ms(b: i64, interval: i64) -> i64 {
    STALL_BLOCKS.max((interval / b).max(1) + 1) * b
}

/// The block time between two heads read, as the lock computes it.
fn block_ms(a: Head, b: Head) -> Option<i64> {
    block_time(a, b)
}

/// Checks every invariant of the module docs over one simulated run.
fn check(recs: &[Rec], interval: i64) -> Result<(), TestCaseError> {
    let mut follow_ups = 0u32;
    let mut others = 0u32;
    let mut per_head: HashMap<u64, u32> = HashMap::new();
    let mut prev_kind = Kind::Cadence;
    // New heads read: (head, poll index).
    let mut reads: Vec<(Head, usize)> = Vec::new();
    // Polls since the last new head read while locked.
    let mut locked_polls = 0i64;
    for (i, r) in recs.iter().enumerate() {
        // Single flight, and no wait longer than the interval; the fixed cadence is exact.
        let next = r.plan.at_ms as i64;
        prop_assert!(next > r.sent && next <= r.sent + interval, "{r:?}");
        if r.plan.kind == Kind::Cadence {
            prop_assert_eq!(next, r.sent + interval);
        }
        if r.mode != Mode::Locked {
            prop_assert_eq!(r.plan.kind, Kind::Cadence, "{:?}", r);
        }

        // Follow-ups: one per block at most, paid from the credit.
        if prev_kind != Kind::FollowUp {
            others += 1;
        }
        if let (Some(h), true) = (r.read, r.new_head) {
            if let Some(&(prev, _)) = reads.last() {
                // A block-time change never leaves the lock in place.
                if h.head.number > prev.number
                    && r.block_before.is_some_and(|b| block_ms(prev, h.head) != Some(b))
                {
                    prop_assert_ne!(r.mode, Mode::Locked, "{:?}", r);
                }
            }
            reads.push((h.head, i));
        }
        if r.plan.kind == Kind::FollowUp {
            follow_ups += 1;
            let last = reads.last().map(|(h, _)| h.number).unwrap_or_default();
            let n = per_head.entry(last).or_default();
            *n += 1;
            prop_assert!(*n <= 1, "two follow-ups after head {last}");
        }
        prop_assert!(
            follow_ups * POLLS_PER_FOLLOW_UP <= FOLLOW_UP_BURST * POLLS_PER_FOLLOW_UP + others,
            "{follow_ups} follow-ups after {others} other polls"
        );
        prev_kind = r.plan.kind;

        // Locked: per block at most the fillers the interval forces, the aimed poll and one
        // follow-up.
        if r.mode_before == Mode::Locked && r.mode == Mode::Locked && !r.new_head {
            locked_polls += 1;
            let b = r.block_after.expect("locked knows the block time");
            let k = (interval / b).max(1);
            prop_assert!(locked_polls <= (k * b + interval - 1) / interval + 2, "{r:?}");
        } else {
            locked_polls = 0;
        }

        // A stall falls back to the fixed cadence.
        if let (Some(_), false, Some(b)) = (r.read, r.new_head, r.block_after)
            && r.sent - r.first_read > stall_ms(b, interval)
        {
            prop_assert_eq!(r.mode, Mode::Fixed, "stalled: {:?}", r);
        }

        // Locking needs LOCK_AFTER consistent heads after an anchor, with no fallback since.
        if r.mode == Mode::Locked && r.mode_before != Mode::Locked {
            prop_assert!(r.new_head);
            let n = LOCK_AFTER as usize + 1;
            prop_assert!(reads.len() >= n);
            let window = &reads[reads.len() - n..];
            let times: Vec<Option<i64>> =
                window.windows(2).map(|w| block_ms(w[0].0, w[1].0)).collect();
            prop_assert!(times.iter().all(|t| t.is_some() && *t == times[0]), "{times:?}");
            prop_assert!(recs[window[0].1 + 1..i].iter().all(|x| x.mode != Mode::Fixed));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any chain (block-time changes, stalls with catch-up, noise, late heads), any interval,
    /// failed polls: the next poll is never more than one interval away, the fixed cadence is
    /// exact outside the lock, follow-ups are bounded (one per block, credit), stalls and
    /// block-time changes fall back, and a lock needs consistent heads.
    #[test]
    fn scheduling_bounds_hold_on_any_chain(
        segments in proptest::collection::vec(segment(), 1..6),
        interval in interval(),
        seed in any::<u64>(),
        start in 0i64..4_000,
        fail_pct in prop_oneof![Just(0i64), 0i64..8],
    ) {
        let w = segments.iter().enumerate().fold(World::new(), |w, (i, s)| {
            w.extend(s.block_s, s.blocks, s.offset_ms, s.noise_ms, seed ^ i as u64, s.pause_ms)
        });
        let mut l = PhaseLock::new(Duration::from_millis(interval as u64), seed);
        let fails = |i: usize, _| noise(!seed, i, 99) < fail_pct;
        let recs = run(&w, &mut l, at(0) + start, w.end_ms() + 3 * interval, fails);
        check(&recs, interval)?;
    }

    /// A steady chain (constant answerable offset, noise up to half the margin): locked after
    /// the anchor and LOCK_AFTER heads, never unlocked, and once the bracket has converged every
    /// head is read within PRECISION + MARGIN + jitter (+ noise) of becoming answerable, with no
    /// follow-up and (interval ≥ block time) exactly one poll per aimed head.
    #[test]
    fn locks_and_then_polls_just_after_each_head(
        block_s in 1u64..=2,
        quarters in prop_oneof![Just(4i64), Just(1), Just(2), Just(6), Just(8)],
        offset in -500i64..1_500,
        noise_ms in 0i64..=MARGIN_MS / 2,
        start in 0i64..2_000,
        seed in any::<u64>(),
    ) {
        let b = block_s as i64 * 1_000;
        let interval = (b * quarters / 4).max(100);
        let w = World::new().extend(block_s, 120, offset, noise_ms, seed, 0);
        let mut l = PhaseLock::new(Duration::from_millis(interval as u64), seed);
        let recs = run(&w, &mut l, at(0) + start, w.end_ms(), |_, _| false);
        check(&recs, interval)?;

        let locked = recs.iter().position(|r| r.mode == Mode::Locked).expect("locks");
        let slow = interval.max(b);
        prop_assert!(
            recs[locked].sent <= at(0) + start + (LOCK_AFTER as i64 + 2) * slow + b,
            "locked at {}", recs[locked].sent - at(0)
        );
        prop_assert!(recs[locked..].iter().all(|r| r.mode == Mode::Locked));

        // Converged after at most ~log2(interval / PRECISION) probes.
        let settled = recs[locked..]
            .iter()
            .enumerate()
            .filter(|(_, r)| r.new_head)
            .nth(16)
            .map(|(i, _)| locked + i)
            .expect("enough heads");
        let close = PRECISION_MS + MARGIN_MS + MAX_JITTER_MS as i64 + 2 * noise_ms;
        let tail = &recs[settled..];
        let mut aimed = 0;
        for r in tail {
            prop_assert_ne!(r.plan.kind, Kind::FollowUp, "{:?}", r);
            if let (Some(h), true) = (r.read, r.new_head)
                && r.aim_before == Some(h.head.number)
            {
                aimed += 1;
                let late = r.sent - h.answerable_ms;
                prop_assert!((0..=close).contains(&late), "read {late} ms late: {r:?}");
            }
        }
        // One poll per aimed head; with the interval a whole number of aims, the first aimed
        // poll after the bracket converged can be held at the last probe by the interval cap,
        // and re-aimed once when that misses.
        if interval >= b {
            prop_assert!(tail.len() <= aimed + 2, "{} polls for {aimed} aimed heads", tail.len());
        }
    }
}
