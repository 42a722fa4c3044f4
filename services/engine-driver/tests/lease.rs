//! The single-writer lease with the real binary (docs/architecture.md#single-writer): two driver
//! processes with different node ids are pointed at ONE mock EL (same JWT secret, same engine
//! URL) and a real nats-server.
//!
//! Who sent which forkchoice update: the mock EL logs every update it handles (the ground
//! truth, but it cannot tell the clients apart) and each driver counts the updates it sent
//! (`lightcl_engine_driver_fcu_total`). While one driver's count stays put, every update the EL
//! saw in that time is the other's when the EL's count grew by exactly the other's.
//!
//! - One holds the lease and drives the EL; the other is standby: not ready (`/ready` names
//!   `lease`), its status names the holder, it plans updates but sends none (they are fenced).
//! - The holder is paused (SIGSTOP): the standby takes over within the bound below and drives
//!   the EL; the paused one, resumed with targets queued and updates planned, sends nothing and
//!   turns standby.
//! - The new holder is killed (SIGKILL): the other takes over within the bound, the EL follows
//!   the targets again, and the EL's finalized head never went back.
//! - A holder stopped gracefully (SIGTERM) releases the lease: a standby takes over at once.
//! - A holder cut off from NATS (a TCP proxy in between is cut) while it keeps re-sending an
//!   update the EL answers SYNCING: its re-sends stop when its lease window closes, before the
//!   standby takes over; every update the EL handled after that moment is the new holder's.
//! - A head the EL answered INVALID is kept in the lease value: the holder restarted (SIGKILL,
//!   then started again), a standby taking over from a killed holder, and one taking over a
//!   released lease (SIGTERM) each plan the same target again and never send that head.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use lightcl_harness::http_get;
use lightcl_harness::mock_el::{L2Chain, MockEl};
use lightcl_harness::nats::NatsServer;
use lightcl_harness::wait;
use lightcl_proto::v1;
use lightcl_proto::v1::engine_driver_control_client::EngineDriverControlClient;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// `--lease.ttl` and `--lease.renew` of both drivers (short, for a quick test).
const TTL: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_millis(500);
/// How soon a standby takes over from a holder that stopped: it counts the ttl from the last
/// renewal it saw, at most one renewal period (plus a 250 ms tick) before the stop, so the
/// takeover comes between ttl − renew and ttl + one tick after it, plus NATS round trips. Allowed:
/// ttl + renew + 1 s of slack for a loaded machine.
const TAKEOVER_BOUND: Duration = Duration::from_millis(2_000 + 500 + 1_000);
/// Bound of every other wait.
const WAIT: Duration = Duration::from_secs(15);

struct Driver {
    child: Child,
    node: String,
    admin: SocketAddr,
    grpc: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address the line with `message` names (JSON logs: `fields.addr`).
fn logged_addr(log: &str, message: &str) -> Option<SocketAddr> {
    log.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        let fields = v.get("fields")?;
        fields.get("message")?.as_str()?.contains(message).then_some(())?;
        fields.get("addr")?.as_str()?.parse().ok()
    })
}

/// The sum of every sample of `name` (all label sets) in a `/metrics` body.
fn sample(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ') || r.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// What a driver's `/metrics` says about the lease and its updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    held: bool,
    fcus: u64,
    fenced: u64,
}

