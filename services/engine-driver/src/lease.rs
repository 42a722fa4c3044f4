//! The single-writer lease of this driver's EL (docs/architecture.md#single-writer).
//!
//! [`LeaseTask`] performs what the pure [`lightcl_core::lease::Lease`] decides: every tick it
//! attempts the compare-and-set write `Lease::tick` returns (take over an absent or expired
//! key, renew a held one) on the key `lease.<chain>.<el_id>` of the `lightcl-engine` bucket, and
//! feeds the result back (`written`, `write_failed`), and it feeds the key's changes from a KV
//! watch (plus a get at start and after a lost write) into `Lease::observe`.
//!
//! [`Fence`] is the shared decision the driver loop asks immediately before every forkchoice
//! update (`Lease::may_send` at that moment, on the same monotonic clock): a driver whose lease
//! window closed — it was paused, partitioned from NATS, or someone else took over — sends
//! nothing, even an update it had already planned.
//!
//! The lease value also carries the EL's INVALID heads (EL-scoped: every driver of that EL reads
//! them). The fence keeps the list ([`Fence::learn_invalid`]): the lease task adds every list it
//! reads from the key (at start, on every watch update, after a lost write, and from the key's
//! history before taking over a released key), the driver loop adds the heads its EL answers
//! INVALID, and the holder writes the list with every renewal — at once, ahead of schedule,
//! when the list grew. The driver loop hands the list to its planner before every forkchoice
//! update (after asking the fence), so a driver that just took over has absorbed its
//! predecessor's list before its first update.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy_primitives::B256;
use futures::{Stream, StreamExt};
use lightcl_bus::{Bus, BusError, LeaseEntry, LeaseStore, LeaseValue};
use lightcl_core::lease::{InvalidHeads, Lease, LeaseConfig, Stored};
use lightcl_proto::v1;
use lightcl_runtime::{Backoff, Readiness};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ChangeLabel, ElLabel, Metrics};

/// The readiness condition of the lease: set while this driver holds it.
pub const READINESS: &str = "lease";

/// The timing of the lease decision from `--lease.ttl` and `--lease.renew`: the holder stops
/// sending 1 s (at most a quarter of the ttl) before its lease could expire.
pub fn lease_config(ttl: Duration, renew: Duration) -> LeaseConfig {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    LeaseConfig { ttl_ms: ms(ttl), renew_ms: ms(renew), margin_ms: (ms(ttl) / 4).min(1_000) }
}

/// This process's instance id, the lease holder's name: `<node_id>-<8 random hex digits>`, new
/// at every start. A restarted driver is another holder: it cannot tell its dead predecessor
/// from a live twin with the same node id, so it waits for the old lease to expire.
pub fn instance_id(node_id: &str) -> String {
    format!("{node_id}-{:08x}", rand::rng().random::<u32>())
}

/// The lease decision shared by the lease task and the driver loop, on one monotonic clock.
#[derive(Debug, Clone)]
pub struct Fence {
    lease: Arc<Mutex<Lease>>,
    invalid: Arc<Mutex<KnownInvalid>>,
    epoch: Instant,
}

/// The EL's INVALID heads as this driver knows them.
#[derive(Debug, Default)]
struct KnownInvalid {
    heads: InvalidHeads,
    /// Bumped by every change of `heads`.
    generation: u64,
    /// The generation the last successful lease write stored.
    written: u64,
}

impl Fence {
    /// A fence over a fresh lease of instance `me` (holds nothing yet).
    pub fn new(me: &str, cfg: LeaseConfig) -> Self {
        Self {
            lease: Arc::new(Mutex::new(Lease::new(me, cfg, 0))),
            invalid: Arc::new(Mutex::new(KnownInvalid::default())),
            epoch: Instant::now(),
        }
    }

    /// Adds heads the EL answered INVALID (to this driver, or to another driver of the EL whose
    /// lease value listed them); the holder stores them with its next lease write, at once.
    pub fn learn_invalid(&self, heads: impl IntoIterator<Item = B256>) {
        let mut k = self.lock_invalid();
        let mut grew = false;
        for h in heads {
            grew |= k.heads.insert(h);
        }
        if grew {
            k.generation += 1;
        }
    }

