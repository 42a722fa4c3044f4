//! # lightcl-poller
//!
//! Polls `optimism_syncStatus` from one trusted external consensus node and publishes each raw
//! status to `lightcl.status.<chain>.<source>` (docs/architecture.md#poller). What is published when is decided
//! by [`lightcl_core::poll`]; this crate performs the I/O.
//!
//! Invariants:
//! - only a status that parsed with the core types is published; every failure (HTTP, timeout,
//!   JSON-RPC error, malformed or oversized answer) is counted by kind and backed off, never a
//!   crash and never a publish;
//! - polls are single-flight, never more than `--poll-interval` apart: on a fixed cadence (missed
//!   ticks are skipped, not bunched), or by default phase-locked to the chain's blocks
//!   (`--poll.phase-lock`, decided by [`lightcl_core::phase`]), falling back to the fixed
//!   cadence whenever the pattern breaks;
//! - the `Nats-Msg-Id` is a hash of chain, source, content and heartbeat slot, so replicas of
//!   one source and retries store one message, and a publish counts only once PubAcked;
//! - nothing is polled before the source proved it serves `--chain-id`
//!   (`optimism_rollupConfig`); a source serving another chain at start-up stops the poller
//!   (exit 64);
//! - while running, the chain is re-checked every `--source.chain-check-interval` and before the
//!   first publish after any failed poll; a source found serving another chain is refused
//!   (nothing published, not ready, `wrong_chain` gauge) until a re-check finds `--chain-id`
//!   again ([`lightcl_core::poll::ChainGuard`]).
//!
//! Also served, by [`lightcl_runtime::Shell`]: admin HTTP (`/live`, `/ready`, `/metrics` with
//! `lightcl_poller_*`) and the `PollerControl` gRPC service (status, watch, pause/resume).

pub mod control;
pub mod metrics;
pub mod service;
pub mod source;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgAction, Parser};
use lightcl_bus::{Bus, NatsArgs, Publisher, subjects};
use lightcl_proto::v1;
use lightcl_proto::v1::poller_control_server::PollerControlServer;
use lightcl_rpc::Endpoint;
use lightcl_runtime::args::parse_duration;
use lightcl_runtime::grpc::names;
use lightcl_runtime::{CommonArgs, ConfigError, Readiness, ServiceSpec, Shell, ports};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::service::{Parts, Service};
use crate::source::{Source, SourceError};

/// Command line of `lightcl-poller`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "lightcl-poller",
    version,
    about = "lightcl poller: polls optimism_syncStatus from a trusted consensus node and publishes raw statuses"
)]
pub struct Cli {
    /// Flags shared by every lightcl service.
    #[command(flatten)]
    pub common: CommonArgs,
    /// NATS flags.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The trusted consensus node's RPC (op-node / kona-node), http(s)://host:port.
    #[arg(long = "l2.follow.source", env = "LIGHTCL_L2_FOLLOW_SOURCE")]
    pub source: String,
    /// Source id in the subject; give every replica of one source the same id. Default: the
    /// source URL's host and port.
    #[arg(long = "source-id", env = "LIGHTCL_SOURCE_ID")]
    pub source_id: Option<String>,
    /// Time between poll starts (e.g. `2s`, `500ms`).
    #[arg(long = "poll-interval", env = "LIGHTCL_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Time polls to the chain's blocks: poll just after the next unsafe head is expected to be
    /// answerable (learned from the heads read), on the fixed --poll-interval cadence while
    /// learning and whenever the pattern breaks; `false`: always the fixed cadence.
    #[arg(long = "poll.phase-lock", env = "LIGHTCL_POLL_PHASE_LOCK", default_value_t = true, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub phase_lock: bool,
    /// Timeout of one optimism_syncStatus call.
    #[arg(long = "rpc-timeout", env = "LIGHTCL_RPC_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub rpc_timeout: Duration,
    /// Longest time between two publishes of an unchanged status.
    #[arg(long = "heartbeat", env = "LIGHTCL_HEARTBEAT", default_value = "10s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Cap of the exponential backoff after failed polls.
    #[arg(long = "max-backoff", env = "LIGHTCL_MAX_BACKOFF", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// Longest time between two checks that the source still serves --chain-id while polls
    /// succeed (it is also checked before the first publish after a failed poll).
    #[arg(
        long = "source.chain-check-interval",
        env = "LIGHTCL_SOURCE_CHAIN_CHECK_INTERVAL",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub chain_check_interval: Duration,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Shared flags.
    pub common: CommonArgs,
    /// NATS.
    pub nats: NatsArgs,
    /// Source endpoint (displays as `scheme://host:port`).
    pub source: Endpoint,
    /// Source id (a valid subject token).
    pub source_id: String,
    /// Poll cadence (the longest wait between two polls).
    pub poll_interval: Duration,
    /// Phase-locked polling on.
    pub phase_lock: bool,
    /// Per-call timeout.
    pub rpc_timeout: Duration,
    /// Heartbeat of an unchanged status.
    pub heartbeat: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Longest time between two chain checks while polls succeed.
    pub chain_check_interval: Duration,
}

