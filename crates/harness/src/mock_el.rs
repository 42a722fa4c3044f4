//! A faithful in-process mock of an execution client's authenticated RPC, modelled on op-reth
//! (as op-reth answers, see docs/architecture.md#forkchoice-answers), plus a builder of consistent synthetic L2 chains.
//!
//! Behaviour:
//! - every HTTP request must carry `Authorization: Bearer <HS256 JWT>` with `iat` within ±60 s,
//!   otherwise the answer is HTTP 401 and nothing is executed;
//! - `engine_forkchoiceUpdatedV3(state, null)`: zero head → error −38002; a head that is (or
//!   descends from) a block forced INVALID → `INVALID`; an unknown head → `SYNCING`, and the
//!   block with its ancestors is "downloaded" from the configured network chain after the
//!   download delay (a hash the network does not have stays `SYNCING` forever); a known head
//!   becomes canonical (a canonical ancestor of the current head does not rewind it), then
//!   safe/finalized must be known and on the head's chain (−38002 otherwise, with the head
//!   already moved, as op-reth does) and are applied; answer `VALID`;
//!   a downloaded sync target (the head of the last SYNCING answer) becomes the canonical head
//!   by itself, labels untouched, as op-reth does (knob: [`MockEl::set_auto_canonical`]);
//! - `eth_getBlockByNumber` with a hex number or `latest`/`safe`/`finalized`/`earliest`,
//!   returning block JSON with hex quantities (null when absent), `eth_blockNumber`,
//!   `eth_chainId`, `engine_exchangeCapabilities`;
//! - knobs: FCU latency, download delay, forced INVALID hashes, forced SYNCING, downtime
//!   (stop, then restart on the same port), and a log of every call with the FCU answers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use alloy_primitives::{B256, keccak256};
use alloy_rpc_types_engine::{ForkchoiceState, JwtSecret};
use jsonrpsee::RpcModule;
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse, Server, ServerHandle};
use jsonrpsee::types::ErrorObjectOwned;
use lightcl_core::status::{BlockId, L2BlockRef, to_quantity};
use serde_json::{Value, json};

use crate::wait;

/// JSON-RPC error code for an invalid forkchoice state.
pub const INVALID_FORKCHOICE_STATE: i32 = -38002;

/// Errors of the mock EL itself.
#[derive(Debug, thiserror::Error)]
pub enum MockElError {
    /// Binding or restarting the server failed.
    #[error("mock EL server: {0}")]
    Io(#[from] std::io::Error),
    /// Registering an RPC method failed.
    #[error("mock EL method registration: {0}")]
    Register(String),
}

// ---------------------------------------------------------------------------------------------
// Synthetic chains

/// A consistent synthetic L2 chain: parent links, timestamps 2 s apart, L1 origins advancing
/// every 6 blocks. Forks share every block below their fork point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L2Chain {
    blocks: Vec<L2BlockRef>,
    tag: u64,
}

/// The genesis block every [`L2Chain`] starts from.
pub fn l2_genesis() -> L2BlockRef {
    L2BlockRef {
        hash: keccak256(b"lightcl-mock-genesis"),
        number: 0,
        parent_hash: B256::ZERO,
        timestamp: 1_700_000_000,
        l1origin: l1_origin(0),
        sequence_number: 0,
    }
}

/// The synthetic L1 origin of epoch `n`.
pub fn l1_origin(n: u64) -> BlockId {
    BlockId { hash: keccak256(format!("lightcl-mock-l1-{n}")), number: n }
}

impl L2Chain {
    /// A chain of `len` blocks after genesis (numbers `0..=len`), with fork tag 0.
    pub fn new(len: u64) -> Self {
        let mut c = Self { blocks: vec![l2_genesis()], tag: 0 };
        c.extend(len);
        c
    }

