//! End-to-end scenarios (issue 6): the real poller, validator and engine-driver binaries as
//! processes over a real nats-server and a real anvil L1, driven by the simulated source and
//! observed through the mock ELs' call logs (see `lightcl_tests`).
//!
//! Each test is one scenario written as an action list; every wait has a deadline. After the
//! last action the runner checks the invariants over every mock EL's full call log
//! (`finalized ≤ safe ≤ head` per FCU, finalized never decreasing, no forged block, no
//! safe/finalized whose L1 origin was already reorged out when the FCU was sent).

use std::collections::HashMap;
use std::time::Duration;

use alloy_primitives::B256;
use lightcl_devnet::{Devnet, DevnetConfig, Service};
use lightcl_harness::mock_el::FcuReply;
use lightcl_tests::Action::{self, *};
use lightcl_tests::{fast_config, scenario};

const L1_MISMATCH: &str = "REJECTION_REASON_L1_MISMATCH";
const SOURCE_NOT_READY: &str = "REJECTION_REASON_SOURCE_NOT_READY";
/// What the validator may answer to a replayed old status (which check fires first depends on
/// how far finalized moved since).
const REPLAY_REASONS: &[&str] = &[
    "REJECTION_REASON_SAFE_REPLAY",
    "REJECTION_REASON_FINALIZED_REGRESSION",
    "REJECTION_REASON_STATUS_REPLAY",
];

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Runs a scenario; a failure panics with the runner's report (step, view, log tails).
async fn play(name: &str, cfg: DevnetConfig, actions: Vec<Action>) {
    if let Err(e) = scenario(name, cfg, actions).await {
        panic!("{e}");
    }
}

/// `fast_config` with extra poller flags.
fn with_poller_args(mut cfg: DevnetConfig, args: &[&str]) -> DevnetConfig {
    let mut extra = HashMap::new();
    extra.insert("poller".to_owned(), args.iter().map(|a| (*a).to_owned()).collect());
    cfg.extra_args = extra;
    cfg
}

/// Every EL has a finalized head above genesis, at most its safe head, at most its head.
fn labels_set(net: &Devnet) -> Result<(), String> {
    for i in 0..net.el_count() {
        let el = net.el(i);
        let (h, s, f) = (el.head().number, el.safe().number, el.finalized().number);
        if f == 0 || f > s || s > h {
            return Err(format!("el-{i} head/safe/finalized {h}/{s}/{f}"));
        }
    }
    Ok(())
}

fn syncing_answers(net: &Devnet) -> usize {
    net.el(0).fcus().iter().filter(|f| f.reply == FcuReply::Syncing).count()
}

/// While the EL has not answered VALID yet, the driver sent the head only.
fn no_labels_while_syncing(net: &Devnet) -> Result<(), String> {
    let el = net.el(0);
    for (n, f) in el.fcus().iter().enumerate() {
        if f.reply == FcuReply::Valid {
            return Err(format!("FCU {n} answered VALID while the EL was forced SYNCING"));
        }
        if f.state.safe_block_hash != B256::ZERO || f.state.finalized_block_hash != B256::ZERO {
            return Err(format!("FCU {n} carried labels before the first VALID: {:?}", f.state));
        }
    }
    if el.head().number != 0 {
        return Err(format!("the syncing EL moved its head to #{}", el.head().number));
    }
    Ok(())
}

/// Zero safe/finalized up to and including the first VALID FCU, all three in every FCU after.
fn labels_only_after_first_valid(net: &Devnet) -> Result<(), String> {
    let fcus = net.el(0).fcus();
    let first = fcus
        .iter()
        .position(|f| f.reply == FcuReply::Valid)
        .ok_or("no VALID forkchoice update at all")?;
    for (n, f) in fcus.iter().enumerate() {
        let (s, fi) = (f.state.safe_block_hash, f.state.finalized_block_hash);
        if n <= first && (s != B256::ZERO || fi != B256::ZERO) {
            return Err(format!("FCU {n} (first VALID is {first}) carried labels: {:?}", f.state));
        }
        if n > first && (s == B256::ZERO || fi == B256::ZERO) {
            return Err(format!(
                "FCU {n} after the first VALID ({first}) lacks a label: {:?}",
                f.state
            ));
        }
    }
    if fcus.len() <= first + 1 {
        return Err(format!("no FCU after the first VALID ({first})"));
    }
    Ok(())
}