    /// The known INVALID heads, oldest first, when they changed since generation `seen` (which
    /// is then moved on).
    pub fn invalid_since(&self, seen: &mut u64) -> Option<Vec<B256>> {
        let k = self.lock_invalid();
        (k.generation != *seen).then(|| {
            *seen = k.generation;
            k.heads.iter().copied().collect()
        })
    }

    /// The list to store with a lease write and its generation.
    fn invalid_to_write(&self) -> (Vec<Vec<u8>>, u64) {
        let k = self.lock_invalid();
        (k.heads.iter().map(|h| h.to_vec()).collect(), k.generation)
    }

    /// True when the list changed since the last lease write stored it.
    fn invalid_unwritten(&self) -> bool {
        let k = self.lock_invalid();
        k.generation != k.written
    }

    /// A lease write stored the list of `generation`.
    fn invalid_written(&self, generation: u64) {
        let mut k = self.lock_invalid();
        k.written = k.written.max(generation);
    }

    fn lock_invalid(&self) -> MutexGuard<'_, KnownInvalid> {
        self.invalid.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Monotonic milliseconds since this fence was made.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// True while this driver may send a forkchoice update, at this very moment.
    pub fn may_send(&self) -> bool {
        let now = self.now_ms();
        self.lock().may_send(now)
    }

    /// How long this driver may still send from now (`None`: not at all). Renewals extend it:
    /// ask again when it runs out.
    pub fn window(&self) -> Option<Duration> {
        let now = self.now_ms();
        let until = self.lock().send_until()?;
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// This driver's instance id.
    pub fn me(&self) -> String {
        self.lock().me().to_owned()
    }

    fn lock(&self) -> MutexGuard<'_, Lease> {
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The lease as the status and the driver loop see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// This driver may send (it holds the lease and its window is open).
    pub held: bool,
    /// The holder's instance id as last seen (empty: none seen).
    pub holder: String,
    /// The lease key.
    pub key: String,
}

/// Who contends for which lease.
#[derive(Debug, Clone)]
pub struct LeaseIdentity {
    /// `--chain-id`.
    pub chain_id: u64,
    /// `--node-id`.
    pub node_id: String,
    /// The EL's lease id ([`lightcl_bus::el_lease_id`]).
    pub el_id: String,
    /// This process's instance id ([`instance_id`]).
    pub me: String,
}

type EntryStream = Pin<Box<dyn Stream<Item = Result<LeaseEntry, BusError>> + Send>>;

/// The lease's I/O: writes, the watch, readiness `lease`, the lease metrics and the release at
/// shutdown. Run it as a critical task ([`LeaseTask::run`]).
pub struct LeaseTask {
    bus: Bus,
    id: LeaseIdentity,
    key: String,
    renew: Duration,
    fence: Fence,
    view_tx: watch::Sender<LeaseView>,
    readiness: Readiness,
    metrics: Metrics,
    store: Option<LeaseStore>,
    /// The highest revision of the key seen or written: older reads are stale, not fed.
    last_revision: u64,
    held: bool,
    /// The last problem logged at warn level (the same one again is logged at debug).
    last_warning: Option<String>,
}

impl std::fmt::Debug for LeaseTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseTask").field("key", &self.key).field("id", &self.id).finish()
    }
}

impl LeaseTask {
    /// The task, the fence the driver loop asks, and the view for the status.
    pub fn new(
        bus: Bus,
        id: LeaseIdentity,
        cfg: LeaseConfig,
        readiness: Readiness,
        metrics: Metrics,
    ) -> (Self, Fence, watch::Receiver<LeaseView>) {
        let key = lightcl_bus::subjects::lease_key(id.chain_id, &id.el_id);
        let fence = Fence::new(&id.me, cfg);
        let (view_tx, view) =
            watch::channel(LeaseView { held: false, holder: String::new(), key: key.clone() });
        readiness.set(READINESS, false);
        metrics.lease_held.get_or_create(&ElLabel { el: id.el_id.clone() }).set(0);
        let task = Self {
            bus,
            id,
            key,
            renew: Duration::from_millis(cfg.renew_ms),
            fence: fence.clone(),
            view_tx,
            readiness,
            metrics,
            store: None,
            last_revision: 0,
            held: false,
            last_warning: None,
        };
        (task, fence, view)
    }

