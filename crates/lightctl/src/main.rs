//! `lightctl`: see the crate docs of `lightctl` and `lightctl --help`.

use lightcl_runtime::exit::{ClapOutcome, clap_outcome};
use lightctl::{Cli, exit_code};

fn main() {
    let cli = match <Cli as clap::Parser>::try_parse() {
        Ok(cli) => cli,
        Err(e) => match clap_outcome(&e) {
            ClapOutcome::Print => {
                let _ = e.print();
                std::process::exit(exit_code::OK)
            }
            ClapOutcome::Usage(err) => {
                eprintln!("{}", err.line());
                std::process::exit(exit_code::USAGE)
            }
        },
    };
    let runtime =
        match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                std::process::exit(exit_code::PARTIAL)
            }
        };
    let code = runtime.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        let on_signal = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        let mut out = std::io::stdout();
        let mut err = std::io::stderr();
        lightctl::run(cli, &mut out, &mut err, cancel).await
    });
    std::process::exit(code)
}
