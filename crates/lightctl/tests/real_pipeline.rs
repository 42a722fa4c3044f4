//! A running pipeline of real services: raw statuses (built on a real anvil L1) → the real
//! validator → the real engine-driver → the mock EL, over a real nats-server, operated with the
//! real `lightctl` binary. The poller is replaced by the test publishing raw statuses.

mod common;

use std::time::Duration;

use alloy_rpc_types_engine::JwtSecret;
use clap::Parser;
use common::{lightctl, write_file};
use lightcl_bus::{Publisher, ensure_topology, subjects};
use lightcl_core::{L1BlockRef, L2BlockRef, SyncStatus};
use lightcl_harness::anvil::{Anvil, AnvilOptions};
use lightcl_harness::mock_el::{L2Chain, MockEl, MockElConfig};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use lightcl_proto::{names, v1};
use tokio_util::sync::CancellationToken;

const CHAIN: u64 = 10;
const SECRET_HEX: &str = "8f5a0b37e1c2d4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e";
const TOKEN: &str = "pipeline-token";

type Task = tokio::task::JoinHandle<Result<(), String>>;

struct Pipeline {
    nats: NatsServer,
    _anvil: Anvil,
    el: MockEl,
    chain: L2Chain,
    l1: Vec<L1BlockRef>,
    publisher: Publisher,
    js: async_nats::jetstream::Context,
    validator: String,
    driver: String,
    token_file: String,
    cancel: CancellationToken,
    tasks: Vec<Task>,
    seq: u64,
    _dir: tempfile::TempDir,
}

