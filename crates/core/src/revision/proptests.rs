//! Property tests of the target order: no overflow or panic at the edges of `u64`, the
//! validator's next position is always newer than the stored one for every driver, and an
//! old epoch never wins over a newer one.

use proptest::prelude::*;

use super::*;

fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(u64::MAX - MAX_EPOCH_AHEAD_MS),
        any::<u64>(),
        0u64..1_000,
        1_600_000_000_000u64..1_900_000_000_000,
    ]
}

fn pos() -> impl Strategy<Value = Position> {
    (edge_u64(), edge_u64()).prop_map(|(epoch, revision)| Position { epoch, revision })
}

proptest! {
    /// The next position is newer than the stored one for any driver whose clock agrees,
    /// or (when the stored epoch was implausible) newer than anything a driver accepted.
    #[test]
    fn next_is_newer(last in proptest::option::of(pos()), now in edge_u64()) {
        match next_position(last, now) {
            Ok(n) => {
                prop_assert!(n.revision >= 1);
                prop_assert!(epoch_plausible(n.epoch, now));
                match last {
                    Some(l) if epoch_plausible(l.epoch, now) => {
                        prop_assert!(is_newer(Some(l), n, now));
                    }
                    _ => {
                        prop_assert!(n.epoch >= 1, "a new epoch is above the legacy epoch 0");
                        prop_assert_eq!(n, Position { epoch: now, revision: 1 });
                    }
                }
            }
            Err(PositionError::NoClock) => prop_assert_eq!(now, 0),
            Err(PositionError::Exhausted(l)) => {
                prop_assert_eq!(Some(l), last);
                prop_assert_eq!(l.revision, u64::MAX);
            }
        }
    }

    /// `is_newer` is a strict order: irreflexive and asymmetric; a replay is never newer.
    #[test]
    fn strict_order(a in pos(), b in pos(), now in edge_u64()) {
        prop_assert!(!is_newer(Some(a), a, now));
        prop_assert!(!(is_newer(Some(a), b, now) && is_newer(Some(b), a, now)));
    }

    /// Following a sequence of validator restarts (lost history, later clocks), a driver
    /// accepts every new history's first target and never flips back to an older epoch.
    #[test]
    fn follows_new_histories(starts in proptest::collection::vec((1u64..1_000_000, 1u64..50), 1..8)) {
        let mut now = 1_700_000_000_000u64;
        let mut seen: Option<Position> = None;
        let mut old = Vec::new();
        for (gap, n) in starts {
            now += gap;
            let mut last = None;
            for _ in 0..n {
                let p = next_position(last, now).unwrap();
                prop_assert!(is_newer(seen, p, now));
                seen = Some(p);
                last = Some(p);
                now += 1;
            }
            old.extend(last);
            for o in &old {
                prop_assert!(!is_newer(seen, *o, now));
            }
        }
    }
}

#[test]
fn edges() {
    let now = 1_700_000_000_000;
    // Revision u64::MAX: a new epoch after it, newer for drivers.
    let forged = Position { epoch: now, revision: u64::MAX };
    let n = next_position(Some(forged), now).unwrap();
    assert_eq!(n, Position { epoch: now + 1, revision: 1 });
    assert!(is_newer(Some(forged), n, now));
    // Epoch u64::MAX is ignored by drivers and not continued by the validator.
    let future = Position { epoch: u64::MAX, revision: 3 };
    assert!(!is_newer(Some(Position { epoch: now, revision: 9 }), future, now));
    assert!(!is_newer(None, future, now));
    assert_eq!(next_position(Some(future), now).unwrap(), Position { epoch: now, revision: 1 });
    // Exhausted: nothing later exists.
    let end = Position { epoch: u64::MAX, revision: u64::MAX };
    assert_eq!(next_position(Some(end), u64::MAX), Err(PositionError::Exhausted(end)));
    assert_eq!(next_position(None, 0), Err(PositionError::NoClock));
    // Legacy targets (epoch 0) continue as before.
    let legacy = Position { epoch: 0, revision: 41 };
    assert_eq!(next_position(Some(legacy), now).unwrap(), Position { epoch: 0, revision: 42 });
    assert!(is_newer(Some(legacy), Position { epoch: now, revision: 1 }, now));
}
