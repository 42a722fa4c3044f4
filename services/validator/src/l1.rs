//! Our L1: every status's L1 reads in ONE JSON-RPC batch (`latest`, `finalized`, then each
//! block number the plan needs that the finalized-L1 cache does not hold).

use std::time::{Duration, Instant};

use lightcl_core::status::{parse_rpc_block, to_quantity};
use lightcl_core::validate::{L1Answers, L1Cache, L1Plan};
use lightcl_core::{L1BlockRef, Severity};
use lightcl_jsonrpc::{Client, ClientConfig, RpcError};
use serde_json::{Value, json};

use crate::metrics::{Metrics, OutcomeLabel};

/// How many finalized L1 blocks are cached.
pub const CACHE_CAPACITY: usize = 1024;

/// A failed L1 read. Every variant is temporary: the caller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum L1Error {
    /// Transport, timeout, HTTP or JSON-RPC failure of the batch.
    #[error("L1 batch request failed: {0}")]
    Rpc(#[from] RpcError),
    /// One call of the batch failed.
    #[error("L1 {what}: JSON-RPC error {code}: {message}")]
    Call {
        /// Which read.
        what: String,
        /// Error code.
        code: i64,
        /// Error message.
        message: String,
    },
    /// The node answered a block we cannot read.
    #[error("L1 {what}: {reason}")]
    BadBlock {
        /// Which read.
        what: String,
        /// Why.
        reason: String,
    },
}

impl L1Error {
    /// How to handle it: a bad config (e.g. HTTP 401) is fatal, everything else temporary.
    pub fn severity(&self) -> Severity {
        match self {
            Self::Rpc(e) => e.severity(),
            Self::Call { .. } | Self::BadBlock { .. } => Severity::Temporary,
        }
    }
}

/// The L1 reader with its cache of finalized blocks.
#[derive(Debug)]
pub struct L1Reader {
    client: Client,
    cache: L1Cache,
    metrics: Metrics,
}

impl L1Reader {
    /// A reader of `url` with a per-batch `timeout`.
    pub fn new(url: url::Url, timeout: Duration, metrics: Metrics) -> Result<Self, RpcError> {
        let client = Client::new(ClientConfig::new(url).with_timeout(timeout))?;
        Ok(Self { client, cache: L1Cache::new(CACHE_CAPACITY), metrics })
    }

    /// The endpoint.
    pub fn url(&self) -> &url::Url {
        self.client.url()
    }

    /// Answers `plan` with one batch request; caches what is finalized.
    pub async fn fetch(&mut self, plan: &L1Plan) -> Result<L1Answers, L1Error> {
        let (numbers, cached) = plan.split(&self.cache);
        self.metrics.cache_hits.inc_by(cached.len() as u64);
        let mut calls: Vec<(&str, Value)> = vec![
            ("eth_getBlockByNumber", json!(["latest", false])),
            ("eth_getBlockByNumber", json!(["finalized", false])),
        ];
        calls.extend(
            numbers.iter().map(|n| ("eth_getBlockByNumber", json!([to_quantity(*n), false]))),
        );
        self.metrics.l1_batch_size.observe(calls.len() as f64);
        let started = Instant::now();
        let result = self.client.batch(&calls).await;
        self.metrics.l1_latency.observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.l1_requests.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
        let mut answers = result?.into_iter();

        let head = block(answers.next(), "latest")?
            .ok_or_else(|| L1Error::BadBlock { what: "latest".into(), reason: "null".into() })?;
        // A node without the `finalized` tag (or before finality) caches nothing.
        let finalized = block(answers.next(), "finalized").ok().flatten();
        let mut out = L1Answers { head, finalized, ..L1Answers::default() };
        for n in numbers {
            out.blocks.insert(n, block(answers.next(), &format!("block #{n}"))?);
        }
        self.cache.record(&out);
        for (n, b) in cached {
            out.blocks.insert(n, Some(b));
        }
        Ok(out)
    }
}

fn block(
    answer: Option<Result<Value, lightcl_jsonrpc::JsonRpcErrorObject>>,
    what: &str,
) -> Result<Option<L1BlockRef>, L1Error> {
    match answer {
        None => Err(L1Error::BadBlock { what: what.into(), reason: "no answer".into() }),
        Some(Err(e)) => Err(L1Error::Call { what: what.into(), code: e.code, message: e.message }),
        Some(Ok(v)) => parse_rpc_block(&v)
            .map_err(|e| L1Error::BadBlock { what: what.into(), reason: e.to_string() }),
    }
}
