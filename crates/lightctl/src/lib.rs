//! # lightctl
//!
//! Operate a lightcl pipeline from one place. `lightctl` speaks the `lightcl.v1` gRPC control
//! API of each service (poller, validator, engine-drivers) and reads the engine-state KV bucket
//! `lightcl-engine` for the whole fleet of drivers:
//!
//! - `lightctl status`: one table (or `--output json`) of the whole pipeline;
//! - `lightctl watch`: the same, live, from the services' `WatchStatus` streams and a KV watch;
//! - `lightctl pause|resume [KIND] <TARGET>` and `lightctl resync <TARGET>`: mutating calls
//!   with the bearer token from `--token-file`.
//!
//! What it decides, and its invariants:
//!
//! - **Exit codes are a contract** ([`exit_code`]): 0 everything answered; 1 at least one
//!   service or the KV bucket could not be read or refused the call for a non-auth reason;
//!   3 a service refused our token (wins over 1); 64 bad flags or configuration (one line
//!   naming the flag). Scripts may rely on them.
//! - **JSON field names are a contract** ([`report`]): snake_case names, hashes as 0x-hex,
//!   enums as lower snake_case words (`l1_mismatch`, `following`, `valid`); fields are only
//!   ever added.
//! - **A failed service never hides the others**: every service is asked concurrently and
//!   each gets its own status or error.
//! - **The token is never printed**, not even in errors.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod fleet;
pub mod render;
pub mod report;

/// Process exit codes that scripts can rely on.
pub mod exit_code {
    /// Everything that was asked answered.
    pub const OK: i32 = 0;
    /// At least one service (or the KV bucket) was unreachable, timed out, is the wrong kind
    /// of service, or failed the call. The output still reports everything that answered.
    pub const PARTIAL: i32 = 1;
    /// A service refused the bearer token (missing, wrong, or mutations disabled there).
    /// Takes precedence over [`PARTIAL`].
    pub const UNAUTHENTICATED: i32 = 3;
    /// Bad command line or configuration (sysexits EX_USAGE).
    pub const USAGE: i32 = 64;

    /// The code for several outcomes: unauthenticated wins, then partial, then ok.
    pub fn combine(codes: impl IntoIterator<Item = i32>) -> i32 {
        codes.into_iter().fold(OK, |acc, c| match (acc, c) {
            (USAGE, _) | (_, USAGE) => USAGE,
            (UNAUTHENTICATED, _) | (_, UNAUTHENTICATED) => UNAUTHENTICATED,
            (PARTIAL, _) | (_, PARTIAL) => PARTIAL,
            _ => OK,
        })
    }
}

pub use cli::{Cli, Kind, Output};
pub use client::{CallError, Connector};
pub use commands::run;
pub use report::Report;

#[cfg(test)]
mod tests {
    use super::exit_code::*;

    #[test]
    fn exit_codes_combine_by_severity() {
        assert_eq!(combine([]), OK);
        assert_eq!(combine([OK, OK]), OK);
        assert_eq!(combine([OK, PARTIAL, OK]), PARTIAL);
        assert_eq!(combine([PARTIAL, UNAUTHENTICATED]), UNAUTHENTICATED);
        assert_eq!(combine([UNAUTHENTICATED, PARTIAL]), UNAUTHENTICATED);
        assert_eq!(combine([UNAUTHENTICATED, USAGE]), USAGE);
    }
}
