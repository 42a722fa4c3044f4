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
//!
//! [`ChainGuard`] decides whether a polled status may be published as far as the source's
//! chain identity (`optimism_rollupConfig.l2_chain_id`) goes. A status may be published only
//! when a chain check passed at a poll that started less than the check interval before this
//! poll started, and no request to the source failed and no check found another chain since.
//! Otherwise the chain is checked (after the status was read, so the check also covers that
//! status) before the status may be published. So:
//! - the chain is re-checked at least once per interval while polls succeed;
//! - after any failed request (the source was unreachable or erroring: it may come back as
//!   another node behind the same name), the first status read is checked before publishing;
//! - after a check found another chain, nothing is published until a check finds the expected
//!   chain again (a failed request meanwhile keeps the refusal).

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

/// What is known about the chain the source serves (see [`ChainGuard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainState {
    /// A check found the expected chain at the poll that started at `at_ms`, and no request
    /// to the source failed since.
    Verified {
        /// Start of the poll whose check passed (monotonic ms).
        at_ms: u64,
    },
    /// A request to the source failed since the last passing check: the next status read must
    /// be checked before it is published.
    Unverified,
    /// The last check found chain `actual`: nothing is published until a check finds the
    /// expected chain again.
    Refused {
        /// The chain id the source served at the last check.
        actual: u64,
    },
}

/// What a chain check means, as classified by [`ChainGuard::checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainVerdict {
    /// The expected chain (and the source was not refused): publish.
    Confirmed,
    /// The expected chain again after a refusal of chain `was`: publishing resumes.
    Resumed {
        /// The chain the source served while refused.
        was: u64,
    },
    /// Another chain, newly seen (the source was not refused, or refused for a different
    /// chain): an incident; do not publish.
    Changed {
        /// The chain the source serves now.
        actual: u64,
    },
    /// Still the same other chain as at the previous check: do not publish.
    StillRefused {
        /// The chain the source serves.
        actual: u64,
    },
}

impl ChainVerdict {
    /// Whether the status read before this check may be published.
    pub fn may_publish(self) -> bool {
        matches!(self, Self::Confirmed | Self::Resumed { .. })
    }
}

/// The chain-identity state of one poller over a source (pure; times are monotonic ms from
/// any origin, and the caller passes the *start* of the poll for every call of one poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainGuard {
    expected: u64,
    interval_ms: u64,
    state: ChainState,
}

impl ChainGuard {
    /// A guard for `expected`, not yet checked; once a check passed, re-checks are due every
    /// `interval` (clamped to at least 1 ms).
    pub fn new(expected: u64, interval: Duration) -> Self {
        let interval_ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(1);
        Self { expected, interval_ms, state: ChainState::Unverified }
    }

    /// The expected chain id.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// The current state.
    pub fn state(&self) -> ChainState {
        self.state
    }

    /// Whether the source is refused for serving another chain.
    pub fn is_refused(&self) -> bool {
        matches!(self.state, ChainState::Refused { .. })
    }

    /// Whether a status read by the poll that started at `now_ms` may be published without a
    /// chain check first.
    pub fn may_publish(&self, now_ms: u64) -> bool {
        match self.state {
            ChainState::Verified { at_ms } => now_ms.saturating_sub(at_ms) < self.interval_ms,
            ChainState::Unverified | ChainState::Refused { .. } => false,
        }
    }

    /// Whether the poll that started at `now_ms` must check the chain before publishing.
    pub fn check_due(&self, now_ms: u64) -> bool {
        !self.may_publish(now_ms)
    }

    /// A request to the source failed (a poll or a check): the next status must be checked.
    /// A refusal stays a refusal.
    pub fn request_failed(&mut self) {
        if let ChainState::Verified { .. } = self.state {
            self.state = ChainState::Unverified;
        }
    }

