//! The driver loop: runs the planner against the EL, one I/O action at a time.
//!
//! Targets arrive on a watch channel (only the newest is kept while an FCU is in flight);
//! control commands on an mpsc channel. Every planner action is executed here and its result
//! fed back; nothing else talks forkchoice to the EL. Every forkchoice update asks the lease's
//! [`Fence`] first, immediately before it is sent: without the lease it is not sent
//! (docs/architecture.md#single-writer).
//!
//! INVALID heads are EL-scoped and kept in the lease value: the loop hands the fence's list
//! (what this driver's EL answered INVALID, and what any lease value of the EL listed) to the
//! planner at every turn and again right after the fence check of every forkchoice update, and
//! tells the fence every head its EL answers INVALID.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_bus::Latest;
use lightcl_core::engine::{Action, Alert, EngineSnapshot, FcuAnswer, FcuOutcome, Phase, Planner};
use lightcl_core::revision::Position;
use lightcl_core::status::L2BlockRef;
use lightcl_proto::{TargetUpdate, v1};
use lightcl_runtime::Readiness;
use opentelemetry::trace::TraceContextExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::el::EngineClient;
use crate::lease::{Fence, LeaseView};
use crate::metrics::{AnswerLabel, KindLabel, Metrics, gauge_value};
use crate::served::{Served, Views};

/// An operator command for the driver loop.
#[derive(Debug)]
pub enum Command {
    /// Stop sending forkchoice updates; replies with the paused flag.
    Pause(oneshot::Sender<bool>),
    /// Resume; replies with the paused flag.
    Resume(oneshot::Sender<bool>),
    /// Re-read the EL's heads and re-plan; replies once the command is queued.
    Resync(oneshot::Sender<()>),
}

/// Full L2 refs of blocks named by recent targets, by hash (to report l1origin and sequence
/// numbers of applied heads). Bounded.
#[derive(Debug, Default)]
pub struct RefCache {
    map: HashMap<B256, L2BlockRef>,
    order: VecDeque<B256>,
}

impl RefCache {
    const CAP: usize = 4096;

    /// Remembers a ref.
    pub fn insert(&mut self, r: L2BlockRef) {
        if r.is_unset() || self.map.insert(r.hash, r).is_some() {
            return;
        }
        self.order.push_back(r.hash);
        while self.order.len() > Self::CAP {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// The ref with this hash, if seen.
    pub fn get(&self, hash: &B256) -> Option<L2BlockRef> {
        self.map.get(hash).copied()
    }
}

/// Shared view of the driver for the control API, the KV publisher and the RPC endpoint.
#[derive(Debug, Clone)]
pub struct Shared {
    /// Newest status (the `state` field is the published EngineState).
    pub status: watch::Receiver<v1::EngineDriverStatus>,
    /// What `optimism_syncStatus` serves besides the EL's heads (and the KV value keeps).
    pub served: Served,
}

/// Identity of this driver.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `--chain-id`.
    pub chain_id: u64,
    /// `--node-id`.
    pub node_id: String,
}

/// The driver loop and its channels.
pub struct Driver {
    planner: Planner,
    el: EngineClient,
    id: Identity,
    targets: watch::Receiver<Option<Latest<TargetUpdate>>>,
    commands: mpsc::Receiver<Command>,
    status_tx: watch::Sender<v1::EngineDriverStatus>,
    /// The served L1 refs and full L2 refs (`refs` is its cache).
    served: Served,
    /// L1 views of the newest targets received.
    views: Views,
    refs: Arc<Mutex<RefCache>>,
    nats_connected: watch::Receiver<bool>,
    metrics: Metrics,
    readiness: Readiness,
    fence: Fence,
    lease: watch::Receiver<LeaseView>,
    /// The lease as last seen by the loop (a new holding re-reads the EL's heads).
    lease_held: bool,
    /// The generation of the fence's INVALID list the planner has absorbed.
    invalid_seen: u64,
    epoch: Instant,
    retry_deadline_ms: Option<u64>,
    el_reachable: bool,
    state: v1::EngineState,
    /// Span of the newest target; forkchoice updates are its children.
    span: tracing::Span,
    /// Heads of the newest target (unsafe, safe) and when a poll observed them, until a VALID
    /// forkchoice update applies one of them (`e2e_lag_seconds` is observed once per target).
    observed: Option<(B256, B256, u64)>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").field("id", &self.id).finish_non_exhaustive()
    }
}

