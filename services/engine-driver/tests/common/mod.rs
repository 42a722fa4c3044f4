//! Shared test fixtures: the mock EL, an in-process driver, targets (nats-server, waits and
//! HTTP come from `lightcl_harness`).

#![allow(dead_code, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use alloy_rpc_types_engine::JwtSecret;
use async_nats::jetstream;
use clap::Parser;
use lightcl_bus::subjects;
use lightcl_core::status::L1BlockRef;
use lightcl_core::{L1View, L2BlockRef, Target};
use lightcl_engine_driver::{Bound, Cli, RunError, run};
use lightcl_harness::mock_el::{L2Chain, MockEl, MockElConfig, l1_origin};
use lightcl_proto::v1;
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const CHAIN: u64 = 10;
pub const SECRET_HEX: &str = "8f5a0b37e1c2d4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e";

pub fn secret() -> JwtSecret {
    JwtSecret::from_hex(SECRET_HEX).expect("secret")
}

/// Publishes targets like the validator does.
pub struct Publisher {
    js: jetstream::Context,
}

impl Publisher {
    pub async fn connect(url: &str) -> Self {
        let client = async_nats::connect(url).await.expect("nats connect");
        let js = jetstream::new(client);
        // The driver may be creating the stream at the same moment (another config): then
        // the second create fails and the stream exists.
        let created = js
            .get_or_create_stream(jetstream::stream::Config {
                name: subjects::TARGETS_STREAM.to_owned(),
                subjects: vec![subjects::TARGET_SUBJECTS.to_owned()],
                ..Default::default()
            })
            .await;
        if created.is_err() {
            js.get_stream(subjects::TARGETS_STREAM).await.expect("stream");
        }
        Self { js }
    }

    /// Publishes `t` with the validator's L1 view [`l1_view`] (as validators do).
    pub async fn publish(&self, t: &Target) {
        let mut m = v1::Target::from_core(t);
        m.set_l1_view(&l1_view(t));
        self.publish_message(&m).await;
    }

    pub async fn publish_message(&self, m: &v1::Target) {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", "application/x-protobuf");
        headers.insert("Lightcl-Message", lightcl_proto::names::TARGET);
        let body = m.encode_to_vec();
        self.js
            .publish_with_headers(subjects::target(m.chain_id), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("puback");
    }

    pub async fn publish_raw(&self, payload: Vec<u8>) {
        self.js
            .publish(subjects::target(CHAIN), payload.into())
            .await
            .expect("publish")
            .await
            .expect("puback");
    }

    /// Removes every target from the stream (a restarted driver then gets none).
    pub async fn purge_targets(&self) {
        let stream = self.js.get_stream(subjects::TARGETS_STREAM).await.expect("stream");
        stream.purge().await.expect("purge");
    }

    /// The engine state the driver put to KV, if any.
    pub async fn engine_state(&self, node: &str) -> Option<v1::EngineState> {
        let kv = self.js.get_key_value(subjects::ENGINE_BUCKET).await.ok()?;
        let bytes = kv.get(subjects::engine_key(CHAIN, node)).await.ok()??;
        v1::EngineState::decode(bytes).ok()
    }
}

pub fn l1(n: u64) -> L1BlockRef {
    let o = l1_origin(n);
    L1BlockRef {
        hash: o.hash,
        number: n,
        parent_hash: l1_origin(n.saturating_sub(1)).hash,
        timestamp: 1_700_000_000 + 12 * n,
    }
}

/// A target over `chain`: unsafe `u`, safe and local-safe `s`, finalized `f`.
pub fn target(rev: u64, chain: &L2Chain, u: u64, s: u64, f: u64) -> Target {
    let at = |n| chain.at(n);
    let safe: L2BlockRef = at(s);
    Target {
        chain_id: CHAIN,
        epoch: 0,
        revision: rev,
        unsafe_l2: at(u),
        safe_l2: safe,
        local_safe_l2: safe,
        finalized_l2: at(f),
        current_l1: l1(safe.l1origin.number + 1),
    }
}

/// The validator's L1 view published with `t`: head above `current_l1` and every L1 origin of
/// the target, safe and finalized below it.
pub fn l1_view(t: &Target) -> L1View {
    let top = t.current_l1.number.max(t.unsafe_l2.l1origin.number);
    L1View {
        head: l1(top + 3),
        safe: l1(top + 1),
        finalized: l1(t.current_l1.number.saturating_sub(2)),
    }
}

pub async fn mock_el(download_ms: u64) -> MockEl {
    let mut cfg = MockElConfig::new(secret());
    cfg.chain_id = CHAIN;
    cfg.download_delay = Duration::from_millis(download_ms);
    MockEl::start(cfg).await.expect("mock EL")
}

pub fn write_secret(dir: &tempfile::TempDir, hex: &str) -> PathBuf {
    let p = dir.path().join("jwt.hex");
    std::fs::write(&p, format!("0x{hex}\n")).expect("write secret");
    p
}

/// One in-process driver.
pub struct Running {
    pub cancel: CancellationToken,
    pub task: JoinHandle<Result<(), RunError>>,
    pub bound: Bound,
    pub node: String,
    _dir: tempfile::TempDir,
}

impl Running {
    pub async fn stop(self) -> Result<(), RunError> {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("driver stops in time")
            .expect("driver task")
    }
}

pub fn base_args(nats: &str, el: &str, secret_file: &std::path::Path, node: &str) -> Vec<String> {
    vec![
        "lightcl-engine-driver".into(),
        "--chain-id".into(),
        CHAIN.to_string(),
        "--nats.url".into(),
        nats.into(),
        "--l2.engine-rpc".into(),
        el.into(),
        "--l2.jwt-secret".into(),
        secret_file.display().to_string(),
        "--node-id".into(),
        node.into(),
        "--grpc.addr".into(),
        "127.0.0.1:0".into(),
        "--admin.addr".into(),
        "127.0.0.1:0".into(),
        "--shutdown-grace".into(),
        "3s".into(),
    ]
}

/// Starts a driver in-process with extra flags.
pub async fn start_driver(nats: &str, el: &MockEl, node: &str, extra: &[&str]) -> Running {
    start_driver_with_secret(nats, &el.url(), SECRET_HEX, node, extra).await
}

pub async fn start_driver_with_secret(
    nats: &str,
    el_url: &str,
    secret_hex: &str,
    node: &str,
    extra: &[&str],
) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_file = write_secret(&dir, secret_hex);
    let mut args = base_args(nats, el_url, &secret_file, node);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let cfg = Cli::try_parse_from(args).expect("flags").into_config().expect("config");
    let cancel = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run(cfg, cancel.clone(), move |b| {
        let _ = tx.send(b);
    }));
    let bound = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("driver binds in time")
        .expect("bound");
    Running { cancel, task, bound, node: node.to_owned(), _dir: dir }
}
