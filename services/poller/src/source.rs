//! The trusted external consensus node: `optimism_rollupConfig` (the chain check, at start-up
//! and again while running) and `optimism_syncStatus` (every poll), over JSON-RPC/HTTP with a
//! timeout and a body limit.

use std::time::Duration;

use lightcl_core::{ParseError, Severity, SyncStatus};
use lightcl_rpc::{Client, ClientConfig, Endpoint, NO_PARAMS, RpcError};
use serde_json::Value;

/// Largest `optimism_syncStatus` answer accepted (a real one is a few KiB).
pub const MAX_STATUS_BYTES: usize = 2 * 1024 * 1024;

/// A failed poll or chain check.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Transport, timeout, HTTP, body-size or JSON-RPC failure.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The answer is JSON but not a valid status (the error names the field).
    #[error("optimism_syncStatus: {0}")]
    Parse(#[from] ParseError),
    /// `optimism_rollupConfig` has no usable `l2_chain_id`.
    #[error("optimism_rollupConfig: {0}")]
    BadRollupConfig(String),
    /// The source serves another chain.
    #[error("the source serves L2 chain {actual}, not --chain-id {expected}")]
    WrongChain {
        /// `--chain-id`.
        expected: u64,
        /// The source's `l2_chain_id`.
        actual: u64,
    },
}

impl SourceError {
    /// Metric label: `timeout`, `tls`, `http`, `rpc`, `decode`, `too_large` or `wrong_chain`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rpc(e) => match e.kind() {
                "timeout" => "timeout",
                "too_large" => "too_large",
                "rpc" => "rpc",
                "tls" => "tls",
                "json" | "bad_response" => "decode",
                _ => "http",
            },
            Self::Parse(_) | Self::BadRollupConfig(_) => "decode",
            Self::WrongChain { .. } => "wrong_chain",
        }
    }

    /// A wrong chain is fatal (at start-up; while running the poller refuses the source and
    /// keeps re-checking instead, see [`lightcl_core::poll::ChainGuard`]); an HTTP 401/403 or
    /// a bad URL too; everything else is temporary (the source may be restarting or
    /// mid-upgrade).
    pub fn severity(&self) -> Severity {
        match self {
            Self::WrongChain { .. } => Severity::Fatal,
            Self::Rpc(e) => e.severity(),
            Self::Parse(_) | Self::BadRollupConfig(_) => Severity::Temporary,
        }
    }
}

/// The source client.
#[derive(Debug, Clone)]
pub struct Source {
    client: Client,
}

impl Source {
    /// A client of `endpoint` with a per-request `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration) -> Result<Self, RpcError> {
        Self::with_config(ClientConfig::new(endpoint).with_timeout(timeout))
    }

    /// A client with `config` (its body limit is set to [`MAX_STATUS_BYTES`]).
    pub fn with_config(config: ClientConfig) -> Result<Self, RpcError> {
        Ok(Self { client: Client::new(config.with_max_response_bytes(MAX_STATUS_BYTES))? })
    }

    /// The source endpoint (displays as `scheme://host:port`).
    pub fn endpoint(&self) -> &Endpoint {
        self.client.endpoint()
    }

    /// Checks that the source serves `chain_id` (`optimism_rollupConfig.l2_chain_id`).
    pub async fn check_chain(&self, chain_id: u64) -> Result<(), SourceError> {
        let actual = self.chain_id().await?;
        if actual != chain_id {
            return Err(SourceError::WrongChain { expected: chain_id, actual });
        }
        Ok(())
    }

    /// The L2 chain the source serves now (`optimism_rollupConfig.l2_chain_id`).
    pub async fn chain_id(&self) -> Result<u64, SourceError> {
        let cfg: Value = self.client.request("optimism_rollupConfig", NO_PARAMS).await?;
        l2_chain_id(&cfg)
    }

    /// One `optimism_syncStatus` call, parsed.
    pub async fn sync_status(&self) -> Result<SyncStatus, SourceError> {
        let v: Value = self.client.request("optimism_syncStatus", NO_PARAMS).await?;
        Ok(SyncStatus::from_value(&v)?)
    }
}

/// `l2_chain_id` of a rollup config: a JSON integer, or a decimal/hex string (some
/// implementations encode big integers as strings).
fn l2_chain_id(cfg: &Value) -> Result<u64, SourceError> {
    let bad = |why: &str| SourceError::BadRollupConfig(format!("l2_chain_id {why}"));
    match cfg.get("l2_chain_id") {
        None | Some(Value::Null) => Err(bad("is missing")),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| bad(&format!("{n} is not a u64"))),
        Some(Value::String(s)) => {
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.map_err(|_| bad(&format!("{s:?} is not a chain id")))
        }
        Some(other) => Err(bad(&format!("{other} is not a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chain_id_forms() {
        assert_eq!(l2_chain_id(&json!({"l2_chain_id": 10})).unwrap(), 10);
        assert_eq!(l2_chain_id(&json!({"l2_chain_id": "8453"})).unwrap(), 8453);
        assert_eq!(l2_chain_id(&json!({"l2_chain_id": "0x2105"})).unwrap(), 8453);
        for bad in [json!({}), json!({"l2_chain_id": -1}), json!({"l2_chain_id": "x"})] {
            let e = l2_chain_id(&bad).unwrap_err();
            assert!(e.to_string().contains("l2_chain_id"), "{e}");
            assert_eq!(e.kind(), "decode");
        }
    }

    #[test]
    fn wrong_chain_is_fatal_and_named() {
        let e = SourceError::WrongChain { expected: 10, actual: 8453 };
        assert_eq!(e.severity(), Severity::Fatal);
        assert_eq!(e.kind(), "wrong_chain");
        assert!(e.to_string().contains("--chain-id 10"), "{e}");
    }
}