/// Inputs the driver is built from.
#[derive(Debug)]
pub struct DriverParts {
    /// The planner (with its config).
    pub planner: Planner,
    /// The EL client.
    pub el: EngineClient,
    /// Identity.
    pub id: Identity,
    /// Newest target, with the trace context it carried.
    pub targets: watch::Receiver<Option<Latest<TargetUpdate>>>,
    /// Operator commands.
    pub commands: mpsc::Receiver<Command>,
    /// Whether the bus is connected (for the status).
    pub nats_connected: watch::Receiver<bool>,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness (`el` condition is maintained here).
    pub readiness: Readiness,
    /// The lease decision, asked before every forkchoice update.
    pub fence: Fence,
    /// The lease as the lease task publishes it (for the status and to notice a takeover).
    pub lease: watch::Receiver<LeaseView>,
}

impl Driver {
    /// Builds the driver and the shared view of it.
    pub fn new(p: DriverParts) -> (Self, Shared) {
        let state = v1::EngineState {
            chain_id: p.id.chain_id,
            node_id: p.id.node_id.clone(),
            ..Default::default()
        };
        let (status_tx, status) = watch::channel(v1::EngineDriverStatus {
            state: Some(state.clone()),
            ..Default::default()
        });
        let served = Served::default();
        let refs = served.refs.clone();
        let shared = Shared { status, served: served.clone() };
        let d = Self {
            planner: p.planner,
            el: p.el,
            id: p.id,
            targets: p.targets,
            commands: p.commands,
            status_tx,
            served,
            views: Views::default(),
            refs,
            nats_connected: p.nats_connected,
            metrics: p.metrics,
            readiness: p.readiness,
            fence: p.fence,
            lease: p.lease,
            lease_held: false,
            invalid_seen: 0,
            epoch: Instant::now(),
            retry_deadline_ms: None,
            el_reachable: false,
            state,
            span: tracing::Span::none(),
            observed: None,
        };
        (d, shared)
    }

