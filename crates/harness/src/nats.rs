//! A private, real `nats-server` with JetStream: the one launcher of the tests, the devnet and
//! the bench.
//!
//! [`NatsServer::start`] runs the binary (`NATS_SERVER_BIN`, else `nats-server` on the PATH or in
//! the workspace's `.tools`) on OS-assigned loopback ports, found through the server's ports
//! file, and returns once its monitoring port answers `/healthz?js-enabled-only=true` with 200.
//! [`NatsOptions`] give it a store directory and a log file that outlive it, or a client token.
//! [`NatsServer::stop`] (SIGKILL) or [`NatsServer::terminate`] (SIGTERM) make an outage,
//! [`NatsServer::start_again`] brings it back on the same ports with the same store and
//! [`NatsServer::restart`] does both. The process runs in its own process group (a terminal's
//! Ctrl-C reaches only the program that started it) and is killed when the handle drops.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::get::http_get;
use crate::process;
use crate::wait::{self, Deadline};
use NatsServerError::NotReady;

/// The readiness check on the monitoring port.
pub const HEALTHZ: &str = "/healthz?js-enabled-only=true";

/// Failure to run the server.
#[derive(Debug, thiserror::Error)]
pub enum NatsServerError {
    /// The binary could not be started.
    #[error("cannot start {bin} (set NATS_SERVER_BIN): {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server exited before it was ready.
    #[error("nats-server exited with {status} before it was ready{}", log_hint(.log))]
    Exited {
        /// Its exit status.
        status: String,
        /// Its log file, if it has one.
        log: Option<PathBuf>,
    },
    /// The server did not come up in time.
    #[error("nats-server did not become ready within {0:?}")]
    NotReady(Duration),
    /// Filesystem trouble (store, ports file, log).
    #[error("nats-server store: {0}")]
    Io(#[from] std::io::Error),
}

fn log_hint(log: &Option<PathBuf>) -> String {
    log.as_ref().map(|l| format!("; see {}", l.display())).unwrap_or_default()
}

/// How to run the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// The JetStream store (`-sd`); `None`: inside a temporary directory removed on drop.
    pub store_dir: Option<PathBuf>,
    /// Append the server's stdout and stderr here; `None`: discarded.
    pub log_file: Option<PathBuf>,
    /// `--auth`: clients must present this token.
    pub auth_token: Option<String>,
    /// How long a start (or a start again) may take until `/healthz` answers 200.
    pub ready_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self { store_dir: None, log_file: None, auth_token: None, ready_timeout: READY_TIMEOUT }
    }
}

const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running private nats-server.
#[derive(Debug)]
pub struct NatsServer {
    child: Mutex<Option<Child>>,
    port: u16,
    monitor_port: u16,
    opts: NatsOptions,
    /// Ports files (and the default store).
    dir: tempfile::TempDir,
}

impl NatsServer {
    /// Starts a server with [`NatsOptions::default`] and waits until it is healthy.
    pub async fn start() -> Result<Self, NatsServerError> {
        Self::start_with(NatsOptions::default()).await
    }

    /// Starts a server on OS-assigned ports and waits until it is healthy.
    pub async fn start_with(opts: NatsOptions) -> Result<Self, NatsServerError> {
        let dir = tempfile::tempdir()?;
        let mut server = Self { child: Mutex::new(None), port: 0, monitor_port: 0, opts, dir };
        let deadline = Deadline::after(server.opts.ready_timeout);
        let pid = server.spawn()?;
        let ports_file = server.ports_dir().join(format!("nats-server_{pid}.ports"));
        let (port, monitor_port) = wait::until_async(deadline, wait::POLL, || {
            std::future::ready(match server.exited() {
                Some(e) => Some(Err(e)),
                None => read_ports(&ports_file).map(Ok),
            })
        })
        .await
        .map_err(|_| NotReady(server.opts.ready_timeout))??;
        server.port = port;
        server.monitor_port = monitor_port;
        server.wait_healthy(deadline).await?;
        Ok(server)
    }

    fn ports_dir(&self) -> PathBuf {
        self.dir.path().join("ports")
    }

