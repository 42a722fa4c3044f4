//! Shared fixtures: in-test control services served through `lightcl_runtime`'s real gRPC
//! scaffolding and a runner for the real `lightctl` binary (nats-server, anvil, mocks and waits
//! come from `lightcl_harness`).

#![allow(dead_code, missing_docs, clippy::result_large_err)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lightcl_proto::v1;
use lightcl_proto::v1::engine_driver_control_server::{
    EngineDriverControl, EngineDriverControlServer,
};
use lightcl_proto::v1::poller_control_server::{PollerControl, PollerControlServer};
use lightcl_proto::v1::validator_control_server::{ValidatorControl, ValidatorControlServer};
use lightcl_runtime::grpc::names;
use lightcl_runtime::{Auth, GrpcOptions, Readiness, WatchStream, serve_grpc, watch_stream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status};

pub const CHAIN: u64 = 10;
pub const TOKEN: &str = "s3cret-token";

pub fn hash(b: u8) -> Vec<u8> {
    vec![b; 32]
}

pub fn hex_hash(b: u8) -> String {
    format!("0x{}", hex::encode(hash(b)))
}

pub fn l2(n: u64, b: u8) -> v1::L2BlockRef {
    v1::L2BlockRef {
        hash: hash(b),
        number: n,
        parent_hash: hash(b.wrapping_sub(1)),
        timestamp: 1_700_000_000 + n,
        l1origin: Some(v1::BlockId { hash: hash(0xee), number: n / 4 }),
        sequence_number: 0,
    }
}

pub fn l1(n: u64, b: u8) -> v1::L1BlockRef {
    v1::L1BlockRef { hash: hash(b), number: n, parent_hash: hash(0), timestamp: 1_700_000_000 }
}

pub fn id(n: u64, b: u8) -> v1::BlockId {
    v1::BlockId { hash: hash(b), number: n }
}

pub fn poller_status() -> v1::PollerStatus {
    v1::PollerStatus {
        chain_id: CHAIN,
        source_id: "src-a".into(),
        source_url: "http://source:9545".into(),
        ready: true,
        nats_connected: true,
        last_status: Some(v1::SyncStatus {
            current_l1: Some(l1(50, 0x50)),
            unsafe_l2: Some(l2(120, 0x12)),
            safe_l2: Some(l2(100, 0x10)),
            local_safe_l2: Some(l2(100, 0x10)),
            finalized_l2: Some(l2(80, 0x08)),
            ..Default::default()
        }),
        last_poll_ms: lightcl_runtime::now_ms(),
        last_success_ms: lightcl_runtime::now_ms(),
        polls_ok: 42,
        polls_failed: 3,
        published: 40,
        ..Default::default()
    }
}

pub fn validator_status() -> v1::ValidatorStatus {
    v1::ValidatorStatus {
        chain_id: CHAIN,
        ready: true,
        nats_connected: true,
        l1_reachable: true,
        last_target: Some(v1::Target {
            chain_id: CHAIN,
            revision: 7,
            unsafe_l2: Some(l2(120, 0x12)),
            safe_l2: Some(l2(100, 0x10)),
            local_safe_l2: Some(l2(100, 0x10)),
            finalized_l2: Some(l2(80, 0x08)),
            current_l1: Some(l1(50, 0x50)),
            source_ids: vec!["src-a".into()],
            ..Default::default()
        }),
        recent_rejections: vec![v1::Rejection {
            chain_id: CHAIN,
            source_id: "src-b".into(),
            poll_seq: 9,
            reason: v1::RejectionReason::L1Mismatch as i32,
            message: "safe_l2.l1origin at 25: our L1 has another block".into(),
            ref_name: "safe_l2.l1origin".into(),
            number: 25,
            expected_hash: hash(0xaa),
            actual_hash: hash(0xbb),
            rejected_at_ms: lightcl_runtime::now_ms(),
            ..Default::default()
        }],
        accepted: 7,
        rejected: 1,
        sources: vec![
            v1::SourceHealth {
                source_id: "src-a".into(),
                head: 120,
                last_seen_ms: lightcl_runtime::now_ms(),
                chosen: true,
                ..Default::default()
            },
            v1::SourceHealth {
                source_id: "src-b".into(),
                head: 117,
                lag_blocks: 3,
                last_seen_ms: lightcl_runtime::now_ms(),
                rejections_in_row: 2,
                chosen: false,
            },
        ],
        ..Default::default()
    }
}

