//! Server streams for `WatchStatus`: the current value, then every change, latest-wins.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Status;

/// The boxed stream type to use as a tonic `WatchStatusStream` associated type.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Stream the current value of `rx` and then every change. A slow client only ever sees the
/// latest value (intermediate values are skipped, nothing queues up). Ends cleanly when `cancel`
/// fires (shutdown) or the sender is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use futures::StreamExt;
/// let (tx, rx) = tokio::sync::watch::channel(1u32);
/// let cancel = tokio_util::sync::CancellationToken::new();
/// let mut s = lightcl_runtime::watch_stream(rx, cancel.clone());
/// assert_eq!(s.next().await.unwrap().unwrap(), 1);
/// tx.send(2).unwrap();
/// assert_eq!(s.next().await.unwrap().unwrap(), 2);
/// cancel.cancel();
/// assert!(s.next().await.is_none());
/// # }
/// ```
pub fn watch_stream<T>(rx: watch::Receiver<T>, cancel: CancellationToken) -> WatchStream<T>
where
    T: Clone + Send + Sync + 'static,
{
    watch_stream_map(rx, cancel, T::clone)
}

/// [`watch_stream`] converting each value with `f` (e.g. an internal status to its proto).
pub fn watch_stream_map<S, T, F>(
    rx: watch::Receiver<S>,
    cancel: CancellationToken,
    f: F,
) -> WatchStream<T>
where
    S: Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(&S) -> T + Send + Sync + 'static,
{
    let stream =
        futures::stream::unfold((rx, cancel, f, true), |(mut rx, cancel, f, first)| async move {
            if cancel.is_cancelled() {
                return None;
            }
            if !first {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => return None,
                    changed = rx.changed() => changed.ok()?,
                }
            }
            let item = f(&rx.borrow_and_update());
            Some((Ok(item), (rx, cancel, f, false)))
        });
    Box::pin(stream)
}
