//! The newest message of one subject, re-created after every reconnect (docs/bus.md#consumers).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use lightcl_proto::FromWire;
use tokio::sync::watch;

use crate::config::{Bus, ConnectionState};
use crate::consume::Messages;
use crate::error::{BoxError, Named};
use crate::publish::{decode_typed, trace_headers};
use crate::retry::Retry;
use crate::{BusError, ensure_topology};

/// How long one pull of a [`LatestConsumer`] waits. The server's idle heartbeat is half of it,
/// and a consumer that missed one heartbeat window (`LATEST_PULL_EXPIRES`) is re-created: a
/// consumer lost with the server that hosted it costs about a second plus the re-creation.
pub const LATEST_PULL_EXPIRES: Duration = Duration::from_secs(1);

/// The server removes a [`LatestConsumer`]'s consumer this long after its client stopped
/// pulling (one replaced after a missed heartbeat, or of a client that died).
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

/// Now minus `window`, as the consumer API wants it.
fn start_time(window: Duration) -> Result<async_nats::datetime::DateTime, BusError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(window);
    async_nats::datetime::from_nanos(i128::try_from(now.as_nanos()).unwrap_or(0))
        .map_err(|e| BusError::js("start time", e))
}

/// One message of a [`LatestConsumer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest<T> {
    /// The decoded and converted message.
    pub message: T,
    /// Its subject.
    pub subject: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// When the server stored it (Unix ms, the server's clock).
    pub stored_ms: u64,
    /// W3C trace headers it carried.
    pub trace: HashMap<String, String>,
}

/// Called once per poisoned (undecodable) message as it is skipped (e.g. to count it in a
/// metric at once).
pub(crate) type PoisonHook = Box<dyn Fn() + Send + Sync>;

/// An ordered (ephemeral, ack-less) consumer of one subject that starts at the subject's newest
/// message (`LastPerSubject`) and then follows every newer one — the "only the newest matters"
/// reader (an engine-driver's targets).
///
/// [`LatestConsumer::next`] only ever returns a message; call it inside a `select!` with a
/// cancellation branch. Before each (re-)creation the topology is ensured, so the reader may
/// start before any writer. The consumer is re-created, again from the newest message:
/// - after every new connection ([`ConnectionState::generation`]): a restarted server may have
///   forgotten the consumer and its pending pulls, and the client's heartbeat check would only
///   notice after ~30 s. Messages seen before are delivered again; readers ignore them by
///   content (drivers: by revision);
/// - after a consumer error or the end of its message stream, with jittered backoff.
///
/// A message that does not decode or does not convert ([`FromWire`]) is poison: it is logged
/// with its subject and sequence at error level, counted ([`LatestConsumer::poisoned`],
/// [`LatestConsumer::on_poisoned`]) and skipped.
pub struct LatestConsumer<T> {
    js: jetstream::Context,
    connection: watch::Receiver<ConnectionState>,
    replicas: usize,
    stream: String,
    subject: String,
    messages: Option<Messages>,
    /// The connection generation the open consumer was created on.
    generation: u64,
    connection_open: bool,
    retry: Retry,
    /// None: start at the subject's newest message; Some(w): at the first message stored in
    /// the last `w` (every subject of the filter).
    since: Option<Duration>,
    poisoned: Arc<AtomicU64>,
    on_poisoned: Option<PoisonHook>,
    _m: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for LatestConsumer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatestConsumer")
            .field("stream", &self.stream)
            .field("subject", &self.subject)
            .field("open", &self.messages.is_some())
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl<T: FromWire> LatestConsumer<T> {
    /// A consumer of `subject` in `stream` over `bus`. Nothing is created on the server until
    /// the first [`LatestConsumer::next`].
    pub fn new(bus: &Bus, stream: impl Into<String>, subject: impl Into<String>) -> Self {
        Self {
            js: bus.jetstream(),
            connection: bus.connection(),
            replicas: bus.replicas(),
            stream: stream.into(),
            subject: subject.into(),
            messages: None,
            generation: 0,
            connection_open: true,
            retry: Retry::new(Duration::from_millis(200), Duration::from_secs(5)),
            since: None,
            poisoned: Arc::default(),
            on_poisoned: None,
            _m: PhantomData,
        }
    }

    /// Starts (and restarts, after every re-creation) at the first message stored within the
    /// last `window` instead of the newest one, for every subject of the filter: a reader
    /// that needs recent history (the validator's vote window). Messages seen before are
    /// delivered again after a re-creation; readers deduplicate by sequence.
    #[must_use]
    pub fn since(mut self, window: Duration) -> Self {
        self.since = Some(window);
        self
    }

    /// Calls `hook` once per poisoned message, when it is skipped.
    #[must_use]
    pub fn on_poisoned(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_poisoned = Some(Box::new(hook));
        self
    }

    /// Count of poisoned messages skipped so far (shared handle).
    pub fn poisoned(&self) -> Arc<AtomicU64> {
        self.poisoned.clone()
    }

    // Borrows only the (Sync) fields, so `next`'s future is Send although the boxed message
    // stream is not Sync.
    async fn open(
        js: &jetstream::Context,
        replicas: usize,
        stream: &str,
        subject: &str,
        since: Option<Duration>,
    ) -> Result<Messages, BusError> {
        ensure_topology(js, replicas).await?;
        let stream = js
            .get_stream(stream)
            .await
            .map_err(|e| BusError::js("get stream", Named::new(stream, e)))?;
        // A plain ephemeral consumer (in memory, one replica, no acks), not the client's
        // ordered consumer: that one waits for a second missed heartbeat that nothing wakes it
        // to notice, so a consumer lost with its server cost ~6 s. Here the first missed
        // heartbeat is an error and `next` re-creates the consumer from the newest message.
        let consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: subject.to_owned(),
                deliver_policy: match since {
                    None => consumer::DeliverPolicy::LastPerSubject,
                    Some(w) => consumer::DeliverPolicy::ByStartTime { start_time: start_time(w)? },
                },
                ack_policy: consumer::AckPolicy::None,
                max_deliver: 1,
                memory_storage: true,
                num_replicas: 1,
                inactive_threshold: INACTIVE_THRESHOLD,
                max_expires: LATEST_PULL_EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::js("create consumer", Named::new(subject, e)))?;
        let messages = consumer
            .stream()
            .expires(LATEST_PULL_EXPIRES)
            .heartbeat(LATEST_PULL_EXPIRES / 2)
            .messages()
            .await
            .map_err(|e| BusError::js("consume", Named::new(subject, e)))?;
        Ok(messages.map(|r| r.map_err(BoxError::from)).boxed())
    }