pub fn driver_status(node: &str, head: u64) -> v1::EngineDriverStatus {
    v1::EngineDriverStatus {
        state: Some(v1::EngineState {
            chain_id: CHAIN,
            node_id: node.into(),
            phase: v1::SyncPhase::Following as i32,
            head: Some(id(head, 0x12)),
            safe: Some(id(100, 0x10)),
            finalized: Some(id(80, 0x08)),
            target_revision: 7,
            applied_revision: 7,
            last_answer: v1::FcuAnswer::Valid as i32,
            target_head: Some(id(120, 0x12)),
            updated_at_ms: lightcl_runtime::now_ms(),
            ..Default::default()
        }),
        ready: true,
        nats_connected: true,
        el_reachable: true,
        lag_blocks: 120 - head.min(120),
        ..Default::default()
    }
}

pub trait Pausable {
    fn set_paused(&mut self, paused: bool);
    fn is_paused(&self) -> bool;
}

impl Pausable for v1::PollerStatus {
    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }
    fn is_paused(&self) -> bool {
        self.paused
    }
}

impl Pausable for v1::ValidatorStatus {
    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }
    fn is_paused(&self) -> bool {
        self.paused
    }
}

impl Pausable for v1::EngineDriverStatus {
    fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }
    fn is_paused(&self) -> bool {
        self.paused
    }
}

/// An in-test control service: a watched status, pause/resume, a resync counter.
#[derive(Clone)]
pub struct Fake<S> {
    auth: Auth,
    tx: Arc<watch::Sender<S>>,
    resyncs: Arc<AtomicU64>,
    cancel: CancellationToken,
}

impl<S: Clone + Send + Sync + Pausable + 'static> Fake<S> {
    fn status(&self, req: &Request<impl Sized>) -> Result<S, Status> {
        self.auth.check_read(req)?;
        Ok(self.tx.borrow().clone())
    }

    fn watch(&self, req: &Request<impl Sized>) -> Result<WatchStream<S>, Status> {
        self.auth.check_read(req)?;
        Ok(watch_stream(self.tx.subscribe(), self.cancel.clone()))
    }

    fn set_pause(&self, req: &Request<impl Sized>, paused: bool) -> Result<v1::PauseState, Status> {
        self.auth.check_mutation(req)?;
        self.tx.send_modify(|s| s.set_paused(paused));
        Ok(v1::PauseState { paused })
    }
}

#[tonic::async_trait]
impl PollerControl for Fake<v1::PollerStatus> {
    async fn get_status(
        &self,
        r: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::PollerStatus>, Status> {
        self.status(&r).map(Response::new)
    }
    type WatchStatusStream = WatchStream<v1::PollerStatus>;
    async fn watch_status(
        &self,
        r: Request<v1::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.watch(&r).map(Response::new)
    }
    async fn pause(
        &self,
        r: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.set_pause(&r, true).map(Response::new)
    }
    async fn resume(
        &self,
        r: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.set_pause(&r, false).map(Response::new)
    }
}

#[tonic::async_trait]
impl ValidatorControl for Fake<v1::ValidatorStatus> {
    async fn get_status(
        &self,
        r: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::ValidatorStatus>, Status> {
        self.status(&r).map(Response::new)
    }
    type WatchStatusStream = WatchStream<v1::ValidatorStatus>;
    async fn watch_status(
        &self,
        r: Request<v1::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.watch(&r).map(Response::new)
    }
    async fn pause(
        &self,
        r: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.set_pause(&r, true).map(Response::new)
    }
    async fn resume(
        &self,
        r: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.set_pause(&r, false).map(Response::new)
    }
}

#[tonic::async_trait]
impl EngineDriverControl for Fake<v1::EngineDriverStatus> {
    async fn get_status(
        &self,
        r: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::EngineDriverStatus>, Status> {
        self.status(&r).map(Response::new)
    }
    type WatchStatusStream = WatchStream<v1::EngineDriverStatus>;
    async fn watch_status(
        &self,
        r: Request<v1::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.watch(&r).map(Response::new)
    }
    async fn pause(
        &self,
        r: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.set_pause(&r, true).map(Response::new)
    }
    async fn resume(
        &self,
        r: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.set_pause(&r, false).map(Response::new)
    }
    async fn resync(
        &self,
        r: Request<v1::ResyncRequest>,
    ) -> Result<Response<v1::EngineDriverStatus>, Status> {
        self.auth.check_mutation(&r)?;
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(self.tx.borrow().clone()))
    }
}

/// One served fake.
pub struct Served<S> {
    pub addr: SocketAddr,
    pub tx: Arc<watch::Sender<S>>,
    pub resyncs: Arc<AtomicU64>,
    pub readiness: Readiness,
    pub cancel: CancellationToken,
}

impl<S: Pausable> Served<S> {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn paused(&self) -> bool {
        self.tx.borrow().is_paused()
    }
}

impl<S> Drop for Served<S> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How to serve a fake.
#[derive(Clone, Default)]
pub struct Opts {
    pub token: Option<String>,
    pub require_for_reads: bool,
    pub tls: Option<ServerTlsConfig>,
}

impl Opts {
    pub fn token() -> Self {
        Self { token: Some(TOKEN.into()), ..Default::default() }
    }
}

async fn serve<S, F>(initial: S, opts: Opts, health: &'static str, routes: F) -> Served<S>
where
    S: Clone + Send + Sync + 'static,
    F: FnOnce(Fake<S>) -> tonic::service::Routes,
{
    let cancel = CancellationToken::new();
    let (tx, _) = watch::channel(initial);
    let tx = Arc::new(tx);
    let resyncs = Arc::new(AtomicU64::new(0));
    let fake = Fake {
        auth: Auth::new(opts.token.clone(), opts.require_for_reads),
        tx: tx.clone(),
        resyncs: resyncs.clone(),
        cancel: cancel.clone(),
    };
    let readiness = Readiness::new(&["test"]);
    readiness.set("test", true);
    let grpc = GrpcOptions {
        addr: "127.0.0.1:0".parse().expect("addr"),
        tls: opts.tls,
        health_service: health,
        readiness: readiness.clone(),
        limits: Default::default(),
    };
    let (addr, _task) = serve_grpc(grpc, routes(fake), cancel.clone()).await.expect("serve");
    Served { addr, tx, resyncs, readiness, cancel }
}

pub async fn fake_poller(s: v1::PollerStatus, opts: Opts) -> Served<v1::PollerStatus> {
    serve(s, opts, names::POLLER_CONTROL, |f| {
        tonic::service::Routes::new(PollerControlServer::new(f))
    })
    .await
}

pub async fn fake_validator(s: v1::ValidatorStatus, opts: Opts) -> Served<v1::ValidatorStatus> {
    serve(s, opts, names::VALIDATOR_CONTROL, |f| {
        tonic::service::Routes::new(ValidatorControlServer::new(f))
    })
    .await
}

pub async fn fake_driver(s: v1::EngineDriverStatus, opts: Opts) -> Served<v1::EngineDriverStatus> {
    serve(s, opts, names::ENGINE_DRIVER_CONTROL, |f| {
        tonic::service::Routes::new(EngineDriverControlServer::new(f))
    })
    .await
}

/// An address where nothing listens (bound, then released).
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    format!("http://{a}")
}

/// What one `lightctl` run printed.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr)
        })
    }
}

