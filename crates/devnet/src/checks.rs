//! Pure checks over what the devnet observed on the bus (used by the end-to-end scenarios).

use lightcl_core::revision::Position;

use crate::devnet::SeenTarget;

/// Targets in the order they were seen must be strictly newer each time, by position (the
/// engine-driver's rule, [`lightcl_core::revision::is_newer`] without the clock check): the
/// same epoch with a higher revision, or a later epoch whatever its revision (a new epoch
/// restarts at revision 1). An older epoch after a newer one, or a revision that does not go
/// up within an epoch, is a violation. Finalized never decreases, across epochs too.
pub fn targets_monotonic(targets: &[SeenTarget]) -> Result<(), String> {
    for w in targets.windows(2) {
        let (a, b) = (w[0].position(), w[1].position());
        if b.epoch < a.epoch {
            return Err(format!("target epoch went back: {a} → {b}"));
        }
        if b <= a {
            return Err(format!("target revision did not increase within its epoch: {a} → {b}"));
        }
        if w[1].finalized_l2.number < w[0].finalized_l2.number {
            return Err(format!(
                "target finalized went {} → {} ({b})",
                w[0].finalized_l2.number, w[1].finalized_l2.number
            ));
        }
    }
    Ok(())
}

impl SeenTarget {
    /// The target's position (epoch, revision).
    pub fn position(&self) -> Position {
        Position { epoch: self.epoch, revision: self.revision }
    }
}

#[cfg(test)]
mod tests {
    use lightcl_core::L2BlockRef;

    use super::*;

    fn t(epoch: u64, revision: u64, finalized: u64) -> SeenTarget {
        let block = |number| L2BlockRef { number, ..L2BlockRef::default() };
        SeenTarget {
            epoch,
            revision,
            unsafe_l2: block(finalized + 10),
            safe_l2: block(finalized + 5),
            finalized_l2: block(finalized),
        }
    }

    #[test]
    fn revisions_increase_within_an_epoch() {
        assert_eq!(targets_monotonic(&[]), Ok(()));
        assert_eq!(targets_monotonic(&[t(5, 1, 1), t(5, 2, 1), t(5, 9, 2)]), Ok(()));
        let e = targets_monotonic(&[t(5, 2, 1), t(5, 2, 1)]).unwrap_err();
        assert!(e.contains("did not increase"), "{e}");
        assert!(targets_monotonic(&[t(5, 3, 1), t(5, 2, 1)]).is_err());
    }

    #[test]
    fn a_new_epoch_at_revision_1_is_fine() {
        assert_eq!(targets_monotonic(&[t(5, 40, 1), t(6, 1, 1), t(6, 2, 2)]), Ok(()));
        // Legacy epoch 0 followed by a real one.
        assert_eq!(targets_monotonic(&[t(0, 7, 1), t(1_700_000_000_000, 1, 1)]), Ok(()));
    }

    #[test]
    fn an_older_epoch_after_a_newer_one_is_a_violation() {
        // A higher revision does not make an older epoch newer.
        let e = targets_monotonic(&[t(6, 1, 1), t(5, 41, 1)]).unwrap_err();
        assert!(e.contains("epoch went back"), "{e}");
    }

    #[test]
    fn finalized_never_decreases_even_across_epochs() {
        let e = targets_monotonic(&[t(5, 40, 9), t(6, 1, 8)]).unwrap_err();
        assert!(e.contains("finalized went 9 → 8"), "{e}");
    }
}
