//! Several drivers contending for one lease through a compare-and-set store, with random
//! write and watch delays and drivers paused at random: never two senders at once.

use proptest::prelude::*;

use super::*;

const STEP: u64 = 100;

#[derive(Debug, Clone)]
struct Plan {
    drivers: usize,
    /// Per step and driver: (paused, write-apply delay, response delay, watch delay) in steps.
    steps: Vec<Vec<(bool, u64, u64, u64)>>,
    /// Per driver, a long pause (first step, length): a stopped process, a partition.
    long_pause: Vec<Option<(usize, usize)>>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (2usize..=3).prop_flat_map(|drivers| {
        proptest::collection::vec(
            proptest::collection::vec(
                (proptest::bool::weighted(0.2), 0u64..4, 0u64..4, 0u64..6),
                drivers,
            ),
            50..300,
        )
        .prop_flat_map(move |steps| {
            let n = steps.len();
            (
                Just(steps),
                proptest::collection::vec(proptest::option::of((0..n, 10usize..150)), drivers),
            )
        })
        .prop_map(move |(steps, long_pause)| Plan { drivers, steps, long_pause })
    })
}

/// A write on its way: applied at `apply`, answered at `respond`.
struct InFlight {
    driver: usize,
    expect: u64,
    apply: u64,
    respond: u64,
    outcome: Option<Result<u64, Stored>>,
}

fn simulate(p: &Plan) -> Result<usize, String> {
    let cfg = LeaseConfig::default();
    let mut store = Stored::Absent;
    let mut revision = 0u64;
    // What each driver's watch has delivered: (deliver at, value), in order.
    let mut watch: Vec<Vec<(u64, Stored)>> = vec![Vec::new(); p.drivers];
    let mut drivers: Vec<Lease> =
        (0..p.drivers).map(|i| Lease::new(format!("d{i}"), cfg, 0)).collect();
    let mut flights: Vec<InFlight> = Vec::new();
    let mut sends = 0;
    for (n, step) in p.steps.iter().enumerate() {
        let now = n as u64 * STEP;
        // The store applies due writes (compare-and-set), in send order.
        for f in flights.iter_mut().filter(|f| f.outcome.is_none() && f.apply <= now) {
            let current = match &store {
                Stored::Absent => 0,
                Stored::Held { revision, .. } => *revision,
            };
            if current == f.expect {
                revision += 1;
                store = Stored::Held { revision, holder: format!("d{}", f.driver) };
                f.outcome = Some(Ok(revision));
                for (i, w) in watch.iter_mut().enumerate() {
                    let at = now + STEP * p.steps[n][i].3;
                    let at = w.last().map_or(at, |(last, _)| at.max(*last));
                    w.push((at, store.clone()));
                }
            } else {
                f.outcome = Some(Err(store.clone()));
            }
        }
        for (i, &(paused, apply, respond, _)) in step.iter().enumerate() {
            let long = p.long_pause[i].is_some_and(|(from, len)| (from..from + len).contains(&n));
            if paused || long {
                continue;
            }
            let d = &mut drivers[i];
            while watch[i].first().is_some_and(|(at, _)| *at <= now) {
                let (_, v) = watch[i].remove(0);
                d.observe(v, now);
            }
            if let Some(pos) = flights
                .iter()
                .position(|f| f.driver == i && f.outcome.is_some() && f.respond <= now)
            {
                let f = flights.remove(pos);
                match f.outcome {
                    Some(Ok(rev)) => d.written(rev, now),
                    Some(Err(current)) => d.write_failed(Some(current), now),
                    None => {}
                }
            }
            // Now and then an early renewal (a new INVALID head to store) when none is due.
            let w = d.tick(now).or_else(|| if n % 7 == i { d.renew_now(now) } else { None });
            if let Some(w) = w {
                let apply = now + STEP * apply;
                flights.push(InFlight {
                    driver: i,
                    expect: w.expect,
                    apply,
                    respond: apply + STEP * respond,
                    outcome: None,
                });
            }
        }
        // The invariant, at every step and just before the next one.
        for t in [now, now + STEP - 1] {
            let senders: Vec<&str> =
                drivers.iter().filter(|d| d.may_send(t)).map(Lease::me).collect();
            if senders.len() > 1 {
                return Err(format!("two senders at {t} ms: {senders:?}"));
            }
            sends += senders.len();
        }
    }
    Ok(sends)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No two drivers may send at the same time, whatever the delays and pauses.
    #[test]
    fn never_two_senders(p in plan()) {
        if let Err(e) = simulate(&p) {
            prop_assert!(false, "{}", e);
        }
    }

    /// The list is the newest distinct non-zero heads, oldest first, never more than the bound,
    /// whatever is inserted (repeats, zero, far more than the bound).
    #[test]
    fn invalid_heads_keep_the_newest_distinct(inserts in proptest::collection::vec(0u8..100, 0..300)) {
        let mut list = InvalidHeads::default();
        let mut model: Vec<B256> = Vec::new();
        for b in inserts {
            let h = B256::repeat_byte(b);
            let new = b != 0 && !model.contains(&h);
            prop_assert_eq!(list.insert(h), new);
            if new {
                model.push(h);
                if model.len() > MAX_INVALID_HEADS {
                    model.remove(0);
                }
                prop_assert!(list.contains(&h), "the newest head is kept");
            }
            prop_assert!(list.len() <= MAX_INVALID_HEADS);
            prop_assert!(!list.contains(&B256::ZERO));
            prop_assert_eq!(list.iter().copied().collect::<Vec<_>>(), model.clone());
        }
    }
}

