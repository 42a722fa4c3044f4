//! The simulated external consensus node's chain logic: pure, no I/O, no clock.
//!
//! [`Simulator`] keeps the source's view of L1 (fed with real anvil blocks through
//! [`Simulator::observe_l1`]) and an L2 chain derived "on top of it": every
//! [`Simulator::produce`] appends one L2 block whose L1 origin is a real L1 block (origins never
//! go backwards and advance by at most one L1 block per L2 block, like a sequencer), then moves
//! the safe head (lagging the unsafe head) and the finalized head (the newest safe block whose
//! origin is buried under `finality_depth` L1 blocks).
//!
//! When `observe_l1` sees a different hash at a height it knew (an L1 reorg), the L1 blocks from
//! there on are replaced, and every L2 block whose origin was reorged out is **re-derived**: the
//! chain is cut at the first such block and rebuilt to the same height with new hashes (a new
//! fork tag) and origins on the new L1; the safe head drops to the last block that kept a
//! canonical origin and catches up again; finalized is untouched (the devnet keeps reorgs
//! shallower than `finality_depth`, see [`Simulator::reorg_depth_for_safe`]).
//!
//! Invariants (property-tested): the L2 chain links by parent hash from genesis;
//! `finalized ≤ safe ≤ unsafe`; every origin in the chain is in the current L1 view; origins
//! are non-decreasing along the chain; finalized never decreases.

use std::collections::HashMap;

use alloy_primitives::{B256, keccak256};
use lightcl_core::{BlockId, L1BlockRef, L2BlockRef, SyncStatus};

/// Timestamp step between L2 blocks in the synthetic chain (seconds).
pub const L2_BLOCK_SECONDS: u64 = 2;

/// Errors of the simulator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// `observe_l1` was given blocks that do not connect to the known L1 view.
    #[error("L1 block {number} does not connect: known L1 view ends at {known_tip}")]
    Gap {
        /// First block number given.
        number: u64,
        /// Highest L1 number known.
        known_tip: u64,
    },
    /// The given blocks are not contiguous by number and parent hash.
    #[error("L1 blocks are not a chain at {number}")]
    NotAChain {
        /// Number of the first block that does not link.
        number: u64,
    },
    /// A reorg replaced the L1 origin of the finalized L2 head (deeper than finality).
    #[error("L1 reorg from {from} reaches the finalized L2 head's origin {origin}")]
    FinalizedReorged {
        /// First reorged L1 number.
        from: u64,
        /// The finalized head's origin number.
        origin: u64,
    },
}

/// Tuning of the simulated chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// The safe head trails the unsafe head by this many L2 blocks.
    pub safe_lag: u64,
    /// The safe head catches up by at most this many blocks per produced block.
    pub safe_step: u64,
    /// A safe block becomes finalized once its origin is this many L1 blocks below the L1 head.
    pub finality_depth: u64,
    /// New L2 blocks take as origin the L1 block this far below the L1 head.
    pub origin_lag: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { safe_lag: 6, safe_step: 2, finality_depth: 8, origin_lag: 1 }
    }
}

/// What [`Simulator::observe_l1`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L1Update {
    /// L1 blocks appended to the view.
    pub appended: u64,
    /// The first L1 number replaced by a reorg, if any.
    pub reorged_from: Option<u64>,
    /// L1 blocks that left the canonical chain.
    pub orphaned_l1: Vec<L1BlockRef>,
    /// L2 blocks replaced by the re-derivation.
    pub orphaned_l2: Vec<L2BlockRef>,
    /// New L2 blocks of the re-derivation.
    pub rederived: Vec<L2BlockRef>,
}

/// The simulated source chain. See the module docs.
#[derive(Debug, Clone)]
pub struct Simulator {
    cfg: SimConfig,
    l1: Vec<L1BlockRef>,
    chain: Vec<L2BlockRef>,
    safe: u64,
    finalized: u64,
    fork: u64,
    known: HashMap<B256, L2BlockRef>,
}

