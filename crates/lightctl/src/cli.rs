//! The command line. Flags use dotted names with `LIGHTCL_*` env twins like the services
//! (docs/operations.md#lightctl); everything can also come from a `--config` file (see [`crate::config`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate a lightcl pipeline: status, watch, pause/resume, resync.
///
/// Exit codes: 0 ok; 1 a service or the KV bucket was unreachable or failed (partial output);
/// 3 a service refused the token; 64 bad flags or configuration.
#[derive(Debug, Clone, Parser)]
#[command(name = "lightctl", version, about, long_about = None, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The exit-code contract, shown by `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:\n  0   every service (and the KV bucket) answered\n  \
1   a service or the KV bucket was unreachable, timed out, is the wrong service, or failed \
(output still shows the rest)\n  3   a service refused the bearer token\n  64  bad flags or \
configuration (one line naming the flag)";

/// Options shared by every command.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Config file (TOML, or JSON when the name ends in `.json`) listing services, NATS URL,
    /// chain id, token file and TLS CA. Command-line flags win; service lists are merged.
    #[arg(long = "config", env = "LIGHTCL_CTL_CONFIG", value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,

    /// File holding the bearer token sent with every call (needed for pause/resume/resync,
    /// and for reads where a service sets --grpc.auth-reads).
    #[arg(long = "token-file", env = "LIGHTCL_TOKEN_FILE", value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate to verify the services' TLS certificates. Service addresses without
    /// a scheme then default to https://. Without it, https:// uses the system roots.
    #[arg(long = "tls.ca", env = "LIGHTCL_TLS_CA", value_name = "PATH", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Name to verify in the services' TLS certificates (default: the host of each URL).
    #[arg(long = "tls.domain", env = "LIGHTCL_TLS_DOMAIN", value_name = "NAME", global = true)]
    pub tls_domain: Option<String>,

    /// Timeout for connecting and for each call (e.g. `3s`, `500ms`).
    #[arg(long = "timeout", env = "LIGHTCL_CTL_TIMEOUT", value_name = "DURATION",
          value_parser = parse_duration, global = true)]
    pub timeout: Option<Duration>,

    /// Output format: a human table, or JSON for scripts (one document; `watch` prints one
    /// JSON document per line).
    #[arg(long = "output", short = 'o', env = "LIGHTCL_CTL_OUTPUT", value_enum,
          default_value_t = Output::Text, global = true)]
    pub output: Output,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Tables for people.
    Text,
    /// Stable JSON for scripts.
    Json,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Show the whole pipeline once: poller, validator, each engine-driver, and the fleet's
    /// engine states from the KV bucket.
    Status(ViewArgs),
    /// Live-updating `status` (WatchStatus streams and a KV watch); Ctrl-C to stop.
    Watch(WatchArgs),
    /// Pause a service: `lightctl pause [poller|validator|driver] <URL|NAME>`. Without the
    /// kind it is looked up in the config file, or asked from the service (gRPC reflection).
    Pause(PauseArgs),
    /// Resume a paused service: `lightctl resume [poller|validator|driver] <URL|NAME>`.
    Resume(TargetArgs),
    /// Make an engine-driver re-read its EL's heads and re-plan: `lightctl resync <URL|NAME>`.
    Resync(ResyncArgs),
}

/// Which services to show.
#[derive(Debug, Clone, Default, Args)]
pub struct ViewArgs {
    /// A poller's gRPC control address (repeatable).
    #[arg(long = "poller", value_name = "URL")]
    pub pollers: Vec<String>,
    /// A validator's gRPC control address (repeatable).
    #[arg(long = "validator", value_name = "URL")]
    pub validators: Vec<String>,
    /// An engine-driver's gRPC control address (repeatable).
    #[arg(long = "driver", value_name = "URL")]
    pub drivers: Vec<String>,
    /// NATS server URL to read the fleet's engine states (KV bucket `lightcl-engine`) from.
    /// Without it (here or in the config) the fleet section is skipped.
    #[arg(long = "nats.url", env = "LIGHTCL_NATS_URL", value_name = "URL")]
    pub nats_url: Option<String>,
    /// Only show the fleet entries of this chain (keys `<chain-id>.*`).
    #[arg(long = "chain-id", env = "LIGHTCL_CHAIN_ID", value_name = "ID")]
    pub chain_id: Option<u64>,
    /// NATS credentials, as the services take them.
    #[command(flatten)]
    pub nats_auth: NatsAuthArgs,
}

