//! Retry delays of the bus's own loops (consumer re-creation, KV puts).

use std::time::Duration;

use rand::Rng;

/// Doubling delays with full jitter: the n-th delay is uniform in `[0, min(max, first * 2^n)]`,
/// so many drivers re-connecting after one NATS restart do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Retry {
    first: Duration,
    max: Duration,
    attempt: u32,
}

impl Retry {
    pub(crate) fn new(first: Duration, max: Duration) -> Self {
        Self { first, max: max.max(first), attempt: 0 }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = self.first.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut r = Retry::new(Duration::from_millis(200), Duration::from_secs(5));
        for n in 0..20u32 {
            let cap = Duration::from_millis(200).saturating_mul(1 << n.min(16));
            assert!(r.next_delay() <= cap.min(Duration::from_secs(5)));
        }
        r.reset();
        assert!(r.next_delay() <= Duration::from_millis(200));
    }
}
