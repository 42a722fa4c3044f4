//! `lightcl-poller`: see the library crate for what it does.

use lightcl_poller::{Cli, RunError, run};
use lightcl_runtime::{
    EXIT_CONFIG, exit_config_error, init_telemetry_or_exit, parse_args_or_exit, shutdown_on_signal,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> eyre::Result<()> {
    let cli: Cli = parse_args_or_exit();
    let cfg = cli.into_config().unwrap_or_else(|e| exit_config_error(&e));
    let telemetry = init_telemetry_or_exit("poller", cfg.common.log_format);
    let cancel = CancellationToken::new();
    shutdown_on_signal(cancel.clone())?;
    let result = run(cfg, cancel, |_| {}).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => Ok(()),
        Err(RunError::Config(e)) => {
            eprintln!("{}", e.line());
            std::process::exit(EXIT_CONFIG);
        }
        Err(e) => Err(e.into()),
    }
}