/// NATS authentication for the fleet section (same flags and env twins as the services).
#[derive(Debug, Clone, Default, Args)]
pub struct NatsAuthArgs {
    /// NATS user name (with --nats.password-file).
    #[arg(id = "nats_user", long = "nats.user", env = "LIGHTCL_NATS_USER", value_name = "NAME")]
    pub user: Option<String>,
    /// File holding the password of --nats.user.
    #[arg(
        id = "nats_password_file",
        long = "nats.password-file",
        env = "LIGHTCL_NATS_PASSWORD_FILE",
        value_name = "PATH"
    )]
    pub password_file: Option<PathBuf>,
    /// File holding a NATS authentication token.
    #[arg(
        id = "nats_token_file",
        long = "nats.token-file",
        env = "LIGHTCL_NATS_TOKEN_FILE",
        value_name = "PATH"
    )]
    pub token_file: Option<PathBuf>,
    /// NATS credentials file (JWT + nkey).
    #[arg(id = "nats_creds", long = "nats.creds", env = "LIGHTCL_NATS_CREDS", value_name = "PATH")]
    pub creds: Option<PathBuf>,
    /// Extra root CA (PEM) for NATS TLS (TLS is then required).
    #[arg(
        id = "nats_tls_ca",
        long = "nats.tls-ca",
        env = "LIGHTCL_NATS_TLS_CA",
        value_name = "PATH"
    )]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (chain) presented to NATS for mutual TLS (with --nats.tls-key;
    /// TLS is then required).
    #[arg(
        id = "nats_tls_cert",
        long = "nats.tls-cert",
        env = "LIGHTCL_NATS_TLS_CERT",
        value_name = "PATH",
        requires = "nats_tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --nats.tls-cert.
    #[arg(
        id = "nats_tls_key",
        long = "nats.tls-key",
        env = "LIGHTCL_NATS_TLS_KEY",
        value_name = "PATH",
        requires = "nats_tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// `watch` options.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Which services to show.
    #[command(flatten)]
    pub view: ViewArgs,
    /// Stop after printing this many updates (exit code as for `status`); default: until
    /// Ctrl-C.
    #[arg(long = "updates", value_name = "N")]
    pub updates: Option<u64>,
    /// Minimum time between two redraws (changes in between are coalesced).
    #[arg(long = "redraw-interval", value_name = "DURATION", default_value = "200ms",
          value_parser = parse_duration)]
    pub redraw_interval: Duration,
}

/// `pause` options.
#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// The service.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Why (logged by the service).
    #[arg(long = "reason", value_name = "TEXT", default_value = "")]
    pub reason: String,
}

/// A service to act on: `[KIND] <URL|NAME>`.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// `[poller|validator|driver] <URL|NAME>`.
    #[arg(value_name = "[KIND] TARGET", num_args = 1..=2, required = true)]
    pub args: Vec<String>,
}

/// `resync` options.
#[derive(Debug, Clone, Args)]
pub struct ResyncArgs {
    /// The engine-driver's address or config name.
    #[arg(value_name = "URL|NAME")]
    pub target: String,
}

/// A kind of lightcl service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    /// The poller (`lightcl.v1.PollerControl`).
    Poller,
    /// The validator (`lightcl.v1.ValidatorControl`).
    Validator,
    /// An engine-driver (`lightcl.v1.EngineDriverControl`).
    Driver,
}

