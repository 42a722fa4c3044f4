//! The validator's view of every source of its chain: the vote window (fed by the window reader
//! and by the statuses this replica handles) and the followed source. The decisions are
//! `lightcl_core::quorum`'s; this only keeps their inputs (docs/architecture.md#several-sources).

use std::collections::BTreeMap;

use lightcl_core::quorum::{Failover, FailoverConfig, Health, QuorumConfig, Report, Switch, Votes};
use lightcl_core::validate::{Observation, Rejection};

/// Source id of a status combined from several sources.
pub const QUORUM_SOURCE: &str = "quorum";

/// What to do with a delivered status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Judge this status (the delivered one, or the quorum's candidate) as usual.
    Decide {
        /// The status to judge.
        obs: Box<Observation>,
        /// The sources behind it.
        sources: Vec<String>,
    },
    /// Failover follows another source: record only.
    Standby {
        /// The followed source.
        active: String,
    },
    /// No label has k agreeing sources: reject (nothing to publish).
    NoQuorum(Rejection),
}

/// One source as `GetStatus` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceView {
    /// Its id.
    pub id: String,
    /// Its newest unsafe head number.
    pub head: u64,
    /// Blocks behind the most advanced source.
    pub lag: u64,
    /// Poll time (Unix ms) of its newest status.
    pub last_seen_ms: u64,
    /// Statuses rejected in a row.
    pub rejections_in_row: u32,
    /// Followed (failover) or counted (quorum) right now.
    pub chosen: bool,
}

/// The votes, the failover state and the rejection streaks.
#[derive(Debug, Clone)]
pub struct Sources {
    quorum: QuorumConfig,
    failover_cfg: FailoverConfig,
    votes: Votes,
    failover: Failover,
    rejections: BTreeMap<String, u32>,
}

impl Sources {
    /// Empty, with these settings.
    pub fn new(quorum: QuorumConfig, failover_cfg: FailoverConfig) -> Self {
        Self {
            quorum,
            failover_cfg,
            votes: Votes::default(),
            failover: Failover::default(),
            rejections: BTreeMap::new(),
        }
    }

    /// How long a status counts as a vote (ms).
    pub fn window_ms(&self) -> u64 {
        self.quorum.window_ms
    }

    /// Records a status (stream sequence `seq`) of `obs.source_id` polled at `observed_ms`;
    /// a status recorded before is ignored.
    pub fn record(&mut self, obs: &Observation, seq: u64, observed_ms: u64) {
        let report = Report { observed_ms, seq, status: obs.status.clone() };
        self.votes.record(&obs.source_id, report, self.quorum.per_source);
    }

    fn health(&self) -> BTreeMap<String, Health> {
        self.votes
            .sources()
            .filter_map(|s| {
                let streak = self.rejections.get(s).copied().unwrap_or(0);
                Some((s.to_owned(), Health::from_reports(self.votes.reports(s), streak)?))
            })
            .collect()
    }

    /// What to do with `delivered` at `now_ms` (after it was recorded), and the failover
    /// switch this caused, if any.
    pub fn next(&mut self, delivered: &Observation, now_ms: u64) -> (Next, Option<Switch>) {
        self.votes.prune(now_ms, self.quorum.window_ms);
        if self.quorum.k >= 2 {
            return match self.votes.combine(self.quorum.k, now_ms, self.quorum.window_ms) {
                Ok(c) => {
                    let mut sources: Vec<String> =
                        c.supporters.values().flatten().cloned().collect();
                    sources.sort();
                    sources.dedup();
                    let obs = Observation {
                        chain_id: delivered.chain_id,
                        source_id: QUORUM_SOURCE.to_owned(),
                        status: c.status,
                    };
                    (Next::Decide { obs: Box::new(obs), sources }, None)
                }
                Err(e) => {
                    let r = Rejection::from(&e);
                    (Next::NoQuorum(r), None)
                }
            };
        }
        let decide = || Next::Decide {
            obs: Box::new(delivered.clone()),
            sources: vec![delivered.source_id.clone()],
        };
        if self.votes.len() < 2 {
            return (decide(), None);
        }
        let switch = self.failover.choose(&self.failover_cfg, &self.health(), now_ms);
        match self.failover.active() {
            Some(a) if a != delivered.source_id => (Next::Standby { active: a.to_owned() }, switch),
            _ => (decide(), switch),
        }
    }

