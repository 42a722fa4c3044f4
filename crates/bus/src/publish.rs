//! Publishing with PubAck, same-id retries and CAS; reading the last message of a subject.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream::LastRawMessageErrorKind};
use lightcl_proto::FromWire;
use prost::Message;

use crate::BusError;
use crate::error::{BoxError, DecodeError, Named, NoPubAck};

/// `Content-Type` of every payload.
pub const CONTENT_TYPE_PROTOBUF: &str = "application/x-protobuf";
/// Header naming the protobuf message type.
pub const MESSAGE_HEADER: &str = "Lightcl-Message";

/// A stored publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence of the stored message.
    pub sequence: u64,
    /// True when JetStream recognised the message id as a duplicate (nothing new stored).
    pub duplicate: bool,
}

/// Publishes protobuf messages and waits for their PubAck.
#[derive(Debug, Clone)]
pub struct Publisher {
    js: jetstream::Context,
    ack_timeout: Duration,
    attempts: u32,
}

impl Publisher {
    /// A publisher waiting `ack_timeout` per attempt, 3 attempts.
    pub fn new(js: jetstream::Context, ack_timeout: Duration) -> Self {
        Self { js, ack_timeout, attempts: 3 }
    }

    /// Sets how many times a publish is tried before giving up (at least 1).
    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// Publishes `msg` on `subject`, with `msg_id` as `Nats-Msg-Id` when given. Retries a timed
    /// out or failed attempt with the same id, so JetStream stores it at most once.
    pub async fn publish<M: Message>(
        &self,
        subject: &str,
        name: &'static str,
        msg: &M,
        msg_id: Option<&str>,
    ) -> Result<Published, BusError> {
        self.send(subject, name, msg, msg_id, None).await
    }

    /// Like [`Publisher::publish`] but only if the last message on `subject` has stream
    /// sequence `expected_last` (0: the subject must be empty). Fails with
    /// [`BusError::WrongLastSequence`] when another writer got there first.
    pub async fn publish_expecting<M: Message>(
        &self,
        subject: &str,
        name: &'static str,
        msg: &M,
        msg_id: Option<&str>,
        expected_last: u64,
    ) -> Result<Published, BusError> {
        self.send(subject, name, msg, msg_id, Some(expected_last)).await
    }

    async fn send<M: Message>(
        &self,
        subject: &str,
        name: &'static str,
        msg: &M,
        msg_id: Option<&str>,
        expected_last: Option<u64>,
    ) -> Result<Published, BusError> {
        let payload = bytes::Bytes::from(msg.encode_to_vec());
        let headers =
            headers(name, msg_id, expected_last, &lightcl_telemetry::current_context_map());
        let mut last_err: Option<BoxError> = None;
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            let sent = async {
                let fut = self
                    .js
                    .publish_with_headers(subject.to_owned(), headers.clone(), payload.clone())
                    .await?;
                fut.await
            };
            match tokio::time::timeout(self.ack_timeout, sent).await {
                Ok(Ok(ack)) => {
                    return Ok(Published { sequence: ack.sequence, duplicate: ack.duplicate });
                }
                Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(BusError::WrongLastSequence {
                        subject: subject.to_owned(),
                        expected: expected_last.unwrap_or_default(),
                    });
                }
                Ok(Err(e)) => {
                    tracing::debug!(%subject, attempt, error = %e, "publish failed; retrying");
                    last_err = Some(e.into());
                }
                Err(_) => {
                    tracing::debug!(%subject, attempt, "PubAck timed out; retrying with the same id");
                    last_err = Some(NoPubAck(self.ack_timeout).into());
                }
            }
        }
        let cause = last_err.unwrap_or_else(|| NoPubAck(self.ack_timeout).into());
        Err(BusError::unavailable("publish", Named::new(subject, cause)))
    }
}

