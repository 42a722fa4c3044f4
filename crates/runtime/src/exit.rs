//! Configuration errors and the exit-64 contract (docs/operations.md#exit-codes): bad configuration prints ONE line
//! `error: <flag>: <reason>` on stderr and exits with status 64 (EX_USAGE).

use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::error::{ConfigError, RunError, TaskDied};

/// Exit status for bad configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: i32 = 64;

/// Exit status when a critical task ended (returned or panicked) before shutdown was
/// requested ([`crate::Shell::spawn_critical`]), and when telemetry cannot be initialised for
/// an internal reason: an internal software error (sysexits EX_SOFTWARE). The log names the
/// task; the orchestrator restarts the process.
pub const EXIT_TASK_DIED: i32 = 70;

/// Exit status when the signal handlers cannot be installed (sysexits EX_OSERR).
pub const EXIT_SIGNALS: i32 = 71;

/// Print `error: <flag>: <reason>` to stderr and exit 64.
pub fn exit_config_error(err: &ConfigError) -> ! {
    eprintln!("{}", err.line());
    std::process::exit(EXIT_CONFIG)
}

/// Parse the process arguments (and `LIGHTCL_*` env twins). `--help`/`--version` print and exit
/// 0; any usage error prints one line naming the flag and exits 64.
pub fn parse_args_or_exit<T: clap::Parser>() -> T {
    parse_from_or_exit(std::env::args_os())
}

/// [`parse_args_or_exit`] over explicit arguments (the first is the program name).
pub fn parse_from_or_exit<T, I, A>(args: I) -> T
where
    T: clap::Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    match T::try_parse_from(args) {
        Ok(t) => t,
        Err(e) => match clap_outcome(&e) {
            ClapOutcome::Print => {
                let _ = e.print();
                std::process::exit(0)
            }
            ClapOutcome::Usage(err) => exit_config_error(&err),
        },
    }
}

/// A service's run error that may be a configuration problem found at run time (exit 64) or a
/// critical task that died (exit 70).
pub trait ConfigFailure {
    /// The configuration error, if this is one.
    fn config_error(&self) -> Option<&ConfigError>;

    /// The critical task that ended before shutdown was requested, if this is why the service
    /// stopped.
    fn task_died(&self) -> Option<&TaskDied> {
        None
    }
}

impl ConfigFailure for RunError {
    fn config_error(&self) -> Option<&ConfigError> {
        match self {
            Self::Config(c) => Some(c),
            Self::Serve(_) | Self::TaskDied(_) => None,
        }
    }

    fn task_died(&self) -> Option<&TaskDied> {
        match self {
            Self::TaskDied(d) => Some(d),
            Self::Config(_) | Self::Serve(_) => None,
        }
    }
}

/// The process contract every service's `main` shares: telemetry named `service_name`,
/// SIGTERM/SIGINT → cancellation, `run(cancel)`, telemetry flushed, and then:
///
/// - a configuration error found at run time: one line `error: <flag>: <reason>`, exit 64
///   ([`EXIT_CONFIG`]);
/// - a critical task that ended before shutdown was requested ([`crate::Shell`]): one line
///   ``error: critical task `<name>` ...``, exit 70 ([`EXIT_TASK_DIED`]);
///
/// other errors are returned (`main` prints them and exits 1).
pub async fn service_main<E, F, Fut>(
    service_name: &str,
    log_format: lightcl_telemetry::LogFormat,
    run: F,
) -> Result<(), E>
where
    E: ConfigFailure,
    F: FnOnce(tokio_util::sync::CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let telemetry = init_telemetry_or_exit(service_name, log_format);
    let cancel = tokio_util::sync::CancellationToken::new();
    if let Err(e) = crate::shutdown_on_signal(cancel.clone()) {
        eprintln!("error: cannot install the signal handlers: {e}");
        std::process::exit(EXIT_SIGNALS);
    }
    let result = run(cancel).await;
    telemetry.shutdown().await;
    if let Err(e) = &result
        && (e.config_error().is_some() || e.task_died().is_some())
    {
        // The error line below is the last thing printed (a reconnecting NATS client, say,
        // would otherwise log after it).
        lightcl_telemetry::mute_logs();
    }
    if let Err(e) = &result {
        if let Some(c) = e.config_error() {
            exit_config_error(c);
        }
        if let Some(d) = e.task_died() {
            eprintln!("error: {}", d.to_string().replace(['\n', '\r'], " "));
            std::process::exit(EXIT_TASK_DIED);
        }
    }
    result
}

