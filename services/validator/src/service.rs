//! The validator loop: raw statuses in, targets or rejections out (docs/architecture.md#validator).
//!
//! Per status, in order: decide on the last target this replica holds (read from the stream
//! at start, after a lost race or a failed publish, and re-read before any verdict other than a
//! target, so replicas and restarts agree; a target is proven current by its CAS), take the
//! newest position the engine-drivers report (kept current by a KV watch,
//! [`crate::drivers`]; no request per status), plan, read L1 in one batch (retried with
//! backoff; never skipped), decide with
//! [`lightcl_core::validate::Validator`], store the target with a CAS publish (expected last
//! subject sequence) or the rejection, and only then ack the status. A lost CAS race reloads
//! the state and decides again; a NATS failure retries the same decision.
//!
//! Between statuses, every `--l1.watch-interval`, the L1 watch ([`Service::watch_l1`]) checks
//! that the newest target's safe and local-safe L1 origins are still canonical and publishes
//! a retreat when not.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lightcl_bus::{
    Bus, BusError, ConsumerSpec, CoreCopies, Delivery, LatestConsumer, Publisher, StartAt,
    TypedConsumer, newest_valid, recent_valid, rejection_msg_id, subjects, target_msg_id,
};
use lightcl_core::early::{Early, EarlyConfig, EarlyCopies, StreamCopy};
use lightcl_core::revision::{Position, epoch_plausible, is_newer};
use lightcl_core::validate::{
    Accepted, L1Answers, L1Plan, Observation, Rejection, Validator, Verdict, WatchVerdict,
};
use lightcl_proto::{SourceStatus, names, v1};
use lightcl_runtime::{Backoff, Readiness, now_ms};
use opentelemetry::trace::TraceContextExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::drivers::{self, Reported};
use crate::l1::L1Reader;
use crate::metrics::Metrics;
use crate::sources::{Next, QUORUM_SOURCE, Sources};

/// How long start-up waits for the first complete read of the engine-drivers' positions before
/// the validator decides without them (they are then used as soon as they can be read).
pub const DRIVERS_START_WAIT: Duration = Duration::from_secs(5);

/// How many stream sequences the validator looks back past an undecodable newest target.
pub const TARGET_WALK_BACK: u64 = 256;

/// How many recent rejections `GetStatus` shows.
pub const RECENT_REJECTIONS: usize = 16;

/// Everything the loop needs.
#[derive(Debug)]
pub struct Parts {
    /// The rules (with the chain id and quorum).
    pub validator: Validator,
    /// NATS.
    pub bus: Bus,
    /// Publisher (PubAck + same-id retries).
    pub publisher: Publisher,
    /// Our L1.
    pub l1: L1Reader,
    /// How long one status may wait for L1 before it is rejected as "L1 unavailable".
    pub l1_retry_budget: Duration,
    /// L1 watch period (`None`: no watch; see [`Service::watch_l1`]).
    pub l1_watch_interval: Option<Duration>,
    /// Durable consumer name shared by the replicas.
    pub durable: String,
    /// Redelivery delay of an unacked status.
    pub ack_wait: Duration,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness conditions `nats` and `l1`.
    pub readiness: Readiness,
    /// Published status for the control API.
    pub status: watch::Sender<v1::ValidatorStatus>,
    /// Pause switch (from the control API).
    pub paused: watch::Receiver<bool>,
    /// Every source's recent statuses and the followed source.
    pub sources: Sources,
    /// Judge statuses from their early (core-NATS) copies ([`lightcl_core::early`]).
    pub early_copies: bool,
}

/// The running loop's state.
#[derive(Debug)]
pub struct Service {
    p: Parts,
    chain_id: u64,
    /// Stream sequence of the last target on the subject (0: none): the CAS expectation.
    target_seq: u64,
    last_target: Option<v1::Target>,
    /// Highest stream sequence of a target already counted as skipped (undecodable).
    skipped_seq: u64,
    /// The state is the stream's as of the last read or of our own last stored target (false
    /// after a lost race or a failed publish: read it back before deciding).
    state_current: bool,
    recent: VecDeque<v1::Rejection>,
    accepted: u64,
    rejected: u64,
    l1_ok: bool,
    last_error: String,
    /// The newest position the chain's engine-drivers report ([`drivers::follow`]).
    drivers: watch::Receiver<Reported>,
    drivers_tx: Option<watch::Sender<Reported>>,
    /// Stops [`drivers::follow`] when the service ends.
    drivers_guard: Option<tokio_util::sync::DropGuard>,
    /// Which statuses were judged from their early copies.
    early: EarlyCopies,
    /// The status stream's last delivery had nothing behind it: an early copy is the next
    /// status in order (false until a delivery shows it).
    caught_up: bool,
}