    /// How often the decision is ticked: every 250 ms, or twice per renewal when that is
    /// shorter.
    fn tick_every(&self) -> Duration {
        (self.renew / 2).clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    /// The bound of one write, get or watch creation: one renewal period (0.1 … 2 s). A write
    /// that takes longer counts as failed: it extends nothing.
    fn op_timeout(&self) -> Duration {
        self.renew.clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    /// Runs until `cancel`, then fences this driver and releases the lease if it holds it.
    /// Never fails: NATS may be down at start or go away; the lease then lapses by itself.
    pub async fn run(mut self, cancel: CancellationToken) {
        tracing::info!(key = %self.key, instance = %self.id.me, "single-writer lease: contending");
        let mut interval = tokio::time::interval(self.tick_every());
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut connection = self.bus.connection();
        let mut generation = connection.borrow_and_update().generation;
        let mut connection_open = true;
        let mut watch: Option<EntryStream> = None;
        let mut open_backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut open_at = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                entry = next_entry(&mut watch) => match entry {
                    Some(Ok(e)) => {
                        self.observe(&e);
                    }
                    Some(Err(e)) => {
                        self.warn(format!("lease watch failed: {e}"));
                        watch = None;
                    }
                    None => {
                        self.warn("lease watch ended".to_owned());
                        watch = None;
                    }
                },
                changed = connection.changed(), if connection_open => {
                    if changed.is_err() {
                        connection_open = false;
                        continue;
                    }
                    let g = connection.borrow_and_update().generation;
                    if g != generation {
                        // A restarted server may have forgotten the watch's consumer: a new one
                        // (and a fresh read) on the next tick.
                        generation = g;
                        watch = None;
                    }
                }
                _ = interval.tick() => {
                    if self.bus.is_connected() {
                        if watch.is_none() && Instant::now() >= open_at {
                            watch = self.open_watch().await;
                            if watch.is_some() {
                                open_backoff.reset();
                            } else {
                                open_at = Instant::now() + open_backoff.next_delay();
                            }
                        }
                        self.write_if_due().await;
                    }
                }
            }
            self.publish_view();
        }
        self.release().await;
    }

    /// The key as read (a get or the watch), unless older than what this task already knows.
    fn observe(&mut self, e: &LeaseEntry) -> Option<Stored> {
        if e.revision < self.last_revision {
            return None;
        }
        self.last_revision = e.revision;
        self.absorb(e);
        let stored = stored_of(e);
        let now = self.fence.now_ms();
        self.fence.lock().observe(stored.clone(), now);
        Some(stored)
    }

    /// Adds the INVALID heads a read value lists to the fence's list.
    fn absorb(&self, e: &LeaseEntry) {
        if let LeaseValue::Held(l) = &e.value {
            self.fence.learn_invalid(invalid_heads_of(l, &self.key));
        }
    }

    /// Opens the store (once), reads the key and starts the watch; `None` (logged) when any of
    /// it fails.
    async fn open_watch(&mut self) -> Option<EntryStream> {
        let limit = self.op_timeout();
        if self.store.is_none() {
            let js = self.bus.jetstream();
            let open = LeaseStore::open(&js, self.bus.replicas(), self.id.chain_id, &self.id.el_id);
            // Opening may look up and converge the bucket: a few API requests.
            match tokio::time::timeout(limit * 3, open).await {
                Ok(Ok(s)) => self.store = Some(s),
                Ok(Err(e)) => {
                    self.warn(format!("cannot open the lease's KV bucket: {e}"));
                    return None;
                }
                Err(_) => {
                    self.warn("opening the lease's KV bucket timed out".to_owned());
                    return None;
                }
            }
        }
        let store = self.store.clone()?;
        match tokio::time::timeout(limit, store.get()).await {
            Ok(Ok(Some(e))) => {
                self.observe(&e);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                self.warn(format!("cannot read the lease: {e}"));
                return None;
            }
            Err(_) => {
                self.warn("reading the lease timed out".to_owned());
                return None;
            }
        }
        match tokio::time::timeout(limit, store.watch()).await {
            Ok(Ok(w)) => {
                self.last_warning = None;
                Some(Box::pin(w))
            }
            Ok(Err(e)) => {
                self.warn(format!("cannot watch the lease: {e}"));
                None
            }
            Err(_) => {
                self.warn("starting the lease watch timed out".to_owned());
                None
            }
        }
    }

