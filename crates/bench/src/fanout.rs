//! Figures 3 and 5: one poller and one validator driving N engine-drivers, each with its own
//! mock EL. Fan-out delay = from a target's JetStream timestamp to the moment the LAST EL
//! receives a forkchoice update for that head (or a later one); source load = the requests
//! the source actually received per second, vs one follow-mode node per EL polling it.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_primitives::B256;
use lightcl_bus::{Bus, NatsArgs, subjects};
use lightcl_proto::v1;
use prost::Message;

use crate::error::{BenchError, Ctx};
use crate::rig::{Rig, RigOptions, wait_for};
use crate::stats::Summary;
use crate::timeline::{self, Fcu};

/// Settings of the fan-out benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Engine-drivers / mock ELs.
    pub els: usize,
    /// Time between head changes at the source.
    pub head_every: Duration,
    /// The poller's interval.
    pub poll_interval: Duration,
    /// Measured window.
    pub window: Duration,
}

/// Maps wall-clock nanoseconds onto this process's monotonic clock.
#[derive(Debug, Clone, Copy)]
struct Clock {
    instant: Instant,
    wall_ns: i128,
}

impl Clock {
    fn now() -> Self {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Self { instant: Instant::now(), wall_ns: i128::try_from(wall.as_nanos()).unwrap_or(0) }
    }

    fn instant_of(&self, wall_ns: i128) -> Instant {
        let delta = wall_ns - self.wall_ns;
        let abs = Duration::from_nanos(u64::try_from(delta.unsigned_abs()).unwrap_or(u64::MAX));
        if delta >= 0 { self.instant + abs } else { self.instant - abs }
    }
}

/// The engine-drivers' pids.
fn driver_pids(rig: &Rig) -> Result<Vec<u32>, BenchError> {
    rig.services
        .iter()
        .filter(|s| s.name.starts_with("engine-driver"))
        .map(|s| s.proc.pid().ok_or_else(|| crate::error::failed(&s.name, "not running")))
        .collect()
}

/// CPU ticks (user + system) used so far by all of `pids`.
fn cpu_ticks(pids: &[u32]) -> Result<u64, BenchError> {
    pids.iter().map(|p| crate::procfs::cpu_ticks(*p)).sum()
}

