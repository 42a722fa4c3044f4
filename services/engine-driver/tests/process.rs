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
