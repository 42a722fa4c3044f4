//! A private, real `nats-server` with JetStream: the one launcher of the tests, the devnet and
//! the bench.
//!
//! [`NatsServer::start`] runs the binary (`NATS_SERVER_BIN`, else `nats-server` on the PATH or in
//! the workspace's `.tools`) on OS-assigned loopback ports, found through the server's ports
//! file, and returns once its monitoring port answers `/healthz?js-enabled-only=true` with 200.
//! [`NatsOptions`] give it a store directory and a log file that outlive it, a client token, or
//! further configuration such as a `tls` block.
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
    /// A cluster did not become healthy in time.
    #[error("nats cluster not healthy within {waited:?}: {why}")]
    ClusterNotHealthy {
        /// How long.
        waited: Duration,
        /// The last problem seen.
        why: String,
    },
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
    /// Further server configuration in nats-server's config syntax (e.g. a `tls { ... }`
    /// block), written to a file passed with `-c`; the command-line settings (ports, listen
    /// address, JetStream, store, `--auth`) take precedence over it.
    pub extra_config: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            store_dir: None,
            log_file: None,
            auth_token: None,
            ready_timeout: READY_TIMEOUT,
            extra_config: None,
        }
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
    /// Further arguments (cluster members: `--name`, `--cluster`, `--routes`).
    extra_args: Vec<String>,
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
        Self::start_node(opts, (0, 0), Vec::new()).await
    }

    /// Starts a server on the given client and monitoring ports (0: OS-assigned) with further
    /// arguments and waits until it is healthy.
    async fn start_node(
        opts: NatsOptions,
        (port, monitor_port): (u16, u16),
        extra_args: Vec<String>,
    ) -> Result<Self, NatsServerError> {
        let dir = tempfile::tempdir()?;
        let mut server =
            Self { child: Mutex::new(None), port, monitor_port, opts, extra_args, dir };
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
        if let Some(config) = &self.opts.extra_config {
            let path = self.dir.path().join("nats.conf");
            std::fs::write(&path, config)?;
            cmd.arg("-c").arg(path);
        }
        cmd.args(&self.extra_args);
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

/// How to run a [`NatsCluster`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsClusterOptions {
    /// Number of servers (3 for R3 streams).
    pub size: usize,
    /// Stores (`<dir>/n<i>/store`) and logs (`<dir>/n<i>.log`) go here; `None`: a temporary
    /// directory removed on drop.
    pub dir: Option<PathBuf>,
    /// How long a start, a restart or [`NatsCluster::wait_healthy`] may take.
    pub ready_timeout: Duration,
}

impl Default for NatsClusterOptions {
    fn default() -> Self {
        Self { size: 3, dir: None, ready_timeout: READY_TIMEOUT }
    }
}

/// A private JetStream cluster of real `nats-server` processes (cluster `lightcl`, servers
/// `n0`, `n1`, ... on fixed loopback ports, each with its own store), fully routed.
///
/// [`NatsCluster::start`] returns once [`NatsCluster::wait_healthy`] holds: every server runs,
/// answers `/healthz` (JetStream current) with 200, routes to every other server (`/routez`) and
/// knows the JetStream meta leader (`/jsz`). [`NatsCluster::kill9`] makes a crash,
/// [`NatsCluster::restart`] brings a server back on the same ports with the same store (after a
/// SIGTERM if it still runs) and waits for the whole cluster to be healthy again;
/// [`NatsCluster::stream_leader`] names the server leading a stream.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    ready_timeout: Duration,
    _tmp: Option<tempfile::TempDir>,
}

/// Picks `n` distinct free loopback ports (bound together, then released).
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind(("127.0.0.1", 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect()
}

async fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let answer = http_get(addr, path).await;
    serde_json::from_str(&answer.ok_body()?).ok()
}

impl NatsCluster {
    /// Starts a 3-server cluster with [`NatsClusterOptions::default`].
    pub async fn start() -> Result<Self, NatsServerError> {
        Self::start_with(NatsClusterOptions::default()).await
    }

    /// Starts the servers side by side and waits until the cluster is healthy.
    pub async fn start_with(opts: NatsClusterOptions) -> Result<Self, NatsServerError> {
        let (tmp, dir) = match &opts.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        std::fs::create_dir_all(&dir)?;
        let n = opts.size.max(1);
        let ports = free_ports(3 * n)?;
        let route = |i: usize| format!("nats://127.0.0.1:{}", ports[2 * n + i]);
        let starts = (0..n).map(|i| {
            let node_dir = dir.join(format!("n{i}"));
            let node = NatsOptions {
                store_dir: Some(node_dir.join("store")),
                log_file: Some(dir.join(format!("n{i}.log"))),
                auth_token: None,
                ready_timeout: opts.ready_timeout,
                extra_config: None,
            };
            let routes: Vec<String> = (0..n).filter(|j| *j != i).map(route).collect();
            let mut args = vec![
                "--name".to_owned(),
                format!("n{i}"),
                "--cluster_name".to_owned(),
                "lightcl".to_owned(),
                "--cluster".to_owned(),
                route(i),
            ];
            if !routes.is_empty() {
                args.extend(["--routes".to_owned(), routes.join(",")]);
            }
            NatsServer::start_node(node, (ports[i], ports[n + i]), args)
        });
        let nodes = futures::future::try_join_all(starts).await?;
        let cluster = Self { nodes, ready_timeout: opts.ready_timeout, _tmp: tmp };
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    /// Number of servers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false (a cluster has at least one server).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every server's client URL, comma-joined (for `--nats.url`).
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }

