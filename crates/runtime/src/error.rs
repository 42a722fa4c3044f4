//! The runtime's error types, in one module that depends on no other module of the crate (so
//! `admin`, `grpc`, `servers`, `shell` and `exit` can all use them without importing each
//! other): [`ConfigError`] (exit 64), [`ServeError`] and [`StartError`] (servers that cannot
//! start), [`TaskDied`] (a critical task ended: exit 70) and [`RunError`], what every service's
//! `run` returns.

use std::fmt;
use std::net::SocketAddr;

/// A configuration problem, naming the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct ConfigError {
    /// The flag, e.g. `--grpc.token-file`.
    pub flag: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// A config error for `flag`.
    pub fn new(flag: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { flag: flag.into(), reason: reason.into() }
    }

    /// The one line printed on exit: `error: <flag>: <reason>`.
    pub fn line(&self) -> String {
        // Keep it one line whatever the reason contains.
        format!("error: {}: {}", self.flag, self.reason).replace(['\n', '\r'], " ")
    }
}

/// A server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("{flag}: cannot listen on {addr}: {source}")]
    Bind {
        /// The flag that configures this address.
        flag: &'static str,
        /// The requested address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS configuration was rejected.
    #[error("--grpc.tls-cert/--grpc.tls-key: invalid TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[source] tonic_reflection::server::Error),
}

impl ServeError {
    /// As a [`ConfigError`] for [`exit_config_error`](crate::exit_config_error) (bind and TLS
    /// problems are configuration).
    pub fn to_config_error(&self) -> ConfigError {
        match self {
            Self::Bind { flag, addr, source } => {
                ConfigError::new(*flag, format!("cannot listen on {addr}: {source}"))
            }
            Self::Tls(e) => {
                ConfigError::new("--grpc.tls-cert", format!("invalid TLS configuration: {e}"))
            }
            Self::Reflection(e) => {
                ConfigError::new("<internal>", format!("gRPC reflection setup failed: {e}"))
            }
        }
    }
}

/// Why the servers did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--grpc.tls-cert`/`--grpc.tls-key` are unusable.
    #[error("{}", .0.line())]
    Config(ConfigError),
    /// A listen address could not be bound.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// How a critical task ended before shutdown was requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    /// It returned (`Ok` or `()`) although nobody asked it to stop.
    Returned,
    /// It panicked, with the panic message.
    Panicked(String),
}

impl fmt::Display for TaskEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Returned => f.write_str("returned before shutdown was requested"),
            Self::Panicked(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// A critical task ended on its own: the service stops and the process exits
/// [`EXIT_TASK_DIED`](crate::EXIT_TASK_DIED).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("critical task `{task}` {end}; the service stopped")]
pub struct TaskDied {
    /// The name given to [`Shell::spawn_critical`](crate::Shell::spawn_critical).
    pub task: String,
    /// How it ended.
    pub end: TaskEnd,
}

/// Why a service stopped with an error (every service's `run` returns it).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A misconfiguration detected at run time, e.g. a peer serving another chain (exit 64).
    #[error("{}", .0.line())]
    Config(ConfigError),
    /// A server could not start.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A critical task ended (returned or panicked) before shutdown was requested
    /// ([`Shell::spawn_critical`](crate::Shell::spawn_critical)); the process exits
    /// [`EXIT_TASK_DIED`](crate::EXIT_TASK_DIED) (70).
    #[error(transparent)]
    TaskDied(#[from] TaskDied),
}

impl From<ConfigError> for RunError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

impl From<StartError> for RunError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Config(c) => Self::Config(c),
            StartError::Serve(s) => Self::Serve(s),
        }
    }
}
