//! The execution client's authenticated RPC: forkchoice updates and block reads, mapped onto
//! the planner's inputs.

use std::time::Duration;

use alloy_provider::Provider;
use alloy_provider::ext::EngineApi;
use alloy_rpc_types_engine::{ForkchoiceState, ForkchoiceUpdated, JwtSecret, PayloadStatusEnum};
use lightcl_core::Severity;
use lightcl_core::engine::{ElBlock, ElHeads, FcuOutcome, Forkchoice};
use lightcl_core::status::{BlockId, L1BlockRef, ParseError, RpcBlock, to_quantity};
use lightcl_rpc::{Client, ClientConfig, Endpoint, INVALID_FORKCHOICE_STATE, RpcError};

/// A start-up check of the EL failed.
#[derive(Debug, thiserror::Error)]
pub enum ElError {
    /// The EL could not be reached or answered garbage (temporary: retry).
    #[error("execution client unavailable: {0}")]
    Unavailable(#[source] RpcError),
    /// The EL refused our JWT (HTTP 401/403): the secret does not match.
    #[error(
        "execution client rejected our JWT ({0}): --l2.jwt-secret does not match the EL's secret"
    )]
    Unauthorized(#[source] RpcError),
    /// The EL refused the request for a reason that retrying does not fix (e.g. an unknown
    /// method: a client without the Engine API on this port).
    #[error("execution client refused the request: {0}")]
    Refused(#[source] RpcError),
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
    /// The client could not be built.
    #[error("engine client: {0}")]
    Config(#[source] RpcError),
}

impl ElError {
    /// How the caller reacts: retry, or stop and tell the operator.
    pub fn severity(&self) -> Severity {
        match self {
            Self::Unavailable(_) => Severity::Temporary,
            Self::Unauthorized(_)
            | Self::Refused(_)
            | Self::MissingCapability(_)
            | Self::WrongChain { .. }
            | Self::Config(_) => Severity::Fatal,
        }
    }

    fn from_rpc(e: RpcError) -> Self {
        match e.http_status() {
            Some(401 | 403) => Self::Unauthorized(e),
            _ if e.severity() == Severity::Fatal => Self::Refused(e),
            _ => Self::Unavailable(e),
        }
    }
}

/// A failed block read from the EL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The call failed.
    #[error("eth_getBlockByNumber({what}): {source}")]
    Rpc {
        /// Which block.
        what: String,
        /// Why.
        source: RpcError,
    },
    /// The EL answered a block we cannot read.
    #[error("EL block {what}: {source}")]
    BadBlock {
        /// Which block.
        what: String,
        /// Why (names the field).
        source: ParseError,
    },
    /// The EL has no `latest` block.
    #[error("EL has no latest block")]
    NoLatest,
}

/// The EL's heads with parent hashes and timestamps.
#[derive(Debug, Clone, Copy)]
pub struct FullHeads {
    /// Latest block.
    pub latest: L1BlockRef,
    /// Safe block.
    pub safe: Option<L1BlockRef>,
    /// Finalized block.
    pub finalized: Option<L1BlockRef>,
}

impl FullHeads {
    /// Just the ids.
    pub fn ids(&self) -> ElHeads {
        ElHeads {
            latest: self.latest.id(),
            safe: self.safe.map(|b| b.id()),
            finalized: self.finalized.map(|b| b.id()),
        }
    }
}

/// Client of one EL's auth RPC (fresh HS256 JWT per request), through alloy's Engine API.
#[derive(Debug, Clone)]
pub struct EngineClient {
    fcu: Client,
    reads: Client,
}

impl EngineClient {
    /// A client for `endpoint` with `secret`; forkchoice updates time out after `fcu_timeout`,
    /// reads after `read_timeout`.
    pub fn new(
        endpoint: Endpoint,
        secret: JwtSecret,
        fcu_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, ElError> {
        Self::with_config(ClientConfig::new(endpoint).with_jwt(secret), fcu_timeout, read_timeout)
    }

    /// Like [`new`](Self::new) from a base config (endpoint, secret, trusted CAs); the two
    /// timeouts replace its own.
    pub fn with_config(
        base: ClientConfig,
        fcu_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Self, ElError> {
        let fcu = Client::new(base.clone().with_timeout(fcu_timeout)).map_err(ElError::Config)?;
        let reads = Client::new(base.with_timeout(read_timeout)).map_err(ElError::Config)?;
        Ok(Self { fcu, reads })
    }

    /// The endpoint (displays as `scheme://host:port`).
    pub fn endpoint(&self) -> &Endpoint {
        self.reads.endpoint()
    }

    /// Start-up checks: `engine_exchangeCapabilities` lists FCU V3 and `eth_chainId` matches.
    pub async fn check(&self, chain_id: u64) -> Result<(), ElError> {
        let p = self.reads.provider();
        let caps =
            p.exchange_capabilities(vec!["engine_forkchoiceUpdatedV3".to_owned()]).await.map_err(
                |e| ElError::from_rpc(self.reads.classify("engine_exchangeCapabilities", e)),
            )?;
        if !caps.iter().any(|c| c == "engine_forkchoiceUpdatedV3") {
            return Err(ElError::MissingCapability(caps.join(",")));
        }
        let actual = p
            .get_chain_id()
            .await
            .map_err(|e| ElError::from_rpc(self.reads.classify("eth_chainId", e)))?;
        if actual != chain_id {
            return Err(ElError::WrongChain { expected: chain_id, actual });
        }
        Ok(())
    }

    /// `engine_forkchoiceUpdatedV3(state, null)`, mapped onto the planner's outcomes. The
    /// second value is true when the EL was reached (any answer, even an error object).
    pub async fn forkchoice_updated(&self, fc: &Forkchoice) -> (FcuOutcome, bool) {
        let state = ForkchoiceState {
            head_block_hash: fc.head.hash,
            safe_block_hash: fc.safe.hash,
            finalized_block_hash: fc.finalized.hash,
        };
        match self.fcu.provider().fork_choice_updated_v3(state, None).await {
            Ok(answer) => (fcu_outcome(&answer), true),
            Err(e) => {
                let e = self.fcu.classify("engine_forkchoiceUpdatedV3", e);
                match (e.rpc_code(), e.kind()) {
                    (Some(INVALID_FORKCHOICE_STATE), _) => {
                        let message = match &e {
                            RpcError::Rpc { message, .. } => message.clone(),
                            other => other.to_string(),
                        };
                        (FcuOutcome::InvalidForkchoiceState { message }, true)
                    }
                    // The EL answered, with an error object or an answer we cannot read.
                    (Some(_), _) | (None, "json" | "bad_response") => {
                        (FcuOutcome::Error { message: e.to_string() }, true)
                    }
                    _ => (FcuOutcome::Error { message: e.to_string() }, false),
                }
            }
        }
    }

    /// The EL's canonical block at `number`.
    pub async fn block_at(&self, number: u64) -> ElBlock {
        match self.block(&to_quantity(number)).await {
            Ok(Some(b)) => ElBlock::Found(b),
            Ok(None) => ElBlock::NotFound,
            Err(e) => ElBlock::Error(e.to_string()),
        }
    }

    /// The EL's `latest`, `safe` and `finalized` blocks.
    pub async fn heads(&self) -> Result<ElHeads, ReadError> {
        self.heads_full().await.map(|h| h.ids())
    }

    /// The EL's `latest`, `safe` and `finalized` blocks with parents and timestamps, read in
    /// one batch.
    pub async fn heads_full(&self) -> Result<FullHeads, ReadError> {
        let tags = ["latest", "safe", "finalized"];
        let params: Vec<(&str, bool)> = tags.iter().map(|t| (*t, false)).collect();
        let answers =
            self.reads.batch::<_, RpcBlock>("eth_getBlockByNumber", &params).await.map_err(
                |source| ReadError::Rpc { what: "latest,safe,finalized".into(), source },
            )?;
        let mut blocks = Vec::with_capacity(3);
        for (i, a) in answers.into_iter().enumerate() {
            let block = match a {
                // A missing label (e.g. "finalized block not found") is "none", not a failure.
                Err(_) if i > 0 => None,
                Err(source) => return Err(ReadError::Rpc { what: tags[i].into(), source }),
                Ok(v) => v
                    .parse()
                    .map_err(|source| ReadError::BadBlock { what: tags[i].into(), source })?,
            };
            blocks.push(block);
        }
        let latest = blocks.first().copied().flatten().ok_or(ReadError::NoLatest)?;
        Ok(FullHeads {
            latest,
            safe: blocks.get(1).copied().flatten(),
            finalized: blocks.get(2).copied().flatten(),
        })
    }

    async fn block(&self, tag: &str) -> Result<Option<BlockId>, ReadError> {
        let v: RpcBlock = self
            .reads
            .request("eth_getBlockByNumber", (tag, false))
            .await
            .map_err(|source| ReadError::Rpc { what: tag.into(), source })?;
        v.parse()
            .map(|b| b.map(|b| b.id()))
            .map_err(|source| ReadError::BadBlock { what: tag.into(), source })
    }
}

/// Maps a forkchoice-updated answer onto an outcome.
pub fn fcu_outcome(answer: &ForkchoiceUpdated) -> FcuOutcome {
    let ps = &answer.payload_status;
    match &ps.status {
        PayloadStatusEnum::Valid => FcuOutcome::Valid,
        PayloadStatusEnum::Syncing | PayloadStatusEnum::Accepted => FcuOutcome::Syncing,
        PayloadStatusEnum::Invalid { validation_error } => FcuOutcome::Invalid {
            latest_valid_hash: ps.latest_valid_hash,
            validation_error: Some(validation_error.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::B256;
    use lightcl_rpc::HttpError;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<FcuOutcome, serde_json::Error> {
        serde_json::from_value::<ForkchoiceUpdated>(v).map(|a| fcu_outcome(&a))
    }

    #[test]
    fn fcu_answers_map_onto_outcomes() {
        let r = |status: &str| json!({"payloadStatus": {"status": status, "latestValidHash": null}, "payloadId": null});
        assert_eq!(parse(r("VALID")).unwrap(), FcuOutcome::Valid);
        assert_eq!(parse(r("SYNCING")).unwrap(), FcuOutcome::Syncing);
        assert_eq!(parse(r("ACCEPTED")).unwrap(), FcuOutcome::Syncing);
        let lvh = B256::repeat_byte(3);
        let v = json!({"payloadStatus": {"status": "INVALID", "latestValidHash": lvh, "validationError": "bad block"}});
        assert_eq!(
            parse(v).unwrap(),
            FcuOutcome::Invalid {
                latest_valid_hash: Some(lvh),
                validation_error: Some("bad block".into())
            }
        );
        // What alloy cannot decode reaches the driver as a "json" error (see forkchoice_updated).
        assert!(parse(json!({"weird": 1})).is_err());
        assert!(parse(r("MAYBE")).is_err());
    }

    #[test]
    fn el_errors_know_their_severity() {
        let http = |status| {
            RpcError::Http(HttpError::Status {
                endpoint: "http://el:8551".into(),
                method: "m".into(),
                status,
                body: String::new(),
                hint: "",
            })
        };
        assert!(matches!(ElError::from_rpc(http(401)), ElError::Unauthorized(_)));
        assert_eq!(ElError::from_rpc(http(401)).severity(), Severity::Fatal);
        assert!(ElError::from_rpc(http(401)).to_string().contains("--l2.jwt-secret"));
        assert_eq!(ElError::from_rpc(http(503)).severity(), Severity::Temporary);
        let refused = RpcError::Http(HttpError::Connect {
            endpoint: "http://el:8551".into(),
            method: "m".into(),
            source: std::sync::Arc::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )),
        });
        assert_eq!(ElError::from_rpc(refused).severity(), Severity::Temporary);
        let unknown = RpcError::Rpc {
            endpoint: "http://el:8551".into(),
            method: "engine_exchangeCapabilities".into(),
            code: -32601,
            message: "method not found".into(),
        };
        assert!(matches!(ElError::from_rpc(unknown), ElError::Refused(_)));
        assert_eq!(ElError::WrongChain { expected: 10, actual: 8453 }.severity(), Severity::Fatal);
        assert!(
            ElError::WrongChain { expected: 10, actual: 8453 }
                .to_string()
                .contains("--chain-id 10")
        );
    }
}
