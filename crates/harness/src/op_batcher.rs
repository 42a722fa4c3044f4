//! The rules op-batcher applies to a rollup node's `optimism_syncStatus`, restated for tests of
//! anything that serves the method (the engine-driver's compatibility RPC). Read in the
//! optimism monorepo (ethereum-optimism/optimism):
//!
//! - `op-batcher/batcher/sync_actions.go`, `computeSyncActions` — run on every status before
//!   blocks are loaded or channels pruned:
//!   1. the (cross-)safe L2 ref (the local-safe one when `preferLocalSafeL2`, the interop
//!      setting), the unsafe L2 ref and `head_l1` must not be the zero value, else "empty
//!      BlockRef in sync status": the status counts as out of sync and nothing happens;
//!   2. `current_l1.number` must not be below the `current_l1` of the previous status, else
//!      "sequencer currentL1 reversed" (what a restarting node looks like): out of sync;
//!   3. the blocks to load are `(safe_l2.number, unsafe_l2.number]` (none when unsafe is not
//!      above safe);
//!   4. whenever the batcher finds its state stale (safe head below its oldest block, above its
//!      newest, reorged, or no progress for a submitted channel) it starts afresh from
//!      `safe_l2.l1origin`: that origin must be the real L1 block, so an unset origin on the
//!      safe (or unsafe, loaded from the same refs) head is a status that would make the batcher
//!      post from a zero L1 block — a status a server must never give.
//!   5. a fully submitted channel counts as stalled when `current_l1.number` passed its max
//!      inclusion block while safe did not reach its last block: `current_l1` must be the real
//!      derivation progress (never a stale or zero value).
//! - `op-service/dial/rollup_sync.go`, `WaitRollupSync` — at batcher start-up
//!   (`waitNodeSync`): wait until `current_l1.number` reaches the L1 tip the batcher saw at
//!   start (or the block of its newest batch transaction).
//! - `op-batcher/batcher/driver.go` (older releases, `calculateL2BlockRangeToStore`): "empty
//!   sync status" when `head_l1` is the zero value; "L2 safe head ahead of L2 unsafe head" when
//!   `safe_l2.number >= unsafe_l2.number` (nothing to load, not an error of the node).
//!
//! On top, [`consistent`] checks what every op-node status satisfies and the rules above
//! assume (labels ordered, `current_l1` not past `head_l1`).

use lightcl_core::status::{L1BlockRef, L2BlockRef, SyncStatus};

/// Why op-batcher would not act on a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutOfSync {
    /// Rule 1: a ref that must be set is the zero value (names it).
    EmptyRef(&'static str),
    /// Rule 2: `current_l1` went back (previous, new numbers).
    CurrentL1Reversed {
        /// The previous status's `current_l1.number`.
        prev: u64,
        /// This status's.
        now: u64,
    },
}

/// What op-batcher would do with a status it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actions {
    /// Rule 3: the L2 blocks to load, inclusive, if any.
    pub blocks_to_load: Option<(u64, u64)>,
    /// Rule 4: where it would restart its channel state from (`safe_l2.l1origin`).
    pub restart_from_l1: lightcl_core::BlockId,
}

/// Rules 1–3 of `computeSyncActions` for a status, given the previous status's `current_l1`
/// (`None` for the first status the batcher sees).
pub fn sync_actions(
    status: &SyncStatus,
    prev_current_l1: Option<&L1BlockRef>,
    prefer_local_safe: bool,
) -> Result<Actions, OutOfSync> {
    let safe = if prefer_local_safe { status.local_safe() } else { status.safe_l2 };
    let zero_l2 = L2BlockRef::default();
    if safe == zero_l2 {
        return Err(OutOfSync::EmptyRef(if prefer_local_safe {
            "local_safe_l2"
        } else {
            "safe_l2"
        }));
    }
    if status.unsafe_l2 == zero_l2 {
        return Err(OutOfSync::EmptyRef("unsafe_l2"));
    }
    if status.head_l1 == L1BlockRef::default() {
        return Err(OutOfSync::EmptyRef("head_l1"));
    }
    if let Some(prev) = prev_current_l1
        && status.current_l1.number < prev.number
    {
        return Err(OutOfSync::CurrentL1Reversed {
            prev: prev.number,
            now: status.current_l1.number,
        });
    }
    let blocks_to_load = (status.unsafe_l2.number > safe.number)
        .then_some((safe.number + 1, status.unsafe_l2.number));
    Ok(Actions { blocks_to_load, restart_from_l1: safe.l1origin })
}

/// `WaitRollupSync`: true once the node's derivation reached the L1 block the batcher waits
/// for.
pub fn startup_synced(status: &SyncStatus, l1_target: u64) -> bool {
    status.current_l1.number >= l1_target
}

/// Everything a served status must satisfy so that op-batcher acts on it and acts right: rules
/// 1–2 (with `prev_current_l1`, under both safe-head choices), rule 4 (the L1 origins op-batcher
/// restarts from are set), rule 5 (`current_l1` set), and [`consistent`].
pub fn check(status: &SyncStatus, prev_current_l1: Option<&L1BlockRef>) -> Result<(), String> {
    for prefer_local_safe in [false, true] {
        sync_actions(status, prev_current_l1, prefer_local_safe)
            .map_err(|e| format!("op-batcher: out of sync: {e:?}"))?;
    }
    for (name, r) in [
        ("unsafe_l2", status.unsafe_l2),
        ("safe_l2", status.safe_l2),
        ("local_safe_l2", status.local_safe()),
    ] {
        if r.l1origin.is_unset() {
            return Err(format!("{name}.l1origin unset: op-batcher would restart from a zero L1"));
        }
    }
    if status.current_l1.is_unset() {
        return Err("current_l1 unset: op-batcher waits for it at start-up forever".into());
    }
    consistent(status)
}

