//! The served status against op-batcher's rules ([`lightcl_harness::op_batcher`]).

use lightcl_core::engine::{EngineSnapshot, Forkchoice, Phase};
use lightcl_core::revision::Position;
use lightcl_core::{B256, L1View, Target};
use lightcl_harness::op_batcher;
use lightcl_proto::v1;

use super::*;
use crate::served::{ServedL1, Views};

/// Test L1 block `n` (also used by `served`'s tests).
pub(crate) fn l1(n: u64) -> L1BlockRef {
    L1BlockRef {
        hash: B256::with_last_byte(n as u8),
        number: n,
        parent_hash: B256::with_last_byte(n.saturating_sub(1) as u8),
        timestamp: 1_000 + 12 * n,
    }
}

/// Test L2 block `n`, three per L1 origin.
pub(crate) fn l2(n: u64) -> L2BlockRef {
    L2BlockRef {
        hash: B256::repeat_byte(0x40 + n as u8),
        number: n,
        parent_hash: B256::repeat_byte(0x40 + n.saturating_sub(1) as u8),
        timestamp: 2_000 + 2 * n,
        l1origin: l1(n / 3).id(),
        sequence_number: n % 3,
    }
}

/// The EL's view of an L2 block (what `eth_getBlockByNumber` gives: no L1 origin).
fn el_block(r: L2BlockRef) -> L1BlockRef {
    L1BlockRef {
        hash: r.hash,
        number: r.number,
        parent_hash: r.parent_hash,
        timestamp: r.timestamp,
    }
}

fn target(rev: u64, u: u64, s: u64, f: u64) -> Target {
    Target {
        chain_id: 10,
        epoch: 1,
        revision: rev,
        unsafe_l2: l2(u),
        safe_l2: l2(s),
        local_safe_l2: l2(s),
        finalized_l2: l2(f),
        current_l1: l1(s / 3 + 1),
    }
}

fn view_of(t: &Target) -> L1View {
    let c = t.current_l1.number;
    L1View { head: l1(c + 3), safe: l1(c + 1), finalized: l1(c.saturating_sub(2)) }
}

/// What the EL holds after a VALID forkchoice of `t`.
fn applied(t: &Target) -> FullHeads {
    FullHeads {
        latest: el_block(t.unsafe_l2),
        safe: Some(el_block(t.safe_l2)),
        finalized: Some(el_block(t.finalized_l2)),
    }
}

/// The driver's side of a target arriving: refs and view remembered as `on_target` does.
fn receive(served: &Served, views: &mut Views, t: &Target) {
    for r in [t.unsafe_l2, t.safe_l2, t.local_safe_l2, t.finalized_l2] {
        served.refs().insert(r);
    }
    views.insert(Position::of(t), view_of(t));
}

/// The planner's snapshot once the EL accepted `t` with its safe head at `safe` (the target's
/// own, or an older one still) and `current_l1` mirrored as `current`.
pub(crate) fn following(
    t: &Target,
    safe: L2BlockRef,
    current: Option<L1BlockRef>,
) -> EngineSnapshot {
    EngineSnapshot {
        phase: Phase::Following,
        applied: Forkchoice {
            head: t.unsafe_l2.id(),
            safe: safe.id(),
            finalized: t.finalized_l2.id(),
        },
        target_position: Position::of(t),
        applied_position: Position::of(t),
        target_head: t.unsafe_l2.id(),
        last_answer: None,
        last_error: None,
        current_l1: current,
        paused: false,
    }
}

/// The driver's side of a VALID forkchoice of `t` with the EL's safe head at `safe`:
/// `publish_state` with the planner's snapshot.
fn valid(served: &Served, views: &Views, t: &Target, safe: L2BlockRef, current: L1BlockRef) {
    served.update(&following(t, safe, Some(current)), Some(t), views);
}

/// A target received and applied whole.
fn apply(served: &Served, views: &mut Views, t: &Target) {
    receive(served, views, t);
    valid(served, views, t, t.safe_l2, t.current_l1);
}

#[test]
fn before_any_target_the_method_is_not_ready_never_half_filled() {
    let served = Served::default();
    let t = target(1, 30, 20, 10);
    let err = sync_status(&applied(&t), &served).unwrap_err();
    assert!(err.contains("no target applied yet"), "{err}");
    // Refs known but nothing mirrored yet (the EL's safe is not the target's): still not ready.
    served.refs().insert(t.unsafe_l2);
    served.refs().insert(t.safe_l2);
    assert!(sync_status(&applied(&t), &served).is_err());
}

