//! NATS flags and the connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::watch;

use crate::BusError;
use crate::error::ConfigProblem;

/// NATS flags shared by every service (flatten with `#[command(flatten)]`).
///
/// Secrets are read from files, never taken on the command line; `Debug` shows the URL as
/// `scheme://host:port` (a `user:pass@` in it is a secret too).
#[derive(Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(long = "nats.url", env = "LIGHTCL_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub url: String,
    /// User name (with --nats.password-file).
    #[arg(long = "nats.user", env = "LIGHTCL_NATS_USER", requires = "password_file")]
    pub user: Option<String>,
    /// File holding the password of --nats.user.
    #[arg(long = "nats.password-file", env = "LIGHTCL_NATS_PASSWORD_FILE", requires = "user")]
    pub password_file: Option<PathBuf>,
    /// File holding an authentication token.
    #[arg(long = "nats.token-file", env = "LIGHTCL_NATS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long = "nats.creds", env = "LIGHTCL_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// PEM file with the CA that signed the server's certificate (enables TLS).
    #[arg(long = "nats.tls-ca", env = "LIGHTCL_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain) presented to the server for mutual TLS (with
    /// --nats.tls-key; enables TLS).
    #[arg(long = "nats.tls-cert", env = "LIGHTCL_NATS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --nats.tls-cert.
    #[arg(long = "nats.tls-key", env = "LIGHTCL_NATS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Replicas of the streams and the KV bucket when this service creates them.
    #[arg(long = "nats.replicas", env = "LIGHTCL_NATS_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// How long to wait for a PubAck before retrying with the same message id.
    #[arg(long = "nats.publish-timeout", env = "LIGHTCL_NATS_PUBLISH_TIMEOUT",
          default_value = "2s", value_parser = humantime::parse_duration)]
    pub publish_timeout: Duration,
}

impl std::fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsArgs")
            .field("url", &lightcl_rpc::redact_url(&self.url))
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .field("token_file", &self.token_file)
            .field("creds", &self.creds)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("replicas", &self.replicas)
            .field("publish_timeout", &self.publish_timeout)
            .finish()
    }
}

