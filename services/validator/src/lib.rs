//! # lightcl-validator
//!
//! Checks every raw status of `lightcl.status.<chain>.*` against our own L1 and publishes the
//! next validated [`lightcl_core::Target`] to `lightcl.target.<chain>`, or a typed rejection
//! to `lightcl.rejected.<chain>` (docs/architecture.md#validator). The decisions are the pure rules of
//! [`lightcl_core::validate`]; this crate performs their I/O.
//!
//! Invariants:
//! - nothing unchecked is ever published: an unreachable L1 is retried with backoff (not
//!   ready meanwhile) and, past `--l1.retry-budget`, the status is rejected as "L1
//!   unavailable";
//! - all L1 reads of one status are ONE JSON-RPC batch; only blocks at or below our L1's
//!   finalized block are cached;
//! - decisions are taken on the newest stored target: targets are stored with a CAS publish
//!   (expected last subject sequence) that proves it, any other verdict only after a re-read of
//!   the target stream; a restarted validator continues the revision sequence and two replicas
//!   never store two targets with the same revision;
//! - a status judged from its early (core-NATS) copy ([`lightcl_core::early`]) counts only when
//!   that stores its target; everything else is decided from the stream's delivery, in
//!   publication order, exactly as without the copy;
//! - the next target is newer than every position an engine-driver reports (KV
//!   `lightcl-engine`, followed with a watch): after a restore of an older backup of the
//!   targets it starts a new epoch that every driver takes;
//! - a status is acked only once its target or rejection is stored;
//! - every `--l1.watch-interval` our L1 is read at the newest target's safe and local-safe L1
//!   origins; when one was reorged out, a retreat to the newest earlier validated labels still
//!   canonical is published at once ([`lightcl_core::retreat`]; finalized never moves).
//!
//! Also served, by [`lightcl_runtime::Shell`]: admin HTTP (`/live`, `/ready`, `/metrics` with
//! `lightcl_validator_*`) and the `ValidatorControl` gRPC service (status, watch, pause/resume).

pub mod control;
pub mod drivers;
pub mod l1;
pub mod metrics;
pub mod service;
pub mod sources;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use lightcl_bus::{Bus, NatsArgs, Publisher};
use lightcl_core::quorum::{FailoverConfig, QuorumConfig};
use lightcl_core::validate::{Validator, ValidatorConfig};
use lightcl_proto::v1;
use lightcl_proto::v1::validator_control_server::ValidatorControlServer;
use lightcl_rpc::Endpoint;
use lightcl_runtime::args::parse_duration;
use lightcl_runtime::grpc::names;
use lightcl_runtime::{CommonArgs, ConfigError, Readiness, ServiceSpec, Shell, ports};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::l1::L1Reader;
use crate::metrics::Metrics;
use crate::service::{Parts, Service};
use crate::sources::Sources;