    /// Counts the verdict on a status of `source` into its rejection streak: `faulty` (a
    /// rejection that says the source is wrong) adds one, anything else ends the streak. A
    /// status that is merely older than the stored target (a replay or regression rule, e.g.
    /// statuses handed out of order to two replicas) is not the source's fault.
    pub fn verdict(&mut self, source: &str, faulty: bool) {
        if source == QUORUM_SOURCE {
            return;
        }
        let streak = self.rejections.entry(source.to_owned()).or_default();
        *streak = if faulty { streak.saturating_add(1) } else { 0 };
    }

    /// Whether a status of `source` may be judged from its early copy: k = 1 and no other
    /// source in the window (so no failover choice depends on statuses not yet recorded).
    pub fn early_eligible(&self, source: &str) -> bool {
        self.quorum.k == 1 && self.votes.sources().all(|s| s == source)
    }

    /// Every source with a status in the window, most advanced first.
    pub fn views(&self) -> Vec<SourceView> {
        let health = self.health();
        let top = health.values().map(|h| h.head).max().unwrap_or(0);
        let active = self.failover.active();
        let mut out: Vec<SourceView> = health
            .iter()
            .map(|(id, h)| SourceView {
                id: id.clone(),
                head: h.head,
                lag: top.saturating_sub(h.head),
                last_seen_ms: h.last_seen_ms,
                rejections_in_row: h.rejections_in_row,
                chosen: self.quorum.k >= 2 || active.is_none_or(|a| a == id),
            })
            .collect();
        out.sort_by(|a, b| b.head.cmp(&a.head).then_with(|| a.id.cmp(&b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcl_core::SyncStatus;

    fn obs(source: &str, head: u64) -> Observation {
        let mut status = SyncStatus::default();
        status.unsafe_l2.number = head;
        status.unsafe_l2.timestamp = 2 * head;
        Observation { chain_id: 1, source_id: source.into(), status }
    }

    #[test]
    fn failover_follows_one_source_and_switches_when_it_stalls() {
        let mut s = Sources::new(QuorumConfig::default(), FailoverConfig::default());
        let mut seq = 0;
        let mut feed = |s: &mut Sources, src: &str, head: u64, at: u64| {
            seq += 1;
            let o = obs(src, head);
            s.record(&o, seq, at);
            s.next(&o, at)
        };
        // One source: decided as it comes.
        assert!(matches!(feed(&mut s, "a", 10, 1_000).0, Next::Decide { .. }));
        // Two: the first choice is kept while it moves.
        let (n, sw) = feed(&mut s, "b", 12, 2_000);
        assert_eq!(sw.map(|x| x.to), Some("b".into()));
        assert!(matches!(n, Next::Decide { .. }));
        let (n, _) = feed(&mut s, "a", 13, 3_000);
        assert_eq!(n, Next::Standby { active: "b".into() });
        // b stalls at 12 while a moves: after the stall bound (5 blocks of 2 s), a takes over.
        for i in 0..12 {
            let (n, sw) = feed(&mut s, "a", 14 + i, 4_000 + 1_000 * i);
            if let Some(sw) = sw {
                assert_eq!((sw.from.as_deref(), sw.to.as_str()), (Some("b"), "a"));
                assert!(matches!(n, Next::Decide { .. }));
                assert!(i >= 7, "switched after {i} s");
                return;
            }
        }
        panic!("never switched away from the stalled source");
    }

    #[test]
    fn rejections_in_a_row_make_a_source_unhealthy() {
        let mut s = Sources::new(QuorumConfig::default(), FailoverConfig::default());
        let (a, b) = (obs("a", 10), obs("b", 10));
        s.record(&a, 1, 1_000);
        s.record(&b, 2, 1_000);
        assert!(matches!(s.next(&a, 1_000).0, Next::Decide { .. }));
        for _ in 0..3 {
            s.verdict("a", true);
        }
        let (n, sw) = s.next(&b, 1_100);
        assert_eq!(sw.map(|x| x.to), Some("b".into()));
        assert!(matches!(n, Next::Decide { .. }));
        assert_eq!(s.views().iter().find(|v| v.id == "a").map(|v| v.rejections_in_row), Some(3));
    }
}