    /// A check (of the poll that started at `now_ms`) found the source serving `actual`.
    pub fn checked(&mut self, actual: u64, now_ms: u64) -> ChainVerdict {
        let before = self.state;
        if actual == self.expected {
            self.state = ChainState::Verified { at_ms: now_ms };
            match before {
                ChainState::Refused { actual: was } => ChainVerdict::Resumed { was },
                _ => ChainVerdict::Confirmed,
            }
        } else {
            self.state = ChainState::Refused { actual };
            match before {
                ChainState::Refused { actual: was } if was == actual => {
                    ChainVerdict::StillRefused { actual }
                }
                _ => ChainVerdict::Changed { actual },
            }
        }
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

    const CHAIN: u64 = 10;

    fn guard() -> ChainGuard {
        let mut g = ChainGuard::new(CHAIN, Duration::from_secs(60));
        assert!(g.check_due(0), "nothing is published before the first check");
        assert_eq!(g.checked(CHAIN, 1_000), ChainVerdict::Confirmed);
        g
    }

    #[test]
    fn a_verified_chain_is_rechecked_once_the_interval_passed() {
        let mut g = guard();
        assert!(g.may_publish(1_000));
        assert!(g.may_publish(60_999));
        assert!(g.check_due(61_000));
        assert_eq!(g.checked(CHAIN, 61_000), ChainVerdict::Confirmed);
        assert!(g.may_publish(61_000) && g.check_due(121_000));
    }

    #[test]
    fn a_failed_request_needs_a_check_before_the_next_publish() {
        let mut g = guard();
        g.request_failed();
        assert_eq!(g.state(), ChainState::Unverified);
        assert!(g.check_due(1_001), "checked at once after a reconnect");
        g.request_failed();
        assert_eq!(g.checked(CHAIN, 2_000), ChainVerdict::Confirmed);
        assert!(g.may_publish(2_000));
    }

    #[test]
    fn another_chain_is_refused_until_the_expected_one_returns() {
        let mut g = guard();
        assert_eq!(g.checked(11, 5_000), ChainVerdict::Changed { actual: 11 });
        assert!(g.is_refused() && !g.may_publish(5_000) && !g.may_publish(5_001));
        assert_eq!(g.checked(11, 6_000), ChainVerdict::StillRefused { actual: 11 });
        // The source goes away and comes back: still refused.
        g.request_failed();
        assert_eq!(g.state(), ChainState::Refused { actual: 11 });
        assert_eq!(g.checked(12, 7_000), ChainVerdict::Changed { actual: 12 });
        assert!(!ChainVerdict::Changed { actual: 12 }.may_publish());
        assert_eq!(g.checked(CHAIN, 8_000), ChainVerdict::Resumed { was: 12 });
        assert!(g.may_publish(8_000) && !g.is_refused());
    }

    #[test]
    fn every_switch_to_another_chain_is_a_new_incident() {
        let mut g = guard();
        g.request_failed();
        assert_eq!(g.checked(11, 2_000), ChainVerdict::Changed { actual: 11 });
        assert_eq!(g.checked(CHAIN, 3_000), ChainVerdict::Resumed { was: 11 });
        assert_eq!(g.checked(11, 4_000), ChainVerdict::Changed { actual: 11 });
    }

    #[test]
    fn zero_interval_is_clamped_and_checks_every_poll() {
        let mut g = ChainGuard::new(CHAIN, Duration::ZERO);
        assert_eq!(g.checked(CHAIN, 10), ChainVerdict::Confirmed);
        assert!(g.may_publish(10));
        assert!(g.check_due(11));
        assert_eq!(g.expected(), CHAIN);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Against a model: a status may be published exactly when a check found the expected
        /// chain less than one interval (by poll start) before, and no request failed and no
        /// check found another chain since; every switch to another chain is reported once as
        /// `Changed`, and the return of the expected chain after a refusal as `Resumed`.
        #[test]
        fn publishes_only_within_an_interval_of_a_passing_check(
            steps in proptest::collection::vec((0u64..300, 0u8..6), 1..300),
        ) {
            let interval = 200u64;
            let mut now = 50u64;
            let mut g = ChainGuard::new(CHAIN, Duration::from_millis(interval));
            // Model: the start of the last passing check's poll; whether a failure or another
            // chain was seen since (or no check passed yet); the chain the source was refused
            // for.
            let mut last_pass = now;
            let mut dirty = true;
            let mut refused: Option<u64> = None;
            for (dt, event) in steps {
                now += dt;
                match event {
                    // A failed poll or check.
                    0 => {
                        g.request_failed();
                        dirty = true;
                    }
                    // A check finds the expected chain, or chain 11 or 12.
                    1..=3 => {
                        let actual = [CHAIN, 11, 12][usize::from(event - 1)];
                        let verdict = g.checked(actual, now);
                        if actual == CHAIN {
                            prop_assert_eq!(
                                verdict,
                                match refused {
                                    Some(was) => ChainVerdict::Resumed { was },
                                    None => ChainVerdict::Confirmed,
                                }
                            );
                            prop_assert!(verdict.may_publish());
                            last_pass = now;
                            dirty = false;
                            refused = None;
                        } else {
                            prop_assert!(!verdict.may_publish());
                            prop_assert_eq!(
                                verdict,
                                if refused == Some(actual) {
                                    ChainVerdict::StillRefused { actual }
                                } else {
                                    ChainVerdict::Changed { actual }
                                }
                            );
                            dirty = true;
                            refused = Some(actual);
                        }
                    }
                    // A poll asks whether it may publish without a check.
                    _ => {}
                }
                let allowed = !dirty && now - last_pass < interval;
                prop_assert_eq!(g.may_publish(now), allowed);
                prop_assert_eq!(g.check_due(now), !allowed);
                prop_assert_eq!(g.is_refused(), refused.is_some());
            }
        }

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
