//! The execution client's authenticated RPC: forkchoice updates and block reads, mapped onto
//! the planner's inputs.

use std::time::Duration;

use alloy_primitives::B256;
use alloy_rpc_types_engine::JwtSecret;
use lightcl_core::Severity;
use lightcl_core::engine::{ElBlock, ElHeads, FcuOutcome, Forkchoice};
use lightcl_core::status::{BlockId, parse_rpc_block, to_quantity};
use lightcl_jsonrpc::{Client, ClientConfig, RpcError};

use crate::rpc::FullHeads;
use serde_json::{Value, json};

/// JSON-RPC error code of an invalid forkchoice state.
pub const INVALID_FORKCHOICE_STATE: i64 = -38002;

/// A start-up check of the EL failed.
#[derive(Debug, thiserror::Error)]
pub enum ElError {
    /// The EL could not be reached or answered garbage (temporary: retry).
    #[error("execution client unavailable: {0}")]
    Unavailable(RpcError),
    /// The EL refused our JWT (HTTP 401/403): the secret does not match.
    #[error(
        "execution client rejected our JWT ({0}): --l2.jwt-secret does not match the EL's secret"
    )]
    Unauthorized(RpcError),
    /// The EL does not support `engine_forkchoiceUpdatedV3`.
    #[error("execution client lacks engine_forkchoiceUpdatedV3 (capabilities: {0})")]
    MissingCapability(String),
    /// The EL serves another chain.
    #[error("execution client serves chain {actual}, expected --chain-id {expected}")]
    WrongChain {
        /// `--chain-id`.
        expected: u64,
        /// `eth_chainId`.
        actual: u64,
    },
    /// A response could not be understood.
    #[error("execution client answered {method} with {reason}")]
    BadAnswer {
        /// Method.
        method: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The client could not be built.
    #[error("engine client: {0}")]
    Config(RpcError),
}

impl ElError {
    /// How the caller reacts: retry, or stop and tell the operator.
    pub fn severity(&self) -> Severity {
        match self {
            Self::Unavailable(_) | Self::BadAnswer { .. } => Severity::Temporary,
            Self::Unauthorized(_)
            | Self::MissingCapability(_)
            | Self::WrongChain { .. }
            | Self::Config(_) => Severity::Fatal,
        }
    }

    fn from_rpc(e: RpcError) -> Self {
        match e {
            RpcError::HttpStatus { status: 401 | 403, .. } => Self::Unauthorized(e),
            other if other.severity() == Severity::Fatal => Self::Unauthorized(other),
            other => Self::Unavailable(other),
        }
    }
}

/// Client of one EL's auth RPC (fresh HS256 JWT per request).
#[derive(Debug, Clone)]
pub struct EngineClient {
    fcu: Client,
    reads: Client,
}

impl EngineClient {
    /// A client for `url` with `secret`; forkchoice updates time out after `fcu_timeout`,
    /// reads after `read_timeout`.
    pub fn new(
        url: url::Url,
        secret: JwtSecret,
        fcu_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, ElError> {
        let fcu =
            Client::new(ClientConfig::new(url.clone()).with_jwt(secret).with_timeout(fcu_timeout))
                .map_err(ElError::Config)?;
        let reads = Client::new(ClientConfig::new(url).with_jwt(secret).with_timeout(read_timeout))
            .map_err(ElError::Config)?;
        Ok(Self { fcu, reads })
    }

    /// The endpoint.
    pub fn url(&self) -> &url::Url {
        self.reads.url()
    }

    /// Start-up checks: `engine_exchangeCapabilities` lists FCU V3 and `eth_chainId` matches.
    pub async fn check(&self, chain_id: u64) -> Result<(), ElError> {
        let caps = self
            .reads
            .call("engine_exchangeCapabilities", json!([["engine_forkchoiceUpdatedV3"]]))
            .await
            .map_err(ElError::from_rpc)?;
        let list = caps.as_array().ok_or_else(|| ElError::BadAnswer {
            method: "engine_exchangeCapabilities",
            reason: format!("a non-array {caps}"),
        })?;
        if !list.iter().any(|c| c == "engine_forkchoiceUpdatedV3") {
            return Err(ElError::MissingCapability(caps.to_string()));
        }
        let v = self.reads.call("eth_chainId", json!([])).await.map_err(ElError::from_rpc)?;
        let actual = v
            .as_str()
            .and_then(|s| s.strip_prefix("0x"))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| ElError::BadAnswer { method: "eth_chainId", reason: format!("{v}") })?;
        if actual != chain_id {
            return Err(ElError::WrongChain { expected: chain_id, actual });
        }
        Ok(())
    }

    /// `engine_forkchoiceUpdatedV3(state, null)`, mapped onto the planner's outcomes. The
    /// second value is true when the EL was reached (any answer, even an error object).
    pub async fn forkchoice_updated(&self, fc: &Forkchoice) -> (FcuOutcome, bool) {
        let state = json!({
            "headBlockHash": fc.head.hash,
            "safeBlockHash": fc.safe.hash,
            "finalizedBlockHash": fc.finalized.hash,
        });
        match self.fcu.call("engine_forkchoiceUpdatedV3", json!([state, null])).await {
            Ok(v) => (parse_fcu_result(&v), true),
            Err(RpcError::Rpc { error, .. }) if error.code == INVALID_FORKCHOICE_STATE => {
                (FcuOutcome::InvalidForkchoiceState { message: error.message }, true)
            }
            Err(e @ RpcError::Rpc { .. }) => (FcuOutcome::Error { message: e.to_string() }, true),
            Err(e) => (FcuOutcome::Error { message: e.to_string() }, false),
        }
    }

