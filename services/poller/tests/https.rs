//! The real binary follows an `https://` source: the mock source sits behind a TLS front signed
//! by a private CA (trusted through `SSL_CERT_FILE`) that, like a hosted provider, only answers
//! under `/v2/<key>`. The key never reaches the process output; with an untrusted CA nothing is
//! published, the poller stays up and not ready, and its log names the TLS failure.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use lightcl_harness::HttpAnswer;
use lightcl_harness::captured::{CapturedProc, free_addr};
use lightcl_harness::tls::{FrontOptions, TestCa, TlsFront};

/// Looks like a hosted provider's key: long, random-looking, in the URL path.
const KEY: &str = "pk7Qz2RwX9vLm4Tn8Yb1Hc6Jd3Fs5GaE0uKo";

/// The poller binary following `source`, trusting only `ca_pem`, with debug logs.
fn spawn_poller(env: &Env, source: &str, ca_pem: &Path, admin: SocketAddr) -> CapturedProc {
    let admin = admin.to_string();
    let args = env.args(&[("--l2.follow.source", source), ("--admin.addr", &admin)]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightcl-poller"));
    cmd.args(&args[1..])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SSL_CERT_FILE", ca_pem)
        .env("RUST_LOG", "debug");
    CapturedProc::spawn(cmd)
}

fn assert_no_key(what: &str, text: &str) {
    assert!(!text.contains(KEY), "{what} contains the API key:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_follows_an_https_source_without_printing_its_key() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("source");
    let pem = ca.write_pem(dir.path());
    let front = TlsFront::start(&ca, env.source.addr(), FrontOptions { api_key: Some(KEY.into()) })
        .await
        .expect("tls front");
    let admin = free_addr();
    let mut proc = spawn_poller(&env, &front.url(), &pem, admin);

    // Published, through the front, under the key's path.
    let stored = env.wait_stored(SRC, 1).await;
    stored[0].check(SRC, &status(0));
    assert!(front.forwarded() > 0, "no request went through the TLS front");
    assert_eq!(front.unauthorized(), 0, "a request missed the /v2/<key> path");
    assert_eq!(front.handshake_failures(), 0);
    wait::until_async(Duration::from_secs(15), wait::POLL, || async move {
        http_get(admin, "/ready").await.status == 200
    })
    .await
    .expect("/ready answers 200");
    let HttpAnswer { status: code, body: metrics, .. } = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    assert_no_key("/metrics", &metrics);
    assert!(proc.running());

    let (status, out) = proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}; output:\n{out}");
    assert_no_key("the poller's output", &out);
    assert!(
        out.contains(&front.base_url()),
        "the output never names the source as {}:\n{out}",
        front.base_url()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_with_an_untrusted_ca_publishes_nothing_and_names_the_tls_failure() {
    let env = Env::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("source");
    let other = TestCa::new("other");
    let other_pem = other.write_pem(dir.path());
    let front = TlsFront::start(&ca, env.source.addr(), FrontOptions { api_key: Some(KEY.into()) })
        .await
        .expect("tls front");
    let admin = free_addr();
    let mut proc = spawn_poller(&env, &front.url(), &other_pem, admin);

    let base = front.base_url();
    let line =
        proc.wait_line(Duration::from_secs(15), |l| l.contains("TLS") && l.contains(&base)).await;
    assert_no_key("the TLS failure line", &line);
    // The server side records the failed handshake when it sees the client's alert, which may
    // come after the client logged its error.
    lightcl_harness::wait::until_async(
        Duration::from_secs(5),
        lightcl_harness::wait::POLL,
        || async { front.handshake_failures() > 0 },
    )
    .await
    .expect("the client tried a handshake");

    // Up, not ready, nothing published, nothing forwarded.
    holds_for(Duration::from_secs(1), "not ready, nothing published", || async {
        let HttpAnswer { status: code, body, .. } = http_get(admin, "/ready").await;
        code == 503
            && body.lines().any(|l| l.trim() == "source")
            && env.stored(SRC).await.is_empty()
            && front.forwarded() == 0
    })
    .await;
    assert!(proc.running(), "the poller exited:\n{}", proc.output());
    assert_eq!(front.forwarded(), 0);
    assert_eq!(env.source.total_requests(), 0, "a request reached the source");

    let (status, out) = proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}; output:\n{out}");
    assert_no_key("the poller's output", &out);
    assert!(env.stored(SRC).await.is_empty());
}