impl Kind {
    /// The kind's word on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poller => "poller",
            Self::Validator => "validator",
            Self::Driver => "driver",
        }
    }

    /// The fully-qualified gRPC service name.
    pub fn grpc_service(self) -> &'static str {
        match self {
            Self::Poller => "lightcl.v1.PollerControl",
            Self::Validator => "lightcl.v1.ValidatorControl",
            Self::Driver => "lightcl.v1.EngineDriverControl",
        }
    }

    /// The kind serving `service`, if any.
    pub fn from_grpc_service(service: &str) -> Option<Self> {
        [Self::Poller, Self::Validator, Self::Driver]
            .into_iter()
            .find(|k| k.grpc_service() == service)
    }

    /// Parse `poller`, `validator`, `driver` (also `engine-driver`).
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "poller" => Some(Self::Poller),
            "validator" => Some(Self::Validator),
            "driver" | "engine-driver" => Some(Self::Driver),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `2s`, `500ms`, ... (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_targets_and_globals_anywhere() {
        let cli = Cli::try_parse_from([
            "lightctl",
            "pause",
            "poller",
            "http://h:1",
            "--reason",
            "maint",
            "--token-file",
            "/t",
        ])
        .unwrap();
        assert_eq!(cli.global.token_file.as_deref(), Some(std::path::Path::new("/t")));
        let Command::Pause(p) = cli.command else { panic!("pause expected") };
        assert_eq!(p.target.args, ["poller", "http://h:1"]);
        assert_eq!(p.reason, "maint");

        let cli = Cli::try_parse_from([
            "lightctl", "-o", "json", "status", "--driver", "a", "--driver", "b",
        ])
        .unwrap();
        assert_eq!(cli.global.output, Output::Json);
        let Command::Status(v) = cli.command else { panic!("status expected") };
        assert_eq!(v.drivers, ["a", "b"]);

        // The NATS flags have their own ids: no clash with the global --token-file/--tls.ca.
        let cli = Cli::try_parse_from([
            "lightctl",
            "status",
            "--driver",
            "a",
            "--token-file",
            "/t",
            "--tls.ca",
            "/ca",
            "--nats.token-file",
            "/n",
            "--nats.tls-ca",
            "/nca",
        ])
        .unwrap();
        assert_eq!(cli.global.token_file.as_deref(), Some(std::path::Path::new("/t")));
        assert_eq!(cli.global.tls_ca.as_deref(), Some(std::path::Path::new("/ca")));
        let Command::Status(v) = cli.command else { panic!("status expected") };
        assert_eq!(v.nats_auth.token_file.as_deref(), Some(std::path::Path::new("/n")));
        assert_eq!(v.nats_auth.tls_ca.as_deref(), Some(std::path::Path::new("/nca")));

        assert!(Cli::try_parse_from(["lightctl", "pause"]).is_err());
        assert!(Cli::try_parse_from(["lightctl", "pause", "a", "b", "c"]).is_err());
        assert!(Cli::try_parse_from(["lightctl", "status", "--timeout", "soon"]).is_err());
    }

    #[test]
    fn nats_tls_cert_and_key_require_each_other() {
        for (given, missing) in
            [("--nats.tls-cert", "--nats.tls-key"), ("--nats.tls-key", "--nats.tls-cert")]
        {
            let e = Cli::try_parse_from(["lightctl", "status", given, "/f.pem"])
                .expect_err("one without the other");
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument, "{e}");
            assert!(e.to_string().contains(missing), "{given}: {e}");
        }
        let cli = Cli::try_parse_from([
            "lightctl",
            "status",
            "--nats.tls-cert",
            "/c.pem",
            "--nats.tls-key",
            "/k.pem",
        ])
        .unwrap();
        let Command::Status(v) = cli.command else { panic!("status expected") };
        assert_eq!(v.nats_auth.tls_cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(v.nats_auth.tls_key.as_deref(), Some(std::path::Path::new("/k.pem")));
    }

    #[test]
    fn kinds_round_trip() {
        for k in [Kind::Poller, Kind::Validator, Kind::Driver] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
            assert_eq!(Kind::from_grpc_service(k.grpc_service()), Some(k));
        }
        assert_eq!(Kind::parse("engine-driver"), Some(Kind::Driver));
        assert_eq!(Kind::parse("nats"), None);
    }
}
