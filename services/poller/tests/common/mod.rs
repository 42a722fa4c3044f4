//! Shared fixtures: a real nats-server, a mock consensus source (real HTTP JSON-RPC), an
//! in-process poller, readers of the `LIGHTCL_STATUS` stream and of `/metrics`.

#![allow(dead_code, missing_docs)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use lightcl_bus::{Bus, CONTENT_TYPE_PROTOBUF, MESSAGE_HEADER, NatsArgs, status_msg_id, subjects};
use lightcl_core::SyncStatus;
use lightcl_harness::mock_source::{Heads, MockSource, synthetic_status};
use lightcl_harness::nats::NatsServer;
use lightcl_poller::{Bound, Cli, RunError, run};
use lightcl_proto::{names, v1};
use prost::Message;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const CHAIN: u64 = 10;
pub const SRC: &str = "src-a";
pub const TOKEN: &str = "t0ken";
pub const SYNC: &str = "optimism_syncStatus";
/// The default `--heartbeat` of these tests, in ms.
pub const HEARTBEAT_MS: u64 = 1_000;

/// The `n`-th synthetic status: every head moves with `n`.
pub fn status(n: u64) -> SyncStatus {
    synthetic_status(Heads {
        l1: 100 + n,
        unsafe_l2: 606 + 6 * n,
        safe_l2: 600 + 6 * n,
        finalized_l2: 500 + n,
    })
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// nats-server + mock source (serving `status(0)` for chain 10) + a bus client for the test.
pub struct Env {
    pub nats: NatsServer,
    pub source: MockSource,
    pub bus: Bus,
    pub token_file: tempfile::NamedTempFile,
}

impl Env {
    pub async fn new() -> Self {
        let nats = NatsServer::start().await.expect("nats-server");
        let source = MockSource::start(CHAIN, status(0)).await.expect("mock source");
        // The test does not create the streams: the poller must.
        let bus = Bus::connect(&NatsArgs::local(nats.url()), "test").await.expect("bus");
        let token_file = tempfile::NamedTempFile::new().expect("tmp");
        std::fs::write(token_file.path(), format!("{TOKEN}\n")).expect("token");
        Self { nats, source, bus, token_file }
    }

    /// Poller flags for this environment; `overrides` replace or add `(flag, value)` pairs.
    pub fn args(&self, overrides: &[(&str, &str)]) -> Vec<String> {
        let token = self.token_file.path().display().to_string();
        let (source, nats) = (self.source.url(), self.nats.url());
        let mut flags: Vec<(&str, &str)> = vec![
            ("--chain-id", "10"),
            ("--grpc.addr", "127.0.0.1:0"),
            ("--admin.addr", "127.0.0.1:0"),
            ("--l2.follow.source", &source),
            ("--source-id", SRC),
            ("--nats.url", &nats),
            ("--poll-interval", "50ms"),
            ("--rpc-timeout", "500ms"),
            ("--heartbeat", "1s"),
            ("--max-backoff", "200ms"),
            ("--shutdown-grace", "2s"),
            ("--grpc.token-file", &token),
        ];
        for (flag, value) in overrides {
            match flags.iter_mut().find(|(f, _)| f == flag) {
                Some(slot) => slot.1 = value,
                None => flags.push((flag, value)),
            }
        }
        let mut args = vec!["lightcl-poller".to_owned()];
        for (f, v) in flags {
            args.push(f.to_owned());
            args.push(v.to_owned());
        }
        args
    }

    pub fn cli(&self, overrides: &[(&str, &str)]) -> Cli {
        Cli::try_parse_from(self.args(overrides)).expect("flags")
    }

    /// Starts an in-process poller; returns once its servers listen (not necessarily ready).
    pub async fn spawn(&self, overrides: &[(&str, &str)]) -> Running {
        self.spawn_cli(self.cli(overrides)).await
    }

    /// Starts an in-process poller from parsed flags; returns once its servers listen.
    pub async fn spawn_cli(&self, cli: Cli) -> Running {
        let cfg = cli.into_config().expect("config");
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = cancel.clone();
        let handle = tokio::spawn(async move {
            run(cfg, c, move |b| {
                let _ = tx.send(b);
            })
            .await
        });
        let bound = tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect("poller did not bind")
            .expect("bound");
        Running { cancel, handle, bound }
    }

    /// Starts an in-process poller and waits until it is ready.
    pub async fn start(&self, overrides: &[(&str, &str)]) -> Running {
        let p = self.spawn(overrides).await;
        p.wait_ready(200).await;
        p
    }

    /// Runs a poller that is expected to stop on its own; its result.
    pub async fn run_to_end(&self, overrides: &[(&str, &str)]) -> Result<(), RunError> {
        let cfg = self.cli(overrides).into_config().expect("config");
        let cancel = CancellationToken::new();
        let _guard = cancel.clone().drop_guard();
        tokio::time::timeout(Duration::from_secs(15), run(cfg, cancel, |_| {}))
            .await
            .expect("poller did not stop on its own")
    }

    /// Every raw status stored for `source_id`, in stream order.
    pub async fn stored(&self, source_id: &str) -> Vec<Stored> {
        stored_on(&self.bus, source_id).await
    }

    /// Waits until at least `n` statuses of `source_id` are stored; returns them all.
    pub async fn wait_stored(&self, source_id: &str, n: usize) -> Vec<Stored> {
        let every = Duration::from_millis(10);
        let got = wait::until_async(Duration::from_secs(15), every, || async {
            Some(self.stored(source_id).await).filter(|s| s.len() >= n)
        })
        .await;
        match got {
            Ok(s) => s,
            Err(_) => {
                panic!("expected {n} stored statuses, have {}", self.stored(source_id).await.len())
            }
        }
    }
}

/// One stored `RawStatus` with its stream metadata.
#[derive(Debug, Clone)]
pub struct Stored {
    pub raw: v1::RawStatus,
    pub status: SyncStatus,
    pub msg_id: String,
    pub content_type: String,
    pub message_name: String,
    /// The W3C `traceparent` header, if any.
    pub traceparent: Option<String>,
    /// Stream time (ms since the epoch) when JetStream stored it.
    pub stored_ms: u64,
    pub seq: u64,
}

impl Stored {
    /// The heartbeat slot encoded in the `Nats-Msg-Id` (checked against the documented
    /// formula); panics when no slot near the stream time matches.
    pub fn slot(&self, heartbeat_ms: u64) -> u64 {
        let around = self.stored_ms / heartbeat_ms;
        (around.saturating_sub(3)..=around + 1)
            .find(|k| status_msg_id(CHAIN, &self.raw.source_id, &self.status, *k) == self.msg_id)
            .unwrap_or_else(|| {
                panic!("Nats-Msg-Id {} is not status_msg_id(.., slot ~{around})", self.msg_id)
            })
    }

    /// Asserts the message is a well-formed `RawStatus` of `source_id` carrying `expected`.
    pub fn check(&self, source_id: &str, expected: &SyncStatus) {
        assert_eq!(self.raw.chain_id, CHAIN);
        assert_eq!(self.raw.source_id, source_id);
        assert_eq!(&self.status, expected, "stored status = the source's status");
        assert_eq!(self.content_type, CONTENT_TYPE_PROTOBUF);
        assert_eq!(self.message_name, names::RAW_STATUS);
        assert!(
            self.raw.observed_at_ms <= self.stored_ms + 1_000
                && self.raw.observed_at_ms + 10_000 >= self.stored_ms,
            "observed_at_ms {} vs stored at {}",
            self.raw.observed_at_ms,
            self.stored_ms
        );
    }
}

pub async fn stored_on(bus: &Bus, source_id: &str) -> Vec<Stored> {
    let subject = subjects::status(CHAIN, source_id);
    let js = bus.jetstream();
    let Ok(mut s) = js.get_stream(subjects::STATUS_STREAM).await else { return Vec::new() };
    let Ok(info) = s.info().await else { return Vec::new() };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first.max(1)..=last {
        let Ok(m) = s.get_raw_message(seq).await else { continue };
        if m.subject.as_str() != subject {
            continue;
        }
        let header = |k: &str| m.headers.get(k).map(|v| v.as_str().to_owned()).unwrap_or_default();
        let raw = v1::RawStatus::decode(m.payload.as_ref()).expect("stored RawStatus decodes");
        let status = raw.core_status().expect("stored status converts");
        out.push(Stored {
            status,
            msg_id: header("Nats-Msg-Id"),
            content_type: header("Content-Type"),
            message_name: header(MESSAGE_HEADER),
            traceparent: m.headers.get("traceparent").map(|v| v.as_str().to_owned()),
            stored_ms: (m.time.unix_timestamp_nanos() / 1_000_000) as u64,
            seq: m.sequence,
            raw,
        });
    }
    out
}

/// An in-process poller.
pub struct Running {
    pub cancel: CancellationToken,
    pub handle: JoinHandle<Result<(), RunError>>,
    pub bound: Bound,
}

impl Running {
    /// Cancels and waits for a clean exit.
    pub async fn stop(self) {
        self.cancel.cancel();
        let r = tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("poller did not stop in time")
            .expect("join");
        r.expect("clean exit");
    }

    /// `/ready`: (status, body).
    pub async fn ready(&self) -> (u16, String) {
        let r = http_get(self.bound.admin, "/ready").await;
        (r.status, r.body)
    }

    pub async fn live(&self) -> u16 {
        http_get(self.bound.admin, "/live").await.status
    }

    /// Waits until `/ready` answers `code`.
    pub async fn wait_ready(&self, code: u16) {
        let admin = self.bound.admin;
        wait::until_async(Duration::from_secs(15), wait::POLL, || async move {
            http_get(admin, "/ready").await.status == code
        })
        .await
        .unwrap_or_else(|t| panic!("/ready never answered {code}: {t}"));
    }

    pub async fn metrics(&self) -> String {
        let m = http_get(self.bound.admin, "/metrics").await;
        assert_eq!(m.status, 200, "/metrics");
        m.body
    }

    /// The value of one series, e.g. `lightcl_poller_polls_total{result="ok"}` (0 if absent).
    pub async fn metric(&self, series: &str) -> f64 {
        metric(&self.metrics().await, series)
    }

    /// Waits until `series` is at least `at_least`; returns its value.
    pub async fn wait_metric(&self, series: &str, at_least: f64) -> f64 {
        let got = wait::until_async(Duration::from_secs(15), wait::POLL, || async {
            Some(self.metric(series).await).filter(|v| *v >= at_least)
        })
        .await;
        match got {
            Ok(v) => v,
            Err(_) => panic!("{series} = {}, expected >= {at_least}", self.metric(series).await),
        }
    }

    pub async fn control(
        &self,
    ) -> v1::poller_control_client::PollerControlClient<tonic::transport::Channel> {
        v1::poller_control_client::PollerControlClient::connect(format!(
            "http://{}",
            self.bound.grpc
        ))
        .await
        .expect("grpc connect")
    }
}

/// The value of `series` in a Prometheus text exposition (0 if absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii"));
    req
}

/// Asserts `cond` holds at every check during `window` (an absence cannot be awaited).
pub async fn holds_for<F, Fut>(window: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + window;
    while Instant::now() < end {
        assert!(cond().await, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cond().await, "{what}");
}

pub use lightcl_harness::{http_get, wait};
