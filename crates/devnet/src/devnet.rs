//! The running devnet: processes, the simulated source, mock ELs, observers and injections.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy_primitives::B256;
use alloy_rpc_types_engine::ForkchoiceState;
use alloy_rpc_types_engine::JwtSecret;
use futures::StreamExt;
use lightcl_core::{L2BlockRef, SyncStatus};
use lightcl_harness::anvil::{Anvil, AnvilError, AnvilOptions, Mining};
use lightcl_harness::mock_el::{CallRecord, FcuRecord, FcuReply, MockEl, MockElConfig};
use lightcl_harness::mock_source::MockSource;
use lightcl_harness::nats::{
    NatsCluster, NatsClusterOptions, NatsOptions, NatsServer, NatsServerError,
};
use lightcl_harness::tls::{FrontOptions, TestCa, TlsFront};
use lightcl_harness::{http_get, wait};
use lightcl_proto::v1;
use prost::Message;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::l1::{L1Client, L1Error};
use crate::procs::{self, Proc, ProcError};
use crate::sim::{Lie, SimConfig, SimError, Simulator};

/// Errors of the devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A child process failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// nats-server failed to start or to come back.
    #[error(transparent)]
    Nats(#[from] NatsServerError),
    /// anvil failed to start.
    #[error(transparent)]
    Anvil(#[from] AnvilError),
    /// Talking to anvil failed.
    #[error(transparent)]
    L1(#[from] L1Error),
    /// The simulator refused an L1 update.
    #[error("simulator: {0}")]
    Sim(#[from] SimError),
    /// Local I/O (temp dir, files, mock servers).
    #[error("{what}: {reason}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// An injection is not possible now.
    #[error("cannot inject: {0}")]
    Inject(String),
    /// A wait timed out.
    #[error("timed out after {waited:?} waiting for {what}\n{view}")]
    Timeout {
        /// The condition.
        what: String,
        /// How long.
        waited: Duration,
        /// The devnet view at the time.
        view: String,
    },
}

fn io(what: &str) -> impl FnOnce(String) -> DevnetError + '_ {
    move |reason| DevnetError::Io { what: what.to_owned(), reason }
}

/// Devnet settings.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// L2 chain id.
    pub chain_id: u64,
    /// Number of mock ELs (one engine-driver each).
    pub els: usize,
    /// Number of sources (at least 1): mock consensus nodes serving the same simulated chain,
    /// each polled by its own poller ([`Service::poller`]) with source id
    /// [`Devnet::source_id`] (`devnet-source`, `devnet-source-1`, ...). Each can be stopped,
    /// stalled or made to lie on its own ([`Devnet::set_source_lie`]).
    pub sources: usize,
    /// Number of validator replicas (at least 1), sharing the durable consumer
    /// ([`Service::validator`]).
    pub validators: usize,
    /// The simulated L2 block time.
    pub block_time: Duration,
    /// An L1 block is mined every this many L2 blocks.
    pub l2_per_l1: u32,
    /// The poller's `--poll-interval`.
    pub poll_interval: Duration,
    /// How long a mock EL takes to "download" an unknown head.
    pub download_delay: Duration,
    /// After an L1 reorg the source keeps serving its old (now non-canonical) view this long.
    pub rederive_delay: Duration,
    /// Simulated chain tuning.
    pub sim: SimConfig,
    /// Where the service binaries are (default: [`procs::bin_dir`]).
    pub bin_dir: Option<PathBuf>,
    /// Directory for logs, JWT files and the NATS store (default: a temp dir, removed on drop).
    pub work_dir: Option<PathBuf>,
    /// Extra arguments per service (`poller`, `validator`, `engine-driver`), given to every
    /// process of that service (every source's poller, every validator replica), e.g.
    /// `validator` → `["--quorum=2"]`.
    pub extra_args: HashMap<String, Vec<String>>,
    /// Extra environment for every service process (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub extra_env: Vec<(String, String)>,
    /// `RUST_LOG` for the services.
    pub rust_log: String,
    /// Readiness deadline for each process.
    pub ready_timeout: Duration,
    /// L2 blocks the source has before the services start (the ELs start at genesis).
    pub prefill: u64,
    /// Start with the simulation paused (no L1 mining, no L2 production).
    pub start_paused: bool,
    /// The mock ELs answer SYNCING to every forkchoice update from the start (an initial sync
    /// in progress) until [`Devnet::set_el_syncing`] turns it off.
    pub els_start_syncing: bool,
    /// [`Devnet::check_invariants`] tolerates an FCU whose safe/finalized L1 origin was reorged
    /// out less than this long before it was sent (a target validated just before an L1 reorg
    /// may still be in flight; zero: strict).
    pub stale_label_grace: Duration,
    /// [`Devnet::check_invariants`] also requires that no EL keeps a safe or finalized label
    /// whose L1 origin was reorged out for longer than this (the validator's L1 watch
    /// retreats; see [`Devnet::retreat_times`]). `None`: not checked (the EL may keep a stale
    /// label until the source re-derives).
    pub stale_state_bound: Option<Duration>,
    /// Serve the source, L1 and every EL over HTTPS (TLS fronts with a private CA, trusted by
    /// the services through `SSL_CERT_FILE`); the source and L1 URLs carry this API key in
    /// their path (`/v2/<key>`), as hosted providers do. `None`: plain HTTP.
    pub https_api_key: Option<String>,
    /// Run a 3-server JetStream cluster instead of one server: every service (and the
    /// devnet's observer) gets all three URLs and `--nats.replicas=3`; the cluster is
    /// reachable through [`Devnet::nats_cluster`] for faults.
    pub nats_cluster: bool,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            chain_id: 901,
            els: 1,
            sources: 1,
            validators: 1,
            block_time: Duration::from_millis(500),
            l2_per_l1: 3,
            poll_interval: Duration::from_millis(250),
            download_delay: Duration::from_millis(50),
            rederive_delay: Duration::from_millis(1500),
            sim: SimConfig::default(),
            bin_dir: None,
            work_dir: None,
            extra_args: HashMap::new(),
            extra_env: Vec::new(),
            rust_log: "info".into(),
            ready_timeout: Duration::from_secs(30),
            prefill: 30,
            start_paused: false,
            els_start_syncing: false,
            stale_label_grace: Duration::ZERO,
            stale_state_bound: None,
            https_api_key: None,
            nats_cluster: false,
        }
    }
}

/// Which service process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// The poller of source 0 (the only one by default).
    Poller,
    /// The validator (replica 0, the only one by default).
    Validator,
    /// The engine-driver of EL `i`.
    Driver(usize),
    /// The poller of source `i` ≥ 1 (see [`DevnetConfig::sources`]; use [`Service::poller`]).
    SourcePoller(usize),
    /// Validator replica `i` ≥ 1 (see [`DevnetConfig::validators`]; use
    /// [`Service::validator`]).
    ValidatorReplica(usize),
}

impl Service {
    /// The poller of source `i` ([`Service::Poller`] for 0).
    pub fn poller(i: usize) -> Self {
        if i == 0 { Self::Poller } else { Self::SourcePoller(i) }
    }

