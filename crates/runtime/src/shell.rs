//! The one service shell (docs/architecture.md#lifecycle): what every service's `run()` shares,
//! so a service only writes what it builds and which tasks it runs.
//!
//! [`Shell::start`] serves admin HTTP (`/live`, `/ready`, `/metrics`) and the gRPC control port
//! ([`Servers`]). The service then hands the shell its long-running tasks with
//! [`Shell::spawn_critical`], its NATS connection state with [`Shell::mirror_nats`] and its
//! last words (a NATS flush, stopping an extra server) with [`Shell::on_drain`], and calls
//! [`Shell::run`]:
//!
//! - **supervision** — a critical task that ends (returns or panics) before shutdown was
//!   requested is logged at error level naming it, turns `/live` to 503, cancels the shutdown
//!   token (everything else stops) and makes `run` return [`RunError::TaskDied`]; the process
//!   then exits [`EXIT_TASK_DIED`](crate::EXIT_TASK_DIED) (70) from
//!   [`service_main`](crate::service_main), so the orchestrator restarts it. A task that
//!   returns an error returns it from `run` (a [`RunError::Config`] still exits 64);
//! - **bounded drain** — once the token fired (SIGTERM/SIGINT or a dead task), the critical
//!   tasks are awaited, then the drain steps in the order they were added, then the servers,
//!   all within `--shutdown-grace` ([`Shell::drain`]); whatever is left is aborted.
//!
//! ```no_run
//! # async fn f(common: lightcl_runtime::CommonArgs) -> Result<(), lightcl_runtime::RunError> {
//! use lightcl_runtime::{Readiness, ServiceSpec, Shell, ports};
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let spec = ServiceSpec {
//!     admin_port: ports::POLLER_ADMIN,
//!     grpc_port: ports::POLLER_GRPC,
//!     health_service: "lightcl.v1.PollerControl",
//! };
//! let registry = prometheus_client::registry::Registry::with_prefix("lightcl_poller");
//! let readiness = Readiness::new(&["nats", "source"]);
//! let routes = tonic::service::Routes::default();
//! let mut shell = Shell::start(&common, spec, registry, readiness, routes, cancel.clone()).await?;
//! println!("admin on {}", shell.addrs().admin);
//! let token = cancel.clone();
//! shell.spawn_critical("poller", async move { token.cancelled().await });
//! shell.on_drain(async { /* flush NATS */ });
//! shell.run().await
//! # }
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::admin::{AdminState, Liveness, Readiness};
use crate::args::CommonArgs;
use crate::error::{RunError, TaskDied, TaskEnd};
use crate::servers::{Servers, ServiceSpec};

/// Name of the critical task [`Shell::mirror_nats`] runs.
pub const NATS_TASK: &str = "nats-connection";

/// What a critical task's future may return: `()` or `Result<(), E>` with `E: Into<RunError>`
/// (a [`ConfigError`](crate::ConfigError), a [`RunError`], ...).
pub trait TaskOutput: Send + 'static {
    /// As the task's result.
    fn into_result(self) -> Result<(), RunError>;
}

impl TaskOutput for () {
    fn into_result(self) -> Result<(), RunError> {
        Ok(())
    }
}

impl<E: Into<RunError> + Send + 'static> TaskOutput for Result<(), E> {
    fn into_result(self) -> Result<(), RunError> {
        self.map_err(Into::into)
    }
}

/// Where the shell's servers listen (ports may have been 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// Admin HTTP (`/live`, `/ready`, `/metrics`).
    pub admin: SocketAddr,
    /// gRPC control.
    pub grpc: SocketAddr,
}

/// A critical task's end, as its wrapper reports it.
#[derive(Debug)]
struct Ended {
    task: Arc<str>,
    outcome: Outcome,
    /// Shutdown had been requested when it ended.
    expected: bool,
}

#[derive(Debug)]
enum Outcome {
    Ok,
    Failed(RunError),
    Panicked(String),
}

impl Ended {
    /// The error this end makes the service stop with, if any.
    fn into_error(self) -> Option<RunError> {
        match self.outcome {
            Outcome::Ok if self.expected => None,
            Outcome::Ok => Some(RunError::TaskDied(TaskDied {
                task: self.task.to_string(),
                end: TaskEnd::Returned,
            })),
            Outcome::Failed(e) => Some(e),
            Outcome::Panicked(msg) => Some(RunError::TaskDied(TaskDied {
                task: self.task.to_string(),
                end: TaskEnd::Panicked(msg),
            })),
        }
    }
}

/// The running service shell: servers, supervised critical tasks and the drain. See the
/// [module docs](self). Dropping it without [`Shell::drain`] cancels the shutdown token, so
/// an early `?` in a service's `run` stops the servers too.
pub struct Shell {
    addrs: Addrs,
    cancel: CancellationToken,
    grace: Duration,
    readiness: Readiness,
    liveness: Liveness,
    servers: Option<Servers>,
    tasks: Vec<(Arc<str>, JoinHandle<()>)>,
    drain_steps: Vec<BoxFuture<'static, ()>>,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
}