enum Stored {
    Done,
    Cancelled,
}

impl Service {
    /// A service over `parts`.
    pub fn new(parts: Parts) -> Self {
        let chain_id = parts.validator.config().chain_id;
        let (drivers_tx, drivers) = watch::channel(Reported::default());
        Self {
            p: parts,
            chain_id,
            target_seq: 0,
            last_target: None,
            skipped_seq: 0,
            state_current: false,
            recent: VecDeque::new(),
            accepted: 0,
            rejected: 0,
            l1_ok: false,
            last_error: String::new(),
            drivers,
            drivers_tx: Some(drivers_tx),
            drivers_guard: None,
            early: EarlyCopies::new(EarlyConfig::default()),
            caught_up: false,
        }
    }

    /// Runs until `cancel` fires. (The NATS connection state is mirrored into readiness
    /// `nats` by the caller's shell.)
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut consumer = TypedConsumer::<v1::RawStatus>::new(
            self.p.bus.jetstream(),
            ConsumerSpec {
                stream: subjects::STATUS_STREAM.to_owned(),
                filter_subject: subjects::status_filter(self.chain_id),
                durable: Some(self.p.durable.clone()),
                start: StartAt::LastPerSubject,
                ack_wait: self.p.ack_wait,
            },
            names::RAW_STATUS,
        )
        .on_undecodable({
            let bad = self.p.metrics.bad_messages.clone();
            move || {
                bad.inc();
            }
        });
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        // Topology, state and the durable consumer first (ready only once statuses are being
        // recorded for us); NATS may not be up yet.
        loop {
            let attempt = async {
                self.p.bus.ensure_topology().await?;
                self.reload().await?;
                consumer.open_now().await
            };
            // A JetStream request waits for a (re)connection: never let it hold up shutdown.
            let res = tokio::select! {
                () = cancel.cancelled() => return,
                r = attempt => r,
            };
            match res {
                Ok(()) => break,
                Err(e) => {
                    self.p.readiness.set("nats", false);
                    self.note_error(format!("NATS not ready: {e}"));
                    tracing::warn!(error = %e, "NATS not ready; retrying");
                    if sleep_or_cancel(backoff.next_delay(), &cancel).await {
                        return;
                    }
                }
            }
        }
        self.remember_targets().await;
        self.follow_drivers(&cancel).await;
        self.p.readiness.set("nats", true);
        self.probe_l1().await;
        self.publish_status();
        tracing::info!(
            chain_id = self.chain_id,
            l1 = %self.p.l1.endpoint(),
            quorum = self.p.validator.config().quorum,
            last_epoch = self.p.validator.last().map_or(0, |t| t.epoch),
            last_revision = self.p.validator.last().map_or(0, |t| t.revision),
            "validator started"
        );