    /// Observes `e2e_lag_seconds` when a VALID update applied a head of the newest target.
    fn observe_e2e_lag(&mut self, head: B256) {
        if let Some((unsafe_hash, safe_hash, observed_at_ms)) = self.observed
            && (head == unsafe_hash || head == safe_hash)
        {
            self.observed = None;
            let lag_ms = lightcl_runtime::now_ms().saturating_sub(observed_at_ms);
            #[allow(clippy::cast_precision_loss)] // ms since a poll: far below 2^52
            self.metrics.e2e_lag.observe(lag_ms as f64 / 1000.0);
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Hands the INVALID heads the fence learned since the last call (from lease values, or
    /// answered to this driver) to the planner: it never sends them.
    fn absorb_invalid(&mut self) {
        if let Some(heads) = self.fence.invalid_since(&mut self.invalid_seen) {
            self.planner.remember_invalid(heads);
        }
    }

    /// Runs until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut queue: VecDeque<Action> = self.planner.start(self.now_ms()).into();
        let (mut commands_open, mut targets_open, mut nats_open) = (true, true, true);
        let mut lease_open = true;
        loop {
            self.absorb_invalid();
            while let Some(action) = queue.pop_front() {
                let Some(more) = self.execute(action, &cancel).await else {
                    return;
                };
                queue.extend(more);
            }
            self.refresh_status();
            let deadline = self.retry_deadline_ms;
            let sleep_to = self.epoch + Duration::from_millis(deadline.unwrap_or(0));
            tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                cmd = self.commands.recv(), if commands_open => match cmd {
                    Some(cmd) => queue.extend(self.command(cmd)),
                    None => commands_open = false,
                },
                changed = self.targets.changed(), if targets_open => {
                    if changed.is_err() {
                        // The bus side is gone (only at shutdown): keep retrying what we have.
                        targets_open = false;
                        continue;
                    }
                    let msg = self.targets.borrow_and_update().clone();
                    if let Some(msg) = msg {
                        queue.extend(self.on_target(msg));
                    }
                }
                changed = self.nats_connected.changed(), if nats_open => {
                    nats_open = changed.is_ok();
                }
                changed = self.lease.changed(), if lease_open => {
                    if changed.is_err() {
                        lease_open = false;
                        continue;
                    }
                    let held = self.lease.borrow_and_update().held;
                    if held && !self.lease_held {
                        // Another driver may have moved the EL meanwhile: re-read its heads,
                        // then plan (and send) for the newest target at once.
                        queue.extend(self.planner.resync(self.now_ms()));
                    }
                    self.lease_held = held;
                }
                () = tokio::time::sleep_until(sleep_to.into()), if deadline.is_some() => {
                    self.retry_deadline_ms = None;
                    let now = self.now_ms().max(deadline.unwrap_or(0));
                    queue.extend(self.planner.on_timer(now));
                }
            }
        }
    }

    fn on_target(&mut self, msg: Latest<TargetUpdate>) -> Vec<Action> {
        let TargetUpdate { target: t, observed_at_ms, l1 } = msg.message;
        self.metrics.targets_total.inc();
        if t.chain_id != self.id.chain_id {
            tracing::warn!(
                chain_id = t.chain_id,
                revision = t.revision,
                "ignoring a target of another chain"
            );
            return Vec::new();
        }
        self.views.insert(Position::of(&t), l1.unwrap_or_default());
        {
            let mut refs = self.refs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in [t.unsafe_l2, t.safe_l2, t.local_safe_l2, t.finalized_l2] {
                refs.insert(r);
            }
        }
        // One trace from the poll to the forkchoice update: continue the publisher's trace.
        let span = tracing::info_span!(
            "engine_driver.target",
            chain_id = t.chain_id,
            node_id = %self.id.node_id,
            epoch = t.epoch,
            revision = t.revision,
            unsafe_l2 = %t.unsafe_l2.id(),
            safe_l2 = %t.safe_l2.id(),
        );
        let cx = lightcl_telemetry::extract_map(&msg.trace);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
        self.span = span;
        if observed_at_ms > 0 {
            self.observed = Some((t.unsafe_l2.hash, t.safe_l2.hash, observed_at_ms));
        }
        tracing::debug!(parent: &self.span, "target received");
        let now = self.now_ms();
        self.planner.set_wall_clock(lightcl_runtime::now_ms());
        self.planner.on_target(t, now)
    }

    fn command(&mut self, cmd: Command) -> Vec<Action> {
        let now = self.now_ms();
        match cmd {
            Command::Pause(reply) => {
                tracing::warn!("paused by the operator: no forkchoice updates until resumed");
                let out = self.planner.pause();
                let _ = reply.send(true);
                out
            }
            Command::Resume(reply) => {
                tracing::info!("resumed by the operator");
                let out = self.planner.resume(now);
                let _ = reply.send(false);
                out
            }
            Command::Resync(reply) => {
                tracing::info!("resync requested: re-reading the EL's heads");
                let out = self.planner.resync(now);
                let _ = reply.send(());
                out
            }
        }
    }

    /// Executes one action; `None` when cancelled meanwhile.
    async fn execute(&mut self, action: Action, cancel: &CancellationToken) -> Option<Vec<Action>> {
        match action {
            Action::SendFcu(fc) => {
                // The fence, immediately before sending: a driver that does not hold the lease
                // right now (standby, paused or cut off from NATS past its window) sends
                // nothing. The planner hears "not sent" as a failed update and retries with
                // backoff; a takeover re-reads the EL's heads first (see `run`).
                let Some(mut window) = self.fence.window() else {
                    self.metrics.fcu_fenced_total.inc();
                    let message = self.fenced_message();
                    tracing::debug!(head = %fc.head, safe = %fc.safe, finalized = %fc.finalized, %message, "forkchoice update not sent");
                    return Some(
                        self.planner.on_fcu_answer(FcuOutcome::Error { message }, self.now_ms()),
                    );
                };
                // The INVALID heads, after the fence: a driver that has just taken the lease
                // over absorbed its predecessor's list (read before its takeover write) here,
                // before its first update. A head on it is not sent; the planner hears "not
                // sent" and, re-planning, blocks the target (alert `target_head_invalid`).
                self.absorb_invalid();
                if self.planner.is_invalid(&fc.head.hash) {
                    tracing::warn!(head = %fc.head, "forkchoice update not sent: its head is on the EL's INVALID list (lease value)");
                    let message = format!("not sent: head {} is known INVALID", fc.head);
                    return Some(
                        self.planner.on_fcu_answer(FcuOutcome::Error { message }, self.now_ms()),
                    );
                }
                let started = Instant::now();
                let span = tracing::info_span!(
                    parent: &self.span,
                    "engine_driver.fcu",
                    chain_id = self.id.chain_id,
                    node_id = %self.id.node_id,
                    head = %fc.head,
                    safe = %fc.safe,
                    finalized = %fc.finalized,
                    answer = tracing::field::Empty,
                );
                // The fence holds while the request is on its way too: one that has not left
                // when this driver's window closes (a slow connect) is abandoned, so nothing
                // leaves after it. Renewals extend the window meanwhile.
                let (outcome, reached) = {
                    let fcu = self.el.forkchoice_updated(&fc).instrument(span.clone());
                    tokio::pin!(fcu);
                    loop {
                        tokio::select! {
                            biased;
                            () = cancel.cancelled() => return None,
                            () = tokio::time::sleep(window) => match self.fence.window() {
                                Some(more) => window = more,
                                None => {
                                    tracing::warn!(head = %fc.head, "forkchoice update abandoned: this driver's lease window closed before the EL answered");
                                    let message = "abandoned: the lease window closed before the EL answered".to_owned();
                                    break (FcuOutcome::Error { message }, self.el_reachable);
                                }
                            },
                            r = &mut fcu => break r,
                        }
                    }
                };
                span.record("answer", answer_label(outcome.kind()));
                self.metrics.fcu_duration.observe(started.elapsed().as_secs_f64());
                self.metrics
                    .fcu_total
                    .get_or_create(&AnswerLabel { answer: answer_label(outcome.kind()).to_owned() })
                    .inc();
                self.set_el_reachable(reached);
                if matches!(outcome, FcuOutcome::Valid) {
                    self.observe_e2e_lag(fc.head.hash);
                }
                if matches!(outcome, FcuOutcome::Invalid { .. }) {
                    // EL-scoped: into the lease value, for every driver of this EL and restarts.
                    self.fence.learn_invalid([fc.head.hash]);
                }
                match &outcome {
                    FcuOutcome::Valid | FcuOutcome::Syncing => tracing::debug!(
                        head = %fc.head, safe = %fc.safe, finalized = %fc.finalized,
                        answer = answer_label(outcome.kind()), "forkchoice updated"
                    ),
                    other => tracing::warn!(
                        head = %fc.head, safe = %fc.safe, finalized = %fc.finalized,
                        answer = ?other, "forkchoice update not applied"
                    ),
                }
                Some(self.planner.on_fcu_answer(outcome, self.now_ms()))
            }
            Action::ReadElHeads => {
                let heads = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return None,
                    r = self.el.heads() => r.map_err(|e| e.to_string()),
                };
                match &heads {
                    Ok(h) => {
                        self.set_el_reachable(true);
                        tracing::info!(latest = %h.latest, safe = ?h.safe, finalized = ?h.finalized, "EL heads");
                    }
                    Err(e) => {
                        self.set_el_reachable(false);
                        self.metrics.el_read_errors_total.inc();
                        tracing::warn!(error = %e, el = %self.el.endpoint(), "cannot read the EL's heads");
                    }
                }
                Some(self.planner.on_el_heads(heads, self.now_ms()))
            }
            Action::ReadElBlock { number } => {
                let block = tokio::select! {
                    biased;
                    () = cancel.cancelled() => return None,
                    r = self.el.block_at(number) => r,
                };
                if let lightcl_core::engine::ElBlock::Error(e) = &block {
                    self.set_el_reachable(false);
                    self.metrics.el_read_errors_total.inc();
                    tracing::warn!(number, error = %e, "cannot read the EL's block");
                } else {
                    self.set_el_reachable(true);
                }
                Some(self.planner.on_el_block(number, block, self.now_ms()))
            }
            Action::ScheduleRetry { after_ms } => {
                self.retry_deadline_ms = Some(self.now_ms().saturating_add(after_ms));
                Some(Vec::new())
            }
            Action::PublishEngineState => {
                self.publish_state();
                Some(Vec::new())
            }
            Action::Alert(alert) => {
                let kind = alert_kind(&alert);
                self.metrics.alerts_total.get_or_create(&KindLabel { kind: kind.to_owned() }).inc();
                tracing::error!(kind, alert = ?alert, "ALERT: engine-driver refused or the EL rejected a forkchoice");
                Some(Vec::new())
            }
        }
    }

