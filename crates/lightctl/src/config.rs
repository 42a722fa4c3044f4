//! The optional config file, merged with the command line into a [`Setup`].
//!
//! TOML (or JSON when the file name ends in `.json`), every key optional, unknown keys are an
//! error (a typo must not silently drop a service):
//!
//! ```toml
//! chain_id = 10
//! nats_url = "nats://nats.lightcl:4222"
//! token_file = "token"          # relative paths are relative to this file
//! tls_ca = "ca.pem"
//! timeout = "3s"
//! poller = ["http://poller-0:7101"]
//! validator = [{ name = "validator", url = "http://validator:7201" }]
//!
//! [[driver]]
//! name = "op-reth-0"
//! url = "http://op-reth-0:7301"
//! ```
//!
//! Command-line flags win over file values; service lists are the file's followed by the
//! flags'. Names given in the file can be used as targets (`lightctl pause op-reth-0`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cli::{GlobalArgs, Kind, NatsAuthArgs, ViewArgs, parse_duration};

/// Default for `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A configuration problem; printed as `error: <flag>: <reason>` and exit 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("--config: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML/JSON or has unknown/mistyped keys.
    #[error("--config: {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, from the parser.
        #[source]
        source: FormatError,
    },
    /// A file named by a flag (a token, a password, a CA) could not be read.
    #[error("{flag}: cannot read {}: {source}", .path.display())]
    ReadFile {
        /// The flag, e.g. `--token-file`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Some flag (or its config key) has a bad value.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, e.g. `--token-file`.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    /// The flag this error is about (for the one-line message).
    pub fn flag(&self) -> &str {
        match self {
            Self::Read { .. } | Self::Parse { .. } => "--config",
            Self::Flag { flag, .. } | Self::ReadFile { flag, .. } => flag,
        }
    }
}

/// Why the text of a config file does not parse.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Not TOML (shown on one line).
    #[error("{}", one_line(&.0.to_string()))]
    Toml(#[from] toml_edit::TomlError),
    /// Not JSON, or not the expected keys and types.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// The file's content.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Like `--chain-id`.
    pub chain_id: Option<u64>,
    /// Like `--nats.url`.
    pub nats_url: Option<String>,
    /// Like `--token-file`.
    pub token_file: Option<PathBuf>,
    /// Like `--tls.ca`.
    pub tls_ca: Option<PathBuf>,
    /// Like `--tls.domain`.
    pub tls_domain: Option<String>,
    /// Like `--timeout`, e.g. `"3s"`.
    pub timeout: Option<String>,
    /// Like `--nats.user`.
    pub nats_user: Option<String>,
    /// Like `--nats.password-file`.
    pub nats_password_file: Option<PathBuf>,
    /// Like `--nats.token-file`.
    pub nats_token_file: Option<PathBuf>,
    /// Like `--nats.creds`.
    pub nats_creds: Option<PathBuf>,
    /// Like `--nats.tls-ca`.
    pub nats_tls_ca: Option<PathBuf>,
    /// Like `--nats.tls-cert` (with `nats_tls_key`).
    pub nats_tls_cert: Option<PathBuf>,
    /// Like `--nats.tls-key` (with `nats_tls_cert`).
    pub nats_tls_key: Option<PathBuf>,
    /// Pollers.
    #[serde(default)]
    pub poller: Vec<ServiceEntry>,
    /// Validators.
    #[serde(default)]
    pub validator: Vec<ServiceEntry>,
    /// Engine-drivers.
    #[serde(default)]
    pub driver: Vec<ServiceEntry>,
}

/// A service in the file: a bare URL or `{ name, url }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServiceEntry {
    /// Just the address.
    Url(String),
    /// A named address.
    Named(NamedService),
}

/// `{ name = "...", url = "..." }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedService {
    /// Name usable as a command target.
    pub name: Option<String>,
    /// The gRPC address.
    pub url: String,
}

impl ConfigFile {
    /// Read and parse `path` (TOML, or JSON for `*.json`); relative paths inside are resolved
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let mut file = Self::parse(&text, is_json)
            .map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for p in [
            &mut file.token_file,
            &mut file.tls_ca,
            &mut file.nats_password_file,
            &mut file.nats_token_file,
            &mut file.nats_creds,
            &mut file.nats_tls_ca,
            &mut file.nats_tls_cert,
            &mut file.nats_tls_key,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(file)
    }

