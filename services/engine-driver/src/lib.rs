//! # lightcl-engine-driver
//!
//! The sole forkchoice writer for one execution client (docs/architecture.md#engine-driver). It consumes validated
//! targets from `lightcl.target.<chain>` (newest first, coalesced: only the newest target is
//! kept while a forkchoice update is in flight), runs the pure planner of
//! [`lightcl_core::engine`] against the EL's Engine API (`engine_forkchoiceUpdatedV3`, null
//! attributes, fresh HS256 JWT per request), and publishes what the EL applied to KV
//! `lightcl-engine` under `<chain>.<node>`.
//!
//! Invariants: forkchoice updates are sent serially from this one loop, and only while this
//! driver holds its EL's single-writer lease ([`lease`]: a compare-and-set key in the same
//! bucket, asked immediately before every update; a standby driver is not ready); every update
//! passed the planner's checks (`finalized ≤ safe ≤ head`, finalized never lowered, never an INVALID
//! head, zero labels until the first VALID); an unreachable EL or NATS never ends the process
//! (retry with backoff, not ready); a misconfiguration (unreadable JWT secret, a JWT the EL
//! rejects, wrong chain, no FCU V3) stops it with exit status 64 and one line naming the flag.
//!
//! Also served, by [`lightcl_runtime::Shell`]: admin HTTP (`/live`, `/ready`, `/metrics` with
//! `lightcl_engine_driver_*`) and the `EngineDriverControl` gRPC service; and optionally
//! `optimism_syncStatus` on `--rpc.addr`. The driver loop, the bus side and the lease are the
//! shell's critical tasks: one that ends before shutdown stops the process (exit 70).
//!
//! The bus side is `lightcl-bus`: [`lightcl_bus::LatestConsumer`] delivers the newest target,
//! [`lightcl_bus::EngineStates::publish_changes`] keeps this driver's KV key current; this
//! crate only wires them ([`follow_bus`]).

pub mod control;
pub mod driver;
pub mod el;
pub mod lease;
pub mod metrics;
pub mod rpc;
pub mod served;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser};
use lightcl_bus::{Bus, EngineStates, Latest, LatestConsumer, NatsArgs, subjects};
use lightcl_core::engine::{Planner, PlannerConfig};
use lightcl_core::lease::LeaseConfig;
use lightcl_proto::TargetUpdate;
use lightcl_proto::v1;
use lightcl_proto::v1::engine_driver_control_server::EngineDriverControlServer;
use lightcl_rpc::Endpoint;
use lightcl_runtime::args::parse_duration;
use lightcl_runtime::grpc::names;
use lightcl_runtime::{
    Backoff, CommonArgs, ConfigError, Readiness, ServeError, ServiceSpec, Shell, TaskOutput, ports,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::driver::{Driver, DriverParts, Identity};
use crate::el::{ElError, EngineClient};
use crate::lease::{LeaseIdentity, LeaseTask};
use crate::metrics::Metrics;

/// Command line of `lightcl-engine-driver`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "lightcl-engine-driver",
    version,
    about = "lightcl engine-driver: drives one execution client with forkchoice updates from validated targets"
)]
pub struct Cli {
    /// Flags shared by every lightcl service.
    #[command(flatten)]
    pub common: CommonArgs,

    /// NATS flags (as every service: secrets from files).
    #[command(flatten)]
    pub nats: NatsArgs,