    /// Why a forkchoice update was fenced.
    fn fenced_message(&self) -> String {
        let view = self.lease.borrow().clone();
        if view.holder.is_empty() {
            format!("not sent: this driver does not hold the EL's lease {} yet", view.key)
        } else if view.holder == self.fence.me() {
            format!("not sent: the EL's lease {} was not renewed in time", view.key)
        } else {
            format!("not sent: standby, the EL's lease {} is held by {}", view.key, view.holder)
        }
    }

    fn set_el_reachable(&mut self, reachable: bool) {
        if self.el_reachable != reachable {
            self.el_reachable = reachable;
            self.readiness.set("el", reachable);
        }
    }

    /// Rebuilds the EngineState from the planner snapshot (on PublishEngineState only).
    fn publish_state(&mut self) {
        let snap = self.planner.snapshot();
        self.state = v1::EngineState::from_snapshot(
            self.id.chain_id,
            &self.id.node_id,
            &snap,
            lightcl_runtime::now_ms(),
        );
        self.metrics.applied_head.set(gauge_value(snap.applied.head.number));
        self.metrics.applied_safe.set(gauge_value(snap.applied.safe.number));
        self.metrics.applied_finalized.set(gauge_value(snap.applied.finalized.number));
        self.metrics.target_head.set(gauge_value(snap.target_head.number));
        self.metrics.lag_blocks.set(gauge_value(lag(&snap)));
        self.metrics.sync_phase.set(match snap.phase {
            Phase::Starting => 0,
            Phase::InitialSync => 1,
            Phase::Following => 2,
        });
        self.metrics.paused.set(i64::from(snap.paused));
        // Before the status changes: the KV put it triggers reads the served refs.
        self.served.update(&snap, self.planner.target(), &self.views);
        self.refresh_status();
    }

