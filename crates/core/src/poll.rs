//! Poller decisions (docs/architecture.md#publish-decisions): which polled statuses are published, and when the next poll
//! starts.
//!
//! [`Publication::decide`] is a pure state machine over (content hash, wall-clock ms):
//! - a status whose content differs from the last *stored* one is published at once;
//! - an unchanged status is published again only when the heartbeat slot
//!   (`floor(now / heartbeat)`) has moved on since the last stored publish — at most one
//!   heartbeat per slot, and the slot is part of the `Nats-Msg-Id`, so replicas polling the same
//!   source in the same slot produce one stored message;
//! - a publish counts only once it is stored ([`Publication::stored`]); a failed publish is
//!   decided again on the next poll (never lost, never faked).
//!
//! A flip back to content already stored in the same slot (A → B → A) carries A's earlier
//! message id, so JetStream drops it as a duplicate; the next slot's heartbeat carries it (a
//! delay of at most one heartbeat, never a loss).
//!
//! [`next_delay`] keeps polls single-flight on a fixed cadence: the next poll starts one
//! interval after the previous one *started* (a slow poll skips missed ticks instead of
//! bunching them), or after the error backoff when the poll failed.

use std::time::Duration;

/// Why a status is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishReason {
    /// Nothing was stored yet by this poller.
    First,
    /// The content differs from the last stored status.
    Changed,
    /// Unchanged, but a new heartbeat slot began.
    Heartbeat,
}

impl PublishReason {
    /// Stable label (`first`, `changed`, `heartbeat`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::First => "first",
            Self::Changed => "changed",
            Self::Heartbeat => "heartbeat",
        }
    }
}

/// What to do with a polled status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollDecision {
    /// Publish it with this heartbeat slot in its message id.
    Publish {
        /// `floor(now_ms / heartbeat_ms)`.
        slot: u64,
        /// Why.
        reason: PublishReason,
    },
    /// Unchanged within the current heartbeat slot: do not publish.
    Skip,
}

/// The publish state of one poller: the last stored content and its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    heartbeat_ms: u64,
    last: Option<([u8; 32], u64)>,
}

impl Publication {
    /// A fresh state with `heartbeat` (clamped to at least 1 ms).
    pub fn new(heartbeat: Duration) -> Self {
        let ms = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX).max(1);
        Self { heartbeat_ms: ms, last: None }
    }

    /// The heartbeat slot of a wall-clock time.
    pub fn slot(&self, now_ms: u64) -> u64 {
        now_ms / self.heartbeat_ms
    }

    /// Decides about a status with content hash `content` polled at `now_ms`.
    pub fn decide(&self, content: &[u8; 32], now_ms: u64) -> PollDecision {
        let slot = self.slot(now_ms);
        let reason = match &self.last {
            None => PublishReason::First,
            Some((c, _)) if c != content => PublishReason::Changed,
            Some((_, s)) if slot > *s => PublishReason::Heartbeat,
            // Same content, same (or an earlier, after a clock step back) slot.
            Some(_) => return PollDecision::Skip,
        };
        PollDecision::Publish { slot, reason }
    }

    /// Records that the status with `content` was stored in slot `slot`.
    pub fn stored(&mut self, content: [u8; 32], slot: u64) {
        self.last = Some((content, slot));
    }

    /// The content hash of the last stored status, if any.
    pub fn last_content(&self) -> Option<&[u8; 32]> {
        self.last.as_ref().map(|(c, _)| c)
    }
}

