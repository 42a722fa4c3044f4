//! A private, real `anvil` L1 node, plus a counting HTTP proxy in front of it: the one anvil
//! launcher of the tests, the devnet and the bench.
//!
//! [`Anvil::start`] spawns `anvil` (env `ANVIL_BIN`, else `anvil` on the PATH or in the
//! workspace's `.tools`) on 127.0.0.1 with an OS-assigned port (read from its "Listening on"
//! line) and returns once it answers JSON-RPC. By default it does not mine on its own: blocks
//! appear only through [`Anvil::mine`] ([`Mining`] selects otherwise). [`Anvil::reorg`] replaces
//! the newest blocks (`anvil_reorg`), so hashes at those numbers change. The process runs in its
//! own process group and is killed on drop; [`Anvil::terminate`] stops it gracefully.
//!
//! [`CountingProxy`] forwards HTTP requests to a URL and counts them (and the JSON-RPC calls
//! inside), so a test can prove one L1 request per status; [`CountingProxy::set_down`] makes
//! it drop every connection, which a client sees as an L1 outage.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lightcl_core::L1BlockRef;
use lightcl_core::status::parse_rpc_block;
use lightcl_rpc::{Client, ClientConfig, RpcError};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::process;
use crate::wait::{self, Deadline};

/// Failure to run or talk to anvil.
#[derive(Debug, thiserror::Error)]
pub enum AnvilError {
    /// The binary could not be started.
    #[error("cannot start {bin} (set ANVIL_BIN): {source}")]
    Spawn {
        /// The binary.
        bin: String,
        /// Why.
        source: std::io::Error,
    },
    /// anvil did not print its listening address or answer in time (or exited).
    #[error("anvil did not become ready within {0:?}")]
    NotReady(Duration),
    /// A JSON-RPC call failed.
    #[error("anvil RPC: {0}")]
    Rpc(#[from] RpcError),
    /// anvil answered something unexpected.
    #[error("anvil answered unexpectedly: {0}")]
    Unexpected(String),
    /// Socket or log file trouble.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

const READY_DEADLINE: Duration = Duration::from_secs(20);

/// When anvil mines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mining {
    /// Only on [`Anvil::mine`] (`--no-mining`).
    #[default]
    Manual,
    /// A block every this many seconds (`--block-time`).
    Interval(u64),
    /// anvil's own default: a block for each transaction (and on [`Anvil::mine`]).
    OnTransaction,
}

/// Options for [`Anvil::start_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnvilOptions {
    /// When blocks are mined.
    pub mining: Mining,
    /// `--slots-in-an-epoch`: anvil's `finalized` tag is `latest - 2 × slots`.
    pub slots_in_an_epoch: u64,
    /// `--chain-id`; `None`: anvil's default (31337).
    pub chain_id: Option<u64>,
    /// Append anvil's output (it logs every request) here; `None`: discarded.
    pub log_file: Option<PathBuf>,
    /// How long the start may take until anvil answers JSON-RPC.
    pub ready_timeout: Duration,
}

impl Default for AnvilOptions {
    fn default() -> Self {
        Self {
            mining: Mining::Manual,
            slots_in_an_epoch: 32,
            chain_id: None,
            log_file: None,
            ready_timeout: READY_DEADLINE,
        }
    }
}

/// A running private anvil.
#[derive(Debug)]
pub struct Anvil {
    child: Option<Child>,
    port: u16,
    client: Client,
}

impl Anvil {
    /// Starts anvil with no auto-mining and the default epoch length.
    pub async fn start() -> Result<Self, AnvilError> {
        Self::start_with(AnvilOptions::default()).await
    }

    /// Starts anvil with `opts` and waits until it answers JSON-RPC.
    pub async fn start_with(opts: AnvilOptions) -> Result<Self, AnvilError> {
        let deadline = Deadline::after(opts.ready_timeout);
        let bin = process::anvil_bin();
        let mut cmd = Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--slots-in-an-epoch", &opts.slots_in_an_epoch.to_string()]);
        match opts.mining {
            Mining::Manual => cmd.arg("--no-mining"),
            Mining::Interval(s) => cmd.args(["--block-time", &s.to_string()]),
            Mining::OnTransaction => &mut cmd,
        };
        if let Some(id) = opts.chain_id {
            cmd.args(["--chain-id", &id.to_string()]);
        }
        let (_, stderr) = process::output_to(opts.log_file.as_deref())?;
        let mut log = match &opts.log_file {
            Some(p) => Some(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
            None => None,
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0)
            .spawn()
            .map_err(|source| AnvilError::Spawn { bin: bin.display().to_string(), source })?;
        let Some(stdout) = child.stdout.take() else {
            process::kill(&mut child);
            return Err(AnvilError::Unexpected("no stdout pipe".into()));
        };
        // anvil logs every request to stdout: keep draining it (into the log file, if any) so
        // it never blocks, and hand the listening port over once it appears.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(f) = log.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(addr) = line.trim().strip_prefix("Listening on ")
                    && let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok())
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let mut anvil = Self { child: Some(child), port: 0, client: local_client(0)? };
        // The reader ends (and drops the sender) when anvil exits before listening.
        let Ok(Ok(port)) = tokio::time::timeout(deadline.remaining(), rx).await else {
            return Err(AnvilError::NotReady(opts.ready_timeout));
        };
        anvil.port = port;
        anvil.client = local_client(port)?;
        let client = &anvil.client;
        wait::until_async(deadline, wait::POLL, || async move {
            client.call("eth_chainId", json!([])).await
        })
        .await
        .map_err(|_| AnvilError::NotReady(opts.ready_timeout))?;
        Ok(anvil)
    }