    /// Attempts the write the decision asks for now, if any, and feeds its result back.
    async fn write_if_due(&mut self) {
        let Some(store) = self.store.clone() else { return };
        let limit = self.op_timeout();
        let unwritten = self.fence.invalid_unwritten();
        let now = self.fence.now_ms();
        let write = {
            let mut l = self.fence.lock();
            // A grown INVALID list is stored at once, not at the next scheduled renewal.
            l.tick(now).or_else(|| if unwritten { l.renew_now(now) } else { None })
        };
        let Some(write) = write else { return };
        if write.expect == 0 {
            // Taking over an absent key: it may have been released (deleted) by a holder whose
            // value listed INVALID heads. Read them from the key's history first; without them,
            // no takeover.
            match tokio::time::timeout(limit, store.held_history()).await {
                Ok(Ok(values)) => {
                    for l in &values {
                        self.fence.learn_invalid(invalid_heads_of(l, &self.key));
                    }
                }
                Ok(Err(e)) => {
                    self.warn(format!("cannot read the lease's history before taking it: {e}"));
                    let now = self.fence.now_ms();
                    self.fence.lock().write_failed(None, now);
                    return;
                }
                Err(_) => {
                    self.warn("reading the lease's history timed out".to_owned());
                    let now = self.fence.now_ms();
                    self.fence.lock().write_failed(None, now);
                    return;
                }
            }
        }
        let (invalid_heads, generation) = self.fence.invalid_to_write();
        let value = v1::EngineLease {
            holder: self.id.me.clone(),
            node_id: self.id.node_id.clone(),
            chain_id: self.id.chain_id,
            el_id: self.id.el_id.clone(),
            written_at_ms: lightcl_runtime::now_ms(),
            invalid_heads,
        };
        let result = tokio::time::timeout(limit, store.write(&value, write.expect)).await;
        match result {
            Ok(Ok(revision)) => {
                self.last_revision = self.last_revision.max(revision);
                self.fence.invalid_written(generation);
                let now = self.fence.now_ms();
                self.fence.lock().written(revision, now);
            }
            Ok(Err(BusError::WrongLastSequence { .. })) => {
                // Someone else wrote the key since we last saw it: read what is there now.
                let current = match tokio::time::timeout(limit, store.get()).await {
                    Ok(Ok(Some(e))) if e.revision >= self.last_revision => {
                        self.last_revision = e.revision;
                        self.absorb(&e);
                        Some(stored_of(&e))
                    }
                    _ => None,
                };
                tracing::debug!(expect = write.expect, current = ?current, "lease write lost");
                let now = self.fence.now_ms();
                self.fence.lock().write_failed(current, now);
            }
            Ok(Err(e)) => {
                self.warn(format!("lease write failed: {e}"));
                let now = self.fence.now_ms();
                self.fence.lock().write_failed(None, now);
            }
            Err(_) => {
                self.warn(format!("lease write timed out after {limit:?}"));
                let now = self.fence.now_ms();
                self.fence.lock().write_failed(None, now);
            }
        }
    }