    /// Spawns the binary on the known ports (OS-assigned before the first start); its pid.
    fn spawn(&self) -> Result<u32, NatsServerError> {
        let bin = process::nats_server_bin();
        std::fs::create_dir_all(self.ports_dir())?;
        let port_arg = |p: u16| if p == 0 { "-1".to_owned() } else { p.to_string() };
        let (stdout, stderr) = process::output_to(self.opts.log_file.as_deref())?;
        let mut cmd = Command::new(&bin);
        cmd.args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &port_arg(self.port), "-m", &port_arg(self.monitor_port)])
            .arg("-sd")
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(self.ports_dir());
        if let Some(token) = &self.opts.auth_token {
            cmd.args(["--auth", token]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| NatsServerError::Spawn { bin: bin.display().to_string(), source })?;
        let pid = child.id();
        if let Some(mut old) = self.child().replace(child) {
            process::kill(&mut old);
        }
        Ok(pid)
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error to report when the process has exited (or is not running) during a wait.
    fn exited(&self) -> Option<NatsServerError> {
        let status = match self.child().as_mut() {
            None => "no process".to_owned(),
            Some(c) => match c.try_wait() {
                Ok(None) => return None,
                Ok(Some(st)) => st.to_string(),
                Err(e) => format!("unknown ({e})"),
            },
        };
        Some(NatsServerError::Exited { status, log: self.opts.log_file.clone() })
    }

    /// Polls `/healthz` until 200, failing early if the process exits.
    async fn wait_healthy(&self, deadline: Deadline) -> Result<(), NatsServerError> {
        let monitor = self.monitoring_addr();
        wait::until_async(deadline, wait::POLL, || async move {
            if let Some(e) = self.exited() {
                return Some(Err(e));
            }
            (http_get(monitor, HEALTHZ).await.status == 200).then_some(Ok(()))
        })
        .await
        .map_err(|_| NotReady(self.opts.ready_timeout))?
    }

    /// True when `/healthz?js-enabled-only=true` answers 200 now.
    pub async fn healthy(&self) -> bool {
        http_get(self.monitoring_addr(), HEALTHZ).await.status == 200
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234` (no credentials).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring address (`/healthz`, `/jsz`).
    pub fn monitoring_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    /// The HTTP monitoring URL, e.g. `http://127.0.0.1:8222`.
    pub fn monitoring_url(&self) -> String {
        format!("http://{}", self.monitoring_addr())
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.opts.store_dir.clone().unwrap_or_else(|| self.dir.path().join("js"))
    }

    /// The log file, if the server has one.
    pub fn log_file(&self) -> Option<&Path> {
        self.opts.log_file.as_deref()
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child().as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the server (SIGKILL), keeping its store; clients see an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child().take() {
            process::kill(&mut c);
        }
    }

    /// Stops the server gracefully (SIGTERM, SIGKILL after `grace`), keeping its store; its exit
    /// status as text, `None` when it was not running.
    pub async fn terminate(&mut self, grace: Duration) -> Option<String> {
        let mut c = self.child().take()?;
        Some(process::terminate(&mut c, grace).await)
    }

    /// Starts a stopped server again on the same ports with the same store and waits until it
    /// is healthy; no-op while it runs. A port that lingers after the stop is retried until the
    /// ready timeout.
    pub async fn start_again(&mut self) -> Result<(), NatsServerError> {
        if self.is_running() {
            return Ok(());
        }
        let deadline = Deadline::after(self.opts.ready_timeout);
        let this = &*self;
        wait::until_async(deadline, Duration::from_millis(100), || async move {
            let attempt = match this.spawn() {
                Ok(_) => this.wait_healthy(deadline).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &attempt {
                tracing::debug!(error = %e, "nats-server start attempt failed");
                if let Some(mut c) = this.child().take() {
                    process::kill(&mut c);
                }
            }
            attempt
        })
        .await
        .map_err(|t| t.last_error.unwrap_or(NotReady(self.opts.ready_timeout)))
    }

    /// Stops (SIGKILL) and starts the server again on the same ports, keeping JetStream state.
    pub async fn restart(&mut self) -> Result<(), NatsServerError> {
        self.stop();
        self.start_again().await
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The client and monitoring ports from a ports file, once it is complete.
fn read_ports(path: &Path) -> Option<(u16, u16)> {
    let text = std::fs::read_to_string(path).ok()?;
    let v = serde_json::from_str::<serde_json::Value>(&text).ok()?;
    let port_of = |key: &str| {
        v[key][0].as_str().and_then(|u| u.rsplit(':').next()).and_then(|p| p.parse().ok())
    };
    Some((port_of("nats")?, port_of("monitoring")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connects(port: u16) -> bool {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn starts_restarts_on_the_same_port_and_stops() {
        let mut s = NatsServer::start().await.unwrap();
        let port = s.port();
        assert!(connects(port));
        assert!(s.healthy().await);
        s.restart().await.unwrap();
        assert_eq!(s.port(), port);
        assert!(connects(port));
        s.stop();
        assert!(!s.is_running());
        assert!(!connects(port));
        assert!(!s.healthy().await);
        s.start_again().await.unwrap();
        assert!(connects(port));
        assert!(s.healthy().await);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keeps_store_and_log_where_told_and_terminates_gracefully() {
        let dir = tempfile::tempdir().unwrap();
        let opts = NatsOptions {
            store_dir: Some(dir.path().join("store")),
            log_file: Some(dir.path().join("nats.log")),
            ..NatsOptions::default()
        };
        let mut s = NatsServer::start_with(opts).await.unwrap();
        assert_eq!(s.store_dir(), dir.path().join("store"));
        assert!(dir.path().join("store").join("jetstream").is_dir());
        let (port, monitor) = (s.port(), s.monitoring_addr());
        let status = s.terminate(Duration::from_secs(5)).await.expect("was running");
        assert!(!status.contains("killed after"), "{status}");
        assert!(!s.is_running());
        assert_eq!(s.terminate(Duration::from_secs(5)).await, None);
        s.start_again().await.unwrap();
        assert_eq!((s.port(), s.monitoring_addr()), (port, monitor));
        assert!(!std::fs::read_to_string(dir.path().join("nats.log")).unwrap().is_empty());
    }
}
