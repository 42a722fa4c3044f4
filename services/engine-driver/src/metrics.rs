//! Prometheus metrics, registered under the `lightcl_engine_driver` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set `{answer="valid|syncing|invalid|invalid_forkchoice_state|error"}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabel {
    /// The EL's answer.
    pub answer: String,
}

/// Label set `{kind="..."}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// What happened.
    pub kind: String,
}

/// Label set `{el="<el id>"}`: the EL whose lease it is (alerts group the drivers of one EL).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ElLabel {
    /// The EL's lease id (`lightcl_bus::el_lease_id`).
    pub el: String,
}

/// Label set `{el, change="acquired|lost"}` of `lease_changes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabel {
    /// The EL's lease id.
    pub el: String,
    /// `acquired` or `lost`.
    pub change: String,
}

/// Every metric the engine-driver exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `fcu_total{answer}`: forkchoice updates by answer.
    pub fcu_total: Family<AnswerLabel, Counter>,
    /// `fcu_duration_seconds`: forkchoice update latency.
    pub fcu_duration: Histogram,
    /// `targets_total`: targets received from the bus (before coalescing in the planner).
    pub targets_total: Counter,
    /// `target_head`: number of the head being pushed.
    pub target_head: Gauge,
    /// `applied_head`, `applied_safe`, `applied_finalized`: numbers the EL accepted.
    pub applied_head: Gauge,
    /// See `applied_head`.
    pub applied_safe: Gauge,
    /// See `applied_head`.
    pub applied_finalized: Gauge,
    /// `lag_blocks`: target head minus applied head.
    pub lag_blocks: Gauge,
    /// `sync_phase`: 0 starting, 1 initial sync, 2 following.
    pub sync_phase: Gauge,
    /// `paused`: 1 while paused.
    pub paused: Gauge,
    /// `alerts_total{kind}`: refused updates, INVALID heads, rejected forkchoice states.
    pub alerts_total: Family<KindLabel, Counter>,
    /// `el_read_errors_total`: failed EL block reads.
    pub el_read_errors_total: Counter,
    /// `bad_messages_total`: undecodable target messages.
    pub bad_messages_total: Counter,
    /// `e2e_lag_seconds`: from the poll that observed a head to the VALID FCU that applied it.
    pub e2e_lag: Histogram,
    /// `nats_reconnects_total`: NATS reconnections (the target consumer is re-created).
    pub nats_reconnects_total: Counter,
    /// `lease_held{el}`: 1 while this driver holds its EL's lease and may send.
    pub lease_held: Family<ElLabel, Gauge>,
    /// `lease_changes_total{el,change}`: this driver acquiring or losing the lease.
    pub lease_changes_total: Family<ChangeLabel, Counter>,
    /// `fcu_fenced_total`: planned forkchoice updates not sent because this driver did not
    /// hold the lease at that moment.
    pub fcu_fenced_total: Counter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(reg: &mut Registry) -> Self {
        let m = Self {
            fcu_total: Family::default(),
            fcu_duration: Histogram::new([
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0,
            ]),
            targets_total: Counter::default(),
            target_head: Gauge::default(),
            applied_head: Gauge::default(),
            applied_safe: Gauge::default(),
            applied_finalized: Gauge::default(),
            lag_blocks: Gauge::default(),
            sync_phase: Gauge::default(),
            paused: Gauge::default(),
            alerts_total: Family::default(),
            el_read_errors_total: Counter::default(),
            bad_messages_total: Counter::default(),
            e2e_lag: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
            nats_reconnects_total: Counter::default(),
            lease_held: Family::default(),
            lease_changes_total: Family::default(),
            fcu_fenced_total: Counter::default(),
        };
        reg.register("fcu", "Forkchoice updates sent, by EL answer", m.fcu_total.clone());
        reg.register(
            "fcu_duration_seconds",
            "Forkchoice update round-trip latency",
            m.fcu_duration.clone(),
        );
        reg.register("targets", "Targets received from the bus", m.targets_total.clone());
        reg.register("target_head", "Number of the head being pushed", m.target_head.clone());
        reg.register("applied_head", "Head number the EL accepted", m.applied_head.clone());
        reg.register("applied_safe", "Safe number the EL accepted", m.applied_safe.clone());
        reg.register(
            "applied_finalized",
            "Finalized number the EL accepted",
            m.applied_finalized.clone(),
        );
        reg.register("lag_blocks", "Target head minus applied head", m.lag_blocks.clone());
        reg.register(
            "sync_phase",
            "EL sync phase: 0 starting, 1 initial sync, 2 following",
            m.sync_phase.clone(),
        );
        reg.register("paused", "1 while paused by the operator", m.paused.clone());
        // Every kind exported from the start at zero, so `increase()` in the alert rules sees
        // the first one.
        for kind in ["refused", "invalid_head", "target_head_invalid", "forkchoice_state_rejected"]
        {
            let _ = m.alerts_total.get_or_create(&KindLabel { kind: kind.to_owned() });
        }
        reg.register("alerts", "Alerts raised, by kind", m.alerts_total.clone());
        reg.register("el_read_errors", "Failed EL block reads", m.el_read_errors_total.clone());
        reg.register("bad_messages", "Undecodable target messages", m.bad_messages_total.clone());
        reg.register(
            "e2e_lag_seconds",
            "Time from the poll that observed a head to the VALID forkchoice update that applied it",
            m.e2e_lag.clone(),
        );
        reg.register("nats_reconnects", "NATS reconnections", m.nats_reconnects_total.clone());
        reg.register(
            "lease_held",
            "1 while this driver holds its EL's single-writer lease and may send",
            m.lease_held.clone(),
        );
        reg.register(
            "lease_changes",
            "This driver acquiring or losing its EL's lease, by change",
            m.lease_changes_total.clone(),
        );
        reg.register(
            "fcu_fenced",
            "Planned forkchoice updates not sent because this driver did not hold the lease",
            m.fcu_fenced_total.clone(),
        );
        m
    }
}

/// Clamps a block number into a gauge value.
pub fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