    /// Appends `n` blocks; returns the new ones.
    pub fn extend(&mut self, n: u64) -> Vec<L2BlockRef> {
        let start = self.blocks.len();
        for _ in 0..n {
            let parent = *self.tip();
            let number = parent.number + 1;
            let mut pre = Vec::with_capacity(48);
            pre.extend_from_slice(parent.hash.as_slice());
            pre.extend_from_slice(&self.tag.to_be_bytes());
            pre.extend_from_slice(&number.to_be_bytes());
            self.blocks.push(L2BlockRef {
                hash: keccak256(&pre),
                number,
                parent_hash: parent.hash,
                timestamp: parent.timestamp + 2,
                l1origin: l1_origin(number / 6),
                sequence_number: number % 6,
            });
        }
        self.blocks[start..].to_vec()
    }

    /// A fork that shares blocks `0..fork_number` with this chain and has `len` blocks in
    /// total after genesis; `tag` makes its hashes differ (use a tag unique per fork).
    pub fn fork(&self, fork_number: u64, tag: u64, len: u64) -> Self {
        let keep = usize::try_from(fork_number.max(1)).unwrap_or(usize::MAX).min(self.blocks.len());
        let mut c = Self { blocks: self.blocks[..keep].to_vec(), tag };
        let have = c.tip().number;
        c.extend(len.saturating_sub(have));
        c
    }

    /// Block at `number`.
    pub fn get(&self, number: u64) -> Option<L2BlockRef> {
        usize::try_from(number).ok().and_then(|i| self.blocks.get(i)).copied()
    }

    /// Block at `number`; panics when the chain is shorter (test helper).
    pub fn at(&self, number: u64) -> L2BlockRef {
        self.get(number).unwrap_or_else(|| panic!("chain has no block {number}"))
    }

    /// The newest block.
    pub fn tip(&self) -> &L2BlockRef {
        // A chain always holds genesis.
        &self.blocks[self.blocks.len() - 1]
    }

    /// All blocks, genesis first.
    pub fn blocks(&self) -> &[L2BlockRef] {
        &self.blocks
    }
}

// ---------------------------------------------------------------------------------------------
// Call log

/// The mock's answer to one forkchoice update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FcuReply {
    /// VALID.
    Valid,
    /// SYNCING.
    Syncing,
    /// INVALID with the last valid ancestor.
    Invalid {
        /// Last valid ancestor.
        latest_valid_hash: Option<B256>,
    },
    /// A JSON-RPC error.
    Error {
        /// Error code (−38002 for an invalid forkchoice state).
        code: i32,
        /// Message.
        message: String,
    },
}

/// One forkchoice update as received and answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FcuRecord {
    /// The forkchoice state sent.
    pub state: ForkchoiceState,
    /// The answer.
    pub reply: FcuReply,
}

/// One authenticated call.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// When it was handled.
    pub at: Instant,
    /// JSON-RPC method.
    pub method: String,
    /// Its params.
    pub params: Value,
    /// For forkchoice updates: state and answer.
    pub fcu: Option<FcuRecord>,
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Debug)]
struct ElState {
    /// Blocks the EL has (executed).
    blocks: HashMap<B256, L2BlockRef>,
    /// Blocks its peers have (what it can download).
    network: HashMap<B256, L2BlockRef>,
    head: B256,
    safe: B256,
    finalized: B256,
    canonical: BTreeMap<u64, B256>,
    downloads: HashMap<B256, Instant>,
    invalid: HashSet<B256>,
    forced_syncing: bool,
    fcu_latency: Duration,
    download_delay: Duration,
    log: Vec<CallRecord>,
    unauthorized: u64,
    fcu_started: u64,
    /// Head of the last FCU answered SYNCING for an unknown block (op-reth's sync target).
    sync_target: Option<B256>,
    /// Make a downloaded sync target canonical by itself (op-reth), labels untouched.
    auto_canonical: bool,
}