/// Command line of `lightcl-validator`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "lightcl-validator",
    version,
    about = "lightcl validator: checks raw statuses against our own L1 and publishes validated targets"
)]
pub struct Cli {
    /// Flags shared by every lightcl service.
    #[command(flatten)]
    pub common: CommonArgs,
    /// NATS flags.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Our L1 execution RPC (http(s)://host:port).
    #[arg(long = "l1.rpc", visible_alias = "l1-eth-rpc", env = "LIGHTCL_L1_RPC")]
    pub l1_rpc: String,
    /// With 2 or more: every label of a target must have been reported identically by this
    /// many distinct sources within --quorum.window. With 1 and several sources: follow one
    /// source, fail over when it stalls or is rejected repeatedly.
    #[arg(long = "quorum", env = "LIGHTCL_QUORUM", default_value_t = 1)]
    pub quorum: usize,
    /// How long a status counts as a vote (and how far back a starting validator reads).
    #[arg(long = "quorum.window", env = "LIGHTCL_QUORUM_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub quorum_window: Duration,
    /// Failover: a followed source whose head has not moved for this many block times (or
    /// that sent nothing for as long) is replaced.
    #[arg(
        long = "failover.stall-blocks",
        env = "LIGHTCL_FAILOVER_STALL_BLOCKS",
        default_value_t = 5
    )]
    pub failover_stall_blocks: u64,
    /// Failover: a followed source rejected this many times in a row is replaced.
    #[arg(
        long = "failover.max-rejections",
        env = "LIGHTCL_FAILOVER_MAX_REJECTIONS",
        default_value_t = 3
    )]
    pub failover_max_rejections: u32,
    /// Failover: a source switched away from is not followed again for this long while
    /// another source is healthy.
    #[arg(long = "failover.hold", env = "LIGHTCL_FAILOVER_HOLD", default_value = "60s", value_parser = parse_duration)]
    pub failover_hold: Duration,
    /// Timeout of one L1 batch request.
    #[arg(long = "l1-timeout", visible_alias = "l1.timeout", env = "LIGHTCL_L1_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub l1_timeout: Duration,
    /// How long one status may wait for an unreachable L1 before it is rejected as "L1
    /// unavailable" (it is never published unchecked).
    #[arg(long = "l1.retry-budget", env = "LIGHTCL_L1_RETRY_BUDGET", default_value = "20s", value_parser = parse_duration)]
    pub l1_retry_budget: Duration,
    /// How often the L1 watch reads our L1 at the newest target's safe and local-safe L1
    /// origins; when either was reorged out a retreat target is published at once
    /// (`0s`: no watch, a reorg is noticed with the next status).
    #[arg(long = "l1.watch-interval", env = "LIGHTCL_L1_WATCH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub l1_watch_interval: Duration,
    /// Judge a status from the copy NATS routes as it is published, a JetStream hop before
    /// the status stream delivers it (one source, --quorum 1, in publication order; the
    /// stream's delivery still acks it, and decides whatever the early copy did not settle).
    /// For a single validator replica: with several, a copy and its stream delivery may reach
    /// different replicas, which then judge the status twice (targets stay fenced by the CAS,
    /// but the second judgement costs an L1 read and may add a `behind` rejection). Needs
    /// subscribe permission on `lightcl.status.<chain>.*`.
    #[arg(long = "status.early-copies", env = "LIGHTCL_STATUS_EARLY_COPIES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub early_copies: bool,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared flags.
    pub common: CommonArgs,
    /// NATS.
    pub nats: NatsArgs,
    /// L1 endpoint (displays as `scheme://host:port`).
    pub l1_rpc: Endpoint,
    /// k of the k-of-n quorum, and its window.
    pub quorum: QuorumConfig,
    /// Failover between sources (k = 1).
    pub failover: FailoverConfig,
    /// L1 batch timeout.
    pub l1_timeout: Duration,
    /// L1 retry budget per status.
    pub l1_retry_budget: Duration,
    /// L1 watch period (`None`: off).
    pub l1_watch_interval: Option<Duration>,
    /// Early copies of statuses on (see [`Cli::early_copies`]).
    pub early_copies: bool,
}