impl Driver {
    /// Starts the binary for `el` with the shared secret file and short lease timings, and
    /// waits until its admin and gRPC servers listen (their addresses from its log).
    async fn spawn(nats: &str, el: &MockEl, secret: &Path, node: &str, dir: &Path) -> Self {
        let mut args = base_args(nats, &el.url(), secret, node);
        args.extend(
            ["--lease.ttl", "2s", "--lease.renew", "500ms", "--log.format", "json"]
                .map(String::from),
        );
        let log: PathBuf = dir.join(format!("{node}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_lightcl-engine-driver"))
            .args(&args[1..])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().expect("log file")))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn driver");
        let (admin, grpc) = wait::until_async(WAIT, wait::POLL, || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            std::future::ready(
                logged_addr(&text, "admin HTTP listening")
                    .zip(logged_addr(&text, "gRPC listening")),
            )
        })
        .await
        .unwrap_or_else(|t| panic!("{node} did not listen: {t}"));
        Self { child, node: node.to_owned(), admin, grpc }
    }

    /// Its lease gauge and update counters; `None` while `/metrics` does not answer.
    async fn counts(&self) -> Option<Counts> {
        let body = http_get(self.admin, "/metrics").await.ok_body()?;
        Some(Counts {
            held: sample(&body, "lightcl_engine_driver_lease_held") == 1,
            fcus: sample(&body, "lightcl_engine_driver_fcu_total"),
            fenced: sample(&body, "lightcl_engine_driver_fcu_fenced_total"),
        })
    }

    async fn must_count(&self) -> Counts {
        self.counts().await.unwrap_or_else(|| panic!("{}: /metrics does not answer", self.node))
    }

    /// Its status over gRPC.
    async fn status(&self) -> Option<v1::EngineDriverStatus> {
        let mut c =
            EngineDriverControlClient::connect(format!("http://{}", self.grpc)).await.ok()?;
        Some(c.get_status(v1::GetStatusRequest {}).await.ok()?.into_inner())
    }

    /// Standby: not ready naming `lease`, its status naming `holder`'s instance, no lease.
    async fn wait_standby_behind(&self, holder: &Self) {
        let prefix = format!("{}-", holder.node);
        wait::until_async(WAIT, wait::POLL, || async {
            let ready = http_get(self.admin, "/ready").await;
            let status = self.status().await;
            let counts = self.counts().await;
            ready.status == 503
                && ready.body.lines().any(|l| l.trim() == "lease")
                && status.is_some_and(|s| {
                    !s.lease_held
                        && !s.ready
                        && s.lease_holder.starts_with(&prefix)
                        && s.lease_key.starts_with("lease.10.")
                })
                && counts.is_some_and(|c| !c.held)
        })
        .await
        .unwrap_or_else(|t| panic!("{} is not standby behind {}: {t}", self.node, holder.node));
    }

    /// Waits until it holds the lease; how long that took from `since`.
    async fn wait_holding(&self, since: Instant, bound: Duration) -> Duration {
        wait::until_async(bound, Duration::from_millis(25), || async {
            self.counts().await.is_some_and(|c| c.held)
        })
        .await
        .unwrap_or_else(|t| panic!("{} did not take the lease over: {t}", self.node));
        since.elapsed()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -s {sig} {}", self.node);
    }
}

