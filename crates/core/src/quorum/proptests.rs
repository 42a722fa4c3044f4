//! Generated source sets: honest sources walking one canonical chain (some lagging, some
//! stalled), liars that copy an honest status and fabricate one label at a time.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::B256;
use crate::status::BlockId;

const WINDOW: u64 = 30_000;

fn hash(tag: u8, n: u64) -> B256 {
    let mut h = [0u8; 32];
    h[0] = tag;
    h[24..].copy_from_slice(&n.to_be_bytes());
    B256::from(h)
}

/// Canonical L2 block `n` (tag 0); a fabricated one has another tag.
fn l2(n: u64, tag: u8) -> L2BlockRef {
    L2BlockRef {
        hash: hash(tag, n),
        number: n,
        parent_hash: hash(0, n.saturating_sub(1)),
        timestamp: 1_000 + 2 * n,
        l1origin: BlockId { hash: hash(100, n / 6), number: n / 6 },
        sequence_number: n % 6,
    }
}

fn l1(n: u64) -> L1BlockRef {
    L1BlockRef {
        hash: hash(100, n),
        number: n,
        parent_hash: hash(100, n.saturating_sub(1)),
        timestamp: 12 * n,
    }
}

/// The honest status at head `n`.
fn honest(n: u64) -> SyncStatus {
    SyncStatus {
        current_l1: l1(n / 6),
        unsafe_l2: l2(n, 0),
        local_safe_l2: Some(l2(n.saturating_sub(4), 0)),
        safe_l2: l2(n.saturating_sub(6), 0),
        finalized_l2: l2(n.saturating_sub(12), 0),
        ..SyncStatus::default()
    }
}

fn is_canonical(b: &L2BlockRef) -> bool {
    *b == l2(b.number, 0)
}

/// Fabricates label `which` (0..5) of `s` with tag `tag` (non-zero), keeping the order.
fn fabricate(mut s: SyncStatus, which: u8, tag: u8) -> SyncStatus {
    match which % 5 {
        0 => s.unsafe_l2 = l2(s.unsafe_l2.number + 3, tag),
        1 => s.local_safe_l2 = Some(l2(s.local_safe().number, tag)),
        2 => s.safe_l2 = l2(s.safe_l2.number, tag),
        3 => s.finalized_l2 = l2(s.finalized_l2.number, tag),
        _ => s.current_l1 = L1BlockRef { hash: hash(tag, 9_999), ..s.current_l1 },
    }
    s
}

#[derive(Debug, Clone)]
struct Scenario {
    k: usize,
    /// Per honest source: (lag in blocks, stalled: stops reporting after this many polls).
    honest: Vec<(u64, Option<usize>)>,
    /// Per liar: (label to fabricate per poll, tag).
    liars: Vec<(Vec<u8>, u8)>,
    polls: usize,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=3, 1usize..=5)
        .prop_flat_map(|(k, honest_n)| {
            (
                Just(k),
                proptest::collection::vec((0u64..4, proptest::option::of(1usize..10)), honest_n),
                // Fewer liars than k: they can never form a quorum of their own.
                proptest::collection::vec((proptest::collection::vec(0u8..5, 20), 1u8..=50), 0..k),
                5usize..20,
            )
        })
        .prop_map(|(k, honest, liars, polls)| Scenario { k, honest, liars, polls })
}

/// Records every source's statuses; polls are 1 s apart, the chain advances one block per poll.
fn run(sc: &Scenario) -> (Votes, u64) {
    let mut votes = Votes::default();
    let mut seq = 0;
    let mut now = 0;
    for p in 0..sc.polls {
        now = 100_000 + 1_000 * p as u64;
        let tip = 20 + p as u64;
        for (i, (lag, stall)) in sc.honest.iter().enumerate() {
            if stall.is_some_and(|s| p >= s) {
                continue;
            }
            seq += 1;
            let r = Report { observed_ms: now, seq, status: honest(tip - lag) };
            votes.record(&format!("honest-{i}"), r, 64);
        }
        for (i, (labels, tag)) in sc.liars.iter().enumerate() {
            seq += 1;
            let copied = honest(tip);
            let status = fabricate(copied, labels[p % labels.len()], *tag);
            votes.record(&format!("liar-{i}"), Report { observed_ms: now, seq, status }, 64);
        }
    }
    (votes, now)
}