    /// The HTTP JSON-RPC URL, e.g. `http://127.0.0.1:8545`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A JSON-RPC client for this node.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Mines `n` blocks (`anvil_mine`).
    pub async fn mine(&self, n: u64) -> Result<(), AnvilError> {
        self.client.call("anvil_mine", json!([format!("{n:#x}")])).await?;
        Ok(())
    }

    /// The block at `number`, `None` when there is none.
    pub async fn block(&self, number: u64) -> Result<Option<L1BlockRef>, AnvilError> {
        self.block_at(json!(format!("{number:#x}"))).await
    }

    /// The block for a tag (`latest`, `safe`, `finalized`).
    pub async fn block_tag(&self, tag: &str) -> Result<Option<L1BlockRef>, AnvilError> {
        self.block_at(json!(tag)).await
    }

    /// The newest block.
    pub async fn latest(&self) -> Result<L1BlockRef, AnvilError> {
        self.block_tag("latest")
            .await?
            .ok_or_else(|| AnvilError::Unexpected("no latest block".into()))
    }

    async fn block_at(&self, at: Value) -> Result<Option<L1BlockRef>, AnvilError> {
        let v = self.client.call("eth_getBlockByNumber", json!([at, false])).await?;
        parse_rpc_block(&v).map_err(|e| AnvilError::Unexpected(e.to_string()))
    }

    /// Stops anvil gracefully (SIGTERM, SIGKILL after `grace`); its exit status as text, `None`
    /// when it was not running.
    pub async fn terminate(&mut self, grace: Duration) -> Option<String> {
        let mut c = self.child.take()?;
        Some(process::terminate(&mut c, grace).await)
    }

    /// Replaces the newest `depth` blocks with new ones (`anvil_reorg [depth, []]`): same
    /// height, different hashes.
    pub async fn reorg(&self, depth: u64) -> Result<(), AnvilError> {
        self.client.call("anvil_reorg", json!([depth, []])).await?;
        Ok(())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            process::kill(&mut c);
        }
    }
}

fn local_client(port: u16) -> Result<Client, AnvilError> {
    let url = format!("http://127.0.0.1:{port}")
        .parse()
        .map_err(|e| AnvilError::Unexpected(format!("url: {e}")))?;
    Ok(Client::new(ClientConfig::new(url).with_timeout(Duration::from_secs(10)))?)
}

#[derive(Debug, Default)]
struct ProxyState {
    requests: AtomicU64,
    calls: AtomicU64,
    down: AtomicBool,
    delay_ms: AtomicU64,
}

/// An HTTP proxy that counts requests and can simulate an outage. Stops on drop.
#[derive(Debug)]
pub struct CountingProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    cancel: CancellationToken,
}

impl CountingProxy {
    /// Starts a proxy on a random loopback port forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Result<Self, AnvilError> {
        let url: url::Url =
            upstream.parse().map_err(|e| AnvilError::Unexpected(format!("upstream url: {e}")))?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState::default());
        let cancel = CancellationToken::new();
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        tokio::spawn(serve(listener, url, client, state.clone(), cancel.clone()));
        Ok(Self { addr, state, cancel })
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// HTTP requests received so far (including refused ones while down).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// JSON-RPC calls received so far (a batch counts its calls).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// Holds every request this long before forwarding it (a slow L1).
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// While down, every connection is closed without an answer.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

