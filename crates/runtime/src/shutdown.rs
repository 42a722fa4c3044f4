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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signal_cancels_the_token() {
        let cancel = CancellationToken::new();
        shutdown_on_signal(cancel.clone()).unwrap();
        // SIGINT to ourselves: tokio's handler replaces the default (terminate) action.
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled()).await.unwrap();
    }
}
