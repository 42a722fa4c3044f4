//! The benchmark world: a private nats-server and anvil as child processes, the simulated
//! source chain over real L1 origins, in-process mock ELs, and the real service binaries
//! (release builds, found next to this binary or in `--bin-dir`) started with the documented
//! flags on free loopback ports.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy_rpc_types_engine::JwtSecret;
use lightcl_core::{L2BlockRef, SyncStatus};
use lightcl_devnet::l1::L1Client;
use lightcl_devnet::procs::{self, Proc};
use lightcl_devnet::sim::{SimConfig, Simulator};
use lightcl_harness::anvil::{Anvil, AnvilOptions, Mining};
use lightcl_harness::mock_el::{MockEl, MockElConfig};
use lightcl_harness::nats::{NatsOptions, NatsServer};
use lightcl_harness::{http_get, wait};

use crate::error::{BenchError, Ctx, failed};
use crate::source::BenchSource;

/// L2 chain id of every benchmark.
pub const CHAIN_ID: u64 = 901;
/// Bearer token of the control API of the services the rig starts.
const CONTROL_TOKEN: &str = "bench-control-token";
/// An L1 block is mined every this many L2 blocks (12 s vs 2 s block times).
pub const L2_PER_L1: u64 = 6;

/// A service child process.
#[derive(Debug)]
pub struct ServiceProc {
    /// Name (`poller`, `validator`, `engine-driver-3`).
    pub name: String,
    /// The process.
    pub proc: Proc,
    /// Its admin HTTP address (`/ready`, `/metrics`).
    pub admin: SocketAddr,
    /// Its gRPC control address.
    pub grpc: SocketAddr,
    bin: String,
    extra: Vec<String>,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// Mock ELs (one engine-driver each when drivers are spawned).
    pub els: usize,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// `RUST_LOG` of the services.
    pub rust_log: String,
}

/// The running world; dropping it kills every child.
pub struct Rig {
    dir: tempfile::TempDir,
    opts: RigOptions,
    nats: NatsServer,
    anvil: Anvil,
    anvil_url: String,
    /// anvil client (mining, reads).
    pub l1: L1Client,
    sim: Simulator,
    produced: u64,
    /// The source.
    pub source: BenchSource,
    /// The mock ELs.
    pub els: Vec<Arc<MockEl>>,
    jwt_files: Vec<PathBuf>,
    /// Started services.
    pub services: Vec<ServiceProc>,
    /// Ports handed out to services (never twice).
    ports: HashSet<u16>,
}

impl std::fmt::Debug for Rig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rig").field("dir", &self.dir.path()).finish_non_exhaustive()
    }
}

/// Polls `probe` every 20 ms until true or `timeout` ([`wait::until_async`] with the bench's
/// error).
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, probe: F) -> Result<(), BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait::until_async(timeout, wait::POLL, probe)
        .await
        .map_err(|_| BenchError::Timeout(timeout, what.to_owned()))
}