impl Cli {
    /// Checks the flags; an error names the flag (exit 64).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.common.check()?;
        let l1_rpc = Endpoint::parse("--l1.rpc", &self.l1_rpc)
            .map_err(|e| ConfigError::new(e.flag, e.reason))?;
        if !(1..=16).contains(&self.quorum) {
            return Err(ConfigError::new("--quorum", "must be 1..=16"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(600)).contains(&self.quorum_window) {
            return Err(ConfigError::new("--quorum.window", "must be 1s..=10m"));
        }
        if !(1..=100).contains(&self.failover_stall_blocks) {
            return Err(ConfigError::new("--failover.stall-blocks", "must be 1..=100"));
        }
        if !(1..=1000).contains(&self.failover_max_rejections) {
            return Err(ConfigError::new("--failover.max-rejections", "must be 1..=1000"));
        }
        if self.l1_timeout.is_zero() {
            return Err(ConfigError::new("--l1-timeout", "must be above zero"));
        }
        let watch = self.l1_watch_interval;
        if !watch.is_zero()
            && !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&watch)
        {
            return Err(ConfigError::new("--l1.watch-interval", "must be 0s (off) or 100ms..=60s"));
        }
        self.nats.check().map_err(|e| {
            let (flag, reason) = e.flag_reason();
            ConfigError::new(flag, reason)
        })?;
        Ok(Config {
            common: self.common,
            nats: self.nats,
            l1_rpc,
            quorum: QuorumConfig {
                k: self.quorum,
                window_ms: millis(self.quorum_window),
                ..QuorumConfig::default()
            },
            failover: FailoverConfig {
                stall_blocks: self.failover_stall_blocks,
                max_rejections: self.failover_max_rejections,
                hold_ms: millis(self.failover_hold),
                ..FailoverConfig::default()
            },
            l1_timeout: self.l1_timeout,
            l1_retry_budget: self.l1_retry_budget,
            l1_watch_interval: (!watch.is_zero()).then_some(watch),
            early_copies: self.early_copies,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub use lightcl_runtime::RunError;

/// Where the running validator listens (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Admin HTTP.
    pub admin: SocketAddr,
    /// gRPC control.
    pub grpc: SocketAddr,
}

/// The validator's ports and control service.
const SPEC: ServiceSpec = ServiceSpec {
    admin_port: ports::VALIDATOR_ADMIN,
    grpc_port: ports::VALIDATOR_GRPC,
    health_service: names::VALIDATOR_CONTROL,
};

/// Runs the validator until `cancel` fires. `on_bound` is called once the servers listen.
///
/// The [`Shell`] runs the servers, the drain and the critical tasks `validator` (the
/// validation loop) and `nats-connection`; one of them ending before shutdown stops the
/// validator with [`RunError::TaskDied`] (exit 70).
pub async fn run(
    cfg: Config,
    cancel: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> Result<(), RunError> {
    let mut registry = prometheus_client::registry::Registry::with_prefix("lightcl_validator");
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::new(&["nats", "l1"]);

    let chain_id = cfg.common.chain_id;
    let (status_tx, status_rx) =
        watch::channel(v1::ValidatorStatus { chain_id, ..Default::default() });
    let (paused_tx, paused_rx) = watch::channel(false);
    let auth = cfg.common.auth()?;
    let control = control::Control::new(status_rx, paused_tx, auth, cancel.clone());
    let routes = tonic::service::Routes::new(ValidatorControlServer::new(control));
    let mut shell =
        Shell::start(&cfg.common, SPEC, registry, readiness.clone(), routes, cancel.clone())
            .await?;

    let bus = Bus::connect(&cfg.nats, "lightcl-validator").await.map_err(|e| {
        let (flag, reason) = e.flag_reason();
        ConfigError::new(flag, reason)
    })?;
    let l1 = L1Reader::new(cfg.l1_rpc.clone(), cfg.l1_timeout, metrics.clone())
        .map_err(|e| ConfigError::new("--l1.rpc", e.to_string()))?;
    on_bound(Bound { admin: shell.addrs().admin, grpc: shell.addrs().grpc });

    shell.mirror_nats(bus.connected(), metrics.nats_reconnects.clone());
    let service = Service::new(Parts {
        validator: Validator::new(ValidatorConfig { chain_id, quorum: cfg.quorum.k }, None),
        sources: Sources::new(cfg.quorum, cfg.failover),
        publisher: Publisher::new(bus.jetstream(), cfg.nats.publish_timeout),
        bus: bus.clone(),
        l1,
        l1_retry_budget: cfg.l1_retry_budget,
        l1_watch_interval: cfg.l1_watch_interval,
        durable: lightcl_bus::subjects::validator_durable(chain_id),
        ack_wait: Duration::from_secs(30),
        early_copies: cfg.early_copies && cfg.quorum.k == 1,
        metrics,
        readiness,
        status: status_tx,
        paused: paused_rx,
    });
    // The loop only returns on shutdown; anything else is a dead validator.
    shell.spawn_critical("validator", service.run(cancel));
    shell.on_drain(async move { bus.flush(Duration::from_secs(1)).await });
    shell.run().await
}
