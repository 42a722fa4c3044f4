//! The real binary: bad configuration exits 64 with one line naming the flag; SIGTERM drains.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lightcl-validator"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

#[test]
fn bad_flags_exit_64_naming_the_flag() {
    let cases: [(&[&str], &str); 5] = [
        (&["--chain-id", "10", "--l1.rpc", "not a url"], "--l1.rpc"),
        (
            &["--chain-id", "10", "--l1.rpc", "http://127.0.0.1:1", "--l1.watch-interval", "50ms"],
            "--l1.watch-interval",
        ),
        (&["--chain-id", "10", "--l1.rpc", "ftp://x"], "--l1.rpc"),
        (&["--chain-id", "10", "--l1.rpc", "http://127.0.0.1:1", "--quorum", "0"], "--quorum"),
        (&["--chain-id", "0", "--l1-eth-rpc", "http://127.0.0.1:1"], "--chain-id"),
    ];
    for (args, flag) in cases {
        let out = bin().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    // The env twin is read too.
    let out = bin()
        .args(["--chain-id", "10"])
        .env("LIGHTCL_L1_RPC", "http://127.0.0.1:1")
        .env("LIGHTCL_QUORUM", "99")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--quorum"));
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_validates_and_drains_on_sigterm() {
    let mut env = Env::new().await;
    let admin = lightcl_harness::captured::free_addr();
    let mut child = bin()
        .args(["--chain-id", "10", "--grpc.addr", "127.0.0.1:0"])
        .args(["--admin.addr", &admin.to_string()])
        .args(["--l1.rpc", &env.proxy.url(), "--nats.url", &env.nats.url()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait::until_async(Duration::from_secs(15), wait::POLL, || async move {
        http_get(admin, "/ready").await.status == 200
    })
    .await
    .expect("/ready answers 200");
    env.publish("a", &env.status(70, 60, 20, 38)).await;
    assert_eq!(env.wait_targets(1).await[0].revision, 1);

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = wait::until_async(Duration::from_secs(10), wait::POLL, || {
        std::future::ready(child.try_wait().unwrap())
    })
    .await
    .expect("no exit after SIGTERM");
    assert!(status.success(), "{status:?}");
}

/// A hosted-provider URL with a bad scheme or shape is refused before any server binds or NATS
/// is dialled, naming the flag and never printing the key in its path.
#[test]
fn bad_endpoint_is_refused_before_anything_starts_and_hides_the_key() {
    let key = "0123456789abcdefKEYKEY";
    for url in [format!("wss://eth.example/v2/{key}"), format!("https://u:{key}@/v2/{key}")] {
        let mut cmd = bin();
        cmd.args(["--chain-id", "10", "--l1.rpc", &url]);
        lightcl_harness::config_check::assert_refused_before_start(&mut cmd, "--l1.rpc", key);
    }
}
