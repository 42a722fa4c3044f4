//! A private, real `nats-server` with JetStream for one test.
//!
//! Started on random loopback ports (discovered through the server's ports file) with its own
//! store directory; [`NatsServer::restart`] brings it back on the same port with the same
//! store, [`NatsServer::stop`] + [`NatsServer::start_again`] make an outage; dropped → killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// The server did not come up in time.
    #[error("nats-server did not become ready within {0:?}")]
    NotReady(Duration),
    /// Filesystem trouble.
    #[error("nats-server store: {0}")]
    Io(#[from] std::io::Error),
}

/// A running private nats-server.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
}

const READY_DEADLINE: Duration = Duration::from_secs(15);

fn binary() -> String {
    std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into())
}

impl NatsServer {
    /// Starts a server on random ports and waits until it accepts connections.
    pub fn start() -> Result<Self, NatsServerError> {
        let dir = tempfile::tempdir()?;
        let mut server = Self { child: None, port: 0, monitor_port: 0, dir };
        server.spawn(None)?;
        Ok(server)
    }

    fn spawn(&mut self, ports: Option<(u16, u16)>) -> Result<(), NatsServerError> {
        let bin = binary();
        let ports_dir = self.dir.path().join("ports");
        std::fs::create_dir_all(&ports_dir)?;
        let (p, m) = ports.map_or_else(
            || ("-1".to_owned(), "-1".to_owned()),
            |(p, m)| (p.to_string(), m.to_string()),
        );
        let child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &p, "-m", &m])
            .arg("-sd")
            .arg(self.dir.path().join("js"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| NatsServerError::Spawn { bin, source })?;
        let pid = child.id();
        self.child = Some(child);
        let (port, monitor_port) =
            wait_for_ports(&ports_dir.join(format!("nats-server_{pid}.ports")))?;
        self.port = port;
        self.monitor_port = monitor_port;
        wait_for_tcp(port)?;
        Ok(())
    }

    /// The client URL, e.g. `nats://127.0.0.1:41234`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring URL (`/healthz`, `/jsz`).
    pub fn monitoring_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Stops the server (SIGKILL), keeping its store; clients see an outage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a stopped server again on the same ports with the same store.
    pub fn start_again(&mut self) -> Result<(), NatsServerError> {
        if self.child.is_some() {
            return Ok(());
        }
        // The port may linger briefly after the kill: retry within the deadline.
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            match self.spawn(Some((self.port, self.monitor_port))) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "nats-server restart attempt failed");
                    self.stop();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stops and starts the server on the same port, keeping JetStream state.
    pub fn restart(&mut self) -> Result<(), NatsServerError> {
        self.stop();
        self.start_again()
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_for_ports(path: &Path) -> Result<(u16, u16), NatsServerError> {
    let deadline = Instant::now() + READY_DEADLINE;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let port_of = |key: &str| {
                v[key][0].as_str().and_then(|u| u.rsplit(':').next()).and_then(|p| p.parse().ok())
            };
            if let (Some(p), Some(m)) = (port_of("nats"), port_of("monitoring")) {
                return Ok((p, m));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(NatsServerError::NotReady(READY_DEADLINE))
}

fn wait_for_tcp(port: u16) -> Result<(), NatsServerError> {
    let deadline = Instant::now() + READY_DEADLINE;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(NatsServerError::NotReady(READY_DEADLINE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_restarts_on_the_same_port_and_stops() {
        let mut s = NatsServer::start().unwrap();
        let port = s.port();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        s.restart().unwrap();
        assert_eq!(s.port(), port);
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        s.stop();
        assert!(!s.is_running());
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
        s.start_again().unwrap();
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    }
}
