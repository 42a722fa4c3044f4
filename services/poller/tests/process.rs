//! The real binary: bad configuration and a source of another chain exit 64 with one line
//! naming the flag; configured through env twins it polls, publishes and drains on SIGTERM.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lightcl_harness::captured::free_addr;
use lightcl_harness::mock_source::Failure;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lightcl-poller"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// Killed on drop, so a failing test leaves no process behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Waits for the exit status, at most `timeout`.
    async fn exit_within(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.0;
        wait::until_async(timeout, wait::POLL, || std::future::ready(child.try_wait().unwrap()))
            .await
            .unwrap_or_else(|_| panic!("no exit within {timeout:?}"))
    }
}

fn one_line_naming(out: &Output, flag: &str, what: &str) {
    assert_eq!(out.status.code(), Some(64), "{what}: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
    assert!(err.contains(flag), "{what}: {err}");
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    let src = ["--l2.follow.source", "http://127.0.0.1:1"];
    let cases: [(&[&str], &str); 8] = [
        (&["--chain-id", "10", "--l2.follow.source", "not a url"], "--l2.follow.source"),
        (&["--chain-id", "10", "--l2.follow.source", "ftp://x"], "--l2.follow.source"),
        (&["--chain-id", "10"], "--l2.follow.source"),
        (&["--chain-id", "10", src[0], src[1], "--source-id", "a.b"], "--source-id"),
        (&["--chain-id", "10", src[0], src[1], "--poll-interval", "0s"], "--poll-interval"),
        (&["--chain-id", "10", src[0], src[1], "--heartbeat", "0s"], "--heartbeat"),
        (&["--chain-id", "10", src[0], src[1], "--rpc-timeout", "soon"], "--rpc-timeout"),
        (
            &["--chain-id", "10", src[0], src[1], "--source.chain-check-interval", "1s"],
            "--source.chain-check-interval",
        ),
    ];
    for (args, flag) in cases {
        one_line_naming(&bin().args(args).output().unwrap(), flag, &format!("{args:?}"));
    }
    // The env twin is read too.
    let out = bin()
        .args(["--chain-id", "10"])
        .env("LIGHTCL_L2_FOLLOW_SOURCE", "ftp://x")
        .output()
        .unwrap();
    one_line_naming(&out, "--l2.follow.source", "LIGHTCL_L2_FOLLOW_SOURCE");
    let out = bin()
        .args(["--chain-id", "10", src[0], src[1]])
        .env("LIGHTCL_SOURCE_CHAIN_CHECK_INTERVAL", "10ms")
        .output()
        .unwrap();
    one_line_naming(&out, "--source.chain-check-interval", "LIGHTCL_SOURCE_CHAIN_CHECK_INTERVAL");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_of_another_chain_exits_64_naming_chain_id() {
    let env = Env::new().await;
    env.source.set_chain_id(11);
    let child = bin()
        .args(["--chain-id", "10", "--grpc.addr", "127.0.0.1:0", "--admin.addr", "127.0.0.1:0"])
        .args(["--l2.follow.source", &env.source.url(), "--nats.url", &env.nats.url()])
        .args(["--source-id", SRC])
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(15),
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await
    .expect("no exit against the wrong chain")
    .unwrap()
    .unwrap();
    one_line_naming(&out, "--chain-id", "wrong chain");
    assert!(env.stored(SRC).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_configured_by_env_polls_publishes_and_drains_on_sigterm() {
    let env = Env::new().await;
    let admin = free_addr();
    let child = bin()
        .args(["--chain-id", "10"])
        .env("LIGHTCL_ADMIN_ADDR", admin.to_string())
        .env("LIGHTCL_GRPC_ADDR", free_addr().to_string())
        .env("LIGHTCL_L2_FOLLOW_SOURCE", env.source.url())
        .env("LIGHTCL_NATS_URL", env.nats.url())
        .env("LIGHTCL_SOURCE_ID", "proc")
        .env("LIGHTCL_POLL_INTERVAL", "100ms")
        .env("LIGHTCL_RPC_TIMEOUT", "10s")
        .env("LIGHTCL_HEARTBEAT", "1s")
        .env("LIGHTCL_MAX_BACKOFF", "500ms")
        .env("LIGHTCL_SHUTDOWN_GRACE", "2s")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Proc(child);
    wait::until_async(Duration::from_secs(15), wait::POLL, || async move {
        http_get(admin, "/ready").await.status == 200
    })
    .await
    .expect("/ready answers 200");
    // Published under the source id from the env, re-published at the 1 s heartbeat from the env
    // (the default heartbeat is 10 s).
    let got = env.wait_stored("proc", 2).await;
    got[0].check("proc", &status(0));
    assert_eq!(got[1].slot(HEARTBEAT_MS), got[0].slot(HEARTBEAT_MS) + 1);
    env.source.set_status(status(1));
    env.wait_stored("proc", 3).await[2].check("proc", &status(1));

    // SIGTERM with a poll in flight (the source answers after 10 s): exit 0 within the grace.
    env.source.set_failure(Failure::Delay(Duration::from_secs(10)));
    let r = env.source.requests(SYNC);
    assert!(env.source.wait_for_requests(SYNC, r + 1, Duration::from_secs(5)).await);
    let pid = child.0.id().to_string();
    let t = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.exit_within(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    assert!(t.elapsed() < Duration::from_millis(3_500), "took {:?}", t.elapsed());
}

/// A source URL with a bad scheme is refused before any server binds or NATS is dialled,
/// naming the flag and never printing the key in its path or userinfo.
#[test]
fn bad_source_url_is_refused_before_anything_starts_and_hides_the_key() {
    let key = "0123456789abcdefKEYKEY";
    for url in [format!("grpc://node.example/{key}"), format!("https://u:{key}@/x")] {
        let mut cmd = bin();
        cmd.args(["--chain-id", "10", "--l2.follow.source", &url]);
        lightcl_harness::config_check::assert_refused_before_start(
            &mut cmd,
            "--l2.follow.source",
            key,
        );
    }
}

#[test]
fn auth_reads_without_a_token_file_exits_64_naming_the_flag() {
    let base = ["--chain-id", "10", "--l2.follow.source", "http://127.0.0.1:1"];
    let out = bin().args(base).arg("--grpc.auth-reads").output().unwrap();
    one_line_naming(&out, "--grpc.auth-reads", "--grpc.auth-reads");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--grpc.token-file"), "{err}");
    let out = bin().args(base).env("LIGHTCL_GRPC_AUTH_READS", "true").output().unwrap();
    one_line_naming(&out, "--grpc.auth-reads", "LIGHTCL_GRPC_AUTH_READS");
}
