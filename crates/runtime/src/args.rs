//! Flags shared by every lightcl service (docs/operations.md#common-service-flags), to be `#[command(flatten)]`ed.
//!
//! Listen addresses are optional on the command line: each service supplies its own default
//! port through [`CommonArgs::grpc_addr_or`] / [`CommonArgs::admin_addr_or`] (see [`ports`]), so
//! three services can run side by side on one host with no flags.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use lightcl_telemetry::LogFormat;
use tonic::transport::{Identity, ServerTlsConfig};

use crate::error::ConfigError;
use crate::grpc::Auth;

/// Default listen ports per service (bound on `0.0.0.0`).
pub mod ports {
    /// poller gRPC control port.
    pub const POLLER_GRPC: u16 = 7101;
    /// poller admin HTTP port.
    pub const POLLER_ADMIN: u16 = 7102;
    /// validator gRPC control port.
    pub const VALIDATOR_GRPC: u16 = 7201;
    /// validator admin HTTP port.
    pub const VALIDATOR_ADMIN: u16 = 7202;
    /// engine-driver gRPC control port.
    pub const ENGINE_DRIVER_GRPC: u16 = 7301;
    /// engine-driver admin HTTP port.
    pub const ENGINE_DRIVER_ADMIN: u16 = 7302;
}

/// Flags every service has. Flatten into the service's `clap::Parser`:
///
/// ```
/// use clap::Parser;
/// use lightcl_runtime::{CommonArgs, ports};
///
/// #[derive(Parser)]
/// struct Cli {
///     #[command(flatten)]
///     common: CommonArgs,
/// }
/// let cli = Cli::parse_from(["poller", "--chain-id", "10"]);
/// assert_eq!(cli.common.chain_id, 10);
/// assert_eq!(cli.common.grpc_addr_or(ports::POLLER_GRPC).port(), 7101);
/// ```
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// L2 chain id this instance serves.
    #[arg(long = "chain-id", env = "LIGHTCL_CHAIN_ID")]
    pub chain_id: u64,

    /// gRPC control API listen address (`host:port`). Default: `0.0.0.0:<service port>`
    /// (poller 7101, validator 7201, engine-driver 7301).
    #[arg(long = "grpc.addr", env = "LIGHTCL_GRPC_ADDR", value_name = "HOST:PORT",
          value_parser = parse_listen_addr)]
    pub grpc_addr: Option<SocketAddr>,

    /// Admin HTTP listen address for /live, /ready, /metrics. Default: `0.0.0.0:<service
    /// port>` (poller 7102, validator 7202, engine-driver 7302).
    #[arg(long = "admin.addr", env = "LIGHTCL_ADMIN_ADDR", value_name = "HOST:PORT",
          value_parser = parse_listen_addr)]
    pub admin_addr: Option<SocketAddr>,

    /// File holding the bearer token required for mutating control calls (Pause, Resume,
    /// Resync), and with --grpc.auth-reads for read calls too. Without it mutating calls are
    /// refused.
    #[arg(long = "grpc.token-file", env = "LIGHTCL_GRPC_TOKEN_FILE", value_name = "PATH")]
    pub grpc_token_file: Option<PathBuf>,

    /// Also require the bearer token for the read calls GetStatus and WatchStatus (gRPC health
    /// and reflection stay open for probes). Needs --grpc.token-file.
    #[arg(
        long = "grpc.auth-reads",
        env = "LIGHTCL_GRPC_AUTH_READS",
        alias = "grpc.require-token-for-reads",
        default_value_t = false
    )]
    pub grpc_auth_reads: bool,

    /// PEM certificate chain for gRPC TLS (needs --grpc.tls-key).
    #[arg(long = "grpc.tls-cert", env = "LIGHTCL_GRPC_TLS_CERT", value_name = "PATH")]
    pub grpc_tls_cert: Option<PathBuf>,

    /// PEM private key for gRPC TLS (needs --grpc.tls-cert).
    #[arg(long = "grpc.tls-key", env = "LIGHTCL_GRPC_TLS_KEY", value_name = "PATH")]
    pub grpc_tls_key: Option<PathBuf>,

    /// Log format: text or json.
    #[arg(long = "log.format", env = "LIGHTCL_LOG_FORMAT", default_value = "text",
          value_parser = parse_log_format)]
    pub log_format: LogFormat,

    /// How long to drain on SIGTERM/SIGINT before exiting (e.g. `10s`, `500ms`).
    #[arg(long = "shutdown-grace", env = "LIGHTCL_SHUTDOWN_GRACE", default_value = "10s",
          value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