pub fn lightctl_cmd() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_lightctl"));
    for v in [
        "LIGHTCL_NATS_URL",
        "LIGHTCL_CHAIN_ID",
        "LIGHTCL_TOKEN_FILE",
        "LIGHTCL_TLS_CA",
        "LIGHTCL_TLS_DOMAIN",
        "LIGHTCL_CTL_CONFIG",
        "LIGHTCL_CTL_TIMEOUT",
        "LIGHTCL_CTL_OUTPUT",
        "LIGHTCL_NATS_USER",
        "LIGHTCL_NATS_PASSWORD_FILE",
        "LIGHTCL_NATS_TOKEN_FILE",
        "LIGHTCL_NATS_CREDS",
        "LIGHTCL_NATS_TLS_CA",
        "LIGHTCL_NATS_TLS_CERT",
        "LIGHTCL_NATS_TLS_KEY",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

/// Run `lightctl` with `args` (bounded by 20 s).
pub async fn lightctl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Ran {
    let mut cmd = lightctl_cmd();
    cmd.args(args);
    run_lightctl(cmd).await
}

/// Run a `lightctl` command made from [`lightctl_cmd`] (bounded by 20 s).
pub async fn run_lightctl(mut cmd: tokio::process::Command) -> Ran {
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("lightctl finishes in time")
        .expect("lightctl runs");
    Ran {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn write_file(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).expect("write");
    p
}

/// A self-signed certificate for `localhost` made with the openssl CLI (`OPENSSL_BIN`).
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = std::env::var("OPENSSL_BIN").unwrap_or_else(|_| "openssl".into());
    let status = Command::new(bin)
        .current_dir(dir)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2"])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl CLI");
    assert!(status.success(), "openssl failed");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A fake validator on a plain tonic server whose reflection advertises every service of the
/// lightcl.v1 descriptor set (as servers built before the runtime's fix did).
pub async fn fake_validator_listing_everything(
    s: v1::ValidatorStatus,
) -> Served<v1::ValidatorStatus> {
    let cancel = CancellationToken::new();
    let (tx, _) = watch::channel(s);
    let tx = Arc::new(tx);
    let resyncs = Arc::new(AtomicU64::new(0));
    let fake = Fake {
        auth: Auth::new(Some(TOKEN.into()), false),
        tx: tx.clone(),
        resyncs: resyncs.clone(),
        cancel: cancel.clone(),
    };
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(lightcl_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let c = cancel.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ValidatorControlServer::new(fake))
            .add_service(reflection)
            .serve_with_incoming_shutdown(incoming, c.cancelled_owned()),
    );
    Served { addr, tx, resyncs, readiness: Readiness::default(), cancel }
}
