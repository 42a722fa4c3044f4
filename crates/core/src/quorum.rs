//! Several sources (docs/architecture.md#several-sources): what the validator decides from the
//! recent statuses of every source before the usual checks.
//!
//! [`Votes`] holds, per source, its statuses of the last [`QuorumConfig::window_ms`] (by the
//! time the bus stored them: one clock for every source and replica), deduplicated by stream
//! sequence, so every validator replica that read the same statuses holds the same votes and
//! decides alike.
//!
//! - **Quorum (k ≥ 2)**: [`Votes::combine`] builds the candidate status label by label. Each of
//!   `unsafe_l2`, `local_safe_l2`, `safe_l2`, `finalized_l2` and `current_l1` is the newest block
//!   that at least k distinct sources reported *identically* (the whole reference: hash, number,
//!   parent, timestamp, L1 origin) within the window. Labels are chosen top-down so the result is
//!   ordered: local safe at or below the chosen unsafe, safe at or below local safe, finalized
//!   at or below safe. A source alone can hold a label back (by not reporting it) but never put
//!   one in: every chosen block was reported by k sources.
//! - **Failover (k = 1, several sources)**: [`Failover::choose`] picks the source to follow. A
//!   source is healthy when its last status is recent and its head moved within the stall bound
//!   (derived from the chain's block time) and its statuses were not rejected repeatedly. The
//!   active source is kept while healthy (hysteresis: a source ahead of it is no reason to
//!   switch); an unhealthy one is replaced by the healthy source with the highest head, and a
//!   source left behind cannot be chosen again for [`FailoverConfig::hold_ms`] while another is
//!   healthy, so two sources are never followed alternately.
//!
//! Invariant: nothing here checks L1 or the regression rules; the candidate goes through
//! [`crate::validate::Validator`] exactly like a single source's status.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::status::{L1BlockRef, L2BlockRef, SyncStatus};

#[cfg(test)]
mod proptests;

/// Settings of the several-sources rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumConfig {
    /// k: distinct sources that must report a block before it becomes a label (1: failover).
    pub k: usize,
    /// Statuses older than this (poll time, Unix ms) no longer vote.
    pub window_ms: u64,
    /// Statuses kept per source at most (the oldest are dropped first).
    pub per_source: usize,
}

impl Default for QuorumConfig {
    fn default() -> Self {
        Self { k: 1, window_ms: 30_000, per_source: 64 }
    }
}

/// One status of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// When it was observed (Unix ms): the validator uses the time the bus stored it.
    pub observed_ms: u64,
    /// Its stream sequence (deduplicates a status read twice).
    pub seq: u64,
    /// The status.
    pub status: SyncStatus,
}

/// A label of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// `unsafe_l2`.
    Unsafe,
    /// `local_safe_l2`.
    LocalSafe,
    /// `safe_l2`.
    Safe,
    /// `finalized_l2`.
    Finalized,
    /// `current_l1`.
    CurrentL1,
}

impl Label {
    /// The status field's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsafe => "unsafe_l2",
            Self::LocalSafe => "local_safe_l2",
            Self::Safe => "safe_l2",
            Self::Finalized => "finalized_l2",
            Self::CurrentL1 => "current_l1",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// No block of a label was reported by k sources within the window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no quorum for {label}: at most {best} of the {k} required sources reported the same block \
     ({sources} sources voting)"
)]
pub struct NoQuorum {
    /// The label.
    pub label: Label,
    /// The most sources that agreed on any eligible block of it.
    pub best: usize,
    /// k.
    pub k: usize,
    /// Sources with at least one status in the window.
    pub sources: usize,
}

/// A candidate status built from several sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined {
    /// The status (labels and `current_l1` chosen by quorum; other fields unset).
    pub status: SyncStatus,
    /// Per label, the sources that reported the chosen block.
    pub supporters: BTreeMap<Label, Vec<String>>,
}

/// The recent statuses of every source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Votes {
    sources: BTreeMap<String, VecDeque<Report>>,
}

impl Votes {
    /// Records a status of `source` (false: that sequence was recorded already). Keeps each
    /// source's statuses in sequence order, at most `per_source` of them.
    pub fn record(&mut self, source: &str, report: Report, per_source: usize) -> bool {
        let q = self.sources.entry(source.to_owned()).or_default();
        let at = q.partition_point(|r| r.seq < report.seq);
        if q.get(at).is_some_and(|r| r.seq == report.seq) {
            return false;
        }
        q.insert(at, report);
        while q.len() > per_source.max(1) {
            q.pop_front();
        }
        true
    }

    /// Drops statuses observed before `now_ms - window_ms`, and sources left without any.
    pub fn prune(&mut self, now_ms: u64, window_ms: u64) {
        let oldest = now_ms.saturating_sub(window_ms);
        for q in self.sources.values_mut() {
            q.retain(|r| r.observed_ms >= oldest);
        }
        self.sources.retain(|_, q| !q.is_empty());
    }

    /// Sources with at least one recorded status.
    pub fn sources(&self) -> impl Iterator<Item = &str> {
        self.sources.keys().map(String::as_str)
    }