    /// Publishes the view (readiness, metrics, status), logging acquisitions and losses.
    fn publish_view(&mut self) {
        let now = self.fence.now_ms();
        let (held, holder) = {
            let l = self.fence.lock();
            (l.may_send(now), l.holder().unwrap_or_default().to_owned())
        };
        if held != self.held {
            self.held = held;
            self.readiness.set(READINESS, held);
            self.set_held_gauge(held);
            let change = if held { "acquired" } else { "lost" };
            let label = ChangeLabel { el: self.id.el_id.clone(), change: change.to_owned() };
            self.metrics.lease_changes_total.get_or_create(&label).inc();
            if held {
                tracing::info!(key = %self.key, instance = %self.id.me, "lease acquired: this driver now sends forkchoice updates to the EL");
            } else {
                tracing::warn!(key = %self.key, holder = %holder, "lease lost: no forkchoice updates from this driver until it holds the lease again");
            }
        }
        let previous = self.view_tx.borrow().holder.clone();
        if !held && holder != previous && !holder.is_empty() && holder != self.id.me {
            tracing::info!(key = %self.key, holder = %holder, "standby: another driver holds this EL's lease");
        }
        self.view_tx.send_if_modified(|v| {
            let changed = v.held != held || v.holder != holder;
            v.held = held;
            v.holder = holder;
            changed
        });
    }

    /// Shutdown: fence this driver first (from now on it sends nothing), then delete the key
    /// if this driver holds it, so that a standby takes over at once instead of after the ttl.
    async fn release(&mut self) {
        let now = self.fence.now_ms();
        let revision = {
            let mut l = self.fence.lock();
            let revision = match l.stored() {
                Stored::Held { revision, holder } if *holder == self.id.me => Some(*revision),
                _ => None,
            };
            l.observe(Stored::Absent, now);
            revision
        };
        self.readiness.set(READINESS, false);
        self.set_held_gauge(false);
        let (Some(revision), Some(store)) = (revision, self.store.clone()) else { return };
        if !self.bus.is_connected() {
            tracing::warn!(key = %self.key, "NATS unreachable at shutdown: the lease expires by itself");
            return;
        }
        match tokio::time::timeout(Duration::from_secs(1), store.release(revision)).await {
            Ok(Ok(())) => tracing::info!(key = %self.key, "lease released"),
            Ok(Err(e)) => {
                tracing::warn!(key = %self.key, error = %e, "lease not released; it expires by itself")
            }
            Err(_) => {
                tracing::warn!(key = %self.key, "releasing the lease timed out; it expires by itself")
            }
        }
    }

    fn set_held_gauge(&self, held: bool) {
        let label = ElLabel { el: self.id.el_id.clone() };
        self.metrics.lease_held.get_or_create(&label).set(i64::from(held));
    }

    fn warn(&mut self, message: String) {
        if self.last_warning.as_ref() == Some(&message) {
            tracing::debug!(key = %self.key, "{message}");
        } else {
            tracing::warn!(key = %self.key, "{message}");
            self.last_warning = Some(message);
        }
    }
}

/// The next entry of the watch, or never when there is none.
async fn next_entry(watch: &mut Option<EntryStream>) -> Option<Result<LeaseEntry, BusError>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The INVALID heads a lease value lists, oldest first; an entry that is not 32 bytes long is
/// skipped with a warning (a corrupt or foreign value must not stop the driver).
fn invalid_heads_of(l: &v1::EngineLease, key: &str) -> Vec<B256> {
    l.invalid_heads
        .iter()
        .filter_map(|h| {
            let head = B256::try_from(h.as_slice()).ok();
            if head.is_none() {
                tracing::warn!(%key, holder = %l.holder, len = h.len(), "lease value lists an INVALID head that is not 32 bytes long: skipped");
            }
            head
        })
        .collect()
}

