//! Tip lag: from the moment the source could first answer with a new unsafe head to the mock
//! EL's first forkchoice update naming that head (or a later one), with the poller's default
//! settings (2 s interval), fixed cadence and phase-locked polling side by side in one run.
//!
//! The chain has 2 s blocks whose timestamps are wall-clock seconds: block `n` (timestamp
//! `ts`) becomes answerable at the source at `ts` + a gossip delay. The delay model: one base
//! delay per run drawn uniformly from `[gossip_min, gossip_max]` (how far this source is from
//! the sequencer), plus a per-block jitter uniform in `[0, gossip_jitter]`; every
//! `late_every`-th block is `late_by` later still (a slow gossip round). The EL's peers have
//! every block from the moment it is answerable (its first forkchoice update answers SYNCING,
//! as in tip following).
//!
//! A fixed cadence with an interval equal to the block time keeps one phase to the chain for
//! as long as the poller runs, so its lag depends on where that phase happens to fall. To
//! measure it over every phase (what a fleet of pollers, or one restarted now and then, sees),
//! the fixed-cadence mode shifts the chain's answerable instants by a new random offset in
//! `[0, 2 s)` every `segment` blocks; the phase-locked mode runs without shifts (its lag does
//! not depend on its start phase once locked).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::B256;

use crate::error::{BenchError, failed};
use crate::rig::{Rig, RigOptions};
use crate::stats::{Summary, ms};

/// Settings of the tip-lag benchmark (its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Blocks measured per mode (2 s each).
    #[arg(long, default_value_t = 60)]
    pub blocks: usize,
    /// Blocks before each mode's window (learning, warm-up).
    #[arg(long, default_value_t = 15)]
    pub warmup: usize,
    /// Lower bound of the run's base gossip delay.
    #[arg(long = "gossip-min", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub gossip_min: Duration,
    /// Upper bound of the run's base gossip delay.
    #[arg(long = "gossip-max", default_value = "400ms", value_parser = humantime::parse_duration)]
    pub gossip_max: Duration,
    /// Per-block jitter on top of the base delay.
    #[arg(long = "gossip-jitter", default_value = "40ms", value_parser = humantime::parse_duration)]
    pub gossip_jitter: Duration,
    /// Every this many blocks one arrives `late_by` later (0: never).
    #[arg(long = "late-every", default_value_t = 0)]
    pub late_every: usize,
    /// How much later.
    #[arg(long = "late-by", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub late_by: Duration,
    /// Random seed of the delays (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The fixed-cadence mode draws a new chain phase every this many blocks.
    #[arg(long, default_value_t = 5)]
    pub segment: usize,
}

/// A small deterministic generator (xorshift64*), enough for delays.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi]`.
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros();
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        lo + Duration::from_micros(if span == 0 { 0 } else { self.next() % (span + 1) })
    }
}

/// One mode's figures.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    lag: Summary,
    /// `optimism_syncStatus` requests per block.
    polls_per_block: f64,
    /// All HTTP requests to the source per block.
    requests_per_block: f64,
}

/// Runs both modes and prints their figures.
pub async fn run(rig_opts: RigOptions, o: &Options) -> Result<(), BenchError> {
    let mut rig = Rig::start(RigOptions { els: 1, ..rig_opts }).await?;
    let anvil = rig.anvil_url().to_owned();
    rig.spawn_validator(&anvil)?;
    rig.spawn_drivers()?;
    let seed = o.seed.unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.subsec_nanos().into())
    });
    let mut rng = Rng(seed.max(1));
    let base = rng.between(o.gossip_min, o.gossip_max);
    println!(
        "tip lag: 2 s blocks, {} blocks per mode after {} warm-up blocks; gossip delay {} ms \
         (drawn from {}..{} ms, seed {}) + 0..{} ms jitter{}",
        o.blocks,
        o.warmup,
        ms(base),
        ms(o.gossip_min),
        ms(o.gossip_max),
        seed,
        ms(o.gossip_jitter),
        if o.late_every > 0 {
            format!(", every {}th block {} ms later", o.late_every, ms(o.late_by))
        } else {
            String::new()
        }
    );
    catch_up(&mut rig).await?;
    let mut results = Vec::new();
    for (mode, locked) in [("fixed cadence", false), ("phase-locked", true)] {
        rig.spawn_poller_with(&[format!("--poll.phase-lock={locked}")])?;
        rig.wait_ready(Duration::from_secs(60)).await?;
        let shift = (!locked).then_some(o.segment.max(1));
        let out = measure(&mut rig, o, base, shift, &mut rng).await?;
        println!(
            "  {mode:<14} n={:<4} p50 {:>8} p90 {:>8} p99 {:>8} max {:>8} ms | \
             syncStatus/block {:.3}, requests/block {:.3}",
            out.lag.n,
            ms(out.lag.p50),
            ms(out.lag.p90),
            ms(out.lag.p99),
            ms(out.lag.max),
            out.polls_per_block,
            out.requests_per_block
        );
        rig.stop_service("poller").await;
        rig.remove_service("poller");
        results.push(out);
    }
    if let [fixed, locked] = results.as_slice() {
        let r = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        println!(
            "  ratio phase-locked/fixed: p50 {:.3}x  p99 {:.3}x  syncStatus per block {:.3}x",
            r(locked.lag.p50, fixed.lag.p50),
            r(locked.lag.p99, fixed.lag.p99),
            locked.polls_per_block / fixed.polls_per_block.max(1e-9)
        );
    }
    rig.shutdown().await;
    Ok(())
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Produces blocks at once until the next one's timestamp is in the future (the simulated
/// chain starts at anvil's genesis time).
async fn catch_up(rig: &mut Rig) -> Result<(), BenchError> {
    while Duration::from_secs(rig.status().unsafe_l2.timestamp + 2) <= unix_now() {
        rig.advance().await?;
    }
    Ok(())
}

