//! `lightcl-validator`: see the library crate for what it does.

use lightcl_runtime::{exit_config_error, parse_args_or_exit, service_main};
use lightcl_validator::{Cli, run};

// One worker: the work is waiting on I/O; a second worker only adds cross-thread wake-ups
// (BENCHMARKS.md, CPU per target). Multi-thread flavour, so blocking sections can hand it off.
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> eyre::Result<()> {
    let cli: Cli = parse_args_or_exit();
    let cfg = cli.into_config().unwrap_or_else(|e| exit_config_error(&e));
    let log_format = cfg.common.log_format;
    service_main("validator", log_format, |cancel| run(cfg, cancel, |_| {})).await?;
    Ok(())
}