#[test]
fn the_served_status_passes_op_batcher_and_matches_the_target_and_the_el() {
    let served = Served::default();
    let mut views = Views::default();
    let t = target(1, 30, 20, 10);
    apply(&served, &mut views, &t);
    let s = sync_status(&applied(&t), &served).unwrap();
    assert_eq!(op_batcher::check(&s, None), Ok(()));
    let actions = op_batcher::sync_actions(&s, None, false).unwrap();
    assert_eq!(actions.blocks_to_load, Some((21, 30)));
    assert_eq!(actions.restart_from_l1, t.safe_l2.l1origin, "restarts from the real L1 origin");
    assert!(op_batcher::startup_synced(&s, t.current_l1.number));
    let v = view_of(&t);
    assert_eq!((s.head_l1, s.safe_l1, s.finalized_l1), (v.head, v.safe, v.finalized));
    assert_eq!(s.current_l1, t.current_l1);
    assert_eq!(s.current_l1_finalized, Some(v.finalized));
    assert_eq!((s.unsafe_l2, s.safe_l2, s.finalized_l2), (t.unsafe_l2, t.safe_l2, t.finalized_l2));
    assert_eq!(s.local_safe_l2, Some(t.safe_l2));
    assert_eq!((s.cross_unsafe_l2, s.pending_safe_l2), (Some(t.unsafe_l2), Some(t.safe_l2)));

    // The next target: current_l1 moves forward, never back (op-batcher's rule 2).
    let t2 = target(2, 40, 33, 20);
    apply(&served, &mut views, &t2);
    let s2 = sync_status(&applied(&t2), &served).unwrap();
    assert_eq!(op_batcher::check(&s2, Some(&s.current_l1)), Ok(()));
    assert_eq!(s2.head_l1, view_of(&t2).head);
}

#[test]
fn the_l2_refs_follow_what_the_el_applied_not_the_newest_target() {
    let served = Served::default();
    let mut views = Views::default();
    let t = target(1, 30, 20, 10);
    apply(&served, &mut views, &t);
    // A newer target arrived but the EL has not applied it yet: all as before.
    let t2 = target(2, 40, 33, 20);
    receive(&served, &mut views, &t2);
    let s = sync_status(&applied(&t), &served).unwrap();
    assert_eq!((s.unsafe_l2, s.safe_l2), (t.unsafe_l2, t.safe_l2));
    assert_eq!((s.current_l1, s.head_l1), (t.current_l1, view_of(&t).head));
    assert_eq!(op_batcher::check(&s, None), Ok(()));
    // Its head applied (VALID), the EL's safe still the old one: unsafe and the L1 view move
    // (the view's head covers the new head's L1 origin), current_l1 waits for its safe head.
    valid(&served, &views, &t2, t.safe_l2, t.current_l1);
    let mid = FullHeads { latest: el_block(t2.unsafe_l2), ..applied(&t) };
    let s = sync_status(&mid, &served).unwrap();
    assert_eq!((s.unsafe_l2, s.safe_l2, s.current_l1), (t2.unsafe_l2, t.safe_l2, t.current_l1));
    assert_eq!(s.head_l1, view_of(&t2).head);
    assert_eq!(op_batcher::check(&s, None), Ok(()));
}

#[test]
fn a_block_no_target_named_is_not_served_with_a_zero_origin() {
    let served = Served::default();
    let mut views = Views::default();
    let t = target(1, 30, 20, 10);
    apply(&served, &mut views, &t);
    // The EL mid-way through its own sync: its latest is no target's block.
    let syncing = FullHeads { latest: el_block(l2(25)), ..applied(&t) };
    let err = sync_status(&syncing, &served).unwrap_err();
    assert!(err.contains("latest block #25"), "{err}");
    let no_safe = FullHeads { safe: None, ..applied(&t) };
    assert!(sync_status(&no_safe, &served).unwrap_err().contains("no safe block"));
    // No finalized block on the EL yet: finalized_l2 is zero, which op-batcher accepts.
    let no_fin = FullHeads { finalized: None, ..applied(&t) };
    let s = sync_status(&no_fin, &served).unwrap();
    assert!(s.finalized_l2.is_unset());
    assert_eq!(op_batcher::check(&s, None), Ok(()));
}

#[test]
fn targets_without_the_l1_view_are_not_served_with_an_empty_head_l1() {
    let served = Served::default();
    let t = target(1, 30, 20, 10);
    for r in [t.unsafe_l2, t.safe_l2, t.finalized_l2] {
        served.refs().insert(r);
    }
    served.set_l1(ServedL1 { current: t.current_l1, view: L1View::default() });
    let err = sync_status(&applied(&t), &served).unwrap_err();
    assert!(err.contains("head_l1 unknown"), "{err}");
    // What the driver served before (head_l1 unset) is exactly what op-batcher refuses.
    let old = SyncStatus {
        current_l1: t.current_l1,
        unsafe_l2: t.unsafe_l2,
        safe_l2: t.safe_l2,
        finalized_l2: t.finalized_l2,
        ..SyncStatus::default()
    };
    assert_eq!(
        op_batcher::sync_actions(&old, None, false),
        Err(op_batcher::OutOfSync::EmptyRef("head_l1"))
    );
}

#[test]
fn after_a_restart_the_stored_refs_are_served_at_once_and_current_l1_does_not_go_back() {
    let served = Served::default();
    let mut views = Views::default();
    let t = target(1, 30, 20, 10);
    apply(&served, &mut views, &t);
    let before = sync_status(&applied(&t), &served).unwrap();
    // The KV value the driver wrote, as `follow_bus` fills it.
    let mut state = v1::EngineState {
        head: Some(t.unsafe_l2.id().into()),
        safe: Some(t.safe_l2.id().into()),
        finalized: Some(t.finalized_l2.id().into()),
        ..Default::default()
    };
    served.fill_state(&mut state);

    let restarted = Served::default();
    assert!(sync_status(&applied(&t), &restarted).is_err(), "nothing before the read");
    restarted.restore(&state);
    let after = sync_status(&applied(&t), &restarted).unwrap();
    assert_eq!(after, before);
    assert_eq!(op_batcher::check(&after, Some(&before.current_l1)), Ok(()));
}