    /// Parse the text of a config file.
    pub fn parse(text: &str, is_json: bool) -> Result<Self, FormatError> {
        let value = if is_json {
            serde_json::from_str::<serde_json::Value>(text)?
        } else {
            let doc: toml_edit::DocumentMut = text.parse()?;
            table_to_json(doc.as_table())
        };
        Ok(serde_json::from_value(value)?)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// TOML → JSON value, so both formats share one serde schema.
fn table_to_json(t: &toml_edit::Table) -> serde_json::Value {
    serde_json::Value::Object(t.iter().map(|(k, v)| (k.to_owned(), item_to_json(v))).collect())
}

fn item_to_json(item: &toml_edit::Item) -> serde_json::Value {
    use toml_edit::Item;
    match item {
        Item::None => serde_json::Value::Null,
        Item::Value(v) => value_to_json(v),
        Item::Table(t) => table_to_json(t),
        Item::ArrayOfTables(a) => a.iter().map(table_to_json).collect(),
    }
}

fn value_to_json(v: &toml_edit::Value) -> serde_json::Value {
    use toml_edit::Value;
    match v {
        Value::String(s) => serde_json::Value::String(s.value().clone()),
        Value::Integer(i) => serde_json::Value::from(*i.value()),
        Value::Float(f) => serde_json::Value::from(*f.value()),
        Value::Boolean(b) => serde_json::Value::Bool(*b.value()),
        Value::Datetime(d) => serde_json::Value::String(d.value().to_string()),
        Value::Array(a) => a.iter().map(value_to_json).collect(),
        Value::InlineTable(t) => serde_json::Value::Object(
            t.iter().map(|(k, v)| (k.to_owned(), value_to_json(v))).collect(),
        ),
    }
}

/// One service to talk to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Its kind.
    pub kind: Kind,
    /// Its name from the config file, if any.
    pub name: Option<String>,
    /// Its address as given.
    pub url: String,
}

/// Everything resolved from the config file and the flags.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Services, in the order: pollers, validators, drivers (each: file, then flags).
    pub services: Vec<Service>,
    /// NATS URL for the fleet section.
    pub nats_url: Option<String>,
    /// Chain filter for the fleet section.
    pub chain_id: Option<u64>,
    /// Token file.
    pub token_file: Option<PathBuf>,
    /// TLS CA file.
    pub tls_ca: Option<PathBuf>,
    /// TLS name override.
    pub tls_domain: Option<String>,
    /// Connect and call timeout.
    pub timeout: Duration,
    /// NATS credentials for the fleet section.
    pub nats_auth: NatsAuthArgs,
}

impl Setup {
    /// Merge the config file (if `--config` is given) with the flags.
    pub fn resolve(global: &GlobalArgs, view: Option<&ViewArgs>) -> Result<Self, ConfigError> {
        let file = match &global.config {
            Some(path) => ConfigFile::load(path)?,
            None => ConfigFile::default(),
        };
        Self::merge(file, global, view)
    }

