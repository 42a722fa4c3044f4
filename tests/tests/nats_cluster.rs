//! The pipeline on a real 3-server JetStream cluster (R3 streams, every service given all three
//! URLs), while one EL follows the source:
//!
//! 1. `kill -9` the server leading `LIGHTCL_TARGETS`, keep it down [`DOWN_FOR`], restart it on
//!    the same ports and store (the cluster is healthy again: routes, meta leader, `/healthz`);
//! 2. a rolling restart: every server in turn (SIGTERM, start, cluster healthy before the next).
//!
//! After each fault the EL must resume following within [`RESUME_BOUND`]: a VALID forkchoice
//! update with a head newer than the source's head at the fault (the measured "resume" time,
//! from the fault), and the source's then-current heads once the cluster is healthy again.
//! Before the faults and after the last restart every stream and the KV bucket must have three
//! replicas, a leader and two current peers. At the end: [`Devnet::check_invariants`] over every forkchoice update, safe/finalized never
//! going back at the EL, the stored targets (read from the R3 stream) with no revision reused or
//! skipped within an epoch, and the targets the driver applied never going back in
//! (epoch, revision). Measured times are printed (`resume after ...`) for BENCHMARKS.md §7.
//! `LIGHTCL_CLUSTER_KEEP_DIR` keeps the logs and stores, `LIGHTCL_CLUSTER_LOG` sets `RUST_LOG`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_bus::subjects;
use lightcl_devnet::{Devnet, DevnetConfig};
use lightcl_harness::mock_el::FcuReply;
use lightcl_harness::wait;
use lightcl_proto::v1;
use lightcl_tests::Action::*;
use lightcl_tests::{ensure_binaries, fast_config, finish, run};
use prost::Message as _;

/// How long the killed server stays down.
const DOWN_FOR: Duration = Duration::from_secs(2);
/// Bound on the EL resuming after each fault (first newer head; then the source's heads).
const RESUME_BOUND: Duration = Duration::from_secs(15);

/// Waits until the EL has a VALID FCU newer than `before` (source unsafe/safe/finalized numbers
/// at the fault) and returns the time from `fault` to the first such FCU.
async fn resume_time(
    net: &Devnet,
    what: &str,
    fault: Instant,
    before: (u64, u64, u64),
) -> Result<Duration, String> {
    let (h, s, f) = before;
    let first = |n: &Devnet| -> Option<Instant> {
        n.el(0).calls().iter().find_map(|c| {
            let fcu = c.fcu.as_ref()?;
            let num = |hash| n.block_number(hash).unwrap_or(0);
            (c.at >= fault
                && fcu.reply == FcuReply::Valid
                && num(fcu.state.head_block_hash) > h
                && num(fcu.state.safe_block_hash) >= s
                && num(fcu.state.finalized_block_hash) >= f)
                .then_some(c.at)
        })
    };
    net.wait_for(&format!("the EL resumes after {what}"), RESUME_BOUND, |n| first(n).is_some())
        .await
        .map_err(|e| e.to_string())?;
    let at = first(net).ok_or("resume FCU vanished")?;
    Ok(at - fault)
}

