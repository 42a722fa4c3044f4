//! Several sources end to end (docs/architecture.md#several-sources): the real pollers (one per
//! source), validator(s) and engine-driver as processes, the sources being mock consensus nodes
//! that serve the same simulated chain until one of them is told to lie or to stall.
//!
//! - `--quorum 2` over three sources, the third fabricating one label at a time (finalized, then
//!   the tip, then local safe; each with a real parent and a real L1 origin, so no L1 check can
//!   tell): no fabricated block ever reaches an EL or a target, and the EL keeps following.
//! - The same with two validator replicas sharing the durable consumer.
//! - `--quorum 1` over two sources (failover): the followed source stalls, then the other one
//!   (followed by then) lies in a way the validator rejects; each time the validator switches
//!   and the EL keeps following within a stated bound, with no label going back.
//!
//! Every wait has a deadline; the runner's final checks (or [`Devnet::check_invariants`]) fail
//! on any FCU naming a block a lying source served.

use std::time::Duration;

use lightcl_devnet::sim::{L2_BLOCK_SECONDS, Lie};
use lightcl_devnet::{Devnet, DevnetConfig, Service};
use lightcl_harness::wait;
use lightcl_tests::Action::{self, *};
use lightcl_tests::{ensure_binaries, fast_config, finish, run, scenario};
use tokio::time::Instant;

const L1_MISMATCH: &str = "REJECTION_REASON_L1_MISMATCH";

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `fast_config` with `sources` sources, `validators` validator replicas and these validator
/// flags.
fn config(sources: usize, validators: usize, validator_args: &[&str]) -> DevnetConfig {
    let mut cfg = DevnetConfig { sources, validators, ..fast_config() };
    cfg.extra_args
        .insert("validator".into(), validator_args.iter().map(|a| (*a).to_owned()).collect());
    cfg
}

/// Runs a scenario; a failure panics with the runner's report (step, view, log tails).
async fn play(name: &str, cfg: DevnetConfig, actions: Vec<Action>) {
    if let Err(e) = scenario(name, cfg, actions).await {
        panic!("{e}");
    }
}

/// The lying source of the quorum scenarios.
const LIAR: usize = 2;

/// The liar serves a block it made up right now (the lie is really on the wire).
fn liar_serves_a_lie(net: &Devnet) -> Result<(), String> {
    let st = net.served_status(LIAR);
    let labels = [st.unsafe_l2, st.local_safe(), st.safe_l2, st.finalized_l2];
    if labels.iter().any(|b| net.forged_by(b.hash).is_some()) {
        Ok(())
    } else {
        Err(format!("source {LIAR} serves no made-up block: {st:?}"))
    }
}

