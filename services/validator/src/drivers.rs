//! The newest target position the chain's engine-drivers report, read from the `lightcl-engine`
//! KV bucket (docs/bus.md#target-revisions).
//!
//! The validator seeds its next position with it: when a driver has seen or applied a position
//! newer than the stream's newest target (an older backup of `LIGHTCL_TARGETS` was restored, or
//! its newest messages deleted), the next target starts a new epoch above it
//! ([`lightcl_core::revision::next_position`]), so every driver takes it.
//!
//! [`follow`] keeps it current without a request per status: one complete read of the chain's
//! keys, then a KV watch (one ephemeral consumer) that applies every driver's put. After a
//! reconnect (a new connection generation), a watch error or its end, both are done again
//! (with backoff after an error). While it cannot read the bucket the last known value stays in use: a driver's
//! position only grows while it runs, so it is still a lower bound.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use lightcl_bus::{Bus, BusError, EngineChange, EngineEntry, EngineStates};
use lightcl_core::revision::Position;
use lightcl_proto::v1;
use lightcl_runtime::Backoff;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the validator knows of its drivers' positions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// The chain's keys were read completely at least once.
    pub loaded: bool,
    /// The newest position any driver of the chain reports having seen or applied.
    pub newest: Option<Position>,
}

/// The newest position one driver's state reports (the newest target it has seen, which is at
/// least the one it applied); None for another chain or a driver that has seen nothing.
pub fn position_of(chain_id: u64, s: &v1::EngineState) -> Option<Position> {
    if s.chain_id != chain_id {
        return None;
    }
    s.target_position().max(s.applied_position())
}

/// Per key, the position its driver reports.
#[derive(Debug, Default)]
struct Fleet {
    chain_id: u64,
    by_key: BTreeMap<String, Position>,
}

impl Fleet {
    fn put(&mut self, e: &EngineEntry) {
        match &e.state {
            Ok(s) => match position_of(self.chain_id, s) {
                Some(p) => {
                    self.by_key.insert(e.key.clone(), p);
                }
                None => {
                    self.by_key.remove(&e.key);
                }
            },
            Err(err) => {
                tracing::warn!(key = %e.key, error = %err, "engine state does not decode; ignored");
                self.by_key.remove(&e.key);
            }
        }
    }

    fn newest(&self) -> Option<Position> {
        self.by_key.values().max().copied()
    }
}

/// Keeps `tx` equal to the newest position the drivers of `chain_id` report, until `cancel`.
/// Never fails: errors are logged and retried with backoff.
pub async fn follow(
    bus: Bus,
    chain_id: u64,
    tx: watch::Sender<Reported>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut connection = bus.connection();
    loop {
        let generation = connection.borrow_and_update().generation;
        let err = {
            let round = read_and_watch(&bus, chain_id, &tx, &mut backoff);
            tokio::pin!(round);
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    e = &mut round => break Some(e),
                    Ok(()) = connection.changed() => {
                        // A reconnect: the server may have forgotten the watch's consumer.
                        if connection.borrow_and_update().generation != generation {
                            break None;
                        }
                    }
                }
            }
        };
        let Some(err) = err else { continue };
        tracing::warn!(
            error = %err,
            "cannot read the engine-drivers' positions (KV lightcl-engine); retrying, the last \
             known ones stay in use"
        );
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

fn unavailable(what: &'static str, why: &str) -> BusError {
    BusError::Unavailable { what, source: why.into() }
}

/// One complete read of the chain's keys, then the watch until it fails or ends.
async fn read_and_watch(
    bus: &Bus,
    chain_id: u64,
    tx: &watch::Sender<Reported>,
    backoff: &mut Backoff,
) -> BusError {
    let js = bus.jetstream();
    let kv = match EngineStates::open_existing(&js).await {
        Ok(Some(kv)) => kv,
        // Created by `ensure_topology` before this runs; until it exists, no driver reported.
        Ok(None) => {
            tx.send_replace(Reported { loaded: true, newest: None });
            return unavailable("KV lookup", "the lightcl-engine bucket does not exist");
        }
        Err(e) => return e,
    };
    let entries = match kv.entries(Some(chain_id)).await {
        Ok(e) => e,
        Err(e) => return e,
    };
    let mut fleet = Fleet { chain_id, by_key: BTreeMap::new() };
    for e in &entries {
        fleet.put(e);
    }
    let newest = fleet.newest();
    tx.send_replace(Reported { loaded: true, newest });
    tracing::info!(
        drivers = fleet.by_key.len(),
        newest = %newest.map_or_else(|| "none".to_owned(), |p| p.to_string()),
        "engine-drivers' positions read"
    );
    // The watch starts with the current value of every key (as of now, so nothing written
    // since the read is missed), then every change.
    let mut changes = match kv.watch(Some(chain_id)).await {
        Ok(w) => w,
        Err(e) => return e,
    };
    backoff.reset();
    while let Some(change) = changes.next().await {
        match change {
            Ok(EngineChange::Put(e)) => fleet.put(&e),
            Ok(EngineChange::Removed(key)) => {
                fleet.by_key.remove(&key);
            }
            Err(e) => return e,
        }
        let newest = fleet.newest();
        tx.send_if_modified(|r| {
            let changed = r.newest != newest;
            r.newest = newest;
            changed
        });
    }
    unavailable("KV watch", "the watch ended")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(chain_id: u64, target: (u64, u64), applied: (u64, u64)) -> v1::EngineState {
        v1::EngineState {
            chain_id,
            node_id: "n".into(),
            target_epoch: target.0,
            target_revision: target.1,
            applied_epoch: applied.0,
            applied_revision: applied.1,
            ..Default::default()
        }
    }

    #[test]
    fn a_driver_reports_the_newest_of_what_it_saw_and_applied() {
        let p = |epoch, revision| Some(Position { epoch, revision });
        assert_eq!(position_of(10, &state(10, (7, 51), (7, 50))), p(7, 51));
        // A new epoch seen, not applied yet (the EL is syncing).
        assert_eq!(position_of(10, &state(10, (9, 1), (7, 50))), p(9, 1));
        // Nothing seen yet, another chain.
        assert_eq!(position_of(10, &state(10, (0, 0), (0, 0))), None);
        assert_eq!(position_of(10, &state(11, (7, 51), (7, 50))), None);
        // A driver of a version without epochs: legacy epoch 0.
        assert_eq!(position_of(10, &state(10, (0, 4), (0, 3))), p(0, 4));
    }

    #[test]
    fn the_fleet_keeps_the_newest_per_key() {
        let entry = |key: &str, s: v1::EngineState| EngineEntry { key: key.into(), state: Ok(s) };
        let mut f = Fleet { chain_id: 10, by_key: BTreeMap::new() };
        f.put(&entry("10.a", state(10, (7, 51), (7, 50))));
        f.put(&entry("10.b", state(10, (7, 40), (7, 40))));
        assert_eq!(f.newest(), Some(Position { epoch: 7, revision: 51 }));
        // Driver a restarted and has seen nothing yet.
        f.put(&entry("10.a", state(10, (0, 0), (0, 0))));
        assert_eq!(f.newest(), Some(Position { epoch: 7, revision: 40 }));
        f.by_key.remove("10.b");
        assert_eq!(f.newest(), None);
    }
}