/// What every op-node status satisfies: `finalized_l2 ≤ safe_l2 ≤ local_safe_l2 ≤ unsafe_l2`,
/// `finalized_l1 ≤ safe_l1 ≤ head_l1`, `current_l1 ≤ head_l1`, each L2 head's L1 origin not past
/// `head_l1`, and the optional fields (when present) equal to what they stand for.
pub fn consistent(s: &SyncStatus) -> Result<(), String> {
    let l2 = [
        ("finalized_l2", s.finalized_l2.number),
        ("safe_l2", s.safe_l2.number),
        ("local_safe_l2", s.local_safe().number),
        ("unsafe_l2", s.unsafe_l2.number),
    ];
    let l1 = [
        ("finalized_l1", s.finalized_l1.number),
        ("safe_l1", s.safe_l1.number),
        ("head_l1", s.head_l1.number),
    ];
    for w in l2.windows(2).chain(l1.windows(2)) {
        if w[0].1 > w[1].1 {
            return Err(format!("{} #{} above {} #{}", w[0].0, w[0].1, w[1].0, w[1].1));
        }
    }
    if s.current_l1.number > s.head_l1.number {
        return Err(format!(
            "current_l1 #{} above head_l1 #{}",
            s.current_l1.number, s.head_l1.number
        ));
    }
    for (name, r) in [("safe_l2", s.safe_l2), ("unsafe_l2", s.unsafe_l2)] {
        if r.l1origin.number > s.head_l1.number {
            return Err(format!("{name}.l1origin #{} above head_l1", r.l1origin.number));
        }
    }
    if s.cross_unsafe_l2.is_some_and(|c| c != s.unsafe_l2) {
        return Err("cross_unsafe_l2 differs from unsafe_l2".into());
    }
    if s.pending_safe_l2.is_some_and(|p| p.number < s.safe_l2.number) {
        return Err("pending_safe_l2 below safe_l2".into());
    }
    if s.current_l1_finalized.is_some_and(|f| f != s.finalized_l1) {
        return Err("current_l1_finalized differs from finalized_l1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcl_core::B256;

    fn l1(n: u64) -> L1BlockRef {
        L1BlockRef {
            hash: B256::with_last_byte(n as u8),
            number: n,
            parent_hash: B256::with_last_byte(n.saturating_sub(1) as u8),
            timestamp: 12 * n,
        }
    }

    fn l2(n: u64, origin: u64) -> L2BlockRef {
        L2BlockRef {
            hash: B256::repeat_byte(0x80 | n as u8),
            number: n,
            parent_hash: B256::ZERO,
            timestamp: 2 * n,
            l1origin: l1(origin).id(),
            sequence_number: 0,
        }
    }

    fn status() -> SyncStatus {
        SyncStatus {
            current_l1: l1(18),
            current_l1_finalized: None,
            head_l1: l1(20),
            safe_l1: l1(16),
            finalized_l1: l1(12),
            unsafe_l2: l2(30, 18),
            safe_l2: l2(20, 14),
            finalized_l2: l2(10, 9),
            pending_safe_l2: None,
            cross_unsafe_l2: None,
            local_safe_l2: None,
        }
    }

    #[test]
    fn an_op_node_like_status_passes_and_loads_the_unsafe_range() {
        let s = status();
        assert_eq!(check(&s, Some(&l1(17))), Ok(()));
        let a = sync_actions(&s, None, false).unwrap();
        assert_eq!(a.blocks_to_load, Some((21, 30)));
        assert_eq!(a.restart_from_l1, l1(14).id());
        assert!(startup_synced(&s, 18) && !startup_synced(&s, 19));
    }

    #[test]
    fn each_rule_rejects_what_it_names() {
        let mut s = status();
        s.head_l1 = L1BlockRef::default();
        assert_eq!(sync_actions(&s, None, false), Err(OutOfSync::EmptyRef("head_l1")));
        let mut s = status();
        s.safe_l2 = L2BlockRef::default();
        assert_eq!(sync_actions(&s, None, false), Err(OutOfSync::EmptyRef("safe_l2")));
        let s = status();
        assert_eq!(
            sync_actions(&s, Some(&l1(19)), false),
            Err(OutOfSync::CurrentL1Reversed { prev: 19, now: 18 })
        );
        let mut s = status();
        s.safe_l2.l1origin = Default::default();
        assert!(check(&s, None).unwrap_err().contains("safe_l2.l1origin"));
        let mut s = status();
        s.current_l1 = L1BlockRef::default();
        assert!(check(&s, None).is_err());
        let mut s = status();
        s.current_l1 = l1(21);
        assert!(consistent(&s).unwrap_err().contains("current_l1"));
        let mut s = status();
        s.safe_l2 = l2(31, 14);
        assert!(consistent(&s).is_err());
    }
}
