//! Figure 4: resident memory and CPU of each service over a window, at a given poll interval
//! and head rate (e.g. 2 s / 2 s for an idle-ish follower, 100 ms / 100 ms for 10 statuses/s).

use std::time::{Duration, Instant};

use crate::error::{BenchError, failed};
use crate::procfs;
use crate::rig::{Rig, RigOptions};

/// Settings of the footprint benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// The poller's interval.
    pub poll_interval: Duration,
    /// Time between head changes at the source.
    pub head_every: Duration,
    /// Warm-up before the window.
    pub warmup: Duration,
    /// Measured window.
    pub window: Duration,
}

/// Runs the benchmark and prints its figures.
pub async fn run(rig_opts: RigOptions, o: &Options) -> Result<(), BenchError> {
    let mut rig = Rig::start(RigOptions { els: 1, ..rig_opts }).await?;
    let anvil = rig.anvil_url().to_owned();
    rig.spawn_validator(&anvil)?;
    rig.spawn_poller(o.poll_interval)?;
    rig.spawn_drivers()?;
    rig.wait_ready(Duration::from_secs(60)).await?;
    println!(
        "footprint: poll interval {:?}, a new head every {:?}, warm-up {:?}, window {:?}",
        o.poll_interval, o.head_every, o.warmup, o.window
    );
    let mut tick = crate::rig::ticker(o.head_every);
    let warm_until = Instant::now() + o.warmup;
    while Instant::now() < warm_until {
        tick.tick().await;
        rig.advance().await?;
    }
    let pids: Vec<(String, u32)> = rig
        .services
        .iter()
        .map(|s| {
            s.proc.pid().map(|p| (s.name.clone(), p)).ok_or_else(|| failed(&s.name, "not running"))
        })
        .collect::<Result<_, _>>()?;
    let ticks0: Vec<u64> =
        pids.iter().map(|(_, p)| procfs::cpu_ticks(*p)).collect::<Result<_, _>>()?;
    let mut peak = vec![0u64; pids.len()];
    let polls0 = rig.source.status_requests();
    let t0 = Instant::now();
    let mut heads = 0u64;
    let mut sample = Instant::now();
    while t0.elapsed() < o.window {
        tick.tick().await;
        rig.advance().await?;
        heads += 1;
        if sample.elapsed() >= Duration::from_secs(1) {
            sample = Instant::now();
            for (i, (_, p)) in pids.iter().enumerate() {
                peak[i] = peak[i].max(procfs::rss_kib(*p)?);
            }
        }
    }
    let window = t0.elapsed().as_secs_f64();
    let hz = procfs::clock_ticks_per_sec() as f64;
    let polls = rig.source.status_requests() - polls0;
    println!(
        "  window {window:.1} s: {heads} head changes ({:.2}/s), {polls} polls ({:.2}/s)",
        heads as f64 / window,
        polls as f64 / window
    );
    for (i, (name, pid)) in pids.iter().enumerate() {
        let rss = procfs::rss_kib(*pid)?;
        peak[i] = peak[i].max(rss);
        let cpu = (procfs::cpu_ticks(*pid)? - ticks0[i]) as f64 / hz;
        println!(
            "  {name:<16} RSS {:>6.1} MiB (peak {:>6.1} MiB)  CPU {:>6.2} s = {:>5.2} % of a core",
            rss as f64 / 1024.0,
            peak[i] as f64 / 1024.0,
            cpu,
            100.0 * cpu / window
        );
    }
    rig.shutdown().await;
    Ok(())
}
