//! Shared fixtures: a real nats-server, a real anvil behind a counting proxy, an in-process
//! validator, statuses built from anvil's real block hashes, and bus readers.

#![allow(dead_code, missing_docs)]

use std::time::Duration;

use alloy_primitives::{B256, keccak256};
use clap::Parser;
use lightcl_bus::{Bus, NatsArgs, Publisher, subjects};
use lightcl_core::{BlockId, L1BlockRef, L2BlockRef, SyncStatus};
use lightcl_harness::anvil::{Anvil, AnvilOptions, CountingProxy};
use lightcl_harness::nats::NatsServer;
use lightcl_proto::{names, v1};
use lightcl_validator::{Bound, Cli, run};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const CHAIN: u64 = 10;
pub const TOKEN: &str = "t0ken";

/// nats-server + anvil (40 blocks, finalized = 32) + proxy + a bus client for the test.
pub struct Env {
    pub nats: NatsServer,
    pub anvil: Anvil,
    pub proxy: CountingProxy,
    pub bus: Bus,
    pub publisher: Publisher,
    pub l1: Vec<L1BlockRef>,
    pub token_file: tempfile::NamedTempFile,
    seq: u64,
}

impl Env {
    pub async fn new() -> Self {
        let nats = NatsServer::start().await.expect("nats-server");
        let anvil = Anvil::start_with(AnvilOptions { slots_in_an_epoch: 4, ..Default::default() })
            .await
            .expect("anvil");
        anvil.mine(40).await.expect("mine");
        let proxy = CountingProxy::start(&anvil.url()).await.expect("proxy");
        let bus = Bus::connect(&NatsArgs::local(nats.url()), "test").await.expect("bus");
        wait::until_async(Duration::from_secs(10), wait::POLL, || bus.ensure_topology())
            .await
            .expect("topology");
        let publisher = Publisher::new(bus.jetstream(), Duration::from_secs(2));
        let token_file = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(token_file.path(), TOKEN).expect("token");
        let mut env =
            Self { nats, anvil, proxy, bus, publisher, l1: Vec::new(), token_file, seq: 0 };
        env.refresh_l1().await;
        env
    }

    /// Re-reads every L1 block (after mining or a reorg).
    pub async fn refresh_l1(&mut self) {
        let head = self.anvil.latest().await.expect("latest").number;
        let mut l1 = Vec::new();
        for n in 0..=head {
            l1.push(self.anvil.block(n).await.expect("block").expect("exists"));
        }
        self.l1 = l1;
    }