/// The decision's view of a read: removed is absent, anything else is held (an undecodable value
/// by an unknown holder, until it expires).
fn stored_of(e: &LeaseEntry) -> Stored {
    match &e.value {
        LeaseValue::Removed => Stored::Absent,
        LeaseValue::Held(_) | LeaseValue::Undecodable(_) => {
            Stored::Held { revision: e.revision, holder: e.holder().unwrap_or_default().to_owned() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_a_second_at_most_a_quarter_of_the_ttl() {
        let c = lease_config(Duration::from_secs(6), Duration::from_millis(1_500));
        assert_eq!(c, LeaseConfig::default());
        let c = lease_config(Duration::from_secs(2), Duration::from_millis(500));
        assert_eq!((c.ttl_ms, c.renew_ms, c.margin_ms), (2_000, 500, 500));
    }

    #[test]
    fn instance_ids_are_the_node_id_and_a_fresh_suffix() {
        let (a, b) = (instance_id("op-reth-0"), instance_id("op-reth-0"));
        assert!(a.starts_with("op-reth-0-") && a.len() == "op-reth-0-".len() + 8, "{a}");
        assert_ne!(a, b, "a new suffix per start");
    }

    #[test]
    fn reads_map_onto_the_decision() {
        let held = LeaseEntry {
            revision: 7,
            value: LeaseValue::Held(v1::EngineLease {
                holder: "n1-1".into(),
                ..Default::default()
            }),
        };
        assert_eq!(stored_of(&held), Stored::Held { revision: 7, holder: "n1-1".into() });
        let gone = LeaseEntry { revision: 8, value: LeaseValue::Removed };
        assert_eq!(stored_of(&gone), Stored::Absent);
        let bad = LeaseEntry { revision: 9, value: LeaseValue::Undecodable("x".into()) };
        assert_eq!(stored_of(&bad), Stored::Held { revision: 9, holder: "?".into() });
    }

    #[test]
    fn invalid_heads_of_a_value_skip_entries_of_another_length() {
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        let l = v1::EngineLease {
            holder: "n1-1".into(),
            invalid_heads: vec![a.to_vec(), vec![], vec![3; 31], vec![4; 33], b.to_vec()],
            ..Default::default()
        };
        assert_eq!(invalid_heads_of(&l, "lease.10.x"), vec![a, b]);
        assert!(invalid_heads_of(&v1::EngineLease::default(), "k").is_empty());
    }

    #[test]
    fn the_fence_keeps_the_invalid_heads_and_what_is_left_to_write() {
        let f = Fence::new("n1-1", LeaseConfig::default());
        let mut seen = 0;
        assert_eq!(f.invalid_since(&mut seen), None);
        assert!(!f.invalid_unwritten());
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        f.learn_invalid([a, B256::ZERO]);
        assert!(f.invalid_unwritten());
        assert_eq!(f.invalid_since(&mut seen), Some(vec![a]));
        assert_eq!(f.invalid_since(&mut seen), None, "nothing new");
        f.learn_invalid([a]);
        assert_eq!(f.invalid_since(&mut seen), None, "a known head changes nothing");
        let (bytes, generation) = f.invalid_to_write();
        assert_eq!(bytes, vec![a.to_vec()]);
        f.learn_invalid([b]);
        f.invalid_written(generation);
        assert!(f.invalid_unwritten(), "b came after that write");
        let (bytes, generation) = f.invalid_to_write();
        assert_eq!(bytes, vec![a.to_vec(), b.to_vec()]);
        f.invalid_written(generation);
        assert!(!f.invalid_unwritten());
        // The bound: the newest 64.
        f.learn_invalid((10u8..=200).map(B256::repeat_byte));
        let (bytes, _) = f.invalid_to_write();
        assert_eq!(bytes.len(), lightcl_core::lease::MAX_INVALID_HEADS);
        assert_eq!(bytes.last(), Some(&B256::repeat_byte(200).to_vec()));
    }

    #[test]
    fn a_fresh_fence_sends_nothing() {
        let f = Fence::new("n1-1", LeaseConfig::default());
        assert!(!f.may_send());
        assert_eq!(f.window(), None);
        assert_eq!(f.me(), "n1-1");
    }

    #[test]
    fn the_window_is_where_the_lease_may_send() {
        let cfg = LeaseConfig::default();
        let mut l = Lease::new("me", cfg, 0);
        assert_eq!(l.send_until(), None);
        assert_eq!(l.tick(100), Some(lightcl_core::lease::Write { expect: 0 }));
        l.written(1, 150);
        let until = l.send_until().expect("held");
        assert_eq!(until, 100 + cfg.ttl_ms - cfg.margin_ms, "from the write's send time");
        for now in [0, 150, until - 1, until, until + 1, u64::MAX] {
            assert_eq!(l.may_send(now), now < until, "at {now}");
        }
        // Another holder: no window.
        l.observe(Stored::Held { revision: 2, holder: "other".into() }, 200);
        assert_eq!(l.send_until(), None);
        assert!(!l.may_send(201));
    }
}