impl CommonArgs {
    /// The checks every service's `into_config` starts with: `--chain-id` above 0.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.chain_id == 0 {
            return Err(ConfigError::new("--chain-id", "must be a positive chain id"));
        }
        Ok(())
    }

    /// `--grpc.addr`, or `0.0.0.0:<default_port>`.
    pub fn grpc_addr_or(&self, default_port: u16) -> SocketAddr {
        self.grpc_addr.unwrap_or_else(|| any_addr(default_port))
    }

    /// `--admin.addr`, or `0.0.0.0:<default_port>`.
    pub fn admin_addr_or(&self, default_port: u16) -> SocketAddr {
        self.admin_addr.unwrap_or_else(|| any_addr(default_port))
    }

    /// The control API auth from `--grpc.token-file` and `--grpc.auth-reads`.
    /// The token is the file's content with surrounding whitespace removed; an unreadable or
    /// empty file is a [`ConfigError`] naming `--grpc.token-file`.
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        let token = match &self.grpc_token_file {
            None => None,
            Some(path) => Some(read_token(path)?),
        };
        if token.is_none() && self.grpc_auth_reads {
            return Err(ConfigError::new(
                "--grpc.auth-reads",
                "needs --grpc.token-file (no token to check reads against)",
            ));
        }
        Ok(Auth::new(token, self.grpc_auth_reads))
    }

    /// TLS config from `--grpc.tls-cert`/`--grpc.tls-key` (both or neither).
    pub fn tls(&self) -> Result<Option<ServerTlsConfig>, ConfigError> {
        match (&self.grpc_tls_cert, &self.grpc_tls_key) {
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(ConfigError::new("--grpc.tls-key", "required when --grpc.tls-cert is set"))
            }
            (None, Some(_)) => {
                Err(ConfigError::new("--grpc.tls-cert", "required when --grpc.tls-key is set"))
            }
            (Some(cert), Some(key)) => {
                let read = |flag: &str, p: &PathBuf| {
                    std::fs::read(p).map_err(|e| {
                        ConfigError::new(flag, format!("cannot read {}: {e}", p.display()))
                    })
                };
                let cert = read("--grpc.tls-cert", cert)?;
                let key = read("--grpc.tls-key", key)?;
                if !String::from_utf8_lossy(&cert).contains("-----BEGIN") {
                    return Err(ConfigError::new("--grpc.tls-cert", "not a PEM file"));
                }
                if !String::from_utf8_lossy(&key).contains("-----BEGIN") {
                    return Err(ConfigError::new("--grpc.tls-key", "not a PEM file"));
                }
                Ok(Some(ServerTlsConfig::new().identity(Identity::from_pem(cert, key))))
            }
        }
    }
}

fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

fn read_token(path: &PathBuf) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new("--grpc.token-file", format!("cannot read {}: {e}", path.display()))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::new("--grpc.token-file", format!("{} is empty", path.display())));
    }
    Ok(token.to_owned())
}

/// clap value parser for a listen address: `ip:port`, `[v6]:port` or `hostname:port` (resolved
/// once, first address wins).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err("expected host:port".to_owned());
    }
    std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_owned())
}

