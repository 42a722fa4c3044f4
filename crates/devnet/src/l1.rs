//! A small client for the anvil L1: read blocks, mine, reorg.

use lightcl_core::L1BlockRef;
use lightcl_core::status::{parse_rpc_block, to_quantity};
use lightcl_rpc::{Client, ClientConfig, RpcError};
use serde_json::{Value, json};
use std::time::Duration;

/// Errors talking to anvil.
#[derive(Debug, thiserror::Error)]
pub enum L1Error {
    /// The RPC call failed.
    #[error("L1 RPC: {0}")]
    Rpc(#[from] RpcError),
    /// The answer could not be parsed.
    #[error("L1 answer to {method}: {reason}")]
    Parse {
        /// Method called.
        method: String,
        /// What was wrong.
        reason: String,
    },
    /// The URL is not valid.
    #[error("L1 URL {0:?} is invalid")]
    Url(String),
}

/// Client for anvil's JSON-RPC.
#[derive(Debug, Clone)]
pub struct L1Client {
    rpc: Client,
}

impl L1Client {
    /// A client for `url` with a 5 s timeout.
    pub fn new(url: &str) -> Result<Self, L1Error> {
        let u = url.parse().map_err(|_| L1Error::Url(lightcl_rpc::redact_url(url)))?;
        let rpc = Client::new(ClientConfig::new(u).with_timeout(Duration::from_secs(5)))?;
        Ok(Self { rpc })
    }

    /// The canonical block at `number`, if any.
    pub async fn block(&self, number: u64) -> Result<Option<L1BlockRef>, L1Error> {
        self.block_by_tag(Value::String(to_quantity(number))).await
    }

    /// The head block.
    pub async fn head(&self) -> Result<L1BlockRef, L1Error> {
        self.block_by_tag(json!("latest")).await?.ok_or_else(|| L1Error::Parse {
            method: "eth_getBlockByNumber".into(),
            reason: "no latest block".into(),
        })
    }

    async fn block_by_tag(&self, tag: Value) -> Result<Option<L1BlockRef>, L1Error> {
        let v = self.rpc.call("eth_getBlockByNumber", json!([tag, false])).await?;
        parse_rpc_block(&v).map_err(|e| L1Error::Parse {
            method: "eth_getBlockByNumber".into(),
            reason: e.to_string(),
        })
    }

    /// Canonical blocks `from..=to` in one batch.
    pub async fn range(&self, from: u64, to: u64) -> Result<Vec<L1BlockRef>, L1Error> {
        if from > to {
            return Ok(Vec::new());
        }
        let params: Vec<(String, bool)> = (from..=to).map(|n| (to_quantity(n), false)).collect();
        let answers = self.rpc.batch::<_, Value>("eth_getBlockByNumber", &params).await?;
        let mut out = Vec::with_capacity(answers.len());
        for a in answers {
            let v = a.map_err(|e| L1Error::Parse {
                method: "eth_getBlockByNumber".into(),
                reason: e.to_string(),
            })?;
            match parse_rpc_block(&v) {
                Ok(Some(b)) => out.push(b),
                Ok(None) => break, // the head moved down (reorg in progress)
                Err(e) => {
                    return Err(L1Error::Parse {
                        method: "eth_getBlockByNumber".into(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Mines one block (`evm_mine`).
    pub async fn mine(&self) -> Result<(), L1Error> {
        self.rpc.call("evm_mine", json!([])).await?;
        Ok(())
    }

    /// `anvil_reorg(depth, [])`: replaces the newest `depth` blocks by new ones.
    pub async fn reorg(&self, depth: u64) -> Result<(), L1Error> {
        self.rpc.call("anvil_reorg", json!([depth, []])).await?;
        Ok(())
    }
}
