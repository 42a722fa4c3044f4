//! The driver on the runtime's service shell: a critical task that ends before shutdown was
//! requested stops the driver with `RunError::TaskDied` naming the task (the process then
//! exits 70, see `crates/runtime/tests/critical_task.rs`), after the same drain as a SIGTERM:
//! the bus side still puts the engine state, then the `--rpc.addr`, admin and gRPC servers stop.
//! The task is added next to the driver's own with `Started::spawn_critical`.

mod common;

use std::time::Duration;

use clap::Parser;
use common::*;
use lightcl_engine_driver::{Cli, RunError, Started, start};
use lightcl_harness::mock_el::{L2Chain, MockEl};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::{http_get, wait};
use lightcl_runtime::TaskEnd;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// Panics, typed `()` (an async block ending in `panic!` would be typed `!`).
fn boom(msg: &str) {
    std::panic::panic_any(msg.to_owned())
}

/// A driver started (not yet run) on `nats` and `el`, with `--rpc.addr` on.
async fn started(
    nats: &NatsServer,
    el: &MockEl,
    dir: &tempfile::TempDir,
    cancel: &CancellationToken,
) -> Started {
    let secret = write_secret(dir, SECRET_HEX);
    let mut args = base_args(&nats.url(), &el.url(), &secret, "n1");
    args.extend(["--rpc.addr".to_owned(), "127.0.0.1:0".to_owned()]);
    let cfg = Cli::try_parse_from(args).expect("flags").into_config().expect("config");
    tokio::time::timeout(Duration::from_secs(5), start(cfg, cancel.clone()))
        .await
        .expect("starts in time")
        .expect("starts")
}

/// Drives the EL to the target's heads, so the driver is known to be working.
async fn drive_once(nats: &NatsServer, el: &MockEl, chain: &L2Chain) -> Publisher {
    let pubr = Publisher::connect(&nats.url()).await;
    pubr.publish(&target(1, chain, 30, 25, 20)).await;
    assert!(
        el.wait_until(Duration::from_secs(10), |e| e.finalized().number == 20).await,
        "the driver follows the target"
    );
    pubr
}

async fn stopped_in_time(
    run: tokio::task::JoinHandle<Result<(), RunError>>,
) -> Result<(), RunError> {
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the driver stops in time")
        .expect("run does not panic")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_task_that_panics_stops_the_driver_naming_it_after_the_drain() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(40);
    el.set_network_chain(&chain);
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let mut driver = started(&nats, &el, &dir, &cancel).await;
    let bound = driver.bound();
    let (die_tx, die_rx) = oneshot::channel::<()>();
    driver.spawn_critical("probe", async move {
        let _ = die_rx.await;
        boom("injected failure");
    });
    let run = tokio::spawn(driver.run());

    let pubr = drive_once(&nats, &el, &chain).await;
    wait::until_async(Duration::from_secs(5), wait::POLL, || async {
        http_get(bound.admin, "/ready").await.status == 200
    })
    .await
    .expect("ready while driving");
    assert_eq!(http_get(bound.admin, "/live").await.status, 200);

    die_tx.send(()).expect("the probe is waiting");
    match stopped_in_time(run).await {
        Err(RunError::TaskDied(d)) => {
            assert_eq!(d.task, "probe");
            assert_eq!(d.end, TaskEnd::Panicked("injected failure".to_owned()));
            assert_eq!(
                d.to_string(),
                "critical task `probe` panicked: injected failure; the service stopped"
            );
        }
        other => panic!("expected TaskDied naming `probe`, got {other:?}"),
    }
    assert!(cancel.is_cancelled(), "the shell stopped everything else");
    // Drained as on SIGTERM: the engine state is in KV, every server is gone.
    let state = pubr.engine_state("n1").await.expect("engine state in KV");
    assert_eq!(state.finalized.map(|f| f.number), Some(20));
    let rpc = bound.rpc.expect("--rpc.addr is on");
    for addr in [bound.admin, bound.grpc, rpc] {
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "{addr} still listens");
    }
    assert_eq!(el.check_invariants(), Ok(()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_critical_task_that_returns_early_stops_the_driver_naming_it() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(40);
    el.set_network_chain(&chain);
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let mut driver = started(&nats, &el, &dir, &cancel).await;
    let (quit_tx, quit_rx) = oneshot::channel::<()>();
    driver.spawn_critical("quitter", async move {
        let _ = quit_rx.await;
    });
    let run = tokio::spawn(driver.run());
    drive_once(&nats, &el, &chain).await;

    quit_tx.send(()).expect("the quitter is waiting");
    match stopped_in_time(run).await {
        Err(RunError::TaskDied(d)) => {
            assert_eq!((d.task.as_str(), d.end), ("quitter", TaskEnd::Returned));
        }
        other => panic!("expected TaskDied naming `quitter`, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_requested_shutdown_is_ok() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(40);
    el.set_network_chain(&chain);
    let dir = tempfile::tempdir().expect("tempdir");
    let cancel = CancellationToken::new();
    let driver = started(&nats, &el, &dir, &cancel).await;
    let bound = driver.bound();
    let run = tokio::spawn(driver.run());
    drive_once(&nats, &el, &chain).await;

    cancel.cancel();
    stopped_in_time(run).await.expect("a requested shutdown is Ok");
    for addr in [bound.admin, bound.grpc, bound.rpc.expect("--rpc.addr is on")] {
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "{addr} still listens");
    }
}