fn headers(
    name: &str,
    msg_id: Option<&str>,
    expected_last: Option<u64>,
    trace: &HashMap<String, String>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("Content-Type", CONTENT_TYPE_PROTOBUF);
    h.insert(MESSAGE_HEADER, name);
    if let Some(id) = msg_id {
        h.insert(async_nats::header::NATS_MESSAGE_ID, id);
    }
    if let Some(seq) = expected_last {
        h.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
    }
    for (k, v) in trace {
        h.insert(k.as_str(), v.as_str());
    }
    h
}

/// Decodes a bus payload, checking the `Lightcl-Message` header when present.
pub fn decode_message<M: Message + Default>(
    name: &'static str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<M, DecodeError> {
    if let Some(found) = headers.and_then(|h| h.get(MESSAGE_HEADER))
        && found.as_str() != name
    {
        return Err(DecodeError::WrongMessage { found: found.as_str().to_owned(), expected: name });
    }
    M::decode(payload).map_err(|source| DecodeError::Protobuf { len: payload.len(), source })
}

/// Decodes a bus payload into its core type: [`decode_message`], then the strict conversion
/// of [`FromWire`] (a 31-byte hash or a missing ref is an error naming the field).
pub fn decode_typed<T: FromWire>(
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<T, DecodeError> {
    let wire = decode_message::<T::Wire>(T::NAME, headers, payload)?;
    Ok(T::from_wire(wire)?)
}

/// The W3C trace headers (`traceparent`, `tracestate`) a message carries.
pub fn trace_headers(h: Option<&HeaderMap>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(h) = h {
        for key in ["traceparent", "tracestate"] {
            if let Some(v) = h.get(key) {
                out.insert(key.to_owned(), v.as_str().to_owned());
            }
        }
    }
    out
}

/// The last message stored on a subject.
#[derive(Debug, Clone)]
pub struct LastMessage<M> {
    /// The decoded message.
    pub message: M,
    /// Its stream sequence (use it as the CAS expectation of the next publish).
    pub sequence: u64,
    /// Its W3C trace headers.
    pub trace: HashMap<String, String>,
}

/// Reads the last message on `subject` of `stream`: `Ok(None)` when the subject is empty.
/// A stored message that does not decode is an error ([`BusError::Decode`]) that names it.
pub async fn last_message<M: Message + Default>(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    name: &'static str,
) -> Result<Option<LastMessage<M>>, BusError> {
    // No STREAM.INFO round trip first (the validator reads this before every status): the
    // message request alone answers, and fails when the stream is missing.
    let s = js.get_stream_no_info(stream).await.map_err(|e| BusError::js("get stream", e))?;
    match s.get_last_raw_message_by_subject(subject).await {
        Ok(raw) => {
            let message =
                decode_message::<M>(name, Some(&raw.headers), &raw.payload).map_err(|source| {
                    BusError::Decode {
                        expected: name,
                        subject: subject.to_owned(),
                        sequence: raw.sequence,
                        source,
                    }
                })?;
            Ok(Some(LastMessage {
                message,
                sequence: raw.sequence,
                trace: trace_headers(Some(&raw.headers)),
            }))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(BusError::js("get last message", e)),
    }
}

/// The newest usable message of a subject, and what had to be skipped to find it.
#[derive(Debug)]
pub struct NewestValid<T> {
    /// Stream sequence of the subject's last stored message, usable or not (0: the subject is
    /// empty): the CAS expectation of the next publish.
    pub last_sequence: u64,
    /// The newest message that decoded and converted, with its own sequence (None: the
    /// subject is empty, or nothing usable within the bound).
    pub newest: Option<LastMessage<T>>,
    /// Newer messages of the subject that did not decode or convert, newest first.
    pub skipped: Vec<BusError>,
}

/// Reads the newest message of `subject` that decodes as `T::Wire` (header `T::NAME`) and
/// converts to `T`, walking back from the subject's last message by stream sequence. At most
/// `max_back` earlier sequences are looked at (messages of other subjects and deleted
/// sequences count too); every undecodable or unconvertible message of the subject on the
/// way is returned in `skipped` ([`BusError::Decode`], naming subject and sequence).
pub async fn newest_valid<T: FromWire>(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    max_back: u64,
) -> Result<NewestValid<(T::Wire, T)>, BusError>
where
    T::Wire: Clone,
{
    let r = recent_valid::<T>(js, stream, subject, max_back, 1).await?;
    Ok(NewestValid {
        last_sequence: r.last_sequence,
        newest: r.messages.into_iter().next(),
        skipped: r.skipped,
    })
}

/// The newest usable messages of a subject ([`recent_valid`]).
#[derive(Debug)]
pub struct RecentValid<T> {
    /// As [`NewestValid::last_sequence`].
    pub last_sequence: u64,
    /// Messages that decoded and converted, newest first.
    pub messages: Vec<LastMessage<T>>,
    /// Messages of the subject on the way that did not decode or convert, newest first.
    pub skipped: Vec<BusError>,
}

/// Like [`newest_valid`], but collects up to `want` usable messages (newest first).
pub async fn recent_valid<T: FromWire>(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    max_back: u64,
    want: usize,
) -> Result<RecentValid<(T::Wire, T)>, BusError>
where
    T::Wire: Clone,
{
    let s = js.get_stream_no_info(stream).await.map_err(|e| BusError::js("get stream", e))?;
    let mut out = RecentValid { last_sequence: 0, messages: Vec::new(), skipped: Vec::new() };
    let mut raw = match s.get_last_raw_message_by_subject(subject).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(out),
        Err(e) => return Err(BusError::js("get last message", e)),
    };
    out.last_sequence = raw.sequence;
    let mut seq = raw.sequence;
    loop {
        if raw.subject.as_str() == subject {
            let decoded = decode_message::<T::Wire>(T::NAME, Some(&raw.headers), &raw.payload)
                .and_then(|wire| match T::from_wire(wire.clone()) {
                    Ok(t) => Ok((wire, t)),
                    Err(e) => Err(DecodeError::from(e)),
                });
            match decoded {
                Ok(message) => {
                    out.messages.push(LastMessage {
                        message,
                        sequence: raw.sequence,
                        trace: trace_headers(Some(&raw.headers)),
                    });
                    if out.messages.len() >= want {
                        return Ok(out);
                    }
                }
                Err(source) => out.skipped.push(BusError::Decode {
                    expected: T::NAME,
                    subject: subject.to_owned(),
                    sequence: raw.sequence,
                    source,
                }),
            }
        }
        // The previous stored message of the stream, skipping deleted sequences.
        loop {
            if seq <= 1 || out.last_sequence.saturating_sub(seq) >= max_back {
                return Ok(out);
            }
            seq -= 1;
            match s.get_raw_message(seq).await {
                Ok(m) => {
                    raw = m;
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        LastRawMessageErrorKind::NoMessageFound
                            | LastRawMessageErrorKind::JetStream(_)
                    ) => {}
                Err(e) => return Err(BusError::js("get message", e)),
            }
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use lightcl_proto::v1;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// A poisoned payload (arbitrary bytes, any message-name header) is an error or a
        /// message, never a panic; a wrong name is always refused, naming both.
        #[test]
        fn poisoned_payloads_never_panic(
            payload in proptest::collection::vec(any::<u8>(), 0..4096),
            name in proptest::option::of("[a-zA-Z.]{0,30}"),
        ) {
            let mut headers = HeaderMap::new();
            if let Some(n) = &name {
                headers.insert(MESSAGE_HEADER, n.as_str());
            }
            let r = decode_message::<v1::Target>("lightcl.v1.Target", Some(&headers), &payload);
            if let Some(n) = name.filter(|n| n != "lightcl.v1.Target") {
                let e = r.unwrap_err().to_string();
                prop_assert!(e.contains(&n) && e.contains("lightcl.v1.Target"), "{}", e);
            }
            let _ = decode_message::<v1::RawStatus>("lightcl.v1.RawStatus", None, &payload);
        }
    }
}