impl fmt::Debug for Shell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shell")
            .field("addrs", &self.addrs)
            .field("grace", &self.grace)
            .field("tasks", &self.tasks.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("drain_steps", &self.drain_steps.len())
            .finish_non_exhaustive()
    }
}

impl Shell {
    /// Starts the admin server (`/ready` from `readiness`, `/live` from the critical tasks,
    /// `/metrics` from `registry`) and the gRPC server (`routes`, health following
    /// `readiness`) on `--admin.addr`/`--grpc.addr` or `spec`'s default ports. Both stop when
    /// `cancel` fires; the shell cancels `cancel` itself when a critical task dies and when it
    /// drains. `--shutdown-grace` is kept for [`Shell::run`].
    ///
    /// Errors: a bad `--grpc.tls-*` ([`RunError::Config`], exit 64) or an address that cannot
    /// be bound ([`RunError::Serve`]).
    pub async fn start(
        common: &CommonArgs,
        spec: ServiceSpec,
        registry: Registry,
        readiness: Readiness,
        routes: Routes,
        cancel: CancellationToken,
    ) -> Result<Self, RunError> {
        let liveness = Liveness::new();
        let admin = AdminState {
            readiness: readiness.clone(),
            liveness: liveness.clone(),
            registry: Arc::new(registry),
        };
        let servers = Servers::start(common, spec, admin, routes, &cancel).await?;
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Ok(Self {
            addrs: Addrs { admin: servers.admin, grpc: servers.grpc },
            cancel,
            grace: common.shutdown_grace,
            readiness,
            liveness,
            servers: Some(servers),
            tasks: Vec::new(),
            drain_steps: Vec::new(),
            ended_tx,
            ended_rx,
        })
    }

