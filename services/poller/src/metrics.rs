//! Prometheus metrics, registered under the `lightcl_poller` prefix (names in
//! `deploy/dashboards/metrics.txt`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set `{result="..."}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// Outcome.
    pub result: String,
}

/// Label set `{kind="..."}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Error kind.
    pub kind: String,
}

/// Every error kind a poll can fail with (pre-created at zero).
pub const ERROR_KINDS: [&str; 7] =
    ["timeout", "tls", "http", "rpc", "decode", "too_large", "wrong_chain"];

/// Every metric the poller exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `polls_total{result=ok|error}`.
    pub polls: Family<ResultLabel, Counter>,
    /// `poll_errors_total{kind}`.
    pub poll_errors: Family<KindLabel, Counter>,
    /// `poll_duration_seconds`.
    pub poll_duration: Histogram,
    /// `observed_unsafe`: unsafe_l2 number of the last good status.
    pub observed_unsafe: Gauge,
    /// `observed_safe`.
    pub observed_safe: Gauge,
    /// `observed_finalized`.
    pub observed_finalized: Gauge,
    /// `publishes_total{result=ok|duplicate|error}`.
    pub publishes: Family<ResultLabel, Counter>,
    /// `nats_reconnects_total`.
    pub nats_reconnects: Counter,
    /// `paused`: 1 while paused.
    pub paused: Gauge,
    /// `chain_checks_total{result=ok|error|wrong_chain}`: `optimism_rollupConfig` checks.
    pub chain_checks: Family<ResultLabel, Counter>,
    /// `chain_mismatches_total`: times the source was found serving another chain while
    /// running (once per switch, not per re-check).
    pub chain_mismatches: Counter,
    /// `wrong_chain`: 1 while the source is refused for serving another chain.
    pub wrong_chain: Gauge,
    /// `phase_lock_mode`: how polls are timed, 0 fixed cadence, 1 learning, 2 locked
    /// ([`lightcl_core::phase::Mode::gauge`]).
    pub phase_lock_mode: Gauge,
}

/// Every `chain_checks_total` result (pre-created at zero).
pub const CHAIN_CHECK_RESULTS: [&str; 3] = ["ok", "error", "wrong_chain"];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(reg: &mut Registry) -> Self {
        let m = Self {
            polls: Family::default(),
            poll_errors: Family::default(),
            poll_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            observed_unsafe: Gauge::default(),
            observed_safe: Gauge::default(),
            observed_finalized: Gauge::default(),
            publishes: Family::default(),
            nats_reconnects: Counter::default(),
            paused: Gauge::default(),
            chain_checks: Family::default(),
            chain_mismatches: Counter::default(),
            wrong_chain: Gauge::default(),
            phase_lock_mode: Gauge::default(),
        };
        for r in CHAIN_CHECK_RESULTS {
            let _ = m.chain_checks.get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["ok", "error"] {
            let _ = m.polls.get_or_create(&ResultLabel { result: r.into() });
        }
        for r in ["ok", "duplicate", "error"] {
            let _ = m.publishes.get_or_create(&ResultLabel { result: r.into() });
        }
        for k in ERROR_KINDS {
            let _ = m.poll_errors.get_or_create(&KindLabel { kind: k.into() });
        }
        reg.register("polls", "optimism_syncStatus polls by result", m.polls.clone());
        reg.register("poll_errors", "Failed polls by kind", m.poll_errors.clone());
        reg.register(
            "poll_duration_seconds",
            "optimism_syncStatus round-trip time",
            m.poll_duration.clone(),
        );
        reg.register(
            "observed_unsafe",
            "unsafe_l2 number of the last status",
            m.observed_unsafe.clone(),
        );
        reg.register("observed_safe", "safe_l2 number of the last status", m.observed_safe.clone());
        reg.register(
            "observed_finalized",
            "finalized_l2 number of the last status",
            m.observed_finalized.clone(),
        );
        reg.register("publishes", "Raw status publishes by result", m.publishes.clone());
        reg.register(
            "nats_reconnects",
            "NATS connections re-established after a loss",
            m.nats_reconnects.clone(),
        );
        reg.register("paused", "1 while paused by the operator", m.paused.clone());
        reg.register(
            "chain_checks",
            "optimism_rollupConfig chain checks of the source by result",
            m.chain_checks.clone(),
        );
        reg.register(
            "chain_mismatches",
            "Times the running source was found serving another L2 chain",
            m.chain_mismatches.clone(),
        );
        reg.register(
            "wrong_chain",
            "1 while the source is refused for serving another L2 chain (nothing is published)",
            m.wrong_chain.clone(),
        );
        reg.register(
            "phase_lock_mode",
            "How polls are timed: 0 fixed cadence, 1 learning the block phase, 2 phase-locked",
            m.phase_lock_mode.clone(),
        );
        m
    }

    /// Counts a chain check outcome (`ok`, `error` or `wrong_chain`).
    pub fn chain_check(&self, result: &str) {
        self.chain_checks.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    /// Counts a poll outcome.
    pub fn poll(&self, result: &str) {
        self.polls.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    /// Counts a poll error of `kind`.
    pub fn poll_error(&self, kind: &str) {
        self.poll_errors.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    /// Counts a publish outcome.
    pub fn publish(&self, result: &str) {
        self.publishes.get_or_create(&ResultLabel { result: result.into() }).inc();
    }

    /// Sets the observed-head gauges.
    pub fn observed(&self, s: &lightcl_core::SyncStatus) {
        let g = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.observed_unsafe.set(g(s.unsafe_l2.number));
        self.observed_safe.set(g(s.safe_l2.number));
        self.observed_finalized.set(g(s.finalized_l2.number));
    }
}
