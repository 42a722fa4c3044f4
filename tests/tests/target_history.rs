//! Target history lost or forged (docs/bus.md#target-revisions), end to end on the real
//! binaries: the validator restarts after `LIGHTCL_TARGETS` was purged while it was down, a
//! hand-published target with revision `u64::MAX` lands on the subject, and an older backup
//! (an older epoch) is restored while everything runs. In each case the running engine-driver
//! (not restarted) keeps following the source within seconds: the validator starts a new,
//! later epoch (above what the driver reports in the KV bucket) and the driver follows it.

use std::time::Duration;

use lightcl_bus::{Bus, NatsArgs, Publisher, last_message, subjects};
use lightcl_devnet::{Devnet, DevnetConfig, Service};
use lightcl_proto::{names, v1};
use lightcl_tests::Action::*;
use lightcl_tests::{ensure_binaries, fast_config, finish, run};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// How long the running driver may take to follow the new epoch (bound of the test).
const FOLLOW_BOUND: Duration = Duration::from_secs(20);

async fn newest_target(bus: &Bus, chain: u64) -> v1::Target {
    last_message::<v1::Target>(
        &bus.jetstream(),
        subjects::TARGETS_STREAM,
        &subjects::target(chain),
        names::TARGET,
    )
    .await
    .expect("read the newest target")
    .expect("a target is stored")
    .message
}

async fn steps(net: &mut Devnet, bus: &Bus, chain: u64) -> Result<(), String> {
    run("history", net, vec![ElsReachSource(secs(30))]).await?;
    let before = newest_target(bus, chain).await;

    // 1. Purge while the validator is down; it restarts with no history.
    run("history", net, vec![Kill9(Service::Validator), WaitBlocks(3, secs(10))]).await?;
    let js = bus.jetstream();
    let mut stream = js.get_stream(subjects::TARGETS_STREAM).await.map_err(|e| e.to_string())?;
    stream.purge().await.map_err(|e| format!("purge: {e}"))?;
    assert_eq!(stream.info().await.map_err(|e| e.to_string())?.state.messages, 0);
    run(
        "history",
        net,
        vec![
            Restart(Service::Validator),
            ElsAdvance(5, FOLLOW_BOUND),
            ElsReachSource(FOLLOW_BOUND),
        ],
    )
    .await?;
    let after = newest_target(bus, chain).await;
    if after.epoch <= before.epoch {
        return Err(format!("epoch {} not above {}", after.epoch, before.epoch));
    }

    // 2. A hand-published target at revision u64::MAX (same epoch, same heads).
    let forged = v1::Target { revision: u64::MAX, ..after.clone() };
    Publisher::new(bus.jetstream(), secs(2))
        .publish(&subjects::target(chain), names::TARGET, &forged, Some("forged-max"))
        .await
        .map_err(|e| format!("publish forged: {e}"))?;
    run("history", net, vec![ElsAdvance(5, FOLLOW_BOUND), ElsReachSource(FOLLOW_BOUND)]).await?;
    let last = newest_target(bus, chain).await;
    if last.epoch <= after.epoch || last.revision == u64::MAX {
        return Err(format!(
            "after the forged target: epoch {} revision {}",
            last.epoch, last.revision
        ));
    }

    // 3. An older backup restored while everything runs: the subject goes back to `before`
    //    (an older epoch), below what the running driver applied and reports in the KV bucket.
    stream.purge().await.map_err(|e| format!("purge: {e}"))?;
    Publisher::new(bus.jetstream(), secs(2))
        .publish(&subjects::target(chain), names::TARGET, &before, Some("restored-backup"))
        .await
        .map_err(|e| format!("publish restored: {e}"))?;
    run("history", net, vec![ElsAdvance(5, FOLLOW_BOUND), ElsReachSource(FOLLOW_BOUND)]).await?;
    let over = newest_target(bus, chain).await;
    if over.epoch <= last.epoch {
        return Err(format!(
            "after the restored backup: epoch {} revision {}, driver had epoch {}",
            over.epoch, over.revision, last.epoch
        ));
    }
    run("history", net, vec![AllReady(secs(15)), NoLabelRegression]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_revision_max_and_restored_backup_never_wedge_running_drivers() {
    let bin_dir = ensure_binaries().unwrap_or_else(|e| panic!("{e}"));
    let cfg = DevnetConfig { bin_dir: Some(bin_dir), ..fast_config() };
    let chain = cfg.chain_id;
    let mut net = Devnet::start(cfg).await.unwrap_or_else(|e| panic!("devnet start: {e}"));
    let bus = Bus::connect(&NatsArgs::local(net.nats_url()), "history-test").await.unwrap();
    let result = steps(&mut net, &bus, chain).await.and_then(|()| {
        net.check_invariants().map_err(|v| format!("invariant violations:\n  {}", v.join("\n  ")))
    });
    finish(net, result).await;
}
