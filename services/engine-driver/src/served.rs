//! What `optimism_syncStatus` serves next to the EL's live heads: the mirrored `current_l1`
//! (the target's whose safe head the EL applied), the validator's L1 view (`head_l1`,
//! `safe_l1`, `finalized_l1`) of the newest target the EL applied (its last VALID forkchoice),
//! and the full L2 refs (L1 origin, sequence number) of the blocks the targets named.
//!
//! Both are kept in this driver's KV key (`EngineState` fields `current_l1`, `head_l1`,
//! `safe_l1`, `finalized_l1`, `head_ref`, `safe_ref`, `finalized_ref`), written by
//! [`Served::fill_state`] on every put, and read back once at start-up by [`restore`] before
//! the first put: a restarted driver answers with them at once, before any target arrives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lightcl_bus::{Bus, EngineStates};
use lightcl_core::engine::{EngineSnapshot, Phase};
use lightcl_core::revision::Position;
use lightcl_core::status::L1BlockRef;
use lightcl_core::{L1View, Target};
use lightcl_proto::v1;
use lightcl_runtime::Backoff;
use tokio_util::sync::CancellationToken;

use crate::driver::RefCache;

/// The L1 refs served with the applied heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServedL1 {
    /// The mirrored `current_l1` (unset until a target's safe head was applied).
    pub current: L1BlockRef,
    /// The validator's L1 view carried by the newest applied target (unset until one was
    /// applied, and from validators without it). Its `head` is at or above the L1 origin of
    /// every block that target named, so of the EL's heads too.
    pub view: L1View,
}

/// The served refs, shared by the driver loop (writer), the RPC endpoint and the KV
/// publisher (readers).
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Full refs of recent target blocks, by hash.
    pub refs: Arc<Mutex<RefCache>>,
    l1: Arc<Mutex<Option<ServedL1>>>,
}

impl Served {
    /// The served L1 refs (`None` before any target was mirrored or restored).
    pub fn l1(&self) -> Option<ServedL1> {
        *self.l1.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the served L1 refs.
    pub fn set_l1(&self, l1: ServedL1) {
        *self.l1.lock().unwrap_or_else(PoisonError::into_inner) = Some(l1);
    }

    /// Takes a planner snapshot (see [`update`]).
    pub fn update(&self, snap: &EngineSnapshot, target: Option<&Target>, views: &Views) {
        let mut l1 = self.l1.lock().unwrap_or_else(PoisonError::into_inner);
        *l1 = update(*l1, snap, target, views);
    }

    /// The ref cache, locked.
    pub fn refs(&self) -> MutexGuard<'_, RefCache> {
        self.refs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes what a stored `EngineState` of this driver kept: the L1 refs (unless a target was
    /// mirrored meanwhile) and the full refs of its applied blocks. An unreadable field is
    /// skipped with a warning.
    pub fn restore(&self, state: &v1::EngineState) {
        let view = state.l1_view().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "stored L1 view unreadable; not restored");
            None
        });
        let current = state
            .current_l1
            .as_ref()
            .and_then(|c| lightcl_proto::convert::l1_ref(c, "current_l1").ok())
            .filter(|c| !c.is_unset());
        if let Some(current) = current {
            let mut l1 = self.l1.lock().unwrap_or_else(PoisonError::into_inner);
            if l1.is_none() {
                *l1 = Some(ServedL1 { current, view: view.unwrap_or_default() });
            }
        }
        match state.applied_refs() {
            Ok(refs) => {
                let mut cache = self.refs();
                for r in refs.into_iter().flatten() {
                    cache.insert(r);
                }
            }
            Err(e) => tracing::warn!(error = %e, "stored applied refs unreadable; not restored"),
        }
    }

    /// Completes an `EngineState` for the KV: the served L1 refs and the full refs of its
    /// applied head, safe and finalized blocks when known.
    pub fn fill_state(&self, state: &mut v1::EngineState) {
        if let Some(l1) = self.l1() {
            state.current_l1 = Some(l1.current.into());
            state.set_l1_view(Some(&l1.view));
        }
        let cache = self.refs();
        let full = |id: &Option<v1::BlockId>| {
            let id = lightcl_proto::convert::block_id(id.as_ref()?, "").ok()?;
            cache.get(&id.hash).filter(|r| r.number == id.number)
        };
        state.set_applied_refs([full(&state.head), full(&state.safe), full(&state.finalized)]);
    }
}

/// The L1 views of the newest targets received, by position (the planner may still be
/// following an older one than the newest received).
#[derive(Debug, Default)]
pub struct Views(VecDeque<(Position, L1View)>);

impl Views {
    const CAP: usize = 16;

    /// Remembers the view of the target at `position` (unset for a target without one).
    pub fn insert(&mut self, position: Position, view: L1View) {
        self.0.retain(|(p, _)| *p != position);
        self.0.push_back((position, view));
        while self.0.len() > Self::CAP {
            self.0.pop_front();
        }
    }

    /// The view of the target at `position`, if received with one.
    pub fn get(&self, position: Position) -> Option<L1View> {
        self.0.iter().rev().find(|(p, _)| *p == position).map(|(_, v)| *v)
    }
}