    /// Server `i`.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// The server name of node `i` (`n<i>`).
    pub fn name(i: usize) -> String {
        format!("n{i}")
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.len()).find(|i| Self::name(*i) == name)
    }

    /// `kill -9` server `i` (its store stays).
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Brings server `i` back on the same ports with the same store (SIGTERM first, 5 s grace,
    /// if it still runs) and waits until the whole cluster is healthy.
    pub async fn restart(&mut self, i: usize) -> Result<(), NatsServerError> {
        self.nodes[i].terminate(Duration::from_secs(5)).await;
        self.nodes[i].start_again().await?;
        self.wait_healthy().await
    }

    /// Starts every stopped server again on its ports with its store (no-op for a running
    /// one); await them together (`try_join_all`: servers wait for each other's routes), then
    /// [`NatsCluster::wait_healthy`].
    pub fn start_all_again(
        &mut self,
    ) -> Vec<impl Future<Output = Result<(), NatsServerError>> + '_> {
        self.nodes.iter_mut().map(NatsServer::start_again).collect()
    }

    /// SIGTERM (then SIGKILL after `grace`) every server; stores stay.
    pub async fn terminate(&mut self, grace: Duration) {
        futures::future::join_all(self.nodes.iter_mut().map(|n| n.terminate(grace))).await;
    }

    /// Why server `i` is not healthy now (`None`: healthy).
    async fn node_problem(&self, i: usize) -> Option<String> {
        let node = &self.nodes[i];
        if !node.is_running() {
            return Some(format!("n{i} is not running"));
        }
        let addr = node.monitoring_addr();
        let health = http_get(addr, "/healthz").await;
        if health.status != 200 {
            return Some(format!("n{i} /healthz {}: {}", health.status, health.body.trim()));
        }
        let routez = get_json(addr, "/routez").await.unwrap_or_default();
        let mut remotes: Vec<&str> = routez["routes"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["remote_id"].as_str()).collect())
            .unwrap_or_default();
        remotes.sort_unstable();
        remotes.dedup();
        if remotes.len() + 1 < self.len() {
            return Some(format!("n{i} routes to {} of {} servers", remotes.len(), self.len() - 1));
        }
        let jsz = get_json(addr, "/jsz").await.unwrap_or_default();
        if jsz["meta_cluster"]["leader"].as_str().unwrap_or_default().is_empty() {
            return Some(format!("n{i} knows no JetStream meta leader"));
        }
        None
    }

    /// True when every server is healthy now (see [`NatsCluster::wait_healthy`]).
    pub async fn healthy(&self) -> bool {
        for i in 0..self.len() {
            if self.node_problem(i).await.is_some() {
                return false;
            }
        }
        true
    }

    /// Waits until every server runs, answers `/healthz` with 200 (JetStream current), routes
    /// to every other server and knows a JetStream meta leader; fails early if a server exits.
    pub async fn wait_healthy(&self) -> Result<(), NatsServerError> {
        let deadline = Deadline::after(self.ready_timeout);
        let last = Mutex::new(String::new());
        let res = wait::until_async(deadline, wait::POLL, || async {
            for i in 0..self.len() {
                if let Some(e) = self.nodes[i].exited() {
                    return Some(Err(e));
                }
                if let Some(p) = self.node_problem(i).await {
                    *last.lock().unwrap_or_else(PoisonError::into_inner) = p;
                    return None;
                }
            }
            Some(Ok(()))
        })
        .await;
        match res {
            Ok(r) => r,
            Err(_) => {
                let why = last.into_inner().unwrap_or_else(PoisonError::into_inner);
                Err(NatsServerError::ClusterNotHealthy { waited: self.ready_timeout, why })
            }
        }
    }

    /// The server currently leading `stream` (its node index), as reported by the first
    /// running server that knows it (`/jsz?streams=true`, `cluster.leader`).
    pub async fn stream_leader(&self, stream: &str) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let Some(jsz) = get_json(node.monitoring_addr(), "/jsz?streams=true").await else {
                continue;
            };
            let accounts = jsz["account_details"].as_array().cloned().unwrap_or_default();
            for acc in &accounts {
                for s in acc["stream_detail"].as_array().into_iter().flatten() {
                    if s["name"] == stream
                        && let Some(i) =
                            s["cluster"]["leader"].as_str().and_then(|l| self.index_of(l))
                    {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    /// The JetStream meta leader (its node index), as the first running server reports it.
    pub async fn meta_leader(&self) -> Option<usize> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let jsz = get_json(node.monitoring_addr(), "/jsz").await.unwrap_or_default();
            if let Some(i) = jsz["meta_cluster"]["leader"].as_str().and_then(|l| self.index_of(l)) {
                return Some(i);
            }
        }
        None
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
    async fn cluster_routes_elects_and_survives_a_restart() {
        let mut c = NatsCluster::start().await.unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.urls().split(',').count(), 3);
        assert!(c.healthy().await);
        let leader = c.meta_leader().await.expect("a meta leader");
        assert_eq!(c.stream_leader("NO_SUCH_STREAM").await, None);
        let port = c.node(leader).port();
        c.kill9(leader);
        assert!(!c.node(leader).is_running());
        c.restart(leader).await.unwrap();
        assert_eq!(c.node(leader).port(), port);
        assert!(c.healthy().await);
        assert!(c.meta_leader().await.is_some());
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