    /// The next message: the subject's newest one after every (re-)creation, then each newer
    /// one. Poisoned messages are skipped; failures re-create the consumer with backoff.
    pub async fn next(&mut self) -> Latest<T> {
        loop {
            let Some(messages) = self.messages.as_mut() else {
                // The generation before the attempt: a connection made meanwhile re-creates
                // the consumer once more (harmless: it starts at the newest message again).
                let generation = self.connection.borrow_and_update().generation;
                match Self::open(&self.js, self.replicas, &self.stream, &self.subject, self.since)
                    .await
                {
                    Ok(m) => {
                        tracing::info!(subject = %self.subject, "consuming from the newest message");
                        self.messages = Some(m);
                        self.generation = generation;
                        self.retry.reset();
                    }
                    Err(e) => {
                        tracing::warn!(subject = %self.subject, error = %e, "cannot consume; retrying");
                        tokio::time::sleep(self.retry.next_delay()).await;
                    }
                }
                continue;
            };
            let next = tokio::select! {
                n = messages.next() => n,
                changed = self.connection.changed(), if self.connection_open => {
                    match changed {
                        Ok(()) => {
                            if self.connection.borrow_and_update().generation != self.generation {
                                tracing::info!(subject = %self.subject, "NATS (re)connected; re-creating the consumer from the newest message");
                                self.messages = None;
                            }
                        }
                        // The client is gone: only the message stream can tell us more.
                        Err(_) => self.connection_open = false,
                    }
                    continue;
                }
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::warn!(subject = %self.subject, error = %e, "consumer error; re-creating");
                    self.messages = None;
                    tokio::time::sleep(self.retry.next_delay()).await;
                    continue;
                }
                None => {
                    self.messages = None;
                    continue;
                }
            };
            let (sequence, stored_ms) = msg
                .info()
                .map(|i| (i.stream_sequence, crate::consume::unix_ms(i.published)))
                .unwrap_or_default();
            match decode_typed::<T>(msg.headers.as_ref(), &msg.payload) {
                Ok(message) => {
                    return Latest {
                        message,
                        subject: msg.subject.to_string(),
                        sequence,
                        stored_ms,
                        trace: trace_headers(msg.headers.as_ref()),
                    };
                }
                Err(e) => {
                    self.poisoned.fetch_add(1, Ordering::Relaxed);
                    if let Some(hook) = &self.on_poisoned {
                        hook();
                    }
                    tracing::error!(subject = %msg.subject, sequence, expected = T::NAME, error = %e, "undecodable bus message skipped");
                }
            }
        }
    }
}