/// Runs the benchmark and prints its figures.
pub async fn run(rig_opts: RigOptions, o: &Options) -> Result<(), BenchError> {
    let mut rig = Rig::start(RigOptions { els: o.els, ..rig_opts }).await?;
    let anvil = rig.anvil_url().to_owned();
    rig.spawn_validator(&anvil)?;
    rig.spawn_poller(o.poll_interval)?;
    rig.spawn_drivers()?;
    rig.wait_ready(Duration::from_secs(180)).await?;
    println!(
        "fan-out: {} engine-drivers, a new head every {:?}, poll interval {:?}, window {:?}",
        o.els, o.head_every, o.poll_interval, o.window
    );
    let bus = Bus::connect(&NatsArgs::local(rig.nats_url()), "lightcl-bench").await.ctx("NATS")?;
    let js = bus.jetstream();
    let last_seq = || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream(subjects::TARGETS_STREAM).await.ctx("targets stream")?;
            Ok::<u64, BenchError>(s.info().await.ctx("stream info")?.state.last_sequence)
        }
    };

    // Warm-up until every EL follows.
    let mut tick = crate::rig::ticker(o.head_every);
    let mut last = rig.status().unsafe_l2;
    let warm_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < warm_until {
        tick.tick().await;
        last = rig.advance().await?;
    }
    let want = last.hash;
    let els = rig.els.clone();
    wait_for("every EL to follow", Duration::from_secs(60), || async {
        els.iter().all(|el| {
            el.calls()
                .iter()
                .any(|c| c.fcu.as_ref().is_some_and(|f| f.state.head_block_hash == want))
        })
    })
    .await?;

    let skips: Vec<usize> = els.iter().map(|e| e.calls().len()).collect();
    let drivers = driver_pids(&rig)?;
    let ticks0 = cpu_ticks(&drivers)?;
    let clock = Clock::now();
    let seq0 = last_seq().await?;
    let polls0 = rig.source.status_requests();
    let requests0 = rig.source.requests();
    let t0 = Instant::now();
    let mut produced = 0usize;
    while t0.elapsed() < o.window {
        tick.tick().await;
        rig.advance().await?;
        produced += 1;
    }
    let window = t0.elapsed();
    let driver_cpu = cpu_ticks(&drivers)?.saturating_sub(ticks0) as f64
        / crate::procfs::clock_ticks_per_sec() as f64;
    let polls = rig.source.status_requests() - polls0;
    let requests = rig.source.requests() - requests0;
    let last_head = rig.status().unsafe_l2;
    let _ =
        wait_for("every EL to reach the last head", Duration::from_secs(20), || async {
            els.iter().all(|el| {
                el.calls().iter().rev().take(20).any(|c| {
                    c.fcu.as_ref().is_some_and(|f| f.state.head_block_hash == last_head.hash)
                })
            })
        })
        .await;
    let seq1 = last_seq().await?;

    // Targets of the window with their stream timestamps.
    let stream = js.get_stream(subjects::TARGETS_STREAM).await.ctx("targets stream")?;
    let mut targets: Vec<(Instant, B256, u64)> = Vec::new();
    for seq in seq0 + 1..=seq1 {
        let m = stream.get_raw_message(seq).await.ctx("reading a target")?;
        let t = v1::Target::decode(m.payload.as_ref()).ctx("decoding a target")?;
        let core = t.to_core().ctx("target")?;
        targets.push((
            clock.instant_of(m.time.unix_timestamp_nanos()),
            core.unsafe_l2.hash,
            core.unsafe_l2.number,
        ));
    }
    let numbers: HashMap<B256, u64> = rig.chain().iter().map(|b| (b.hash, b.number)).collect();
    let logs: Vec<Vec<Fcu>> =
        els.iter().zip(&skips).map(|(el, skip)| timeline::fcus(el, *skip, &numbers)).collect();
    let mut last_el = Vec::new();
    let mut every_el = Vec::new();
    let mut incomplete = 0usize;
    let mut coalesced = 0usize;
    for (at, hash, number) in &targets {
        let mut worst: Option<Duration> = None;
        let mut complete = true;
        for log in &logs {
            match timeline::first_reaching(log, *at, *number) {
                Some(f) => {
                    if f.head != *hash {
                        coalesced += 1;
                    }
                    let d = f.at.saturating_duration_since(*at);
                    every_el.push(d);
                    worst = Some(worst.map_or(d, |w| w.max(d)));
                }
                None => complete = false,
            }
        }
        match (complete, worst) {
            (true, Some(w)) => last_el.push(w),
            _ => incomplete += 1,
        }
    }
    println!("== fan-out to {} ELs", o.els);
    match Summary::of(&last_el) {
        Some(s) => println!("  target stored -> LAST EL's FCU: {s}"),
        None => println!("  no target reached every EL"),
    }
    if let Some(s) = Summary::of(&every_el) {
        println!("  target stored -> each EL's FCU: {s}");
    }
    println!(
        "  targets {} for {} heads produced; not reaching every EL {}; (EL, target) pairs reached via a later head {}",
        targets.len(),
        produced,
        incomplete,
        coalesced
    );
    let per_target = 1000.0 * driver_cpu / (o.els as f64 * targets.len().max(1) as f64);
    println!(
        "  engine-driver CPU in the window: {driver_cpu:.2} s for {} drivers x {} targets = {per_target:.3} ms per driver per target",
        o.els,
        targets.len()
    );
    if let Some(s) = Summary::of(&last_el) {
        println!(
            "  goal p99 <= 50 ms: {}",
            if s.p99 <= Duration::from_millis(50) { "met" } else { "MISSED" }
        );
    }
    let secs = window.as_secs_f64();
    let per_node = 1.0 / o.poll_interval.as_secs_f64();
    println!("== source load with {} execution clients", o.els);
    println!(
        "  measured at the source: {polls} optimism_syncStatus requests in {secs:.1} s = {:.1} req/s (HTTP requests of any method: {requests})",
        polls as f64 / secs
    );
    println!(
        "  one follow-mode node per EL: {} x 1/{:?} = {:.1} req/s ({:.0}x more)",
        o.els,
        o.poll_interval,
        o.els as f64 * per_node,
        (o.els as f64 * per_node) / (polls as f64 / secs).max(1e-9)
    );
    rig.shutdown().await;
    Ok(())
}
