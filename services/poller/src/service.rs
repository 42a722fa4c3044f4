//! The poll loop (docs/architecture.md#poll-loop): start-up checks, then single-flight polls,
//! each publishing its status when [`Publication::decide`] says so.
//!
//! When the next poll starts: on the fixed cadence ([`next_delay`]), or with `--poll.phase-lock`
//! when [`PhaseLock`] plans it from the unsafe heads read (just after the next head should be
//! answerable), never later than the fixed cadence would. A failed poll backs off as on the
//! fixed cadence and restarts the learning; a pause forgets what was learned.
//!
//! Start-up retries NATS (topology) and the source's chain check until both succeed; a source
//! serving another chain *at start-up* ends the service with [`SourceError::WrongChain`] (a
//! configuration error). A poll or publish failure backs off exponentially with jitter (capped)
//! and is logged once per distinct error; nothing that failed to parse is ever published.
//!
//! While running, the chain is checked again as [`ChainGuard`] decides: every
//! `--source.chain-check-interval`, and on the first successful poll after a failed one (the
//! source was unreachable or erroring and may have come back as another node), in both cases
//! *after* reading the status and *before* publishing it. A source that now serves another
//! chain is an incident, not a configuration error: its statuses are dropped, an error names
//! both chain ids, readiness `chain` is cleared, `chain_mismatches_total` and the `wrong_chain`
//! gauge record it, and the poller keeps polling and re-checking with the error backoff,
//! publishing again once a check finds `--chain-id`.

use std::time::Duration;

use lightcl_bus::{Bus, Publisher, status_content_hash, status_msg_id, subjects};
use lightcl_core::SyncStatus;
use lightcl_core::phase::{Head, Kind, PhaseLock, Poll};
use lightcl_core::poll::{ChainGuard, ChainVerdict, PollDecision, Publication, next_delay};
use lightcl_proto::{names, v1};
use lightcl_runtime::{Backoff, Readiness, now_ms};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::source::{Source, SourceError};

/// Everything the loop needs.
#[derive(Debug)]
pub struct Parts {
    /// L2 chain id.
    pub chain_id: u64,
    /// Source id (subject token, same on every replica of one source).
    pub source_id: String,
    /// Source URL as shown to operators (no credentials).
    pub source_url: String,
    /// The source client.
    pub source: Source,
    /// NATS.
    pub bus: Bus,
    /// Publisher (PubAck + same-id retries).
    pub publisher: Publisher,
    /// Time between poll starts (the longest wait between two polls).
    pub poll_interval: Duration,
    /// Phase-locked polling on.
    pub phase_lock: bool,
    /// Heartbeat of an unchanged status.
    pub heartbeat: Duration,
    /// Cap of the error backoff.
    pub max_backoff: Duration,
    /// Longest time between two chain checks while polls succeed.
    pub chain_check_interval: Duration,
    /// Metrics.
    pub metrics: Metrics,
    /// Readiness conditions `nats`, `source` and `chain`.
    pub readiness: Readiness,
    /// Published status for the control API.
    pub status: watch::Sender<v1::PollerStatus>,
    /// Pause switch (from the control API).
    pub paused: watch::Receiver<bool>,
}

/// The running loop.
#[derive(Debug)]
pub struct Service {
    p: Parts,
    publication: Publication,
    chain: ChainGuard,
    /// Origin of the monotonic ms the chain guard works in.
    origin: Instant,
    subject: String,
    poll_seq: u64,
    backoff: Backoff,
    /// Poll timing; `None`: always the fixed cadence.
    phase: Option<PhaseLock>,
    /// Wall clock when the last poll's request was sent, and the unsafe head it read.
    poll_sent_ms: u64,
    read_head: Option<Head>,
    last_status: Option<SyncStatus>,
    last_poll_ms: u64,
    last_success_ms: u64,
    polls_ok: u64,
    polls_failed: u64,
    published: u64,
    last_error: String,
}

/// What one poll did.
enum Outcome {
    /// Status read (and published, when due).
    Ok,
    /// The poll failed: back off.
    Failed,
    /// The status was read but not stored: retry on the normal cadence.
    PublishFailed,
}

