//! Turning SIGTERM/SIGINT into a cancellation.

use tokio_util::sync::CancellationToken;

/// Spawn a task that cancels `cancel` on the first SIGTERM or SIGINT (and logs which). Must be
/// called inside a tokio runtime. Fails only if the signal handlers cannot be installed.
pub fn shutdown_on_signal(cancel: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            () = cancel.cancelled() => return,
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested; draining");
        cancel.cancel();
    });
    Ok(())
}
