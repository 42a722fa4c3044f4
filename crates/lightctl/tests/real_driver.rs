//! The real engine-driver (in-process library object) with a real nats-server and the mock EL,
//! operated with the real `lightctl` binary: status reports the heads the EL holds, pause stops
//! forkchoice updates and resume restarts them, a bad token changes nothing, resync re-reads
//! the EL, health flips with readiness and reflection lists the services.

mod common;

use std::time::Duration;

use alloy_rpc_types_engine::JwtSecret;
use clap::Parser;
use common::{Ran, lightctl, write_file};
use futures::StreamExt;
use lightcl_bus::{Publisher, ensure_topology, subjects};
use lightcl_core::status::L1BlockRef;
use lightcl_core::{L2BlockRef, Target};
use lightcl_harness::mock_el::{L2Chain, MockEl, MockElConfig, l1_origin};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use lightcl_proto::v1;
use lightcl_proto::v1::engine_driver_control_client::EngineDriverControlClient;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const CHAIN: u64 = 10;
const SECRET_HEX: &str = "8f5a0b37e1c2d4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e";
const TOKEN: &str = "driver-token";

fn l1(n: u64) -> L1BlockRef {
    let o = l1_origin(n);
    L1BlockRef {
        hash: o.hash,
        number: n,
        parent_hash: l1_origin(n.saturating_sub(1)).hash,
        timestamp: 1_700_000_000 + 12 * n,
    }
}

/// A target over `chain`: unsafe `u`, safe and local-safe `s`, finalized `f`.
fn target(rev: u64, chain: &L2Chain, u: u64, s: u64, f: u64) -> Target {
    let safe: L2BlockRef = chain.at(s);
    Target {
        chain_id: CHAIN,
        epoch: 0,
        revision: rev,
        unsafe_l2: chain.at(u),
        safe_l2: safe,
        local_safe_l2: safe,
        finalized_l2: chain.at(f),
        current_l1: l1(safe.l1origin.number + 1),
    }
}

/// A driver, the EL it drives, NATS and a target publisher.
struct Pipeline {
    nats: NatsServer,
    el: MockEl,
    chain: L2Chain,
    publisher: Publisher,
    grpc: String,
    token_file: String,
    bad_token_file: String,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), lightcl_engine_driver::RunError>>,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    async fn start() -> Self {
        let nats = NatsServer::start().await.expect("nats-server");
        let mut cfg = MockElConfig::new(JwtSecret::from_hex(SECRET_HEX).expect("secret"));
        cfg.chain_id = CHAIN;
        cfg.download_delay = Duration::from_millis(0);
        let el = MockEl::start(cfg).await.expect("mock EL");
        let chain = L2Chain::new(60);
        el.set_network_chain(&chain);

        let client = async_nats::connect(nats.url()).await.expect("nats connect");
        let js = async_nats::jetstream::new(client);
        ensure_topology(&js, 1).await.expect("topology");
        let publisher = Publisher::new(js, Duration::from_secs(5));

        let dir = tempfile::tempdir().expect("tempdir");
        let secret = write_file(dir.path(), "jwt.hex", SECRET_HEX);
        let token_file = write_file(dir.path(), "token", TOKEN).display().to_string();
        let bad_token_file = write_file(dir.path(), "bad", "wrong").display().to_string();
        let args = [
            "lightcl-engine-driver".to_owned(),
            "--chain-id".into(),
            CHAIN.to_string(),
            "--nats.url".into(),
            nats.url(),
            "--l2.engine-rpc".into(),
            el.url(),
            "--l2.jwt-secret".into(),
            secret.display().to_string(),
            "--node-id".into(),
            "reth-0".into(),
            "--grpc.addr".into(),
            "127.0.0.1:0".into(),
            "--admin.addr".into(),
            "127.0.0.1:0".into(),
            "--grpc.token-file".into(),
            token_file.clone(),
            "--shutdown-grace".into(),
            "3s".into(),
        ];
        let cfg = lightcl_engine_driver::Cli::try_parse_from(args)
            .expect("flags")
            .into_config()
            .expect("config");
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(lightcl_engine_driver::run(cfg, cancel.clone(), move |b| {
            let _ = tx.send(b);
        }));
        let bound = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("driver binds in time")
            .expect("bound");
        Self {
            nats,
            el,
            chain,
            publisher,
            grpc: format!("http://{}", bound.grpc),
            token_file,
            bad_token_file,
            cancel,
            task,
            _dir: dir,
        }
    }

    async fn publish(&self, t: &Target) {
        self.publisher
            .publish(
                &subjects::target(CHAIN),
                lightcl_proto::names::TARGET,
                &v1::Target::from_core(t),
                None,
            )
            .await
            .expect("publish target");
    }

    async fn driver_status(&self) -> v1::EngineDriverStatus {
        let mut c = EngineDriverControlClient::connect(self.grpc.clone()).await.expect("grpc");
        c.get_status(v1::GetStatusRequest {}).await.expect("status").into_inner()
    }

    async fn stop(self) {
        self.cancel.cancel();
        let res = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("driver stops in time")
            .expect("driver task");
        assert!(res.is_ok(), "clean stop: {res:?}");
        drop(self.nats);
    }
}