#[test]
fn an_early_renewal_needs_the_lease_and_no_write_in_flight() {
    let cfg = LeaseConfig::default();
    let mut a = Lease::new("a", cfg, 0);
    assert_eq!(a.renew_now(0), None, "holds nothing");
    assert_eq!(a.tick(0), Some(Write { expect: 0 }));
    assert_eq!(a.renew_now(1), None, "a write is in flight");
    a.written(1, 10);
    assert_eq!(a.tick(20), None, "not due");
    assert_eq!(a.renew_now(20), Some(Write { expect: 1 }));
    a.written(2, 30);
    assert_eq!(a.send_until(), Some(20 + cfg.ttl_ms - cfg.margin_ms), "counts from its send");
    // Someone else holds it: no early renewal.
    let mut b = Lease::new("b", cfg, 0);
    b.observe(Stored::Held { revision: 2, holder: "a".into() }, 40);
    assert_eq!(b.renew_now(50), None);
}

#[test]
fn one_driver_takes_and_keeps_the_lease() {
    let p =
        Plan { drivers: 2, steps: vec![vec![(false, 0, 0, 0); 2]; 200], long_pause: vec![None; 2] };
    let sends = simulate(&p).unwrap();
    // Someone holds it nearly all the time (both steps' instants, minus the first writes).
    assert!(sends > 2 * 200 - 10, "{sends}");
}

#[test]
fn a_paused_holder_stops_sending_before_the_other_takes_over() {
    let cfg = LeaseConfig::default();
    let mut a = Lease::new("a", cfg, 0);
    let mut b = Lease::new("b", cfg, 0);
    assert_eq!(a.tick(0), Some(Write { expect: 0 }));
    a.written(1, 10);
    let held = Stored::Held { revision: 1, holder: "a".into() };
    b.observe(held, 20);
    assert!(a.may_send(20) && !b.may_send(20));
    // a pauses (never renews): it stops at 0 + ttl - margin, b may write at 20 + ttl.
    assert!(!a.may_send(cfg.ttl_ms - cfg.margin_ms));
    assert_eq!(b.tick(20 + cfg.ttl_ms - 1), None);
    assert_eq!(b.tick(20 + cfg.ttl_ms), Some(Write { expect: 1 }));
    b.written(2, 20 + cfg.ttl_ms + 5);
    assert!(b.may_send(20 + cfg.ttl_ms + 5));
    // a wakes up and learns it lost: its renewal fails, it never sends again.
    assert_eq!(a.tick(cfg.ttl_ms + 100), Some(Write { expect: 1 }));
    a.write_failed(Some(Stored::Held { revision: 2, holder: "b".into() }), cfg.ttl_ms + 200);
    assert!(!a.may_send(cfg.ttl_ms + 200) && !a.holds());
}