    /// [`Setup::resolve`] with an already loaded file.
    pub fn merge(
        file: ConfigFile,
        global: &GlobalArgs,
        view: Option<&ViewArgs>,
    ) -> Result<Self, ConfigError> {
        let timeout = match (global.timeout, &file.timeout) {
            (Some(t), _) => t,
            (None, Some(s)) => parse_duration(s).map_err(|e| ConfigError::Flag {
                flag: "--timeout",
                reason: format!("invalid value {s:?} in the config file: {e}"),
            })?,
            (None, None) => DEFAULT_TIMEOUT,
        };
        let has_user =
            view.map(|v| v.nats_auth.user.is_some()).unwrap_or(false) || file.nats_user.is_some();
        let has_pw = view.map(|v| v.nats_auth.password_file.is_some()).unwrap_or(false)
            || file.nats_password_file.is_some();
        if has_user != has_pw {
            return Err(ConfigError::Flag {
                flag: "--nats.user/--nats.password-file",
                reason: "give both or neither".into(),
            });
        }
        if timeout.is_zero() {
            return Err(ConfigError::Flag {
                flag: "--timeout",
                reason: "must be above zero".into(),
            });
        }
        let mut services = Vec::new();
        let empty = ViewArgs::default();
        let view = view.unwrap_or(&empty);
        for (kind, entries, flags) in [
            (Kind::Poller, &file.poller, &view.pollers),
            (Kind::Validator, &file.validator, &view.validators),
            (Kind::Driver, &file.driver, &view.drivers),
        ] {
            for e in entries {
                let (name, url) = match e {
                    ServiceEntry::Url(u) => (None, u.clone()),
                    ServiceEntry::Named(n) => (n.name.clone(), n.url.clone()),
                };
                services.push(Service { kind, name, url });
            }
            for url in flags {
                services.push(Service { kind, name: None, url: url.clone() });
            }
        }
        for s in &services {
            if s.url.trim().is_empty() {
                return Err(ConfigError::Flag {
                    flag: flag_of(s.kind),
                    reason: "empty service address".into(),
                });
            }
        }
        Ok(Self {
            services,
            nats_url: view.nats_url.clone().or(file.nats_url),
            chain_id: view.chain_id.or(file.chain_id),
            token_file: global.token_file.clone().or(file.token_file),
            tls_ca: global.tls_ca.clone().or(file.tls_ca),
            tls_domain: global.tls_domain.clone().or(file.tls_domain),
            timeout,
            nats_auth: NatsAuthArgs {
                user: view.nats_auth.user.clone().or(file.nats_user),
                password_file: view.nats_auth.password_file.clone().or(file.nats_password_file),
                token_file: view.nats_auth.token_file.clone().or(file.nats_token_file),
                creds: view.nats_auth.creds.clone().or(file.nats_creds),
                tls_ca: view.nats_auth.tls_ca.clone().or(file.nats_tls_ca),
                tls_cert: view.nats_auth.tls_cert.clone().or(file.nats_tls_cert),
                tls_key: view.nats_auth.tls_key.clone().or(file.nats_tls_key),
            },
        })
    }

    /// Find a command target: a config name (with its kind) or a URL (kind from `kind`, or
    /// from a configured service with that URL, else unknown).
    pub fn target(
        &self,
        kind: Option<Kind>,
        target: &str,
    ) -> Result<(Option<Kind>, String), ConfigError> {
        let matches: Vec<&Service> = self
            .services
            .iter()
            .filter(|s| s.name.as_deref() == Some(target) || s.url == target)
            .filter(|s| kind.is_none_or(|k| k == s.kind))
            .collect();
        match matches.as_slice() {
            [] if looks_like_address(target) => Ok((kind, target.to_owned())),
            [] => Err(ConfigError::Flag {
                flag: "<TARGET>",
                reason: format!(
                    "{target:?} is neither an address (host:port or URL) nor a service name in the config file"
                ),
            }),
            [one] => Ok((Some(one.kind), one.url.clone())),
            [first, rest @ ..] => {
                if rest.iter().all(|s| s.kind == first.kind && s.url == first.url) {
                    Ok((Some(first.kind), first.url.clone()))
                } else {
                    Err(ConfigError::Flag {
                        flag: "<TARGET>",
                        reason: format!(
                            "{target:?} names several services; give the kind or the URL"
                        ),
                    })
                }
            }
        }
    }
}

/// The flag for a kind's services.
pub fn flag_of(kind: Kind) -> &'static str {
    match kind {
        Kind::Poller => "--poller",
        Kind::Validator => "--validator",
        Kind::Driver => "--driver",
    }
}

fn looks_like_address(s: &str) -> bool {
    s.contains("://") || s.contains(':')
}