/// clap value parser for humantime durations (`2s`, `500ms`, `1m 30s`).
pub fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// clap value parser for [`LogFormat`].
pub fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::exit::{ClapOutcome, clap_outcome};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults() {
        let c = Cli::try_parse_from(["t", "--chain-id", "10"]).unwrap().common;
        assert_eq!(c.chain_id, 10);
        assert_eq!(c.grpc_addr_or(ports::VALIDATOR_GRPC), "0.0.0.0:7201".parse().unwrap());
        assert_eq!(c.admin_addr_or(ports::VALIDATOR_ADMIN), "0.0.0.0:7202".parse().unwrap());
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert_eq!(c.log_format, LogFormat::Text);
        assert!(!c.grpc_auth_reads);
        assert!(c.tls().unwrap().is_none());
        assert!(!c.auth().unwrap().has_token());
    }

    #[test]
    fn explicit_values() {
        let c = Cli::try_parse_from([
            "t",
            "--chain-id",
            "8453",
            "--grpc.addr",
            "127.0.0.1:1",
            "--admin.addr",
            "127.0.0.1:2",
            "--log.format",
            "json",
            "--shutdown-grace",
            "500ms",
            "--grpc.auth-reads",
        ])
        .unwrap()
        .common;
        assert_eq!(c.grpc_addr_or(9), "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.admin_addr_or(9), "127.0.0.1:2".parse().unwrap());
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.shutdown_grace, Duration::from_millis(500));
        assert!(c.grpc_auth_reads);
        let e = c.auth().unwrap_err();
        assert_eq!(e.flag, "--grpc.auth-reads");
        assert!(e.reason.contains("--grpc.token-file"), "{e}");
        // The earlier name still works.
        let c = Cli::try_parse_from(["t", "--chain-id", "1", "--grpc.require-token-for-reads"])
            .unwrap()
            .common;
        assert!(c.grpc_auth_reads);
        let c = Cli::try_parse_from(["t", "--chain-id", "1", "--admin.addr", "localhost:9000"])
            .unwrap()
            .common;
        assert_eq!(c.admin_addr_or(1).port(), 9000);
        assert!(c.admin_addr_or(1).ip().is_loopback());
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (args, flag) in [
            (vec!["t", "--chain-id", "x"], "--chain-id"),
            (vec!["t", "--chain-id", "1", "--grpc.addr", "nohost"], "--grpc.addr"),
            (vec!["t", "--chain-id", "1", "--admin.addr", "127.0.0.1:99999"], "--admin.addr"),
            (vec!["t", "--chain-id", "1", "--shutdown-grace", "10"], "--shutdown-grace"),
            (vec!["t", "--chain-id", "1", "--log.format", "xml"], "--log.format"),
        ] {
            let e = Cli::try_parse_from(&args).unwrap_err();
            match clap_outcome(&e) {
                ClapOutcome::Usage(c) => assert_eq!(c.flag, flag, "{args:?}: {c}"),
                ClapOutcome::Print => panic!("{args:?}"),
            }
        }
    }

    #[test]
    fn token_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("token");
        std::fs::write(&good, "  s3cret\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let parse = |p: &std::path::Path| {
            Cli::try_parse_from(["t", "--chain-id", "1", "--grpc.token-file", p.to_str().unwrap()])
                .unwrap()
                .common
        };
        assert!(parse(&good).auth().unwrap().has_token());
        let e = parse(&empty).auth().unwrap_err();
        assert_eq!(e.flag, "--grpc.token-file");
        let e = parse(&dir.path().join("missing")).auth().unwrap_err();
        assert_eq!(e.flag, "--grpc.token-file");
        assert!(e.reason.contains("missing"), "{e}");
    }

    #[test]
    fn tls_needs_both_files() {
        let c = Cli::try_parse_from(["t", "--chain-id", "1", "--grpc.tls-cert", "/nonexistent"])
            .unwrap()
            .common;
        assert_eq!(c.tls().unwrap_err().flag, "--grpc.tls-key");
        let c = Cli::try_parse_from([
            "t",
            "--chain-id",
            "1",
            "--grpc.tls-cert",
            "/nonexistent/c",
            "--grpc.tls-key",
            "/nonexistent/k",
        ])
        .unwrap()
        .common;
        assert_eq!(c.tls().unwrap_err().flag, "--grpc.tls-cert");
    }
}