/// Initialise telemetry ([`lightcl_telemetry::init`]) or exit: a bad `RUST_LOG` or OTLP
/// endpoint exits 64 naming the variable; an internal misuse (called twice, no runtime) exits 70.
pub fn init_telemetry_or_exit(
    service_name: &str,
    log_format: lightcl_telemetry::LogFormat,
) -> lightcl_telemetry::TelemetryGuard {
    use lightcl_telemetry::{TelemetryConfig, TelemetryError};
    match lightcl_telemetry::init(TelemetryConfig::new(service_name, log_format)) {
        Ok(g) => g,
        Err(e @ TelemetryError::Filter(_)) => exit_config_error(&ConfigError::new(
            "RUST_LOG",
            strip_prefix(&e.to_string(), "RUST_LOG: "),
        )),
        Err(e @ TelemetryError::Exporter(_)) => {
            // The message starts with the variable at fault.
            let text = e.to_string();
            let var = OTEL_VARS
                .iter()
                .find(|v| text.starts_with(&format!("{v}: ")))
                .copied()
                .unwrap_or("OTEL_EXPORTER_OTLP_ENDPOINT");
            exit_config_error(&ConfigError::new(var, strip_prefix(&text, &format!("{var}: "))))
        }
        Err(e) => {
            eprintln!("error: telemetry: {e}");
            std::process::exit(EXIT_TASK_DIED) // EX_SOFTWARE
        }
    }
}

/// The OTLP variables a telemetry error may name (most specific first).
const OTEL_VARS: [&str; 8] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

fn strip_prefix(s: &str, p: &str) -> String {
    s.strip_prefix(p).unwrap_or(s).to_owned()
}

/// What to do with a clap error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClapOutcome {
    /// `--help` or `--version`: print clap's text, exit 0.
    Print,
    /// A usage error: print [`ConfigError::line`], exit 64.
    Usage(ConfigError),
}

/// Map a clap error to help/version output or a [`ConfigError`] naming the flag.
pub fn clap_outcome(e: &clap::Error) -> ClapOutcome {
    let flag = || match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => arg_name(s),
        Some(ContextValue::Strings(v)) => {
            v.iter().map(|s| arg_name(s)).collect::<Vec<_>>().join(", ")
        }
        _ => "<arguments>".to_owned(),
    };
    let value = || match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let reason = match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => return ClapOutcome::Print,
        ErrorKind::MissingRequiredArgument => "required but not set".to_owned(),
        ErrorKind::UnknownArgument => "unknown flag".to_owned(),
        ErrorKind::ValueValidation => {
            let why = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default();
            format!("invalid value {:?}: {why}", value())
        }
        ErrorKind::InvalidValue => {
            let valid = match e.get(ContextKind::ValidValue) {
                Some(ContextValue::Strings(v)) => format!(" (expected one of: {})", v.join(", ")),
                _ => String::new(),
            };
            if value().is_empty() {
                format!("a value is required{valid}")
            } else {
                format!("invalid value {:?}{valid}", value())
            }
        }
        ErrorKind::ArgumentConflict => "conflicts with another flag".to_owned(),
        ErrorKind::TooManyValues | ErrorKind::TooFewValues | ErrorKind::WrongNumberOfValues => {
            "wrong number of values".to_owned()
        }
        _ => {
            // Fallback: clap's own first line without the "error: " prefix.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            first.trim_start_matches("error: ").to_owned()
        }
    };
    ClapOutcome::Usage(ConfigError::new(flag(), reason))
}

/// `--chain-id <CHAIN_ID>` → `--chain-id`.
fn arg_name(s: &str) -> String {
    s.split([' ', '=']).next().unwrap_or(s).to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    #[command(name = "t", version)]
    struct Cli {
        #[arg(long = "chain-id")]
        chain_id: u64,
        #[arg(long = "poll-interval", value_parser = humantime::parse_duration, default_value = "2s")]
        poll_interval: Duration,
        #[arg(long = "log.format", value_parser = ["text", "json"], default_value = "text")]
        log_format: String,
    }

    fn usage(args: &[&str]) -> ConfigError {
        let e = Cli::try_parse_from(args).unwrap_err();
        match clap_outcome(&e) {
            ClapOutcome::Usage(c) => c,
            ClapOutcome::Print => panic!("expected a usage error for {args:?}"),
        }
    }

    #[test]
    fn usage_errors_name_the_flag() {
        let e = usage(&["t", "--chain-id", "abc"]);
        assert_eq!(e.flag, "--chain-id");
        assert!(e.reason.starts_with("invalid value \"abc\""), "{e}");
        assert_eq!(usage(&["t"]).line(), "error: --chain-id: required but not set");
        let e = usage(&["t", "--chain-id", "1", "--poll-interval", "soon"]);
        assert_eq!(e.flag, "--poll-interval");
        let e = usage(&["t", "--chain-id", "1", "--log.format", "xml"]);
        assert_eq!(e.flag, "--log.format");
        assert!(e.reason.contains("text, json"), "{e}");
        let e = usage(&["t", "--chain-id", "1", "--bogus"]);
        assert_eq!((e.flag.as_str(), e.reason.as_str()), ("--bogus", "unknown flag"));
        assert!(!usage(&["t", "--chain-id", "1", "--bogus"]).line().contains('\n'));
    }

    #[test]
    fn help_and_version_print() {
        for args in [["t", "--help"], ["t", "--version"]] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(clap_outcome(&e), ClapOutcome::Print);
        }
    }

    #[test]
    fn line_is_single() {
        let e = ConfigError::new("--grpc.token-file", "cannot read\nsecond line");
        assert_eq!(e.line(), "error: --grpc.token-file: cannot read second line");
    }
}