impl NatsArgs {
    /// Flags for a local, unauthenticated server at `url` (tests, devnet).
    pub fn local(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            user: None,
            password_file: None,
            token_file: None,
            creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            replicas: 1,
            publish_timeout: Duration::from_secs(2),
        }
    }

    fn read_secret(flag: &'static str, path: &PathBuf) -> Result<String, BusError> {
        let text = std::fs::read_to_string(path).map_err(|source| BusError::Config {
            flag,
            source: ConfigProblem::Unreadable { path: path.clone(), source },
        })?;
        let text = text.trim().to_owned();
        if text.is_empty() {
            return Err(BusError::Config {
                flag,
                source: ConfigProblem::Empty { path: path.clone() },
            });
        }
        Ok(text)
    }

    /// The client certificate and key of mutual TLS, checked: both given, readable PEM, and the
    /// key belonging to the certificate (errors name the flag at fault).
    fn client_identity(&self) -> Result<Option<(PathBuf, PathBuf)>, BusError> {
        Self::check_client_identity(self.tls_cert.as_deref(), self.tls_key.as_deref())
    }

    /// The checks of `--nats.tls-cert` / `--nats.tls-key` for a client with its own NATS flags
    /// of those names (`lightctl`): `None` without either; both files, readable PEM, the key
    /// belonging to the certificate, or a [`BusError::Config`] naming the flag at fault (never
    /// quoting the key). The paths returned go to `ConnectOptions::add_client_certificate`.
    pub fn check_client_identity(
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Option<(PathBuf, PathBuf)>, BusError> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let (cert, key) = match (cert, key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err(BusError::Config {
                    flag: "--nats.tls-cert",
                    source: ConfigProblem::Requires { other: "--nats.tls-key" },
                });
            }
            (None, Some(_)) => {
                return Err(BusError::Config {
                    flag: "--nats.tls-key",
                    source: ConfigProblem::Requires { other: "--nats.tls-cert" },
                });
            }
        };
        let read = |flag: &'static str, path: &Path| {
            if !path.is_file() {
                return Err(BusError::Config {
                    flag,
                    source: ConfigProblem::NotAFile { path: path.to_owned() },
                });
            }
            std::fs::read(path).map_err(|source| BusError::Config {
                flag,
                source: ConfigProblem::Unreadable { path: path.to_owned(), source },
            })
        };
        let pem = |flag: &'static str, path: &Path, reason: String| BusError::Config {
            flag,
            source: ConfigProblem::Pem { path: path.to_owned(), reason },
        };
        let chain = CertificateDer::pem_slice_iter(&read("--nats.tls-cert", cert)?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem("--nats.tls-cert", cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(pem("--nats.tls-cert", cert, "no CERTIFICATE block".into()));
        }
        // The error never quotes the key material.
        let der = PrivateKeyDer::from_pem_slice(&read("--nats.tls-key", key)?)
            .map_err(|e| pem("--nats.tls-key", key, e.to_string()))?;
        let signing = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| pem("--nats.tls-key", key, e.to_string()))?;
        match rustls::sign::CertifiedKey::new(chain, signing).keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                let reason = "does not belong to the certificate of --nats.tls-cert".to_owned();
                return Err(pem("--nats.tls-key", key, reason));
            }
            Err(e) => return Err(pem("--nats.tls-cert", cert, e.to_string())),
        }
        Ok(Some((cert.to_owned(), key.to_owned())))
    }

    /// Checks every file flag now (readable, non-empty secrets; existing creds and CA files; a
    /// client certificate with its matching key), so a bad one exits 64 at start-up instead of
    /// failing each reconnect.
    pub fn check(&self) -> Result<(), BusError> {
        if let Some(pw) = &self.password_file {
            Self::read_secret("--nats.password-file", pw)?;
        }
        if let Some(t) = &self.token_file {
            Self::read_secret("--nats.token-file", t)?;
        }
        for (flag, file) in [("--nats.creds", &self.creds), ("--nats.tls-ca", &self.tls_ca)] {
            if let Some(f) = file
                && !f.is_file()
            {
                return Err(BusError::Config {
                    flag,
                    source: ConfigProblem::NotAFile { path: f.clone() },
                });
            }
        }
        self.client_identity()?;
        Ok(())
    }

    /// Builds the connect options, reading every secret file (errors name the flag).
    pub async fn connect_options(
        &self,
        name: &str,
    ) -> Result<async_nats::ConnectOptions, BusError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name(name)
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(3))
            .max_reconnects(None);
        if let (Some(user), Some(pw)) = (&self.user, &self.password_file) {
            opts = opts
                .user_and_password(user.clone(), Self::read_secret("--nats.password-file", pw)?);
        }
        if let Some(t) = &self.token_file {
            opts = opts.token(Self::read_secret("--nats.token-file", t)?);
        }
        if let Some(c) = &self.creds {
            opts = opts.credentials_file(c).await.map_err(|source| BusError::Config {
                flag: "--nats.creds",
                source: ConfigProblem::Credentials { path: c.clone(), source },
            })?;
        }
        if let Some(ca) = &self.tls_ca {
            if !ca.is_file() {
                return Err(BusError::Config {
                    flag: "--nats.tls-ca",
                    source: ConfigProblem::NotAFile { path: ca.clone() },
                });
            }
            opts = opts.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = self.client_identity()? {
            opts = opts.add_client_certificate(cert, key);
        }
        if self.tls_ca.is_some() || self.tls_cert.is_some() {
            // async-nats builds its rustls config from the process-default provider, and with
            // both `ring` and `aws-lc-rs` compiled in rustls cannot pick one by itself.
            lightcl_rpc::tls::install_default_provider();
            opts = opts.require_tls(true);
        }
        Ok(opts)
    }
}

/// Bound on one JetStream API request (see [`Bus::connect`]).
pub const JS_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The NATS connection as the client reports it (its `Connected`/`Disconnected` events).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionState {
    /// Connected right now.
    pub connected: bool,
    /// How many times the client has connected: 0 before the first connection, then one more
    /// per reconnect. A change tells a consumer that the server (or a restarted one) may have
    /// forgotten its consumers and pending pulls.
    pub generation: u64,
}

