//! A service binary as a child process whose output is captured while it runs, so a test can
//! wait for a log line, check `/ready` (with [`crate::http_get`]), and read everything it printed
//! after SIGTERM.

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{process, wait};

/// The running binary with its stdout and stderr collected as they come; killed on drop.
pub struct CapturedProc {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

impl CapturedProc {
    /// Spawns `cmd` with stdout and stderr piped and collected.
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn the binary");
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout")),
            Box::new(child.stderr.take().expect("stderr")),
        ];
        for mut pipe in pipes {
            let out = out.clone();
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        Self { child, out, readers }
    }

    /// Everything printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits until one output line satisfies `pred`; that line.
    pub async fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        wait::until_async(timeout, wait::POLL, || {
            std::future::ready(self.output().lines().find(|l| pred(l)).map(str::to_owned))
        })
        .await
        .unwrap_or_else(|_| {
            panic!("no such log line within {timeout:?}; output:\n{}", self.output())
        })
    }

    /// SIGTERM, then the exit status (within `timeout`) and the whole output.
    pub async fn terminate(mut self, timeout: Duration) -> (ExitStatus, String) {
        assert!(process::sigterm(self.child.id()), "SIGTERM");
        let child = &mut self.child;
        let status = wait::until_async(timeout, wait::POLL, || {
            std::future::ready(child.try_wait().unwrap())
        })
        .await
        .unwrap_or_else(|_| panic!("no exit within {timeout:?} of SIGTERM"));
        // The pipes close with the process: the readers end.
        for r in std::mem::take(&mut self.readers) {
            r.join().expect("reader");
        }
        (status, self.output())
    }
}

impl Drop for CapturedProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address that was free a moment ago (for a child process to bind).
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