impl ElState {
    fn new(genesis: L2BlockRef, download_delay: Duration) -> Self {
        let mut s = Self {
            blocks: HashMap::from([(genesis.hash, genesis)]),
            network: HashMap::from([(genesis.hash, genesis)]),
            head: genesis.hash,
            safe: genesis.hash,
            finalized: genesis.hash,
            canonical: BTreeMap::new(),
            downloads: HashMap::new(),
            invalid: HashSet::new(),
            forced_syncing: false,
            fcu_latency: Duration::ZERO,
            download_delay,
            log: Vec::new(),
            unauthorized: 0,
            fcu_started: 0,
            sync_target: None,
            auto_canonical: true,
        };
        s.recompute_canonical();
        s
    }

    /// Re-derives the number → hash index of the head's chain. Like a real EL it only walks
    /// back to where the new chain meets the old one (one step when the head extends it), so an
    /// update costs the same at block 100 as at block 100 000.
    fn recompute_canonical(&mut self) {
        let Some(head) = self.blocks.get(&self.head).copied() else {
            self.canonical.clear();
            return;
        };
        let _ = self.canonical.split_off(&(head.number + 1));
        let mut cur = Some(head);
        while let Some(b) = cur {
            if self.canonical.insert(b.number, b.hash) == Some(b.hash) {
                break;
            }
            if b.number == 0 {
                break;
            }
            cur = self.blocks.get(&b.parent_hash).copied();
            if cur.is_none() {
                // A gap: nothing below it belongs to this chain.
                self.canonical.retain(|n, _| *n >= b.number);
            }
        }
    }

    fn is_canonical(&self, hash: &B256) -> bool {
        self.blocks.get(hash).is_some_and(|b| self.canonical.get(&b.number) == Some(hash))
    }

    /// Completes downloads whose delay has passed and that the network can serve.
    fn process_downloads(&mut self, now: Instant) {
        let due: Vec<B256> = self
            .downloads
            .iter()
            .filter(|(_, t)| now.duration_since(**t) >= self.download_delay)
            .map(|(h, _)| *h)
            .collect();
        for hash in due {
            // Walk back through the network until a known block.
            let mut path = Vec::new();
            let mut cur = hash;
            let connected = loop {
                if self.blocks.contains_key(&cur) {
                    break true;
                }
                match self.network.get(&cur) {
                    Some(b) => {
                        path.push(*b);
                        cur = b.parent_hash;
                    }
                    None => break false,
                }
            };
            if connected {
                for b in path {
                    self.blocks.insert(b.hash, b);
                }
                self.downloads.remove(&hash);
                if self.auto_canonical && self.sync_target == Some(hash) {
                    // op-reth: a downloaded sync target head becomes canonical at once; the
                    // safe/finalized labels wait for the next VALID forkchoice update.
                    self.head = hash;
                    self.recompute_canonical();
                }
            }
        }
    }

    fn descends_from_invalid(&self, hash: &B256) -> Option<Option<B256>> {
        if self.invalid.is_empty() {
            return None;
        }
        let mut cur = *hash;
        let mut found = false;
        for _ in 0..10_000 {
            if self.invalid.contains(&cur) {
                found = true;
            }
            let parent =
                self.blocks.get(&cur).or_else(|| self.network.get(&cur)).map(|b| b.parent_hash);
            match parent {
                Some(p) if found => {
                    // The last valid ancestor is the parent of the first invalid block.
                    if !self.invalid.contains(&p) {
                        return Some(Some(p));
                    }
                    cur = p;
                }
                Some(p) => cur = p,
                None => return found.then_some(None),
            }
        }
        found.then_some(None)
    }