/// A NATS connection with its JetStream context and its live connection state.
///
/// The one place the connection state is tracked: [`Bus::connected`] (a flag, for readiness
/// and the reconnect counter, the runtime shell's `mirror_nats`) and [`Bus::connection`]
/// (with the generation, for consumers that must be re-created after a reconnect, e.g.
/// [`crate::LatestConsumer`]) are fed by the same client events.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    connected: watch::Receiver<bool>,
    connection: watch::Receiver<ConnectionState>,
    replicas: usize,
}

impl Bus {
    /// Connects. Returns at once even when the server is down: the client keeps reconnecting
    /// in the background and [`Bus::connected`] tells the state. Only bad configuration errs.
    pub async fn connect(args: &NatsArgs, name: &str) -> Result<Self, BusError> {
        let (connected_tx, connected) = watch::channel(false);
        let (state_tx, connection) = watch::channel(ConnectionState::default());
        let opts = args.connect_options(name).await?.event_callback(move |event| {
            let (connected_tx, state_tx) = (connected_tx.clone(), state_tx.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        state_tx.send_modify(|s| {
                            s.connected = true;
                            s.generation += 1;
                        });
                        connected_tx.send_replace(true);
                    }
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        state_tx.send_modify(|s| s.connected = false);
                        connected_tx.send_replace(false);
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        });
        // `--nats.url` may list several servers (a cluster), comma-separated: async-nats reads
        // a single string as one URL, so hand it the list.
        let servers: Vec<&str> =
            args.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let client = opts.connect(servers).await.map_err(|source| BusError::Config {
            flag: "--nats.url",
            source: ConfigProblem::Url { url: lightcl_rpc::redact_url(&args.url), source },
        })?;
        // API requests (stream info, message get, consumer create) fail after
        // JS_REQUEST_TIMEOUT instead of the client's 10 s: while a stream elects a new leader
        // they go unanswered, and a short timeout lets the caller retry as soon as one is up.
        let js = jetstream::ContextBuilder::new().timeout(JS_REQUEST_TIMEOUT).build(client.clone());
        Ok(Self { client, js, connected, connection, replicas: usize::from(args.replicas) })
    }