/// The longest time between two consecutive VALID FCUs at or after `from`.
fn longest_gap(net: &Devnet, from: Instant) -> Duration {
    let valid: Vec<Instant> = net
        .el(0)
        .calls()
        .iter()
        .filter(|c| c.at >= from && c.fcu.as_ref().is_some_and(|f| f.reply == FcuReply::Valid))
        .map(|c| c.at)
        .collect();
    valid.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

fn source_numbers(net: &Devnet) -> (u64, u64, u64) {
    let st = net.source_status();
    (st.unsafe_l2.number, st.safe_l2.number, st.finalized_l2.number)
}

/// Every stored target of the chain, in stream order.
async fn stored_targets(urls: &str, chain: u64) -> Result<Vec<v1::Target>, String> {
    let servers: Vec<&str> = urls.split(',').map(str::trim).collect();
    let client = async_nats::connect(servers).await.map_err(|e| format!("connect: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let mut stream =
        js.get_stream(subjects::TARGETS_STREAM).await.map_err(|e| format!("get stream: {e}"))?;
    let state = stream.info().await.map_err(|e| format!("stream info: {e}"))?.state.clone();
    let subject = subjects::target(chain);
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        let m = match stream.get_raw_message(seq).await {
            Ok(m) => m,
            Err(e) => return Err(format!("message {seq}: {e}")),
        };
        if m.subject.as_str() != subject {
            continue;
        }
        out.push(v1::Target::decode(m.payload.as_ref()).map_err(|e| format!("seq {seq}: {e}"))?);
    }
    Ok(out)
}

/// Every stream and the engine bucket are replicated on all three servers: configured with
/// three replicas and, once the cluster is healthy, led by one server with two current peers.
async fn check_replicated(urls: &str) -> Result<(), String> {
    let servers: Vec<&str> = urls.split(',').map(str::trim).collect();
    let client = async_nats::connect(servers).await.map_err(|e| format!("connect: {e}"))?;
    let js = async_nats::jetstream::new(client);
    let mut names: Vec<&str> = lightcl_bus::stream_specs().iter().map(|s| s.name).collect();
    names.push(subjects::ENGINE_BUCKET_STREAM);
    for name in names {
        let mut stream = js.get_stream(name).await.map_err(|e| format!("{name}: {e}"))?;
        let info = stream.info().await.map_err(|e| format!("{name} info: {e}"))?;
        let replicas = info.config.num_replicas;
        let cluster = info.cluster.as_ref().ok_or_else(|| format!("{name}: no cluster info"))?;
        let current = cluster.replicas.iter().filter(|r| r.current).count();
        if replicas != 3 || cluster.leader.is_none() || current != 2 {
            return Err(format!(
                "{name}: {replicas} replicas configured, leader {:?}, {current} current peers \
                 (want 3, a leader, 2)",
                cluster.leader
            ));
        }
    }
    Ok(())
}

/// Stored targets: (epoch, revision) strictly increasing, revision + 1 within an epoch.
fn check_stored(ts: &[v1::Target]) -> Result<(), String> {
    for w in ts.windows(2) {
        let (a, b) = ((w[0].epoch, w[0].revision), (w[1].epoch, w[1].revision));
        if b <= a {
            return Err(format!("stored target position went {a:?} → {b:?} (reused or back)"));
        }
        if a.0 == b.0 && b.1 != a.1 + 1 {
            return Err(format!("revision skipped within epoch {}: {} → {}", a.0, a.1, b.1));
        }
    }
    Ok(())
}

/// The targets the driver applied (VALID FCUs matched to stored targets by their three heads)
/// never go back in (epoch, revision). Returns (matched, unmatched) FCU counts.
fn check_driver_order(net: &Devnet, ts: &[v1::Target]) -> Result<(usize, usize), String> {
    let hash = |b: &Option<v1::L2BlockRef>| {
        b.as_ref().and_then(|b| B256::try_from(b.hash.as_slice()).ok()).unwrap_or_default()
    };
    // Heads → the positions of the targets carrying exactly them (several when unchanged).
    let mut by_heads: HashMap<[B256; 3], Vec<(u64, u64)>> = HashMap::new();
    for t in ts {
        let key = [hash(&t.unsafe_l2), hash(&t.safe_l2), hash(&t.finalized_l2)];
        by_heads.entry(key).or_default().push((t.epoch, t.revision));
    }
    let (mut matched, mut unmatched) = (0, 0);
    let mut floor = (0u64, 0u64);
    for (n, f) in net.el(0).fcus().iter().enumerate() {
        if f.reply != FcuReply::Valid {
            continue;
        }
        let st = &f.state;
        let key = [st.head_block_hash, st.safe_block_hash, st.finalized_block_hash];
        let Some(positions) = by_heads.get(&key) else {
            unmatched += 1;
            continue;
        };
        matched += 1;
        // The newest position carrying these heads must not be older than what came before.
        let newest = positions.iter().copied().max().unwrap_or_default();
        if newest < floor {
            return Err(format!(
                "FCU {n} applies target {newest:?} after target {floor:?} (went back)"
            ));
        }
        let oldest_ok = positions.iter().copied().filter(|p| *p >= floor).min();
        floor = oldest_ok.unwrap_or(newest);
    }
    Ok((matched, unmatched))
}

async fn steps(net: &mut Devnet, times: &mut Vec<String>) -> Result<(), String> {
    run("cluster", net, vec![AllReady(Duration::from_secs(20)), ElsReachSource(RESUME_BOUND)])
        .await?;
    check_replicated(&net.nats_url()).await?;

    // 1. kill -9 the server leading LIGHTCL_TARGETS, keep it down, restart it.
    let cluster = net.nats_cluster().ok_or("no cluster")?;
    let leader = cluster
        .stream_leader(subjects::TARGETS_STREAM)
        .await
        .ok_or("no leader for LIGHTCL_TARGETS")?;
    let before = source_numbers(net);
    let fault = Instant::now();
    net.nats_cluster().ok_or("no cluster")?.kill9(leader);
    eprintln!("[cluster] kill -9 n{leader} (leader of LIGHTCL_TARGETS)");
    let resume = resume_time(net, &format!("kill -9 of n{leader}"), fault, before).await?;
    // The outage itself (not a synchronisation): the server stays down this long.
    tokio::time::sleep(DOWN_FOR.saturating_sub(fault.elapsed())).await;
    let restart_at = Instant::now();
    let cluster = net.nats_cluster().ok_or("no cluster")?;
    cluster.restart(leader).await.map_err(|e| format!("restart n{leader}: {e}"))?;
    let healthy = restart_at.elapsed();
    let new_leader = cluster.stream_leader(subjects::TARGETS_STREAM).await;
    run("cluster", net, vec![ElsReachSource(RESUME_BOUND)]).await?;
    let line = format!(
        "resume after kill -9 of the LIGHTCL_TARGETS leader n{leader}: {:.2}s (longest FCU gap \
         {:.2}s; restarted healthy in {:.2}s; leader now {new_leader:?}; at source {:.2}s after \
         the fault)",
        resume.as_secs_f64(),
        longest_gap(net, fault).as_secs_f64(),
        healthy.as_secs_f64(),
        fault.elapsed().as_secs_f64()
    );
    eprintln!("[cluster] {line}");
    times.push(line);

    // 2. Rolling restart: each server in turn, the cluster healthy before the next.
    for i in 0..3 {
        let before = source_numbers(net);
        let fault = Instant::now();
        let cluster = net.nats_cluster().ok_or("no cluster")?;
        let was_leader = cluster.stream_leader(subjects::TARGETS_STREAM).await == Some(i);
        cluster.restart(i).await.map_err(|e| format!("rolling restart n{i}: {e}"))?;
        let healthy = fault.elapsed();
        let resume = resume_time(net, &format!("restart of n{i}"), fault, before).await?;
        run("cluster", net, vec![ElsReachSource(RESUME_BOUND)]).await?;
        let line = format!(
            "resume after rolling restart of n{i}{}: {:.2}s (longest FCU gap {:.2}s; healthy \
             again in {:.2}s; at source {:.2}s after the restart began)",
            if was_leader { " (LIGHTCL_TARGETS leader)" } else { "" },
            resume.as_secs_f64(),
            longest_gap(net, fault).as_secs_f64(),
            healthy.as_secs_f64(),
            fault.elapsed().as_secs_f64()
        );
        eprintln!("[cluster] {line}");
        times.push(line);
    }
    run("cluster", net, vec![AllReady(Duration::from_secs(15)), NoLabelRegression]).await?;
    // Peers catch up after the last restart; poll until all are current again.
    let urls = net.nats_url();
    wait::until_async(Duration::from_secs(15), wait::POLL, || check_replicated(&urls))
        .await
        .map_err(|e| format!("not replicated again after the restarts: {e}"))?;

    // 3. History: stored targets and the order the driver applied them in.
    let ts = stored_targets(&net.nats_url(), net.config().chain_id).await?;
    check_stored(&ts)?;
    let (matched, unmatched) = check_driver_order(net, &ts)?;
    eprintln!(
        "[cluster] {} stored targets, epochs {:?}; driver: {matched} VALID FCUs matched to \
         targets in order, {unmatched} unmatched",
        ts.len(),
        ts.iter().map(|t| t.epoch).collect::<std::collections::BTreeSet<_>>()
    );
    if matched == 0 {
        return Err("no FCU matched a stored target".into());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn el_keeps_following_through_leader_kill_and_rolling_restart() {
    let started = Instant::now();
    let bin_dir = ensure_binaries().unwrap_or_else(|e| panic!("{e}"));
    let cfg = DevnetConfig {
        bin_dir: Some(bin_dir),
        nats_cluster: true,
        ready_timeout: Duration::from_secs(30),
        work_dir: std::env::var_os("LIGHTCL_CLUSTER_KEEP_DIR").map(Into::into),
        rust_log: std::env::var("LIGHTCL_CLUSTER_LOG").unwrap_or_else(|_| fast_config().rust_log),
        ..fast_config()
    };
    let mut net = Devnet::start(cfg).await.unwrap_or_else(|e| panic!("devnet start: {e}"));
    eprintln!("[cluster] devnet up in {:?} ({})", started.elapsed(), net.dir().display());
    let mut times = Vec::new();
    let result = steps(&mut net, &mut times).await.and_then(|()| {
        net.check_invariants().map_err(|v| format!("invariant violations:\n  {}", v.join("\n  ")))
    });
    eprintln!("[cluster] measured:\n  {}", times.join("\n  "));
    eprintln!("[cluster] finished in {:?}", started.elapsed());
    finish(net, result).await;
}
