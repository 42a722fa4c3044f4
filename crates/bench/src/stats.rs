//! Latency statistics: nearest-rank percentiles over a sample of durations.

use std::fmt;
use std::time::Duration;

/// Summary of a sample of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest.
    pub min: Duration,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of an ascending-sorted sample: the
/// smallest value with at least p % of the sample at or below it. `None` for an empty sample.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

impl Summary {
    /// Summarises `samples` (any order); `None` when empty.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let total: Duration = s.iter().sum();
        let n = s.len();
        Some(Self {
            n,
            min: *s.first()?,
            p50: percentile(&s, 50.0)?,
            p90: percentile(&s, 90.0)?,
            p99: percentile(&s, 99.0)?,
            max: *s.last()?,
            mean: total / u32::try_from(n).unwrap_or(u32::MAX),
        })
    }
}

/// Milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} min={} p50={} p90={} p99={} max={} mean={} (ms)",
            self.n,
            ms(self.min),
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max),
            ms(self.mean)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).map(d).collect();
        assert_eq!(percentile(&s, 50.0), Some(d(50)));
        assert_eq!(percentile(&s, 99.0), Some(d(99)));
        assert_eq!(percentile(&s, 100.0), Some(d(100)));
        assert_eq!(percentile(&s, 0.1), Some(d(1)));
        // Small samples: p99 of 10 values is the largest, p50 the 5th.
        let ten: Vec<Duration> = (1..=10).map(d).collect();
        assert_eq!(percentile(&ten, 99.0), Some(d(10)));
        assert_eq!(percentile(&ten, 50.0), Some(d(5)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_averages() {
        let s = Summary::of(&[d(9), d(1), d(5), d(3), d(7)]).unwrap();
        assert_eq!((s.n, s.min, s.p50, s.max, s.mean), (5, d(1), d(5), d(9), d(5)));
        assert_eq!(s.p99, d(9));
        assert!(Summary::of(&[]).is_none());
        assert!(s.to_string().contains("p50=5.000"), "{s}");
    }
}