async fn wait_finalized(el: &MockEl, n: u64) {
    assert!(
        el.wait_until(WAIT, |e| e.finalized().number == n).await,
        "the EL did not reach finalized {n} (at {})",
        el.finalized().number
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_writer_per_el_the_standby_takes_over_and_a_fenced_driver_sends_nothing() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(100);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, SECRET_HEX);

    // A starts first and takes the absent lease; B, same EL, another node id, is standby.
    let a = Driver::spawn(&nats.url(), &el, &secret, "node-a", dir.path()).await;
    a.wait_holding(Instant::now(), WAIT).await;
    let b = Driver::spawn(&nats.url(), &el, &secret, "node-b", dir.path()).await;
    b.wait_standby_behind(&a).await;

    // A drives the EL; B plans the same updates and sends none of them.
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    wait_finalized(&el, 20).await;
    wait::until_async(WAIT, wait::POLL, || async {
        let (ca, cb) = (a.must_count().await, b.must_count().await);
        assert_eq!(cb.fcus, 0, "the standby sent a forkchoice update");
        ca.fcus == el.fcus().len() as u64 && ca.fcus > 0 && cb.fenced > 0
    })
    .await
    .unwrap_or_else(|t| panic!("every update is A's and B's are fenced: {t}"));
    assert!(a.must_count().await.held && !b.must_count().await.held);

    // A is paused (SIGSTOP) with its lease: B takes over once A stops renewing.
    let a_before = a.must_count().await;
    let el_before = el.fcus().len() as u64;
    assert_eq!(a_before.fcus, el_before);
    a.signal("STOP");
    let stopped = Instant::now();
    pubr.publish(&target(2, &chain, 40, 35, 30)).await;
    let took = b.wait_holding(stopped, TAKEOVER_BOUND).await;
    eprintln!("takeover from a paused holder: {took:?} (ttl {TTL:?}, renew {RENEW:?})");
    assert!(took >= TTL - RENEW - Duration::from_millis(250), "B took over too early: {took:?}");
    wait_finalized(&el, 30).await;

    // A resumes with its lease expired and targets 2 and 3 arriving: it plans updates for them,
    // sends none, and turns standby behind B. B applies target 3.
    a.signal("CONT");
    pubr.publish(&target(3, &chain, 50, 45, 40)).await;
    wait_finalized(&el, 40).await;
    a.wait_standby_behind(&b).await;
    wait::until_async(WAIT, wait::POLL, || async {
        let (ca, cb) = (a.must_count().await, b.must_count().await);
        assert_eq!(ca.fcus, a_before.fcus, "the fenced driver sent a forkchoice update");
        ca.fenced > a_before.fenced && el.fcus().len() as u64 - el_before == cb.fcus
    })
    .await
    .unwrap_or_else(|t| panic!("every update since the pause is B's, A's are fenced: {t}"));

    // B, now the holder, is killed (SIGKILL, no release): A takes over and drives the EL again.
    let a_before = a.must_count().await;
    let mut b = b;
    b.child.kill().expect("SIGKILL");
    let _ = b.child.wait();
    let killed = Instant::now();
    let el_before = el.fcus().len() as u64;
    let took = a.wait_holding(killed, TAKEOVER_BOUND).await;
    eprintln!("takeover from a killed holder: {took:?} (ttl {TTL:?}, renew {RENEW:?})");
    pubr.publish(&target(4, &chain, 60, 55, 50)).await;
    assert!(
        el.wait_until(WAIT, |e| e.head().number == 60
            && e.safe().number == 55
            && e.finalized().number == 50)
            .await,
        "the EL follows again: head {} safe {} finalized {}",
        el.head().number,
        el.safe().number,
        el.finalized().number
    );
    wait::until_async(WAIT, wait::POLL, || async {
        let ca = a.must_count().await;
        ca.fcus > a_before.fcus && el.fcus().len() as u64 - el_before == ca.fcus - a_before.fcus
    })
    .await
    .unwrap_or_else(|t| panic!("every update since the kill is A's: {t}"));
    assert_eq!(el.check_invariants(), Ok(()), "the EL's finalized head never went back");

    // A graceful stop (SIGTERM) releases the lease: a standby takes over at once, well before
    // the ttl would have passed.
    let c = Driver::spawn(&nats.url(), &el, &secret, "node-c", dir.path()).await;
    c.wait_standby_behind(&a).await;
    a.signal("TERM");
    let stopped = Instant::now();
    let took = c.wait_holding(stopped, TAKEOVER_BOUND).await;
    eprintln!("takeover from a holder that released its lease: {took:?}");
    assert!(took < TTL - RENEW, "the released lease was not taken over at once: {took:?}");
}

/// A TCP proxy to `to` until cut: then its connections are closed and new ones refused (a
/// partition between one client and the server).
struct Proxy {
    url: String,
    cut: CancellationToken,
}

