//! # lightcl-runtime
//!
//! What every lightcl service binary shares, so the three services behave the same way:
//!
//! - [`CommonArgs`]: the common flags (`--chain-id`, `--grpc.addr`, `--admin.addr`,
//!   `--grpc.token-file`, `--grpc.auth-reads`, `--grpc.tls-cert/-key`,
//!   `--log.format`, `--shutdown-grace`) with `LIGHTCL_*` env twins;
//! - the exit-64 contract: [`parse_args_or_exit`] and [`exit_config_error`] print ONE line
//!   `error: <flag>: <reason>` and exit 64;
//! - the admin HTTP port ([`serve_admin`]): `/live` ([`Liveness`]), `/ready` ([`Readiness`]),
//!   `/metrics` (prometheus-client);
//! - the gRPC control port ([`serve_grpc`]): health SERVING only while ready, reflection, TLS,
//!   bearer-token [`Auth`] (mutations refused when no token is configured);
//! - [`watch_stream`] for `WatchStatus` (latest-wins, ends on shutdown);
//! - [`shutdown_on_signal`] (SIGTERM/SIGINT cancel the service token);
//! - [`init_telemetry_or_exit`] (bad `RUST_LOG` exits 64 too);
//! - [`Backoff`] (exponential, full jitter) and [`now_ms`];
//! - [`Shell`]: the one service shell that owns all of the above for a service's `run()` —
//!   servers, metrics, readiness/liveness, NATS mirroring, supervised critical tasks (one that
//!   dies stops the service: exit 70) and the bounded drain.
//!
//! A service's `main` and `run` typically look like this (the service keeps only its own
//! wiring: what it builds and which tasks it runs):
//!
//! ```no_run
//! use clap::Parser;
//! use lightcl_runtime::*;
//! use tokio_util::sync::CancellationToken;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     common: CommonArgs,
//! }
//!
//! async fn run(cli: Cli, cancel: CancellationToken) -> Result<(), RunError> {
//!     let registry = prometheus_client::registry::Registry::with_prefix("lightcl_poller");
//!     let readiness = Readiness::new(&["nats", "source"]);
//!     let _auth = cli.common.auth()?; // ... build the control service with it ...
//!     let routes = tonic::service::Routes::default();
//!     let spec = ServiceSpec {
//!         admin_port: ports::POLLER_ADMIN,
//!         grpc_port: ports::POLLER_GRPC,
//!         health_service: grpc::names::POLLER_CONTROL,
//!     };
//!     let mut shell =
//!         Shell::start(&cli.common, spec, registry, readiness, routes, cancel.clone()).await?;
//!     // shell.mirror_nats(bus.connected(), reconnects); shell.on_drain(bus.flush(..));
//!     shell.spawn_critical("poller", async move { cancel.cancelled().await });
//!     shell.run().await // until SIGTERM (then drain within --shutdown-grace) or a task dies
//! }
//!
//! #[tokio::main]
//! async fn main() -> eyre::Result<()> {
//!     let cli: Cli = parse_args_or_exit();
//!     let log_format = cli.common.log_format;
//!     // exit 64 for a configuration error, 70 for a dead critical task
//!     service_main("poller", log_format, |cancel| run(cli, cancel)).await?;
//!     Ok(())
//! }
//! ```

pub mod admin;
pub mod args;
pub mod backoff;
pub mod connection;
pub mod control;
pub mod error;
pub mod exit;
pub mod grpc;
pub mod servers;
pub mod shell;
pub mod shutdown;
pub mod watch;

pub use admin::{AdminState, Liveness, Readiness, serve_admin};
pub use args::{CommonArgs, ports};
pub use backoff::{Backoff, now_ms};
pub use control::PauseControl;
pub use error::{ConfigError, RunError, ServeError, StartError, TaskDied, TaskEnd};
pub use exit::{
    ConfigFailure, EXIT_CONFIG, EXIT_SIGNALS, EXIT_TASK_DIED, exit_config_error,
    init_telemetry_or_exit, parse_args_or_exit, parse_from_or_exit, service_main,
};
pub use grpc::{Auth, GrpcLimits, GrpcOptions, serve_grpc};
pub use servers::{Servers, ServiceSpec};
pub use shell::{Addrs, Shell, TaskOutput};
pub use shutdown::shutdown_on_signal;
pub use watch::{WatchStream, watch_stream, watch_stream_map};