    fn forkchoice_updated(&mut self, fcs: &ForkchoiceState, now: Instant) -> FcuReply {
        self.process_downloads(now);
        if fcs.head_block_hash == B256::ZERO {
            return FcuReply::Error {
                code: INVALID_FORKCHOICE_STATE,
                message: "invalid forkchoice state: head block hash is zero".into(),
            };
        }
        if let Some(latest_valid_hash) = self.descends_from_invalid(&fcs.head_block_hash) {
            return FcuReply::Invalid { latest_valid_hash };
        }
        if self.forced_syncing {
            return FcuReply::Syncing;
        }
        let Some(head) = self.blocks.get(&fcs.head_block_hash).copied() else {
            self.downloads.entry(fcs.head_block_hash).or_insert(now);
            self.sync_target = Some(fcs.head_block_hash);
            return FcuReply::Syncing;
        };
        let current = self.blocks.get(&self.head).map_or(0, |b| b.number);
        let ancestor_of_head = self.is_canonical(&head.hash) && head.number < current;
        if !ancestor_of_head {
            // Make the head canonical (a reorg when it is on a side chain).
            self.head = head.hash;
            self.recompute_canonical();
        }
        for (name, hash) in [("finalized", fcs.finalized_block_hash), ("safe", fcs.safe_block_hash)]
        {
            if hash == B256::ZERO {
                continue;
            }
            if !self.blocks.contains_key(&hash) {
                return FcuReply::Error {
                    code: INVALID_FORKCHOICE_STATE,
                    message: format!("invalid forkchoice state: {name} block {hash} is unknown"),
                };
            }
            if !self.is_canonical(&hash) {
                return FcuReply::Error {
                    code: INVALID_FORKCHOICE_STATE,
                    message: format!(
                        "invalid forkchoice state: {name} block {hash} is not on the head's chain"
                    ),
                };
            }
        }
        if fcs.safe_block_hash != B256::ZERO {
            self.safe = fcs.safe_block_hash;
        }
        if fcs.finalized_block_hash != B256::ZERO {
            self.finalized = fcs.finalized_block_hash;
        }
        FcuReply::Valid
    }

    fn block_by_tag(&self, tag: &str) -> Result<Option<L2BlockRef>, ErrorObjectOwned> {
        let hash = match tag {
            "latest" | "pending" => Some(self.head),
            "safe" => Some(self.safe),
            "finalized" => Some(self.finalized),
            "earliest" => self.canonical.get(&0).copied(),
            other => {
                let digits = other.strip_prefix("0x").ok_or_else(|| {
                    ErrorObjectOwned::owned(
                        -32602,
                        format!("invalid block tag {other:?}"),
                        None::<()>,
                    )
                })?;
                let n = u64::from_str_radix(digits, 16).map_err(|_| {
                    ErrorObjectOwned::owned(
                        -32602,
                        format!("invalid block number {other:?}"),
                        None::<()>,
                    )
                })?;
                self.canonical.get(&n).copied()
            }
        };
        Ok(hash.and_then(|h| self.blocks.get(&h).copied()))
    }

    fn number_of(&self, hash: &B256) -> Option<u64> {
        if *hash == B256::ZERO {
            return Some(0);
        }
        self.blocks.get(hash).or_else(|| self.network.get(hash)).map(|b| b.number)
    }
}

/// Real-looking `eth_getBlockByNumber` JSON for a block (hex quantities, empty body).
pub fn block_json(b: &L2BlockRef) -> Value {
    let h = |tag: &str| format!("{}", keccak256(format!("{tag}-{}", b.hash)));
    json!({
        "hash": b.hash.to_string(),
        "parentHash": b.parent_hash.to_string(),
        "number": to_quantity(b.number),
        "timestamp": to_quantity(b.timestamp),
        "sha3Uncles": "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347",
        "miner": "0x4200000000000000000000000000000000000011",
        "stateRoot": h("state"),
        "transactionsRoot": h("tx"),
        "receiptsRoot": h("receipts"),
        "logsBloom": format!("0x{}", "0".repeat(512)),
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "gasLimit": to_quantity(30_000_000),
        "gasUsed": to_quantity(46_000 + b.sequence_number * 1_000),
        "extraData": "0x",
        "mixHash": h("mix"),
        "nonce": "0x0000000000000000",
        "baseFeePerGas": to_quantity(252),
        "withdrawalsRoot": "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421",
        "blobGasUsed": "0x0",
        "excessBlobGas": "0x0",
        "parentBeaconBlockRoot": h("beacon"),
        "size": to_quantity(861),
        "uncles": [],
        "transactions": [h("deposit-tx")],
        "withdrawals": [],
    })
}

