//! Prometheus metrics, registered under the `lightcl_validator` prefix.

use lightcl_core::validate::RejectReason;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set `{verdict="target|unchanged|rejected", reason="..."}` (reason empty unless
/// rejected).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// What became of the status.
    pub verdict: String,
    /// Rejection reason (snake_case), or empty.
    pub reason: String,
}

/// Label set `{outcome="ok|error"}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// Result of the request.
    pub outcome: String,
}

/// Label set `{source="..."}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source id.
    pub source: String,
}

/// Every metric the validator exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `statuses_total{verdict,reason}`.
    pub statuses: Family<VerdictLabels, Counter>,
    /// `l1_requests_total{outcome}`: L1 HTTP requests (one batch each).
    pub l1_requests: Family<OutcomeLabel, Counter>,
    /// `l1_request_duration_seconds`.
    pub l1_latency: Histogram,
    /// `l1_batch_size`: calls per L1 batch.
    pub l1_batch_size: Histogram,
    /// `l1_cache_hits_total`: block reads answered from the finalized-L1 cache.
    pub cache_hits: Counter,
    /// `cas_conflicts_total`: target publishes that lost the race to another replica.
    pub cas_conflicts: Counter,
    /// `early_targets_total`: targets stored from a status's early (core-NATS) copy.
    pub early_targets: Counter,
    /// `publish_errors_total`: failed target/rejection publishes (retried).
    pub publish_errors: Counter,
    /// `bad_messages_total`: raw statuses that did not decode or convert.
    pub bad_messages: Counter,
    /// `skipped_targets_total`: stored targets that did not decode or convert and were
    /// skipped when reading the newest target (each stream sequence counted once).
    pub skipped_targets: Counter,
    /// `last_target_revision`.
    pub last_revision: Gauge,
    /// `last_target_epoch`: the epoch of the last target (Unix ms when its history began).
    pub last_epoch: Gauge,
    /// `last_target_unsafe`, `_safe`, `_finalized`, `_current_l1`: numbers of the last target.
    pub last_unsafe: Gauge,
    /// See `last_unsafe`.
    pub last_safe: Gauge,
    /// See `last_unsafe`.
    pub last_finalized: Gauge,
    /// See `last_unsafe`.
    pub last_current_l1: Gauge,
    /// `paused`: 1 while paused.
    pub paused: Gauge,
    /// `nats_reconnects_total`: NATS connections re-established after a loss.
    pub nats_reconnects: Counter,
    /// `source_switches_total`: failover changes of the followed source.
    pub source_switches: Counter,
    /// `retreats_total`: targets published by the L1 watch because our L1 reorganised under
    /// the newest target's safe or local-safe head.
    pub retreats: Counter,
    /// `retreats_stuck_total`: L1 watch ticks that found a reorg but could publish nothing
    /// (the finalized head's origin is gone, or no position is left).
    pub retreats_stuck: Counter,
    /// `source_head{source}`: each source's newest unsafe head number (sources in the window).
    pub source_head: Family<SourceLabel, Gauge>,
    /// `source_lag_blocks{source}`: blocks behind the most advanced source.
    pub source_lag: Family<SourceLabel, Gauge>,
    /// `source_rejections_in_row{source}`: its statuses rejected in a row.
    pub source_rejections: Family<SourceLabel, Gauge>,
    /// `source_chosen{source}`: 1 when followed (failover) or counted (quorum).
    pub source_chosen: Family<SourceLabel, Gauge>,
}