impl Rig {
    /// Starts nats-server, anvil (finalized = head − 8), the simulated chain with a few L1
    /// blocks, the source and `opts.els` mock ELs. No service yet.
    pub async fn start(opts: RigOptions) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new().prefix("lightcl-bench-").tempdir().ctx("temp dir")?;
        // Finalized = latest − 2 × 4: our L1 finalizes what the simulated source finalizes
        // (SimConfig::finality_depth 8), so finalized L1 origins are cacheable.
        let nats_opts = NatsOptions {
            store_dir: Some(dir.path().join("nats")),
            log_file: Some(dir.path().join("nats.log")),
            ready_timeout: Duration::from_secs(20),
            ..NatsOptions::default()
        };
        let anvil_opts = AnvilOptions {
            mining: Mining::OnTransaction,
            slots_in_an_epoch: 4,
            chain_id: Some(900),
            log_file: Some(dir.path().join("anvil.log")),
            ready_timeout: Duration::from_secs(20),
        };
        let (nats, anvil) =
            tokio::join!(NatsServer::start_with(nats_opts), Anvil::start_with(anvil_opts));
        let nats = nats.ctx("nats-server ready")?;
        let anvil = anvil.ctx("anvil ready")?;
        let anvil_url = anvil.url();
        let l1 = L1Client::new(&anvil_url).ctx("anvil client")?;
        let genesis =
            l1.block(0).await.ctx("L1 genesis")?.ok_or_else(|| failed("anvil", "no genesis"))?;
        let sim = Simulator::new(SimConfig::default(), genesis);
        let source = BenchSource::start(CHAIN_ID, &sim.status()).await?;
        let mut els = Vec::new();
        let mut jwt_files = Vec::new();
        for i in 0..opts.els {
            let secret = JwtSecret::random();
            let mut c = MockElConfig::new(secret);
            c.chain_id = CHAIN_ID;
            // Every new head is first answered SYNCING and "downloaded" by the next call, as
            // in tip following (docs/architecture.md#forkchoice-answers).
            c.download_delay = Duration::ZERO;
            c.genesis = sim.genesis();
            let el = MockEl::start(c).await.ctx("starting a mock EL")?;
            let f = dir.path().join(format!("jwt-{i}.hex"));
            std::fs::write(&f, format!("0x{}\n", hex::encode(secret.as_bytes())))
                .ctx("jwt file")?;
            jwt_files.push(f);
            els.push(Arc::new(el));
        }
        let mut rig = Self {
            dir,
            opts,
            nats,
            anvil,
            anvil_url,
            l1,
            sim,
            produced: 0,
            source,
            els,
            jwt_files,
            services: Vec::new(),
            ports: HashSet::new(),
        };
        // A short history so every ref (finalized too) is set.
        for _ in 0..60 {
            rig.advance().await?;
        }
        Ok(rig)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// anvil's URL.
    pub fn anvil_url(&self) -> &str {
        &self.anvil_url
    }

    /// The status the source serves.
    pub fn status(&self) -> SyncStatus {
        self.sim.status()
    }

    /// One new L2 head (and one L1 block every [`L2_PER_L1`]): the ELs' peers get it first,
    /// then the source serves it. Returns the new head.
    pub async fn advance(&mut self) -> Result<L2BlockRef, BenchError> {
        let b = self.produce().await?;
        for el in &self.els {
            el.add_network_blocks([b]);
        }
        self.source.set_status(&self.sim.status())?;
        Ok(b)
    }

    /// One new L2 head in the simulated chain only (nothing served): for statuses published
    /// straight to the bus.
    pub async fn produce(&mut self) -> Result<L2BlockRef, BenchError> {
        if self.produced.is_multiple_of(L2_PER_L1) {
            self.l1.mine().await.ctx("mining L1")?;
            let known = self.sim.l1_head().number;
            let head = self.l1.head().await.ctx("L1 head")?.number;
            let blocks = self.l1.range(known + 1, head).await.ctx("L1 range")?;
            self.sim.observe_l1(&blocks).ctx("simulator L1")?;
        }
        self.produced += 1;
        Ok(self.sim.produce())
    }

    /// Every L2 block of the simulated chain (for ELs started later).
    pub fn chain(&self) -> Vec<L2BlockRef> {
        self.sim.chain().to_vec()
    }

    /// The simulated chain's genesis.
    pub fn genesis(&self) -> L2BlockRef {
        self.sim.genesis()
    }

    fn common_args(&self, grpc: SocketAddr, admin: SocketAddr) -> Vec<String> {
        vec![
            format!("--nats.url={}", self.nats_url()),
            format!("--chain-id={CHAIN_ID}"),
            format!("--grpc.addr={grpc}"),
            format!("--admin.addr={admin}"),
            "--shutdown-grace=3s".into(),
        ]
    }