    fn refresh_status(&mut self) {
        let snap = self.planner.snapshot();
        // One borrow, cloned: two read guards of one watch at once can deadlock with a writer.
        let lease = self.lease.borrow().clone();
        let status = v1::EngineDriverStatus {
            state: Some(self.state.clone()),
            paused: snap.paused,
            ready: self.readiness.is_ready(),
            nats_connected: *self.nats_connected.borrow(),
            el_reachable: self.el_reachable,
            last_target: self.planner.target().map(v1::Target::from_core),
            lag_blocks: lag(&snap),
            lease_held: lease.held,
            lease_holder: lease.holder,
            lease_key: lease.key,
        };
        self.status_tx.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }
}

fn lag(s: &EngineSnapshot) -> u64 {
    s.target_head.number.saturating_sub(s.applied.head.number)
}

/// Metric label of an answer.
pub fn answer_label(a: FcuAnswer) -> &'static str {
    match a {
        FcuAnswer::Valid => "valid",
        FcuAnswer::Syncing => "syncing",
        FcuAnswer::Invalid => "invalid",
        FcuAnswer::InvalidForkchoiceState => "invalid_forkchoice_state",
        FcuAnswer::Error => "error",
    }
}

fn alert_kind(a: &Alert) -> &'static str {
    match a {
        Alert::Refused { .. } => "refused",
        Alert::InvalidHead { .. } => "invalid_head",
        Alert::TargetHeadInvalid { .. } => "target_head_invalid",
        Alert::ForkchoiceStateRejected { .. } => "forkchoice_state_rejected",
    }
}
