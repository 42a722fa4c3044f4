//! Matching heads to forkchoice updates: when did an EL first hear of a head (or a later one)?

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_harness::mock_el::{FcuReply, MockEl};

/// One forkchoice update as the mock EL received it.
#[derive(Debug, Clone, Copy)]
pub struct Fcu {
    /// When the EL handled it (in-process clock).
    pub at: Instant,
    /// Head block hash.
    pub head: B256,
    /// Head number (0 when unknown).
    pub number: u64,
    /// True when answered VALID.
    pub valid: bool,
}

/// Every forkchoice update of `el` after the first `skip` calls, in arrival order.
pub fn fcus(el: &MockEl, skip: usize, numbers: &HashMap<B256, u64>) -> Vec<Fcu> {
    el.calls()
        .into_iter()
        .skip(skip)
        .filter_map(|c| {
            let f = c.fcu?;
            let head = f.state.head_block_hash;
            Some(Fcu {
                at: c.at,
                head,
                number: numbers.get(&head).copied().unwrap_or(0),
                valid: f.reply == FcuReply::Valid,
            })
        })
        .collect()
}

/// The first update at or after `since` whose head is `number` or above (a driver that
/// coalesced a head away answers it with a later one). `fcus` is in arrival order.
pub fn first_reaching(fcus: &[Fcu], since: Instant, number: u64) -> Option<&Fcu> {
    let start = fcus.partition_point(|f| f.at < since);
    fcus[start..].iter().find(|f| f.number >= number)
}

/// Latency of each head from `served` (when the source first served it) to the first update
/// reaching it; also how many heads were never served (replaced between two polls), never
/// reached, and reached only by a later head (coalesced).
#[derive(Debug, Default)]
pub struct Matched {
    /// Latencies of the heads that were served and reached.
    pub latencies: Vec<Duration>,
    /// Heads the source never served.
    pub unserved: usize,
    /// Heads served but never reached.
    pub unreached: usize,
    /// Heads reached only through a later head.
    pub coalesced: usize,
}

/// Matches `heads` (hash, number) against `served` and one EL's `fcus`.
pub fn match_heads(
    heads: &[(B256, u64)],
    served: &HashMap<B256, Instant>,
    fcus: &[Fcu],
) -> Matched {
    let mut m = Matched::default();
    for (hash, number) in heads {
        let Some(t) = served.get(hash) else {
            m.unserved += 1;
            continue;
        };
        match first_reaching(fcus, *t, *number) {
            None => m.unreached += 1,
            Some(f) => {
                if f.head != *hash {
                    m.coalesced += 1;
                }
                m.latencies.push(f.at.saturating_duration_since(*t));
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_direct_and_coalesced_heads() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let h = |i: u8| B256::repeat_byte(i);
        let fcus = vec![
            Fcu { at: t0 + ms(2), head: h(1), number: 1, valid: false },
            // Head 2 was coalesced away: head 3 reaches it.
            Fcu { at: t0 + ms(9), head: h(3), number: 3, valid: true },
        ];
        let served = HashMap::from([(h(1), t0), (h(2), t0 + ms(4)), (h(3), t0 + ms(6))]);
        let heads = [(h(1), 1), (h(2), 2), (h(3), 3), (h(4), 4)];
        let m = match_heads(&heads, &served, &fcus);
        assert_eq!(m.latencies, vec![ms(2), ms(5), ms(3)]);
        assert_eq!((m.unserved, m.unreached, m.coalesced), (1, 0, 1));
        // Updates before the serving moment do not count.
        assert!(first_reaching(&fcus, t0 + ms(10), 1).is_none());
    }
}
