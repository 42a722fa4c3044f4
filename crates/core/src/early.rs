//! Early copies: whether the validator may judge a status from the copy NATS routes to
//! subscribers as it is published, a JetStream hop before the status stream delivers it
//! (docs/architecture.md#early-copies).
//!
//! A status is identified by its `Nats-Msg-Id` (chain, source, content and heartbeat slot; the
//! stream stores one message per id). Invariants of [`EarlyCopies`]:
//! - statuses are judged in publication order: once an early copy has been passed over (not
//!   eligible, or judged without storing a target), no later copy is judged early until the
//!   stream has delivered every passed-over status, or `hold_ms` has gone by (another replica
//!   may have taken them from the shared consumer);
//! - a status is judged early at most once, and never after its stream delivery was seen;
//! - the stream's delivery of a status whose target was stored from its early copy is only
//!   acknowledged ([`StreamCopy::Ack`]); every other delivery is judged as usual, so a status
//!   the early path did not settle (a rejection, a lost race, an error) is decided exactly as
//!   without early copies.

use std::collections::{HashMap, VecDeque};

/// Settings of [`EarlyCopies`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlyConfig {
    /// How long a passed-over status blocks early judging while its stream delivery has not
    /// been seen here.
    pub hold_ms: u64,
    /// How many ids are remembered (seen early or delivered).
    pub remember: usize,
}

impl Default for EarlyConfig {
    fn default() -> Self {
        Self { hold_ms: 5_000, remember: 1_024 }
    }
}

/// What to do with an early copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// Judge it now; report the outcome with [`EarlyCopies::stored`] or
    /// [`EarlyCopies::not_stored`].
    Judge,
    /// Leave it to the stream's delivery.
    Pass,
}

/// What to do with a status the stream delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamCopy {
    /// Judge it as usual.
    Judge,
    /// Its target was stored from the early copy: acknowledge it only.
    Ack,
}

/// The early-copy bookkeeping of one validator replica.
#[derive(Debug, Clone)]
pub struct EarlyCopies {
    cfg: EarlyConfig,
    /// Ids judged early or delivered by the stream, oldest first ...
    order: VecDeque<String>,
    /// ... and whether a target was stored from each one's early copy.
    seen: HashMap<String, bool>,
    /// Passed-over statuses whose stream delivery is awaited, with when they were passed over
    /// (`None`: a copy without an id, which only the hold time releases).
    passed: VecDeque<(Option<String>, u64)>,
}

impl EarlyCopies {
    /// Empty bookkeeping.
    pub fn new(cfg: EarlyConfig) -> Self {
        Self { cfg, order: VecDeque::new(), seen: HashMap::new(), passed: VecDeque::new() }
    }

    /// Whether no passed-over status is awaited (early judging is open).
    pub fn open(&self) -> bool {
        self.passed.is_empty()
    }

    /// An early copy with `id` arrived at `now_ms`; `eligible`: the service's own
    /// preconditions hold (one source, k = 1, not paused).
    pub fn on_copy(&mut self, id: Option<&str>, eligible: bool, now_ms: u64) -> Early {
        self.expire(now_ms);
        let Some(id) = id else {
            self.pass(None, now_ms);
            return Early::Pass;
        };
        if self.seen.contains_key(id) {
            // Judged early already, or delivered by the stream first: nothing to wait for.
            return Early::Pass;
        }
        self.remember(id);
        if eligible && self.passed.is_empty() {
            Early::Judge
        } else {
            self.pass(Some(id.to_owned()), now_ms);
            Early::Pass
        }
    }

    /// The early judgement of `id` stored its target.
    pub fn stored(&mut self, id: &str) {
        if let Some(stored) = self.seen.get_mut(id) {
            *stored = true;
        }
    }

    /// The early judgement of `id` stored nothing: the stream's delivery decides it.
    pub fn not_stored(&mut self, id: &str, now_ms: u64) {
        self.pass(Some(id.to_owned()), now_ms);
    }

    /// The stream delivered the status `id`.
    pub fn on_stream(&mut self, id: Option<&str>) -> StreamCopy {
        let Some(id) = id else { return StreamCopy::Judge };
        if !self.passed.is_empty() {
            self.passed.retain(|(p, _)| p.as_deref() != Some(id));
        }
        match self.seen.get(id) {
            Some(true) => StreamCopy::Ack,
            Some(false) => StreamCopy::Judge,
            None => {
                self.remember(id);
                StreamCopy::Judge
            }
        }
    }

    fn remember(&mut self, id: &str) {
        if self.order.len() >= self.cfg.remember.max(1)
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        self.order.push_back(id.to_owned());
        self.seen.insert(id.to_owned(), false);
    }

    fn pass(&mut self, id: Option<String>, now_ms: u64) {
        if self.passed.len() >= self.cfg.remember.max(1) {
            self.passed.pop_front();
        }
        self.passed.push_back((id, now_ms));
    }