    /// The EL's authenticated Engine API endpoint (http://host:8551).
    #[arg(long = "l2.engine-rpc", visible_alias = "l2", env = "LIGHTCL_L2_ENGINE_RPC")]
    pub engine_rpc: String,
    /// File with the EL's JWT secret: 64 hex chars, optional 0x, whitespace ignored.
    #[arg(long = "l2.jwt-secret", env = "LIGHTCL_L2_JWT_SECRET")]
    pub jwt_secret: PathBuf,
    /// This driver's id in the KV key `<chain>.<node>` (default: the hostname).
    #[arg(long = "node-id", env = "LIGHTCL_NODE_ID")]
    pub node_id: Option<String>,
    /// Head = the target's unsafe head (tip following); `false`: its local-safe head.
    #[arg(long = "follow-unsafe", env = "LIGHTCL_FOLLOW_UNSAFE", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub follow_unsafe: bool,
    /// Timeout of one forkchoice update.
    #[arg(long = "fcu-timeout", env = "LIGHTCL_FCU_TIMEOUT", default_value = "8s", value_parser = parse_duration)]
    pub fcu_timeout: Duration,
    /// Serve `optimism_syncStatus` JSON-RPC on this address (off by default).
    #[arg(long = "rpc.addr", env = "LIGHTCL_RPC_ADDR", value_name = "HOST:PORT")]
    pub rpc_addr: Option<SocketAddr>,
    /// Single-writer lease: a lease key left unrenewed this long is expired and a standby driver
    /// of the same EL takes over (at least 1s).
    #[arg(long = "lease.ttl", env = "LIGHTCL_LEASE_TTL", default_value = "6s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// How often the holder renews its lease; below half of --lease.ttl.
    #[arg(long = "lease.renew", env = "LIGHTCL_LEASE_RENEW", default_value = "1500ms", value_parser = parse_duration)]
    pub lease_renew: Duration,
    /// Shortest time between two writes of this driver's engine state to KV `lightcl-engine`
    /// (changes in between are coalesced into the next write; the final state is always
    /// written at shutdown). `0s`: every change.
    #[arg(long = "engine-state.min-interval", env = "LIGHTCL_ENGINE_STATE_MIN_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub state_min_interval: Duration,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared flags.
    pub common: CommonArgs,
    /// NATS.
    pub nats: NatsArgs,
    /// EL endpoint (displays as `scheme://host:port`).
    pub engine_rpc: Endpoint,
    /// JWT secret.
    pub jwt: alloy_rpc_types_engine::JwtSecret,
    /// Node id.
    pub node_id: String,
    /// Planner settings.
    pub planner: PlannerConfig,
    /// FCU timeout.
    pub fcu_timeout: Duration,
    /// `optimism_syncStatus` address.
    pub rpc_addr: Option<SocketAddr>,
    /// Lease timing (`--lease.ttl`, `--lease.renew`).
    pub lease: LeaseConfig,
    /// Shortest time between two engine-state writes.
    pub state_min_interval: Duration,
}

impl Cli {
    /// Checks the flags; an error names the flag (exit 64).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.common.chain_id == 0 {
            return Err(ConfigError::new("--chain-id", "must be a positive chain id"));
        }
        let engine_rpc = Endpoint::parse("--l2.engine-rpc", &self.engine_rpc)
            .map_err(|e| ConfigError::new(e.flag, e.reason))?;
        let jwt = lightcl_rpc::load_jwt_secret(&self.jwt_secret)
            .map_err(|e| ConfigError::new("--l2.jwt-secret", e.to_string()))?;
        let node_id = match self.node_id {
            Some(n) => n,
            None => hostname().ok_or_else(|| {
                ConfigError::new("--node-id", "not set and the hostname is unknown")
            })?,
        };
        if node_id.is_empty()
            || !node_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        {
            return Err(ConfigError::new(
                "--node-id",
                format!("{node_id:?} must be non-empty ASCII letters, digits, '-' or '_'"),
            ));
        }
        if self.fcu_timeout.is_zero() {
            return Err(ConfigError::new("--fcu-timeout", "must be above zero"));
        }
        if self.state_min_interval > Duration::from_secs(10) {
            return Err(ConfigError::new("--engine-state.min-interval", "must be at most 10s"));
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return Err(ConfigError::new("--lease.ttl", "must be at least 1s"));
        }
        if self.lease_renew < Duration::from_millis(50) || self.lease_renew * 2 >= self.lease_ttl {
            return Err(ConfigError::new(
                "--lease.renew",
                format!(
                    "must be at least 50ms and below half of --lease.ttl ({})",
                    humantime::format_duration(self.lease_ttl)
                ),
            ));
        }
        self.nats.check().map_err(|e| {
            let (flag, reason) = e.flag_reason();
            ConfigError::new(flag, reason)
        })?;
        Ok(Config {
            common: self.common,
            nats: self.nats,
            engine_rpc,
            jwt,
            node_id,
            planner: PlannerConfig {
                follow_unsafe: self.follow_unsafe,
                ..PlannerConfig::default()
            },
            fcu_timeout: self.fcu_timeout,
            rpc_addr: self.rpc_addr,
            lease: lease::lease_config(self.lease_ttl, self.lease_renew),
            state_min_interval: self.state_min_interval,
        })
    }
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().replace('.', "-"))
        .filter(|h| !h.is_empty())
}