/// The L2 genesis the simulator and every mock EL start from.
pub fn l2_genesis(l1_genesis: &L1BlockRef) -> L2BlockRef {
    L2BlockRef {
        hash: keccak256(b"lightcl-devnet-l2-genesis"),
        number: 0,
        parent_hash: B256::ZERO,
        timestamp: l1_genesis.timestamp,
        l1origin: l1_genesis.id(),
        sequence_number: 0,
    }
}

impl Simulator {
    /// A chain at genesis over an L1 view holding `l1_genesis` (L1 block 0).
    pub fn new(cfg: SimConfig, l1_genesis: L1BlockRef) -> Self {
        let genesis = l2_genesis(&l1_genesis);
        Self {
            cfg,
            l1: vec![l1_genesis],
            chain: vec![genesis],
            safe: 0,
            finalized: 0,
            fork: 0,
            known: HashMap::from([(genesis.hash, genesis)]),
        }
    }

    /// The configuration.
    pub fn config(&self) -> SimConfig {
        self.cfg
    }

    /// The L2 genesis block.
    pub fn genesis(&self) -> L2BlockRef {
        self.chain[0]
    }

    /// The source's L1 head.
    pub fn l1_head(&self) -> L1BlockRef {
        self.l1[self.l1.len() - 1]
    }

    /// The source's canonical L1 block at `number`.
    pub fn l1_at(&self, number: u64) -> Option<L1BlockRef> {
        usize::try_from(number).ok().and_then(|i| self.l1.get(i)).copied()
    }

    /// The unsafe head.
    pub fn unsafe_head(&self) -> L2BlockRef {
        self.chain[self.chain.len() - 1]
    }

    /// The safe head.
    pub fn safe_head(&self) -> L2BlockRef {
        self.at(self.safe)
    }

    /// The finalized head.
    pub fn finalized_head(&self) -> L2BlockRef {
        self.at(self.finalized)
    }

    /// The canonical L2 block at `number`.
    pub fn canonical(&self, number: u64) -> Option<L2BlockRef> {
        usize::try_from(number).ok().and_then(|i| self.chain.get(i)).copied()
    }

    fn at(&self, number: u64) -> L2BlockRef {
        // Callers only pass numbers ≤ the tip (safe/finalized never exceed unsafe).
        self.canonical(number).unwrap_or_else(|| self.unsafe_head())
    }

    /// Any L2 block ever produced (including re-derived-away and reorged-away ones).
    pub fn block(&self, hash: &B256) -> Option<L2BlockRef> {
        self.known.get(hash).copied()
    }

    /// Every L2 block ever produced (what the L2 network can serve), in no particular order.
    pub fn all_blocks(&self) -> impl Iterator<Item = &L2BlockRef> {
        self.known.values()
    }

    /// The current canonical L2 chain, genesis first.
    pub fn chain(&self) -> &[L2BlockRef] {
        &self.chain
    }

    /// The status the source serves.
    pub fn status(&self) -> SyncStatus {
        let head = self.l1_head();
        let l1_back = |d: u64| self.l1_at(head.number.saturating_sub(d)).unwrap_or(head);
        let safe = self.safe_head();
        SyncStatus {
            current_l1: head,
            current_l1_finalized: Some(l1_back(self.cfg.finality_depth)),
            head_l1: head,
            safe_l1: l1_back(2),
            finalized_l1: l1_back(self.cfg.finality_depth),
            unsafe_l2: self.unsafe_head(),
            safe_l2: safe,
            finalized_l2: self.finalized_head(),
            pending_safe_l2: Some(safe),
            cross_unsafe_l2: Some(self.unsafe_head()),
            local_safe_l2: Some(safe),
        }
    }

