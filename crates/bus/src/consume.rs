//! Typed consumers: decoded messages, poisoned ones acked and counted.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prost::Message;

use crate::BusError;
use crate::error::BoxError;
use crate::latest::PoisonHook;
use crate::publish::{decode_message, trace_headers};

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Every stored message.
    All,
    /// Only messages published from now on.
    New,
    /// The last message of each subject, then everything new (the "latest target" pattern).
    LastPerSubject,
}

impl StartAt {
    fn policy(self) -> consumer::DeliverPolicy {
        match self {
            Self::All => consumer::DeliverPolicy::All,
            Self::New => consumer::DeliverPolicy::New,
            Self::LastPerSubject => consumer::DeliverPolicy::LastPerSubject,
        }
    }
}

/// What to consume.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// Stream name.
    pub stream: String,
    /// Filter subject (wildcards allowed).
    pub filter_subject: String,
    /// Durable name: a durable pull consumer with explicit acks, shared by replicas. `None`: an
    /// ordered (ephemeral, ack-less) consumer private to this process.
    pub durable: Option<String>,
    /// Where a newly created consumer starts.
    pub start: StartAt,
    /// Redelivery delay of an unacked message (durable only).
    pub ack_wait: Duration,
}

/// One consumed message.
#[derive(Debug)]
pub struct Delivery<M> {
    /// The decoded message.
    pub message: M,
    /// Its subject.
    pub subject: String,
    /// Its stream sequence (idempotency key: redelivery repeats it).
    pub sequence: u64,
    /// How many times it was delivered (1 the first time).
    pub delivered: i64,
    /// When the server stored it (Unix ms, the server's clock).
    pub stored_ms: u64,
    /// Messages the consumer still held for us after this one when it was delivered (0: caught
    /// up).
    pub pending: u64,
    /// W3C trace headers it carried.
    pub trace: HashMap<String, String>,
    /// Its `Nats-Msg-Id` (the stream's de-duplication key), when it carried one.
    pub msg_id: Option<String>,
    raw: Option<jetstream::Message>,
}

/// The `Nats-Msg-Id` header of a message, if any.
fn msg_id(h: Option<&async_nats::HeaderMap>) -> Option<String> {
    h.and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID)).map(|v| v.as_str().to_owned())
}

/// A server timestamp as Unix ms (0 before 1970).
pub(crate) fn unix_ms(t: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl<M> Delivery<M> {
    /// Acknowledges the message, waiting for the server's confirmation (durable consumers).
    pub async fn ack(&self) -> Result<(), BusError> {
        match &self.raw {
            Some(m) => m.double_ack().await.map_err(|e| BusError::unavailable("ack", e)),
            None => Ok(()),
        }
    }

    /// Asks for redelivery after `delay` (durable consumers).
    pub async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        match &self.raw {
            Some(m) => m
                .ack_with(jetstream::AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| BusError::unavailable("nak", e)),
            None => Ok(()),
        }
    }

    /// Tells the server the message is still being worked on (resets its ack timer).
    pub async fn in_progress(&self) -> Result<(), BusError> {
        match &self.raw {
            Some(m) => m
                .ack_with(jetstream::AckKind::Progress)
                .await
                .map_err(|e| BusError::unavailable("progress", e)),
            None => Ok(()),
        }
    }
}

/// How long one pull request waits; the server's idle heartbeat is half of it. A consumer whose
/// server died (or whose leader moved) stops sending heartbeats, and two missed ones make the
/// client re-create it: a lost consumer costs about `2 * PULL_EXPIRES`, not the client
/// default's 30-60 s (docs/bus.md#consumers).
pub const PULL_EXPIRES: Duration = Duration::from_secs(2);

pub(crate) type Messages =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<jetstream::Message, BoxError>> + Send>>;

/// A consumer of one protobuf message type. Re-creates itself after errors (NATS restart),
/// so [`TypedConsumer::next`] only ever returns a message; call it inside a `select!` with a
/// cancellation branch.
pub struct TypedConsumer<M> {
    js: jetstream::Context,
    spec: ConsumerSpec,
    name: &'static str,
    messages: Option<Messages>,
    undecodable: Arc<AtomicU64>,
    on_undecodable: Option<PoisonHook>,
    _m: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for TypedConsumer<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedConsumer").field("spec", &self.spec).field("name", &self.name).finish()
    }
}

impl<M: Message + Default> TypedConsumer<M> {
    /// A consumer of messages named `name` (e.g. `lightcl_proto::names::TARGET`). Nothing is
    /// created on the server until the first [`TypedConsumer::next`].
    pub fn new(js: jetstream::Context, spec: ConsumerSpec, name: &'static str) -> Self {
        Self {
            js,
            spec,
            name,
            messages: None,
            undecodable: Arc::default(),
            on_undecodable: None,
            _m: PhantomData,
        }
    }

    /// Calls `hook` once per undecodable message, when it is skipped (as
    /// [`crate::LatestConsumer::on_poisoned`]).
    #[must_use]
    pub fn on_undecodable(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.on_undecodable = Some(Box::new(hook));
        self
    }

    /// Count of undecodable messages acked and skipped so far (shared handle for metrics).
    pub fn undecodable(&self) -> Arc<AtomicU64> {
        self.undecodable.clone()
    }