impl Cli {
    /// Checks the flags; an error names the flag (exit 64).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.common.check()?;
        let source = Endpoint::parse("--l2.follow.source", &self.source)
            .map_err(|e| ConfigError::new(e.flag, e.reason))?;
        let source_id = match self.source_id {
            Some(id) => {
                subjects::check_token("source id", &id)
                    .map_err(|e| ConfigError::new("--source-id", e.to_string()))?;
                id
            }
            None => default_source_id(source.url()),
        };
        if self.poll_interval < Duration::from_millis(10) {
            return Err(ConfigError::new("--poll-interval", "must be at least 10ms"));
        }
        if self.rpc_timeout.is_zero() {
            return Err(ConfigError::new("--rpc-timeout", "must be above zero"));
        }
        if self.heartbeat < self.poll_interval {
            return Err(ConfigError::new(
                "--heartbeat",
                format!(
                    "must be at least --poll-interval ({})",
                    humantime::format_duration(self.poll_interval)
                ),
            ));
        }
        if self.max_backoff < self.poll_interval {
            return Err(ConfigError::new("--max-backoff", "must be at least --poll-interval"));
        }
        if self.chain_check_interval < self.poll_interval {
            return Err(ConfigError::new(
                "--source.chain-check-interval",
                format!(
                    "must be at least --poll-interval ({}); equal to it checks on every poll",
                    humantime::format_duration(self.poll_interval)
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
            source,
            source_id,
            poll_interval: self.poll_interval,
            phase_lock: self.phase_lock,
            rpc_timeout: self.rpc_timeout,
            heartbeat: self.heartbeat,
            max_backoff: self.max_backoff,
            chain_check_interval: self.chain_check_interval,
        })
    }
}

/// The default `--source-id`: `<host>_<port>` as a subject token.
pub fn default_source_id(url: &url::Url) -> String {
    let host = url.host_str().unwrap_or("source");
    let port = url.port_or_known_default().unwrap_or(0);
    subjects::sanitize_token(&format!("{host}_{port}"))
}

pub use lightcl_runtime::RunError;

/// Where the running poller listens (ports may have been 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Admin HTTP.
    pub admin: SocketAddr,
    /// gRPC control.
    pub grpc: SocketAddr,
}

/// The poller's ports and control service.
const SPEC: ServiceSpec = ServiceSpec {
    admin_port: ports::POLLER_ADMIN,
    grpc_port: ports::POLLER_GRPC,
    health_service: names::POLLER_CONTROL,
};