    /// Feeds canonical L1 blocks (contiguous, in order, the first at most one above the known
    /// tip). A different hash at a known height is an L1 reorg: the L1 view is replaced from
    /// there and the L2 chain re-derived (see the module docs).
    pub fn observe_l1(&mut self, blocks: &[L1BlockRef]) -> Result<L1Update, SimError> {
        let mut update = L1Update::default();
        let Some(first) = blocks.first() else { return Ok(update) };
        let known_tip = self.l1_head().number;
        if first.number > known_tip + 1 {
            return Err(SimError::Gap { number: first.number, known_tip });
        }
        for w in blocks.windows(2) {
            if w[1].number != w[0].number + 1 || w[1].parent_hash != w[0].hash {
                return Err(SimError::NotAChain { number: w[1].number });
            }
        }
        let Some(fork_at) = blocks.iter().find(|b| self.l1_at(b.number) != Some(**b)) else {
            return Ok(update); // nothing new
        };
        let from = fork_at.number;
        if from == 0 {
            return Err(SimError::FinalizedReorged { from, origin: 0 });
        }
        if from <= known_tip {
            let origin = self.finalized_head().l1origin.number;
            if origin >= from {
                return Err(SimError::FinalizedReorged { from, origin });
            }
            update.reorged_from = Some(from);
            update.orphaned_l1 = self.l1.split_off(usize::try_from(from).unwrap_or(usize::MAX));
        }
        // The first new block must link to what we keep.
        if fork_at.parent_hash != self.l1_head().hash {
            return Err(SimError::NotAChain { number: from });
        }
        let before = self.l1.len();
        self.l1.extend(blocks.iter().filter(|b| b.number >= from).copied());
        update.appended = (self.l1.len() - before) as u64;
        if update.reorged_from.is_some() {
            self.rederive(from, &mut update);
        }
        Ok(update)
    }

    fn rederive(&mut self, from: u64, update: &mut L1Update) {
        let Some(cut) = self.chain.iter().position(|b| b.l1origin.number >= from) else {
            return;
        };
        let old_tip = self.unsafe_head().number;
        update.orphaned_l2 = self.chain.split_off(cut);
        self.fork += 1;
        for old in &update.orphaned_l2 {
            // Keep the old origin number where the new L1 still reaches it.
            let parent = self.unsafe_head();
            let origin = old.l1origin.number.min(self.l1_head().number).max(parent.l1origin.number);
            let b = self.next_block(origin);
            update.rederived.push(b);
        }
        debug_assert_eq!(self.unsafe_head().number, old_tip);
        let last_kept = (cut as u64).saturating_sub(1);
        self.safe = self.safe.min(last_kept);
    }

    /// Appends one L2 block and moves safe/finalized; returns the new block.
    pub fn produce(&mut self) -> L2BlockRef {
        let parent = self.unsafe_head();
        let wanted = self.l1_head().number.saturating_sub(self.cfg.origin_lag);
        let origin = wanted.clamp(parent.l1origin.number, parent.l1origin.number + 1);
        let b = self.next_block(origin);
        self.advance_labels();
        b
    }

    fn next_block(&mut self, origin_number: u64) -> L2BlockRef {
        let parent = self.unsafe_head();
        let origin = self.l1_at(origin_number).unwrap_or_else(|| self.l1_head());
        let number = parent.number + 1;
        let mut pre = Vec::with_capacity(80);
        pre.extend_from_slice(parent.hash.as_slice());
        pre.extend_from_slice(origin.hash.as_slice());
        pre.extend_from_slice(&number.to_be_bytes());
        pre.extend_from_slice(&self.fork.to_be_bytes());
        let b = L2BlockRef {
            hash: keccak256(&pre),
            number,
            parent_hash: parent.hash,
            timestamp: parent.timestamp + L2_BLOCK_SECONDS,
            l1origin: origin.id(),
            sequence_number: if origin.number == parent.l1origin.number {
                parent.sequence_number + 1
            } else {
                0
            },
        };
        self.chain.push(b);
        self.known.insert(b.hash, b);
        b
    }

    fn advance_labels(&mut self) {
        let tip = self.unsafe_head().number;
        let target = tip.saturating_sub(self.cfg.safe_lag);
        if target > self.safe {
            self.safe = (self.safe + self.cfg.safe_step).min(target);
        }
        let l1 = self.l1_head().number;
        let mut f = self.safe;
        while f > self.finalized && self.at(f).l1origin.number + self.cfg.finality_depth > l1 {
            f -= 1;
        }
        self.finalized = self.finalized.max(f);
    }

    /// Reorgs the unsafe tip: the newest `depth` blocks above the safe head are replaced by
    /// blocks at the same heights with new hashes (same origins). Returns the new blocks.
    pub fn l2_reorg(&mut self, depth: u64) -> Vec<L2BlockRef> {
        let tip = self.unsafe_head().number;
        let from = tip.saturating_sub(depth).max(self.safe) + 1;
        if from > tip {
            return Vec::new();
        }
        let old = self.chain.split_off(usize::try_from(from).unwrap_or(usize::MAX));
        self.fork += 1;
        old.iter().map(|b| self.next_block(b.l1origin.number)).collect()
    }