    /// Validator flags for this environment.
    pub fn cli(&self, extra: &[&str]) -> Cli {
        let mut args: Vec<String> = [
            "lightcl-validator",
            "--chain-id",
            "10",
            "--grpc.addr",
            "127.0.0.1:0",
            "--admin.addr",
            "127.0.0.1:0",
            "--l1.rpc",
            &self.proxy.url(),
            "--nats.url",
            &self.nats.url(),
            "--l1-timeout",
            "1s",
            "--shutdown-grace",
            "2s",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push("--grpc.token-file".into());
        args.push(self.token_file.path().display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        Cli::try_parse_from(args).expect("flags")
    }

    /// Starts an in-process validator and waits until it is ready.
    pub async fn start(&self, extra: &[&str]) -> Running {
        let cfg = self.cli(extra).into_config().expect("config");
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = cancel.clone();
        let handle = tokio::spawn(async move {
            run(cfg, c, move |b| {
                let _ = tx.send(b);
            })
            .await
            .map_err(|e| e.to_string())
        });
        let bound = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("validator did not bind")
            .expect("bound");
        let running = Running { cancel, handle, bound };
        let admin = running.bound.admin;
        wait::until_async(Duration::from_secs(10), wait::POLL, || async move {
            http_get(admin, "/ready").await.status == 200
        })
        .await
        .expect("the validator gets ready");
        running
    }

    /// A status whose L1 refs are real anvil blocks: L2 block n has L1 origin n / 2.
    pub fn status(&self, unsafe_n: u64, safe_n: u64, fin_n: u64, cur: u64) -> SyncStatus {
        status_on(&self.l1, unsafe_n, safe_n, fin_n, cur)
    }

    /// Publishes a raw status from `source` (unique message id per call).
    pub async fn publish(&mut self, source: &str, status: &SyncStatus) {
        self.seq += 1;
        let raw = v1::RawStatus {
            chain_id: CHAIN,
            source_id: source.into(),
            observed_at_ms: 1,
            poll_seq: self.seq,
            status: Some(status.into()),
        };
        self.publisher
            .publish(
                &subjects::status(CHAIN, source),
                names::RAW_STATUS,
                &raw,
                Some(&format!("test-{source}-{}", self.seq)),
            )
            .await
            .expect("publish status");
    }

    /// Every target stored so far, in order.
    pub async fn targets(&self) -> Vec<v1::Target> {
        read_all(&self.bus, subjects::TARGETS_STREAM, &subjects::target(CHAIN)).await
    }

    /// Every rejection stored so far, in order.
    pub async fn rejections(&self) -> Vec<v1::Rejection> {
        read_all(&self.bus, subjects::REJECTED_STREAM, &subjects::rejected(CHAIN)).await
    }

    /// Waits until `n` targets are stored; returns them all.
    pub async fn wait_targets(&self, n: usize) -> Vec<v1::Target> {
        wait_stored("targets", n, || self.targets()).await
    }

    /// Waits until `n` rejections are stored; returns them all.
    pub async fn wait_rejections(&self, n: usize) -> Vec<v1::Rejection> {
        wait_stored("rejections", n, || self.rejections()).await
    }

    /// Waits until the durable consumer has no pending or unacked status.
    pub async fn wait_consumed(&self) {
        let js = self.bus.jetstream();
        wait::until_async(Duration::from_secs(15), wait::POLL, || async {
            if let Ok(stream) = js.get_stream(subjects::STATUS_STREAM).await
                && let Ok(mut c) = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&format!(
                        "lightcl-validator-{CHAIN}"
                    ))
                    .await
                && let Ok(info) = c.info().await
            {
                return info.num_pending == 0 && info.num_ack_pending == 0;
            }
            false
        })
        .await
        .expect("statuses not consumed in time");
    }
}

/// Waits (15 s) until `read` returns at least `n` messages; returns them all.
async fn wait_stored<M, F, Fut>(what: &str, n: usize, read: F) -> Vec<M>
where
    M: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Vec<M>>,
{
    let got = wait::until_async(Duration::from_secs(15), wait::POLL, || async {
        Some(read().await).filter(|m| m.len() >= n)
    })
    .await;
    if let Ok(m) = got {
        return m;
    }
    let m = read().await;
    panic!("expected {n} {what}, have {}: {m:?}", m.len())
}

/// A status on the L1 blocks `l1`: L2 block n has L1 origin n / 2.
pub fn status_on(
    l1: &[L1BlockRef],
    unsafe_n: u64,
    safe_n: u64,
    fin_n: u64,
    cur: u64,
) -> SyncStatus {
    SyncStatus {
        current_l1: l1[cur as usize],
        head_l1: *l1.last().expect("l1"),
        unsafe_l2: l2(l1, unsafe_n),
        safe_l2: l2(l1, safe_n),
        finalized_l2: l2(l1, fin_n),
        ..SyncStatus::default()
    }
}

pub fn l2_hash(n: u64) -> B256 {
    keccak256(format!("l2-{n}"))
}

pub fn l2(l1: &[L1BlockRef], n: u64) -> L2BlockRef {
    let origin = match l1.get((n / 2) as usize) {
        Some(b) => b.id(),
        None => BlockId { hash: keccak256(format!("future-l1-{}", n / 2)), number: n / 2 },
    };
    L2BlockRef {
        hash: l2_hash(n),
        number: n,
        parent_hash: l2_hash(n.saturating_sub(1)),
        timestamp: 1_000 + 2 * n,
        l1origin: origin,
        sequence_number: 0,
    }
}

/// An in-process validator.
pub struct Running {
    pub cancel: CancellationToken,
    pub handle: JoinHandle<Result<(), String>>,
    pub bound: Bound,
}

impl Running {
    /// Cancels and waits for a clean exit.
    pub async fn stop(self) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("validator did not stop in time")
            .expect("join");
        r.expect("clean exit");
    }

    pub async fn control(
        &self,
    ) -> v1::validator_control_client::ValidatorControlClient<tonic::transport::Channel> {
        v1::validator_control_client::ValidatorControlClient::connect(format!(
            "http://{}",
            self.bound.grpc
        ))
        .await
        .expect("grpc connect")
    }
}

async fn read_all<M: Message + Default>(bus: &Bus, stream: &str, subject: &str) -> Vec<M> {
    let js = bus.jetstream();
    let Ok(mut s) = js.get_stream(stream).await else { return Vec::new() };
    let Ok(info) = s.info().await else { return Vec::new() };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first.max(1)..=last {
        if let Ok(m) = s.get_raw_message(seq).await
            && m.subject.as_str() == subject
        {
            out.push(M::decode(m.payload.as_ref()).expect("decode"));
        }
    }
    out
}

pub use lightcl_harness::{http_get, wait};

pub fn reason(r: &v1::Rejection) -> v1::RejectionReason {
    v1::RejectionReason::try_from(r.reason).expect("known reason")
}

pub fn h(b: &[u8]) -> B256 {
    B256::from_slice(b)
}