    /// A free loopback address not handed out before (other programs may still race us:
    /// [`Rig::wait_ready`] restarts a service whose port was taken).
    fn fresh_addr(&mut self) -> Result<SocketAddr, BenchError> {
        loop {
            let a = procs::free_addr().ctx("port")?;
            if self.ports.insert(a.port()) {
                return Ok(a);
            }
        }
    }

    fn spawn(&mut self, name: &str, bin: &str, extra: Vec<String>) -> Result<(), BenchError> {
        let s = self.start_service(name, bin, extra)?;
        self.services.push(s);
        Ok(())
    }

    fn start_service(
        &mut self,
        name: &str,
        bin: &str,
        extra: Vec<String>,
    ) -> Result<ServiceProc, BenchError> {
        let grpc = self.fresh_addr()?;
        let admin = self.fresh_addr()?;
        let mut args = self.common_args(grpc, admin);
        args.extend(extra.iter().cloned());
        let envs = vec![
            ("RUST_LOG".to_owned(), self.opts.rust_log.clone()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        let path = self.opts.bin_dir.join(bin);
        if !path.is_file() {
            return Err(failed(
                "finding the service binaries",
                format!(
                    "{} is missing: run `cargo build --release -p lightcl-poller -p lightcl-validator -p lightcl-engine-driver` or pass --bin-dir",
                    path.display()
                ),
            ));
        }
        let log = self.dir.path().join(format!("{name}.log"));
        let proc = Proc::spawn(name, &path, args, envs, log).ctx("starting a service")?;
        Ok(ServiceProc { name: name.to_owned(), proc, admin, grpc, bin: bin.to_owned(), extra })
    }

    /// Starts the validator reading L1 at `l1_url` (anvil or a counting proxy in front of it).
    pub fn spawn_validator(&mut self, l1_url: &str) -> Result<(), BenchError> {
        self.spawn_validator_with(l1_url, &[])
    }

    /// Starts the validator reading L1 at `l1_url`, with `extra` flags.
    pub fn spawn_validator_with(&mut self, l1_url: &str, extra: &[&str]) -> Result<(), BenchError> {
        let mut args = vec![format!("--l1.rpc={l1_url}")];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        self.spawn("validator", "lightcl-validator", args)
    }

    /// Starts the poller of the source at `interval`.
    pub fn spawn_poller(&mut self, interval: Duration) -> Result<(), BenchError> {
        let args = vec![
            format!("--l2.follow.source={}", self.source.url()),
            "--source-id=bench-source".into(),
            format!("--poll-interval={}", humantime::format_duration(interval)),
            format!("--grpc.token-file={}", self.control_token()?.display()),
        ];
        self.spawn("poller", "lightcl-poller", args)
    }

    /// The bearer token of the services' mutating control calls (written to a file once).
    fn control_token(&self) -> Result<PathBuf, BenchError> {
        let f = self.dir.path().join("grpc-token");
        if !f.is_file() {
            std::fs::write(&f, CONTROL_TOKEN).ctx("token file")?;
        }
        Ok(f)
    }

    /// Pauses (`true`) or resumes the poller through its control API (the poller was started
    /// by [`Rig::spawn_poller`]).
    pub async fn pause_poller(&self, paused: bool) -> Result<(), BenchError> {
        use lightcl_proto::v1;
        let s = self.service("poller").ok_or_else(|| failed("pause", "no poller"))?;
        let mut client =
            v1::poller_control_client::PollerControlClient::connect(format!("http://{}", s.grpc))
                .await
                .ctx("poller control API")?;
        let bearer: tonic::metadata::MetadataValue<_> =
            format!("Bearer {CONTROL_TOKEN}").parse().ctx("bearer token")?;
        let auth = |r: &mut tonic::metadata::MetadataMap| {
            r.insert("authorization", bearer.clone());
        };
        let state = if paused {
            let mut r = tonic::Request::new(v1::PauseRequest {
                reason: "benchmark: the baseline's turn".into(),
            });
            auth(r.metadata_mut());
            client.pause(r).await
        } else {
            let mut r = tonic::Request::new(v1::ResumeRequest {});
            auth(r.metadata_mut());
            client.resume(r).await
        }
        .ctx("pause/resume")?;
        if state.get_ref().paused != paused {
            return Err(failed("pause", format!("the poller answered paused={}", !paused)));
        }
        Ok(())
    }

    /// Starts the poller of the source with its default interval and `extra` flags.
    pub fn spawn_poller_with(&mut self, extra: &[String]) -> Result<(), BenchError> {
        let mut args = vec![
            format!("--l2.follow.source={}", self.source.url()),
            "--source-id=bench-source".into(),
        ];
        args.extend(extra.iter().cloned());
        self.spawn("poller", "lightcl-poller", args)
    }

    /// Forgets a stopped service (so one of the same name can be started again).
    pub fn remove_service(&mut self, name: &str) {
        self.services.retain(|s| s.name != name);
    }

    /// Starts one engine-driver per mock EL.
    pub fn spawn_drivers(&mut self) -> Result<(), BenchError> {
        for i in 0..self.els.len() {
            let args = vec![
                format!("--l2.engine-rpc={}", self.els[i].url()),
                format!("--l2.jwt-secret={}", self.jwt_files[i].display()),
                format!("--node-id=el-{i}"),
            ];
            self.spawn(&format!("engine-driver-{i}"), "lightcl-engine-driver", args)?;
        }
        Ok(())
    }

    /// Waits until every started service answers `/ready` with 200; a service that exited
    /// because another program took its port is started again on new ports (twice at most).
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), BenchError> {
        for i in 0..self.services.len() {
            let mut attempts = 0;
            loop {
                let s = &mut self.services[i];
                let admin = s.admin;
                let res =
                    s.proc
                        .wait_until(timeout, || async move {
                            http_get(admin, "/ready").await.status == 200
                        })
                        .await;
                let Err(e) = res else { break };
                if attempts < 2 && s.proc.lost_a_listen_port() {
                    attempts += 1;
                    let (name, bin, extra) = (s.name.clone(), s.bin.clone(), s.extra.clone());
                    self.services[i] = self.start_service(&name, &bin, extra)?;
                    continue;
                }
                let tail = s.proc.log_tail(10);
                return Err(failed(&format!("{} ready", s.name), format!("{e}\n{tail}")));
            }
        }
        Ok(())
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceProc> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Stops (SIGTERM) the service called `name`.
    pub async fn stop_service(&mut self, name: &str) {
        if let Some(s) = self.services.iter_mut().find(|s| s.name == name) {
            s.proc.terminate(Duration::from_secs(5)).await;
        }
    }

    /// Stops every service (SIGTERM), then nats-server and anvil.
    pub async fn shutdown(mut self) {
        for s in &mut self.services {
            s.proc.terminate(Duration::from_secs(5)).await;
        }
        self.nats.terminate(Duration::from_secs(5)).await;
        self.anvil.terminate(Duration::from_secs(5)).await;
    }

    /// The `/metrics` text of a service.
    pub async fn metrics(&self, name: &str) -> Result<String, BenchError> {
        let s =
            self.service(name).ok_or_else(|| failed("metrics", format!("no service {name}")))?;
        let page = http_get(s.admin, "/metrics").await;
        match page.status {
            200 => Ok(page.body),
            0 => Err(failed("GET", format!("{}/metrics: no answer", s.admin))),
            code => Err(failed("GET", format!("{}/metrics: HTTP {code}", s.admin))),
        }
    }
}

/// A clock ticking every `every` whose late ticks are delayed, not bunched (the pace at
/// which the benchmarks change the head or send messages).
pub fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// The sum of every sample of `name` (any labels) in a Prometheus text page.
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            let base = key.split('{').next()?;
            (base == name).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}
