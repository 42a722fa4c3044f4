//! Mirroring the NATS connection state into readiness and a reconnect counter.

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Readiness;

/// Until `cancel` fires, sets readiness condition `nats` from the connection flag `connected`
/// (e.g. `lightcl_bus::Bus::connected`), counts every reconnect after a loss in `reconnects`,
/// and logs losses and reconnects once each. Not spawned: the shell runs it as a critical task
/// ([`Shell::mirror_nats`](crate::Shell::mirror_nats)). Reads the state when called, not when
/// first polled, so no change is missed.
pub(crate) fn mirror(
    mut connected: watch::Receiver<bool>,
    readiness: Readiness,
    reconnects: Counter,
    cancel: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let mut was = *connected.borrow_and_update();
    let mut ever = was;
    async move {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                r = connected.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let now = *connected.borrow_and_update();
                    if now == was {
                        continue;
                    }
                    readiness.set("nats", now);
                    if now && ever {
                        reconnects.inc();
                        tracing::info!("NATS reconnected");
                    } else if !now {
                        tracing::warn!("NATS connection lost");
                    }
                    ever |= now;
                    was = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn counts_reconnects_not_the_first_connect() {
        let (tx, rx) = watch::channel(false);
        let readiness = Readiness::new(&["nats"]);
        let reconnects = Counter::default();
        let cancel = CancellationToken::new();
        let task = tokio::spawn(mirror(rx, readiness.clone(), reconnects.clone(), cancel.clone()));
        let wait = |want: bool| {
            let r = readiness.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while r.is_ready() != want {
                    assert!(tokio::time::Instant::now() < deadline, "readiness never {want}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        tx.send_replace(true);
        wait(true).await;
        assert_eq!(reconnects.get(), 0);
        tx.send_replace(false);
        wait(false).await;
        tx.send_replace(true);
        wait(true).await;
        assert_eq!(reconnects.get(), 1);
        cancel.cancel();
        task.await.unwrap();
    }
}