// ---------------------------------------------------------------------------------------------
// JWT layer

#[derive(Clone)]
struct JwtLayer {
    secret: JwtSecret,
    shared: Arc<Mutex<ElState>>,
}

impl<S> tower::Layer<S> for JwtLayer {
    type Service = JwtService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        JwtService { inner, secret: self.secret, shared: self.shared.clone() }
    }
}

#[derive(Clone)]
struct JwtService<S> {
    inner: S,
    secret: JwtSecret,
    shared: Arc<Mutex<ElState>>,
}

impl<S> tower::Service<HttpRequest> for JwtService<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let verdict = match token {
            None => Err("missing bearer token".to_owned()),
            Some(t) => self.secret.validate(&t).map_err(|e| e.to_string()),
        };
        match verdict {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(why) => {
                lock(&self.shared).unauthorized += 1;
                Box::pin(async move {
                    let mut resp =
                        HttpResponse::new(HttpBody::from(format!("unauthorized: {why}")));
                    *resp.status_mut() = http::StatusCode::UNAUTHORIZED;
                    Ok(resp)
                })
            }
        }
    }
}

fn lock(m: &Mutex<ElState>) -> MutexGuard<'_, ElState> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Server

/// Settings of a [`MockEl`].
#[derive(Debug, Clone)]
pub struct MockElConfig {
    /// The JWT secret the EL accepts.
    pub jwt_secret: JwtSecret,
    /// `eth_chainId`.
    pub chain_id: u64,
    /// How long "downloading" an unknown head takes.
    pub download_delay: Duration,
    /// Genesis block.
    pub genesis: L2BlockRef,
}

impl MockElConfig {
    /// Defaults: chain 10, 100 ms download delay, [`l2_genesis`].
    pub fn new(jwt_secret: JwtSecret) -> Self {
        Self {
            jwt_secret,
            chain_id: 10,
            download_delay: Duration::from_millis(100),
            genesis: l2_genesis(),
        }
    }
}

/// The running mock EL.
pub struct MockEl {
    cfg: MockElConfig,
    state: Arc<Mutex<ElState>>,
    addr: SocketAddr,
    handle: Mutex<Option<ServerHandle>>,
}

