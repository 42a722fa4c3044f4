//! # lightcl-engine-driver
//!
//! The sole forkchoice writer for one execution client (docs/architecture.md#engine-driver). It consumes validated
//! targets from `lightcl.target.<chain>` (newest first, coalesced: only the newest target is
//! kept while a forkchoice update is in flight), runs the pure planner of
//! [`lightcl_core::engine`] against the EL's Engine API (`engine_forkchoiceUpdatedV3`, null
//! attributes, fresh HS256 JWT per request), and publishes what the EL applied to KV
//! `lightcl-engine` under `<chain>.<node>`.
//!
//! Invariants: forkchoice updates are sent serially from this one loop; every update passed
//! the planner's checks (`finalized ≤ safe ≤ head`, finalized never lowered, never an INVALID
//! head, zero labels until the first VALID); an unreachable EL or NATS never ends the process
//! (retry with backoff, not ready); a misconfiguration (unreadable JWT secret, a JWT the EL
//! rejects, wrong chain, no FCU V3) stops it with exit status 64 and one line naming the flag.
//!
//! Also served: admin HTTP (`/live`, `/ready`, `/metrics` with `lightcl_engine_driver_*`),
//! the `EngineDriverControl` gRPC service, and optionally `optimism_syncStatus` on
//! `--rpc.addr`.

pub mod bus;
pub mod control;
pub mod driver;
pub mod el;
pub mod metrics;
pub mod rpc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgAction, Parser};
use lightcl_bus::NatsArgs;
use lightcl_core::engine::{Planner, PlannerConfig};
use lightcl_proto::v1::engine_driver_control_server::EngineDriverControlServer;
use lightcl_rpc::Endpoint;
use lightcl_runtime::args::parse_duration;
use lightcl_runtime::grpc::names;
use lightcl_runtime::{
    AdminState, Backoff, CommonArgs, ConfigError, Liveness, Readiness, Servers, ServiceSpec, ports,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::bus::BusParts;
use crate::driver::{Driver, DriverParts, Identity};
use crate::el::{ElError, EngineClient};
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

/// Runs the engine-driver until `cancel` fires. `on_bound` is called once the servers listen.
pub async fn run(
    cfg: Config,
    cancel: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> Result<(), RunError> {
    let mut registry = prometheus_client::registry::Registry::with_prefix("lightcl_engine_driver");
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::new(&["nats", "el"]);
    let liveness = Liveness::new();
    let admin = AdminState {
        readiness: readiness.clone(),
        liveness: liveness.clone(),
        registry: Arc::new(registry),
    };

    let el =
        EngineClient::new(cfg.engine_rpc.clone(), cfg.jwt, cfg.fcu_timeout, Duration::from_secs(2))
            .map_err(|e| RunError::Config(ConfigError::new("--l2.engine-rpc", e.to_string())))?;

    let (targets_tx, targets_rx) = watch::channel(None);
    let (connected_tx, connected_rx) = watch::channel(false);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let id = Identity { chain_id: cfg.common.chain_id, node_id: cfg.node_id.clone() };
    let (driver, shared) = Driver::new(DriverParts {
        planner: Planner::new(cfg.planner),
        el: el.clone(),
        id: id.clone(),
        targets: targets_rx,
        commands: cmd_rx,
        nats_connected: connected_rx,
        metrics: metrics.clone(),
        readiness: readiness.clone(),
    });

    let auth = cfg.common.auth().map_err(RunError::Config)?;
    let control = control::Control::new(shared.status.clone(), cmd_tx, auth, cancel.clone());
    let routes = tonic::service::Routes::new(EngineDriverControlServer::new(control));
    let servers = Servers::start(
        &cfg.common,
        ServiceSpec {
            admin_port: ports::ENGINE_DRIVER_ADMIN,
            grpc_port: ports::ENGINE_DRIVER_GRPC,
            health_service: names::ENGINE_DRIVER_CONTROL,
        },
        admin,
        routes,
        &cancel,
    )
    .await?;
    let rpc = match cfg.rpc_addr {
        Some(addr) => Some(
            rpc::serve_sync_status(
                addr,
                el.clone(),
                shared.refs.clone(),
                shared.current_l1.clone(),
            )
            .await
            .map_err(|source| {
                RunError::Serve(lightcl_runtime::ServeError::Bind {
                    flag: "--rpc.addr",
                    addr,
                    source,
                })
            })?,
        ),
        None => None,
    };
    on_bound(Bound { admin: servers.admin, grpc: servers.grpc, rpc: rpc.as_ref().map(|r| r.0) });

    // The bus side starts at once: NATS may come up before or after the EL.
    let bus_task = tokio::spawn(bus::run(
        BusParts {
            nats: cfg.nats.clone(),
            chain_id: id.chain_id,
            node_id: id.node_id.clone(),
            targets: targets_tx,
            connected: connected_tx,
            status: shared.status.clone(),
            readiness: readiness.clone(),
            metrics: metrics.clone(),
        },
        cancel.clone(),
    ));

    let result = async {
        // Fail fast on a misconfigured EL; wait (not ready) while it is unreachable.
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            match el.check(id.chain_id).await {
                Ok(()) => break,
                Err(e) if e.severity() == lightcl_core::Severity::Fatal => {
                    return Err(RunError::Config(el_config_error(&e)));
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
        let _guard = liveness.register("driver");
        driver.run(cancel.clone()).await;
        liveness.shutting_down();
        Ok(())
    }
    .await;

    // Drain: stop everything, let the bus put the final state.
    cancel.cancel();
    liveness.shutting_down();
    let drain = async {
        let _ = bus_task.await;
        if let Some((_, h)) = rpc {
            let _ = h.stop();
        }
        servers.stopped().await;
    };
    if tokio::time::timeout(cfg.common.shutdown_grace, drain).await.is_err() {
        tracing::warn!(grace = ?cfg.common.shutdown_grace, "shutdown grace period over; exiting");
    }
    result
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

    #[test]
    fn an_unreadable_nats_token_file_is_a_config_error_naming_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let jwt = dir.path().join("jwt.hex");
        std::fs::write(&jwt, "ab".repeat(32)).unwrap();
        let empty = dir.path().join("token");
        std::fs::write(&empty, "\n").unwrap();
        let parse = |token: &std::path::Path| {
            Cli::try_parse_from([
                "lightcl-engine-driver",
                "--chain-id",
                "10",
                "--l2.engine-rpc",
                "http://127.0.0.1:8551",
                "--l2.jwt-secret",
                jwt.to_str().unwrap(),
                "--node-id",
                "el-0",
                "--nats.token-file",
                token.to_str().unwrap(),
            ])
            .unwrap()
            .into_config()
        };
        for bad in [empty.as_path(), &dir.path().join("missing")] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.flag, "--nats.token-file", "{e}");
        }
        std::fs::write(&empty, "s3cret\n").unwrap();
        assert!(parse(&empty).is_ok());
    }
}