/// Every rejection carries a human-readable message.
fn rejections_explained(net: &Devnet) -> Result<(), String> {
    let rs = net.rejections();
    if rs.is_empty() {
        return Err("no rejection seen".into());
    }
    match rs.iter().find(|r| r.message.trim().is_empty()) {
        Some(r) => Err(format!("rejection {} without a message", r.reason)),
        None => Ok(()),
    }
}

/// Every EL accepted a lower safe head at some point (the L1 reorg reached its safe head).
fn safe_went_back(net: &Devnet) -> Result<(), String> {
    for i in 0..net.el_count() {
        let mut top = 0;
        let mut back = false;
        for f in net.el(i).fcus().iter().filter(|f| f.reply == FcuReply::Valid) {
            let s = net.block_number(f.state.safe_block_hash).unwrap_or(0);
            back |= s < top;
            top = top.max(s);
        }
        if !back {
            return Err(format!("el-{i} never moved its safe head back"));
        }
    }
    Ok(())
}

fn source_rederived(net: &Devnet) -> bool {
    net.view().mode != "STALE-L1"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_els_follow_the_source() {
    play(
        "happy-path",
        fast_config(),
        vec![
            ElsReachSource(secs(30)),
            Check("labels", labels_set),
            WaitBlocks(8, secs(10)),
            ElsReachSource(secs(15)),
            WaitBlocks(8, secs(10)),
            ElsReachSource(secs(15)),
            LatestTargetIsSource(secs(10)),
            Pause,
            ElsAtSource(secs(15)),
            Resume,
            ElsAdvance(4, secs(15)),
            TargetsMonotonic,
            NoLabelRegression,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_el_sync_sends_labels_only_after_first_valid() {
    play(
        "initial-sync",
        DevnetConfig { els_start_syncing: true, ..fast_config() },
        vec![
            WaitUntil("el-0 answered SYNCING ≥ 5 times", secs(20), |n| syncing_answers(n) >= 5),
            Check("head only while syncing", no_labels_while_syncing),
            ElSyncing(0, false),
            ElsReachSource(secs(30)),
            WaitBlocks(6, secs(10)),
            ElsReachSource(secs(15)),
            Check("labels after the first VALID", labels_only_after_first_valid),
            Check("labels", labels_set),
            NoLabelRegression,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l2_reorg_at_the_source_is_followed() {
    play(
        "l2-reorg",
        fast_config(),
        vec![
            ElsReachSource(secs(30)),
            Pause,
            ElsAtSource(secs(15)),
            // Same heights, new hashes: the ELs must switch to the new tip.
            L2Reorg(3),
            ElsAtSource(secs(15)),
            Resume,
            ElsAdvance(3, secs(15)),
            // And once more while the chain moves.
            L2Reorg(2),
            ElsReachSource(secs(15)),
            TargetsMonotonic,
            NoLabelRegression,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_reorg_recovery_never_sends_non_canonical_labels() {
    // The simulation is paused around the reorg so no forkchoice update validated before it is
    // still in flight (the driver cannot know about L1); the source keeps serving its stale
    // view for `rederive_delay` (re-published every heartbeat), then re-derives. The final
    // invariant check fails on any FCU whose safe/finalized origin was already reorged out.
    let cfg = DevnetConfig { els: 2, ..with_poller_args(fast_config(), &["--heartbeat=1s"]) };
    play(
        "l1-reorg",
        cfg,
        vec![
            ElsReachSource(secs(30)),
            Pause,
            ElsAtSource(secs(15)),
            Mark("reorg"),
            L1Reorg,
            WaitUntil("the source re-derived", secs(15), source_rederived),
            ElsAtSource(secs(20)),
            Check("the reorg moved the ELs' safe head back", safe_went_back),
            Resume,
            ElsAdvance(6, secs(20)),
            ElsReachSource(secs(20)),
            LatestTargetIsSource(secs(10)),
            RejectionsOnlyOf { since: "reorg", reasons: &[L1_MISMATCH] },
            TargetsMonotonic,
        ],
    )
    .await;
}

/// The stated bound of the L1 watch (issue 17): within 1 s plus the validator's
/// `--l1.watch-interval` (default 1 s) after an L1 reorg is visible on our L1, no EL is sent
/// or keeps a safe label whose L1 origin was reorged out.
const RETREAT_BOUND: Duration = Duration::from_secs(2);

/// How long the source keeps serving its stale view in the retreat scenario: well past
/// [`RETREAT_BOUND`], so only the validator's own L1 watch can move the ELs in time.
const STALE_SOURCE: Duration = Duration::from_secs(6);

fn every_el_retreated(net: &Devnet) -> bool {
    net.retreat_times().iter().all(Option::is_some)
}

fn retreated_within_bound_while_the_source_was_stale(net: &Devnet) -> Result<(), String> {
    if source_rederived(net) {
        return Err("the source re-derived first: the retreat was not the validator's".into());
    }
    for (i, t) in net.retreat_times().into_iter().enumerate() {
        let t = t.ok_or_else(|| format!("el-{i} never got a canonical safe head"))?;
        if t.is_zero() {
            return Err(format!("el-{i}'s safe head kept a canonical origin: no retreat needed"));
        }
        eprintln!("    el-{i}: L1 reorg -> retreat FCU {t:?} (bound {RETREAT_BOUND:?})");
        if t > RETREAT_BOUND {
            return Err(format!("el-{i} retreated after {t:?}, bound {RETREAT_BOUND:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_reorg_under_a_stale_source_retreats_within_the_bound() {
    // The source keeps serving its pre-reorg view (re-published every heartbeat) for 6 s. The
    // validator's L1 watch (default 1 s) sees the safe head's L1 origin gone and publishes a
    // retreat: the ELs' safe moves back to the newest validated safe head still canonical,
    // while the head and finalized stay. The final check fails on any FCU carrying, or any EL
    // keeping, a safe/finalized whose L1 origin had been reorged out more than the bound before.
    let cfg = DevnetConfig {
        els: 2,
        rederive_delay: STALE_SOURCE,
        stale_label_grace: RETREAT_BOUND,
        stale_state_bound: Some(RETREAT_BOUND),
        ..with_poller_args(fast_config(), &["--heartbeat=1s"])
    };
    play(
        "l1-retreat",
        cfg,
        vec![
            ElsReachSource(secs(30)),
            // Every EL at the source's safe head, so the reorg removes the ELs' safe origin.
            Pause,
            ElsAtSource(secs(15)),
            Mark("reorg"),
            L1Reorg,
            Resume,
            WaitUntil("every EL got a canonical safe head", secs(10), every_el_retreated),
            Check("retreat bound", retreated_within_bound_while_the_source_was_stale),
            WaitUntil("the source re-derived", secs(15), source_rederived),
            ElsAdvance(6, secs(20)),
            ElsReachSource(secs(20)),
            RejectionsOnlyOf { since: "reorg", reasons: &[L1_MISMATCH] },
            TargetsMonotonic,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_source_is_rejected_then_followed_again() {
    play(
        "lying-source",
        fast_config(),
        vec![
            ElsReachSource(secs(30)),
            Mark("honest"),
            Lying(true),
            ExpectRejections {
                since: "honest",
                at_least: 1,
                reason: Some(L1_MISMATCH),
                timeout: secs(10),
            },
            // Statuses are judged in order: from here on only lies arrive.
            ElsAtLatestTarget(secs(10)),
            Mark("lying"),
            ExpectRejections {
                since: "lying",
                at_least: 3,
                reason: Some(L1_MISMATCH),
                timeout: secs(10),
            },
            RejectionsOnlyOf { since: "lying", reasons: &[L1_MISMATCH] },
            NoTargetsSince("lying"),
            ElsUntouchedSince("lying"),
            Check("rejections explained", rejections_explained),
            Lying(false),
            ElsReachSource(secs(20)),
            LatestTargetIsSource(secs(10)),
            TargetsMonotonic,
            NoLabelRegression,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_restart_replaying_old_status_causes_no_regression() {
    // A restarting source: down, then up without having read L1 (current_l1 unset), then
    // serving an old status (re-reading from an older point), then live again. A 1 s heartbeat:
    // the unchanged replayed status is re-published in new dedupe slots.
    play(
        "source-restart",
        with_poller_args(fast_config(), &["--heartbeat=1s", "--max-backoff=1s"]),
        vec![
            ElsReachSource(secs(30)),
            Snapshot("old"),
            WaitBlocks(12, secs(10)),
            ElsReachSource(secs(15)),
            StopSource,
            // Long enough for the statuses polled before the stop to be judged.
            WaitBlocks(5, secs(10)),
            Mark("not-ready"),
            ServeNotReady,
            StartSource,
            ExpectRejections {
                since: "not-ready",
                at_least: 2,
                reason: Some(SOURCE_NOT_READY),
                timeout: secs(10),
            },
            RejectionsOnlyOf { since: "not-ready", reasons: &[SOURCE_NOT_READY] },
            NoTargetsSince("not-ready"),
            ElsAtLatestTarget(secs(10)),
            Mark("replay"),
            ServeSnapshot("old"),
            ExpectRejections { since: "replay", at_least: 2, reason: None, timeout: secs(10) },
            RejectionsOnlyOf { since: "replay", reasons: REPLAY_REASONS },
            NoTargetsSince("not-ready"),
            ElsUntouchedSince("replay"),
            ServeLive,
            ElsReachSource(secs(20)),
            LatestTargetIsSource(secs(10)),
            TargetsMonotonic,
            NoLabelRegression,
        ],
    )
    .await;
}

/// `kill -9` of one service while the chain moves; the service is restarted while the chain
/// is paused, so the ELs only reach the source if nothing published meanwhile was lost (the
/// driver must find the newest target in the stream, the validator the statuses queued while
/// it was down, the poller must publish the current status at once).
fn kill_and_recover(s: Service) -> Vec<Action> {
    vec![
        Kill9(s),
        WaitBlocks(4, secs(10)),
        Pause,
        Restart(s),
        ElsAtSource(secs(20)),
        LatestTargetIsSource(secs(10)),
        Resume,
        ElsAdvance(3, secs(15)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_each_service_and_restart_recovers() {
    let mut actions = vec![ElsReachSource(secs(30))];
    for s in [Service::Poller, Service::Validator, Service::Driver(0)] {
        actions.extend(kill_and_recover(s));
    }
    actions.extend([AllReady(secs(15)), TargetsMonotonic, NoLabelRegression]);
    play("kill-9", fast_config(), actions).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_everything_reconnects() {
    play(
        "nats-restart",
        fast_config(),
        vec![
            ElsReachSource(secs(30)),
            RestartNats(secs(2)),
            ElsAdvance(6, secs(30)),
            ElsReachSource(secs(20)),
            LatestTargetIsSource(secs(10)),
            AllReady(secs(15)),
            Alive(Service::Poller),
            Alive(Service::Validator),
            Alive(Service::Driver(0)),
            TargetsMonotonic,
            NoLabelRegression,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn el_down_then_up_is_caught_up() {
    play(
        "el-outage",
        fast_config(),
        vec![
            ElsReachSource(secs(30)),
            StopEl(0),
            WaitBlocks(6, secs(10)),
            WaitReady(Service::Driver(0), false, secs(15)),
            Alive(Service::Driver(0)),
            StartEl(0),
            ElsReachSource(secs(25)),
            WaitReady(Service::Driver(0), true, secs(15)),
            NoLabelRegression,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_one_poller_one_validator_five_drivers() {
    play(
        "fan-out",
        DevnetConfig { els: 5, ..fast_config() },
        vec![
            ElsReachSource(secs(45)),
            WaitBlocks(6, secs(10)),
            ElsReachSource(secs(20)),
            Pause,
            ElsAtSource(secs(20)),
            Resume,
            ElsAdvance(3, secs(20)),
            Check("labels", labels_set),
            TargetsMonotonic,
            NoLabelRegression,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l1_reorg_while_the_chain_moves_stops_old_labels_at_once() {
    // No pause: a target validated just before the reorg may still be in flight (the driver
    // re-sends it while the EL answers SYNCING), so an FCU up to `stale_label_grace` after the
    // reorg may still carry the old safe head; none may later (the validator rejects the
    // source's stale view, the driver moves to the re-derived target).
    let cfg = DevnetConfig {
        els: 2,
        stale_label_grace: Duration::from_millis(500),
        ..with_poller_args(fast_config(), &["--heartbeat=1s"])
    };
    play(
        "l1-reorg-live",
        cfg,
        vec![
            ElsReachSource(secs(30)),
            WaitBlocks(3, secs(10)),
            Mark("reorg"),
            L1Reorg,
            WaitUntil("the source re-derived", secs(15), source_rederived),
            ElsAdvance(6, secs(20)),
            ElsReachSource(secs(20)),
            RejectionsOnlyOf { since: "reorg", reasons: &[L1_MISMATCH] },
            TargetsMonotonic,
        ],
    )
    .await;
}
