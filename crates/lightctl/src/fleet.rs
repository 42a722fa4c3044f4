//! The fleet section: every engine-driver's state from the KV bucket `lightcl-engine`
//! (keys `<chain_id>.<node_id>`, values protobuf `lightcl.v1.EngineState`, docs/bus.md#engine-state-kv-bucket).
//!
//! A bucket that does not exist yet (no driver ever started) is an empty fleet, not an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, ErrorCode, context::GetStreamErrorKind, kv};
use futures::{Stream, StreamExt};
use lightcl_proto::v1;
use prost::Message;

use crate::cli::NatsAuthArgs;
use crate::config::ConfigError;
use crate::report::{EngineView, ErrorView, FleetNode, FleetView};

/// The KV bucket of engine states.
pub const ENGINE_BUCKET: &str = "lightcl-engine";

/// Reading the bucket failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// Could not connect to NATS.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// A JetStream/KV request failed.
    #[error("{what}: {reason}")]
    Kv {
        /// What was attempted.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// No answer within the timeout.
    #[error("no answer from NATS within {0:?}")]
    Timeout(Duration),
}

impl FleetError {
    /// As a JSON error (kind `nats`).
    pub fn view(&self) -> ErrorView {
        ErrorView { kind: "nats".into(), message: self.to_string() }
    }
}

/// NATS credentials with their secrets read (never printed: `Debug` redacts them).
#[derive(Clone, Default)]
pub struct NatsAuth {
    user_password: Option<(String, String)>,
    token: Option<String>,
    creds: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("creds", &self.creds)
            .field("tls_ca", &self.tls_ca)
            .finish()
    }
}

impl NatsAuth {
    /// Read the secret files named by the flags (errors name the flag).
    pub fn from_args(a: &NatsAuthArgs) -> Result<Self, ConfigError> {
        let secret = |flag: &'static str, path: &Path| -> Result<String, ConfigError> {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Flag {
                flag,
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(ConfigError::Flag {
                    flag,
                    reason: format!("{} is empty", path.display()),
                });
            }
            Ok(text.to_owned())
        };
        let file =
            |flag: &'static str, path: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
                match path {
                    Some(p) if !p.is_file() => Err(ConfigError::Flag {
                        flag,
                        reason: format!("{} is not a readable file", p.display()),
                    }),
                    other => Ok(other.clone()),
                }
            };
        let user_password = match (&a.user, &a.password_file) {
            (Some(u), Some(p)) => Some((u.clone(), secret("--nats.password-file", p)?)),
            _ => None,
        };
        Ok(Self {
            user_password,
            token: a.token_file.as_deref().map(|p| secret("--nats.token-file", p)).transpose()?,
            creds: file("--nats.creds", &a.creds)?,
            tls_ca: file("--nats.tls-ca", &a.tls_ca)?,
        })
    }
}

/// The KV key filter for a chain (`<chain>.>`) or every key (`>`).
pub fn key_filter(chain_id: Option<u64>) -> String {
    chain_id.map_or_else(|| ">".to_owned(), |c| format!("{c}.>"))
}

/// Decode one KV value.
pub fn decode(key: &str, value: &[u8]) -> FleetNode {
    match v1::EngineState::decode(value) {
        Ok(s) => FleetNode { key: key.to_owned(), state: Some(EngineView::from(&s)), error: None },
        Err(e) => FleetNode {
            key: key.to_owned(),
            state: None,
            error: Some(format!("undecodable EngineState ({} bytes): {e}", value.len())),
        },
    }
}

/// Connect to NATS (bounded by `timeout`).
pub async fn connect(
    url: &str,
    auth: &NatsAuth,
    timeout: Duration,
) -> Result<jetstream::Context, FleetError> {
    let mut opts = async_nats::ConnectOptions::new().name("lightctl").connection_timeout(timeout);
    if let Some((u, p)) = &auth.user_password {
        opts = opts.user_and_password(u.clone(), p.clone());
    }
    if let Some(t) = &auth.token {
        opts = opts.token(t.clone());
    }
    if let Some(c) = &auth.creds {
        opts = opts.credentials_file(c).await.map_err(|e| FleetError::Connect {
            url: lightcl_rpc::redact_url(url),
            reason: format!("--nats.creds {}: {e}", c.display()),
        })?;
    }
    if let Some(ca) = &auth.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    let connect = opts.connect(url);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(client)) => Ok(jetstream::new(client)),
        Ok(Err(e)) => Err(FleetError::Connect {
            url: lightcl_rpc::redact_url(url),
            reason: crate::client::error_chain(&e),
        }),
        Err(_) => Err(FleetError::Timeout(timeout)),
    }
}