impl Service {
    /// A loop over `parts`.
    pub fn new(parts: Parts) -> Self {
        let subject = subjects::status(parts.chain_id, &parts.source_id);
        let backoff =
            Backoff::new(parts.poll_interval.max(Duration::from_millis(50)), parts.max_backoff);
        Self {
            publication: Publication::new(parts.heartbeat),
            chain: ChainGuard::new(parts.chain_id, parts.chain_check_interval),
            origin: Instant::now(),
            subject,
            poll_seq: 0,
            backoff,
            phase: parts
                .phase_lock
                .then(|| PhaseLock::new(parts.poll_interval, rand::random::<u64>())),
            poll_sent_ms: 0,
            read_head: None,
            last_status: None,
            last_poll_ms: 0,
            last_success_ms: 0,
            polls_ok: 0,
            polls_failed: 0,
            published: 0,
            last_error: String::new(),
            p: parts,
        }
    }

    /// Runs until `cancel` fires. Returns an error only when the source serves another chain at
    /// start-up (a change while running is refused and waited out instead).
    /// (The NATS connection state is mirrored into readiness `nats` by the caller's shell.)
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), SourceError> {
        match self.start_up(&cancel).await {
            Err(e) => Err(e),
            Ok(false) => Ok(()),
            Ok(true) => {
                self.poll_loop(&cancel).await;
                Ok(())
            }
        }
    }

    /// Ensures the topology and checks the chain, retrying both. `Ok(false)`: cancelled.
    async fn start_up(&mut self, cancel: &CancellationToken) -> Result<bool, SourceError> {
        let mut topology = false;
        let mut chain = false;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            if !topology {
                // A JetStream request waits for a (re)connection: never let it hold up shutdown.
                let attempt = tokio::select! {
                    () = cancel.cancelled() => return Ok(false),
                    r = self.p.bus.ensure_topology() => r,
                };
                match attempt {
                    Ok(()) => {
                        topology = true;
                        self.p.readiness.set("nats", true);
                    }
                    Err(e) => self.note_error(format!("NATS not ready: {e}")),
                }
            }
            if !chain {
                let checked_at = self.mono_ms(Instant::now());
                let attempt = tokio::select! {
                    () = cancel.cancelled() => return Ok(false),
                    r = self.p.source.check_chain(self.p.chain_id) => r,
                };
                match attempt {
                    Ok(()) => {
                        chain = true;
                        self.p.metrics.chain_check("ok");
                        let verdict = self.chain.checked(self.p.chain_id, checked_at);
                        debug_assert_eq!(verdict, ChainVerdict::Confirmed);
                        self.p.readiness.set("chain", true);
                    }
                    Err(e @ SourceError::WrongChain { .. }) => {
                        self.p.metrics.chain_check("wrong_chain");
                        tracing::error!(source = %self.p.source_url, error = %e, "refusing to follow");
                        return Err(e);
                    }
                    Err(e) => {
                        self.p.metrics.chain_check("error");
                        // A failed chain check is a failed request to the source: counted like
                        // a failed poll, so the error kinds add up to polls{result="error"}.
                        self.polls_failed += 1;
                        self.p.metrics.poll("error");
                        self.p.metrics.poll_error(e.kind());
                        self.note_error(format!("chain check: {e}"));
                    }
                }
            }
            self.publish_status();
            if topology && chain {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(false),
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
        tracing::info!(
            chain_id = self.p.chain_id,
            source_id = %self.p.source_id,
            source = %self.p.source_url,
            interval = ?self.p.poll_interval,
            phase_lock = self.phase.is_some(),
            heartbeat = ?self.p.heartbeat,
            chain_check_interval = ?self.p.chain_check_interval,
            "poller started"
        );
        Ok(true)
    }

    async fn poll_loop(&mut self, cancel: &CancellationToken) {
        let mut paused = self.p.paused.clone();
        let mut next = Instant::now();
        loop {
            let is_paused = *paused.borrow_and_update();
            self.p.metrics.paused.set(i64::from(is_paused));
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Ok(()) = paused.changed() => {
                    let now_paused = *paused.borrow();
                    tracing::info!(paused = now_paused, "pause switch changed");
                    // Resume polls at once, relearning the block phase.
                    next = Instant::now();
                    if let Some(phase) = self.phase.as_mut() {
                        phase.reset();
                        self.p.metrics.phase_lock_mode.set(phase.mode().gauge());
                    }
                    self.publish_status();
                }
                () = tokio::time::sleep_until(next), if !is_paused => {
                    let started = Instant::now();
                    let outcome = tokio::select! {
                        biased;
                        // An abandoned poll or publish is harmless: the next one repeats it
                        // with the same message id.
                        () = cancel.cancelled() => break,
                        o = self.poll_once(started) => o,
                    };
                    let failed = match outcome {
                        Outcome::Ok | Outcome::PublishFailed => {
                            self.backoff.reset();
                            None
                        }
                        Outcome::Failed => Some(self.backoff.next_delay()),
                    };
                    next = Instant::now() + self.next_wait(started, failed);
                    self.publish_status();
                }
            }
        }
    }

    /// How long to wait before the next poll: the fixed cadence, or the phase lock's plan when
    /// that is sooner. A failed poll (`failed_backoff`) is reported to the lock as such and
    /// waits as on the fixed cadence.
    fn next_wait(&mut self, started: Instant, failed_backoff: Option<Duration>) -> Duration {
        let cadence = next_delay(self.p.poll_interval, started.elapsed(), failed_backoff);
        let Some(phase) = self.phase.as_mut() else { return cadence };
        let head = if failed_backoff.is_some() { None } else { self.read_head };
        let before = phase.mode();
        let plan = phase.step(Poll { sent_ms: self.poll_sent_ms, head });
        let mode = phase.mode();
        self.p.metrics.phase_lock_mode.set(mode.gauge());
        if mode != before {
            tracing::debug!(
                mode = mode.as_str(),
                block_time = ?phase.block_time(),
                answerable_offset_ms = phase.offset_ms(),
                "poll phase lock"
            );
        }
        match plan.kind {
            Kind::Cadence => cadence,
            Kind::Aimed | Kind::Probe | Kind::FollowUp => {
                Duration::from_millis(plan.at_ms.saturating_sub(now_ms())).min(cadence)
            }
        }
    }

    /// One poll, in span `poller.poll`; publishes inside the span so the trace context rides
    /// in the message headers.
    async fn poll_once(&mut self, started: Instant) -> Outcome {
        self.poll_seq += 1;
        let span = tracing::info_span!(
            "poller.poll",
            otel.kind = "producer",
            chain_id = self.p.chain_id,
            source_id = %self.p.source_id,
            poll_seq = self.poll_seq,
            unsafe_l2 = tracing::field::Empty,
            safe_l2 = tracing::field::Empty,
            finalized_l2 = tracing::field::Empty,
            publish = tracing::field::Empty,
            error.kind = tracing::field::Empty,
        );
        self.poll_inner(&span, started).instrument(span.clone()).await
    }

    async fn poll_inner(&mut self, span: &tracing::Span, started: Instant) -> Outcome {
        // One monotonic stamp for the whole poll, its scheduled start: the chain guard measures
        // its interval between poll starts, which are at least --poll-interval apart.
        let poll_ms = self.mono_ms(started);
        self.read_head = None;
        self.poll_sent_ms = now_ms();
        let t0 = Instant::now();
        let result = self.p.source.sync_status().await;
        self.p.metrics.poll_duration.observe(t0.elapsed().as_secs_f64());
        let now = now_ms();
        self.last_poll_ms = now;
        let status = match result {
            Ok(s) => s,
            Err(e) => {
                // The source may come back as another node: check before the next publish.
                self.chain.request_failed();
                self.poll_failed(span, &e, e.to_string());
                return Outcome::Failed;
            }
        };
        self.read_head =
            Some(Head { number: status.unsafe_l2.number, timestamp: status.unsafe_l2.timestamp });
        // Checked after the read, so a passing check also covers this status.
        if self.chain.check_due(poll_ms) && !self.check_chain(span, poll_ms).await {
            return Outcome::Failed;
        }
        span.record("unsafe_l2", status.unsafe_l2.number);
        span.record("safe_l2", status.safe_l2.number);
        span.record("finalized_l2", status.finalized_l2.number);
        self.polls_ok += 1;
        self.last_success_ms = now;
        self.p.metrics.poll("ok");
        self.p.metrics.observed(&status);
        self.p.readiness.set("source", true);

        let content = status_content_hash(&status);
        let outcome = match self.publication.decide(&content, now) {
            PollDecision::Skip => {
                span.record("publish", "skip");
                Outcome::Ok
            }
            PollDecision::Publish { slot, reason } => {
                span.record("publish", reason.as_str());
                let msg = v1::RawStatus::from_core(
                    self.p.chain_id,
                    &self.p.source_id,
                    &status,
                    now,
                    self.poll_seq,
                );
                let id = status_msg_id(self.p.chain_id, &self.p.source_id, &status, slot);
                match self
                    .p
                    .publisher
                    .publish(&self.subject, names::RAW_STATUS, &msg, Some(&id))
                    .await
                {
                    Ok(p) => {
                        self.p.metrics.publish(if p.duplicate { "duplicate" } else { "ok" });
                        self.publication.stored(content, slot);
                        self.published += 1;
                        tracing::debug!(
                            sequence = p.sequence,
                            duplicate = p.duplicate,
                            reason = reason.as_str(),
                            unsafe_l2 = status.unsafe_l2.number,
                            safe_l2 = status.safe_l2.number,
                            "status published"
                        );
                        Outcome::Ok
                    }
                    Err(e) => {
                        // Not stored: decided again on the next poll. No poll backoff: the
                        // publisher's PubAck timeouts already pace the retries, and the
                        // source is fine, so polling resumes at full speed when NATS returns.
                        span.record("error.kind", "publish");
                        self.p.metrics.publish("error");
                        self.note_error(format!("publishing status: {e}"));
                        Outcome::PublishFailed
                    }
                }
            }
        };
        if matches!(outcome, Outcome::Ok) && !self.last_error.is_empty() {
            tracing::info!(after = %self.last_error, "source polls and publishes recovered");
            self.last_error.clear();
        }
        self.last_status = Some(status);
        outcome
    }

    /// Re-checks the source's chain for the poll that started at `poll_ms` (its status already
    /// read); whether that status may be published. A failed or refused check counts as a
    /// failed poll (kinds as for polls; another chain is `wrong_chain`).
    async fn check_chain(&mut self, span: &tracing::Span, poll_ms: u64) -> bool {
        let expected = self.p.chain_id;
        let actual = match self.p.source.chain_id().await {
            Ok(actual) => actual,
            Err(e) => {
                self.chain.request_failed();
                self.p.metrics.chain_check("error");
                self.poll_failed(span, &e, format!("chain check: {e}"));
                return false;
            }
        };
        match self.chain.checked(actual, poll_ms) {
            ChainVerdict::Confirmed => {
                self.p.metrics.chain_check("ok");
                true
            }
            ChainVerdict::Resumed { was } => {
                self.p.metrics.chain_check("ok");
                self.p.metrics.wrong_chain.set(0);
                self.p.readiness.set("chain", true);
                tracing::warn!(
                    source = %self.p.source_url,
                    expected_chain_id = expected,
                    previous_chain_id = was,
                    "the source serves --chain-id {expected} again (was chain {was}); publishing resumes"
                );
                true
            }
            verdict
            @ (ChainVerdict::Changed { actual } | ChainVerdict::StillRefused { actual }) => {
                self.p.metrics.chain_check("wrong_chain");
                let e = SourceError::WrongChain { expected, actual };
                if let ChainVerdict::Changed { .. } = verdict {
                    self.p.metrics.chain_mismatches.inc();
                    self.p.metrics.wrong_chain.set(1);
                    self.p.readiness.set("chain", false);
                    tracing::error!(
                        source = %self.p.source_url,
                        expected_chain_id = expected,
                        actual_chain_id = actual,
                        "the source now serves L2 chain {actual}, expected --chain-id {expected}: \
                         refusing it (nothing is published) and re-checking with backoff"
                    );
                    // Logged above: `note_error` below only records it.
                    self.last_error = e.to_string();
                }
                self.poll_failed(span, &e, e.to_string());
                false
            }
        }
    }

    /// Counts and records a failed poll (or chain check) and clears readiness `source`.
    fn poll_failed(&mut self, span: &tracing::Span, e: &SourceError, message: String) {
        span.record("error.kind", e.kind());
        self.polls_failed += 1;
        self.p.metrics.poll("error");
        self.p.metrics.poll_error(e.kind());
        self.p.readiness.set("source", false);
        self.note_error(message);
    }

    /// `at` in monotonic milliseconds since the service was created (for the chain guard).
    fn mono_ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// Logs an error once per distinct message (repeats are debug), and keeps it for GetStatus.
    fn note_error(&mut self, e: String) {
        if e == self.last_error {
            tracing::debug!(error = %e, "still failing");
        } else {
            tracing::warn!(error = %e, source = %self.p.source_url, "poll failed; backing off");
            self.last_error = e;
        }
    }

    fn publish_status(&self) {
        let s = v1::PollerStatus {
            chain_id: self.p.chain_id,
            source_id: self.p.source_id.clone(),
            source_url: self.p.source_url.clone(),
            paused: *self.p.paused.borrow(),
            ready: self.p.readiness.is_ready(),
            nats_connected: self.p.bus.is_connected(),
            last_status: self.last_status.as_ref().map(v1::SyncStatus::from),
            last_poll_ms: self.last_poll_ms,
            last_success_ms: self.last_success_ms,
            polls_ok: self.polls_ok,
            polls_failed: self.polls_failed,
            published: self.published,
            last_error: self.last_error.clone(),
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