impl std::fmt::Debug for MockEl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockEl").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl MockEl {
    /// Starts a mock EL on `127.0.0.1:<random port>`.
    pub async fn start(cfg: MockElConfig) -> Result<Self, MockElError> {
        let state = Arc::new(Mutex::new(ElState::new(cfg.genesis, cfg.download_delay)));
        let (addr, handle) =
            serve(&cfg, &state, "127.0.0.1:0".parse().map_err(std::io::Error::other)?).await?;
        Ok(Self { cfg, state, addr, handle: Mutex::new(Some(handle)) })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Downtime: stops serving (connections are refused) until [`MockEl::restart`].
    pub async fn stop(&self) {
        let handle = self.handle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(h) = handle {
            let _ = h.stop();
            h.stopped().await;
        }
    }

    /// Serves again on the same port, keeping the chain state.
    pub async fn restart(&self) -> Result<(), MockElError> {
        self.stop().await;
        wait::until_async(Duration::from_secs(5), wait::POLL, || async {
            let served = serve(&self.cfg, &self.state, self.addr).await;
            if let Err(e) = &served {
                tracing::debug!(error = %e, "mock EL rebind retry");
            }
            served
        })
        .await
        .map(|(_, h)| {
            *self.handle.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(h);
        })
        .map_err(|t| t.last_error.expect("a failed attempt"))
    }

    /// Makes blocks available from peers (to be "downloaded" on an FCU to them).
    pub fn add_network_blocks(&self, blocks: impl IntoIterator<Item = L2BlockRef>) {
        let mut s = lock(&self.state);
        for b in blocks {
            s.network.insert(b.hash, b);
        }
    }

    /// Makes a whole chain available from peers.
    pub fn set_network_chain(&self, chain: &L2Chain) {
        self.add_network_blocks(chain.blocks().iter().copied());
    }

    /// Seeds the EL's own database (as if it had executed these blocks earlier) and sets its
    /// head/safe/finalized: for restart scenarios. Blocks are also served to peers.
    pub fn seed(&self, chain: &L2Chain, head: u64, safe: u64, finalized: u64) {
        let mut s = lock(&self.state);
        for b in chain.blocks().iter().filter(|b| b.number <= head) {
            s.blocks.insert(b.hash, *b);
            s.network.insert(b.hash, *b);
        }
        s.head = chain.at(head).hash;
        s.safe = chain.at(safe).hash;
        s.finalized = chain.at(finalized).hash;
        s.recompute_canonical();
    }

    /// Latency added to every forkchoice update.
    pub fn set_fcu_latency(&self, d: Duration) {
        lock(&self.state).fcu_latency = d;
    }

    /// How long downloads take from now on.
    pub fn set_download_delay(&self, d: Duration) {
        lock(&self.state).download_delay = d;
    }

    /// Declares a block invalid: FCUs to it or its descendants answer INVALID.
    pub fn force_invalid(&self, hash: B256) {
        lock(&self.state).invalid.insert(hash);
    }

    /// Whether a downloaded sync target becomes the head by itself (op-reth; default true).
    pub fn set_auto_canonical(&self, on: bool) {
        lock(&self.state).auto_canonical = on;
    }

    /// While true, every FCU answers SYNCING.
    pub fn set_forced_syncing(&self, on: bool) {
        lock(&self.state).forced_syncing = on;
    }

    /// The EL's head block.
    pub fn head(&self) -> L2BlockRef {
        let s = lock(&self.state);
        s.blocks.get(&s.head).copied().unwrap_or_default()
    }

    /// The EL's safe block.
    pub fn safe(&self) -> L2BlockRef {
        let s = lock(&self.state);
        s.blocks.get(&s.safe).copied().unwrap_or_default()
    }

    /// The EL's finalized block.
    pub fn finalized(&self) -> L2BlockRef {
        let s = lock(&self.state);
        s.blocks.get(&s.finalized).copied().unwrap_or_default()
    }

    /// True when the EL has (executed or downloaded) the block.
    pub fn has_block(&self, hash: &B256) -> bool {
        let mut s = lock(&self.state);
        s.process_downloads(Instant::now());
        s.blocks.contains_key(hash)
    }

    /// Every authenticated call so far.
    pub fn calls(&self) -> Vec<CallRecord> {
        lock(&self.state).log.clone()
    }

    /// Every forkchoice update so far, in order.
    pub fn fcus(&self) -> Vec<FcuRecord> {
        lock(&self.state).log.iter().filter_map(|c| c.fcu.clone()).collect()
    }

    /// Forkchoice updates received so far, including ones still being answered.
    pub fn fcu_started_count(&self) -> u64 {
        lock(&self.state).fcu_started
    }

    /// Requests refused with HTTP 401.
    pub fn unauthorized_count(&self) -> u64 {
        lock(&self.state).unauthorized
    }

    /// Checks the FCU log: `finalized ≤ safe ≤ head` (by number, zero labels skipped) in every
    /// FCU whose blocks the EL or its peers know, no zero head, and the finalized block of
    /// VALID answers never decreasing. Returns every violation.
    pub fn check_invariants(&self) -> Result<(), Vec<String>> {
        let s = lock(&self.state);
        let mut bad = Vec::new();
        let mut last_final: Option<u64> = None;
        for (i, c) in s.log.iter().enumerate() {
            let Some(f) = &c.fcu else { continue };
            let st = &f.state;
            if st.head_block_hash == B256::ZERO {
                bad.push(format!("call {i}: zero head"));
                continue;
            }
            let (h, sa, fi) = (
                s.number_of(&st.head_block_hash),
                s.number_of(&st.safe_block_hash),
                s.number_of(&st.finalized_block_hash),
            );
            if let (Some(h), Some(sa), Some(fi)) = (h, sa, fi) {
                if st.safe_block_hash != B256::ZERO && sa > h {
                    bad.push(format!("call {i}: safe {sa} above head {h}"));
                }
                if st.finalized_block_hash != B256::ZERO
                    && st.safe_block_hash != B256::ZERO
                    && fi > sa
                {
                    bad.push(format!("call {i}: finalized {fi} above safe {sa}"));
                }
                if f.reply == FcuReply::Valid && st.finalized_block_hash != B256::ZERO {
                    if last_final.is_some_and(|l| fi < l) {
                        bad.push(format!("call {i}: finalized went back to {fi}"));
                    }
                    last_final = Some(fi);
                }
            }
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    }

    /// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let every = Duration::from_millis(10);
        wait::until_async(timeout, every, || std::future::ready(cond(self))).await.is_ok()
    }
}

