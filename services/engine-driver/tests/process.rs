//! Integration with the real binary: killed (SIGKILL) and restarted, it resumes from the newest
//! target and the EL's heads without moving finalized backwards.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use lightcl_harness::mock_el::L2Chain;
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[String]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_lightcl-engine-driver"))
        .args(&args[1..])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn driver");
    Proc(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_driver_restarts_from_newest_target_and_el_heads() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(60);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, SECRET_HEX);
    let mut args = base_args(&nats.url(), &el.url(), &secret, "n1");
    // The killed driver cannot release its lease: the restarted one (another instance) waits
    // for it to expire. A short lease keeps that wait short.
    args.extend(["--lease.ttl", "2s", "--lease.renew", "500ms"].map(String::from));

    let mut first = spawn(&args);
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    assert!(el.wait_until(Duration::from_secs(10), |e| e.finalized().number == 20).await);
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();

    pubr.publish(&target(2, &chain, 40, 35, 30)).await;
    pubr.publish(&target(3, &chain, 50, 45, 40)).await;
    let before = el.fcus().len();
    let _second = spawn(&args);
    assert!(
        el.wait_until(Duration::from_secs(10), |e| e.head().number == 50
            && e.safe().number == 45
            && e.finalized().number == 40)
            .await,
        "resumed: head {} safe {} finalized {}",
        el.head().number,
        el.safe().number,
        el.finalized().number
    );
    let after = &el.fcus()[before..];
    assert!(
        after.iter().all(|f| f.state.head_block_hash != chain.at(40).hash),
        "stale target skipped"
    );
    assert!(
        after.iter().all(|f| f.state.finalized_block_hash != alloy_primitives::B256::ZERO),
        "the synced EL gets labels at once"
    );
    let first_call =
        el.calls().into_iter().rev().find(|c| c.method == "engine_exchangeCapabilities");
    assert!(first_call.is_some(), "capabilities checked at start-up");
    assert_eq!(el.check_invariants(), Ok(()), "finalized never moved back");
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        pubr.engine_state("n1").await.is_some_and(|s| s.finalized.is_some_and(|f| f.number == 40))
    })
    .await
    .unwrap();
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// `optimism_syncStatus` of the driver at `port`: the status, or the error text.
async fn sync_status(port: u16) -> Result<lightcl_core::SyncStatus, String> {
    let client = lightcl_rpc::Client::new(lightcl_rpc::ClientConfig::new(
        format!("http://127.0.0.1:{port}").parse().expect("url"),
    ))
    .expect("client");
    let v = client
        .call("optimism_syncStatus", serde_json::json!([]))
        .await
        .map_err(|e| e.to_string())?;
    Ok(lightcl_core::SyncStatus::from_value(&v).expect("parses with the core types"))
}

/// Killed (SIGKILL) and restarted with no target left on the bus, the driver serves
/// `optimism_syncStatus` from its own KV key at once: every L1 ref set and equal to the last
/// target's, every L2 ref the EL's applied block with the target's L1 origin, a status op-batcher
/// acts on (and whose `current_l1` did not go back). Before that, only "not ready" errors.
#[tokio::test(flavor = "multi_thread")]
async fn restarted_driver_serves_the_sync_status_it_kept_before_any_target() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(60);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, SECRET_HEX);
    let mut args = base_args(&nats.url(), &el.url(), &secret, "n1");
    args.extend(["--lease.ttl", "2s", "--lease.renew", "500ms"].map(String::from));
    let with_rpc = |port: u16| {
        let mut a = args.clone();
        a.extend(["--rpc.addr".to_owned(), format!("127.0.0.1:{port}")]);
        a
    };

    let port = free_port();
    let mut first = spawn(&with_rpc(port));
    let t = target(1, &chain, 30, 25, 20);
    pubr.publish(&t).await;
    assert!(el.wait_until(Duration::from_secs(10), |e| e.finalized().number == 20).await);
    // Not bound yet, or "sync status not ready" (never a half-filled status): wait.
    let before = wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        sync_status(port).await.ok()
    })
    .await
    .expect("served before the kill");
    let view = l1_view(&t);
    assert_eq!(
        (before.head_l1, before.safe_l1, before.finalized_l1),
        (view.head, view.safe, view.finalized)
    );
    assert_eq!(before.current_l1, t.current_l1);
    assert_eq!(lightcl_harness::op_batcher::check(&before, None), Ok(()));
    // The KV value carries what is served (put on change, before the kill).
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        pubr.engine_state("n1").await.is_some_and(|s| {
            s.l1_view().ok().flatten() == Some(view)
                && s.applied_refs().ok()
                    == Some([Some(t.unsafe_l2), Some(t.safe_l2), Some(t.finalized_l2)])
        })
    })
    .await
    .expect("KV keeps the served refs");
    first.0.kill().expect("SIGKILL");
    let _ = first.0.wait();

    // No target left: whatever the restarted driver serves comes from its KV key.
    pubr.purge_targets().await;
    let port2 = free_port();
    let started = std::time::Instant::now();
    let _second = spawn(&with_rpc(port2));
    // Not bound yet, or "sync status not ready" (never a half-filled status): wait.
    let after = wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        sync_status(port2).await.ok()
    })
    .await
    .expect("served after the restart without a target");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served at start-up: {:?}",
        started.elapsed()
    );
    assert_eq!(after, before, "the same status as before the kill");
    assert_eq!(
        (after.head_l1, after.safe_l1, after.finalized_l1),
        (view.head, view.safe, view.finalized)
    );
    assert_eq!(after.current_l1, t.current_l1);
    // The L2 refs are the EL's applied blocks, with the target's L1 origins.
    assert_eq!(
        (after.unsafe_l2.hash, after.safe_l2.hash, after.finalized_l2.hash),
        (el.head().hash, el.safe().hash, el.finalized().hash)
    );
    assert_eq!(
        (after.unsafe_l2, after.safe_l2, after.finalized_l2),
        (t.unsafe_l2, t.safe_l2, t.finalized_l2)
    );
    assert_eq!(lightcl_harness::op_batcher::check(&after, Some(&before.current_l1)), Ok(()));
}

/// An Engine API URL with a bad scheme is refused before any server binds or NATS is dialled,
/// naming the flag and never printing the URL's secret parts.
#[test]
fn bad_engine_url_is_refused_before_anything_starts_and_hides_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, SECRET_HEX);
    let key = "0123456789abcdefKEYKEY";
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightcl-engine-driver"));
    cmd.env_clear().args([
        "--chain-id",
        "10",
        "--node-id",
        "n1",
        "--l2.jwt-secret",
        &secret.display().to_string(),
        "--l2.engine-rpc",
        &format!("ws://el.example:8551/{key}"),
    ]);
    lightcl_harness::config_check::assert_refused_before_start(&mut cmd, "--l2.engine-rpc", key);
}
