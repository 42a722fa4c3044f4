//! The real binary drives an `https://` Engine API: the mock EL sits behind a TLS front signed
//! by a private CA that the driver trusts through `SSL_CERT_FILE`. Forkchoice updates reach the
//! EL through the front; with an untrusted CA none does, the driver stays up and not ready, and
//! its log names the TLS failure and the endpoint.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lightcl_harness::captured::{CapturedProc, free_addr};
use lightcl_harness::mock_el::L2Chain;
use lightcl_harness::nats::NatsServer;
use lightcl_harness::tls::{FrontOptions, TestCa, TlsFront};
use lightcl_harness::{HttpAnswer, http_get, wait};

/// The driver binary on `el_url`, trusting only `ca_pem`, with debug logs.
fn spawn_driver(
    nats: &str,
    el_url: &str,
    ca_pem: &Path,
    admin: SocketAddr,
) -> (CapturedProc, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, SECRET_HEX);
    let mut args = base_args(nats, el_url, &secret, "n1");
    let i = args.iter().position(|a| a == "--admin.addr").expect("--admin.addr");
    args[i + 1] = admin.to_string();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightcl-engine-driver"));
    cmd.args(&args[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SSL_CERT_FILE", ca_pem)
        .env("RUST_LOG", "debug");
    (CapturedProc::spawn(cmd), dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_drives_an_https_engine_api() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(60);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("el");
    let pem = ca.write_pem(dir.path());
    let front = TlsFront::start(&ca, el.addr(), FrontOptions::default()).await.expect("tls front");
    let admin = free_addr();
    let (mut proc, _secret_dir) = spawn_driver(&nats.url(), &front.base_url(), &pem, admin);

    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    assert!(
        el.wait_until(Duration::from_secs(15), |e| e.head().number == 30
            && e.safe().number == 25
            && e.finalized().number == 20)
            .await,
        "the EL did not follow the target: head {} safe {} finalized {}; output:\n{}",
        el.head().number,
        el.safe().number,
        el.finalized().number,
        proc.output()
    );
    let fcus = el.fcus();
    assert!(
        fcus.iter().any(|f| f.state.head_block_hash == chain.at(30).hash
            && f.state.safe_block_hash == chain.at(25).hash
            && f.state.finalized_block_hash == chain.at(20).hash),
        "no forkchoice update for the target: {fcus:?}"
    );
    assert!(front.forwarded() >= fcus.len() as u64, "the updates bypassed the TLS front");
    assert_eq!(front.handshake_failures(), 0);
    assert_eq!(el.unauthorized_count(), 0, "the JWT did not survive the front");
    assert_eq!(el.check_invariants(), Ok(()));
    let ready = wait::until_async(Duration::from_secs(15), wait::POLL, || async {
        http_get(admin, "/ready").await.status == 200
    })
    .await;
    assert!(ready.is_ok(), "not ready: {:?}", http_get(admin, "/ready").await);
    assert!(proc.running());

    let (status, out) = proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}; output:\n{out}");
    assert!(
        out.contains(&front.base_url()),
        "the output never names the EL as {}:\n{out}",
        front.base_url()
    );
    assert!(!out.contains(SECRET_HEX), "the JWT secret is in the output:\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_with_an_untrusted_ca_sends_no_forkchoice_and_names_the_tls_failure() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(60);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("el");
    let other = TestCa::new("other");
    let other_pem = other.write_pem(dir.path());
    let front = TlsFront::start(&ca, el.addr(), FrontOptions::default()).await.expect("tls front");
    let admin = free_addr();
    let (mut proc, _secret_dir) = spawn_driver(&nats.url(), &front.base_url(), &other_pem, admin);

    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    let base = front.base_url();
    proc.wait_line(Duration::from_secs(15), |l| l.contains("TLS") && l.contains(&base)).await;
    // The server side records the failed handshake when it sees the client's alert, which may
    // come after the client logged its error.
    lightcl_harness::wait::until_async(
        Duration::from_secs(5),
        lightcl_harness::wait::POLL,
        || async { front.handshake_failures() > 0 },
    )
    .await
    .expect("the client tried a handshake");

    // Up (live), not ready for want of the EL, and nothing reaches the EL.
    let HttpAnswer { status: live, .. } = http_get(admin, "/live").await;
    assert_eq!(live, 200, "/live");
    let check = || async {
        let HttpAnswer { status: code, body, .. } = http_get(admin, "/ready").await;
        code == 503
            && body.lines().any(|l| l.trim() == "el")
            && el.fcus().is_empty()
            && el.calls().is_empty()
            && front.forwarded() == 0
    };
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        assert!(
            check().await,
            "ready {:?}, fcus {:?}, forwarded {}",
            http_get(admin, "/ready").await,
            el.fcus(),
            front.forwarded()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(proc.running(), "the driver exited:\n{}", proc.output());
    assert!(el.fcus().is_empty(), "a forkchoice update reached the EL");
    assert_eq!(front.forwarded(), 0);

    let (status, out) = proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}; output:\n{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(!out.contains(SECRET_HEX), "the JWT secret is in the output:\n{out}");
}