/// The bucket, or `None` when it does not exist yet.
pub async fn open(js: &jetstream::Context) -> Result<Option<kv::Store>, FleetError> {
    match js.get_stream(format!("KV_{ENGINE_BUCKET}")).await {
        Ok(_) => {}
        Err(e) => {
            if let GetStreamErrorKind::JetStream(inner) = e.kind()
                && inner.error_code() == ErrorCode::STREAM_NOT_FOUND
            {
                return Ok(None);
            }
            return Err(FleetError::Kv {
                what: "looking up the bucket",
                reason: crate::client::error_chain(&e),
            });
        }
    }
    js.get_key_value(ENGINE_BUCKET).await.map(Some).map_err(|e| FleetError::Kv {
        what: "opening the bucket",
        reason: crate::client::error_chain(&e),
    })
}

/// Read every entry (of `chain_id`, if given) once.
pub async fn read(
    url: &str,
    auth: &NatsAuth,
    chain_id: Option<u64>,
    timeout: Duration,
) -> FleetView {
    let mut view = empty(url, chain_id);
    match tokio::time::timeout(timeout * 2, read_nodes(url, auth, chain_id, timeout)).await {
        Ok(Ok(nodes)) => view.nodes = nodes,
        Ok(Err(e)) => view.error = Some(e.view()),
        Err(_) => view.error = Some(FleetError::Timeout(timeout * 2).view()),
    }
    view
}

/// A fleet section with no entries yet.
pub fn empty(url: &str, chain_id: Option<u64>) -> FleetView {
    FleetView {
        nats_url: lightcl_rpc::redact_url(url),
        bucket: ENGINE_BUCKET.to_owned(),
        chain_id,
        nodes: Vec::new(),
        error: None,
    }
}

async fn read_nodes(
    url: &str,
    auth: &NatsAuth,
    chain_id: Option<u64>,
    timeout: Duration,
) -> Result<Vec<FleetNode>, FleetError> {
    let js = connect(url, auth, timeout).await?;
    let Some(store) = open(&js).await? else { return Ok(Vec::new()) };
    let prefix = chain_id.map(|c| format!("{c}."));
    let mut keys = store
        .keys()
        .await
        .map_err(|e| FleetError::Kv { what: "listing keys", reason: e.to_string() })?;
    let mut nodes = BTreeMap::new();
    while let Some(key) = keys.next().await {
        let key =
            key.map_err(|e| FleetError::Kv { what: "listing keys", reason: e.to_string() })?;
        if prefix.as_ref().is_some_and(|p| !key.starts_with(p.as_str())) {
            continue;
        }
        let value = store
            .get(key.as_str())
            .await
            .map_err(|e| FleetError::Kv { what: "reading a key", reason: e.to_string() })?;
        if let Some(value) = value {
            nodes.insert(key.clone(), decode(&key, &value));
        }
    }
    Ok(nodes.into_values().collect())
}

/// A change seen by [`watch`].
#[derive(Debug, Clone)]
pub enum FleetUpdate {
    /// A key was written.
    Put(Box<FleetNode>),
    /// A key was deleted or purged.
    Removed(String),
    /// The watch failed (it is retried by the caller).
    Failed(FleetError),
    /// The bucket does not exist (yet).
    NoBucket,
}

/// Watch the bucket: the current value of every key (of `chain_id`), then every change.
pub async fn watch(
    url: &str,
    auth: &NatsAuth,
    chain_id: Option<u64>,
    timeout: Duration,
) -> Result<impl Stream<Item = FleetUpdate> + Send + 'static, FleetError> {
    let js = connect(url, auth, timeout).await?;
    let Some(store) = open(&js).await? else {
        return Ok(futures::stream::iter([FleetUpdate::NoBucket]).boxed());
    };
    let w = store
        .watch_with_history(key_filter(chain_id))
        .await
        .map_err(|e| FleetError::Kv { what: "watching the bucket", reason: e.to_string() })?;
    // Keep the client alive as long as the stream.
    let stream = w.map(move |entry| {
        let _keep = &js;
        match entry {
            Ok(e) => match e.operation {
                kv::Operation::Put => FleetUpdate::Put(Box::new(decode(&e.key, &e.value))),
                kv::Operation::Delete | kv::Operation::Purge => FleetUpdate::Removed(e.key),
            },
            Err(e) => FleetUpdate::Failed(FleetError::Kv {
                what: "watching the bucket",
                reason: e.to_string(),
            }),
        }
    });
    Ok(stream.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_decoding() {
        assert_eq!(key_filter(Some(10)), "10.>");
        assert_eq!(key_filter(None), ">");
        let bytes = v1::EngineState { chain_id: 10, node_id: "a".into(), ..Default::default() }
            .encode_to_vec();
        let n = decode("10.a", &bytes);
        assert_eq!(n.state.unwrap().node_id, "a");
        let n = decode("10.b", b"\xff\xff\xff");
        assert!(n.state.is_none() && n.error.unwrap().contains("undecodable"));
    }
}