async fn serve(
    listener: TcpListener,
    upstream: url::Url,
    client: HttpClient,
    state: Arc<ProxyState>,
    cancel: CancellationToken,
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((stream, _)) = accepted else { continue };
        if state.down.load(Ordering::SeqCst) {
            state.requests.fetch_add(1, Ordering::SeqCst);
            drop(stream);
            continue;
        }
        let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
        conns.spawn(async move {
            let svc = service_fn(move |req| {
                let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                async move { Ok::<_, Infallible>(forward(&state, &client, &upstream, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
    drop(listener);
    conns.shutdown().await;
}

async fn forward(
    state: &ProxyState,
    client: &HttpClient,
    upstream: &url::Url,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let body = match Limited::new(req.into_body(), 16 * 1024 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, format!("cannot read request: {e}")),
    };
    let calls = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(a)) => a.len() as u64,
        _ => 1,
    };
    state.calls.fetch_add(calls, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.down.load(Ordering::SeqCst) {
        return plain(StatusCode::SERVICE_UNAVAILABLE, "proxy is down".into());
    }
    let Ok(up) = Request::post(upstream.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
    else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "cannot build request".into());
    };
    match client.request(up).await {
        Ok(resp) => {
            let status = resp.status();
            match resp.into_body().collect().await {
                Ok(b) => {
                    let mut r = Response::new(Full::new(b.to_bytes()));
                    *r.status_mut() = status;
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    r
                }
                Err(e) => plain(StatusCode::BAD_GATEWAY, format!("upstream body: {e}")),
            }
        }
        Err(e) => plain(StatusCode::BAD_GATEWAY, format!("upstream: {e}")),
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn mines_reads_blocks_and_reorgs() {
        let anvil = Anvil::start_with(AnvilOptions { slots_in_an_epoch: 2, ..Default::default() })
            .await
            .unwrap();
        let genesis = anvil.latest().await.unwrap();
        assert_eq!(genesis.number, 0);
        // No auto-mining.
        assert_eq!(anvil.latest().await.unwrap().number, 0);
        anvil.mine(12).await.unwrap();
        let head = anvil.latest().await.unwrap();
        assert_eq!(head.number, 12);
        let b10 = anvil.block(10).await.unwrap().unwrap();
        assert_eq!(b10.number, 10);
        assert_eq!(anvil.block(11).await.unwrap().unwrap().parent_hash, b10.hash);
        assert!(anvil.block(13).await.unwrap().is_none());
        // finalized = latest - 2 × slots.
        assert_eq!(anvil.block_tag("finalized").await.unwrap().unwrap().number, 8);

        let b9 = anvil.block(9).await.unwrap().unwrap();
        anvil.reorg(3).await.unwrap();
        assert_eq!(anvil.latest().await.unwrap().number, 12);
        assert_ne!(anvil.block(10).await.unwrap().unwrap().hash, b10.hash);
        assert_eq!(anvil.block(9).await.unwrap().unwrap(), b9, "below the reorg depth");
        assert!(anvil.url().starts_with("http://127.0.0.1:"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn chain_id_log_file_and_a_graceful_stop() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("anvil.log");
        let opts = AnvilOptions {
            mining: Mining::OnTransaction,
            chain_id: Some(900),
            log_file: Some(log.clone()),
            ..AnvilOptions::default()
        };
        let mut anvil = Anvil::start_with(opts).await.unwrap();
        assert_eq!(anvil.client().call("eth_chainId", json!([])).await.unwrap(), json!("0x384"));
        anvil.mine(2).await.unwrap();
        assert_eq!(anvil.latest().await.unwrap().number, 2);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("Listening on 127.0.0.1:"), "{text}");
        let status = anvil.terminate(Duration::from_secs(5)).await.expect("was running");
        assert!(!status.contains("killed after"), "{status}");
        assert_eq!(anvil.terminate(Duration::from_secs(5)).await, None);
        assert!(std::net::TcpStream::connect(("127.0.0.1", anvil.port())).is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn proxy_counts_requests_and_goes_down() {
        let anvil = Anvil::start().await.unwrap();
        anvil.mine(3).await.unwrap();
        let proxy = CountingProxy::start(&anvil.url()).await.unwrap();
        let client = Client::new(
            ClientConfig::new(proxy.url().parse().unwrap()).with_timeout(Duration::from_secs(2)),
        )
        .unwrap();
        let answers = client
            .batch_calls(&[
                ("eth_getBlockByNumber", json!(["0x1", false])),
                ("eth_getBlockByNumber", json!(["0x2", false])),
                ("eth_blockNumber", json!([])),
            ])
            .await
            .unwrap();
        assert_eq!(answers.len(), 3);
        assert_eq!(answers[2].as_ref().unwrap(), &json!("0x3"));
        assert_eq!((proxy.requests(), proxy.calls()), (1, 3));

        proxy.set_down(true);
        let err = client.call("eth_blockNumber", json!([])).await.unwrap_err();
        assert_eq!(err.severity(), lightcl_core::Severity::Temporary, "{err}");
        proxy.set_down(false);
        assert_eq!(client.call("eth_blockNumber", json!([])).await.unwrap(), json!("0x3"));
    }
}