/// Serves `warmup + blocks` blocks on their schedule; measures the last `blocks`.
async fn measure(
    rig: &mut Rig,
    o: &Options,
    base: Duration,
    shift_every: Option<usize>,
    rng: &mut Rng,
) -> Result<Outcome, BenchError> {
    catch_up(rig).await?;
    let el = rig.els[0].clone();
    let mut numbers: HashMap<B256, u64> = HashMap::new();
    let mut answerable: Vec<(u64, Instant)> = Vec::new();
    let (mut polls0, mut requests0) = (0, 0);
    let mut offset = Duration::ZERO;
    for i in 0..o.warmup + o.blocks {
        if let Some(every) = shift_every
            && i % every == 0
        {
            offset = rng.between(Duration::ZERO, Duration::from_millis(1999));
        }
        if i == o.warmup {
            polls0 = rig.source.status_requests();
            requests0 = rig.source.requests();
        }
        let ts = rig.status().unsafe_l2.timestamp + 2;
        let mut delay = base + rng.between(Duration::ZERO, o.gossip_jitter);
        if o.late_every > 0 && i % o.late_every == o.late_every - 1 {
            delay += o.late_by;
        }
        let due = Duration::from_secs(ts) + delay + offset;
        tokio::time::sleep(due.saturating_sub(unix_now())).await;
        let b = rig.advance().await?;
        let at = Instant::now();
        numbers.insert(b.hash, b.number);
        if i >= o.warmup {
            answerable.push((b.number, at));
        }
    }
    // The last block's update.
    let last = answerable.last().map_or(0, |(n, _)| *n);
    crate::rig::wait_for("the EL's update for the last block", Duration::from_secs(10), || {
        let el = el.clone();
        let numbers = numbers.clone();
        async move {
            el.fcus()
                .iter()
                .any(|f| numbers.get(&f.state.head_block_hash).is_some_and(|n| *n >= last))
        }
    })
    .await?;
    let blocks = u64::try_from(o.blocks).unwrap_or(u64::MAX).max(1) as f64;
    let polls = (rig.source.status_requests() - polls0) as f64 / blocks;
    let requests = (rig.source.requests() - requests0) as f64 / blocks;
    let calls: Vec<(Instant, u64)> = el
        .calls()
        .into_iter()
        .filter_map(|c| {
            let f = c.fcu?;
            Some((c.at, *numbers.get(&f.state.head_block_hash)?))
        })
        .collect();
    let mut lags = Vec::new();
    for (n, at) in &answerable {
        let first = calls.iter().find(|(t, m)| *t >= *at && *m >= *n).map(|(t, _)| *t - *at);
        lags.push(first.ok_or_else(|| failed("tip lag", format!("no FCU for block #{n}")))?);
    }
    let lag = Summary::of(&lags).ok_or_else(|| failed("tip lag", "no blocks measured"))?;
    Ok(Outcome { lag, polls_per_block: polls, requests_per_block: requests })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_in_their_range_and_follow_the_seed() {
        let (lo, hi) = (Duration::from_millis(50), Duration::from_millis(400));
        let mut a = Rng(7);
        let mut b = Rng(7);
        for _ in 0..1000 {
            let d = a.between(lo, hi);
            assert!((lo..=hi).contains(&d), "{d:?}");
            assert_eq!(d, b.between(lo, hi));
        }
        assert_eq!(Rng(3).between(lo, lo), lo);
    }
}
