//! Child processes: the three lightcl services (nats-server and anvil are
//! [`lightcl_harness`]'s launchers).
//!
//! Every child gets free loopback ports, writes its stdout/stderr to a log file in the devnet
//! directory, runs in its own process group (a terminal's Ctrl-C reaches only the devnet,
//! which then stops the children in order) and is SIGKILLed when its handle drops.
//! [`Proc::terminate`] sends SIGTERM and waits, [`Proc::kill9`] simulates a crash, and
//! [`Proc::restart`] starts the same command again (same ports, same store).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use lightcl_harness::wait;
use tokio::process::{Child, Command};

/// Errors starting or talking to a child process.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The binary could not be started.
    #[error("cannot start {name} ({bin}): {source}")]
    Spawn {
        /// Process name.
        name: String,
        /// Binary path.
        bin: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Creating a log file or a port failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The process exited before it became ready.
    #[error("{name} exited with {status} before it was ready; see {log}")]
    Exited {
        /// Process name.
        name: String,
        /// Exit status.
        status: String,
        /// Its log file.
        log: String,
    },
    /// The process did not become ready in time.
    #[error("{name} not ready after {waited:?}; see {log}")]
    NotReady {
        /// Process name.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// Its log file.
        log: String,
    },
}

/// A free loopback port (bound and released; a tiny race with other programs is accepted).
pub fn free_port() -> Result<u16, ProcError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|source| ProcError::Io { what: "allocating a port".into(), source })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| ProcError::Io { what: "allocating a port".into(), source })
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> Result<SocketAddr, ProcError> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// Whether a service's log has the line of a listen address that could not be bound because
/// it is in use (`--admin.addr: cannot listen on 127.0.0.1:9: Address already in use …`).
fn says_a_port_was_taken(log: &str) -> bool {
    log.lines().any(|l| l.contains("cannot listen on") && l.contains("in use"))
}

/// A child process that can be stopped, killed and started again with the same command.
#[derive(Debug)]
pub struct Proc {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Proc {
    /// Spawns `bin args` with extra `envs`, logging to `log` (appended).
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> Result<Self, ProcError> {
        let mut p = Self {
            name: name.to_owned(),
            bin: bin.to_owned(),
            args,
            envs,
            log,
            child: None,
            starts: 0,
        };
        p.start()?;
        Ok(p)
    }