/// Read a token file: its content without surrounding whitespace; empty, unreadable or not
/// printable ASCII is an error naming `--token-file` (the token itself is never printed).
pub fn read_token(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        flag: "--token-file",
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::Flag {
            flag: "--token-file",
            reason: format!("{} is empty", path.display()),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::Flag {
            flag: "--token-file",
            reason: format!("{} holds characters not allowed in a bearer token", path.display()),
        });
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    const TOML: &str = r#"
chain_id = 10
nats_url = "nats://n:4222"
token_file = "tok"
timeout = "1500ms"
poller = ["http://p:7101"]
validator = [{ name = "val", url = "http://v:7201" }]

[[driver]]
name = "op-reth-0"
url = "http://d0:7301"

[[driver]]
url = "http://d1:7301"
"#;

    fn view_of(args: &[&str]) -> (GlobalArgs, ViewArgs) {
        let cli = Cli::try_parse_from(args).unwrap();
        let Command::Status(v) = cli.command else { panic!() };
        (cli.global, v)
    }

    #[test]
    fn toml_and_json_agree() {
        let t = ConfigFile::parse(TOML, false).unwrap();
        let j = ConfigFile::parse(
            r#"{"chain_id":10,"nats_url":"nats://n:4222","token_file":"tok","timeout":"1500ms",
               "poller":["http://p:7101"],"validator":[{"name":"val","url":"http://v:7201"}],
               "driver":[{"name":"op-reth-0","url":"http://d0:7301"},{"url":"http://d1:7301"}]}"#,
            true,
        )
        .unwrap();
        assert_eq!(format!("{t:?}"), format!("{j:?}"));
        assert_eq!(t.driver.len(), 2);
    }

    #[test]
    fn unknown_keys_and_bad_types_are_errors() {
        let e = ConfigFile::parse("pollers = [\"x\"]", false).unwrap_err().to_string();
        assert!(e.contains("pollers"), "{e}");
        let e = ConfigFile::parse("chain_id = \"ten\"", false).unwrap_err().to_string();
        assert!(e.contains("invalid type"), "{e}");
        assert!(ConfigFile::parse("[[driver]]\nurl = 'x'\nnmae = 'y'", false).is_err());
        assert!(ConfigFile::parse("chain_id = ", false).is_err());
    }

    #[test]
    fn flags_win_and_lists_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.toml");
        std::fs::write(&path, TOML).unwrap();
        let (g, v) = view_of(&[
            "lightctl",
            "status",
            "--config",
            path.to_str().unwrap(),
            "--driver",
            "http://d2:1",
            "--chain-id",
            "11",
        ]);
        let s = Setup::resolve(&g, Some(&v)).unwrap();
        assert_eq!(s.chain_id, Some(11));
        assert_eq!(s.nats_url.as_deref(), Some("nats://n:4222"));
        assert_eq!(s.timeout, Duration::from_millis(1500));
        assert_eq!(s.token_file, Some(dir.path().join("tok")), "relative to the file");
        let drivers: Vec<&str> =
            s.services.iter().filter(|s| s.kind == Kind::Driver).map(|s| s.url.as_str()).collect();
        assert_eq!(drivers, ["http://d0:7301", "http://d1:7301", "http://d2:1"]);
        assert_eq!(s.services[0].kind, Kind::Poller);

        assert_eq!(
            s.target(None, "op-reth-0").unwrap(),
            (Some(Kind::Driver), "http://d0:7301".into())
        );
        assert_eq!(s.target(None, "http://v:7201").unwrap().0, Some(Kind::Validator));
        assert_eq!(s.target(None, "http://x:1").unwrap(), (None, "http://x:1".into()));
        assert_eq!(
            s.target(Some(Kind::Poller), "h:1").unwrap(),
            (Some(Kind::Poller), "h:1".into())
        );
        assert!(s.target(None, "nobody").unwrap_err().to_string().contains("nobody"));
        assert!(s.target(Some(Kind::Poller), "op-reth-0").is_err(), "name of another kind");
    }

    #[test]
    fn bad_values_name_the_flag() {
        let (g, v) = view_of(&["lightctl", "status", "--config", "/nonexistent/ctl.toml"]);
        let e = Setup::resolve(&g, Some(&v)).unwrap_err();
        assert_eq!(e.flag(), "--config");
        let file = ConfigFile { timeout: Some("soon".into()), ..Default::default() };
        let (g, v) = view_of(&["lightctl", "status"]);
        assert_eq!(Setup::merge(file, &g, Some(&v)).unwrap_err().flag(), "--timeout");
        let (g, v) = view_of(&["lightctl", "status", "--poller", " "]);
        assert_eq!(Setup::resolve(&g, Some(&v)).unwrap_err().flag(), "--poller");
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  s3cret\n").unwrap();
        assert_eq!(read_token(&p).unwrap(), "s3cret");
        std::fs::write(&p, "\n").unwrap();
        assert_eq!(read_token(&p).unwrap_err().flag(), "--token-file");
        std::fs::write(&p, "two words").unwrap();
        let e = read_token(&p).unwrap_err().to_string();
        assert!(!e.contains("two words"), "never prints the token: {e}");
        assert!(read_token(&dir.path().join("missing")).is_err());
    }
}