/// Runs the poller until `cancel` fires. `on_bound` is called once the servers listen.
///
/// The [`Shell`] runs the servers, the drain and the critical tasks `poller` (the poll loop)
/// and `nats-connection`; one of them ending before shutdown stops the poller with
/// [`RunError::TaskDied`] (exit 70).
pub async fn run(
    cfg: Config,
    cancel: CancellationToken,
    on_bound: impl FnOnce(Bound),
) -> Result<(), RunError> {
    let mut registry = prometheus_client::registry::Registry::with_prefix("lightcl_poller");
    let metrics = Metrics::new(&mut registry);
    let readiness = Readiness::new(&["nats", "source", "chain"]);

    let chain_id = cfg.common.chain_id;
    let source_url = cfg.source.redacted().to_owned();
    let (status_tx, status_rx) = watch::channel(v1::PollerStatus {
        chain_id,
        source_id: cfg.source_id.clone(),
        source_url: source_url.clone(),
        ..Default::default()
    });
    let (paused_tx, paused_rx) = watch::channel(false);
    let auth = cfg.common.auth()?;
    let control = control::Control::new(status_rx, paused_tx, auth, cancel.clone());
    let routes = tonic::service::Routes::new(PollerControlServer::new(control));
    let mut shell =
        Shell::start(&cfg.common, SPEC, registry, readiness.clone(), routes, cancel.clone())
            .await?;

    let bus = Bus::connect(&cfg.nats, "lightcl-poller").await.map_err(|e| {
        let (flag, reason) = e.flag_reason();
        ConfigError::new(flag, reason)
    })?;
    let source = Source::new(cfg.source.clone(), cfg.rpc_timeout)
        .map_err(|e| ConfigError::new("--l2.follow.source", e.to_string()))?;
    on_bound(Bound { admin: shell.addrs().admin, grpc: shell.addrs().grpc });

    shell.mirror_nats(bus.connected(), metrics.nats_reconnects.clone());
    let service = Service::new(Parts {
        chain_id,
        source_id: cfg.source_id.clone(),
        source_url,
        source,
        publisher: Publisher::new(bus.jetstream(), cfg.nats.publish_timeout),
        bus: bus.clone(),
        poll_interval: cfg.poll_interval,
        phase_lock: cfg.phase_lock,
        heartbeat: cfg.heartbeat,
        max_backoff: cfg.max_backoff,
        chain_check_interval: cfg.chain_check_interval,
        metrics,
        readiness,
        status: status_tx,
        paused: paused_rx,
    });
    shell.spawn_critical("poller", async move {
        service.run(cancel).await.map_err(|e| match e {
            SourceError::WrongChain { .. } => ConfigError::new("--chain-id", e.to_string()),
            other => ConfigError::new("--l2.follow.source", other.to_string()),
        })
    });
    // An abandoned poll is repeated under the same message id; flush what was published.
    shell.on_drain(async move { bus.flush(Duration::from_secs(1)).await });
    shell.run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["lightcl-poller", "--chain-id", "10"];
        v.extend_from_slice(args);
        Cli::try_parse_from(v).expect("clap").into_config()
    }

    #[test]
    fn defaults_and_source_id() {
        let c = parse(&["--l2.follow.source", "http://op-node.local:9545/"]).unwrap();
        assert_eq!(c.source_id, "op-node_local_9545");
        assert_eq!(c.poll_interval, Duration::from_secs(2));
        assert_eq!(c.rpc_timeout, Duration::from_secs(2));
        assert_eq!(c.heartbeat, Duration::from_secs(10));
        assert_eq!(c.chain_check_interval, Duration::from_secs(60));
        assert!(c.phase_lock, "phase-locked polling is on by default");
        let c =
            parse(&["--l2.follow.source", "https://x.example/v2/KEY", "--source-id", "primary"])
                .unwrap();
        assert_eq!(c.source_id, "primary");
        assert_eq!(c.source.to_string(), "https://x.example:443");
        assert!(!format!("{c:?}").contains("KEY"), "{c:?}");
    }

    #[test]
    fn bad_flags_are_named() {
        for (args, flag) in [
            (vec!["--l2.follow.source", "ws://x:1"], "--l2.follow.source"),
            (vec!["--l2.follow.source", "not a url"], "--l2.follow.source"),
            (vec!["--l2.follow.source", "http://x:1", "--source-id", "a.b"], "--source-id"),
            (vec!["--l2.follow.source", "http://x:1", "--poll-interval", "1ms"], "--poll-interval"),
            (vec!["--l2.follow.source", "http://x:1", "--heartbeat", "1s"], "--heartbeat"),
            (vec!["--l2.follow.source", "http://x:1", "--rpc-timeout", "0s"], "--rpc-timeout"),
            (
                vec!["--l2.follow.source", "http://x:1", "--source.chain-check-interval", "1s"],
                "--source.chain-check-interval",
            ),
        ] {
            let e = parse(&args).unwrap_err();
            assert_eq!(e.flag, flag, "{args:?}: {e}");
        }
    }

    #[test]
    fn phase_lock_can_be_turned_off() {
        let src = ["--l2.follow.source", "http://x:1"];
        for (flag, on) in [
            (&["--poll.phase-lock=false"][..], false),
            (&["--poll.phase-lock", "false"][..], false),
            (&["--poll.phase-lock"][..], true),
            (&["--poll.phase-lock=true"][..], true),
        ] {
            let c = parse(&[&src[..], flag].concat()).unwrap();
            assert_eq!(c.phase_lock, on, "{flag:?}");
        }
        let e = Cli::try_parse_from(["lightcl-poller", "--chain-id", "10", "--poll.phase-lock=no"]);
        assert!(e.is_err());
    }

    #[test]
    fn chain_check_interval_is_at_least_the_poll_interval() {
        let src = ["--l2.follow.source", "http://x:1"];
        let c = parse(&[src[0], src[1], "--source.chain-check-interval", "2s"]).unwrap();
        assert_eq!(c.chain_check_interval, Duration::from_secs(2));
        let e = parse(&[
            src[0],
            src[1],
            "--poll-interval",
            "5s",
            "--source.chain-check-interval",
            "4s",
        ])
        .unwrap_err();
        assert_eq!(e.flag, "--source.chain-check-interval");
        assert!(e.reason.contains("--poll-interval"), "{e}");
    }
}