impl Proxy {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("nats://{}", listener.local_addr().expect("proxy addr"));
        let cut = CancellationToken::new();
        let stop = cut.clone();
        tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    // Dropping the listener and the connection tasks closes everything.
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((mut inbound, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut out) = TcpStream::connect(to).await {
                                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                            }
                        });
                    }
                }
            }
        });
        Self { url, cut }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_cut_off_from_nats_stops_its_planned_re_sends_before_the_standby_takes_over() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(100);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, SECRET_HEX);
    let proxy = Proxy::start(SocketAddr::from(([127, 0, 0, 1], nats.port()))).await;

    // A reaches NATS through the proxy and holds the lease; B is standby.
    let a = Driver::spawn(&proxy.url, &el, &secret, "node-a", dir.path()).await;
    a.wait_holding(Instant::now(), WAIT).await;
    let b = Driver::spawn(&nats.url(), &el, &secret, "node-b", dir.path()).await;
    b.wait_standby_behind(&a).await;
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    wait_finalized(&el, 20).await;

    // The EL answers SYNCING from now on: A keeps re-sending its update for target 2 (planned
    // by its retry timer, no new input needed).
    el.set_forced_syncing(true);
    pubr.publish(&target(2, &chain, 40, 35, 30)).await;
    let resending = a.must_count().await.fcus + 3;
    wait::until_async(WAIT, wait::POLL, || async { a.must_count().await.fcus >= resending })
        .await
        .unwrap_or_else(|t| panic!("A does not re-send: {t}"));

    // A is cut off from NATS: it cannot renew, and does not see B take over.
    proxy.cut.cancel();
    let cut = Instant::now();
    // A's window closes by itself (its gauge follows within a tick) ...
    wait::until_async(WAIT, Duration::from_millis(25), || async {
        a.counts().await.is_some_and(|c| !c.held)
    })
    .await
    .unwrap_or_else(|t| panic!("A still holds its lease cut off from NATS: {t}"));
    let fenced_at = a.must_count().await;
    eprintln!("A fenced itself {:?} after the cut", cut.elapsed());
    // ... and B takes over later, remembering the last moment it was still standby.
    let standby_until = std::sync::Mutex::new(Instant::now());
    wait::until_async(TAKEOVER_BOUND, Duration::from_millis(25), || async {
        let polled = Instant::now();
        let held = b.counts().await.is_some_and(|c| c.held);
        if !held {
            *standby_until.lock().unwrap() = polled;
        }
        held
    })
    .await
    .unwrap_or_else(|t| panic!("B did not take over: {t}"));
    let standby_until = *standby_until.lock().unwrap();
    eprintln!("B took over {:?} after the cut", cut.elapsed());

    // B drives the EL (its re-sends too) while A keeps planning re-sends and sends none.
    el.set_forced_syncing(false);
    wait_finalized(&el, 30).await;
    wait::until_async(WAIT, wait::POLL, || async {
        let (ca, cb) = (a.must_count().await, b.must_count().await);
        assert_eq!(ca.fcus, fenced_at.fcus, "A sent after its window closed");
        // Every update the EL handled is A's (before the takeover) or B's.
        ca.fenced > fenced_at.fenced && el.fcus().len() as u64 == ca.fcus + cb.fcus
    })
    .await
    .unwrap_or_else(|t| panic!("A's re-sends are fenced and the EL saw only A's and B's: {t}"));
    // B's updates all came after the last moment B was still standby, A's all before it.
    let after = el
        .calls()
        .iter()
        .filter(|c| c.fcu.is_some() && c.at.duration_since(standby_until) > Duration::ZERO)
        .count() as u64;
    assert_eq!(after, b.must_count().await.fcus, "an update of A reached the EL after B took over");
    assert_eq!(el.check_invariants(), Ok(()));
}

