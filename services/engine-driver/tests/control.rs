//! Integration: the control API, misconfiguration and the binary's exit status.

mod common;

use std::time::Duration;

use common::*;
use lightcl_engine_driver::RunError;
use lightcl_harness::mock_el::L2Chain;
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use lightcl_proto::v1;
use lightcl_proto::v1::engine_driver_control_client::EngineDriverControlClient;
use tonic::Request;

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn control_api_status_pause_resume_resync() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(40);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").expect("token");
    let token_arg = token_file.display().to_string();
    let d = start_driver(&nats.url(), &el, "n1", &["--grpc.token-file", &token_arg]).await;
    let mut c =
        EngineDriverControlClient::connect(format!("http://{}", d.bound.grpc)).await.expect("grpc");

    pubr.publish(&target(1, &chain, 20, 15, 10)).await;
    assert!(el.wait_until(Duration::from_secs(5), |e| e.safe().number == 15).await);
    wait::until_async(Duration::from_secs(5), wait::POLL, || {
        let mut c = c.clone();
        async move {
            let s = c.get_status(v1::GetStatusRequest {}).await.expect("status").into_inner();
            s.el_reachable
                && s.nats_connected
                && s.ready
                && s.lag_blocks == 0
                && s.last_target.is_some_and(|t| t.revision == 1)
                && s.state.is_some_and(|st| st.head.is_some_and(|h| h.number == 20))
        }
    })
    .await
    .unwrap();
    let mut watch = c.watch_status(v1::WatchStatusRequest {}).await.expect("watch").into_inner();
    assert!(watch.message().await.expect("stream").is_some());

    // Mutations need the token.
    let denied = c.pause(v1::PauseRequest { reason: "x".into() }).await.expect_err("no token");
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let p = c.pause(authed(v1::PauseRequest { reason: "maintenance".into() }, "s3cret")).await;
    assert!(p.expect("pause").into_inner().paused);
    let before = el.fcu_started_count();
    pubr.publish(&target(2, &chain, 30, 25, 20)).await;
    wait::until_async(Duration::from_secs(5), wait::POLL, || {
        let mut c = c.clone();
        async move {
            let s = c.get_status(v1::GetStatusRequest {}).await.expect("status").into_inner();
            s.paused && s.last_target.is_some_and(|t| t.revision == 2) && s.lag_blocks == 10
        }
    })
    .await
    .unwrap();
    assert_eq!(el.fcu_started_count(), before, "no FCU while paused");
    let r = c.resume(authed(v1::ResumeRequest {}, "s3cret")).await.expect("resume");
    assert!(!r.into_inner().paused);
    assert!(el.wait_until(Duration::from_secs(5), |e| e.safe().number == 25).await);

    let reads_before = el.calls().iter().filter(|c| c.params[0] == "latest").count();
    c.resync(authed(v1::ResyncRequest {}, "s3cret")).await.expect("resync");
    assert!(
        el.wait_until(Duration::from_secs(5), |e| {
            e.calls().iter().filter(|c| c.params[0] == "latest").count() > reads_before
        })
        .await,
        "resync re-reads the EL's heads"
    );
    d.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_jwt_secret_is_a_clear_error_and_no_fcu_is_accepted() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(10);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    pubr.publish(&target(1, &chain, 10, 8, 5)).await;
    let wrong = "11".repeat(32);
    let d = start_driver_with_secret(&nats.url(), &el.url(), &wrong, "n1", &[]).await;
    let res =
        tokio::time::timeout(Duration::from_secs(10), d.task).await.expect("stops").expect("task");
    match res {
        Err(RunError::Config(e)) => {
            assert_eq!(e.flag, "--l2.jwt-secret");
            assert!(e.reason.contains("401"), "{}", e.reason);
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(el.unauthorized_count() >= 1);
    assert!(el.fcus().is_empty(), "no FCU accepted");
    assert_eq!(el.head().number, 0);
}

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_lightcl-engine-driver"))
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_exits_64_on_a_rejected_jwt_naming_the_flag() {
    let el = mock_el(0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, &"22".repeat(32));
    let args = base_args("nats://127.0.0.1:1", &el.url(), &secret, "n1");
    let out = tokio::task::spawn_blocking(move || bin().args(&args[1..]).output())
        .await
        .expect("join")
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: --l2.jwt-secret:"), "{stderr}");
    assert!(el.fcus().is_empty());
}

#[test]
fn binary_exits_64_on_bad_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.hex");
    let short = write_secret(&dir, "abcd");
    let good = dir.path().join("good.hex");
    std::fs::write(&good, "  0x".to_owned() + &"ab".repeat(32) + "  \n").expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (base_args("nats://127.0.0.1:1", "http://127.0.0.1:1", &missing, "n1"), "--l2.jwt-secret"),
        (base_args("nats://127.0.0.1:1", "http://127.0.0.1:1", &short, "n1"), "--l2.jwt-secret"),
        (base_args("nats://127.0.0.1:1", "ftp://x", &good, "n1"), "--l2.engine-rpc"),
        (base_args("nats://127.0.0.1:1", "http://127.0.0.1:1", &good, "bad.node"), "--node-id"),
        (
            {
                let mut a = base_args("nats://127.0.0.1:1", "http://127.0.0.1:1", &good, "n1");
                a.extend(["--fcu-timeout".into(), "soon".into()]);
                a
            },
            "--fcu-timeout",
        ),
    ];
    for (args, flag) in cases {
        let out = bin().args(&args[1..]).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flag}: {stderr}");
        assert!(stderr.contains(flag), "{flag}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}