/// Sources that reported exactly `b` as `label` within the window.
fn reporters(votes: &Votes, now: u64, label: Label, b: &SyncStatus) -> usize {
    let sources: Vec<String> = votes.sources().map(str::to_owned).collect();
    sources
        .iter()
        .filter(|s| {
            votes.reports(s).any(|r| {
                r.observed_ms + WINDOW >= now
                    && match label {
                        Label::Unsafe => r.status.unsafe_l2 == b.unsafe_l2,
                        Label::LocalSafe => r.status.local_safe() == b.local_safe(),
                        Label::Safe => r.status.safe_l2 == b.safe_l2,
                        Label::Finalized => r.status.finalized_l2 == b.finalized_l2,
                        Label::CurrentL1 => r.status.current_l1 == b.current_l1,
                    }
            })
        })
        .count()
}

const LABELS: [Label; 5] =
    [Label::Unsafe, Label::LocalSafe, Label::Safe, Label::Finalized, Label::CurrentL1];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every label of a combined status was reported identically by at least k sources; the
    /// labels are ordered; with fewer than k liars no fabricated block is ever chosen.
    #[test]
    fn no_label_is_chosen_by_fewer_than_k_sources(sc in scenario()) {
        let (votes, now) = run(&sc);
        match votes.combine(sc.k, now, WINDOW) {
            Ok(c) => {
                let s = &c.status;
                for label in LABELS {
                    let n = reporters(&votes, now, label, s);
                    prop_assert!(n >= sc.k, "{} reported by {} < k = {}", label, n, sc.k);
                    prop_assert!(c.supporters[&label].len() >= sc.k);
                }
                prop_assert!(s.finalized_l2.number <= s.safe_l2.number);
                prop_assert!(s.safe_l2.number <= s.local_safe().number);
                prop_assert!(s.local_safe().number <= s.unsafe_l2.number);
                for b in [s.unsafe_l2, s.local_safe(), s.safe_l2, s.finalized_l2] {
                    prop_assert!(is_canonical(&b), "fabricated block chosen: {:?}", b);
                }
                prop_assert_eq!(s.current_l1, l1(s.current_l1.number));
            }
            Err(e) => {
                prop_assert!(e.best < sc.k, "{}", e);
                if e.label == Label::Unsafe {
                    // No unsafe head at all was reported by k sources.
                    let sources: Vec<String> = votes.sources().map(str::to_owned).collect();
                    for s in &sources {
                        for r in votes.reports(s) {
                            prop_assert!(reporters(&votes, now, Label::Unsafe, &r.status) < sc.k);
                        }
                    }
                }
            }
        }
    }

    /// k honest sources at the same head: the combined status is exactly theirs, whatever the
    /// liars (fewer than k) report.
    #[test]
    fn honest_agreement_is_followed(sc in scenario()) {
        let mut sc = sc;
        for h in &mut sc.honest {
            *h = (0, None);
        }
        prop_assume!(sc.honest.len() >= sc.k);
        let (votes, now) = run(&sc);
        let c = votes.combine(sc.k, now, WINDOW).unwrap();
        let tip = 20 + sc.polls as u64 - 1;
        let want = honest(tip);
        prop_assert_eq!(c.status.unsafe_l2, want.unsafe_l2);
        prop_assert_eq!(c.status.safe_l2, want.safe_l2);
        prop_assert_eq!(c.status.local_safe(), want.local_safe());
        prop_assert_eq!(c.status.finalized_l2, want.finalized_l2);
        prop_assert_eq!(c.status.current_l1, want.current_l1);
    }

    /// Failover never leaves a healthy active source, never picks an unhealthy one while a
    /// healthy one exists, and follows the best healthy source otherwise.
    #[test]
    fn failover_keeps_a_healthy_source_and_never_picks_a_sick_one(
        heads in proptest::collection::vec((0u64..100, 0u64..20_000, 0u64..20_000, 0u32..5), 1..5),
        active in proptest::option::of(0usize..5),
    ) {
        let cfg = FailoverConfig::default();
        let now = 100_000;
        let health: BTreeMap<String, Health> = heads
            .iter()
            .enumerate()
            .map(|(i, (head, seen_ago, moved_ago, rej))| {
                (format!("s{i}"), Health {
                    last_seen_ms: now - seen_ago,
                    head: *head,
                    head_since_ms: now - moved_ago,
                    rejections_in_row: *rej,
                    block_ms: 2_000,
                })
            })
            .collect();
        let stall = Failover::stall_ms(&cfg, 2_000);
        let ok = |id: &str| !health[id].unhealthy(now, stall, cfg.max_rejections);
        let mut f = Failover::default();
        if let Some(a) = active.filter(|a| *a < heads.len()) {
            f.active = Some(format!("s{a}"));
        }
        let before = f.active.clone();
        let switch = f.choose(&cfg, &health, now);
        match (&before, &switch) {
            (Some(a), Some(_)) => prop_assert!(!ok(a), "left healthy {}", a),
            (Some(a), None) => prop_assert!(ok(a) || health.keys().filter(|s| *s != a).all(|s| !ok(s))),
            (None, None) => prop_assert!(health.keys().all(|s| !ok(s))),
            (None, Some(_)) => {}
        }
        if let Some(s) = &switch {
            prop_assert!(ok(&s.to));
            let best = health.iter().filter(|(id, _)| ok(id) && Some(*id) != before.as_ref()).map(|(_, h)| h.head).max();
            prop_assert_eq!(Some(health[&s.to].head), best);
        }
    }
}

