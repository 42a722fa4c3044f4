//! Figure 2: validator throughput against anvil. Raw statuses (a consistent, advancing chain
//! over real L1 origins) are published straight to `lightcl.status.<chain>.bench` while the
//! real validator consumes them; its L1 reads go through a counting HTTP proxy.

use std::time::{Duration, Instant};

use lightcl_bus::{Bus, NatsArgs, Publisher, status_msg_id, subjects};
use lightcl_core::SyncStatus;
use lightcl_harness::anvil::CountingProxy;
use lightcl_proto::{names, v1};

use crate::error::{BenchError, Ctx};
use crate::rig::{CHAIN_ID, Rig, RigOptions, metric_sum, wait_for};

/// Settings of the throughput benchmark.
#[derive(Debug, Clone)]
pub struct Options {
    /// Statuses in the burst.
    pub statuses: usize,
    /// Statuses of the paced phase (live L1, 10 per second).
    pub paced: usize,
}

const SOURCE_ID: &str = "bench";

/// Runs the benchmark and prints its figures.
pub async fn run(rig_opts: RigOptions, o: &Options) -> Result<(), BenchError> {
    let mut rig = Rig::start(RigOptions { els: 0, ..rig_opts }).await?;
    let proxy = CountingProxy::start(rig.anvil_url()).await.ctx("L1 proxy")?;
    rig.spawn_validator(&proxy.url())?;
    rig.wait_ready(Duration::from_secs(60)).await?;
    let bus = Bus::connect(&NatsArgs::local(rig.nats_url()), "lightcl-bench").await.ctx("NATS")?;
    bus.ensure_topology().await.ctx("topology")?;
    let publisher = Publisher::new(bus.jetstream(), Duration::from_secs(5));
    let mut seq = 0u64;

    // Warm-up.
    let mut warm = Vec::new();
    for _ in 0..50 {
        rig.produce().await?;
        warm.push(rig.status());
    }
    publish_all(&publisher, &warm, &mut seq).await?;
    let target = 50.0;
    wait_for("warm-up statuses", Duration::from_secs(60), || async {
        processed(&rig).await >= target
    })
    .await?;

    // Burst: statuses generated first (L1 mined along), then published as fast as PubAcks come.
    let mut burst = Vec::with_capacity(o.statuses);
    for _ in 0..o.statuses {
        rig.produce().await?;
        burst.push(rig.status());
    }
    let page0 = rig.metrics("validator").await?;
    let (req0, calls0) = (proxy.requests(), proxy.calls());
    let done0 = metric_sum(&page0, "lightcl_validator_statuses_total");
    let t0 = Instant::now();
    publish_all(&publisher, &burst, &mut seq).await?;
    let published_in = t0.elapsed();
    let want = done0 + burst.len() as f64;
    wait_for("the burst to be validated", Duration::from_secs(600), || async {
        processed(&rig).await >= want
    })
    .await?;
    let elapsed = t0.elapsed();
    let page1 = rig.metrics("validator").await?;
    report(
        "burst (statuses published back to back; L1 already past them)",
        burst.len(),
        elapsed,
        Some(published_in),
        &page0,
        &page1,
        proxy.requests() - req0,
        proxy.calls() - calls0,
    );

    // Paced: 10 statuses/s, one new L1 block every 6 statuses, as a live source would.
    let page0 = rig.metrics("validator").await?;
    let (req0, calls0) = (proxy.requests(), proxy.calls());
    let done0 = metric_sum(&page0, "lightcl_validator_statuses_total");
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let t0 = Instant::now();
    for _ in 0..o.paced {
        tick.tick().await;
        rig.produce().await?;
        publish_all(&publisher, &[rig.status()], &mut seq).await?;
    }
    let want = done0 + o.paced as f64;
    wait_for("the paced statuses", Duration::from_secs(60), || async {
        processed(&rig).await >= want
    })
    .await?;
    let page1 = rig.metrics("validator").await?;
    report(
        "paced (10 statuses/s, live L1)",
        o.paced,
        t0.elapsed(),
        None,
        &page0,
        &page1,
        proxy.requests() - req0,
        proxy.calls() - calls0,
    );
    rig.shutdown().await;
    Ok(())
}

async fn processed(rig: &Rig) -> f64 {
    rig.metrics("validator")
        .await
        .map(|p| metric_sum(&p, "lightcl_validator_statuses_total"))
        .unwrap_or(0.0)
}

async fn publish_all(
    publisher: &Publisher,
    statuses: &[SyncStatus],
    seq: &mut u64,
) -> Result<(), BenchError> {
    let subject = subjects::status(CHAIN_ID, SOURCE_ID);
    for st in statuses {
        *seq += 1;
        let msg = v1::RawStatus {
            chain_id: CHAIN_ID,
            source_id: SOURCE_ID.into(),
            observed_at_ms: 0,
            poll_seq: *seq,
            status: Some(v1::SyncStatus::from(st)),
        };
        let id = status_msg_id(CHAIN_ID, SOURCE_ID, st, 0);
        publisher.publish(&subject, names::RAW_STATUS, &msg, Some(&id)).await.ctx("publishing")?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    label: &str,
    n: usize,
    elapsed: Duration,
    published_in: Option<Duration>,
    page0: &str,
    page1: &str,
    requests: u64,
    calls: u64,
) {
    let d = |name: &str| metric_sum(page1, name) - metric_sum(page0, name);
    let hits = d("lightcl_validator_l1_cache_hits_total");
    // Each batch reads `latest` and `finalized` plus the numbers the cache did not hold.
    let fetched_numbers = calls.saturating_sub(2 * requests) as f64;
    let lookups = hits + fetched_numbers;
    let n_f = n as f64;
    println!("== validator throughput: {label}");
    println!(
        "  {n} statuses in {:.3} s = {:.0} statuses/s{}",
        elapsed.as_secs_f64(),
        n_f / elapsed.as_secs_f64(),
        published_in
            .map_or(String::new(), |p| format!(" (publishing them took {:.3} s)", p.as_secs_f64()))
    );
    println!(
        "  L1 HTTP requests {requests} = {:.3} per status (goal <= 1); JSON-RPC calls {calls} = {:.2} per status",
        requests as f64 / n_f,
        calls as f64 / n_f
    );
    println!(
        "  block-number lookups {lookups:.0}: cache hits {hits:.0}, fetched {fetched_numbers:.0} -> hit rate {:.1} % (lightcl_validator_l1_cache_hits_total)",
        if lookups > 0.0 { 100.0 * hits / lookups } else { 0.0 }
    );
    println!(
        "  verdicts in the window: target {:.0}, unchanged {:.0}, rejected {:.0}",
        verdict(page1, "target") - verdict(page0, "target"),
        verdict(page1, "unchanged") - verdict(page0, "unchanged"),
        verdict(page1, "rejected") - verdict(page0, "rejected"),
    );
}

fn verdict(page: &str, v: &str) -> f64 {
    let needle = format!("verdict=\"{v}\"");
    page.lines()
        .filter(|l| l.starts_with("lightcl_validator_statuses_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}