/// How long to wait before the next poll: `interval` minus the time the poll took (never
/// negative: a poll that overran its interval is followed at once by one poll, not several),
/// or `backoff` after a failed poll if that is longer.
pub fn next_delay(
    interval: Duration,
    took: Duration,
    failed_backoff: Option<Duration>,
) -> Duration {
    let cadence = interval.saturating_sub(took);
    match failed_backoff {
        Some(b) => b.max(cadence),
        None => cadence,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];

    fn stored_at(p: &mut Publication, c: [u8; 32], now: u64) -> PollDecision {
        let d = p.decide(&c, now);
        if let PollDecision::Publish { slot, .. } = d {
            p.stored(c, slot);
        }
        d
    }

    #[test]
    fn first_status_is_published() {
        let p = Publication::new(Duration::from_secs(10));
        assert_eq!(
            p.decide(&A, 25_000),
            PollDecision::Publish { slot: 2, reason: PublishReason::First }
        );
    }

    #[test]
    fn unchanged_is_skipped_within_the_slot_and_published_in_the_next() {
        let mut p = Publication::new(Duration::from_secs(10));
        stored_at(&mut p, A, 20_000);
        assert_eq!(p.decide(&A, 20_001), PollDecision::Skip);
        assert_eq!(p.decide(&A, 29_999), PollDecision::Skip);
        assert_eq!(
            p.decide(&A, 30_000),
            PollDecision::Publish { slot: 3, reason: PublishReason::Heartbeat }
        );
    }

    #[test]
    fn a_change_is_published_at_once() {
        let mut p = Publication::new(Duration::from_secs(10));
        stored_at(&mut p, A, 20_000);
        assert_eq!(
            p.decide(&B, 20_500),
            PollDecision::Publish { slot: 2, reason: PublishReason::Changed }
        );
    }

    #[test]
    fn a_failed_publish_is_decided_again() {
        let mut p = Publication::new(Duration::from_secs(10));
        stored_at(&mut p, A, 20_000);
        // B's publish failed: not recorded, so the next poll of B publishes again.
        assert!(matches!(p.decide(&B, 20_100), PollDecision::Publish { .. }));
        assert!(matches!(p.decide(&B, 20_200), PollDecision::Publish { .. }));
        assert_eq!(p.last_content(), Some(&A));
    }

    #[test]
    fn a_clock_step_back_does_not_republish_unchanged_content() {
        let mut p = Publication::new(Duration::from_secs(10));
        stored_at(&mut p, A, 50_000);
        assert_eq!(p.decide(&A, 10_000), PollDecision::Skip);
    }

    #[test]
    fn replicas_in_one_slot_agree_on_the_slot() {
        let a = Publication::new(Duration::from_secs(10));
        let b = Publication::new(Duration::from_secs(10));
        let (PollDecision::Publish { slot: sa, .. }, PollDecision::Publish { slot: sb, .. }) =
            (a.decide(&A, 41_000), b.decide(&A, 48_900))
        else {
            panic!("both publish the first status");
        };
        assert_eq!(sa, sb);
    }

    #[test]
    fn zero_heartbeat_is_clamped() {
        let p = Publication::new(Duration::ZERO);
        assert_eq!(p.slot(7), 7);
    }

    #[test]
    fn cadence_skips_missed_ticks_and_backoff_wins_when_longer() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert_eq!(next_delay(s(2), ms(300), None), ms(1700));
        assert_eq!(next_delay(s(2), s(5), None), Duration::ZERO);
        assert_eq!(next_delay(s(2), ms(300), Some(s(8))), s(8));
        assert_eq!(next_delay(s(2), ms(300), Some(ms(10))), ms(1700));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Over any sequence of polls (content drawn from 3 values, time moving forward by
        /// random steps, publishes failing at random): every change is published, a heartbeat
        /// never repeats a stored (content, slot), and a skip only ever happens for the last
        /// stored content in its own slot.
        #[test]
        fn publishes_every_change_and_at_most_one_heartbeat_per_slot(
            steps in proptest::collection::vec((0u8..3, 0u64..4_000, any::<bool>()), 1..200),
        ) {
            let mut p = Publication::new(Duration::from_secs(1));
            let mut now = 1_000_000u64;
            let mut stored: Vec<([u8; 32], u64)> = Vec::new();
            for (c, dt, fails) in steps {
                now += dt;
                let content = [c; 32];
                let before = p.last;
                match p.decide(&content, now) {
                    PollDecision::Skip => {
                        let (lc, ls) = before.expect("skip needs a stored status");
                        prop_assert_eq!(lc, content);
                        prop_assert!(p.slot(now) <= ls);
                    }
                    PollDecision::Publish { slot, reason } => {
                        prop_assert_eq!(slot, p.slot(now));
                        if let Some((lc, _)) = before {
                            prop_assert_eq!(reason == PublishReason::Changed, lc != content);
                        }
                        if reason == PublishReason::Heartbeat {
                            prop_assert!(!stored.contains(&(content, slot)));
                        }
                        if !fails {
                            stored.push((content, slot));
                            p.stored(content, slot);
                        }
                    }
                }
            }
        }
    }
}