pub use lightcl_runtime::RunError;

/// Where the running driver listens (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Admin HTTP.
    pub admin: SocketAddr,
    /// gRPC control.
    pub grpc: SocketAddr,
    /// `optimism_syncStatus`, when enabled.
    pub rpc: Option<SocketAddr>,
}

/// The engine-driver's ports and control service.
const SPEC: ServiceSpec = ServiceSpec {
    admin_port: ports::ENGINE_DRIVER_ADMIN,
    grpc_port: ports::ENGINE_DRIVER_GRPC,
    health_service: names::ENGINE_DRIVER_CONTROL,
};

/// Name of the critical task that checks the EL, then drives it (the driver loop).
pub const DRIVER_TASK: &str = "driver";

/// Name of the critical task that runs the bus side ([`follow_bus`]).
pub const BUS_TASK: &str = "bus";

/// Name of the critical task that holds (or waits for) the EL's lease ([`LeaseTask`]).
pub const LEASE_TASK: &str = "lease";

/// Runs the engine-driver until `cancel` fires. `on_bound` is called once the servers listen.
///
/// [`start`], then `on_bound`, then [`Started::run`]: the [`Shell`] runs the servers, the
/// drain and the critical tasks [`DRIVER_TASK`] (the EL check, then the driver loop),
/// [`BUS_TASK`] (targets in, engine state out), [`LEASE_TASK`] and `nats-connection`; one of
/// them ending
/// before shutdown stops the driver with [`RunError::TaskDied`] (exit 70). A misconfigured EL
/// (the fatal start-up check) stops it with [`RunError::Config`] naming the flag (exit 64).
pub async fn run(
    cfg: Config,
    cancel: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> Result<(), RunError> {
    let started = start(cfg, cancel).await?;
    on_bound(started.bound());
    started.run().await
}

/// A driver whose servers listen and whose critical tasks run, until [`Started::run`] waits
/// for the shutdown (or a dead task) and drains. Dropping it stops everything.
#[derive(Debug)]
pub struct Started {
    shell: Shell,
    bound: Bound,
}

impl Started {
    /// Where the servers listen.
    pub fn bound(&self) -> Bound {
        self.bound
    }

    /// Adds a critical task next to the driver's own (for an embedding program or a test;
    /// see [`Shell::spawn_critical`]): if it ends before shutdown, the driver stops.
    pub fn spawn_critical<F>(&mut self, name: &str, task: F)
    where
        F: std::future::Future + Send + 'static,
        F::Output: TaskOutput,
    {
        self.shell.spawn_critical(name, task);
    }

    /// Runs until shutdown is requested or a critical task ends, then drains within
    /// `--shutdown-grace`: the critical tasks first (the bus side puts the final engine state
    /// and flushes), then the `--rpc.addr` server, then the admin and gRPC servers.
    pub async fn run(self) -> Result<(), RunError> {
        self.shell.run().await
    }
}

/// Starts the engine-driver on its [`Shell`] (see [`run`]): checks what can be checked
/// without I/O (exit 64), starts the admin, gRPC and optional `--rpc.addr` servers and spawns
/// the critical tasks. NATS and the EL may be down: the tasks wait for them (not ready).
pub async fn start(cfg: Config, cancel: CancellationToken) -> Result<Started, RunError> {
    let mut registry = prometheus_client::registry::Registry::with_prefix("lightcl_engine_driver");
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::new(&["nats", "el", lease::READINESS]);

    let el =
        EngineClient::new(cfg.engine_rpc.clone(), cfg.jwt, cfg.fcu_timeout, Duration::from_secs(2))
            .map_err(|e| ConfigError::new("--l2.engine-rpc", e.to_string()))?;

    // Returns at once even when NATS is down (the client keeps reconnecting); only a bad NATS
    // flag fails, with exit 64.
    let bus = Bus::connect(&cfg.nats, "lightcl-engine-driver").await.map_err(|e| {
        let (flag, reason) = e.flag_reason();
        ConfigError::new(flag, reason)
    })?;

    let (targets_tx, targets_rx) = watch::channel(None);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let id = Identity { chain_id: cfg.common.chain_id, node_id: cfg.node_id.clone() };
    // The lease is the EL's, whoever drives it: its id comes from the EL's JWT secret.
    let (lease_task, fence, lease_view) = LeaseTask::new(
        bus.clone(),
        LeaseIdentity {
            chain_id: id.chain_id,
            node_id: id.node_id.clone(),
            el_id: lightcl_bus::el_lease_id(cfg.jwt.as_bytes()),
            me: lease::instance_id(&id.node_id),
        },
        cfg.lease,
        readiness.clone(),
        metrics.clone(),
    );
    let (driver, shared) = Driver::new(DriverParts {
        planner: Planner::new(cfg.planner),
        el: el.clone(),
        id: id.clone(),
        targets: targets_rx,
        commands: cmd_rx,
        nats_connected: bus.connected(),
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        fence,
        lease: lease_view,
    });

    let auth = cfg.common.auth()?;
    let control = control::Control::new(shared.status.clone(), cmd_tx, auth, cancel.clone());
    let routes = tonic::service::Routes::new(EngineDriverControlServer::new(control));
    let mut shell =
        Shell::start(&cfg.common, SPEC, registry, readiness.clone(), routes, cancel.clone())
            .await?;
    let rpc = match cfg.rpc_addr {
        Some(addr) => Some(
            rpc::serve_sync_status(addr, el.clone(), shared.served.clone())
                .await
                .map_err(|source| ServeError::Bind { flag: "--rpc.addr", addr, source })?,
        ),
        None => None,
    };
    let bound = Bound {
        admin: shell.addrs().admin,
        grpc: shell.addrs().grpc,
        rpc: rpc.as_ref().map(|r| r.0),
    };

    // The bus side starts at once: NATS may come up before or after the EL. Readiness `nats`
    // and `nats_reconnects_total` follow the connection as in every service.
    readiness.set("nats", *bus.connected().borrow());
    shell.mirror_nats(bus.connected(), metrics.nats_reconnects_total.clone());
    shell.spawn_critical(
        BUS_TASK,
        follow_bus(
            bus,
            id.chain_id,
            targets_tx,
            shared.status.clone(),
            shared.served.clone(),
            metrics,
            cfg.state_min_interval,
            cancel.clone(),
        ),
    );
    shell.spawn_critical(LEASE_TASK, lease_task.run(cancel.clone()));
    shell.spawn_critical(DRIVER_TASK, check_then_drive(el, id, driver, readiness, cancel));
    // After the critical tasks (the bus side has put the final engine state), before the
    // admin and gRPC servers.
    if let Some((_, handle)) = rpc {
        shell.on_drain(async move {
            if handle.stop().is_ok() {
                handle.stopped().await;
            }
        });
    }
    Ok(Started { shell, bound })
}

/// The [`DRIVER_TASK`]: fails fast on a misconfigured EL (a [`ConfigError`] naming the flag,
/// exit 64), waits (not ready) while it is unreachable, then runs the driver loop until
/// `cancel`.
async fn check_then_drive(
    el: EngineClient,
    id: Identity,
    driver: Driver,
    readiness: Readiness,
    cancel: CancellationToken,
) -> Result<(), ConfigError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        match el.check(id.chain_id).await {
            Ok(()) => break,
            Err(e) if e.severity() == lightcl_core::Severity::Fatal => {
                return Err(el_config_error(&e));
            }
            Err(e) => {
                readiness.set("el", false);
                tracing::warn!(error = %e, "execution client not ready; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
    readiness.set("el", true);
    tracing::info!(el = %el.endpoint(), chain_id = id.chain_id, node_id = %id.node_id, "execution client checked; driving");
    driver.run(cancel).await;
    Ok(())
}

/// The bus side until `cancel` (the critical task [`BUS_TASK`] of [`run`]): the newest target
/// of the chain into `targets` (undecodable ones counted in `bad_messages_total`), and the
/// driver's `EngineState` (the `state` of its status) into KV `lightcl-engine` under
/// `<chain>.<node>` (at most one write per `state_min_interval`, changes coalesced), once more
/// at shutdown; then a bounded flush. Does not return before
/// `cancel`: NATS may be down at start-up or go away later, it waits and retries.
///
/// Before its first put it reads that key back once and restores the served sync-status refs
/// it kept ([`served::restore`]); every put carries the served refs ([`served::Served::fill_state`]).
#[allow(clippy::too_many_arguments)]
pub async fn follow_bus(
    bus: Bus,
    chain_id: u64,
    targets: watch::Sender<Option<Latest<TargetUpdate>>>,
    status: watch::Receiver<v1::EngineDriverStatus>,
    served: served::Served,
    metrics: Metrics,
    state_min_interval: Duration,
    cancel: CancellationToken,
) {
    let bad = metrics.bad_messages_total.clone();
    let mut consumer = LatestConsumer::<TargetUpdate>::new(
        &bus,
        subjects::TARGETS_STREAM,
        subjects::target(chain_id),
    )
    .on_poisoned(move || {
        bad.inc();
    });
    let consume = async {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                t = consumer.next() => {
                    targets.send_replace(Some(t));
                }
            }
        }
    };
    let node_id = status.borrow().state.as_ref().map(|s| s.node_id.clone()).unwrap_or_default();
    let states = async {
        served::restore(&bus, chain_id, &node_id, &served, &cancel).await;
        EngineStates::publish_changes(
            &bus,
            status,
            |s: &v1::EngineDriverStatus| {
                let mut state = s.state.clone().unwrap_or_default();
                served.fill_state(&mut state);
                state
            },
            state_min_interval,
            &cancel,
        )
        .await;
    };
    tokio::join!(consume, states);
    bus.flush(Duration::from_secs(1)).await;
}

fn el_config_error(e: &ElError) -> ConfigError {
    let flag = match e {
        ElError::Unauthorized(_) => "--l2.jwt-secret",
        ElError::WrongChain { .. } => "--chain-id",
        _ => "--l2.engine-rpc",
    };
    ConfigError::new(flag, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration from the required flags (JWT file in `dir`) plus `extra`.
    fn config(dir: &std::path::Path, extra: &[&str]) -> Result<Config, ConfigError> {
        let jwt = dir.join("jwt.hex");
        std::fs::write(&jwt, "ab".repeat(32)).unwrap();
        let jwt = jwt.to_str().unwrap().to_owned();
        let mut args = vec![
            "lightcl-engine-driver",
            "--chain-id",
            "10",
            "--l2.engine-rpc",
            "http://127.0.0.1:8551",
            "--l2.jwt-secret",
            &jwt,
            "--node-id",
            "el-0",
        ];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args).unwrap().into_config()
    }

    #[test]
    fn an_unreadable_nats_token_file_is_a_config_error_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("token");
        std::fs::write(&empty, "\n").unwrap();
        let parse = |token: &std::path::Path| {
            config(dir.path(), &["--nats.token-file", token.to_str().unwrap()])
        };
        for bad in [empty.as_path(), &dir.path().join("missing")] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.flag, "--nats.token-file", "{e}");
        }
        std::fs::write(&empty, "s3cret\n").unwrap();
        assert!(parse(&empty).is_ok());
    }

    #[test]
    fn lease_and_engine_state_flags_are_checked_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let parse = |extra: &[&str]| config(dir.path(), extra);
        let cfg = parse(&[]).unwrap();
        assert_eq!(cfg.lease, LeaseConfig::default(), "6s / 1500ms / 1s margin");
        assert_eq!(cfg.state_min_interval, Duration::from_millis(500));
        let cfg = parse(&["--lease.ttl", "2s", "--lease.renew", "500ms"]).unwrap();
        assert_eq!((cfg.lease.ttl_ms, cfg.lease.renew_ms, cfg.lease.margin_ms), (2_000, 500, 500));
        let cfg = parse(&["--engine-state.min-interval", "0s"]).unwrap();
        assert_eq!(cfg.state_min_interval, Duration::ZERO);
        for (bad, flag) in [
            (&["--lease.ttl", "900ms"][..], "--lease.ttl"),
            (&["--lease.renew", "3s"][..], "--lease.renew"),
            (&["--lease.ttl", "2s", "--lease.renew", "1s"][..], "--lease.renew"),
            (&["--lease.renew", "10ms"][..], "--lease.renew"),
            (&["--engine-state.min-interval", "11s"][..], "--engine-state.min-interval"),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.flag, flag, "{bad:?}: {e}");
        }
        assert!(
            parse(&["--lease.renew", "3s"]).unwrap_err().reason.contains("half of --lease.ttl")
        );
    }
}