    /// Number of sources with at least one recorded status.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The newest status of `source` (highest sequence).
    pub fn latest(&self, source: &str) -> Option<&Report> {
        self.sources.get(source).and_then(VecDeque::back)
    }

    /// Every recorded status of `source`, oldest first.
    pub fn reports(&self, source: &str) -> impl Iterator<Item = &Report> {
        self.sources.get(source).into_iter().flatten()
    }

    /// The candidate status of the k-of-n quorum over every label, from the statuses observed
    /// at or after `now_ms - window_ms` (see the module docs).
    pub fn combine(&self, k: usize, now_ms: u64, window_ms: u64) -> Result<Combined, NoQuorum> {
        let k = k.max(1);
        let oldest = now_ms.saturating_sub(window_ms);
        let live: Vec<(&str, &Report)> = self
            .sources
            .iter()
            .flat_map(|(s, q)| q.iter().map(move |r| (s.as_str(), r)))
            .filter(|(_, r)| r.observed_ms >= oldest)
            .collect();
        let sources = live.iter().map(|(s, _)| *s).collect::<BTreeSet<_>>().len();
        let no = |label, best| NoQuorum { label, best, k, sources };

        let l2 = |label: Label, pick: fn(&SyncStatus) -> L2BlockRef, max: u64| {
            let ballots = tally(live.iter().map(|(s, r)| (*s, pick(&r.status))));
            newest_agreed(ballots, k, |b| b.number, max).map_err(|best| no(label, best))
        };
        let (unsafe_l2, u) = l2(Label::Unsafe, |s| s.unsafe_l2, u64::MAX)?;
        let (local_safe, ls) = l2(Label::LocalSafe, SyncStatus::local_safe, unsafe_l2.number)?;
        let (safe_l2, sf) = l2(Label::Safe, |s| s.safe_l2, local_safe.number)?;
        let (finalized_l2, f) = l2(Label::Finalized, |s| s.finalized_l2, safe_l2.number)?;
        let ballots = tally(live.iter().map(|(s, r)| (*s, r.status.current_l1)));
        let (current_l1, c): (L1BlockRef, _) =
            newest_agreed(ballots, k, |b: &L1BlockRef| b.number, u64::MAX)
                .map_err(|best| no(Label::CurrentL1, best))?;

        let status = SyncStatus {
            current_l1,
            unsafe_l2,
            safe_l2,
            finalized_l2,
            local_safe_l2: Some(local_safe),
            ..SyncStatus::default()
        };
        let supporters = BTreeMap::from([
            (Label::Unsafe, u),
            (Label::LocalSafe, ls),
            (Label::Safe, sf),
            (Label::Finalized, f),
            (Label::CurrentL1, c),
        ]);
        Ok(Combined { status, supporters })
    }
}

/// Which sources reported each distinct block.
fn tally<'a, B: Eq + std::hash::Hash>(
    votes: impl Iterator<Item = (&'a str, B)>,
) -> HashMap<B, BTreeSet<&'a str>> {
    let mut out: HashMap<B, BTreeSet<&str>> = HashMap::new();
    for (source, block) in votes {
        out.entry(block).or_default().insert(source);
    }
    out
}

/// The newest block at or below `max` that at least `k` sources reported, with its sources;
/// at one number the block more sources reported wins, then the smaller hash (deterministic).
/// Err: the most sources any eligible block had.
fn newest_agreed<B: Copy + Eq + std::hash::Hash + HashOrder>(
    ballots: HashMap<B, BTreeSet<&str>>,
    k: usize,
    number: impl Fn(&B) -> u64,
    max: u64,
) -> Result<(B, Vec<String>), usize> {
    let eligible = ballots.iter().filter(|(b, _)| number(b) <= max);
    let best = eligible.clone().map(|(_, s)| s.len()).max().unwrap_or(0);
    eligible
        .filter(|(_, s)| s.len() >= k)
        .max_by(|(a, sa), (b, sb)| {
            (number(a), sa.len())
                .cmp(&(number(b), sb.len()))
                .then_with(|| b.order_hash().cmp(a.order_hash()))
        })
        .map(|(b, s)| (*b, s.iter().map(|s| (*s).to_owned()).collect()))
        .ok_or(best)
}

/// The hash a tie at one number is broken by.
trait HashOrder {
    fn order_hash(&self) -> &[u8];
}

impl HashOrder for L2BlockRef {
    fn order_hash(&self) -> &[u8] {
        self.hash.as_slice()
    }
}

impl HashOrder for L1BlockRef {
    fn order_hash(&self) -> &[u8] {
        self.hash.as_slice()
    }
}

/// Settings of failover between sources (k = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Block time assumed until the statuses tell it (ms).
    pub default_block_ms: u64,
    /// A source is stalled when its head has not moved for this many block times (or its last
    /// status is that old).
    pub stall_blocks: u64,
    /// Lower bound of the stall time (ms), whatever the block time.
    pub min_stall_ms: u64,
    /// A source whose statuses were rejected this many times in a row is unhealthy.
    pub max_rejections: u32,
    /// A source switched away from is not chosen again for this long while another is healthy.
    pub hold_ms: u64,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            default_block_ms: 2_000,
            stall_blocks: 5,
            min_stall_ms: 1_000,
            max_rejections: 3,
            hold_ms: 60_000,
        }
    }
}

