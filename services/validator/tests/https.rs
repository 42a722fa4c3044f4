//! The real binary checks statuses against an `https://` L1: anvil (behind the counting proxy)
//! sits behind a TLS front signed by a private CA (trusted through `SSL_CERT_FILE`) that, like a
//! hosted provider, only answers under `/v2/<key>`. The key never reaches the process output
//! or the bus; with an untrusted CA no target is published, the status is rejected as "L1
//! unavailable" past the retry budget, and the log names the TLS failure.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use lightcl_harness::HttpAnswer;
use lightcl_harness::captured::{CapturedProc, free_addr};
use lightcl_harness::tls::{FrontOptions, TestCa, TlsFront};
use lightcl_proto::v1::RejectionReason as R;

/// Looks like a hosted provider's key: long, random-looking, in the URL path.
const KEY: &str = "vk3Hn8Pq2Zx7Wm5Rt1Lc9Bd4Gy6Fs0JaUeTo";

/// A TLS front with the API key in front of the counting proxy (itself in front of anvil).
async fn keyed_front(env: &Env, ca: &TestCa) -> TlsFront {
    let upstream: SocketAddr =
        env.proxy.url().strip_prefix("http://").expect("http proxy").parse().expect("addr");
    TlsFront::start(ca, upstream, FrontOptions { api_key: Some(KEY.into()) })
        .await
        .expect("tls front")
}

/// The validator binary on `l1`, trusting only `ca_pem`, with debug logs.
fn spawn_validator(
    env: &Env,
    l1: &str,
    ca_pem: &Path,
    admin: SocketAddr,
    extra: &[&str],
) -> CapturedProc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lightcl-validator"));
    cmd.args(["--chain-id", "10", "--grpc.addr", "127.0.0.1:0"])
        .args(["--admin.addr", &admin.to_string()])
        .args(["--l1.rpc", l1, "--nats.url", &env.nats.url()])
        .args(["--l1-timeout", "1s", "--shutdown-grace", "2s"])
        .args(extra)
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
async fn binary_validates_against_an_https_l1_without_printing_its_key() {
    let mut env = Env::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("l1");
    let pem = ca.write_pem(dir.path());
    let front = keyed_front(&env, &ca).await;
    let admin = free_addr();
    let mut proc = spawn_validator(&env, &front.url(), &pem, admin, &[]);
    // Ready: the start-up L1 probe went through the front.
    wait::until_async(Duration::from_secs(15), wait::POLL, || async move {
        http_get(admin, "/ready").await.status == 200
    })
    .await
    .expect("/ready answers 200");

    let before = env.proxy.requests();
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let t = env.wait_targets(1).await;
    assert_eq!(t[0].revision, 1);
    assert_eq!(t[0].source_ids, vec!["a".to_owned()]);
    assert!(env.rejections().await.is_empty());
    assert!(env.proxy.requests() > before, "the status was checked against anvil");
    assert!(front.forwarded() > 0, "no request went through the TLS front");
    assert_eq!(front.unauthorized(), 0, "a request missed the /v2/<key> path");
    assert_eq!(front.handshake_failures(), 0);
    let HttpAnswer { status: code, body: metrics, .. } = http_get(admin, "/metrics").await;
    assert_eq!(code, 200);
    assert_no_key("/metrics", &metrics);
    assert!(proc.running());

    let (status, out) = proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}; output:\n{out}");
    assert_no_key("the validator's output", &out);
    assert!(
        out.contains(&front.base_url()),
        "the output never names the L1 as {}:\n{out}",
        front.base_url()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_with_an_untrusted_ca_publishes_no_target_and_names_the_tls_failure() {
    let mut env = Env::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("l1");
    let other = TestCa::new("other");
    let other_pem = other.write_pem(dir.path());
    let front = keyed_front(&env, &ca).await;
    let admin = free_addr();
    let before = env.proxy.requests();
    let mut proc =
        spawn_validator(&env, &front.url(), &other_pem, admin, &["--l1.retry-budget", "1s"]);

    // The durable consumer starts at the last status per subject: published before or after
    // it exists, this status is delivered.
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    let r = env.wait_rejections(1).await;
    assert_eq!(reason(&r[0]), R::L1Unavailable, "{r:?}");
    let base = front.base_url();
    assert!(
        r[0].message.contains("TLS") && r[0].message.contains(&base),
        "the rejection does not name the TLS failure at {base}: {}",
        r[0].message
    );
    assert_no_key("the rejection", &format!("{r:?}"));
    assert!(env.targets().await.is_empty(), "a target was published unchecked");

    let line =
        proc.wait_line(Duration::from_secs(15), |l| l.contains("TLS") && l.contains(&base)).await;
    assert_no_key("the TLS failure line", &line);
    let HttpAnswer { status: code, body, .. } = http_get(admin, "/ready").await;
    assert_ne!(code, 200, "ready without a trusted L1: {body}");
    assert!(body.lines().any(|l| l.trim() == "l1"), "{body}");
    assert!(proc.running(), "the validator exited:\n{}", proc.output());
    assert_eq!(front.forwarded(), 0, "a request got through the untrusted front");
    // The server side records the failed handshake when it sees the client's alert, which may
    // come after the client logged its error.
    lightcl_harness::wait::until_async(
        Duration::from_secs(5),
        lightcl_harness::wait::POLL,
        || async { front.handshake_failures() > 0 },
    )
    .await
    .expect("the client tried a handshake");
    assert_eq!(env.proxy.requests(), before, "a request reached the L1");
    assert!(env.targets().await.is_empty());

    let (status, out) = proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}; output:\n{out}");
    assert_no_key("the validator's output", &out);
}
