//! The exit-64 contract, checked on a real child process: this test binary re-executes itself
//! with `LIGHTCL_RUNTIME_EXIT_CHILD` set, and the child test parses bad arguments.

use std::process::Command;

use clap::Parser;
use lightcl_runtime::{CommonArgs, ConfigError, exit_config_error, parse_from_or_exit};

#[derive(Debug, Parser)]
#[command(name = "lightcl-test", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

const CHILD: &str = "LIGHTCL_RUNTIME_EXIT_CHILD";

/// Runs only inside the child: parses the args from the env var and exits.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    if mode == "telemetry" {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let _g =
                lightcl_runtime::init_telemetry_or_exit("t", lightcl_telemetry::LogFormat::Text);
        });
        std::process::exit(0);
    }
    if mode == "validation" {
        exit_config_error(&ConfigError::new("--grpc.token-file", "cannot read /x: No such file"));
    }
    let args: Vec<String> = std::iter::once("lightcl-test".to_owned())
        .chain(mode.split(' ').filter(|s| !s.is_empty()).map(str::to_owned))
        .collect();
    let _cli: Cli = parse_from_or_exit(args);
    std::process::exit(0);
}

fn run(mode: &str) -> (i32, String, String) {
    run_env(mode, &[])
}

fn run_env(mode: &str, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env_remove("LIGHTCL_CHAIN_ID")
        .env_remove("LIGHTCL_GRPC_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn bad_value_exits_64_with_one_line() {
    let (code, _, stderr) = run("--chain-id abc");
    assert_eq!(code, 64, "{stderr}");
    let lines = error_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: --chain-id: invalid value \"abc\""), "{stderr}");
}

#[test]
fn missing_required_exits_64() {
    let (code, _, stderr) = run("--grpc.addr 127.0.0.1:1");
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(error_lines(&stderr), vec!["error: --chain-id: required but not set"], "{stderr}");
}

#[test]
fn help_exits_0() {
    let (code, stdout, stderr) = run("--help");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("--grpc.token-file"), "{stdout}");
    assert!(stdout.contains("LIGHTCL_CHAIN_ID"), "{stdout}");
}

#[test]
fn validation_error_exits_64() {
    let (code, _, stderr) = run("validation");
    assert_eq!(code, 64);
    assert_eq!(
        error_lines(&stderr),
        vec!["error: --grpc.token-file: cannot read /x: No such file"],
        "{stderr}"
    );
}

#[test]
fn valid_args_exit_0() {
    let (code, _, stderr) = run("--chain-id 10");
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn env_twins_are_read_and_named_by_flag() {
    let (code, _, stderr) = run_env("", &[("LIGHTCL_CHAIN_ID", "10")]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = run_env("", &[("LIGHTCL_CHAIN_ID", "ten")]);
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(
        error_lines(&stderr)[0].starts_with("error: --chain-id: invalid value \"ten\""),
        "{stderr}"
    );
    let (code, _, stderr) = run_env("--chain-id 1", &[("LIGHTCL_GRPC_ADDR", "not-an-addr")]);
    assert_eq!(code, 64, "{stderr}");
    assert!(error_lines(&stderr)[0].starts_with("error: --grpc.addr: "), "{stderr}");
}

#[test]
fn bad_rust_log_exits_64() {
    let (code, _, stderr) = run_env("telemetry", &[("RUST_LOG", "info,foo=bogus-level")]);
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(error_lines(&stderr)[0].starts_with("error: RUST_LOG: "), "{stderr}");
    let (code, _, stderr) = run_env("telemetry", &[("RUST_LOG", "debug")]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn bad_otlp_settings_exit_64_naming_the_variable_and_no_secret() {
    let (code, _, stderr) = run_env(
        "telemetry",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ],
    );
    assert_eq!(code, 64, "{stderr}");
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
    assert!(
        error_lines(&stderr)[0].starts_with("error: OTEL_EXPORTER_OTLP_PROTOCOL: "),
        "{stderr}"
    );
    let (code, _, stderr) = run_env(
        "telemetry",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://u:hunter2pw@collector.example/v1/KEY123456")],
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(
        error_lines(&stderr)[0].starts_with("error: OTEL_EXPORTER_OTLP_ENDPOINT: "),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2pw") && !stderr.contains("KEY123456"), "{stderr}");
}
