//! # lightcl-runtime
//!
//! What every lightcl service binary shares, so the three services behave the same way:
//!
//! - [`CommonArgs`]: the common flags (`--chain-id`, `--grpc.addr`, `--admin.addr`,
//!   `--grpc.token-file`, `--grpc.require-token-for-reads`, `--grpc.tls-cert/-key`,
//!   `--log.format`, `--shutdown-grace`) with `LIGHTCL_*` env twins;
//! - the exit-64 contract: [`parse_args_or_exit`] and [`exit_config_error`] print ONE line
//!   `error: <flag>: <reason>` and exit 64;
//! - the admin HTTP port ([`serve_admin`]): `/live` ([`Liveness`]), `/ready` ([`Readiness`]),
//!   `/metrics` (prometheus-client);
//! - the gRPC control port ([`serve_grpc`]): health SERVING only while ready, reflection, TLS,
//!   bearer-token [`Auth`] (mutations refused when no token is configured);
//! - [`watch_stream`] for `WatchStatus` (latest-wins, ends on shutdown);
//! - [`shutdown_on_signal`] and [`drain`] (bounded by `--shutdown-grace`);
//! - [`init_telemetry_or_exit`] (bad `RUST_LOG` exits 64 too);
//! - [`Backoff`] (exponential, full jitter) and [`now_ms`];
//! - [`mirror_connection`]: NATS connection state → readiness `nats` + a reconnect counter.
//!
//! A service's `main` typically looks like this:
//!
//! ```no_run
//! use std::sync::Arc;
//! use clap::Parser;
//! use lightcl_runtime::*;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     common: CommonArgs,
//! }
//!
//! #[tokio::main]
//! async fn main() -> eyre::Result<()> {
//!     let cli: Cli = parse_args_or_exit();
//!     let telemetry = init_telemetry_or_exit("poller", cli.common.log_format);
//!     let auth = cli.common.auth().unwrap_or_else(|e| exit_config_error(&e));
//!     let tls = cli.common.tls().unwrap_or_else(|e| exit_config_error(&e));
//!     let cancel = tokio_util::sync::CancellationToken::new();
//!     shutdown_on_signal(cancel.clone())?;
//!
//!     let readiness = Readiness::new(&["nats", "source"]);
//!     let liveness = Liveness::new();
//!     let registry = prometheus_client::registry::Registry::with_prefix("lightcl_poller");
//!     let admin = AdminState { readiness: readiness.clone(), liveness, registry: Arc::new(registry) };
//!     let (admin_addr, admin_task) =
//!         serve_admin(cli.common.admin_addr_or(ports::POLLER_ADMIN), admin, cancel.clone()).await?;
//!     // ... build the control service with `auth`, then serve_grpc(..) ...
//!     # let _ = (auth, tls, admin_addr);
//!     cancel.cancelled().await;
//!     drain(vec![admin_task], cli.common.shutdown_grace).await;
//!     telemetry.shutdown().await;
//!     Ok(())
//! }
//! ```

pub mod admin;
pub mod args;
pub mod backoff;
pub mod connection;
pub mod control;
pub mod exit;
pub mod grpc;
pub mod servers;
pub mod shutdown;
pub mod watch;

pub use admin::{AdminState, Liveness, LoopGuard, Readiness, serve_admin};
pub use args::{CommonArgs, ports};
pub use backoff::{Backoff, now_ms};
pub use connection::mirror_connection;
pub use control::PauseControl;
pub use exit::{
    ConfigError, ConfigFailure, EXIT_CONFIG, exit_config_error, init_telemetry_or_exit,
    parse_args_or_exit, parse_from_or_exit, service_main,
};
pub use grpc::{Auth, GrpcOptions, serve_grpc};
pub use servers::{RunError, Servers, ServiceSpec, StartError};
pub use shutdown::{drain, shutdown_on_signal};
pub use watch::{WatchStream, watch_stream, watch_stream_map};

use std::net::SocketAddr;

/// A server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("{flag}: cannot listen on {addr}: {source}")]
    Bind {
        /// The flag that configures this address.
        flag: &'static str,
        /// The requested address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS configuration was rejected.
    #[error("--grpc.tls-cert/--grpc.tls-key: invalid TLS configuration: {0}")]
    Tls(String),
    /// The reflection service could not be built.
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(String),
}

impl ServeError {
    /// As a [`ConfigError`] for [`exit_config_error`] (bind and TLS problems are configuration).
    pub fn to_config_error(&self) -> ConfigError {
        match self {
            Self::Bind { flag, addr, source } => {
                ConfigError::new(*flag, format!("cannot listen on {addr}: {source}"))
            }
            Self::Tls(e) => {
                ConfigError::new("--grpc.tls-cert", format!("invalid TLS configuration: {e}"))
            }
            Self::Reflection(e) => {
                ConfigError::new("<internal>", format!("gRPC reflection setup failed: {e}"))
            }
        }
    }
}