    fn expire(&mut self, now_ms: u64) {
        let hold = self.cfg.hold_ms;
        self.passed.retain(|(_, at)| now_ms.saturating_sub(*at) < hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn copies() -> EarlyCopies {
        EarlyCopies::new(EarlyConfig { hold_ms: 1_000, remember: 8 })
    }

    #[test]
    fn a_stored_early_status_is_only_acked_from_the_stream() {
        let mut e = copies();
        assert_eq!(e.on_copy(Some("s1"), true, 0), Early::Judge);
        e.stored("s1");
        assert_eq!(e.on_stream(Some("s1")), StreamCopy::Ack);
        assert!(e.open());
        assert_eq!(e.on_copy(Some("s2"), true, 10), Early::Judge);
    }

    #[test]
    fn after_a_passed_over_status_later_copies_wait_for_the_stream() {
        let mut e = copies();
        assert_eq!(e.on_copy(Some("s1"), true, 0), Early::Judge);
        e.not_stored("s1", 0);
        assert_eq!(e.on_copy(Some("s2"), true, 5), Early::Pass, "s1 not yet delivered");
        assert_eq!(e.on_stream(Some("s1")), StreamCopy::Judge);
        assert!(!e.open(), "s2 still awaited");
        assert_eq!(e.on_stream(Some("s2")), StreamCopy::Judge);
        assert!(e.open());
        assert_eq!(e.on_copy(Some("s3"), true, 10), Early::Judge);
    }

    #[test]
    fn an_ineligible_copy_blocks_until_delivered_or_held_long_enough() {
        let mut e = copies();
        assert_eq!(e.on_copy(Some("s1"), false, 0), Early::Pass);
        assert_eq!(e.on_copy(Some("s2"), true, 999), Early::Pass);
        // Another replica took both: the hold time releases this one.
        assert_eq!(e.on_copy(Some("s3"), true, 2_000), Early::Judge);
    }

    #[test]
    fn a_copy_without_an_id_is_never_judged_early() {
        let mut e = copies();
        assert_eq!(e.on_copy(None, true, 0), Early::Pass);
        assert_eq!(e.on_copy(Some("s2"), true, 1), Early::Pass);
        assert_eq!(e.on_copy(Some("s3"), true, 1_001), Early::Judge);
    }

    #[test]
    fn a_late_copy_of_a_delivered_status_is_not_judged_again() {
        let mut e = copies();
        assert_eq!(e.on_stream(Some("s1")), StreamCopy::Judge);
        assert_eq!(e.on_copy(Some("s1"), true, 0), Early::Pass);
        assert!(e.open(), "nothing to wait for");
        assert_eq!(e.on_copy(Some("s1"), true, 0), Early::Pass, "a republished copy");
    }

    #[test]
    fn it_remembers_a_bounded_number_of_ids() {
        let mut e = EarlyCopies::new(EarlyConfig { hold_ms: 1_000, remember: 2 });
        for id in ["s1", "s2", "s3"] {
            assert_eq!(e.on_copy(Some(id), true, 0), Early::Judge);
            e.stored(id);
        }
        assert_eq!(e.on_stream(Some("s3")), StreamCopy::Ack);
        assert_eq!(e.on_stream(Some("s2")), StreamCopy::Ack);
        // The oldest was forgotten: its late delivery is judged as usual (and decides
        // `Unchanged` or behind: the stored target is newer or equal).
        assert_eq!(e.on_stream(Some("s1")), StreamCopy::Judge);
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Copy { id: u8, eligible: bool, stores: bool },
        Stream { id: u8 },
        Tick(u16),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0u8..12, any::<bool>(), any::<bool>()).prop_map(|(id, eligible, stores)| Ev::Copy {
                id,
                eligible,
                stores
            }),
            (0u8..12).prop_map(|id| Ev::Stream { id }),
            (0u16..600).prop_map(Ev::Tick),
        ]
    }

    proptest! {
        /// Whatever the interleaving: an id is judged early at most once and never after its
        /// stream delivery; the stream's copy is acked without judging exactly when the early
        /// judgement stored its target; no copy is judged early while a passed-over one is
        /// awaited within the hold time.
        #[test]
        fn early_judging_keeps_the_order_and_judges_once(evs in proptest::collection::vec(ev(), 0..80)) {
            let mut e = EarlyCopies::new(EarlyConfig { hold_ms: 1_000, remember: 64 });
            let mut now = 0u64;
            let mut judged_early: std::collections::HashMap<u8, bool> = Default::default();
            let mut delivered: std::collections::HashSet<u8> = Default::default();
            // Passed over and not delivered: id -> when.
            let mut awaited: Vec<(u8, u64)> = Vec::new();
            for x in evs {
                match x {
                    Ev::Tick(d) => now += u64::from(d),
                    Ev::Copy { id, eligible, stores } => {
                        let key = id.to_string();
                        let known = judged_early.contains_key(&id) || delivered.contains(&id);
                        awaited.retain(|(_, at)| now - at < 1_000);
                        let blocked = !awaited.is_empty();
                        match e.on_copy(Some(&key), eligible, now) {
                            Early::Judge => {
                                prop_assert!(!known, "{id} judged early twice or after delivery");
                                prop_assert!(eligible && !blocked, "{id} judged early out of order");
                                judged_early.insert(id, stores);
                                if stores {
                                    e.stored(&key);
                                } else {
                                    e.not_stored(&key, now);
                                    awaited.push((id, now));
                                }
                            }
                            Early::Pass => {
                                prop_assert!(known || !eligible || blocked, "{id} passed over for no reason");
                                if !known {
                                    judged_early.insert(id, false);
                                    awaited.push((id, now));
                                }
                            }
                        }
                    }
                    Ev::Stream { id } => {
                        let got = e.on_stream(Some(&id.to_string()));
                        let want = if judged_early.get(&id) == Some(&true) { StreamCopy::Ack } else { StreamCopy::Judge };
                        prop_assert_eq!(got, want);
                        delivered.insert(id);
                        awaited.retain(|(a, _)| *a != id);
                    }
                }
            }
        }
    }
}