    /// The `anvil_reorg` depth that replaces the safe head's L1 origin (and everything above),
    /// or `None` when that would reach the finalized head's origin or L1 genesis.
    pub fn reorg_depth_for_safe(&self) -> Option<u64> {
        let head = self.l1_head().number;
        let origin = self.safe_head().l1origin.number;
        let depth = head + 1 - origin;
        (origin > 0 && origin > self.finalized_head().l1origin.number).then_some(depth)
    }

    /// A lying status: the current status with its safe head replaced by a forged block one
    /// above it whose L1 origin has a hash that was never on L1 (unsafe = that block). Returns
    /// the status and the forged block.
    pub fn lying_status(&self) -> (SyncStatus, L2BlockRef) {
        let safe = self.safe_head();
        let origin = self.l1_head();
        let forged = L2BlockRef {
            hash: keccak256([safe.hash.as_slice(), b"forged"].concat()),
            number: safe.number + 1,
            parent_hash: safe.hash,
            timestamp: safe.timestamp + L2_BLOCK_SECONDS,
            l1origin: BlockId {
                hash: keccak256([origin.hash.as_slice(), b"not-on-l1"].concat()),
                number: origin.number,
            },
            sequence_number: 0,
        };
        let mut st = self.status();
        st.safe_l2 = forged;
        st.local_safe_l2 = Some(forged);
        st.pending_safe_l2 = Some(forged);
        if st.unsafe_l2.number <= forged.number {
            st.unsafe_l2 = forged;
            st.cross_unsafe_l2 = Some(forged);
        }
        (st, forged)
    }
}

/// A lie a source can tell about one label (see [`Simulator::lie_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lie {
    /// The safe head is a forged block one above the real one whose L1 origin was never on L1
    /// ([`Simulator::lying_status`]): the validator's L1 checks catch it (`L1_MISMATCH`).
    BadOrigin,
    /// `unsafe_l2` is a fabricated block one above the real tip (real parent, real L1 origin).
    Unsafe,
    /// `local_safe_l2` is a fabricated block one above the real local safe head (at most at the
    /// tip's height; real L1 origin).
    LocalSafe,
    /// `safe_l2` is a fabricated block at the real safe head's height (real parent and L1
    /// origin, another hash).
    Safe,
    /// `finalized_l2` is a fabricated block one above the real finalized head (at most at the
    /// safe head's height; real parent and L1 origin, another hash). With a real L1 origin no
    /// L1 check can tell it from the truth: only other sources can.
    Finalized,
}

impl Lie {
    /// Every lie.
    pub const ALL: [Self; 5] =
        [Self::BadOrigin, Self::Unsafe, Self::LocalSafe, Self::Safe, Self::Finalized];

    /// Its name (`l1-origin`, `unsafe`, `local-safe`, `safe`, `finalized`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadOrigin => "l1-origin",
            Self::Unsafe => "unsafe",
            Self::LocalSafe => "local-safe",
            Self::Safe => "safe",
            Self::Finalized => "finalized",
        }
    }
}

impl std::fmt::Display for Lie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Lie {
    type Err = String;

    /// A name of [`Lie::as_str`], or an alias: `bad-origin`, `tip`, `local_safe`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bad-origin" => return Ok(Self::BadOrigin),
            "tip" => return Ok(Self::Unsafe),
            "local_safe" => return Ok(Self::LocalSafe),
            _ => {}
        }
        Self::ALL.into_iter().find(|l| l.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|l| l.as_str()).collect();
            format!("unknown lie {s:?} (known: {})", names.join(", "))
        })
    }
}