impl Pipeline {
    async fn start() -> Self {
        let nats = NatsServer::start().await.expect("nats-server");
        let anvil = Anvil::start_with(AnvilOptions { slots_in_an_epoch: 4, ..Default::default() })
            .await
            .expect("anvil");
        anvil.mine(40).await.expect("mine");
        let mut l1 = Vec::new();
        for n in 0..=40 {
            l1.push(anvil.block(n).await.expect("block").expect("exists"));
        }
        let mut cfg = MockElConfig::new(JwtSecret::from_hex(SECRET_HEX).expect("secret"));
        cfg.chain_id = CHAIN;
        cfg.download_delay = Duration::from_millis(0);
        let el = MockEl::start(cfg).await.expect("mock EL");
        let chain = L2Chain::new(60);
        el.set_network_chain(&chain);

        let client = async_nats::connect(nats.url()).await.expect("nats connect");
        let js = async_nats::jetstream::new(client);
        ensure_topology(&js, 1).await.expect("topology");
        let publisher = Publisher::new(js.clone(), Duration::from_secs(5));

        let dir = tempfile::tempdir().expect("tempdir");
        let secret = write_file(dir.path(), "jwt.hex", SECRET_HEX).display().to_string();
        let token_file = write_file(dir.path(), "token", TOKEN).display().to_string();
        let common = |name: &str| -> Vec<String> {
            [
                name,
                "--chain-id",
                "10",
                "--nats.url",
                &nats.url(),
                "--grpc.addr",
                "127.0.0.1:0",
                "--admin.addr",
                "127.0.0.1:0",
                "--grpc.token-file",
                &token_file,
                "--shutdown-grace",
                "2s",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
        };
        let cancel = CancellationToken::new();
        let mut tasks: Vec<Task> = Vec::new();

        let mut args = common("lightcl-validator");
        args.extend(["--l1.rpc".into(), anvil.url(), "--l1-timeout".into(), "1s".into()]);
        let cfg = lightcl_validator::Cli::try_parse_from(args)
            .expect("validator flags")
            .into_config()
            .expect("validator config");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = cancel.clone();
        tasks.push(tokio::spawn(async move {
            lightcl_validator::run(cfg, c, move |b| {
                let _ = tx.send(b.grpc);
            })
            .await
            .map_err(|e| e.to_string())
        }));
        let validator = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("validator binds")
            .expect("bound");

        let mut args = common("lightcl-engine-driver");
        args.extend([
            "--l2.engine-rpc".into(),
            el.url(),
            "--l2.jwt-secret".into(),
            secret,
            "--node-id".into(),
            "reth-0".into(),
        ]);
        let cfg = lightcl_engine_driver::Cli::try_parse_from(args)
            .expect("driver flags")
            .into_config()
            .expect("driver config");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = cancel.clone();
        tasks.push(tokio::spawn(async move {
            lightcl_engine_driver::run(cfg, c, move |b| {
                let _ = tx.send(b.grpc);
            })
            .await
            .map_err(|e| e.to_string())
        }));
        let driver = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("driver binds")
            .expect("bound");

        Self {
            nats,
            _anvil: anvil,
            el,
            chain,
            l1,
            publisher,
            js,
            validator: format!("http://{validator}"),
            driver: format!("http://{driver}"),
            token_file,
            cancel,
            tasks,
            seq: 0,
            _dir: dir,
        }
    }

    /// An L2 block of the EL's chain whose L1 origin is anvil's block n / 2.
    fn l2(&self, n: u64) -> L2BlockRef {
        let mut b = self.chain.at(n);
        b.l1origin = self.l1[(n / 2) as usize].id();
        b
    }

    fn status(&self, u: u64, s: u64, f: u64, cur: u64) -> SyncStatus {
        SyncStatus {
            current_l1: self.l1[cur as usize],
            head_l1: self.l1[40],
            unsafe_l2: self.l2(u),
            safe_l2: self.l2(s),
            finalized_l2: self.l2(f),
            ..SyncStatus::default()
        }
    }

    /// Publish a raw status like the poller does.
    async fn publish(&mut self, status: &SyncStatus) {
        self.seq += 1;
        let raw = v1::RawStatus {
            chain_id: CHAIN,
            source_id: "src-a".into(),
            observed_at_ms: lightcl_runtime::now_ms(),
            poll_seq: self.seq,
            status: Some(status.into()),
        };
        self.publisher
            .publish(
                &subjects::status(CHAIN, "src-a"),
                names::RAW_STATUS,
                &raw,
                Some(&format!("test-{}", self.seq)),
            )
            .await
            .expect("publish status");
    }

    async fn stored(&self, stream: &str) -> u64 {
        let mut s = self.js.get_stream(stream).await.expect("stream");
        s.info().await.expect("info").state.messages
    }

    async fn validator_pending(&self) -> u64 {
        let stream = self.js.get_stream(subjects::STATUS_STREAM).await.expect("stream");
        let mut c = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&format!(
                "lightcl-validator-{CHAIN}"
            ))
            .await
            .expect("validator consumer");
        let info = c.info().await.expect("consumer info");
        info.num_pending + info.num_ack_pending as u64
    }

    async fn wait_el(&self, u: u64, s: u64, f: u64) {
        assert!(
            self.el
                .wait_until(Duration::from_secs(15), |e| e.head().number == u
                    && e.safe().number == s
                    && e.finalized().number == f)
                .await,
            "EL should reach {u}/{s}/{f}, has {}/{}/{}",
            self.el.head().number,
            self.el.safe().number,
            self.el.finalized().number
        );
    }

    async fn status_json(&self) -> (i32, serde_json::Value) {
        let r = lightctl(&[
            "status",
            "-o",
            "json",
            "--validator",
            &self.validator,
            "--driver",
            &self.driver,
            "--nats.url",
            &self.nats.url(),
            "--chain-id",
            "10",
        ])
        .await;
        (r.code, r.json())
    }

    async fn stop(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let r = tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("service stops in time")
                .expect("task");
            assert!(r.is_ok(), "clean stop: {r:?}");
        }
    }
}