impl Metrics {
    /// Creates and registers every metric (reason series pre-created at zero).
    pub fn new(reg: &mut Registry) -> Self {
        let m = Self {
            statuses: Family::default(),
            l1_requests: Family::default(),
            l1_latency: Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            l1_batch_size: Histogram::new([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0]),
            cache_hits: Counter::default(),
            cas_conflicts: Counter::default(),
            early_targets: Counter::default(),
            publish_errors: Counter::default(),
            bad_messages: Counter::default(),
            skipped_targets: Counter::default(),
            last_revision: Gauge::default(),
            last_epoch: Gauge::default(),
            last_unsafe: Gauge::default(),
            last_safe: Gauge::default(),
            last_finalized: Gauge::default(),
            last_current_l1: Gauge::default(),
            paused: Gauge::default(),
            nats_reconnects: Counter::default(),
            source_switches: Counter::default(),
            retreats: Counter::default(),
            retreats_stuck: Counter::default(),
            source_head: Family::default(),
            source_lag: Family::default(),
            source_rejections: Family::default(),
            source_chosen: Family::default(),
        };
        for r in RejectReason::ALL {
            let _ = m.statuses.get_or_create(&VerdictLabels {
                verdict: "rejected".into(),
                reason: r.as_str().into(),
            });
        }
        reg.register("statuses", "Raw statuses by verdict and reason", m.statuses.clone());
        reg.register("l1_requests", "L1 JSON-RPC HTTP requests by outcome", m.l1_requests.clone());
        reg.register(
            "l1_request_duration_seconds",
            "L1 batch request latency",
            m.l1_latency.clone(),
        );
        reg.register("l1_batch_size", "Calls per L1 batch request", m.l1_batch_size.clone());
        reg.register("l1_cache_hits", "L1 block reads served from the cache", m.cache_hits.clone());
        reg.register(
            "cas_conflicts",
            "Target publishes lost to another replica",
            m.cas_conflicts.clone(),
        );
        reg.register(
            "early_targets",
            "Targets stored from a status's early copy, a JetStream hop before the stream delivered it",
            m.early_targets.clone(),
        );
        reg.register("publish_errors", "Failed publishes (retried)", m.publish_errors.clone());
        reg.register("bad_messages", "Undecodable raw statuses", m.bad_messages.clone());
        reg.register(
            "source_switches",
            "Failover changes of the followed source",
            m.source_switches.clone(),
        );
        reg.register(
            "retreats",
            "Targets published by the L1 watch after an L1 reorg under the newest target",
            m.retreats.clone(),
        );
        reg.register(
            "retreats_stuck",
            "L1 watch ticks that saw a reorg under the newest target but could publish nothing",
            m.retreats_stuck.clone(),
        );
        reg.register("source_head", "Newest unsafe head number per source", m.source_head.clone());
        reg.register(
            "source_lag_blocks",
            "Blocks a source is behind the most advanced one",
            m.source_lag.clone(),
        );
        reg.register(
            "source_rejections_in_row",
            "Statuses of a source rejected in a row",
            m.source_rejections.clone(),
        );
        reg.register(
            "source_chosen",
            "1 when the source is followed (failover) or counted (quorum)",
            m.source_chosen.clone(),
        );
        reg.register(
            "skipped_targets",
            "Stored targets skipped as undecodable when reading the newest target",
            m.skipped_targets.clone(),
        );
        reg.register("last_target_epoch", "Epoch of the last target", m.last_epoch.clone());
        reg.register(
            "last_target_revision",
            "Revision of the last target",
            m.last_revision.clone(),
        );
        reg.register(
            "last_target_unsafe",
            "unsafe_l2 number of the last target",
            m.last_unsafe.clone(),
        );
        reg.register("last_target_safe", "safe_l2 number of the last target", m.last_safe.clone());
        reg.register(
            "last_target_finalized",
            "finalized_l2 number of the last target",
            m.last_finalized.clone(),
        );
        reg.register(
            "last_target_current_l1",
            "current_l1 number of the last target",
            m.last_current_l1.clone(),
        );
        reg.register("paused", "1 while paused by the operator", m.paused.clone());
        reg.register(
            "nats_reconnects",
            "NATS connections re-established after a loss",
            m.nats_reconnects.clone(),
        );
        m
    }

    /// Sets the per-source gauges from `views` (a source gone from the vote window keeps its
    /// last values; its `source_head` no longer moves, which is what a stall looks like).
    pub fn sources(&self, views: &[crate::sources::SourceView]) {
        let label = |id: &str| SourceLabel { source: id.to_owned() };
        for v in views {
            let l = label(&v.id);
            self.source_head.get_or_create(&l).set(i64::try_from(v.head).unwrap_or(i64::MAX));
            self.source_lag.get_or_create(&l).set(i64::try_from(v.lag).unwrap_or(i64::MAX));
            self.source_rejections.get_or_create(&l).set(i64::from(v.rejections_in_row));
            self.source_chosen.get_or_create(&l).set(i64::from(v.chosen));
        }
    }

    /// Counts one status outcome.
    pub fn verdict(&self, verdict: &str, reason: Option<RejectReason>) {
        self.statuses
            .get_or_create(&VerdictLabels {
                verdict: verdict.into(),
                reason: reason.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            })
            .inc();
    }

    /// Sets the last-target gauges.
    pub fn last_target(&self, t: &lightcl_core::Target) {
        self.last_revision.set(gauge(t.revision));
        self.last_epoch.set(gauge(t.epoch));
        self.last_unsafe.set(gauge(t.unsafe_l2.number));
        self.last_safe.set(gauge(t.safe_l2.number));
        self.last_finalized.set(gauge(t.finalized_l2.number));
        self.last_current_l1.set(gauge(t.current_l1.number));
    }
}

/// Clamps a number into a gauge value.
pub fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