/// The `alerts_total` samples of one kind in a `/metrics` body.
fn alerts(body: &str, kind: &str) -> u64 {
    let label = format!("kind=\"{kind}\"");
    body.lines()
        .filter(|l| l.starts_with("lightcl_engine_driver_alerts_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

impl Driver {
    /// Waits until it refused the newest target because its head is known INVALID (alert
    /// `target_head_invalid`): it planned the target and did not send it.
    async fn wait_refused_invalid_target(&self) {
        wait::until_async(WAIT, wait::POLL, || async {
            let body = http_get(self.admin, "/metrics").await.ok_body().unwrap_or_default();
            alerts(&body, "target_head_invalid") > 0
        })
        .await
        .unwrap_or_else(|t| panic!("{} did not refuse the INVALID target head: {t}", self.node));
    }
}

/// The INVALID heads the EL's lease value lists (empty while there is no value).
async fn leased_invalid_heads(js: &async_nats::jetstream::Context) -> Vec<Vec<u8>> {
    use prost::Message;
    let key =
        lightcl_bus::subjects::lease_key(CHAIN, &lightcl_bus::el_lease_id(secret().as_bytes()));
    let Ok(kv) = js.get_key_value(lightcl_bus::subjects::ENGINE_BUCKET).await else {
        return Vec::new();
    };
    match kv.get(key).await {
        Ok(Some(bytes)) => {
            v1::EngineLease::decode(bytes).map(|l| l.invalid_heads).unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_head_is_never_sent_again_after_a_restart_or_a_takeover() {
    let nats = NatsServer::start().await.expect("nats-server");
    let el = mock_el(0).await;
    let chain = L2Chain::new(100);
    el.set_network_chain(&chain);
    let pubr = Publisher::connect(&nats.url()).await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("nats"));
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = write_secret(&dir, SECRET_HEX);
    let sent_h = |h| el.fcus().iter().filter(|f| f.state.head_block_hash == h).count();

    let a = Driver::spawn(&nats.url(), &el, &secret, "node-a", dir.path()).await;
    a.wait_holding(Instant::now(), WAIT).await;
    pubr.publish(&target(1, &chain, 30, 25, 20)).await;
    wait_finalized(&el, 20).await;

    // The EL answers INVALID for H, the head of target 2 (the newest target from now on).
    let h = chain.at(40).hash;
    el.force_invalid(h);
    pubr.publish(&target(2, &chain, 40, 35, 30)).await;
    assert!(
        el.wait_until(WAIT, |e| e.fcus().iter().any(|f| f.state.head_block_hash == h
            && matches!(f.reply, lightcl_harness::mock_el::FcuReply::Invalid { .. })))
            .await,
        "the EL did not answer INVALID for H"
    );
    // The holder stores H in the lease value at once (an early renewal).
    wait::until_async(WAIT, wait::POLL, || async {
        leased_invalid_heads(&js).await == vec![h.to_vec()]
    })
    .await
    .unwrap_or_else(|t| panic!("the lease value does not list H: {t}"));
    let sent = sent_h(h);
    assert_eq!(sent, 1, "H was sent once");

    // A is killed and started again (a new instance, target 2 still the newest): after its
    // takeover it absorbs H from the lease value and refuses target 2.
    let mut a = a;
    a.child.kill().expect("SIGKILL");
    let _ = a.child.wait();
    let a2 = Driver::spawn(&nats.url(), &el, &secret, "node-a", dir.path()).await;
    a2.wait_holding(Instant::now(), WAIT).await;
    a2.wait_refused_invalid_target().await;
    assert_eq!(sent_h(h), sent, "the restarted driver sent H again");

    // A standby takes over from the killed holder: it never sends H either.
    let b = Driver::spawn(&nats.url(), &el, &secret, "node-b", dir.path()).await;
    b.wait_standby_behind(&a2).await;
    let mut a2 = a2;
    a2.child.kill().expect("SIGKILL");
    let _ = a2.child.wait();
    b.wait_holding(Instant::now(), WAIT).await;
    b.wait_refused_invalid_target().await;
    assert_eq!(sent_h(h), sent, "the driver that took over sent H again");

    // A holder stopped gracefully deletes the key: the next one reads H from the key's history
    // before it takes the lease, and keeps it in its own value.
    let c = Driver::spawn(&nats.url(), &el, &secret, "node-c", dir.path()).await;
    c.wait_standby_behind(&b).await;
    b.signal("TERM");
    c.wait_holding(Instant::now(), WAIT).await;
    c.wait_refused_invalid_target().await;
    assert_eq!(sent_h(h), sent, "the driver that took a released lease sent H again");
    wait::until_async(WAIT, wait::POLL, || async {
        leased_invalid_heads(&js).await == vec![h.to_vec()]
    })
    .await
    .unwrap_or_else(|t| panic!("the new holder's lease value does not list H: {t}"));

    // The EL is still driven: a target on a fork below H is applied.
    let fork = chain.fork(36, 1, 50);
    el.set_network_chain(&fork);
    pubr.publish(&target(3, &fork, 42, 35, 30)).await;
    assert!(
        el.wait_until(WAIT, |e| e.head().hash == fork.at(42).hash).await,
        "the EL does not follow the fork: head {}",
        el.head().number
    );
    assert_eq!(sent_h(h), sent);
    assert_eq!(el.check_invariants(), Ok(()));
}