    /// Validator replica `i` ([`Service::Validator`] for 0).
    pub fn validator(i: usize) -> Self {
        if i == 0 { Self::Validator } else { Self::ValidatorReplica(i) }
    }

    /// Order of [`Devnet::service_list`]: pollers, validators, drivers.
    fn order(self) -> (u8, usize) {
        match self {
            Self::Poller => (0, 0),
            Self::SourcePoller(i) => (0, i),
            Self::Validator => (1, 0),
            Self::ValidatorReplica(i) => (1, i),
            Self::Driver(i) => (2, i),
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Poller => f.write_str("poller"),
            Self::Validator => f.write_str("validator"),
            Self::Driver(i) => write!(f, "engine-driver-{i}"),
            Self::SourcePoller(i) => write!(f, "poller-{i}"),
            Self::ValidatorReplica(i) => write!(f, "validator-{i}"),
        }
    }
}

/// A service child process with its admin address.
#[derive(Debug)]
struct ServiceProc {
    proc: Proc,
    admin: SocketAddr,
    grpc: SocketAddr,
}

/// A decoded rejection as seen on `lightcl.rejected.<chain>`.
#[derive(Debug, Clone)]
pub struct SeenRejection {
    /// When it was received.
    pub at: Instant,
    /// Machine-readable reason.
    pub reason: String,
    /// Human text.
    pub message: String,
    /// The rejected status' safe head hash (if decodable).
    pub safe_hash: Option<B256>,
}

/// The devnet's NATS: one server or a cluster.
#[derive(Debug)]
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

impl Nats {
    fn url(&self) -> String {
        match self {
            Self::Single(s) => s.url(),
            Self::Cluster(c) => c.urls(),
        }
    }

    async fn terminate(&mut self, grace: Duration) -> Option<String> {
        match self {
            Self::Single(s) => s.terminate(grace).await,
            Self::Cluster(c) => {
                c.terminate(grace).await;
                Some("cluster terminated".into())
            }
        }
    }
}

/// A decoded target as stored on `lightcl.target.<chain>` (the targets stream).
#[derive(Debug, Clone, Copy)]
pub struct SeenTarget {
    /// Epoch (0 from versions without it); targets are ordered by (epoch, revision).
    pub epoch: u64,
    /// Revision.
    pub revision: u64,
    /// Unsafe head.
    pub unsafe_l2: L2BlockRef,
    /// Safe head.
    pub safe_l2: L2BlockRef,
    /// Finalized head.
    pub finalized_l2: L2BlockRef,
}

/// What one source serves instead of its live chain.
#[derive(Debug, Clone, Default)]
struct SourceControl {
    /// Serves the live status with this lie.
    lie: Option<Lie>,
    /// Keeps serving what it served last (frozen), whatever else is set.
    stalled: bool,
    /// Serves this status (a replay, a not-ready node).
    override_status: Option<SyncStatus>,
    /// Stopped (connection refused).
    down: bool,
}

/// The simulation's switches and what each source serves.
#[derive(Debug, Clone, Default)]
struct Control {
    paused: bool,
    stale_until: Option<Instant>,
    resync_from: Option<u64>,
    /// Per source.
    sources: Vec<SourceControl>,
}

/// A block a lying source served (never part of the chain).
#[derive(Debug, Clone, Copy)]
struct Forged {
    source: usize,
    lie: Lie,
}

#[derive(Debug)]
struct World {
    sim: Simulator,
    control: Control,
    /// L1 hashes that left the canonical chain, with the time they did.
    orphaned_l1: HashMap<B256, Instant>,
    /// Blocks forged or fabricated by lying sources.
    forged: HashMap<B256, Forged>,
    targets: Vec<SeenTarget>,
    /// The `source_ids` of each target of `targets` (same order).
    target_sources: Vec<Vec<String>>,
    rejections: Vec<SeenRejection>,
    ticks: u64,
    errors: Vec<String>,
}

impl World {
    /// Sets what source `i` serves from the world: nothing new while it is stalled, else its
    /// lie (recording the fake block), its override, or (unless `stale`) the live status.
    fn serve(&mut self, i: usize, source: &MockSource, stale: bool) {
        let Some(c) = self.control.sources.get(i) else { return };
        if c.stalled {
            return;
        }
        if let Some(lie) = c.lie {
            let (st, fake) = self.sim.lie_status(lie);
            self.forged.insert(fake.hash, Forged { source: i, lie });
            source.set_status(st);
        } else if let Some(st) = &c.override_status {
            source.set_status(st.clone());
        } else if !stale {
            source.set_status(self.sim.status());
        }
    }

    /// Source `i`'s mode for the view.
    fn mode(&self, i: usize) -> &'static str {
        let c = &self.control;
        let Some(s) = c.sources.get(i) else { return "-" };
        if s.down {
            "DOWN"
        } else if s.stalled {
            "STALLED"
        } else if let Some(lie) = s.lie {
            match lie {
                Lie::BadOrigin => "LYING",
                Lie::Unsafe => "FAKE-UNSAFE",
                Lie::LocalSafe => "FAKE-LOCAL-SAFE",
                Lie::Safe => "FAKE-SAFE",
                Lie::Finalized => "FAKE-FINALIZED",
            }
        } else if s.override_status.is_some() {
            "REPLAY"
        } else if c.stale_until.is_some() {
            "STALE-L1"
        } else if c.paused {
            "paused"
        } else {
            "live"
        }
    }
}

struct Shared {
    world: Mutex<World>,
    /// Source `i` is `sources[i]`.
    sources: Vec<MockSource>,
    els: Vec<Arc<MockEl>>,
    l1: L1Client,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The endpoint URLs handed to the services.
#[derive(Debug, Clone)]
struct ServiceUrls {
    /// Per source.
    sources: Vec<String>,
    l1: String,
    els: Vec<String>,
}

/// Puts a TLS front (private CA) before the source, anvil and each EL; the source and L1 fronts
/// require `key` in the path. Returns the URLs, the fronts and the CA file for `SSL_CERT_FILE`.
async fn https_fronts(
    shared: &Shared,
    anvil_port: u16,
    key: &str,
    dir: &Path,
) -> Result<(ServiceUrls, Vec<(String, TlsFront)>, PathBuf), String> {
    let ca = TestCa::new("devnet");
    let ca_file = ca.write_pem(dir);
    let addr_of = |url: &str| -> Result<SocketAddr, String> {
        url.trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("{url}: {e}"))
    };
    let keyed = FrontOptions { api_key: Some(key.to_owned()) };
    let start = |upstream: SocketAddr, opts: FrontOptions| {
        let ca = &ca;
        async move { TlsFront::start(ca, upstream, opts).await.map_err(|e| e.to_string()) }
    };
    let mut fronts = Vec::new();
    let mut sources = Vec::new();
    for (i, s) in shared.sources.iter().enumerate() {
        let f = start(addr_of(&s.url())?, keyed.clone()).await?;
        sources.push(f.url());
        let name = if i == 0 { "source".to_owned() } else { format!("source-{i}") };
        fronts.push((name, f));
    }
    let l1 = start(SocketAddr::from(([127, 0, 0, 1], anvil_port)), keyed).await?;
    let mut urls = ServiceUrls { sources, l1: l1.url(), els: Vec::new() };
    fronts.push(("l1".to_owned(), l1));
    for (i, el) in shared.els.iter().enumerate() {
        let f = start(addr_of(&el.url())?, FrontOptions::default()).await?;
        urls.els.push(f.base_url());
        fronts.push((format!("el-{i}"), f));
    }
    Ok((urls, fronts, ca_file))
}