fn hex(h: &alloy_primitives::B256) -> String {
    format!("{h:#x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lightctl_sees_the_running_pipeline_and_pausing_the_validator_holds_targets() {
    let mut p = Pipeline::start().await;
    let s1 = p.status(40, 30, 20, 35);
    p.publish(&s1).await;
    p.wait_el(40, 30, 20).await;

    // status reports the validator's target and the heads the mock EL holds.
    let shows_heads = |(code, j): &(i32, serde_json::Value)| {
        let st = &j["drivers"][0]["status"]["state"];
        let node = &j["fleet"]["nodes"][0]["state"];
        let el_heads = [p.el.head(), p.el.safe(), p.el.finalized()];
        let matches = |s: &serde_json::Value| {
            ["head", "safe", "finalized"].iter().zip(&el_heads).all(|(k, b)| {
                s[k]["number"].as_u64() == Some(b.number) && s[k]["hash"] == hex(&b.hash)
            })
        };
        *code == 0 && matches(st) && matches(node)
    };
    let shown = wait::until_async(Duration::from_secs(10), Duration::from_millis(50), || async {
        Some(p.status_json().await).filter(shows_heads)
    })
    .await;
    let j = match shown {
        Ok((_, j)) => j,
        Err(t) => panic!("{t}: lightctl never showed the EL's heads: {}", p.status_json().await.1),
    };
    let target = &j["validators"][0]["status"]["last_target"];
    assert_eq!(target["revision"], 1, "{j}");
    assert_eq!(target["safe_l2"]["number"], 30);
    assert_eq!(target["safe_l2"]["hash"], hex(&p.chain.at(30).hash));
    assert_eq!(target["current_l1"]["hash"], hex(&p.l1[35].hash));
    assert_eq!(j["validators"][0]["status"]["accepted"], 1);

    // A status whose current_l1 is not on our L1 is rejected, with its reason.
    let mut bad = p.status(41, 31, 21, 36);
    bad.current_l1.hash = alloy_primitives::B256::repeat_byte(0x77);
    p.publish(&bad).await;
    let last_rejection = |j: &serde_json::Value| {
        j["validators"][0]["status"]["recent_rejections"].as_array().and_then(|a| a.last()).cloned()
    };
    let shown = wait::until_async(Duration::from_secs(10), Duration::from_millis(50), || async {
        let (_, j) = p.status_json().await;
        last_rejection(&j).map(|r| (r, j))
    })
    .await;
    match shown {
        Ok((r, j)) => {
            assert_eq!(r["reason"], "l1_mismatch", "{j}");
            assert_eq!(r["number"], 36);
            assert_eq!(r["actual_hash"], hex(&p.l1[36].hash));
        }
        Err(t) => panic!("{t}: no rejection shown: {}", p.status_json().await.1),
    }
    let text = lightctl(&["status", "--validator", &p.validator]).await.stdout;
    assert!(text.contains("l1_mismatch"), "{text}");

    // Pause the validator: the next status waits in the stream, no target, the EL holds.
    let r = lightctl(&["pause", "validator", &p.validator, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    let targets_before = p.stored(subjects::TARGETS_STREAM).await;
    let s2 = p.status(50, 45, 40, 38);
    p.publish(&s2).await;
    let (_, j) = p.status_json().await;
    assert_eq!(j["validators"][0]["status"]["paused"], true);
    assert_eq!(p.validator_pending().await, 1, "the status waits for the paused validator");
    assert_eq!(p.stored(subjects::TARGETS_STREAM).await, targets_before);
    assert_eq!(p.el.head().number, 40);

    // Resume: the status is validated, the target published and followed.
    let r = lightctl(&["resume", "validator", &p.validator, "--token-file", &p.token_file]).await;
    assert_eq!(r.code, 0, "{r:?}");
    p.wait_el(50, 45, 40).await;
    assert_eq!(p.stored(subjects::TARGETS_STREAM).await, targets_before + 1);
    p.el.check_invariants().expect("EL invariants");
    p.stop().await;
}