        // Every status of every source, from the last window on (also after each reconnect):
        // the votes all replicas share (docs/architecture.md#several-sources).
        let window = Duration::from_millis(self.p.sources.window_ms());
        let mut votes = LatestConsumer::<SourceStatus>::new(
            &self.p.bus,
            subjects::STATUS_STREAM,
            subjects::status_filter(self.chain_id),
        )
        .since(window);
        // Early copies: the same statuses as routed on publish, a JetStream hop sooner.
        let mut copies = if self.p.early_copies {
            match CoreCopies::<v1::RawStatus>::subscribe(
                self.p.bus.client(),
                subjects::status_filter(self.chain_id),
                format!("{}-early", self.p.durable),
                names::RAW_STATUS,
            )
            .await
            {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "no early copies of statuses; the status stream only");
                    None
                }
            }
        } else {
            None
        };
        let mut paused = self.p.paused.clone();
        let watching = self.p.l1_watch_interval.is_some();
        let mut watch_tick =
            tokio::time::interval(self.p.l1_watch_interval.unwrap_or(Duration::from_secs(3600)));
        watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let is_paused = *paused.borrow_and_update();
            if is_paused {
                // Statuses pile up meanwhile: early copies wait until the stream caught up.
                self.caught_up = false;
            }
            self.p.metrics.paused.set(i64::from(is_paused));
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Ok(()) = paused.changed() => {
                    self.publish_status();
                    continue;
                }
                // Before the statuses: a backlog must not delay a retreat.
                _ = watch_tick.tick(), if watching && !is_paused => {
                    let span = tracing::info_span!(
                        "validator.l1_watch",
                        chain_id = self.chain_id,
                        revision = tracing::field::Empty,
                    );
                    if let Stored::Cancelled = self.watch_l1(&cancel).instrument(span).await {
                        break;
                    }
                }
                // A copy precedes its stream delivery on the wire; taken first, it is judged
                // early when it may be (a backlog is never: see `handle_early`).
                d = next_copy(&mut copies), if !is_paused && copies.is_some() => {
                    let span = self.status_span(&d, "early");
                    if let Stored::Cancelled = self.handle_early(d, &cancel).instrument(span).await {
                        break;
                    }
                }
                d = consumer.next(), if !is_paused => {
                    let span = self.status_span(&d, "stream");
                    if let Stored::Cancelled = self.handle(d, false, &cancel).instrument(span).await {
                        break;
                    }
                }
                v = votes.next() => {
                    let m = v.message;
                    if m.chain_id == self.chain_id {
                        let obs = Observation { chain_id: m.chain_id, source_id: m.source_id, status: m.status };
                        self.p.sources.record(&obs, v.sequence, v.stored_ms);
                    }
                    continue;
                }
                () = tokio::time::sleep(Duration::from_secs(2)), if !self.l1_ok => {
                    self.probe_l1().await;
                }
            }
            self.publish_status();
        }
    }

    /// Reads the newest target of the chain from the stream into the rules' state. Newer
    /// targets that do not decode or convert are skipped (logged with subject and sequence,
    /// counted once each) and the validator continues from the newest usable one, looking
    /// back at most [`TARGET_WALK_BACK`] sequences (none usable: a new epoch starts). The CAS
    /// expectation stays the subject's last sequence, usable or not.
    async fn reload(&mut self) -> Result<(), BusError> {
        let subject = subjects::target(self.chain_id);
        let found = newest_valid::<lightcl_core::Target>(
            &self.p.bus.jetstream(),
            subjects::TARGETS_STREAM,
            &subject,
            TARGET_WALK_BACK,
        )
        .await?;
        for e in &found.skipped {
            let seq = match e {
                BusError::Decode { sequence, .. } => *sequence,
                _ => 0,
            };
            if seq > self.skipped_seq {
                self.p.metrics.skipped_targets.inc();
                tracing::error!(
                    subject = %subject,
                    sequence = seq,
                    error = %e,
                    "stored target does not decode; skipped, continuing from the newest decodable one"
                );
            }
        }
        if let Some(BusError::Decode { sequence, .. }) = found.skipped.first() {
            self.skipped_seq = self.skipped_seq.max(*sequence);
        }
        self.target_seq = found.last_sequence;
        self.state_current = true;
        match found.newest {
            None => {
                if !found.skipped.is_empty() {
                    tracing::error!(
                        subject = %subject,
                        look_back = TARGET_WALK_BACK,
                        "no decodable target found; the next target starts a new epoch"
                    );
                }
                self.last_target = None;
                self.p.validator.restore(None);
            }
            Some(m) => {
                let (wire, core) = m.message;
                self.p.validator.restore(Some(core));
                self.p.metrics.last_target(&core);
                self.last_target = Some(wire);
            }
        }
        Ok(())
    }

    /// [`Service::reload`] until it succeeds (backoff between attempts; not ready meanwhile).
    async fn reload_retrying(
        &mut self,
        backoff: &mut Backoff,
        cancel: &CancellationToken,
    ) -> Stored {
        loop {
            match self.reload().await {
                Ok(()) => {
                    // A JetStream request just succeeded: NATS is usable again (a failed
                    // request marked it not ready while the connection itself stayed up).
                    self.p.readiness.set("nats", true);
                    return Stored::Done;
                }
                Err(e) => {
                    self.p.readiness.set("nats", false);
                    self.note_error(format!("reading the last target: {e}"));
                    tracing::warn!(error = %e, "cannot read the last target; retrying");
                    if sleep_or_cancel(backoff.next_delay(), cancel).await {
                        return Stored::Cancelled;
                    }
                }
            }
        }
    }

    /// Reads the chain's recent targets back from the stream as retreat candidates (best
    /// effort: without them a retreat can only go back to what this run has seen, or to the
    /// finalized head).
    async fn remember_targets(&mut self) {
        let found = recent_valid::<lightcl_core::Target>(
            &self.p.bus.jetstream(),
            subjects::TARGETS_STREAM,
            &subjects::target(self.chain_id),
            TARGET_WALK_BACK,
            lightcl_core::retreat::HISTORY_CAPACITY,
        )
        .await;
        match found {
            Ok(r) => {
                let last = self.p.validator.last().copied();
                self.p.validator.remember(r.messages.into_iter().rev().map(|m| m.message.1));
                // The newest stays the newest candidate.
                self.p.validator.restore(last);
                tracing::debug!(
                    remembered = self.p.validator.history().len(),
                    "retreat candidates read"
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot read recent targets (retreat candidates)"),
        }
    }

    /// Starts [`drivers::follow`] (stopped with the loop) and waits, at most
    /// [`DRIVERS_START_WAIT`], for its first complete read: a validator restarted after a
    /// restore of an older backup must know the drivers' positions before its first decision.
    async fn follow_drivers(&mut self, cancel: &CancellationToken) {
        let Some(tx) = self.drivers_tx.take() else { return };
        // Cancelled with the service's token, or when the service ends (the guard is dropped).
        let token = cancel.child_token();
        self.drivers_guard = Some(token.clone().drop_guard());
        tokio::spawn(drivers::follow(self.p.bus.clone(), self.chain_id, tx, token));
        let mut rx = self.drivers.clone();
        let loaded = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(DRIVERS_START_WAIT, rx.wait_for(|r| r.loaded)) => {
                matches!(r, Ok(Ok(_)))
            }
        };
        if !loaded {
            tracing::warn!(
                "the engine-drivers' positions (KV lightcl-engine) are not readable yet; \
                 deciding without them until they are"
            );
        }
    }

    async fn probe_l1(&mut self) {
        match self.p.l1.fetch(&L1Plan::default()).await {
            Ok(_) => self.set_l1(true),
            Err(e) => {
                self.set_l1(false);
                self.note_error(e.to_string());
            }
        }
    }

    fn set_l1(&mut self, ok: bool) {
        self.l1_ok = ok;
        self.p.readiness.set("l1", ok);
    }

    fn note_error(&mut self, e: String) {
        self.last_error = e;
    }

    /// The span of one status: searchable by the status's numbers, then the verdict (see
    /// `handle`); a child of the poll's trace.
    fn status_span(&self, d: &Delivery<v1::RawStatus>, copy: &'static str) -> tracing::Span {
        let span = tracing::info_span!(
            "validator.status",
            otel.kind = "consumer",
            subject = %d.subject,
            sequence = d.sequence,
            copy,
            chain_id = self.chain_id,
            source_id = tracing::field::Empty,
            poll_seq = tracing::field::Empty,
            unsafe_l2 = tracing::field::Empty,
            safe_l2 = tracing::field::Empty,
            finalized_l2 = tracing::field::Empty,
            verdict = tracing::field::Empty,
            revision = tracing::field::Empty,
            reason = tracing::field::Empty,
        );
        let cx = lightcl_telemetry::extract_map(&d.trace);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
        span
    }

    /// An early copy of a status ([`lightcl_core::early`]): judged now when it may be, and then
    /// only a stored target counts; anything else is left to the stream's delivery.
    async fn handle_early(
        &mut self,
        d: Delivery<v1::RawStatus>,
        cancel: &CancellationToken,
    ) -> Stored {
        let eligible = self.caught_up && self.p.sources.early_eligible(&d.message.source_id);
        let id = d.msg_id.clone();
        if self.early.on_copy(id.as_deref(), eligible, now_ms()) == Early::Pass {
            tracing::Span::current().record("verdict", "passed");
            return Stored::Done;
        }
        let Some(id) = id else { return Stored::Done };
        let before = self.accepted;
        let out = self.handle(d, true, cancel).await;
        if self.accepted > before {
            self.early.stored(&id);
            self.p.metrics.early_targets.inc();
        } else {
            self.early.not_stored(&id, now_ms());
        }
        out
    }

    /// One status, until its outcome is stored (or shutdown). `early`: from its early copy
    /// (see [`Service::handle_early`]): no rejection, no retry, no ack; the stream's delivery
    /// settles the rest.
    async fn handle(
        &mut self,
        d: Delivery<v1::RawStatus>,
        early: bool,
        cancel: &CancellationToken,
    ) -> Stored {
        let raw = &d.message;
        if !early {
            self.caught_up = d.pending == 0;
        }
        if !early
            && self.p.early_copies
            && self.early.on_stream(d.msg_id.as_deref()) == StreamCopy::Ack
        {
            // Its target was stored from the early copy (proven by the CAS): record, ack.
            if let Ok(status) = raw.core_status() {
                let obs = Observation {
                    chain_id: raw.chain_id,
                    source_id: raw.source_id.clone(),
                    status,
                };
                self.p.sources.record(&obs, d.sequence, d.stored_ms);
            }
            tracing::Span::current().record("verdict", "target_from_early_copy");
            ack(&d).await;
            return Stored::Done;
        }
        let status = match raw.core_status() {
            Ok(s) => s,
            Err(_) if early => return Stored::Done,
            Err(e) => {
                self.p.metrics.bad_messages.inc();
                tracing::error!(subject = %d.subject, sequence = d.sequence, error = %e, "raw status does not convert; acked and skipped");
                ack(&d).await;
                return Stored::Done;
            }
        };
        let span = tracing::Span::current();
        span.record("source_id", raw.source_id.as_str());
        span.record("poll_seq", raw.poll_seq);
        span.record("unsafe_l2", status.unsafe_l2.number);
        span.record("safe_l2", status.safe_l2.number);
        span.record("finalized_l2", status.finalized_l2.number);
        let delivered =
            Observation { chain_id: raw.chain_id, source_id: raw.source_id.clone(), status };
        if !early {
            // An early copy has no stream sequence: the stream's delivery records it.
            self.p.sources.record(&delivered, d.sequence, d.stored_ms);
        }
        let (next, switch) = self.p.sources.next(&delivered, now_ms());
        if let Some(sw) = switch {
            self.p.metrics.source_switches.inc();
            tracing::warn!(
                from = sw.from.as_deref().unwrap_or("-"),
                to = %sw.to,
                "following another source"
            );
        }
        let (obs, sources) = match next {
            Next::Decide { obs, sources } => (*obs, sources),
            _ if early => return Stored::Done,
            Next::Standby { active } => {
                self.p.metrics.verdict("standby", None);
                span.record("verdict", "standby");
                tracing::debug!(source = %delivered.source_id, following = %active, "status recorded; following another source");
                ack(&d).await;
                return Stored::Done;
            }
            Next::NoQuorum(r) => return self.reject(&d, &r, cancel).await,
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // Whether the state was read back from the stream for this status. The decision is
        // taken on the state this replica holds; a target is then stored with the CAS (which
        // refuses it if anything was stored since), any other verdict only after a re-read
        // found the same last sequence.
        let mut verified = false;
        loop {
            if !self.state_current {
                if let Stored::Cancelled = self.reload_retrying(&mut backoff, cancel).await {
                    return Stored::Cancelled;
                }
                verified = true;
            }
            let now = now_ms();
            self.p.validator.set_clock(now);
            let drivers = self.drivers.borrow().newest;
            self.p.validator.set_drivers_newest(drivers);
            self.warn_if_drivers_ahead(drivers, now);
            let verdict = match self.p.validator.plan(&obs) {
                Err(r) => Verdict::Reject(r),
                Ok(plan) => match self.fetch(&plan, &d, early, cancel).await {
                    Fetched::Answers(a) => self.p.validator.decide(&obs, &a),
                    Fetched::GaveUp(r) => Verdict::Reject(r),
                    Fetched::Cancelled => return Stored::Cancelled,
                },
            };
            if early && !matches!(verdict, Verdict::Accept(_)) {
                return Stored::Done;
            }
            if !verified && !matches!(verdict, Verdict::Accept(_)) {
                let seen = self.target_seq;
                if let Stored::Cancelled = self.reload_retrying(&mut backoff, cancel).await {
                    return Stored::Cancelled;
                }
                verified = true;
                if self.target_seq != seen {
                    continue;
                }
            }
            let verdict = match verdict {
                Verdict::Accept(mut a) => {
                    a.source_ids.clone_from(&sources);
                    self.p.sources.verdict(&obs.source_id, false);
                    Verdict::Accept(a)
                }
                v => v,
            };
            match verdict {
                Verdict::Accept(a) => match self.store_target(raw.observed_at_ms, &a).await {
                    Ok((seq, msg)) => {
                        self.target_seq = seq;
                        self.last_target = Some(msg);
                        self.p.validator.commit(a.target);
                        self.p.metrics.last_target(&a.target);
                        self.p.metrics.verdict("target", None);
                        span.record("verdict", "target");
                        span.record("revision", a.target.revision);
                        self.accepted += 1;
                        tracing::info!(
                            epoch = a.target.epoch,
                            revision = a.target.revision,
                            unsafe_l2 = a.target.unsafe_l2.number,
                            safe_l2 = a.target.safe_l2.number,
                            finalized_l2 = a.target.finalized_l2.number,
                            current_l1 = a.target.current_l1.number,
                            kept_current_l1 = a.kept_current_l1,
                            l1_reorg = a.l1_reorg,
                            source = %obs.source_id,
                            "target published"
                        );
                        ack(&d).await;
                        return Stored::Done;
                    }
                    Err(BusError::WrongLastSequence { .. }) => {
                        // Another replica stored a target first: reload and decide again.
                        self.state_current = false;
                        self.p.metrics.cas_conflicts.inc();
                        tracing::info!(
                            revision = a.target.revision,
                            "lost the target race; re-deciding"
                        );
                        continue;
                    }
                    Err(e) => {
                        // Stored or not is unknown (a lost PubAck): read the state back.
                        self.state_current = false;
                        self.p.metrics.publish_errors.inc();
                        self.p.readiness.set("nats", false);
                        self.note_error(format!("publishing target: {e}"));
                        tracing::warn!(error = %e, "target publish failed; retrying");
                        if early {
                            return Stored::Done;
                        }
                        if sleep_or_cancel(backoff.next_delay(), cancel).await {
                            return Stored::Cancelled;
                        }
                        continue;
                    }
                },
                Verdict::Unchanged => {
                    self.p.sources.verdict(&obs.source_id, false);
                    self.p.metrics.verdict("unchanged", None);
                    span.record("verdict", "unchanged");
                    tracing::debug!(source = %obs.source_id, "status unchanged");
                    ack(&d).await;
                    return Stored::Done;
                }
                Verdict::Reject(r) if obs.source_id == QUORUM_SOURCE && r.reason.is_behind() => {
                    // The combined candidate is older than the stored target: this replica's
                    // votes lag behind another replica's (or statuses came out of order).
                    // Nothing any source did wrong: publish nothing.
                    self.p.metrics.verdict("unchanged", None);
                    span.record("verdict", "behind");
                    tracing::debug!(reason = %r.reason.as_str(), "quorum candidate behind the stored target");
                    ack(&d).await;
                    return Stored::Done;
                }
                Verdict::Reject(r) => {
                    self.p.sources.verdict(&obs.source_id, !r.reason.is_behind());
                    return self.reject(&d, &r, cancel).await;
                }
                Verdict::NoPosition(e) => {
                    // Never a wrapped revision: publish nothing, tell the operator.
                    self.p.metrics.verdict("no_position", None);
                    span.record("verdict", "no_position");
                    self.note_error(format!("cannot publish a target: {e}"));
                    tracing::error!(error = %e, source = %obs.source_id, "cannot publish a target");
                    ack(&d).await;
                    return Stored::Done;
                }
            }
        }
    }

    /// Logs when a driver reports a position newer than the stored newest target: the next
    /// target starts a new epoch above it (see [`lightcl_core::revision::next_position`]).
    fn warn_if_drivers_ahead(&self, drivers: Option<Position>, now: u64) {
        let stored = self.p.validator.last().map(Position::of);
        let Some(d) = drivers.filter(|d| epoch_plausible(d.epoch, now)) else { return };
        if is_newer(stored.filter(|s| epoch_plausible(s.epoch, now)), d, now) {
            tracing::warn!(
                driver_epoch = d.epoch,
                driver_revision = d.revision,
                stored_epoch = stored.map_or(0, |s| s.epoch),
                stored_revision = stored.map_or(0, |s| s.revision),
                "an engine-driver is ahead of the newest stored target (an older backup of \
                 LIGHTCL_TARGETS restored, or its newest targets removed?): the next target \
                 starts a new epoch above it"
            );
        }
    }

    /// Reads L1 for `plan`, retrying within `--l1.retry-budget` (an early copy: once).
    async fn fetch(
        &mut self,
        plan: &L1Plan,
        d: &Delivery<v1::RawStatus>,
        early: bool,
        cancel: &CancellationToken,
    ) -> Fetched {
        let budget = if early { Duration::ZERO } else { self.p.l1_retry_budget };
        let deadline = Instant::now() + budget;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        loop {
            match self.p.l1.fetch(plan).await {
                Ok(a) => {
                    self.set_l1(true);
                    return Fetched::Answers(a);
                }
                Err(e) => {
                    self.set_l1(false);
                    self.note_error(e.to_string());
                    tracing::warn!(error = %e, "L1 read failed; retrying");
                    if Instant::now() >= deadline {
                        return Fetched::GaveUp(Rejection::l1_unavailable(e));
                    }
                    // Keep the status ours while we wait.
                    let _ = d.in_progress().await;
                    if sleep_or_cancel(backoff.next_delay(), cancel).await {
                        return Fetched::Cancelled;
                    }
                }
            }
        }
    }

    /// One L1 watch tick: reads our L1 at the newest target's safe and local-safe L1 origins
    /// (one batch); when either was reorged out, re-reads the newest target, reads the
    /// origins of the remembered targets and publishes the retreat
    /// ([`lightcl_core::retreat`]) with the same CAS as any target. A failed read ends the
    /// tick (the next one tries again); a lost CAS race decides again.
    async fn watch_l1(&mut self, cancel: &CancellationToken) -> Stored {
        let Some(plan) = self.p.validator.watch_plan() else { return Stored::Done };
        match self.p.l1.fetch(&plan).await {
            Ok(a) if !self.p.validator.needs_retreat(&a) => {
                self.set_l1(true);
                return Stored::Done;
            }
            Ok(_) => self.set_l1(true),
            Err(e) => {
                self.set_l1(false);
                self.note_error(e.to_string());
                tracing::debug!(error = %e, "L1 watch read failed");
                return Stored::Done;
            }
        }
        let seen_ms = now_ms();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            if let Err(e) = self.reload().await {
                self.note_error(format!("reading the last target: {e}"));
                tracing::warn!(error = %e, "L1 watch: cannot read the last target; retrying");
                if sleep_or_cancel(backoff.next_delay(), cancel).await {
                    return Stored::Cancelled;
                }
                continue;
            }
            let now = now_ms();
            self.p.validator.set_clock(now);
            self.p.validator.set_drivers_newest(self.drivers.borrow().newest);
            let Some(plan) = self.p.validator.retreat_plan() else { return Stored::Done };
            let answers = match self.p.l1.fetch(&plan).await {
                Ok(a) => a,
                Err(e) => {
                    self.set_l1(false);
                    self.note_error(e.to_string());
                    tracing::warn!(error = %e, "L1 watch: reading the retreat candidates failed");
                    return Stored::Done;
                }
            };
            let a = match self.p.validator.watch(&answers) {
                WatchVerdict::Canonical => return Stored::Done,
                WatchVerdict::Retreat(a) => a,
                WatchVerdict::Stuck(e) => {
                    self.p.metrics.retreats_stuck.inc();
                    self.note_error(format!("L1 reorg under the newest target: {e}"));
                    tracing::error!(error = %e, "L1 reorg under the newest target; no retreat possible");
                    return Stored::Done;
                }
                WatchVerdict::NoPosition(e) => {
                    self.p.metrics.retreats_stuck.inc();
                    self.note_error(format!("cannot publish a retreat: {e}"));
                    tracing::error!(error = %e, "cannot publish a retreat");
                    return Stored::Done;
                }
            };
            let old = self.p.validator.last().copied();
            match self.store_target(seen_ms, &a).await {
                Ok((seq, msg)) => {
                    self.target_seq = seq;
                    self.last_target = Some(msg);
                    self.p.validator.commit(a.target);
                    self.p.metrics.last_target(&a.target);
                    self.p.metrics.retreats.inc();
                    tracing::Span::current().record("revision", a.target.revision);
                    tracing::warn!(
                        epoch = a.target.epoch,
                        revision = a.target.revision,
                        from_safe_l2 = old.map_or(0, |t| t.safe_l2.number),
                        safe_l2 = a.target.safe_l2.number,
                        from_local_safe_l2 = old.map_or(0, |t| t.local_safe_l2.number),
                        local_safe_l2 = a.target.local_safe_l2.number,
                        finalized_l2 = a.target.finalized_l2.number,
                        l1_head = a.evidence.l1_head.number,
                        "L1 reorg under the newest target: retreat published"
                    );
                    return Stored::Done;
                }
                Err(BusError::WrongLastSequence { .. }) => {
                    self.state_current = false;
                    self.p.metrics.cas_conflicts.inc();
                    continue;
                }
                Err(e) => {
                    self.state_current = false;
                    self.p.metrics.publish_errors.inc();
                    self.note_error(format!("publishing a retreat: {e}"));
                    tracing::warn!(error = %e, "retreat publish failed; retrying");
                    if sleep_or_cancel(backoff.next_delay(), cancel).await {
                        return Stored::Cancelled;
                    }
                }
            }
        }
    }

    async fn store_target(
        &self,
        observed_at_ms: u64,
        a: &Accepted,
    ) -> Result<(u64, v1::Target), BusError> {
        // The id covers the heads (not the validation time), so a retried publish of the
        // same decision is a duplicate, while a different target at the same revision is not.
        let id = target_msg_id(&a.target);
        let msg = v1::Target::from_accepted(a, observed_at_ms, now_ms());
        let published = self
            .p
            .publisher
            .publish_expecting(
                &subjects::target(self.chain_id),
                names::TARGET,
                &msg,
                Some(&id),
                self.target_seq,
            )
            .await?;
        Ok((published.sequence, msg))
    }

    async fn reject(
        &mut self,
        d: &Delivery<v1::RawStatus>,
        r: &Rejection,
        cancel: &CancellationToken,
    ) -> Stored {
        let raw = &d.message;
        let msg = v1::Rejection::from_core(raw, r, now_ms());
        if r.reason.is_critical() {
            tracing::error!(reason = %r.reason, source = %raw.source_id, "CRITICAL: {}", r.message);
        } else {
            tracing::warn!(reason = %r.reason, source = %raw.source_id, "status rejected: {}", r.message);
        }
        // Redelivery of the same status maps to the same id: stored once.
        let id = rejection_msg_id(self.chain_id, d.sequence);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self
                .p
                .publisher
                .publish(&subjects::rejected(self.chain_id), names::REJECTION, &msg, Some(&id))
                .await
            {
                Ok(_) => {
                    self.p.readiness.set("nats", true);
                    break;
                }
                Err(e) => {
                    self.p.metrics.publish_errors.inc();
                    self.p.readiness.set("nats", false);
                    self.note_error(format!("publishing rejection: {e}"));
                    tracing::warn!(error = %e, "rejection publish failed; retrying");
                    if sleep_or_cancel(backoff.next_delay(), cancel).await {
                        return Stored::Cancelled;
                    }
                }
            }
        }
        self.p.metrics.verdict("rejected", Some(r.reason));
        let span = tracing::Span::current();
        span.record("verdict", "rejected");
        span.record("reason", r.reason.as_str());
        self.rejected += 1;
        self.recent.push_front(msg);
        self.recent.truncate(RECENT_REJECTIONS);
        ack(d).await;
        Stored::Done
    }

    fn publish_status(&self) {
        let views = self.p.sources.views();
        self.p.metrics.sources(&views);
        let s = v1::ValidatorStatus {
            chain_id: self.chain_id,
            paused: *self.p.paused.borrow(),
            ready: self.p.readiness.is_ready(),
            nats_connected: self.p.bus.is_connected(),
            l1_reachable: self.l1_ok,
            last_target: self.last_target.clone(),
            recent_rejections: self.recent.iter().cloned().collect(),
            accepted: self.accepted,
            rejected: self.rejected,
            last_error: self.last_error.clone(),
            sources: views
                .iter()
                .map(|v| v1::SourceHealth {
                    source_id: v.id.clone(),
                    head: v.head,
                    lag_blocks: v.lag,
                    last_seen_ms: v.last_seen_ms,
                    rejections_in_row: v.rejections_in_row,
                    chosen: v.chosen,
                })
                .collect(),
        };
        self.p.status.send_if_modified(|old| {
            if *old == s {
                false
            } else {
                *old = s;
                true
            }
        });
    }
}

enum Fetched {
    Answers(L1Answers),
    GaveUp(Rejection),
    Cancelled,
}

async fn ack<M>(d: &Delivery<M>) {
    if let Err(e) = d.ack().await {
        // Redelivery is harmless: the same status decides the same way or is a replay.
        tracing::warn!(subject = %d.subject, sequence = d.sequence, error = %e, "ack failed");
    }
}

/// The next early copy (pending forever without a subscription).
async fn next_copy(copies: &mut Option<CoreCopies<v1::RawStatus>>) -> Delivery<v1::RawStatus> {
    match copies {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// Sleeps `delay`; true when cancelled first.
async fn sleep_or_cancel(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(delay) => false,
    }
}