#[test]
fn a_source_left_is_held_back_while_another_is_healthy() {
    let cfg = FailoverConfig::default();
    let h = |seen: u64, head: u64, since: u64| Health {
        last_seen_ms: seen,
        head,
        head_since_ms: since,
        rejections_in_row: 0,
        block_ms: 2_000,
    };
    let mut f = Failover::default();
    let mut health = BTreeMap::from([("a".to_owned(), h(0, 10, 0)), ("b".to_owned(), h(0, 9, 0))]);
    assert_eq!(f.choose(&cfg, &health, 0).map(|s| s.to), Some("a".into()));
    // a stalls: b takes over.
    health.insert("b".into(), h(20_000, 20, 20_000));
    let s = f.choose(&cfg, &health, 20_000).unwrap();
    assert_eq!((s.from.as_deref(), s.to.as_str()), (Some("a"), "b"));
    // a is ahead again: b stays (healthy).
    health.insert("a".into(), h(21_000, 30, 21_000));
    assert_eq!(f.choose(&cfg, &health, 21_000), None);
    // b stalls while a is within its hold, and c is healthy: c, not a.
    health.insert("c".into(), h(40_000, 25, 40_000));
    health.insert("a".into(), h(40_000, 40, 40_000));
    let s = f.choose(&cfg, &health, 40_000).unwrap();
    assert_eq!(s.to, "c");
    // A stale duplicate never records twice.
    let mut v = Votes::default();
    let r = Report { observed_ms: 1, seq: 7, status: honest(30) };
    assert!(v.record("a", r.clone(), 4));
    assert!(!v.record("a", r, 4));
}

#[test]
fn block_time_and_head_age_come_from_the_reports() {
    let reports: Vec<Report> = (0..5)
        .map(|i| Report { observed_ms: 1_000 * i, seq: i, status: honest(20 + i / 2) })
        .collect();
    let h = Health::from_reports(&reports, 1).unwrap();
    assert_eq!(h.head, 22);
    assert_eq!(h.head_since_ms, 4_000);
    assert_eq!(h.last_seen_ms, 4_000);
    assert_eq!(h.block_ms, 2_000);
    assert_eq!(h.rejections_in_row, 1);
}