    /// The core client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> jetstream::Context {
        self.js.clone()
    }

    /// A receiver of the connection flag (true = connected).
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// A receiver of the connection state with its generation (see [`ConnectionState`]).
    pub fn connection(&self) -> watch::Receiver<ConnectionState> {
        self.connection.clone()
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Replicas to create streams and buckets with.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// Creates every stream and the KV bucket if missing (see [`crate::ensure_topology`]).
    pub async fn ensure_topology(&self) -> Result<(), BusError> {
        crate::ensure_topology(&self.js, self.replicas).await
    }

    /// Flushes pending publishes (bounded by `timeout`), e.g. on shutdown.
    pub async fn flush(&self, timeout: Duration) {
        if self.is_connected() {
            let _ = tokio::time::timeout(timeout, self.client.flush()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_names_the_bad_file_flag() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, " s3cret\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let with = |f: &dyn Fn(&mut NatsArgs)| {
            let mut a = NatsArgs::local("nats://127.0.0.1:4222");
            f(&mut a);
            a.check()
        };
        assert!(with(&|_| {}).is_ok());
        assert!(with(&|a| a.token_file = Some(token.clone())).is_ok());
        for (f, flag) in [
            (
                Box::new(|a: &mut NatsArgs| a.token_file = Some(empty.clone()))
                    as Box<dyn Fn(&mut NatsArgs)>,
                "--nats.token-file",
            ),
            (
                Box::new(|a: &mut NatsArgs| a.token_file = Some("/nonexistent".into())),
                "--nats.token-file",
            ),
            (
                Box::new(|a: &mut NatsArgs| {
                    a.user = Some("u".into());
                    a.password_file = Some("/nonexistent".into());
                }),
                "--nats.password-file",
            ),
            (Box::new(|a: &mut NatsArgs| a.creds = Some("/nonexistent".into())), "--nats.creds"),
            (Box::new(|a: &mut NatsArgs| a.tls_ca = Some(dir.path().into())), "--nats.tls-ca"),
        ] {
            match with(&*f) {
                Err(BusError::Config { flag: got, .. }) => assert_eq!(got, flag),
                other => panic!("{flag}: {other:?}"),
            }
        }
    }

    #[test]
    fn check_names_the_bad_client_certificate_flag() {
        let dir = tempfile::tempdir().unwrap();
        let ca = lightcl_harness::tls::TestCa::new("unit");
        let issued = ca.client_cert("lightcl-poller");
        let good = issued.write_pem(dir.path(), "client");
        let other = ca.client_cert("someone-else").write_pem(dir.path(), "other");
        let missing = dir.path().join("missing.pem");
        let with = |cert: Option<&PathBuf>, key: Option<&PathBuf>| {
            let mut a = NatsArgs::local("nats://127.0.0.1:4222");
            a.tls_cert = cert.cloned();
            a.tls_key = key.cloned();
            a.check()
        };
        assert!(with(Some(&good.cert), Some(&good.key)).is_ok());
        let dir_path = dir.path().to_path_buf();
        for (cert, key, flag) in [
            (Some(&missing), Some(&good.key), "--nats.tls-cert"),
            (Some(&dir_path), Some(&good.key), "--nats.tls-cert"),
            (Some(&good.cert), Some(&missing), "--nats.tls-key"),
            // Built without clap: one without the other is refused too.
            (Some(&good.cert), None, "--nats.tls-cert"),
            (None, Some(&good.key), "--nats.tls-key"),
            // Swapped files, and a key of another certificate.
            (Some(&good.key), Some(&good.cert), "--nats.tls-cert"),
            (Some(&good.cert), Some(&good.cert), "--nats.tls-key"),
            (Some(&good.cert), Some(&other.key), "--nats.tls-key"),
        ] {
            match with(cert, key) {
                Err(e @ BusError::Config { flag: got, .. }) => {
                    assert_eq!(got, flag, "{cert:?} {key:?}: {e}");
                    let line = e.to_string();
                    assert!(line.starts_with(flag) && !line.contains('\n'), "{line}");
                    let body = issued.key_pem.lines().nth(1).unwrap();
                    assert!(!line.contains(body), "leaks the key: {line}");
                }
                other => panic!("{cert:?} {key:?}: {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod flags {
    use clap::Parser as _;

    use super::NatsArgs;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        nats: NatsArgs,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied()))
    }

    #[test]
    fn tls_cert_and_key_require_each_other() {
        for (given, missing) in
            [("--nats.tls-cert", "--nats.tls-key"), ("--nats.tls-key", "--nats.tls-cert")]
        {
            let Err(e) = parse(&[given, "/some/file.pem"]) else {
                panic!("{given} without {missing} was accepted");
            };
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{e}");
            assert!(e.to_string().contains(missing), "{given}: {e}");
        }
        let Ok(cli) = parse(&["--nats.tls-cert", "/c.pem", "--nats.tls-key", "/k.pem"]) else {
            panic!("--nats.tls-cert with --nats.tls-key was refused");
        };
        assert_eq!(cli.nats.tls_cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(cli.nats.tls_key.as_deref(), Some(std::path::Path::new("/k.pem")));
    }
}

#[cfg(test)]
mod redaction {
    use super::NatsArgs;

    #[test]
    fn debug_hides_nats_userinfo() {
        let a = NatsArgs::local("nats://lightcl:s3cretpw@nats-0:4222,nats://nats-1:4222");
        let d = format!("{a:?}");
        assert!(!d.contains("s3cretpw") && !d.contains("lightcl:"), "{d}");
        assert!(d.contains("nats://nats-0:4222,nats://nats-1:4222"), "{d}");
    }

    #[test]
    fn debug_shows_the_client_certificate_paths() {
        let mut a = NatsArgs::local("nats://nats-0:4222");
        a.tls_cert = Some("/etc/lightcl/nats/tls.crt".into());
        a.tls_key = Some("/etc/lightcl/nats/tls.key".into());
        let d = format!("{a:?}");
        assert!(d.contains("tls.crt") && d.contains("tls.key"), "{d}");
    }
}