    /// Where the servers listen.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// The shutdown token (fires on SIGTERM/SIGINT, a dead critical task, or the drain).
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// The readiness conditions behind `/ready` and gRPC health.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// `--shutdown-grace`, the bound of [`Shell::run`]'s drain.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Spawns `task` as a critical task called `name` (shown in logs, `/live` and
    /// [`TaskDied`]). It must run until the shutdown token fires. If it returns or panics
    /// before that, the error is logged naming it, `/live` turns 503, the token is cancelled
    /// and [`Shell::wait`] / [`Shell::run`] return [`RunError::TaskDied`] (exit 70). A task
    /// returning `Err(e)` (at any time) makes them return `e`.
    pub fn spawn_critical<F>(&mut self, name: &str, task: F)
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let name: Arc<str> = Arc::from(name);
        let cancel = self.cancel.clone();
        let liveness = self.liveness.clone();
        let ended = self.ended_tx.clone();
        let task_name = name.clone();
        let handle = tokio::spawn(async move {
            let outcome = match AssertUnwindSafe(task).catch_unwind().await {
                Ok(out) => match out.into_result() {
                    Ok(()) => Outcome::Ok,
                    Err(e) => Outcome::Failed(e),
                },
                Err(panic) => Outcome::Panicked(panic_message(panic.as_ref())),
            };
            let expected = cancel.is_cancelled();
            let name = task_name;
            match (&outcome, expected) {
                (Outcome::Ok, true) => tracing::debug!(task = %name, "critical task stopped"),
                (Outcome::Ok, false) => tracing::error!(
                    task = %name,
                    "critical task `{name}` returned before shutdown was requested; stopping the service"
                ),
                (Outcome::Failed(e), _) => tracing::error!(
                    task = %name,
                    error = %e,
                    "critical task `{name}` failed; stopping the service"
                ),
                (Outcome::Panicked(msg), _) => tracing::error!(
                    task = %name,
                    panic = %msg,
                    "critical task `{name}` panicked; stopping the service"
                ),
            }
            if !expected {
                liveness.died(&name);
            }
            // Report before cancelling: whoever sees the token fire finds the report queued.
            let _ = ended.send(Ended { task: name, outcome, expected });
            cancel.cancel();
        });
        self.tasks.push((name, handle));
    }

    /// Mirrors the NATS connection flag `connected` (e.g. `lightcl_bus::Bus::connected`) into
    /// readiness `nats` and counts reconnects in `reconnects` (as
    /// the `nats` readiness mirror does), as the critical task
    /// [`NATS_TASK`]: if the connection's state channel closes while the service runs (the
    /// client is gone), the service stops.
    pub fn mirror_nats(&mut self, connected: watch::Receiver<bool>, reconnects: Counter) {
        let mirror = crate::connection::mirror(
            connected,
            self.readiness.clone(),
            reconnects,
            self.cancel.clone(),
        );
        self.spawn_critical(NATS_TASK, mirror);
    }

    /// Adds a drain step: `step` runs once the critical tasks have stopped, after the steps
    /// added before it and before the servers stop (e.g. `bus.flush(..)`, stopping an extra
    /// server). Steps share the drain's grace.
    pub fn on_drain<F>(&mut self, step: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.drain_steps.push(Box::pin(step));
    }

    /// Waits until shutdown is requested (`Ok`) or a critical task ends on its own or with an
    /// error (that error; the token is cancelled by then). Call [`Shell::drain`] afterwards.
    pub async fn wait(&mut self) -> Result<(), RunError> {
        loop {
            tokio::select! {
                biased;
                Some(ended) = self.ended_rx.recv() => {
                    if let Some(e) = ended.into_error() {
                        self.cancel.cancel();
                        return Err(e);
                    }
                }
                () = self.cancel.cancelled() => break,
            }
        }
        // A task may have ended just before the token fired (its report is queued first).
        while let Ok(ended) = self.ended_rx.try_recv() {
            if let Some(e) = ended.into_error() {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The bounded drain: cancels the token, then waits for the critical tasks, the drain
    /// steps (in order) and the servers, at most `grace`; what is still running then is
    /// aborted and a warning logged. Returns the error of a task that failed or panicked
    /// while draining (a task that simply stops is fine).
    pub async fn drain(mut self, grace: Duration) -> Result<(), RunError> {
        self.liveness.shutting_down();
        self.cancel.cancel();
        let tasks = std::mem::take(&mut self.tasks);
        let steps = std::mem::take(&mut self.drain_steps);
        let servers = self.servers.take();
        let handles: Vec<_> = tasks.iter().map(|(_, h)| h.abort_handle()).collect();
        let all = async move {
            for (_, handle) in tasks {
                let _ = handle.await;
            }
            for step in steps {
                step.await;
            }
            if let Some(servers) = servers {
                servers.stopped().await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(?grace, "shutdown grace period over; exiting");
            for h in handles {
                h.abort();
            }
        }
        let mut result = Ok(());
        while let Ok(ended) = self.ended_rx.try_recv() {
            if let Some(e) = ended.into_error()
                && result.is_ok()
            {
                result = Err(e);
            }
        }
        result
    }

    /// [`Shell::wait`], then [`Shell::drain`] within `--shutdown-grace`. `Ok` after a
    /// requested shutdown; otherwise the first error (a dead critical task:
    /// [`RunError::TaskDied`]).
    pub async fn run(mut self) -> Result<(), RunError> {
        let waited = self.wait().await;
        let grace = self.grace;
        let drained = self.drain(grace).await;
        waited.and(drained)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Not drained (an early return): stop the servers and tasks with the service.
        if self.servers.is_some() {
            self.liveness.shutting_down();
            self.cancel.cancel();
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use clap::Parser;

    use super::*;
    use crate::error::ConfigError;
    use crate::ports;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    fn common(grace: &str) -> CommonArgs {
        Cli::parse_from([
            "t",
            "--chain-id",
            "1",
            "--grpc.addr",
            "127.0.0.1:0",
            "--admin.addr",
            "127.0.0.1:0",
            "--shutdown-grace",
            grace,
        ])
        .common
    }

    async fn shell(cancel: &CancellationToken) -> Shell {
        let spec = ServiceSpec {
            admin_port: ports::POLLER_ADMIN,
            grpc_port: ports::POLLER_GRPC,
            health_service: crate::grpc::names::POLLER_CONTROL,
        };
        Shell::start(
            &common("2s"),
            spec,
            Registry::default(),
            Readiness::new(&["x"]),
            Routes::default(),
            cancel.clone(),
        )
        .await
        .expect("shell starts on loopback")
    }

    /// A well-behaved critical task: runs until the token fires.
    fn steady(cancel: &CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let c = cancel.clone();
        async move { c.cancelled().await }
    }

    /// Panics, typed `()` (an async block ending in `panic!` would be typed `!`).
    fn boom(msg: String) {
        std::panic::panic_any(msg)
    }

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f).await.expect("run ended in time")
    }

    #[tokio::test]
    async fn a_critical_task_that_returns_early_stops_the_service_naming_it() {
        let cancel = CancellationToken::new();
        let mut shell = shell(&cancel).await;
        let liveness = shell.liveness.clone();
        shell.spawn_critical("steady", steady(&cancel));
        shell.spawn_critical("early", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
        });
        let err = within(shell.run()).await.unwrap_err();
        match &err {
            RunError::TaskDied(d) => {
                assert_eq!(d.task, "early");
                assert_eq!(d.end, TaskEnd::Returned);
            }
            other => panic!("expected TaskDied, got {other:?}"),
        }
        assert!(err.to_string().contains("`early`"), "{err}");
        assert!(crate::ConfigFailure::task_died(&err).is_some());
        assert!(cancel.is_cancelled(), "the shell stopped everything else");
        assert_eq!(liveness.dead(), vec!["early".to_owned()], "only the culprit is dead");
    }

    #[tokio::test]
    async fn a_critical_task_that_panics_stops_the_service_naming_it() {
        let cancel = CancellationToken::new();
        let mut shell = shell(&cancel).await;
        shell.spawn_critical("steady", steady(&cancel));
        shell.spawn_critical("doomed", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            boom(format!("boom {}", 42));
        });
        match within(shell.run()).await {
            Err(RunError::TaskDied(d)) => {
                assert_eq!(d.task, "doomed");
                assert_eq!(d.end, TaskEnd::Panicked("boom 42".to_owned()));
                assert_eq!(
                    d.to_string(),
                    "critical task `doomed` panicked: boom 42; the service stopped"
                );
            }
            other => panic!("expected TaskDied, got {other:?}"),
        }
        assert!(cancel.is_cancelled());
    }

    #[tokio::test]
    async fn a_task_error_is_returned_as_is() {
        let cancel = CancellationToken::new();
        let mut shell = shell(&cancel).await;
        shell.spawn_critical("steady", steady(&cancel));
        shell.spawn_critical("checker", async {
            Err::<(), _>(ConfigError::new("--chain-id", "source serves chain 11"))
        });
        match within(shell.run()).await {
            Err(RunError::Config(c)) => assert_eq!(c.flag, "--chain-id"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn normal_shutdown_is_ok_and_drains_tasks_then_steps_then_servers() {
        let cancel = CancellationToken::new();
        let mut shell = shell(&cancel).await;
        let admin = shell.addrs().admin;
        let order = Arc::new(Mutex::new(Vec::new()));
        for name in ["a", "b"] {
            let (c, o) = (cancel.clone(), order.clone());
            shell.spawn_critical(name, async move {
                c.cancelled().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                o.lock().unwrap().push(format!("task {name}"));
                Ok::<(), RunError>(())
            });
        }
        for step in ["flush", "stop rpc"] {
            let o = order.clone();
            shell.on_drain(async move { o.lock().unwrap().push(step.to_owned()) });
        }
        let run = tokio::spawn(shell.run());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect(admin).await.is_ok(), "admin serves meanwhile");
        cancel.cancel();
        within(run).await.unwrap().expect("a requested shutdown is Ok");
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 4, "{order:?}");
        assert!(order[..2].iter().all(|s| s.starts_with("task ")), "{order:?}");
        assert_eq!(order[2..], ["flush".to_owned(), "stop rpc".to_owned()]);
        assert!(tokio::net::TcpStream::connect(admin).await.is_err(), "admin stopped");
    }

    #[tokio::test]
    async fn the_drain_is_bounded_by_the_grace() {
        let cancel = CancellationToken::new();
        let mut shell = shell(&cancel).await;
        let stuck = Arc::new(());
        let witness = Arc::downgrade(&stuck);
        shell.spawn_critical("stubborn", async move {
            let _keep = stuck;
            std::future::pending::<()>().await;
        });
        shell.on_drain(std::future::pending());
        cancel.cancel();
        let t = Instant::now();
        within(shell.wait()).await.expect("requested");
        // An explicit grace (run() would use --shutdown-grace, 2s here).
        within(shell.drain(Duration::from_millis(100))).await.expect("a slow drain is still Ok");
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(witness.upgrade().is_none(), "the stuck task was aborted");
    }

    #[tokio::test]
    async fn a_panic_while_draining_is_an_error() {
        let cancel = CancellationToken::new();
        let mut shell = shell(&cancel).await;
        let c = cancel.clone();
        shell.spawn_critical("sloppy", async move {
            c.cancelled().await;
            boom("on the way out".to_owned());
        });
        cancel.cancel();
        match within(shell.run()).await {
            Err(RunError::TaskDied(d)) => assert_eq!(d.task, "sloppy"),
            other => panic!("expected TaskDied, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_closed_nats_state_channel_stops_the_service() {
        let cancel = CancellationToken::new();
        let mut shell = shell(&cancel).await;
        let (tx, rx) = watch::channel(true);
        shell.mirror_nats(rx, Counter::default());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!cancel.is_cancelled());
        drop(tx);
        match within(shell.run()).await {
            Err(RunError::TaskDied(d)) => {
                assert_eq!((d.task.as_str(), d.end), (NATS_TASK, TaskEnd::Returned));
            }
            other => panic!("expected TaskDied, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_dropped_shell_stops_its_servers() {
        let cancel = CancellationToken::new();
        let shell = shell(&cancel).await;
        drop(shell);
        assert!(cancel.is_cancelled());
    }
}
