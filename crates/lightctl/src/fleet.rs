//! The fleet section: every engine-driver's state from the KV bucket `lightcl-engine`
//! (keys `<chain_id>.<node_id>`, values protobuf `lightcl.v1.EngineState`, docs/bus.md#engine-state-kv-bucket).
//!
//! A bucket that does not exist yet (no driver ever started) is an empty fleet, not an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures::{Stream, StreamExt};
use lightcl_bus::{BusError, EngineChange, EngineEntry, EngineStates, NatsArgs, subjects};

use crate::cli::NatsAuthArgs;
use crate::client::error_chain;
use crate::config::ConfigError;
use crate::report::{EngineView, ErrorView, FleetNode, FleetView};

/// Reading the bucket failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FleetError {
    /// Could not connect to NATS.
    #[error("cannot connect to NATS at {url}: {}", error_chain(.source.as_ref()))]
    Connect {
        /// The URL (`scheme://host:port`).
        url: String,
        /// Why.
        #[source]
        source: Arc<async_nats::ConnectError>,
    },
    /// The `--nats.creds` file is unusable.
    #[error("cannot connect to NATS at {url}: --nats.creds {}: {source}", .path.display())]
    Credentials {
        /// The URL (`scheme://host:port`).
        url: String,
        /// The credentials file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A JetStream/KV request failed.
    #[error("{what}: {source}")]
    Kv {
        /// What was attempted.
        what: &'static str,
        /// Why.
        #[source]
        source: Arc<BusError>,
    },
    /// The bucket's watch ended (it is started again by the caller).
    #[error("watching the bucket: watch ended")]
    WatchEnded,
    /// No answer within the timeout.
    #[error("no answer from NATS within {0:?}")]
    Timeout(Duration),
}

impl FleetError {
    fn kv(what: &'static str) -> impl FnOnce(BusError) -> Self {
        move |e| Self::Kv { what, source: Arc::new(e) }
    }

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
    /// The mutual-TLS client certificate and its key, checked.
    client_identity: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsAuth")
            .field("user", &self.user_password.as_ref().map(|(u, _)| u))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("creds", &self.creds)
            .field("tls_ca", &self.tls_ca)
            .field("client_identity", &self.client_identity)
            .finish()
    }
}

impl NatsAuth {
    /// Read the secret files named by the flags and check the client certificate and key (as
    /// the services do, [`NatsArgs::check_client_identity`]); errors name the flag.
    pub fn from_args(a: &NatsAuthArgs) -> Result<Self, ConfigError> {
        let secret =
            |flag: &'static str, path: &Path| -> Result<String, ConfigError> {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    ConfigError::ReadFile { flag, path: path.to_owned(), source }
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
            client_identity: NatsArgs::check_client_identity(
                a.tls_cert.as_deref(),
                a.tls_key.as_deref(),
            )
            .map_err(|e| {
                let (flag, reason) = e.flag_reason();
                ConfigError::Flag { flag, reason }
            })?,
        })
    }
}

/// One bucket entry as a fleet node (an undecodable value is shown with its error).
pub fn node(entry: EngineEntry) -> FleetNode {
    match entry.state {
        Ok(s) => FleetNode { key: entry.key, state: Some(EngineView::from(&s)), error: None },
        Err(e) => {
            let error = match &e {
                lightcl_bus::DecodeError::Protobuf { len, source } => {
                    format!("undecodable EngineState ({len} bytes): {source}")
                }
                other => format!("undecodable EngineState: {other}"),
            };
            FleetNode { key: entry.key, state: None, error: Some(error) }
        }
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
        opts = opts.credentials_file(c).await.map_err(|e| FleetError::Credentials {
            url: lightcl_rpc::redact_url(url),
            path: c.clone(),
            source: Arc::new(e),
        })?;
    }
    if let Some(ca) = &auth.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &auth.client_identity {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if auth.tls_ca.is_some() || auth.client_identity.is_some() {
        // async-nats builds its rustls config from the process-default provider, which rustls
        // cannot pick by itself with both `ring` and `aws-lc-rs` compiled in.
        lightcl_rpc::tls::install_default_provider();
        opts = opts.require_tls(true);
    }
    let connect = opts.connect(url);
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(client)) => Ok(jetstream::new(client)),
        Ok(Err(e)) => {
            Err(FleetError::Connect { url: lightcl_rpc::redact_url(url), source: Arc::new(e) })
        }
        Err(_) => Err(FleetError::Timeout(timeout)),
    }
}

/// The bucket, or `None` when it does not exist yet (never created from here).
pub async fn open(js: &jetstream::Context) -> Result<Option<EngineStates>, FleetError> {
    EngineStates::open_existing(js).await.map_err(FleetError::kv("opening the bucket"))
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
        bucket: subjects::ENGINE_BUCKET.to_owned(),
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
    let Some(states) = open(&js).await? else { return Ok(Vec::new()) };
    let entries = states.entries(chain_id).await.map_err(FleetError::kv("listing the bucket"))?;
    Ok(entries.into_iter().map(node).collect())
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
    let Some(states) = open(&js).await? else {
        return Ok(futures::stream::iter([FleetUpdate::NoBucket]).boxed());
    };
    let changes = states.watch(chain_id).await.map_err(FleetError::kv("watching the bucket"))?;
    // Keep the client alive as long as the stream.
    let stream = changes.map(move |change| {
        let _keep = &js;
        match change {
            Ok(EngineChange::Put(entry)) => FleetUpdate::Put(Box::new(node(*entry))),
            Ok(EngineChange::Removed(key)) => FleetUpdate::Removed(key),
            Err(e) => FleetUpdate::Failed(FleetError::kv("watching the bucket")(e)),
        }
    });
    Ok(stream.boxed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lightcl_proto::v1;
    use prost::Message;

    #[test]
    fn entries_become_nodes() {
        let state = v1::EngineState { chain_id: 10, node_id: "a".into(), ..Default::default() };
        let n = node(EngineEntry { key: "10.a".into(), state: Ok(state) });
        assert_eq!(n.state.unwrap().node_id, "a");
        let bad = b"\xff\xff\xff";
        let source = v1::EngineState::decode(bad.as_slice()).unwrap_err();
        let n = node(EngineEntry {
            key: "10.b".into(),
            state: Err(lightcl_bus::DecodeError::Protobuf { len: bad.len(), source }),
        });
        assert!(n.state.is_none());
        let e = n.error.unwrap();
        assert!(e.starts_with("undecodable EngineState (3 bytes): "), "{e}");
    }
}