impl Simulator {
    /// The live status with one label replaced as `lie` says (the other fields honest), and
    /// the fabricated (or forged) block, which is never part of the chain nor known to the L2
    /// network. Fabricated blocks keep a real parent and a real L1 origin; their hash is
    /// derived from the real block's, so it changes as the chain moves.
    pub fn lie_status(&self, lie: Lie) -> (SyncStatus, L2BlockRef) {
        let mut st = self.status();
        let tip = self.unsafe_head();
        let fake_of = |real: L2BlockRef| L2BlockRef {
            hash: keccak256(
                [real.hash.as_slice(), b"fabricated-", lie.as_str().as_bytes()].concat(),
            ),
            ..real
        };
        let fake = match lie {
            Lie::BadOrigin => return self.lying_status(),
            Lie::Unsafe => {
                let b = L2BlockRef {
                    hash: keccak256([tip.hash.as_slice(), b"fabricated-unsafe"].concat()),
                    number: tip.number + 1,
                    parent_hash: tip.hash,
                    timestamp: tip.timestamp + L2_BLOCK_SECONDS,
                    l1origin: tip.l1origin,
                    sequence_number: tip.sequence_number + 1,
                };
                st.unsafe_l2 = b;
                b
            }
            Lie::LocalSafe => {
                let real = st.local_safe();
                let b = fake_of(self.at((real.number + 1).min(tip.number)));
                st.local_safe_l2 = Some(b);
                b
            }
            Lie::Safe => {
                let b = fake_of(st.safe_l2);
                st.safe_l2 = b;
                b
            }
            Lie::Finalized => {
                let n = (st.finalized_l2.number + 1).min(st.safe_l2.number);
                let b = fake_of(self.at(n));
                st.finalized_l2 = b;
                b
            }
        };
        (st, fake)
    }
}

