//! Exponential backoff with full jitter, and the wall clock in milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(max, initial * factor^n)]`. Call [`reset`](Self::reset) after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    attempt: u32,
}

impl Backoff {
    /// Backoff doubling from `initial` up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), factor: 2.0, attempt: 0 }
    }

    /// Use `factor` (clamped to ≥ 1) instead of 2.
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_finite() { factor.max(1.0) } else { 2.0 };
        self
    }

    /// The upper bound of the next delay (without jitter).
    pub fn current_cap(&self) -> Duration {
        if self.attempt == 0 {
            return self.initial;
        }
        let exp = self.factor.powi(self.attempt.min(64) as i32);
        let cap = self.initial.as_secs_f64() * exp;
        if !cap.is_finite() || cap >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(cap)
        }
    }

    /// The next delay, uniform in `[0, current_cap()]`; advances the attempt counter.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.current_cap();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Number of delays handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Start again from `initial` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_growing_bounds() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let caps: Vec<Duration> = (0..8)
            .map(|_| {
                let cap = b.current_cap();
                let d = b.next_delay();
                assert!(d <= cap, "{d:?} > {cap:?}");
                cap
            })
            .collect();
        assert_eq!(caps[0], Duration::from_millis(100));
        assert_eq!(caps[1], Duration::from_millis(200));
        assert_eq!(caps[3], Duration::from_millis(800));
        assert_eq!(caps[5], Duration::from_secs(2), "capped at max");
        assert_eq!(caps[7], Duration::from_secs(2));
        b.reset();
        assert_eq!(b.current_cap(), Duration::from_millis(100));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn jitter_actually_varies_and_never_exceeds_max() {
        let mut b =
            Backoff::new(Duration::from_millis(10), Duration::from_millis(50)).with_factor(3.0);
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(50)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter should spread delays");
        // Huge attempt counts do not overflow.
        for _ in 0..10_000 {
            b.next_delay();
        }
        assert_eq!(b.current_cap(), Duration::from_millis(50));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1000))]
        /// Delays never exceed the cap, caps never decrease and never exceed max, and a reset
        /// starts over from `initial`.
        #[test]
        fn bounds_hold(initial_ms in 1u64..10_000, max_ms in 1u64..100_000, factor in 1.0f64..10.0, n in 1usize..200) {
            let (initial, max) = (Duration::from_millis(initial_ms), Duration::from_millis(max_ms));
            let mut b = Backoff::new(initial, max).with_factor(factor);
            let ceiling = max.max(initial);
            let mut prev_cap = Duration::ZERO;
            for _ in 0..n {
                let cap = b.current_cap();
                proptest::prop_assert!(cap >= prev_cap && cap <= ceiling);
                let d = b.next_delay();
                proptest::prop_assert!(d <= cap);
                prev_cap = cap;
            }
            b.reset();
            proptest::prop_assert_eq!(b.current_cap(), initial.min(ceiling));
        }
    }

    #[test]
    fn now_ms_is_recent() {
        assert!(now_ms() > 1_700_000_000_000);
    }
}