/// Prints the rejections seen (informational: with a quorum the liar alone causes none).
fn report_rejections(net: &Devnet) -> Result<(), String> {
    let rs = net.rejections();
    let mut reasons: Vec<&str> = rs.iter().map(|r| r.reason.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    eprintln!("    {} target(s), {} rejection(s) {reasons:?}", net.targets().len(), rs.len());
    Ok(())
}

/// One phase per fabricated label. Bound per phase: while source 2 lies, the ELs still advance
/// 4 blocks and then reach the source's heads (as they were when the wait started), each within
/// 15 s; every FCU and every target so far names canonical blocks only.
fn lie_phases() -> Vec<Action> {
    let mut actions = vec![ElsReachSource(secs(30)), Mark("honest")];
    for lie in [Lie::Finalized, Lie::Unsafe, Lie::LocalSafe] {
        actions.extend([
            SourceLie(LIAR, Some(lie)),
            // Its poller has read the lie several times (and published it: it changes with
            // every block).
            WaitSourcePolls(LIAR, 8, secs(10)),
            Check("the liar serves a made-up block", liar_serves_a_lie),
            ElsAdvance(4, secs(15)),
            ElsReachSource(secs(15)),
            OnlyCanonicalForkchoice,
        ]);
    }
    actions.extend([
        SourceLie(LIAR, None),
        ElsAdvance(3, secs(15)),
        ElsReachSource(secs(15)),
        LatestTargetIsSource(secs(10)),
        TargetsMonotonic,
        NoLabelRegression,
        OnlyCanonicalForkchoice,
        Check("rejections", report_rejections),
    ]);
    actions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_2_of_3_never_lets_a_fabricated_label_through() {
    play("quorum-liar", config(3, 1, &["--quorum=2"]), lie_phases()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_2_of_3_with_two_validator_replicas_keeps_targets_flowing() {
    let mut actions = lie_phases();
    actions.extend([
        Alive(Service::validator(0)),
        Alive(Service::validator(1)),
        Check("both replicas decided", replicas_decided),
    ]);
    play("quorum-replicas", config(3, 2, &["--quorum=2"]), actions).await;
}

/// Prints how many targets each validator replica published (from its log); informational,
/// since which replica gets a status is up to the durable consumer.
fn replicas_decided(net: &Devnet) -> Result<(), String> {
    for i in 0..net.config().validators {
        let log = net.dir().join(format!("{}.log", Service::validator(i)));
        let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let published = text.lines().filter(|l| l.contains("target published")).count();
        let lost = text.lines().filter(|l| l.contains("lost the target race")).count();
        eprintln!(
            "    {}: {published} target(s) published, {lost} CAS race(s) lost",
            Service::validator(i)
        );
    }
    Ok(())
}

/// `--failover.stall-blocks`: the validator learns the block time from the L2 timestamps,
/// which the simulated chain steps by [`L2_BLOCK_SECONDS`] (2 s) per block whatever the
/// devnet's real block time (300 ms here), so the stall bound is 2 × 2 s = 4 s.
const STALL_BLOCKS: u64 = 2;
const MAX_REJECTIONS: usize = 3;
const FAILOVER_ARGS: &[&str] = &[
    "--quorum=1",
    "--failover.stall-blocks=2",
    "--failover.max-rejections=3",
    // Shorter than the test, so the first source may be chosen again by the time the second
    // fails (with two sources the held one is taken anyway when the other is unhealthy).
    "--failover.hold=5s",
];

/// The stall bound (4 s), a poll (150 ms), the followed source's next status, the decision and
/// the driver's FCU: 2 s of slack.
fn stall_switch_bound() -> Duration {
    secs(STALL_BLOCKS * L2_BLOCK_SECONDS) + secs(2)
}

/// `max-rejections` statuses of the lying source (one per block, 300 ms), then the other
/// source's next status, the decision and the FCU: 3 s of slack.
fn rejection_switch_bound(block_time: Duration) -> Duration {
    block_time * MAX_REJECTIONS as u32 + secs(3)
}

/// Bounds: after the followed source stalls, the EL passes the frozen head, following the
/// other source, within [`stall_switch_bound`] (6 s; measured ≈ 4.1–4.4 s: the 4 s stall bound
/// plus a status, a decision and an FCU); after the source followed then starts lying (rejected
/// as L1 mismatch), it is dropped after `max-rejections` (3) rejections and the EL follows
/// the first source again within [`rejection_switch_bound`] (3.9 s; measured ≈ 0.6–0.9 s). No
/// label goes back, no forged block reaches the EL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_when_the_followed_source_stalls_then_lies() {
    let bin_dir = match ensure_binaries() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let cfg = DevnetConfig { bin_dir: Some(bin_dir), ..config(2, 1, FAILOVER_ARGS) };
    let started = Instant::now();
    let mut net = match Devnet::start(cfg).await {
        Ok(n) => n,
        Err(e) => panic!("devnet start: {e}"),
    };
    eprintln!("[failover] devnet up in {:?} ({})", started.elapsed(), net.dir().display());
    let result = failover(&mut net).await.and_then(|()| {
        net.check_invariants().map_err(|v| format!("invariant violations:\n  {}", v.join("\n  ")))
    });
    finish(net, result).await;
    eprintln!("[failover] finished in {:?}", started.elapsed());
}

/// The one source the validator follows, from its `source_chosen{source}` gauges (every source
/// is "chosen" before the first failover choice); polled until `timeout`.
async fn chosen_source(net: &Devnet, timeout: Duration) -> Result<usize, String> {
    let read = || async {
        let text = net.metrics(Service::Validator).await.unwrap_or_default();
        let mut listed = 0;
        let mut chosen = Vec::new();
        for l in text.lines() {
            let Some(rest) = l.strip_prefix("lightcl_validator_source_chosen{source=\"") else {
                continue;
            };
            let Some((id, value)) = rest.split_once("\"} ") else { continue };
            listed += 1;
            if value.trim() == "1" {
                chosen.extend(net.source_index(id));
            }
        }
        (listed, chosen)
    };
    let one = wait::until_async(timeout, wait::POLL, || async {
        match read().await {
            (2, chosen) if chosen.len() == 1 => chosen.first().copied(),
            _ => None,
        }
    })
    .await;
    match one {
        Ok(i) => Ok(i),
        Err(_) => {
            let (listed, chosen) = read().await;
            Err(format!(
                "the validator chose no single source in {timeout:?}: {listed} source(s) listed, \
                 chosen {chosen:?}"
            ))
        }
    }
}

async fn failover(net: &mut Devnet) -> Result<(), String> {
    let block_time = net.config().block_time;
    run("failover", net, vec![ElsReachSource(secs(30))]).await?;
    // Until both sources have reported, statuses are decided as they come: ask the validator
    // which source it chose, then wait for a target from that source.
    let a = chosen_source(net, secs(10)).await?;
    let b = 1 - a;
    net.wait_for(&format!("a target from source {a}"), secs(10), |n| {
        n.followed_source() == Some(a)
    })
    .await
    .map_err(|e| e.to_string())?;
    eprintln!("[failover] following source {a}");

    // 1. The followed source stalls: its status stays frozen at `frozen`. The EL can only pass
    //    that head once the validator follows the other source.
    net.set_source_stalled(a, true);
    let t0 = Instant::now();
    let frozen = net.served_status(a).unsafe_l2.number;
    net.wait_for(&format!("the EL past #{frozen} following source {b}"), secs(20), |n| {
        n.followed_source() == Some(b) && n.el_reached(0, frozen + 1, 0, 0)
    })
    .await
    .map_err(|e| e.to_string())?;
    let took = t0.elapsed();
    let bound = stall_switch_bound();
    eprintln!(
        "[failover] source {a} stalled: the EL follows source {b} after {took:?} (bound {bound:?})"
    );
    if took > bound {
        return Err(format!("failover after a stall took {took:?}, bound {bound:?}"));
    }

    // 2. The stalled source recovers; the validator stays with the healthy source it follows.
    net.set_source_stalled(a, false);
    run(
        "failover",
        net,
        vec![WaitSourcePolls(a, 6, secs(10)), ElsAdvance(3, secs(10)), ElsReachSource(secs(10))],
    )
    .await?;
    if net.followed_source() != Some(b) {
        return Err(format!(
            "switched back to {:?} while source {b} was healthy",
            net.followed_source()
        ));
    }

    // 3. The followed source lies in a way the L1 checks catch (a safe head whose L1 origin
    //    was never on L1): after `max-rejections` rejections in a row it is dropped.
    let rejected_before = net.rejections().len();
    let head = net.source_status().unsafe_l2.number;
    net.set_source_lie(b, Some(Lie::BadOrigin));
    let t1 = Instant::now();
    net.wait_for(&format!("the EL past #{head} following source {a}"), secs(20), |n| {
        n.followed_source() == Some(a) && n.el_reached(0, head + 1, 0, 0)
    })
    .await
    .map_err(|e| e.to_string())?;
    let took = t1.elapsed();
    let bound = rejection_switch_bound(block_time);
    let rejections = net.rejections();
    let since = rejections.get(rejected_before..).unwrap_or_default();
    eprintln!(
        "[failover] source {b} lies: {} rejection(s), the EL follows source {a} after {took:?} (bound {bound:?})",
        since.len()
    );
    if let Some(r) = since.iter().find(|r| r.reason != L1_MISMATCH) {
        return Err(format!("rejection {} ({}) while source {b} lied", r.reason, r.message));
    }
    if since.len() < MAX_REJECTIONS {
        return Err(format!(
            "switched after {} rejection(s), expected {MAX_REJECTIONS}",
            since.len()
        ));
    }
    if took > bound {
        return Err(format!("failover after rejections took {took:?}, bound {bound:?}"));
    }

    // 4. The liar stops lying; the EL keeps following, nothing went back, no lie reached it.
    net.set_source_lie(b, None);
    run(
        "failover",
        net,
        vec![
            ElsAdvance(3, secs(15)),
            ElsReachSource(secs(15)),
            LatestTargetIsSource(secs(10)),
            TargetsMonotonic,
            NoLabelRegression,
            OnlyCanonicalForkchoice,
        ],
    )
    .await
}

/// (d) A source switched to another chain's node mid-run (a DNS or load-balancer change) is
/// refused: its poller, checking the chain at every poll here, goes not ready and publishes
/// nothing while the source serves chain 999; the EL keeps following the other source; once
/// the source serves our chain again its poller publishes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_switched_to_another_chain_is_refused() {
    let bin_dir = match ensure_binaries() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let mut cfg = DevnetConfig { bin_dir: Some(bin_dir), ..config(2, 1, &[]) };
    let every_poll = format!("--source.chain-check-interval={}ms", cfg.poll_interval.as_millis());
    cfg.extra_args.insert("poller".into(), vec![every_poll]);
    let mut net = match Devnet::start(cfg).await {
        Ok(n) => n,
        Err(e) => panic!("devnet start: {e}"),
    };
    let result = other_chain(&mut net).await.and_then(|()| {
        net.check_invariants().map_err(|v| format!("invariant violations:\n  {}", v.join("\n  ")))
    });
    finish(net, result).await;
}

/// Stream sequence of the newest stored status of source `i` (0: none).
async fn newest_status_seq(net: &Devnet, i: usize) -> Result<u64, String> {
    let client = async_nats::connect(net.nats_url()).await.map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    let subject = lightcl_bus::subjects::status(net.config().chain_id, &Devnet::source_id(i));
    let last = lightcl_bus::last_message::<lightcl_proto::v1::RawStatus>(
        &js,
        lightcl_bus::subjects::STATUS_STREAM,
        &subject,
        lightcl_proto::names::RAW_STATUS,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(last.map_or(0, |m| m.sequence))
}

async fn other_chain(net: &mut Devnet) -> Result<(), String> {
    run("other-chain", net, vec![ElsReachSource(secs(30))]).await?;
    let poller = Service::poller(1);
    net.set_source_chain(1, 999);
    let n = &*net;
    wait::until_async(secs(10), wait::POLL, || async move { !n.is_ready(poller).await })
        .await
        .map_err(|_| "poller-1 still ready 10 s after its source switched chains".to_owned())?;
    // Refused: from now on nothing of source 1 is stored, however often it is polled.
    let refused_at = newest_status_seq(net, 1).await?;
    let polls = net.source_requests_at(1);
    // Refused polls back off (the poller's error backoff): a few more are enough.
    net.wait_for("source 1 polled 3 more times", secs(20), |n| {
        n.source_requests_at(1) >= polls + 3
    })
    .await
    .map_err(|e| e.to_string())?;
    let after = newest_status_seq(net, 1).await?;
    if after != refused_at {
        return Err(format!("a status of the other chain was stored: seq {refused_at} → {after}"));
    }
    // The EL keeps following the other source meanwhile.
    run("other-chain", net, vec![ElsReachSource(secs(15))]).await?;
    // Our chain again: published again.
    net.set_source_chain(1, net.config().chain_id);
    let n = &*net;
    // Each probe opens a NATS connection: every 100 ms is often enough.
    wait::until_async(secs(15), Duration::from_millis(100), || async move {
        matches!(newest_status_seq(n, 1).await, Ok(seq) if seq != after) && n.is_ready(poller).await
    })
    .await
    .map_err(|_| "poller-1 did not publish again once its source served our chain".to_owned())?;
    run("other-chain", net, vec![ElsReachSource(secs(15)), NoLabelRegression]).await
}