impl Drop for MockEl {
    fn drop(&mut self) {
        if let Some(h) = self.handle.get_mut().ok().and_then(Option::take) {
            let _ = h.stop();
        }
    }
}

async fn serve(
    cfg: &MockElConfig,
    state: &Arc<Mutex<ElState>>,
    addr: SocketAddr,
) -> Result<(SocketAddr, ServerHandle), MockElError> {
    let layer = JwtLayer { secret: cfg.jwt_secret, shared: state.clone() };
    let server = Server::builder()
        .set_http_middleware(tower::ServiceBuilder::new().layer(layer))
        .build(addr)
        .await?;
    let local = server.local_addr()?;
    let module = module(cfg.chain_id, state.clone())?;
    Ok((local, server.start(module)))
}

fn record(s: &mut ElState, method: &str, params: Value, fcu: Option<FcuRecord>) {
    s.log.push(CallRecord { at: Instant::now(), method: method.to_owned(), params, fcu });
}

fn raw_params(p: &jsonrpsee::types::Params<'_>) -> Value {
    p.as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or(Value::Null)
}

fn module(
    chain_id: u64,
    state: Arc<Mutex<ElState>>,
) -> Result<RpcModule<Mutex<ElState>>, MockElError> {
    let reg = |e: jsonrpsee::core::RegisterMethodError| MockElError::Register(e.to_string());
    let mut m = RpcModule::from_arc(state);

    m.register_async_method("engine_forkchoiceUpdatedV3", |params, st, _| async move {
        let raw = raw_params(&params);
        let latency = {
            let mut s = lock(&st);
            s.fcu_started += 1;
            s.fcu_latency
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut seq = params.sequence();
        let fcs: ForkchoiceState = seq.next()?;
        let attrs: Option<Value> = seq.optional_next()?;
        let mut s = lock(&st);
        let reply = if attrs.is_some_and(|a| !a.is_null()) {
            FcuReply::Error {
                code: -38003,
                message: "payload attributes not supported by the mock".into(),
            }
        } else {
            s.forkchoice_updated(&fcs, Instant::now())
        };
        let head = fcs.head_block_hash;
        record(
            &mut s,
            "engine_forkchoiceUpdatedV3",
            raw,
            Some(FcuRecord { state: fcs, reply: reply.clone() }),
        );
        let status = |st: &str, lvh: Option<B256>| {
            Ok::<_, ErrorObjectOwned>(json!({
                "payloadStatus": {"status": st, "latestValidHash": lvh, "validationError": null},
                "payloadId": null
            }))
        };
        match reply {
            FcuReply::Valid => status("VALID", Some(head)),
            FcuReply::Syncing => status("SYNCING", None),
            FcuReply::Invalid { latest_valid_hash } => Ok(json!({
                "payloadStatus": {
                    "status": "INVALID",
                    "latestValidHash": latest_valid_hash,
                    "validationError": "block forced invalid by the mock"
                },
                "payloadId": null
            })),
            FcuReply::Error { code, message } => {
                Err(ErrorObjectOwned::owned(code, message, None::<()>))
            }
        }
    })
    .map_err(reg)?;

    m.register_method("engine_exchangeCapabilities", |params, st, _| {
        record(&mut lock(st), "engine_exchangeCapabilities", raw_params(&params), None);
        Ok::<_, ErrorObjectOwned>(json!([
            "engine_forkchoiceUpdatedV3",
            "engine_forkchoiceUpdatedV2",
            "engine_newPayloadV3",
            "engine_newPayloadV4",
            "engine_getPayloadV3",
            "engine_getPayloadV4",
            "engine_exchangeCapabilities"
        ]))
    })
    .map_err(reg)?;

    m.register_method("eth_chainId", move |params, st, _| {
        record(&mut lock(st), "eth_chainId", raw_params(&params), None);
        Ok::<_, ErrorObjectOwned>(Value::String(to_quantity(chain_id)))
    })
    .map_err(reg)?;

    m.register_method("eth_blockNumber", |params, st, _| {
        let mut s = lock(st);
        record(&mut s, "eth_blockNumber", raw_params(&params), None);
        let n = s.blocks.get(&s.head).map_or(0, |b| b.number);
        Ok::<_, ErrorObjectOwned>(Value::String(to_quantity(n)))
    })
    .map_err(reg)?;

    m.register_method("eth_getBlockByNumber", |params, st, _| {
        let raw = raw_params(&params);
        let mut seq = params.sequence();
        let tag: String = seq.next()?;
        let _full: Option<bool> = seq.optional_next()?;
        let mut s = lock(st);
        s.process_downloads(Instant::now());
        record(&mut s, "eth_getBlockByNumber", raw, None);
        Ok::<_, ErrorObjectOwned>(s.block_by_tag(&tag)?.map_or(Value::Null, |b| block_json(&b)))
    })
    .map_err(reg)?;

    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The number → hash index a walk from the head to genesis gives.
    fn full_walk(s: &ElState) -> BTreeMap<u64, B256> {
        let mut m = BTreeMap::new();
        let mut cur = s.blocks.get(&s.head).copied();
        while let Some(b) = cur {
            m.insert(b.number, b.hash);
            if b.number == 0 {
                break;
            }
            cur = s.blocks.get(&b.parent_hash).copied();
        }
        m
    }

    #[test]
    fn the_canonical_index_follows_extensions_reorgs_and_gaps() {
        let a = L2Chain::new(30);
        let b = a.fork(12, 1, 40);
        let mut s = ElState::new(a.at(0), Duration::ZERO);
        let set_head = |s: &mut ElState, chain: &L2Chain, upto: u64, head: u64| {
            for blk in chain.blocks().iter().filter(|x| x.number <= upto) {
                s.blocks.insert(blk.hash, *blk);
            }
            s.head = chain.at(head).hash;
            s.recompute_canonical();
            assert_eq!(s.canonical, full_walk(s), "head {head} of fork {}", chain.at(head).hash);
        };
        for n in 1..=30 {
            set_head(&mut s, &a, n, n);
        }
        // To a longer side chain, back to a lower head of the first, and to the side again.
        set_head(&mut s, &b, 40, 40);
        set_head(&mut s, &a, 30, 20);
        set_head(&mut s, &b, 40, 35);
        // A head whose ancestors are unknown below some height: only the connected part.
        let c = a.fork(5, 2, 50);
        for blk in c.blocks().iter().filter(|x| x.number > 45) {
            s.blocks.insert(blk.hash, *blk);
        }
        s.head = c.at(50).hash;
        s.recompute_canonical();
        assert_eq!(s.canonical, full_walk(&s));
        assert_eq!(s.canonical.keys().copied().collect::<Vec<_>>(), (46..=50).collect::<Vec<_>>());
    }
}