fn hex32(h: &alloy_primitives::B256) -> String {
    format!("{h:#x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_the_heads_the_mock_el_holds() {
    let p = Pipeline::start().await;
    p.publish(&target(1, &p.chain, 40, 30, 20)).await;
    assert!(
        p.el.wait_until(Duration::from_secs(10), |e| e.head().number == 40
            && e.safe().number == 30
            && e.finalized().number == 20)
            .await,
        "the EL follows the target"
    );
    // The driver publishes its engine state after the VALID answer: poll lightctl until it
    // shows the EL's heads in both the driver's own status and the fleet's KV entry.
    let nats_url = p.nats.url();
    let (head, safe, fin) = (p.el.head(), p.el.safe(), p.el.finalized());
    let same = |v: &serde_json::Value, b: &L2BlockRef| {
        v["number"].as_u64() == Some(b.number) && v["hash"].as_str() == Some(&hex32(&b.hash))
    };
    let args =
        ["status", "-o", "json", "--driver", &p.grpc, "--nats.url", &nats_url, "--chain-id", "10"];
    let shows_heads = |r: &Ran| {
        let j = r.json();
        let state = &j["drivers"][0]["status"]["state"];
        let node = &j["fleet"]["nodes"][0]["state"];
        r.code == 0
            && [state, node].iter().all(|s| {
                same(&s["head"], &head) && same(&s["safe"], &safe) && same(&s["finalized"], &fin)
            })
            && node["node_id"] == "reth-0"
            && j["drivers"][0]["status"]["lag_blocks"] == 0
    };
    let shown = wait::until_async(Duration::from_secs(10), Duration::from_millis(50), || async {
        Some(lightctl(&args).await).filter(shows_heads)
    })
    .await;
    let last = match shown {
        Ok(r) => r,
        Err(t) => panic!(
            "{t}: lightctl reports the EL's heads {head:?} {safe:?} {fin:?}; last run: {:?}",
            lightctl(&args).await
        ),
    };
    let j = last.json();
    assert_eq!(j["fleet"]["nodes"][0]["key"], "10.reth-0");
    assert_eq!(j["drivers"][0]["status"]["state"]["phase"], "following");
    assert_eq!(j["drivers"][0]["status"]["state"]["last_answer"], "valid");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_fcus_resume_restarts_them_and_a_bad_token_changes_nothing() {
    let p = Pipeline::start().await;
    p.publish(&target(1, &p.chain, 30, 25, 20)).await;
    assert!(p.el.wait_until(Duration::from_secs(10), |e| e.safe().number == 25).await);

    // A bad token: refused (exit 3), the driver keeps following.
    let r = lightctl(&["pause", "driver", &p.grpc, "--token-file", &p.bad_token_file]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(!p.driver_status().await.paused, "a bad token changes nothing");
    p.publish(&target(2, &p.chain, 35, 30, 25)).await;
    assert!(
        p.el.wait_until(Duration::from_secs(10), |e| e.safe().number == 30).await,
        "still following after the refused pause"
    );

    // Pause with the right token: the driver sees new targets but sends no FCU.
    let r = lightctl(&["pause", "driver", &p.grpc, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let fcus_before = p.el.fcu_started_count();
    p.publish(&target(3, &p.chain, 50, 45, 40)).await;
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        let s = p.driver_status().await;
        s.paused && s.last_target.is_some_and(|t| t.revision == 3)
    })
    .await
    .expect("the paused driver still receives targets");
    let r = lightctl(&["status", "-o", "json", "--driver", &p.grpc]).await;
    let st = &r.json()["drivers"][0]["status"];
    assert_eq!(st["paused"], true);
    assert_eq!(st["last_target"]["revision"], 3);
    assert_eq!(st["lag_blocks"], 15, "target head 50, applied head 35");
    assert_eq!(p.el.fcu_started_count(), fcus_before, "no FCU while paused");
    assert_eq!(p.el.safe().number, 30);

    // A bad token cannot resume it.
    let r = lightctl(&["resume", "driver", &p.grpc, "--token-file", &p.bad_token_file]).await;
    assert_eq!(r.code, 3, "{r:?}");
    assert!(p.driver_status().await.paused);
    assert_eq!(p.el.fcu_started_count(), fcus_before);

    // Resume: FCUs start again and the EL reaches the newest target.
    let r = lightctl(&["resume", "driver", &p.grpc, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.stdout.trim(), format!("driver {}: running", p.grpc));
    assert!(
        p.el.wait_until(Duration::from_secs(10), |e| e.head().number == 50
            && e.safe().number == 45
            && e.finalized().number == 40)
            .await
    );
    assert!(p.el.fcu_started_count() > fcus_before);

    // Resync makes the driver re-read the EL's heads.
    let reads = |el: &MockEl| el.calls().iter().filter(|c| c.params[0] == "latest").count();
    let before = reads(&p.el);
    let r = lightctl(&["-o", "json", "resync", &p.grpc, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["status"]["state"]["node_id"], "reth-0");
    assert!(
        p.el.wait_until(Duration::from_secs(10), |e| reads(e) > before).await,
        "resync re-reads the EL's heads"
    );
    p.el.check_invariants().expect("EL invariants");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_flips_with_readiness_and_reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let p = Pipeline::start().await;
    let ch = tonic::transport::Channel::from_shared(p.grpc.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let health = |service: &'static str| {
        let ch = ch.clone();
        async move {
            let r = HealthClient::new(ch)
                .check(HealthCheckRequest { service: service.to_owned() })
                .await
                .expect("health check")
                .into_inner();
            ServingStatus::try_from(r.status).expect("status")
        }
    };
    let svc = "lightcl.v1.EngineDriverControl";
    wait::until_async(Duration::from_secs(10), wait::POLL, || async {
        health(svc).await == ServingStatus::Serving
    })
    .await
    .expect("SERVING once NATS and the EL are reachable");
    assert_eq!(health("").await, ServingStatus::Serving);

    // The EL goes away; the driver notices on its next EL call (a resync re-reads the EL's
    // heads): not ready, NOT_SERVING; status says so too.
    p.el.stop().await;
    let r = lightctl(&["resync", &p.grpc, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    wait::until_async(Duration::from_secs(15), wait::POLL, || async {
        health(svc).await == ServingStatus::NotServing
    })
    .await
    .expect("NOT_SERVING while the EL is down");
    let r = lightctl(&["status", "-o", "json", "--driver", &p.grpc]).await;
    let st = &r.json()["drivers"][0]["status"];
    assert_eq!((st["ready"].as_bool(), st["el_reachable"].as_bool()), (Some(false), Some(false)));

    p.el.restart().await.expect("EL restart");
    let r = lightctl(&["resync", &p.grpc, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    wait::until_async(Duration::from_secs(15), wait::POLL, || async {
        health(svc).await == ServingStatus::Serving
    })
    .await
    .expect("SERVING again once the EL is back");

    // Reflection (tonic-reflection's client types) lists the control service and health.
    let mut client = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.next().await.expect("an answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [svc, "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    for other in ["lightcl.v1.PollerControl", "lightcl.v1.ValidatorControl"] {
        assert!(!names.iter().any(|n| n == other), "{other} is not served here: {names:?}");
    }
    // lightctl finds the kind itself (reflection, then a probe).
    let r = lightctl(&["-o", "json", "pause", &p.grpc, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["kind"], "driver");
    p.stop().await;
}