/// The L1 refs to serve after the planner produced `snap` while following `target`, from
/// what was served (`prev`): `current_l1` becomes the target's when the planner mirrors it now
/// (following, the EL's safe head is the target's safe); the L1 view becomes the one of the
/// target of the last VALID forkchoice (`applied_position`) when received with it. Otherwise
/// each keeps what was served (a restored one after a restart).
pub fn update(
    prev: Option<ServedL1>,
    snap: &EngineSnapshot,
    target: Option<&Target>,
    views: &Views,
) -> Option<ServedL1> {
    let mirrored = target.and_then(|t| {
        let current = snap.current_l1?;
        let now = snap.phase == Phase::Following
            && snap.applied.safe == t.safe_l2.id()
            && current == t.current_l1;
        now.then_some(current)
    });
    let applied_view =
        (snap.applied_position.revision > 0).then(|| views.get(snap.applied_position)).flatten();
    if prev.is_none() && mirrored.is_none() && applied_view.is_none() {
        return None;
    }
    let prev = prev.unwrap_or_default();
    Some(ServedL1 {
        current: mirrored.unwrap_or(prev.current),
        view: applied_view.unwrap_or(prev.view),
    })
}

/// Reads this driver's own KV key once (retrying while NATS or the bucket is unavailable) and
/// restores what it kept into `served`. Returns when read, when there is nothing to read, or on
/// `cancel`.
pub async fn restore(
    bus: &Bus,
    chain_id: u64,
    node_id: &str,
    served: &Served,
    cancel: &CancellationToken,
) {
    let js = bus.jetstream();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let read = async {
            match EngineStates::open_existing(&js).await? {
                Some(states) => states.get(chain_id, node_id).await,
                None => Ok(None),
            }
        };
        let r = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(Duration::from_secs(2), read) => r,
        };
        match r {
            Ok(Ok(Some(state))) => {
                served.restore(&state);
                tracing::info!(l1 = ?served.l1(), "restored the served sync status refs from KV");
                return;
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read this driver's engine state; retrying");
            }
            Err(_) => tracing::warn!("reading this driver's engine state timed out; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff.next_delay()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::tests::{following as snap, l1, l2};

    fn target(rev: u64) -> Target {
        Target {
            chain_id: 10,
            epoch: 1,
            revision: rev,
            unsafe_l2: l2(30),
            safe_l2: l2(20),
            local_safe_l2: l2(20),
            finalized_l2: l2(10),
            current_l1: l1(12),
        }
    }

    fn view() -> L1View {
        L1View { head: l1(15), safe: l1(13), finalized: l1(8) }
    }

    #[test]
    fn current_l1_follows_the_applied_safe_head_and_the_view_the_applied_target() {
        let t = target(3);
        let mut views = Views::default();
        views.insert(Position::of(&t), view());
        let both = ServedL1 { current: t.current_l1, view: view() };
        assert_eq!(
            update(None, &snap(&t, t.safe_l2, Some(t.current_l1)), Some(&t), &views),
            Some(both)
        );
        // Nothing applied, nothing mirrored, nothing served: nothing.
        let mut none = snap(&t, l2(19), None);
        none.applied_position = Position::default();
        assert_eq!(update(None, &none, Some(&t), &views), None);
        // The head applied (VALID), the safe head not yet: the view moves, current_l1 stays.
        let prev = ServedL1 { current: l1(11), view: L1View::default() };
        let s = snap(&t, l2(19), Some(l1(11)));
        assert_eq!(
            update(Some(prev), &s, Some(&t), &views),
            Some(ServedL1 { view: view(), ..prev })
        );
        // The applied target's view was not received (evicted): keep the served one.
        let mut other = s;
        other.applied_position = Position { epoch: 9, revision: 9 };
        assert_eq!(update(Some(prev), &other, Some(&t), &views), Some(prev));
        // A target from a validator without the view: served unset (not ready), not stale.
        let old = target(4);
        views.insert(Position::of(&old), L1View::default());
        let s = snap(&old, old.safe_l2, Some(old.current_l1));
        let served = update(Some(both), &s, Some(&old), &views).unwrap();
        assert_eq!(served, ServedL1 { current: old.current_l1, view: L1View::default() });
    }

    #[test]
    fn views_are_bounded_and_found_by_position() {
        let mut views = Views::default();
        for rev in 1..=40 {
            views.insert(Position { epoch: 1, revision: rev }, L1View { head: l1(rev), ..view() });
        }
        assert_eq!(views.get(Position { epoch: 1, revision: 40 }).map(|v| v.head), Some(l1(40)));
        assert_eq!(views.get(Position { epoch: 1, revision: 1 }), None);
    }

    #[test]
    fn the_kv_value_keeps_what_is_served_and_a_restart_reads_it_back() {
        let t = target(3);
        let served = Served::default();
        for r in [t.unsafe_l2, t.safe_l2, t.finalized_l2] {
            served.refs().insert(r);
        }
        served.set_l1(ServedL1 { current: t.current_l1, view: view() });
        let mut state = v1::EngineState::from_snapshot(10, "n1", &snap(&t, t.safe_l2, None), 5);
        served.fill_state(&mut state);
        assert_eq!(state.l1_view().unwrap(), Some(view()));
        assert_eq!(
            state.applied_refs().unwrap(),
            [Some(t.unsafe_l2), Some(t.safe_l2), Some(t.finalized_l2)]
        );

        let restarted = Served::default();
        restarted.restore(&state);
        assert_eq!(restarted.l1(), Some(ServedL1 { current: t.current_l1, view: view() }));
        assert_eq!(restarted.refs().get(&t.safe_l2.hash), Some(t.safe_l2));
        // A target mirrored before the read finished wins over the stored one.
        let raced = Served::default();
        let newer = ServedL1 { current: l1(14), view: view() };
        raced.set_l1(newer);
        raced.restore(&state);
        assert_eq!(raced.l1(), Some(newer));
        // A state of a version without the fields restores current_l1 alone.
        let mut legacy = state.clone();
        legacy.set_l1_view(None);
        let old = Served::default();
        old.restore(&legacy);
        assert_eq!(old.l1(), Some(ServedL1 { current: t.current_l1, view: L1View::default() }));
    }
}