/// What the validator knows of one source (from its statuses and the verdicts on them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Poll time (Unix ms) of its newest status.
    pub last_seen_ms: u64,
    /// Its unsafe head number.
    pub head: u64,
    /// Poll time (Unix ms) at which its head first reached `head`.
    pub head_since_ms: u64,
    /// Its statuses rejected in a row (reset by an accepted one).
    pub rejections_in_row: u32,
    /// Block time (ms) estimated from its heads' timestamps (0: unknown).
    pub block_ms: u64,
}

impl Health {
    /// Health from a source's recorded statuses (oldest first) and its rejection streak.
    pub fn from_reports<'a>(
        reports: impl IntoIterator<Item = &'a Report>,
        rejections_in_row: u32,
    ) -> Option<Self> {
        let mut h: Option<Self> = None;
        let mut first: Option<&L2BlockRef> = None;
        let mut last_head: Option<&L2BlockRef> = None;
        for r in reports {
            let head = &r.status.unsafe_l2;
            let first = *first.get_or_insert(head);
            let moved = last_head.is_none_or(|l| l.number != head.number || l.hash != head.hash);
            let e = h.get_or_insert_with(|| Self { rejections_in_row, ..Self::default() });
            e.last_seen_ms = e.last_seen_ms.max(r.observed_ms);
            if moved {
                e.head = head.number;
                e.head_since_ms = r.observed_ms;
            }
            let blocks = head.number.saturating_sub(first.number);
            // L2 timestamps are seconds.
            let spent = head.timestamp.saturating_sub(first.timestamp).saturating_mul(1000);
            if let Some(ms) = spent.checked_div(blocks) {
                e.block_ms = ms;
            }
            last_head = Some(head);
        }
        h
    }

    /// Stalled (no status, or no new head) for longer than `stall_ms` at `now_ms`, or rejected
    /// `max_rejections` times in a row.
    pub fn unhealthy(&self, now_ms: u64, stall_ms: u64, max_rejections: u32) -> bool {
        now_ms.saturating_sub(self.last_seen_ms) > stall_ms
            || now_ms.saturating_sub(self.head_since_ms) > stall_ms
            || self.rejections_in_row >= max_rejections.max(1)
    }
}

/// A change of the followed source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// The source followed before (None: the first choice).
    pub from: Option<String>,
    /// The source followed now.
    pub to: String,
}

/// Which source the validator follows (k = 1, several sources).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failover {
    active: Option<String>,
    /// Sources switched away from, and when.
    left: BTreeMap<String, u64>,
}

impl Failover {
    /// The followed source.
    pub fn active(&self) -> Option<&str> {
        self.active.as_deref()
    }

    /// The stall bound (ms) for a chain whose block time is `block_ms` (0: unknown).
    pub fn stall_ms(cfg: &FailoverConfig, block_ms: u64) -> u64 {
        let block = if block_ms == 0 { cfg.default_block_ms } else { block_ms };
        block.saturating_mul(cfg.stall_blocks.max(1)).max(cfg.min_stall_ms)
    }

    /// Re-decides the followed source from every source's health at `now_ms`; returns the
    /// switch when it changed. The active source is kept while healthy; otherwise the healthy
    /// source with the highest head (ties: smallest id) takes over, skipping sources left less
    /// than `hold_ms` ago unless no other is healthy. With no healthy source the active one is
    /// kept (nothing better to follow).
    pub fn choose(
        &mut self,
        cfg: &FailoverConfig,
        health: &BTreeMap<String, Health>,
        now_ms: u64,
    ) -> Option<Switch> {
        let block_ms = health.values().map(|h| h.block_ms).filter(|b| *b > 0).min().unwrap_or(0);
        let stall = Self::stall_ms(cfg, block_ms);
        let healthy = |id: &str| {
            health.get(id).is_some_and(|h| !h.unhealthy(now_ms, stall, cfg.max_rejections))
        };
        if let Some(a) = &self.active
            && healthy(a)
        {
            return None;
        }
        let held =
            |id: &str| self.left.get(id).is_some_and(|at| now_ms.saturating_sub(*at) < cfg.hold_ms);
        let best = |allow_held: bool| {
            health
                .iter()
                .filter(|(id, _)| healthy(id) && (allow_held || !held(id)))
                .filter(|(id, _)| self.active.as_deref() != Some(id.as_str()))
                .max_by(|(ia, a), (ib, b)| a.head.cmp(&b.head).then_with(|| ib.cmp(ia)))
                .map(|(id, _)| id.clone())
        };
        let next = best(false).or_else(|| best(true))?;
        let from = self.active.replace(next.clone());
        if let Some(f) = &from {
            self.left.insert(f.clone(), now_ms);
        }
        Some(Switch { from, to: next })
    }
}