/// The status a restarting source serves before it has read L1: `current_l1` unset.
pub fn not_ready_status(mut st: SyncStatus) -> SyncStatus {
    st.current_l1 = L1BlockRef::default();
    st.head_l1 = L1BlockRef::default();
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A fake L1 whose blocks are chained; `fork` changes the hashes from some height.
    fn l1_block(number: u64, parent: B256, fork: u64) -> L1BlockRef {
        L1BlockRef {
            hash: keccak256([number.to_be_bytes(), fork.to_be_bytes()].concat()),
            number,
            parent_hash: parent,
            timestamp: 1_000 + 12 * number,
        }
    }

    struct FakeL1 {
        blocks: Vec<L1BlockRef>,
        forks: u64,
    }

    impl FakeL1 {
        fn new() -> Self {
            Self { blocks: vec![l1_block(0, B256::ZERO, 0)], forks: 0 }
        }
        fn mine(&mut self) {
            let p = self.blocks[self.blocks.len() - 1];
            self.blocks.push(l1_block(p.number + 1, p.hash, self.forks));
        }
        fn reorg(&mut self, depth: u64) {
            self.forks += 1;
            let keep = self.blocks.len() - depth as usize;
            self.blocks.truncate(keep);
            for _ in 0..depth {
                self.mine();
            }
        }
    }

    fn check_invariants(sim: &Simulator) {
        let c = sim.chain();
        for w in c.windows(2) {
            assert_eq!(w[1].parent_hash, w[0].hash, "chain links at {}", w[1].number);
            assert_eq!(w[1].number, w[0].number + 1);
            assert!(w[1].l1origin.number >= w[0].l1origin.number, "origins non-decreasing");
            assert!(w[1].l1origin.number <= w[0].l1origin.number + 1, "origin steps ≤ 1");
        }
        for b in c {
            let l1 = sim.l1_at(b.l1origin.number).expect("origin in L1 view");
            assert_eq!(l1.hash, b.l1origin.hash, "origin of {} canonical", b.number);
        }
        let st = sim.status();
        assert!(st.finalized_l2.number <= st.safe_l2.number);
        assert!(st.safe_l2.number <= st.unsafe_l2.number);
        assert_eq!(st.current_l1, sim.l1_head());
    }

    #[test]
    fn heads_advance_with_lags() {
        let mut l1 = FakeL1::new();
        let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
        for i in 0..100 {
            if i % 3 == 0 {
                l1.mine();
                sim.observe_l1(&l1.blocks[l1.blocks.len() - 1..]).unwrap();
            }
            sim.produce();
            check_invariants(&sim);
        }
        let st = sim.status();
        assert_eq!(st.unsafe_l2.number, 100);
        assert_eq!(st.safe_l2.number, 94);
        assert!(st.finalized_l2.number > 50 && st.finalized_l2.number < 94, "{st:?}");
    }

    #[test]
    fn l1_reorg_rederives_blocks_with_reorged_origins() {
        let mut l1 = FakeL1::new();
        let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
        for i in 0..90 {
            if i % 3 == 0 {
                l1.mine();
                sim.observe_l1(&l1.blocks[l1.blocks.len() - 1..]).unwrap();
            }
            sim.produce();
        }
        let before = sim.status();
        let depth = sim.reorg_depth_for_safe().expect("reorg possible");
        l1.reorg(depth);
        let from = l1.blocks.len() as u64 - depth;
        let update = sim.observe_l1(&l1.blocks[from as usize..]).unwrap();
        assert_eq!(update.reorged_from, Some(from));
        assert_eq!(update.orphaned_l1.len() as u64, depth);
        assert!(!update.rederived.is_empty());
        let after = sim.status();
        check_invariants(&sim);
        // Same height, the old safe head is gone, safe dropped below the fork, finalized kept.
        assert_eq!(after.unsafe_l2.number, before.unsafe_l2.number);
        assert_ne!(after.unsafe_l2.hash, before.unsafe_l2.hash);
        assert!(after.safe_l2.number < before.safe_l2.number);
        assert!(after.safe_l2.l1origin.number < from);
        assert_eq!(after.finalized_l2, before.finalized_l2);
        assert_ne!(sim.canonical(before.safe_l2.number).unwrap().hash, before.safe_l2.hash);
        // Old blocks stay known (the network still has them).
        assert!(sim.block(&before.safe_l2.hash).is_some());
        // It keeps producing and the safe head catches up again.
        for _ in 0..20 {
            sim.produce();
        }
        check_invariants(&sim);
        assert!(sim.status().safe_l2.number > before.safe_l2.number);
    }

    #[test]
    fn reorg_reaching_finalized_is_refused() {
        let mut l1 = FakeL1::new();
        let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
        for _ in 0..30 {
            l1.mine();
            sim.observe_l1(&l1.blocks[l1.blocks.len() - 1..]).unwrap();
            sim.produce();
            sim.produce();
        }
        let origin = sim.finalized_head().l1origin.number;
        assert!(origin > 0);
        let depth = l1.blocks.len() as u64 - origin;
        l1.reorg(depth);
        let err = sim.observe_l1(&l1.blocks[origin as usize..]).unwrap_err();
        assert_eq!(err, SimError::FinalizedReorged { from: origin, origin });
    }

    #[test]
    fn gaps_and_broken_links_are_errors() {
        let mut l1 = FakeL1::new();
        let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
        l1.mine();
        l1.mine();
        assert!(matches!(sim.observe_l1(&l1.blocks[2..]), Err(SimError::Gap { .. })));
        let mut broken = l1.blocks[1..].to_vec();
        broken[1].parent_hash = B256::repeat_byte(7);
        assert!(matches!(sim.observe_l1(&broken), Err(SimError::NotAChain { number: 2 })));
        assert_eq!(sim.observe_l1(&l1.blocks[1..]).unwrap().appended, 2);
        assert_eq!(sim.observe_l1(&l1.blocks).unwrap(), L1Update::default());
    }

    #[test]
    fn l2_reorg_keeps_height_and_safe() {
        let mut l1 = FakeL1::new();
        let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
        for _ in 0..20 {
            l1.mine();
            sim.observe_l1(&l1.blocks[l1.blocks.len() - 1..]).unwrap();
            sim.produce();
        }
        let before = sim.status();
        let new = sim.l2_reorg(2);
        assert_eq!(new.len(), 2);
        let after = sim.status();
        assert_eq!(after.unsafe_l2.number, before.unsafe_l2.number);
        assert_ne!(after.unsafe_l2.hash, before.unsafe_l2.hash);
        assert_eq!(after.safe_l2, before.safe_l2);
        check_invariants(&sim);
    }

    #[test]
    fn lying_status_has_an_origin_never_on_l1() {
        let mut l1 = FakeL1::new();
        let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
        for _ in 0..20 {
            l1.mine();
            sim.observe_l1(&l1.blocks[l1.blocks.len() - 1..]).unwrap();
            sim.produce();
        }
        let (st, forged) = sim.lying_status();
        assert_eq!(st.safe_l2, forged);
        assert!(l1.blocks.iter().all(|b| b.hash != forged.l1origin.hash));
        assert!(st.safe_l2.number <= st.unsafe_l2.number);
        assert!(not_ready_status(st).current_l1.is_unset());
    }

    #[test]
    fn each_lie_fabricates_one_label_with_a_real_origin() {
        let mut l1 = FakeL1::new();
        let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
        for i in 0..60 {
            if i % 3 == 0 {
                l1.mine();
                sim.observe_l1(&l1.blocks[l1.blocks.len() - 1..]).unwrap();
            }
            sim.produce();
        }
        let honest = sim.status();
        let on_l1 = |id: BlockId| l1.blocks.iter().any(|b| b.id() == id);
        for lie in Lie::ALL {
            assert_eq!(lie.as_str().parse::<Lie>(), Ok(lie));
            let (st, fake) = sim.lie_status(lie);
            assert!(sim.block(&fake.hash).is_none(), "{lie}: the fake is not a chain block");
            let labels = |s: &SyncStatus| {
                [s.unsafe_l2, s.local_safe(), s.safe_l2, s.finalized_l2].map(|b| b.hash)
            };
            let changed: Vec<usize> = labels(&st)
                .iter()
                .zip(labels(&honest))
                .enumerate()
                .filter(|(_, (a, b))| *a != b)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(on_l1(fake.l1origin), lie != Lie::BadOrigin, "{lie}: origin");
            assert!(st.finalized_l2.number <= st.safe_l2.number, "{lie}: {st:?}");
            assert!(st.safe_l2.number <= st.unsafe_l2.number, "{lie}: {st:?}");
            assert!(st.local_safe().number <= st.unsafe_l2.number, "{lie}: {st:?}");
            let want: &[usize] = match lie {
                Lie::Unsafe => &[0],
                Lie::LocalSafe => &[1],
                Lie::Safe => &[2],
                Lie::Finalized => &[3],
                Lie::BadOrigin => &[1, 2],
            };
            assert_eq!(changed, want, "{lie}: labels changed");
            if lie == Lie::Finalized || lie == Lie::Unsafe {
                let real = if lie == Lie::Unsafe { honest.unsafe_l2 } else { honest.finalized_l2 };
                assert_eq!(fake.number, real.number + 1, "{lie}: one ahead");
            }
        }
        assert!("nonsense".parse::<Lie>().is_err());
        assert_eq!("tip".parse::<Lie>(), Ok(Lie::Unsafe));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Mine,
        Produce,
        L1Reorg(u64),
        L2Reorg(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Mine),
            8 => Just(Step::Produce),
            1 => (1u64..6).prop_map(Step::L1Reorg),
            1 => (1u64..4).prop_map(Step::L2Reorg),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        #[test]
        fn invariants_hold_under_random_steps(steps in proptest::collection::vec(step(), 1..120)) {
            let mut l1 = FakeL1::new();
            let mut sim = Simulator::new(SimConfig::default(), l1.blocks[0]);
            let mut last_final = 0;
            for s in steps {
                match s {
                    Step::Mine => {
                        l1.mine();
                        sim.observe_l1(&l1.blocks[l1.blocks.len() - 1..]).unwrap();
                    }
                    Step::Produce => { sim.produce(); }
                    Step::L1Reorg(d) => {
                        let d = d.min(l1.blocks.len() as u64 - 1);
                        if d == 0 { continue; }
                        l1.reorg(d);
                        let from = l1.blocks.len() - d as usize;
                        match sim.observe_l1(&l1.blocks[from..]) {
                            Ok(_) => {}
                            Err(SimError::FinalizedReorged { .. }) => return Ok(()),
                            Err(e) => panic!("{e}"),
                        }
                    }
                    Step::L2Reorg(d) => { sim.l2_reorg(d); }
                }
                check_invariants(&sim);
                let f = sim.finalized_head().number;
                prop_assert!(f >= last_final);
                last_final = f;
            }
        }
    }
}