    fn start(&mut self) -> Result<(), ProcError> {
        let io = |what: &str| {
            let what = format!("{what} {}", self.log.display());
            move |source| ProcError::Io { what, source }
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io("opening log"))?;
        let err = out.try_clone().map_err(io("opening log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| ProcError::Spawn {
            name: self.name.clone(),
            bin: self.bin.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// The process name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// How many times it was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// `Some(status)` once the process has exited, `None` while it runs (or was stopped).
    pub fn exit_status(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.exit_status().is_none()
    }

    /// Whether it exited because one of its listen addresses was taken: ports are picked free
    /// and then handed over, so another program (a parallel test) may bind one first, and such
    /// a process is worth starting again on new ports.
    pub fn lost_a_listen_port(&mut self) -> bool {
        !self.is_running()
            && std::fs::read_to_string(&self.log).is_ok_and(|l| says_a_port_was_taken(&l))
    }

    /// SIGKILL (a crash); waits until it is gone.
    pub async fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status text.
    pub async fn terminate(&mut self, grace: Duration) -> Option<String> {
        let mut c = self.child.take()?;
        if let Some(pid) = c.id() {
            // No libc (unsafe is forbidden): kill(1) does the SIGTERM.
            let _ = Command::new("kill")
                .args(["-s", "TERM", &pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        match tokio::time::timeout(grace, c.wait()).await {
            Ok(Ok(st)) => Some(st.to_string()),
            _ => {
                let _ = c.start_kill();
                c.wait().await.ok().map(|s| format!("{s} (killed after {grace:?})"))
            }
        }
    }

    /// Starts the same command again (after a kill or terminate); no-op while running.
    pub fn restart(&mut self) -> Result<(), ProcError> {
        if self.is_running() {
            return Ok(());
        }
        self.start()
    }

    /// Waits until `probe` answers true (polled every 50 ms), failing early if the process
    /// exits.
    pub async fn wait_until<F, Fut>(
        &mut self,
        timeout: Duration,
        mut probe: F,
    ) -> Result<(), ProcError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let waited = wait::until_async(timeout, Duration::from_millis(50), || {
            let exited = self.exit_status();
            let probed = probe();
            async move {
                match exited {
                    Some(status) => Some(Err(status)),
                    None => probed.await.then_some(Ok(())),
                }
            }
        })
        .await;
        let log = self.log.display().to_string();
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(ProcError::Exited { name: self.name.clone(), status, log }),
            Err(_) => Err(ProcError::NotReady { name: self.name.clone(), waited: timeout, log }),
        }
    }

    /// The last `n` lines of its log (for error reports), see [`tail_with_panics`].
    pub fn log_tail(&self, n: usize) -> String {
        tail_with_panics(&std::fs::read_to_string(&self.log).unwrap_or_default(), n)
    }
}

/// The last `n` lines of `text`, preceded by every earlier `panicked at` line and the line
/// after it, and every earlier `Error:` line (the error `main` returned) with the two after it
/// (a panic's or an error's message comes before its backtrace, which fills any short tail).
pub fn tail_with_panics(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let panics = lines[..start].iter().enumerate().flat_map(|(i, l)| {
        let keep = if l.contains("panicked at") {
            2
        } else if l.starts_with("Error:") {
            3
        } else {
            0
        };
        lines[i..(i + keep).min(start)].iter().copied()
    });
    panics.chain(lines[start..].iter().copied()).collect::<Vec<_>>().join("\n")
}

/// The directory holding the lightcl service binaries: `$LIGHTCL_BIN_DIR`, else the directory
/// of the running executable (or its parent, for test executables in `target/<profile>/deps`).
pub fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LIGHTCL_BIN_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.join("lightcl-poller").is_file() {
        return dir;
    }
    match dir.parent() {
        Some(p) if dir.file_name().is_some_and(|n| n == "deps") => p.to_path_buf(),
        _ => dir,
    }
}

#[cfg(test)]
mod tests {
    use super::{says_a_port_was_taken, tail_with_panics};

    #[test]
    fn a_taken_listen_port_is_recognised_and_nothing_else() {
        let taken = "Error: --grpc.addr: cannot listen on 127.0.0.1:4000: Address already in use (os error 98)";
        assert!(says_a_port_was_taken(&format!("started\n{taken}\n  0: frame")));
        // Another bind failure, or the words on different lines, is no lost port.
        assert!(!says_a_port_was_taken(
            "Error: --grpc.addr: cannot listen on 127.0.0.1:80: Permission denied (os error 13)"
        ));
        assert!(!says_a_port_was_taken("cannot listen on 127.0.0.1:1: refused\nkey in use"));
        assert!(!says_a_port_was_taken(""));
    }

    #[test]
    fn a_panic_message_survives_a_long_backtrace() {
        let mut log = vec!["started".to_owned(), "thread 'main' panicked at src/x.rs:1:2:".into()];
        log.push("boom: the message".into());
        log.extend((0..30).map(|i| format!("  {i}: frame")));
        let text = log.join("\n");
        let tail = tail_with_panics(&text, 3);
        assert_eq!(
            tail,
            "thread 'main' panicked at src/x.rs:1:2:\nboom: the message\n  27: frame\n  28: frame\n  29: frame"
        );
        // Without a panic it is the plain tail; a panic inside the tail is not repeated.
        assert_eq!(tail_with_panics("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_with_panics("a\nx panicked at y\nz", 2), "x panicked at y\nz");
    }

    #[test]
    fn the_error_main_returned_survives_a_long_backtrace() {
        let mut log = vec!["started".to_owned(), "Error: cannot reach NATS".into()];
        log.extend(["".into(), "Caused by: refused".into(), "x".into()]);
        log.extend((0..30).map(|i| format!("  {i}: frame")));
        let tail = tail_with_panics(&log.join("\n"), 2);
        assert_eq!(
            tail,
            "Error: cannot reach NATS\n\nCaused by: refused\n  28: frame\n  29: frame"
        );
    }
}