    // Borrows only the (Sync) fields, so `next`'s future is Send although the boxed message
    // stream is not Sync.
    async fn open(js: &jetstream::Context, spec: &ConsumerSpec) -> Result<Messages, BusError> {
        let stream =
            js.get_stream(&spec.stream).await.map_err(|e| BusError::js("get stream", e))?;
        let deliver_policy = spec.start.policy();
        let filter_subject = spec.filter_subject.clone();
        let messages = match &spec.durable {
            Some(durable) => {
                let c: consumer::PullConsumer = stream
                    .get_or_create_consumer(
                        durable,
                        consumer::pull::Config {
                            durable_name: Some(durable.clone()),
                            filter_subject,
                            deliver_policy,
                            ack_policy: consumer::AckPolicy::Explicit,
                            ack_wait: spec.ack_wait,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| BusError::js("create consumer", e))?;
                let m = c
                    .stream()
                    .expires(PULL_EXPIRES)
                    .heartbeat(PULL_EXPIRES / 2)
                    .messages()
                    .await
                    .map_err(|e| BusError::js("consume", e))?;
                m.map(|r| r.map_err(BoxError::from)).boxed()
            }
            None => {
                let c = stream
                    .create_consumer(consumer::pull::OrderedConfig {
                        filter_subject,
                        deliver_policy,
                        max_expires: PULL_EXPIRES,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| BusError::js("create consumer", e))?;
                let m = c.messages().await.map_err(|e| BusError::js("consume", e))?;
                m.map(|r| r.map_err(BoxError::from)).boxed()
            }
        };
        Ok(messages)
    }

    /// Creates the consumer on the server now (a durable one starts recording from here), so a
    /// service can report ready only once it really consumes. A no-op when already open.
    pub async fn open_now(&mut self) -> Result<(), BusError> {
        if self.messages.is_none() {
            self.messages = Some(Self::open(&self.js, &self.spec).await?);
        }
        Ok(())
    }

    /// The next decodable message. Undecodable ones are acked, counted, logged and skipped;
    /// consumer errors (server gone, consumer lost) re-create it with backoff.
    pub async fn next(&mut self) -> Delivery<M> {
        let mut delay = Duration::from_millis(100);
        loop {
            let Some(messages) = self.messages.as_mut() else {
                match Self::open(&self.js, &self.spec).await {
                    Ok(m) => {
                        self.messages = Some(m);
                        delay = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(stream = %self.spec.stream, error = %e, "cannot open consumer; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
                continue;
            };
            let msg = match messages.next().await {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::warn!(stream = %self.spec.stream, error = %e, "consumer error; re-creating");
                    self.messages = None;
                    tokio::time::sleep(delay).await;
                    continue;
                }
                None => {
                    self.messages = None;
                    continue;
                }
            };
            let (sequence, delivered, stored_ms, pending) = msg
                .info()
                .map(|i| (i.stream_sequence, i.delivered, unix_ms(i.published), i.pending))
                .unwrap_or_default();
            let subject = msg.subject.to_string();
            match decode_message::<M>(self.name, msg.headers.as_ref(), &msg.payload) {
                Ok(message) => {
                    let trace = trace_headers(msg.headers.as_ref());
                    let msg_id = msg_id(msg.headers.as_ref());
                    let raw = self.spec.durable.is_some().then_some(msg);
                    return Delivery {
                        message,
                        subject,
                        sequence,
                        delivered,
                        stored_ms,
                        pending,
                        trace,
                        msg_id,
                        raw,
                    };
                }
                Err(e) => {
                    self.undecodable.fetch_add(1, Ordering::Relaxed);
                    if let Some(hook) = &self.on_undecodable {
                        hook();
                    }
                    tracing::error!(%subject, sequence, expected = self.name, reason = %e, "undecodable bus message acked and skipped");
                    if self.spec.durable.is_some()
                        && let Err(e) = msg.ack().await
                    {
                        tracing::warn!(%subject, sequence, error = %e, "ack of undecodable message failed");
                    }
                }
            }
        }
    }
}

/// The core-NATS copies of the messages published on a stream's subjects, as the server routes
/// them, before the stream has stored them: a queue subscription, so each copy reaches one
/// member of `queue`. A copy has no stream sequence (0), no ack and no redelivery, and may be
/// missed (a slow consumer, a reconnect, a server that refuses the subscription); the stream's
/// own delivery always follows. Use it only to act early on what the stream delivers anyway,
/// and never on a message whose storing is what makes it true (a target: its CAS).
pub struct CoreCopies<M> {
    sub: Option<async_nats::Subscriber>,
    name: &'static str,
    _m: PhantomData<fn() -> M>,
}

impl<M> std::fmt::Debug for CoreCopies<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreCopies").field("name", &self.name).finish_non_exhaustive()
    }
}

impl<M: Message + Default> CoreCopies<M> {
    /// Subscribes to `subject` (wildcards allowed) in queue group `queue`, for messages named
    /// `name`.
    pub async fn subscribe(
        client: &async_nats::Client,
        subject: String,
        queue: String,
        name: &'static str,
    ) -> Result<Self, BusError> {
        let sub = client
            .queue_subscribe(subject, queue)
            .await
            .map_err(|e| BusError::unavailable("subscribe", e))?;
        Ok(Self { sub: Some(sub), name, _m: PhantomData })
    }

    /// The next decodable copy; undecodable ones are skipped (the stream's delivery counts
    /// them). Pending forever once the subscription has ended.
    pub async fn next(&mut self) -> Delivery<M> {
        loop {
            let Some(sub) = self.sub.as_mut() else {
                return futures::future::pending().await;
            };
            let Some(msg) = sub.next().await else {
                self.sub = None;
                continue;
            };
            if let Ok(message) = decode_message::<M>(self.name, msg.headers.as_ref(), &msg.payload)
            {
                return Delivery {
                    message,
                    subject: msg.subject.to_string(),
                    sequence: 0,
                    delivered: 0,
                    stored_ms: 0,
                    pending: 0,
                    trace: trace_headers(msg.headers.as_ref()),
                    msg_id: msg_id(msg.headers.as_ref()),
                    raw: None,
                };
            }
        }
    }
}