    /// The EL's canonical block at `number`.
    pub async fn block_at(&self, number: u64) -> ElBlock {
        match self.block(&to_quantity(number)).await {
            Ok(Some(b)) => ElBlock::Found(b),
            Ok(None) => ElBlock::NotFound,
            Err(e) => ElBlock::Error(e),
        }
    }

    /// The EL's `latest`, `safe` and `finalized` blocks.
    pub async fn heads(&self) -> Result<ElHeads, String> {
        self.heads_full().await.map(|h| h.ids())
    }

    /// The EL's `latest`, `safe` and `finalized` blocks with parents and timestamps, read in
    /// one batch.
    pub async fn heads_full(&self) -> Result<FullHeads, String> {
        let calls = [
            ("eth_getBlockByNumber", json!(["latest", false])),
            ("eth_getBlockByNumber", json!(["safe", false])),
            ("eth_getBlockByNumber", json!(["finalized", false])),
        ];
        let answers = self.reads.batch(&calls).await.map_err(|e| e.to_string())?;
        let mut blocks = Vec::with_capacity(3);
        for (i, a) in answers.into_iter().enumerate() {
            let block = match a {
                // A missing label (e.g. "finalized block not found") is "none", not a failure.
                Err(_) if i > 0 => None,
                Err(e) => return Err(format!("eth_getBlockByNumber(latest): {e}")),
                Ok(v) => parse_rpc_block(&v).map_err(|e| format!("EL block: {e}"))?,
            };
            blocks.push(block);
        }
        let latest =
            blocks.first().copied().flatten().ok_or_else(|| "EL has no latest block".to_owned())?;
        Ok(FullHeads {
            latest,
            safe: blocks.get(1).copied().flatten(),
            finalized: blocks.get(2).copied().flatten(),
        })
    }

    async fn block(&self, tag: &str) -> Result<Option<BlockId>, String> {
        let v = self
            .reads
            .call("eth_getBlockByNumber", json!([tag, false]))
            .await
            .map_err(|e| e.to_string())?;
        parse_rpc_block(&v).map(|b| b.map(|b| b.id())).map_err(|e| format!("EL block {tag}: {e}"))
    }
}

/// Maps a forkchoice-updated result object onto an outcome.
pub fn parse_fcu_result(v: &Value) -> FcuOutcome {
    let ps = &v["payloadStatus"];
    let lvh = ps["latestValidHash"].as_str().and_then(|s| s.parse::<B256>().ok());
    let err = ps["validationError"].as_str().map(str::to_owned);
    match ps["status"].as_str() {
        Some("VALID") => FcuOutcome::Valid,
        Some("SYNCING" | "ACCEPTED") => FcuOutcome::Syncing,
        Some("INVALID" | "INVALID_BLOCK_HASH") => {
            FcuOutcome::Invalid { latest_valid_hash: lvh, validation_error: err }
        }
        _ => FcuOutcome::Error { message: format!("unexpected forkchoice result {v}") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcu_results_map_onto_outcomes() {
        let r = |status: &str| json!({"payloadStatus": {"status": status, "latestValidHash": null}, "payloadId": null});
        assert_eq!(parse_fcu_result(&r("VALID")), FcuOutcome::Valid);
        assert_eq!(parse_fcu_result(&r("SYNCING")), FcuOutcome::Syncing);
        assert_eq!(parse_fcu_result(&r("ACCEPTED")), FcuOutcome::Syncing);
        let lvh = B256::repeat_byte(3);
        let v = json!({"payloadStatus": {"status": "INVALID", "latestValidHash": lvh, "validationError": "bad block"}});
        assert_eq!(
            parse_fcu_result(&v),
            FcuOutcome::Invalid {
                latest_valid_hash: Some(lvh),
                validation_error: Some("bad block".into())
            }
        );
        assert!(matches!(parse_fcu_result(&json!({"weird": 1})), FcuOutcome::Error { .. }));
        assert!(matches!(parse_fcu_result(&r("MAYBE")), FcuOutcome::Error { .. }));
    }

    #[test]
    fn el_errors_know_their_severity() {
        let http = |status| RpcError::HttpStatus {
            method: "m".into(),
            status,
            body: String::new(),
            hint: "",
        };
        assert!(matches!(ElError::from_rpc(http(401)), ElError::Unauthorized(_)));
        assert_eq!(ElError::from_rpc(http(401)).severity(), Severity::Fatal);
        assert_eq!(ElError::from_rpc(http(503)).severity(), Severity::Temporary);
        let refused = RpcError::Connect { method: "m".into(), reason: "refused".into() };
        assert_eq!(ElError::from_rpc(refused).severity(), Severity::Temporary);
        assert_eq!(ElError::WrongChain { expected: 10, actual: 8453 }.severity(), Severity::Fatal);
        assert!(
            ElError::WrongChain { expected: 10, actual: 8453 }
                .to_string()
                .contains("--chain-id 10")
        );
    }
}
