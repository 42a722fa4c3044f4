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

/// Wait for `tasks` to finish (after the shutdown token fired), at most `grace`
/// (`--shutdown-grace`). Tasks still running afterwards are aborted. Returns true when every
/// task finished in time; panicked tasks are logged and count as finished.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let t = tokio::spawn(async {});
/// assert!(lightcl_runtime::drain(vec![t], Duration::from_secs(1)).await);
/// # }
/// ```
pub async fn drain<T: Send + 'static>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<T>>,
    grace: std::time::Duration,
) -> bool {
    let mut tasks: Vec<_> = tasks.into_iter().collect();
    let all = futures::future::join_all(tasks.iter_mut());
    match tokio::time::timeout(grace, all).await {
        Ok(results) => {
            for r in results {
                if let Err(e) = r
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "task panicked during shutdown");
                }
            }
            true
        }
        Err(_) => {
            let left = tasks.iter().filter(|t| !t.is_finished()).count();
            tracing::warn!(
                left,
                ?grace,
                "shutdown grace period exceeded; aborting remaining tasks"
            );
            for t in &tasks {
                t.abort();
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn drain_waits_then_aborts() {
        let quick = tokio::spawn(async { tokio::time::sleep(Duration::from_millis(10)).await });
        assert!(drain(vec![quick], Duration::from_secs(5)).await);

        let stuck = tokio::spawn(std::future::pending::<()>());
        let abort = stuck.abort_handle();
        let started = Instant::now();
        assert!(!drain(vec![stuck], Duration::from_millis(50)).await);
        assert!(started.elapsed() < Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !abort.is_finished() {
            assert!(Instant::now() < deadline, "stuck task was not aborted");
            tokio::task::yield_now().await;
        }
    }

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
