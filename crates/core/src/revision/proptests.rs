//! Property tests of the target order: no overflow or panic at the edges of `u64`, the
//! validator's next position is always newer than the stored one and than every plausible
//! position a driver reports, for every driver, and an old epoch never wins over a newer one.

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
        match next_position(last, None, now) {
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

    /// Seeded with the newest position the drivers report: the next position is newer (per
    /// `is_newer`) than the stream's newest and than the drivers' newest whenever each is
    /// plausible; it is plausible itself; an error only when no such position exists.
    #[test]
    fn next_is_newer_than_stream_and_drivers(
        last in proptest::option::of(pos()),
        drivers in proptest::option::of(pos()),
        now in edge_u64(),
    ) {
        let plausible = |p: &Position| epoch_plausible(p.epoch, now);
        match next_position(last, drivers, now) {
            Ok(n) => {
                prop_assert!(n.revision >= 1);
                prop_assert!(epoch_plausible(n.epoch, now));
                for p in [last, drivers].into_iter().flatten().filter(plausible) {
                    prop_assert!(is_newer(Some(p), n, now), "{n} not newer than {p}");
                }
                if last.filter(plausible).is_none() && drivers.filter(plausible).is_none() {
                    prop_assert_eq!(n, Position { epoch: now, revision: 1 });
                }
            }
            Err(PositionError::NoClock) => prop_assert_eq!(now, 0),
            Err(PositionError::Exhausted(p)) => {
                prop_assert!(last == Some(p) || drivers == Some(p));
                // Truly nothing plausible is newer than p.
                prop_assert_eq!(p.revision, u64::MAX);
                prop_assert!(p.epoch.checked_add(1).is_none_or(|e| !epoch_plausible(e, now)));
            }
        }
    }

    /// Drivers that are not ahead of the stream (the normal case: they only take targets from
    /// it) change nothing; one that is ahead makes the validator start a new epoch above it.
    #[test]
    fn drivers_only_matter_when_ahead(
        last in proptest::option::of(pos()),
        drivers in pos(),
        now in edge_u64(),
    ) {
        let alone = next_position(last, None, now);
        let seeded = next_position(last, Some(drivers), now);
        let stored = last.filter(|l| epoch_plausible(l.epoch, now));
        if is_newer(stored, drivers, now) {
            if let Ok(n) = seeded
                && drivers.epoch.checked_add(1).is_some_and(|e| epoch_plausible(e, now))
            {
                prop_assert_eq!(n, Position { epoch: now.max(drivers.epoch + 1), revision: 1 });
            }
        } else {
            prop_assert_eq!(seeded, alone);
        }
    }

    /// A restored older backup: drivers followed a history up to some position, then the
    /// stream goes back to an older position (an older epoch, or the same epoch at a lower
    /// revision). Seeded with the drivers' newest, the validator's next target is taken by
    /// every driver at once; without the seed it is not.
    #[test]
    fn a_restored_older_backup_is_overtaken(
        epoch in 1_600_000_000_000u64..1_900_000_000_000,
        applied in 2u64..1_000_000,
        back in 1u64..1_000_000,
        older_epoch in prop::bool::ANY,
        later in 0u64..10_000_000,
    ) {
        let now = epoch + later;
        let seen = Position { epoch, revision: applied };
        let restored = if older_epoch {
            Position { epoch: epoch - back, revision: applied }
        } else {
            Position { epoch, revision: applied.saturating_sub(back).max(1) }
        };
        let n = next_position(Some(restored), Some(seen), now).unwrap();
        prop_assert!(is_newer(Some(seen), n, now));
        prop_assert!(is_newer(Some(restored), n, now));
        prop_assert_eq!(n, Position { epoch: now.max(epoch + 1), revision: 1 });
        let unseeded = next_position(Some(restored), None, now).unwrap();
        prop_assert!(!is_newer(Some(seen), unseeded, now), "the old limit");
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
                let p = next_position(last, None, now).unwrap();
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
    let n = next_position(Some(forged), None, now).unwrap();
    assert_eq!(n, Position { epoch: now + 1, revision: 1 });
    assert!(is_newer(Some(forged), n, now));
    // Epoch u64::MAX is ignored by drivers and not continued by the validator.
    let future = Position { epoch: u64::MAX, revision: 3 };
    assert!(!is_newer(Some(Position { epoch: now, revision: 9 }), future, now));
    assert!(!is_newer(None, future, now));
    assert_eq!(
        next_position(Some(future), None, now).unwrap(),
        Position { epoch: now, revision: 1 }
    );
    // Exhausted: nothing later exists.
    let end = Position { epoch: u64::MAX, revision: u64::MAX };
    assert_eq!(next_position(Some(end), None, u64::MAX), Err(PositionError::Exhausted(end)));
    assert_eq!(next_position(None, None, 0), Err(PositionError::NoClock));
    // Legacy targets (epoch 0) continue as before.
    let legacy = Position { epoch: 0, revision: 41 };
    assert_eq!(
        next_position(Some(legacy), None, now).unwrap(),
        Position { epoch: 0, revision: 42 }
    );
    assert!(is_newer(Some(legacy), Position { epoch: now, revision: 1 }, now));
}

#[test]
fn seeded_edges() {
    let now = 1_700_000_000_000;
    // The brief's case: a driver applied (E, 50), the stream holds (E - 1000, 3).
    let applied = Position { epoch: now - 5, revision: 50 };
    let restored = Position { epoch: now - 1_005, revision: 3 };
    let n = next_position(Some(restored), Some(applied), now).unwrap();
    assert_eq!(n, Position { epoch: now, revision: 1 });
    // A driver's epoch later than the clock (skew): the new epoch is above it.
    let ahead = Position { epoch: now + 10, revision: 7 };
    assert_eq!(
        next_position(Some(restored), Some(ahead), now).unwrap(),
        Position { epoch: now + 11, revision: 1 }
    );
    // Empty stream: above the drivers, not just the clock.
    assert_eq!(
        next_position(None, Some(ahead), now).unwrap(),
        Position { epoch: now + 11, revision: 1 }
    );
    // At the edge of the window no later epoch is plausible: the driver's epoch is continued.
    let edge = Position { epoch: now + MAX_EPOCH_AHEAD_MS, revision: 7 };
    assert_eq!(next_position(None, Some(edge), now).unwrap(), Position { revision: 8, ..edge });
    let end = Position { revision: u64::MAX, ..edge };
    assert_eq!(next_position(None, Some(end), now), Err(PositionError::Exhausted(end)));
    // Beyond the window: ignored, like drivers do.
    let forged = Position { epoch: now + MAX_EPOCH_AHEAD_MS + 1, revision: 7 };
    assert_eq!(
        next_position(Some(restored), Some(forged), now).unwrap(),
        Position { revision: 4, ..restored }
    );
    // A driver at the stream's newest (the normal case): continue.
    assert_eq!(
        next_position(Some(applied), Some(applied), now).unwrap(),
        Position { revision: 51, ..applied }
    );
}
