//! Target order (docs/bus.md#target-revisions): every target carries an `epoch` and a
//! `revision`. The validator continues the stored history (same epoch, revision + 1) and
//! starts a new epoch (revision 1) when there is no stored target or the stored one cannot be
//! continued; an engine-driver accepts a target only when it is newer than the last it saw.
//!
//! The validator also takes into account the newest position the engine-drivers report (KV
//! bucket `lightcl-engine`): when one is ahead of the stream (an older backup of the stream was
//! restored), the next target starts a new epoch above it, so every driver takes it.
//!
//! An epoch is the validator's clock (Unix milliseconds) when its history began, so a history
//! started later has a larger epoch: "newer" is the lexicographic order of `(epoch, revision)`.
//! An old epoch's target re-delivered (a replay, an old backup) is therefore never newer than
//! the current one. Epoch 0 is what targets of versions without the field carry.
//!
//! Every computation is checked: nothing here overflows, wraps or panics.

use crate::target::Target;

#[cfg(test)]
mod proptests;

/// How far ahead of the reader's clock an epoch may be before the target is ignored (a forged
/// or badly clocked epoch must not wedge the order): 24 hours.
pub const MAX_EPOCH_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// A target's place in the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Position {
    /// When the history began (validator clock, Unix ms); 0 for targets without the field.
    pub epoch: u64,
    /// Strictly increasing within an epoch, from 1.
    pub revision: u64,
}

impl Position {
    /// The position of `t`.
    pub fn of(t: &Target) -> Self {
        Self { epoch: t.epoch, revision: t.revision }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {} revision {}", self.epoch, self.revision)
    }
}

/// Why the validator cannot compute the next position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PositionError {
    /// The clock reads 0: no epoch can be chosen above the legacy epoch 0.
    #[error("the clock reads 0 ms: cannot choose a target epoch")]
    NoClock,
    /// Neither the revision nor the epoch of the newest position (stored, or reported by an
    /// engine-driver) can be advanced.
    #[error(
        "the newest target position is {0}: its revision cannot be incremented and no later \
         epoch exists; remove that target from LIGHTCL_TARGETS (and restart the drivers that \
         took it)"
    )]
    Exhausted(Position),
}

/// True when `epoch` is usable by a reader whose clock reads `now_ms` (not beyond
/// [`MAX_EPOCH_AHEAD_MS`] in the future).
pub fn epoch_plausible(epoch: u64, now_ms: u64) -> bool {
    epoch <= now_ms.saturating_add(MAX_EPOCH_AHEAD_MS)
}

/// The validator's next position, at clock `now_ms`, after the stream's newest target
/// `stream_last` (None: none stored), given `drivers_max`, the newest position any engine-driver
/// reports having seen or applied (None: none known). Positions whose epoch is not plausible
/// at `now_ms` are left out of both (drivers ignore them).
///
/// - Normally no driver is ahead of the stream (drivers only take targets from it):
///   - continue: the stream's epoch and revision + 1, when the revision can be incremented;
///   - a new epoch at revision 1 otherwise: `now_ms`, or the stored epoch + 1 when that is
///     later (a revision exhausted within an epoch started "now"); also when nothing usable
///     is stored.
/// - A driver is ahead of the stream ([`is_newer`]: an older backup was restored, the subject
///   was purged or its newest messages deleted): a new epoch above it, `max(now_ms, its epoch +
///   1)` at revision 1, so that every driver takes the next target. When that epoch would not be
///   plausible (the driver's epoch is at the edge of the window), the driver's epoch is
///   continued instead (revision + 1).
/// - An error when no later position exists, never a wrapped value.
pub fn next_position(
    stream_last: Option<Position>,
    drivers_max: Option<Position>,
    now_ms: u64,
) -> Result<Position, PositionError> {
    let fresh = |floor: u64| -> Result<Position, PositionError> {
        if now_ms == 0 {
            return Err(PositionError::NoClock);
        }
        Ok(Position { epoch: now_ms.max(floor), revision: 1 })
    };
    let plausible = |p: &Position| epoch_plausible(p.epoch, now_ms);
    // An implausible stored epoch is ignored by drivers (see `is_newer`): not continued.
    let stored = stream_last.filter(plausible);
    if let Some(d) = drivers_max.filter(plausible)
        && is_newer(stored, d, now_ms)
    {
        return match d.epoch.checked_add(1) {
            Some(e) if epoch_plausible(e, now_ms) => fresh(e),
            _ => match d.revision.checked_add(1) {
                Some(revision) => Ok(Position { epoch: d.epoch, revision }),
                None => Err(PositionError::Exhausted(d)),
            },
        };
    }
    let Some(l) = stored else { return fresh(0) };
    if let Some(revision) = l.revision.checked_add(1) {
        return Ok(Position { epoch: l.epoch, revision });
    }
    match l.epoch.checked_add(1) {
        Some(e) if epoch_plausible(e, now_ms) => fresh(e),
        _ => Err(PositionError::Exhausted(l)),
    }
}

/// The engine-driver's rule: is a target at `new` newer than the newest seen, `seen` (None:
/// nothing yet), at the driver's clock `now_ms`? A target whose epoch is implausibly far in
/// the future is never newer; otherwise `(epoch, revision)` is compared lexicographically.
pub fn is_newer(seen: Option<Position>, new: Position, now_ms: u64) -> bool {
    if !epoch_plausible(new.epoch, now_ms) {
        return false;
    }
    seen.is_none_or(|s| new > s)
}
