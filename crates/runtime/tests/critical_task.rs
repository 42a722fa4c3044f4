//! The critical-task contract on a real child process: a critical task that dies before
//! shutdown was requested makes the process exit 70 (`EXIT_TASK_DIED`) with the task named in
//! the log and in one `error:` line; a SIGTERM still exits 0. This test binary re-executes
//! itself with `LIGHTCL_RUNTIME_SHELL_CHILD` set; the child runs `service_main` over a `Shell`.

use std::process::Command;
use std::time::Duration;

use clap::Parser;
use lightcl_runtime::grpc::names;
use lightcl_runtime::{
    CommonArgs, EXIT_TASK_DIED, Readiness, RunError, ServiceSpec, Shell, ports, service_main,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

const CHILD: &str = "LIGHTCL_RUNTIME_SHELL_CHILD";

/// Panics, typed `()` (an async block ending in `panic!` would be typed `!`).
fn boom(msg: &str) {
    std::panic::panic_any(msg.to_owned())
}

/// The child's service: a well-behaved task plus whatever `mode` asks for.
async fn service(mode: String, cancel: CancellationToken) -> Result<(), RunError> {
    let cli = Cli::parse_from([
        "lightcl-test",
        "--chain-id",
        "1",
        "--grpc.addr",
        "127.0.0.1:0",
        "--admin.addr",
        "127.0.0.1:0",
        "--shutdown-grace",
        "2s",
    ]);
    let spec = ServiceSpec {
        admin_port: ports::POLLER_ADMIN,
        grpc_port: ports::POLLER_GRPC,
        health_service: names::POLLER_CONTROL,
    };
    let mut shell = Shell::start(
        &cli.common,
        spec,
        prometheus_client::registry::Registry::default(),
        Readiness::new(&[]),
        tonic::service::Routes::default(),
        cancel.clone(),
    )
    .await?;
    let steady = cancel.clone();
    shell.spawn_critical("steady-loop", async move { steady.cancelled().await });
    match mode.as_str() {
        "panic" => shell.spawn_critical("doomed-loop", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            boom("lost the plot");
        }),
        "return" => shell.spawn_critical("quitter-loop", async {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }),
        "sigterm" => {
            // A real SIGTERM through service_main's handlers.
            tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let pid = std::process::id().to_string();
                let _ = tokio::process::Command::new("kill").args(["-TERM", &pid]).status().await;
            });
        }
        other => panic!("unknown mode {other}"),
    }
    shell.run().await
}

/// Runs only inside the child.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(service_main("shell-test", lightcl_telemetry::LogFormat::Text, |c| {
        service(mode, c)
    }));
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(1)
        }
    }
}

fn run(mode: &str) -> (i32, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn a_panicking_critical_task_exits_70_naming_the_task() {
    let (code, stderr) = run("panic");
    assert_eq!(code, EXIT_TASK_DIED, "{stderr}");
    assert_ne!(code, 0);
    // The log line at error level names the task and the panic.
    assert!(
        stderr.lines().any(|l| l.contains("ERROR")
            && l.contains("doomed-loop")
            && l.contains("lost the plot")),
        "{stderr}"
    );
    assert_eq!(
        error_lines(&stderr),
        vec!["error: critical task `doomed-loop` panicked: lost the plot; the service stopped"],
        "{stderr}"
    );
    assert!(!stderr.contains("steady-loop"), "the healthy task is not blamed: {stderr}");
}

#[test]
fn a_critical_task_that_returns_early_exits_70_naming_the_task() {
    let (code, stderr) = run("return");
    assert_eq!(code, EXIT_TASK_DIED, "{stderr}");
    assert!(stderr.lines().any(|l| l.contains("ERROR") && l.contains("quitter-loop")), "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(
        error_lines(&stderr)[0].contains("`quitter-loop` returned before shutdown"),
        "{stderr}"
    );
}

#[test]
fn sigterm_still_exits_0() {
    let (code, stderr) = run("sigterm");
    assert_eq!(code, 0, "{stderr}");
    assert!(error_lines(&stderr).is_empty(), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