/// A running devnet. Dropping it kills every child process; prefer [`Devnet::shutdown`].
pub struct Devnet {
    cfg: DevnetConfig,
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    nats: Nats,
    anvil: Anvil,
    anvil_url: String,
    services: HashMap<Service, ServiceProc>,
    /// The URLs the services are given (HTTPS fronts when configured).
    urls: ServiceUrls,
    /// TLS fronts (source, L1, ELs) kept alive while the devnet runs.
    fronts: Vec<(String, TlsFront)>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Devnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Devnet").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Devnet {
    /// Starts everything and waits until every service is ready.
    pub async fn start(cfg: DevnetConfig) -> Result<Self, DevnetError> {
        let (tmp, dir) = match &cfg.work_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| io("creating work dir")(e.to_string()))?;
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("lightcl-devnet-")
                    .tempdir()
                    .map_err(|e| io("creating temp dir")(e.to_string()))?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };

        // NATS (JetStream, store in the work dir so a restart keeps the streams) and anvil,
        // started side by side, logging into the work dir.
        let nats_opts = NatsOptions {
            store_dir: Some(dir.join("nats")),
            log_file: Some(dir.join("nats.log")),
            ready_timeout: cfg.ready_timeout,
            ..NatsOptions::default()
        };
        let anvil_opts = AnvilOptions {
            mining: Mining::OnTransaction,
            chain_id: Some(900),
            log_file: Some(dir.join("anvil.log")),
            ready_timeout: cfg.ready_timeout,
            ..AnvilOptions::default()
        };
        let cluster_opts = NatsClusterOptions {
            dir: Some(dir.join("nats-cluster")),
            ready_timeout: cfg.ready_timeout,
            ..NatsClusterOptions::default()
        };
        let start_nats = async {
            Ok::<_, NatsServerError>(if cfg.nats_cluster {
                Nats::Cluster(NatsCluster::start_with(cluster_opts).await?)
            } else {
                Nats::Single(NatsServer::start_with(nats_opts).await?)
            })
        };
        let (nats, anvil) = tokio::join!(start_nats, Anvil::start_with(anvil_opts));
        let (nats, anvil) = (nats?, anvil?);
        let anvil_port = anvil.port();
        let anvil_url = anvil.url();
        let l1 = L1Client::new(&anvil_url)?;

        // The simulated chain starts over a few real L1 blocks.
        let genesis = l1.block(0).await?.ok_or_else(|| io("anvil")("no genesis block".into()))?;
        let mut sim = Simulator::new(cfg.sim, genesis);
        for i in 0..cfg.prefill.max(1) {
            if i % u64::from(cfg.l2_per_l1.max(1)) == 0 {
                l1.mine().await?;
                let known = sim.l1_head().number;
                let head = l1.head().await?.number;
                sim.observe_l1(&l1.range(known + 1, head).await?)?;
            }
            sim.produce();
        }

        let mut sources = Vec::new();
        for _ in 0..cfg.sources.max(1) {
            let s = MockSource::start(cfg.chain_id, sim.status())
                .await
                .map_err(|e| io("starting a mock source")(e.to_string()))?;
            sources.push(s);
        }
        let mut els = Vec::new();
        let mut jwt_files = Vec::new();
        for i in 0..cfg.els {
            let secret = JwtSecret::random();
            let mut c = MockElConfig::new(secret);
            c.chain_id = cfg.chain_id;
            c.download_delay = cfg.download_delay;
            c.genesis = sim.genesis();
            let el = MockEl::start(c).await.map_err(|e| io("starting a mock EL")(e.to_string()))?;
            el.add_network_blocks(sim.chain().iter().copied());
            el.set_forced_syncing(cfg.els_start_syncing);
            let f = dir.join(format!("jwt-{i}.hex"));
            std::fs::write(&f, format!("0x{}\n", hex::encode(secret.as_bytes())))
                .map_err(|e| io("writing a JWT secret")(e.to_string()))?;
            jwt_files.push(f);
            els.push(Arc::new(el));
        }

        let shared = Arc::new(Shared {
            world: Mutex::new(World {
                sim,
                control: Control {
                    paused: cfg.start_paused,
                    sources: vec![SourceControl::default(); sources.len()],
                    ..Control::default()
                },
                orphaned_l1: HashMap::new(),
                forged: HashMap::new(),
                targets: Vec::new(),
                target_sources: Vec::new(),
                rejections: Vec::new(),
                ticks: 0,
                errors: Vec::new(),
            }),
            sources,
            els,
            l1,
        });
        let (urls, fronts, ca_file) = match &cfg.https_api_key {
            None => (
                ServiceUrls {
                    sources: shared.sources.iter().map(MockSource::url).collect(),
                    l1: anvil_url.clone(),
                    els: shared.els.iter().map(|e| e.url()).collect(),
                },
                Vec::new(),
                None,
            ),
            Some(key) => {
                let (urls, fronts, ca) =
                    https_fronts(&shared, anvil_port, key, &dir).await.map_err(io("TLS fronts"))?;
                (urls, fronts, Some(ca))
            }
        };
        let mut cfg = cfg;
        if let Some(ca) = ca_file {
            cfg.extra_env.push(("SSL_CERT_FILE".into(), ca.display().to_string()));
        }
        let cancel = CancellationToken::new();
        let mut me = Self {
            cfg,
            _tmp: tmp,
            dir,
            nats,
            anvil,
            anvil_url,
            services: HashMap::new(),
            urls,
            fronts,
            shared,
            cancel,
            tasks: Vec::new(),
        };
        me.tasks.push(tokio::spawn(observe(
            me.nats_url(),
            me.cfg.chain_id,
            me.shared.clone(),
            me.cancel.clone(),
        )));
        me.tasks.push(tokio::spawn(drive(me.cfg.clone(), me.shared.clone(), me.cancel.clone())));

        let bin_dir = me.cfg.bin_dir.clone().unwrap_or_else(procs::bin_dir);
        for i in 0..me.cfg.validators.max(1) {
            me.spawn_service(Service::validator(i), &bin_dir, &[])?;
        }
        for i in 0..me.shared.sources.len() {
            me.spawn_service(Service::poller(i), &bin_dir, &[])?;
        }
        for (i, f) in jwt_files.iter().enumerate() {
            me.spawn_service(Service::Driver(i), &bin_dir, &[f.as_path()])?;
        }
        let all: Vec<Service> = me.services.keys().copied().collect();
        for s in all {
            // Ports are picked free and then handed over, so another program (a parallel
            // test) may take one first: such a service is started again on new ports.
            let mut retries = 2;
            loop {
                match me.wait_ready(s).await {
                    Ok(()) => break,
                    Err(_) if retries > 0 && me.lost_a_port(s) => {
                        retries -= 1;
                        let jwt: Vec<&Path> = match s {
                            Service::Driver(i) => {
                                jwt_files.get(i).map(PathBuf::as_path).into_iter().collect()
                            }
                            _ => Vec::new(),
                        };
                        me.spawn_service(s, &bin_dir, &jwt)?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(me)
    }

    /// Whether `s` exited because one of its listen addresses was taken.
    fn lost_a_port(&mut self, s: Service) -> bool {
        self.services.get_mut(&s).is_some_and(|p| p.proc.lost_a_listen_port())
    }

    fn spawn_service(
        &mut self,
        which: Service,
        bin_dir: &Path,
        jwt: &[&Path],
    ) -> Result<(), DevnetError> {
        let grpc = procs::free_addr()?;
        let admin = procs::free_addr()?;
        let (bin, key) = match which {
            Service::Poller | Service::SourcePoller(_) => ("lightcl-poller", "poller"),
            Service::Validator | Service::ValidatorReplica(_) => ("lightcl-validator", "validator"),
            Service::Driver(_) => ("lightcl-engine-driver", "engine-driver"),
        };
        let mut args = vec![
            format!("--nats.url={}", self.service_nats_url(which)),
            format!("--chain-id={}", self.cfg.chain_id),
            format!("--grpc.addr={grpc}"),
            format!("--admin.addr={admin}"),
            "--shutdown-grace=3s".into(),
        ];
        if matches!(self.nats, Nats::Cluster(_)) {
            args.push("--nats.replicas=3".into());
        }
        match which {
            Service::Poller | Service::SourcePoller(_) => {
                let i = match which {
                    Service::SourcePoller(i) => i,
                    _ => 0,
                };
                args.push(format!("--l2.follow.source={}", self.urls.sources[i]));
                args.push(format!("--source-id={}", Self::source_id(i)));
                args.push(format!(
                    "--poll-interval={}",
                    humantime::format_duration(self.cfg.poll_interval)
                ));
            }
            Service::Validator | Service::ValidatorReplica(_) => {
                args.push(format!("--l1.rpc={}", self.urls.l1));
            }
            Service::Driver(i) => {
                args.push(format!("--l2.engine-rpc={}", self.urls.els[i]));
                if let Some(j) = jwt.first() {
                    args.push(format!("--l2.jwt-secret={}", j.display()));
                }
                args.push(format!("--node-id=el-{i}"));
            }
        }
        if let Some(extra) = self.cfg.extra_args.get(key) {
            args.extend(extra.iter().cloned());
        }
        let mut envs = vec![
            ("RUST_LOG".to_owned(), self.cfg.rust_log.clone()),
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ];
        envs.extend(self.cfg.extra_env.iter().cloned());
        let log = self.dir.join(format!("{which}.log"));
        let proc = Proc::spawn(&which.to_string(), &bin_dir.join(bin), args, envs, log)?;
        self.services.insert(which, ServiceProc { proc, admin, grpc });
        Ok(())
    }

    /// `nats://127.0.0.1:<port>`; on a cluster every server's URL, comma-joined.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The `--nats.url` a service gets: on a cluster every server, comma-separated, as an
    /// operator configures it.
    fn service_nats_url(&self, _which: Service) -> String {
        self.nats.url()
    }

    /// The NATS cluster when [`DevnetConfig::nats_cluster`] is on (kill, restart, leaders).
    pub fn nats_cluster(&mut self) -> Option<&mut NatsCluster> {
        match &mut self.nats {
            Nats::Single(_) => None,
            Nats::Cluster(c) => Some(c),
        }
    }

    /// The anvil URL.
    pub fn l1_url(&self) -> &str {
        &self.anvil_url
    }

    /// The mock source's URL (source 0).
    pub fn source_url(&self) -> String {
        self.shared.sources[0].url()
    }

    /// Source `i`'s URL.
    pub fn source_url_at(&self, i: usize) -> String {
        self.shared.sources[i].url()
    }

    /// Number of sources.
    pub fn source_count(&self) -> usize {
        self.shared.sources.len()
    }

    /// The source id source `i`'s poller publishes under: `devnet-source` for source 0,
    /// `devnet-source-<i>` for the others.
    pub fn source_id(i: usize) -> String {
        if i == 0 { "devnet-source".to_owned() } else { format!("devnet-source-{i}") }
    }

    /// The index of the source with this id (see [`Devnet::source_id`]).
    pub fn source_index(&self, id: &str) -> Option<usize> {
        (0..self.source_count()).find(|i| Self::source_id(*i) == id)
    }

    /// The mock behind source `i` (for failures the devnet has no injection for).
    pub fn source_mock(&self, i: usize) -> &MockSource {
        &self.shared.sources[i]
    }

    /// What source `i` serves right now (its lie, its frozen or overridden status, or live).
    pub fn served_status(&self, i: usize) -> SyncStatus {
        self.shared.sources[i].status()
    }

    /// Requests each TLS front forwarded (`source`, `l1`, `el-<i>`); empty without HTTPS.
    pub fn tls_forwarded(&self) -> Vec<(String, u64)> {
        self.fronts.iter().map(|(name, f)| (name.clone(), f.forwarded())).collect()
    }

    /// The endpoint URLs the services were given (with the API key when HTTPS is on): source
    /// 0's, L1's and every EL's.
    pub fn service_urls(&self) -> (&str, &str, &[String]) {
        (&self.urls.sources[0], &self.urls.l1, &self.urls.els)
    }

    /// The work directory (logs, JWT files, NATS store).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &DevnetConfig {
        &self.cfg
    }

    /// Mock EL `i`.
    pub fn el(&self, i: usize) -> &MockEl {
        &self.shared.els[i]
    }

    /// Number of ELs.
    pub fn el_count(&self) -> usize {
        self.shared.els.len()
    }

    /// The live source status (what the source serves when not lying/overridden).
    pub fn source_status(&self) -> SyncStatus {
        self.shared.world().sim.status()
    }

    /// The source's canonical L2 block at `number`.
    pub fn canonical(&self, number: u64) -> Option<L2BlockRef> {
        self.shared.world().sim.canonical(number)
    }

    /// `optimism_syncStatus` requests the source (source 0) has answered.
    pub fn source_requests(&self) -> u64 {
        self.source_requests_at(0)
    }

    /// `optimism_syncStatus` requests source `i` has answered.
    pub fn source_requests_at(&self, i: usize) -> u64 {
        self.shared.sources[i].requests("optimism_syncStatus")
    }

    /// The number of a source block (None for the zero hash or an unknown block, such as a
    /// forged or fabricated one).
    pub fn block_number(&self, hash: B256) -> Option<u64> {
        if hash == B256::ZERO {
            return None;
        }
        self.shared.world().sim.block(&hash).map(|b| b.number)
    }

    /// Which source served `hash` as a lie, and which lie (None: never served as a lie).
    pub fn forged_by(&self, hash: B256) -> Option<(usize, Lie)> {
        self.shared.world().forged.get(&hash).map(|f| (f.source, f.lie))
    }

    /// How many distinct blocks lying sources served so far.
    pub fn forged_count(&self) -> usize {
        self.shared.world().forged.len()
    }

    /// Targets stored on the bus (in the targets stream, the engine-drivers' view: not a
    /// publish that lost a validator replica's compare-and-set), oldest first.
    pub fn targets(&self) -> Vec<SeenTarget> {
        self.shared.world().targets.clone()
    }

    /// The `source_ids` of every target of [`Devnet::targets`], in the same order: the
    /// followed source (failover) or the sources that voted (quorum).
    pub fn target_sources(&self) -> Vec<Vec<String>> {
        self.shared.world().target_sources.clone()
    }

    /// The source the newest target came from, when exactly one source supported it (a
    /// followed source; None with a quorum or before the first target).
    pub fn followed_source(&self) -> Option<usize> {
        let ids = self.shared.world().target_sources.last().cloned()?;
        match ids.as_slice() {
            [one] => self.source_index(one),
            _ => None,
        }
    }

    /// Rejections seen on the bus, oldest first.
    pub fn rejections(&self) -> Vec<SeenRejection> {
        self.shared.world().rejections.clone()
    }

    /// Errors of the background driver loop (anvil unreachable etc.).
    pub fn loop_errors(&self) -> Vec<String> {
        self.shared.world().errors.clone()
    }

    /// Ticks of the simulation so far.
    pub fn ticks(&self) -> u64 {
        self.shared.world().ticks
    }

    // ---- injections -------------------------------------------------------------------------

    /// Stops (true) or resumes (false) L1 mining and L2 production.
    pub fn set_paused(&self, paused: bool) {
        self.shared.world().control.paused = paused;
    }

    /// While on, the source (source 0) serves a status whose safe head is a forged block with
    /// an L1 origin that was never on L1 (see [`Simulator::lying_status`]); off: it tells the
    /// truth again (whatever it lied about).
    pub fn set_lying(&self, lying: bool) {
        self.set_source_lie(0, lying.then_some(Lie::BadOrigin));
    }

    /// Source `i` serves its live status with `lie` ([`Simulator::lie_status`], renewed every
    /// block; None: the truth again, from the next block). Every block it serves as a lie is
    /// remembered ([`Devnet::forged_by`]) and [`Devnet::check_invariants`] fails on any FCU
    /// naming one. A stalled source starts lying when it is resumed.
    pub fn set_source_lie(&self, i: usize, lie: Option<Lie>) {
        let mut w = self.shared.world();
        let Some(c) = w.control.sources.get_mut(i) else { return };
        c.lie = lie;
        if lie.is_some() {
            w.serve(i, &self.shared.sources[i], false);
        }
    }

    /// Source `i` answers as a node of chain `chain_id` from now on (`optimism_rollupConfig`
    /// and `eth_chainId`), e.g. a DNS or load-balancer switch to another chain's node.
    pub fn set_source_chain(&self, i: usize, chain_id: u64) {
        if let Some(s) = self.shared.sources.get(i) {
            s.set_chain_id(chain_id);
        }
    }

    /// Source `i` keeps answering with the status it serves now, frozen (true), or follows the
    /// chain again from the next block (false): a node whose derivation is stuck.
    pub fn set_source_stalled(&self, i: usize, stalled: bool) {
        if let Some(c) = self.shared.world().control.sources.get_mut(i) {
            c.stalled = stalled;
        }
    }

    /// Serve `status` instead of the live chain (None: back to live), at source 0.
    pub fn set_override(&self, status: Option<SyncStatus>) {
        let mut w = self.shared.world();
        if let Some(st) = &status
            && !w.control.sources[0].stalled
        {
            self.shared.sources[0].set_status(st.clone());
        }
        w.control.sources[0].override_status = status;
    }

    /// Source down (connection refused): source 0.
    pub async fn stop_source(&self) {
        self.stop_source_at(0).await;
    }

    /// Source up again on the same port: source 0.
    pub async fn start_source(&self) -> Result<(), DevnetError> {
        self.start_source_at(0).await
    }

    /// Source `i` down (connection refused).
    pub async fn stop_source_at(&self, i: usize) {
        self.shared.sources[i].stop().await;
        if let Some(c) = self.shared.world().control.sources.get_mut(i) {
            c.down = true;
        }
    }

    /// Source `i` up again on the same port.
    pub async fn start_source_at(&self, i: usize) -> Result<(), DevnetError> {
        self.shared.sources[i]
            .restart()
            .await
            .map_err(|e| io("restarting a source")(e.to_string()))?;
        if let Some(c) = self.shared.world().control.sources.get_mut(i) {
            c.down = false;
        }
        Ok(())
    }

    /// L1 reorg under the source's safe head's origin (`anvil_reorg`); the source keeps its
    /// old view for `rederive_delay`, then re-derives. Returns the reorg depth.
    pub async fn inject_l1_reorg(&self) -> Result<u64, DevnetError> {
        let (origin, final_origin) = {
            let w = self.shared.world();
            (w.sim.safe_head().l1origin.number, w.sim.finalized_head().l1origin.number)
        };
        if origin == 0 || origin <= final_origin {
            return Err(DevnetError::Inject(format!(
                "the safe head's L1 origin #{origin} is genesis or finalized (#{final_origin})"
            )));
        }
        let head = self.shared.l1.head().await?;
        let depth = head.number + 1 - origin;
        let from = origin;
        let before = self.shared.l1.range(from, head.number).await?;
        self.shared.l1.reorg(depth).await?;
        let now = Instant::now();
        let mut w = self.shared.world();
        for b in before {
            w.orphaned_l1.insert(b.hash, now);
        }
        w.control.stale_until = Some(now + self.cfg.rederive_delay);
        w.control.resync_from = Some(from);
        Ok(depth)
    }

    /// L2 reorg at the source: the newest `depth` unsafe blocks get new hashes.
    pub fn inject_l2_reorg(&self, depth: u64) -> Vec<L2BlockRef> {
        let mut w = self.shared.world();
        let new = w.sim.l2_reorg(depth);
        for el in &self.shared.els {
            el.add_network_blocks(new.iter().copied());
        }
        for (i, s) in self.shared.sources.iter().enumerate() {
            let c = &w.control.sources[i];
            if c.override_status.is_none() && c.lie.is_none() && !c.stalled {
                s.set_status(w.sim.status());
            }
        }
        new
    }

    /// While on, EL `i` answers SYNCING to every forkchoice update (and applies nothing).
    pub fn set_el_syncing(&self, i: usize, on: bool) {
        self.shared.els[i].set_forced_syncing(on);
    }

    /// EL `i` down (connection refused).
    pub async fn stop_el(&self, i: usize) {
        self.shared.els[i].stop().await;
    }

    /// EL `i` up again.
    pub async fn start_el(&self, i: usize) -> Result<(), DevnetError> {
        self.shared.els[i].restart().await.map_err(|e| io("restarting a mock EL")(e.to_string()))
    }

    /// `kill -9` a service.
    pub async fn kill9(&mut self, s: Service) {
        if let Some(p) = self.services.get_mut(&s) {
            p.proc.kill9().await;
        }
    }

    /// Start a killed/stopped service again and wait until it is ready.
    pub async fn restart(&mut self, s: Service) -> Result<(), DevnetError> {
        if let Some(p) = self.services.get_mut(&s) {
            p.proc.restart()?;
        }
        self.wait_ready(s).await
    }

    /// True while the service process runs.
    pub fn is_running(&mut self, s: Service) -> bool {
        self.services.get_mut(&s).is_some_and(|p| p.proc.is_running())
    }

    /// The services.
    pub fn service_list(&self) -> Vec<Service> {
        let mut v: Vec<Service> = self.services.keys().copied().collect();
        v.sort_by_key(|s| s.order());
        v
    }

    /// The admin address of a service.
    pub fn admin_addr(&self, s: Service) -> Option<SocketAddr> {
        self.services.get(&s).map(|p| p.admin)
    }

    /// A service's gRPC control address.
    pub fn grpc_addr(&self, s: Service) -> Option<SocketAddr> {
        self.services.get(&s).map(|p| p.grpc)
    }

    /// Is the service's `/ready` answering 200?
    pub async fn is_ready(&self, s: Service) -> bool {
        match self.admin_addr(s) {
            Some(a) => http_get(a, "/ready").await.status == 200,
            None => false,
        }
    }

    /// The service's `/metrics` page (Prometheus text), if it answers 200.
    pub async fn metrics(&self, s: Service) -> Option<String> {
        http_get(self.admin_addr(s)?, "/metrics").await.ok_body()
    }

    /// Waits until the service's `/ready` answers 200 (fails early if it exits).
    pub async fn wait_ready(&mut self, s: Service) -> Result<(), DevnetError> {
        let timeout = self.cfg.ready_timeout;
        let Some(p) = self.services.get_mut(&s) else { return Ok(()) };
        let admin = p.admin;
        p.proc
            .wait_until(timeout, || async move { http_get(admin, "/ready").await.status == 200 })
            .await
            .map_err(|e| DevnetError::Io {
                what: e.to_string(),
                reason: format!("\n{}", p.proc.log_tail(15)),
            })
    }

    /// Restarts nats-server on the same port with the same store (SIGTERM, then start); on a
    /// cluster every server at once (a full outage), then waits until the cluster is healthy.
    pub async fn restart_nats(&mut self, down_for: Duration) -> Result<(), DevnetError> {
        self.nats.terminate(Duration::from_secs(5)).await;
        // The outage itself (not a synchronisation): NATS stays down this long.
        tokio::time::sleep(down_for).await;
        match &mut self.nats {
            Nats::Single(s) => s.start_again().await?,
            Nats::Cluster(c) => {
                futures::future::try_join_all(c.start_all_again()).await?;
                c.wait_healthy().await?;
            }
        }
        Ok(())
    }

    // ---- checks -----------------------------------------------------------------------------

    /// Every check over every EL's call log: the mock's own invariants (`finalized ≤ safe ≤
    /// head` per FCU, finalized never decreasing), no FCU carrying a forged block, and no FCU
    /// whose safe or finalized block has an L1 origin that was already reorged out when the
    /// FCU was sent (more than [`DevnetConfig::stale_label_grace`] before).
    pub fn check_invariants(&self) -> Result<(), Vec<String>> {
        let w = self.shared.world();
        let mut bad = Vec::new();
        for (i, el) in self.shared.els.iter().enumerate() {
            if let Err(v) = el.check_invariants() {
                bad.extend(v.into_iter().map(|s| format!("el-{i}: {s}")));
            }
            for (n, c) in el.calls().iter().enumerate() {
                let Some(f) = &c.fcu else { continue };
                let at = Instant::from_std(c.at);
                let st = &f.state;
                for (label, hash) in [
                    ("head", st.head_block_hash),
                    ("safe", st.safe_block_hash),
                    ("finalized", st.finalized_block_hash),
                ] {
                    if hash == B256::ZERO {
                        continue;
                    }
                    if let Some(f) = w.forged.get(&hash) {
                        bad.push(format!(
                            "el-{i} call {n}: {label} {hash} was forged by the lying source \
                             (source {}, lie {})",
                            f.source, f.lie
                        ));
                        continue;
                    }
                    if label == "head" {
                        continue;
                    }
                    let Some(b) = w.sim.block(&hash) else {
                        bad.push(format!("el-{i} call {n}: {label} {hash} is not a source block"));
                        continue;
                    };
                    if let Some(t) = w.orphaned_l1.get(&b.l1origin.hash)
                        && *t + self.cfg.stale_label_grace <= at
                    {
                        bad.push(format!(
                            "el-{i} call {n}: {label} #{} has L1 origin #{} {} that was reorged out {:?} before the FCU",
                            b.number,
                            b.l1origin.number,
                            b.l1origin.hash,
                            at - *t
                        ));
                    }
                }
            }
            if let Some(bound) = self.cfg.stale_state_bound {
                bad.extend(
                    stale_holds(&w, &el.calls(), Instant::now())
                        .into_iter()
                        .filter(|h| h.held > bound)
                        .map(|h| {
                            format!(
                                "el-{i}: kept {} #{} (L1 origin #{} reorged out) for {:?} after the \
                                 reorg, more than {bound:?}",
                                h.label, h.number, h.origin, h.held
                            )
                        }),
                );
            }
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }

    /// For the newest L1 reorg the devnet saw: per EL, how long after it the EL first got a
    /// VALID forkchoice update whose safe label's L1 origin is still canonical (zero when the
    /// safe label it had applied kept a canonical origin; None: not yet, or no reorg
    /// happened). The retreat figure: reorg visible on our L1 → retreat FCU at the EL.
    pub fn retreat_times(&self) -> Vec<Option<Duration>> {
        let w = self.shared.world();
        let Some(t) = w.orphaned_l1.values().max().copied() else {
            return vec![None; self.shared.els.len()];
        };
        let canonical_safe = |f: &FcuRecord| {
            w.sim
                .block(&f.state.safe_block_hash)
                .is_some_and(|b| !w.orphaned_l1.contains_key(&b.l1origin.hash))
        };
        self.shared
            .els
            .iter()
            .map(|el| {
                let valid: Vec<(Instant, FcuRecord)> = el
                    .calls()
                    .into_iter()
                    .filter_map(|c| {
                        let f = c.fcu.filter(|f| f.reply == FcuReply::Valid)?;
                        Some((Instant::from_std(c.at), f))
                    })
                    .collect();
                let before = valid.iter().rev().find(|(at, _)| *at < t);
                if before.is_some_and(|(_, f)| canonical_safe(f)) {
                    return Some(Duration::ZERO);
                }
                valid.iter().find(|(at, f)| *at >= t && canonical_safe(f)).map(|(at, _)| *at - t)
            })
            .collect()
    }

    /// True when EL `i`'s head, safe and finalized equal the source's (live) heads.
    pub fn el_at_source(&self, i: usize) -> bool {
        let st = self.source_status();
        let el = &self.shared.els[i];
        el.head().hash == st.unsafe_l2.hash
            && el.safe().hash == st.safe_l2.hash
            && el.finalized().hash == st.finalized_l2.hash
    }

    /// True when every EL is at the source's heads.
    pub fn all_at_source(&self) -> bool {
        (0..self.el_count()).all(|i| self.el_at_source(i))
    }

    /// True when EL `i`'s head/safe/finalized are on the source's canonical chain and at least
    /// at the given numbers.
    pub fn el_reached(&self, i: usize, head: u64, safe: u64, finalized: u64) -> bool {
        let el = &self.shared.els[i];
        let w = self.shared.world();
        let on = |b: L2BlockRef, n: u64| b.number >= n && w.sim.canonical(b.number) == Some(b);
        on(el.head(), head) && on(el.safe(), safe) && on(el.finalized(), finalized)
    }

    /// Polls `cond` every 25 ms until it holds; on timeout the error carries the view.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> Result<(), DevnetError> {
        let every = Duration::from_millis(25);
        wait::until_async(timeout, every, || std::future::ready(cond(self))).await.map_err(|_| {
            DevnetError::Timeout {
                what: what.to_owned(),
                waited: timeout,
                view: self.view().to_string(),
            }
        })
    }

    /// A snapshot for the live display.
    pub fn view(&self) -> View {
        let w = self.shared.world();
        let st = w.sim.status();
        let served = self.shared.sources[0].status();
        let els = self
            .shared
            .els
            .iter()
            .map(|el| {
                let (h, s, f) = (el.head(), el.safe(), el.finalized());
                let fcus = el.fcus();
                let last = fcus.last().map(|r| match &r.reply {
                    FcuReply::Valid => "VALID".to_owned(),
                    FcuReply::Syncing => "SYNCING".to_owned(),
                    FcuReply::Invalid { .. } => "INVALID".to_owned(),
                    FcuReply::Error { code, .. } => format!("ERR{code}"),
                });
                ElView {
                    head: h.number,
                    safe: s.number,
                    finalized: f.number,
                    lag: st.unsafe_l2.number.saturating_sub(h.number),
                    fcus: fcus.len(),
                    last_answer: last.unwrap_or_else(|| "-".into()),
                }
            })
            .collect();
        View {
            l1_head: st.current_l1.number,
            source: (st.unsafe_l2.number, st.safe_l2.number, st.finalized_l2.number),
            served: (served.unsafe_l2.number, served.safe_l2.number, served.finalized_l2.number),
            mode: w.mode(0),
            modes: (0..self.shared.sources.len()).map(|i| w.mode(i)).collect(),
            target: w
                .targets
                .last()
                .map(|t| (t.revision, t.unsafe_l2.number, t.safe_l2.number, t.finalized_l2.number)),
            rejections: w.rejections.len(),
            last_rejection: w.rejections.last().map(|r| r.reason.clone()),
            els,
        }
    }

    /// SIGTERM every service (drivers first), then NATS and anvil; waits for each.
    pub async fn shutdown(mut self) -> Vec<(String, String)> {
        self.cancel.cancel();
        let mut out = Vec::new();
        let order = {
            let mut v = self.service_list();
            v.reverse();
            v
        };
        let grace = Duration::from_secs(8);
        let mut waits = Vec::new();
        for s in order {
            if let Some(mut p) = self.services.remove(&s) {
                waits.push(async move {
                    let st = p.proc.terminate(grace).await;
                    (s.to_string(), st.unwrap_or_else(|| "not running".into()))
                });
            }
        }
        out.extend(futures::future::join_all(waits).await);
        let st = self.nats.terminate(Duration::from_secs(5)).await;
        out.push(("nats-server".into(), st.unwrap_or_else(|| "not running".into())));
        let st = self.anvil.terminate(Duration::from_secs(5)).await;
        out.push(("anvil".into(), st.unwrap_or_else(|| "not running".into())));
        for t in self.tasks.drain(..) {
            t.abort();
        }
        out
    }

    /// The last lines of a service's log.
    pub fn log_tail(&self, s: Service, lines: usize) -> String {
        self.services.get(&s).map(|p| p.proc.log_tail(lines)).unwrap_or_default()
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        self.cancel.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One EL's line in the view.
#[derive(Debug, Clone)]
pub struct ElView {
    /// Head number.
    pub head: u64,
    /// Safe number.
    pub safe: u64,
    /// Finalized number.
    pub finalized: u64,
    /// Source unsafe minus EL head.
    pub lag: u64,
    /// FCUs received.
    pub fcus: usize,
    /// Answer to the last FCU.
    pub last_answer: String,
}

/// A compact snapshot of the pipeline.
#[derive(Debug, Clone)]
pub struct View {
    /// The source's L1 head.
    pub l1_head: u64,
    /// The source's live unsafe/safe/finalized numbers.
    pub source: (u64, u64, u64),
    /// What the source (source 0) serves right now (differs while lying/replaying).
    pub served: (u64, u64, u64),
    /// Source mode (source 0): `live`, `paused`, `STALE-L1`, `REPLAY`, `LYING`,
    /// `FAKE-<LABEL>`, `STALLED` or `DOWN`.
    pub mode: &'static str,
    /// Every source's mode (the first is `mode`).
    pub modes: Vec<&'static str>,
    /// Last target: revision, unsafe, safe, finalized.
    pub target: Option<(u64, u64, u64, u64)>,
    /// Rejections seen.
    pub rejections: usize,
    /// Reason of the last rejection.
    pub last_rejection: Option<String>,
    /// Per EL.
    pub els: Vec<ElView>,
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (u, s, fi) = self.source;
        if self.modes.len() > 1 {
            let modes = self.modes.join(",");
            write!(f, "L1 {:>4} | sources[{modes}] u/s/f {u}/{s}/{fi}", self.l1_head)?;
        } else {
            write!(f, "L1 {:>4} | source[{}] u/s/f {u}/{s}/{fi}", self.l1_head, self.mode)?;
        }
        if self.served != self.source {
            let (u, s, fi) = self.served;
            write!(f, " (serving {u}/{s}/{fi})")?;
        }
        match self.target {
            Some((r, u, s, fi)) => write!(f, " | target r{r} {u}/{s}/{fi}")?,
            None => write!(f, " | target -")?,
        }
        for (i, e) in self.els.iter().enumerate() {
            write!(
                f,
                " | el{i} {}/{}/{} lag {} {}",
                e.head, e.safe, e.finalized, e.lag, e.last_answer
            )?;
        }
        write!(f, " | rejected {}", self.rejections)?;
        if let Some(r) = &self.last_rejection {
            write!(f, " ({r})")?;
        }
        Ok(())
    }
}

/// The simulation loop: mine L1, produce L2, feed the source and the ELs' network.
/// How long an EL kept a label whose L1 origin had been reorged out.
struct StaleHold {
    label: &'static str,
    number: u64,
    origin: u64,
    held: Duration,
}

/// Every stretch during which an EL's applied safe or finalized label (from its VALID
/// forkchoice updates, in order) rested on an L1 origin already reorged out: from the later of
/// the FCU and the reorg, until the next VALID FCU (or `now`).
fn stale_holds(w: &World, calls: &[CallRecord], now: Instant) -> Vec<StaleHold> {
    let valid: Vec<(Instant, &ForkchoiceState)> = calls
        .iter()
        .filter_map(|c| {
            let f = c.fcu.as_ref().filter(|f| f.reply == FcuReply::Valid)?;
            Some((Instant::from_std(c.at), &f.state))
        })
        .collect();
    let mut out = Vec::new();
    for (k, (at, st)) in valid.iter().enumerate() {
        let until = valid.get(k + 1).map_or(now, |(next, _)| *next);
        for (label, hash) in [("safe", st.safe_block_hash), ("finalized", st.finalized_block_hash)]
        {
            let Some(b) = w.sim.block(&hash) else { continue };
            let Some(gone) = w.orphaned_l1.get(&b.l1origin.hash) else { continue };
            let from = (*at).max(*gone);
            if until > from {
                out.push(StaleHold {
                    label,
                    number: b.number,
                    origin: b.l1origin.number,
                    held: until - from,
                });
            }
        }
    }
    out
}

async fn drive(cfg: DevnetConfig, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(cfg.block_time);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = step(&cfg, &shared, &mut n).await {
            let mut w = shared.world();
            w.errors.push(e.to_string());
            tracing::warn!(error = %e, "devnet step failed");
        }
    }
}

async fn step(cfg: &DevnetConfig, shared: &Shared, n: &mut u64) -> Result<(), DevnetError> {
    let control = shared.world().control.clone();
    let stale = control.stale_until.is_some_and(|t| Instant::now() < t);
    if !control.paused && !stale {
        *n += 1;
        if (*n).is_multiple_of(u64::from(cfg.l2_per_l1.max(1))) {
            shared.l1.mine().await?;
        }
    }
    // The source reads L1 (unless it is still on its stale view after a reorg).
    let fetched = if stale {
        None
    } else {
        let known = shared.world().sim.l1_head().number;
        let from = control.resync_from.map_or(known + 1, |r| r.min(known + 1));
        let head = shared.l1.head().await?;
        Some(shared.l1.range(from, head.number).await?)
    };
    let mut w = shared.world();
    let mut new_blocks: Vec<L2BlockRef> = Vec::new();
    if let Some(blocks) = fetched {
        let update = w.sim.observe_l1(&blocks)?;
        new_blocks.extend(update.rederived);
        let now = Instant::now();
        for b in update.orphaned_l1 {
            w.orphaned_l1.entry(b.hash).or_insert(now);
        }
        w.control.stale_until = None;
        w.control.resync_from = None;
    }
    if !control.paused && !stale {
        new_blocks.push(w.sim.produce());
        w.ticks += 1;
    }
    for el in &shared.els {
        el.add_network_blocks(new_blocks.iter().copied());
    }
    for (i, source) in shared.sources.iter().enumerate() {
        w.serve(i, source, stale);
    }
    Ok(())
}

/// Watches targets (as stored in the targets stream, [`observe_targets`]) and rejections (a
/// core subscription) on the bus; reconnects by itself.
async fn observe(url: String, chain_id: u64, shared: Arc<Shared>, cancel: CancellationToken) {
    let client = loop {
        let opts = async_nats::ConnectOptions::new().retry_on_initial_connect();
        tokio::select! {
            () = cancel.cancelled() => return,
            // Every server of a cluster (async-nats parses a `str` as one URL only).
            c = opts.connect(url.split(',').map(str::trim).collect::<Vec<_>>()) => match c {
                Ok(c) => break c,
                Err(e) => {
                    tracing::warn!(error = %e, "devnet observer cannot connect to NATS");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let Ok(mut rejected) = client.subscribe(lightcl_bus::subjects::rejected(chain_id)).await else {
        shared.world().errors.push("observer: cannot subscribe".into());
        return;
    };
    let targets = tokio::spawn(observe_targets(
        async_nats::jetstream::new(client.clone()),
        chain_id,
        shared.clone(),
        cancel.clone(),
    ));
    let _stop_targets = AbortOnDrop(targets);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            Some(m) = rejected.next() => {
                let seen = match v1::Rejection::decode(m.payload.as_ref()) {
                    Ok(r) => SeenRejection {
                        at: Instant::now(),
                        reason: v1::RejectionReason::try_from(r.reason)
                            .map_or_else(|_| format!("reason {}", r.reason), |x| x.as_str_name().to_owned()),
                        message: r.message.clone(),
                        safe_hash: r.status.as_ref()
                            .and_then(|s| s.safe_l2.as_ref())
                            .and_then(|b| B256::try_from(b.hash.as_slice()).ok()),
                    },
                    Err(e) => SeenRejection {
                        at: Instant::now(),
                        reason: "UNDECODABLE".into(),
                        message: e.to_string(),
                        safe_hash: None,
                    },
                };
                shared.world().rejections.push(seen);
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Records every target **stored** in the targets stream, in stream order. Not a core
/// subscription: a target whose compare-and-set publish lost against another validator
/// replica still reaches core subscribers, but never the stream nor the engine-drivers. An
/// ephemeral pull consumer with heartbeats; after an error (e.g. NATS restarted and forgot
/// it) it is re-created from the next stream sequence, so nothing stored is missed.
async fn observe_targets(
    js: async_nats::jetstream::Context,
    chain_id: u64,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    use async_nats::jetstream::consumer::{self, DeliverPolicy};
    let subject = lightcl_bus::subjects::target(chain_id);
    // The next stream sequence to record (0: none seen yet, start at the first).
    let mut next_seq: u64 = 0;
    loop {
        let open = async {
            let stream = js
                .get_stream(lightcl_bus::subjects::TARGETS_STREAM)
                .await
                .map_err(|e| e.to_string())?;
            let c: consumer::PullConsumer = stream
                .create_consumer(consumer::pull::Config {
                    filter_subject: subject.clone(),
                    deliver_policy: if next_seq == 0 {
                        DeliverPolicy::All
                    } else {
                        DeliverPolicy::ByStartSequence { start_sequence: next_seq }
                    },
                    ack_policy: consumer::AckPolicy::None,
                    memory_storage: true,
                    num_replicas: 1,
                    inactive_threshold: Duration::from_secs(10),
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            c.stream()
                .expires(Duration::from_secs(2))
                .heartbeat(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        // The stream exists once a validator created the topology.
        let mut messages = tokio::select! {
            () = cancel.cancelled() => return,
            m = open => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "devnet observer cannot read the targets yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        loop {
            let m = tokio::select! {
                () = cancel.cancelled() => return,
                m = messages.next() => m,
            };
            let msg = match m {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "devnet observer: targets consumer failed; re-creating");
                    break;
                }
                None => break,
            };
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            if seq != 0 && seq < next_seq {
                continue;
            }
            next_seq = seq + 1;
            if let Ok(t) = v1::Target::decode(msg.payload.as_ref())
                && let Some(seen) = seen_target(&t)
            {
                let mut w = shared.world();
                w.targets.push(seen);
                w.target_sources.push(t.source_ids);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn seen_target(t: &v1::Target) -> Option<SeenTarget> {
    use lightcl_proto::convert::req_l2;
    Some(SeenTarget {
        epoch: t.epoch,
        revision: t.revision,
        unsafe_l2: req_l2(&t.unsafe_l2, "unsafe_l2").ok()?,
        safe_l2: req_l2(&t.safe_l2, "safe_l2").ok()?,
        finalized_l2: req_l2(&t.finalized_l2, "finalized_l2").ok()?,
    })
}
