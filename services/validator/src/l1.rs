//! Our L1: every status's L1 reads in ONE JSON-RPC batch (`latest`, `finalized`, `safe`, then
//! each block number the plan needs that the finalized-L1 cache does not hold). `latest`,
//! `safe` and `finalized` also travel with the target as the validator's L1 view
//! (`head_l1`, `safe_l1`, `finalized_l1`).

use std::time::{Duration, Instant};

use lightcl_core::status::{RpcBlock, to_quantity};
use lightcl_core::validate::{L1Answers, L1Cache, L1Plan};
use lightcl_core::{L1BlockRef, ParseError, Severity};
use lightcl_rpc::{Client, ClientConfig, Endpoint, RpcError};

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
    #[error("L1 {what}: {source}")]
    Call {
        /// Which read.
        what: String,
        /// The call's error.
        source: RpcError,
    },
    /// The node answered a block we cannot read.
    #[error("L1 {what}: {source}")]
    BadBlock {
        /// Which read.
        what: String,
        /// Why (names the field).
        source: ParseError,
    },
    /// The batch answer lacks this read, or it is `null` where a block is required.
    #[error("L1 {what}: {missing}")]
    Missing {
        /// Which read.
        what: String,
        /// `no answer` or `null`.
        missing: &'static str,
    },
}

impl L1Error {
    /// How to handle it: a bad config (e.g. HTTP 401) is fatal, everything else temporary.
    pub fn severity(&self) -> Severity {
        match self {
            Self::Rpc(e) => e.severity(),
            Self::Call { .. } | Self::BadBlock { .. } | Self::Missing { .. } => Severity::Temporary,
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
    /// A reader of `endpoint` with a per-batch `timeout`.
    pub fn new(endpoint: Endpoint, timeout: Duration, metrics: Metrics) -> Result<Self, RpcError> {
        Self::with_config(ClientConfig::new(endpoint).with_timeout(timeout), metrics)
    }

    /// A reader with a full client config (e.g. custom trusted CAs).
    pub fn with_config(config: ClientConfig, metrics: Metrics) -> Result<Self, RpcError> {
        let client = Client::new(config)?;
        Ok(Self { client, cache: L1Cache::new(CACHE_CAPACITY), metrics })
    }

    /// The endpoint (displays as `scheme://host:port`).
    pub fn endpoint(&self) -> &Endpoint {
        self.client.endpoint()
    }

    /// Answers `plan` with one batch request; caches what is finalized.
    pub async fn fetch(&mut self, plan: &L1Plan) -> Result<L1Answers, L1Error> {
        let (numbers, cached) = plan.split(&self.cache);
        self.metrics.cache_hits.inc_by(cached.len() as u64);
        let mut calls: Vec<(String, bool)> = vec![
            ("latest".to_owned(), false),
            ("finalized".to_owned(), false),
            ("safe".to_owned(), false),
        ];
        calls.extend(numbers.iter().map(|n| (to_quantity(*n), false)));
        self.metrics.l1_batch_size.observe(calls.len() as f64);
        let started = Instant::now();
        let result = self.client.batch::<_, RpcBlock>("eth_getBlockByNumber", &calls).await;
        self.metrics.l1_latency.observe(started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.metrics.l1_requests.get_or_create(&OutcomeLabel { outcome: outcome.into() }).inc();
        let mut answers = result?.into_iter();

        let head = block(answers.next(), "latest")?
            .ok_or_else(|| L1Error::Missing { what: "latest".into(), missing: "null" })?;
        // A node without the `finalized` tag (or before finality) caches nothing.
        let finalized = block(answers.next(), "finalized").ok().flatten();
        // Likewise `safe` (only reported, never used for a check or the cache).
        let safe = block(answers.next(), "safe").ok().flatten();
        let mut out = L1Answers { head, finalized, safe, ..L1Answers::default() };
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
    answer: Option<Result<RpcBlock, RpcError>>,
    what: &str,
) -> Result<Option<L1BlockRef>, L1Error> {
    match answer {
        None => Err(L1Error::Missing { what: what.into(), missing: "no answer" }),
        Some(Err(e)) => Err(L1Error::Call { what: what.into(), source: e }),
        Some(Ok(v)) => v.parse().map_err(|source| L1Error::BadBlock { what: what.into(), source }),
    }
}
