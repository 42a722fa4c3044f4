//! The shipped dev NATS config (`deploy/k8s/nats/dev/nats.conf`) against a real nats-server:
//! every lightcl identity can do its job through the bus API, and the server refuses what it
//! must not do (docs/bus.md#trust-boundary). Only the ports, the pid file and the store dir are
//! changed; the `authorization` block is used exactly as shipped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lightcl_bus::{
    Bus, ConsumerSpec, Delivery, EngineChange, EngineStates, LatestConsumer, NatsArgs, Publisher,
    StartAt, TypedConsumer, subjects,
};
use lightcl_proto::{TargetUpdate, names, v1};

const CHAIN: u64 = 11_155_420;
const SOURCE: &str = "primary";
const NODE: &str = "op-reth-0";
const DRIVER: &str = "lightcl-engine-driver-op-reth-0";
const DEADLINE: Duration = Duration::from_secs(15);
/// A refused publish is never acked; its PubAck wait gives up after this.
const REFUSED: Duration = Duration::from_secs(1);
/// Bound on a JetStream API request of a raw connection (as `Bus::connect`'s).
const JS_TIMEOUT: Duration = Duration::from_secs(2);
/// The validator's ack wait in these tests: longer than [`DEADLINE`], so a redelivery seen
/// within a deadline is the nak's doing, not the ack wait's.
const ACK_WAIT: Duration = Duration::from_secs(60);

const USERS: [(&str, &str, &str); 4] = [
    ("lightcl-poller", "NATS_POLLER_PASSWORD", "poller-pw"),
    ("lightcl-validator", "NATS_VALIDATOR_PASSWORD", "validator-pw"),
    ("lightcl-engine-driver-op-reth-0", "NATS_ENGINE_DRIVER_PASSWORD", "driver-pw"),
    ("lightctl", "NATS_LIGHTCTL_PASSWORD", "lightctl-pw"),
];

struct Server {
    child: std::process::Child,
    url: String,
    port: u16,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nats-server from the shipped config, with test directories and an OS-assigned
/// client port (from the server's ports file; no port picked beforehand that another test could
/// take meanwhile), which the config then names so that a restart comes back on it.
async fn start() -> Server {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s/nats/dev/nats.conf");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut replaced = 0;
    let mut conf: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let new = if t.starts_with("port:") {
                "port: -1".to_owned()
            } else if t.starts_with("http_port:") {
                "http_port: -1".to_owned()
            } else if t.starts_with("pid_file:") {
                format!("pid_file: \"{}\"", dir.path().join("nats.pid").display())
            } else if t.starts_with("store_dir:") {
                format!("  store_dir: \"{}\"", dir.path().join("js").display())
            } else {
                return format!("{l}\n");
            };
            replaced += 1;
            format!("{new}\n")
        })
        .collect();
    assert_eq!(replaced, 4, "port, http_port, pid_file and store_dir must each appear once");
    assert!(conf.contains("authorization {"), "the shipped config has no authorization block");
    conf.push_str(&format!("ports_file_dir: \"{}\"\n", dir.path().display()));
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, &conf).unwrap();
    let child = spawn(&path);
    let mut server = Server { child, url: String::new(), port: 0, conf: path, dir };
    let port = server.wait_listening().await;
    let pinned = conf.replacen("\nport: -1\n", &format!("\nport: {port}\n"), 1);
    assert_ne!(pinned, conf, "the client port line was not found");
    std::fs::write(&server.conf, pinned).unwrap();
    server.port = port;
    server.url = format!("nats://127.0.0.1:{port}");
    server
}

/// The client port of a complete ports file (`{"nats":["nats://127.0.0.1:4222", ...], ...}`).
fn client_port(ports: &str) -> Option<u16> {
    let url = ports.split_once(r#""nats":[""#)?.1.split_once('"')?.0;
    url.rsplit(':').next()?.parse().ok()
}

fn spawn(conf: &Path) -> std::process::Child {
    let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("-c").arg(conf).env("POD_NAME", "nats-0");
    for (_, var, pw) in USERS {
        cmd.env(var, pw);
    }
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (set NATS_SERVER_BIN): {e}"))
}

impl Server {
    /// Waits until the running process listens (it has written its ports file) and returns its
    /// client port; starts it again when it exits first (a port still held after a restart),
    /// all within [`DEADLINE`].
    async fn wait_listening(&mut self) -> u16 {
        let up = tokio::time::timeout(DEADLINE, async {
            loop {
                let file = self.dir.path().join(format!("nats-server_{}.ports", self.child.id()));
                if let Some(port) = client_port(&std::fs::read_to_string(file).unwrap_or_default())
                {
                    return port;
                }
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    self.child = spawn(&self.conf);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        up.unwrap_or_else(|_| panic!("nats-server ({}) did not listen", self.conf.display()))
    }

    /// Kills the server (SIGKILL) and starts it again from the same config: same port, same
    /// JetStream store. Clients see an outage and reconnect.
    async fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self.conf);
        let port = self.wait_listening().await;
        assert_eq!(port, self.port, "nats-server came back on another port");
    }
}

fn args(server: &Server, user: &str) -> NatsArgs {
    let pw = USERS.iter().find(|u| u.0 == user).unwrap().2;
    let file: PathBuf = server.dir.path().join(format!("{user}.password"));
    std::fs::write(&file, pw).unwrap();
    let mut a = NatsArgs::local(&server.url);
    a.user = Some(user.into());
    a.password_file = Some(file);
    a
}

/// A service's own connection (the bus API, as the service uses it).
async fn bus(server: &Server, user: &str) -> Bus {
    let bus = Bus::connect(&args(server, user), user).await.unwrap();
    let mut c = bus.connected();
    tokio::time::timeout(DEADLINE, c.wait_for(|c| *c))
        .await
        .unwrap_or_else(|_| panic!("{user} did not connect"))
        .unwrap();
    bus
}

/// A raw connection of `user` that records the server's permission errors.
struct Raw {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    errors: Arc<Mutex<Vec<String>>>,
}

async fn raw(server: &Server, user: &str) -> Raw {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let opts = args(server, user).connect_options(user).await.unwrap().event_callback(move |e| {
        let seen = seen.clone();
        async move {
            if let async_nats::Event::ServerError(e) = e {
                seen.lock().unwrap().push(e.to_string());
            }
        }
    });
    let client = opts.connect(server.url.as_str()).await.unwrap();
    let js = async_nats::jetstream::ContextBuilder::new().timeout(JS_TIMEOUT).build(client.clone());
    Raw { client, js, errors }
}

impl Raw {
    /// Asserts the server refused nothing on this connection so far. A publish no identity may
    /// make is sent as a marker: the server handles a connection's input in order and reports
    /// refusals in order, so once the marker's refusal is seen, every earlier one has arrived
    /// and the server has processed everything sent before it (an ack, an unsubscribe). (A
    /// flush is no such barrier: it only waits for the socket write.)
    async fn no_violations(&self, who: &str) {
        const MARKER: &str = "lightcl.permissions-test.marker";
        bounded(&format!("{who}: marker"), self.client.publish(MARKER, "x".into())).await;
        let seen = tokio::time::timeout(DEADLINE, async {
            while !self.errors.lock().unwrap().iter().any(|e| e.contains(MARKER)) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "{who}: the marker was not refused: {:?}", self.errors);
        let mut errors = self.errors.lock().unwrap();
        let others: Vec<String> = errors.drain(..).filter(|e| !e.contains(MARKER)).collect();
        assert!(others.is_empty(), "{who}: refused by the server: {others:?}");
    }

    /// Publishes to JetStream and expects no PubAck and a permissions violation naming `subject`.
    async fn refused(&self, subject: &str, who: &str) {
        let acked = tokio::time::timeout(REFUSED, async {
            self.js.publish(subject.to_owned(), "x".into()).await?.await.map(|_| ())
        })
        .await;
        assert!(!matches!(acked, Ok(Ok(()))), "{who}: publish to {subject} was stored");
        let named = |errs: &Vec<String>| {
            errs.iter().any(|e| e.contains("Permissions Violation") && e.contains(subject))
        };
        let seen = tokio::time::timeout(DEADLINE, async {
            while !named(&self.errors.lock().unwrap()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(seen.is_ok(), "{who}: no permissions violation for {subject}: {:?}", self.errors);
    }
}

fn state(node: &str, applied_revision: u64) -> v1::EngineState {
    v1::EngineState {
        chain_id: CHAIN,
        node_id: node.into(),
        applied_revision,
        ..Default::default()
    }
}

/// `f`'s value within [`DEADLINE`]; panics naming `what` on an error or a timeout.
async fn bounded<T, E: std::fmt::Debug>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => panic!("{what}: {e:?}"),
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

fn target_msg(revision: u64) -> v1::Target {
    v1::Target::from_core(&lightcl_core::Target {
        chain_id: CHAIN,
        revision,
        ..lightcl_core::Target::default()
    })
}

/// Publishes target `revision` as the validator, retrying (the server may be restarting) until
/// it is acked or [`DEADLINE`] passes.
async fn publish_target(p: &Publisher, revision: u64) {
    let (subject, m, id) = (subjects::target(CHAIN), target_msg(revision), format!("t{revision}"));
    lightcl_harness::wait::until_async(DEADLINE, Duration::from_millis(50), || {
        p.publish(&subject, names::TARGET, &m, Some(&id))
    })
    .await
    .unwrap_or_else(|t| panic!("validator: target {revision} not acked: {t}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn each_identity_can_do_its_job_and_nothing_else() {
    let server = start().await;
    let status = subjects::status(CHAIN, SOURCE);
    let target = subjects::target(CHAIN);

    // The poller may not create the whole topology (the validator does).
    let poller = bus(&server, "lightcl-poller").await;
    assert!(poller.ensure_topology().await.is_err(), "the poller created every stream");
    // ... but it did create its own.
    let own = poller.jetstream().get_stream(subjects::STATUS_STREAM).await;
    assert!(own.is_ok(), "the poller did not create {}", subjects::STATUS_STREAM);

    // Validator: creates the topology, publishes a target and a rejection, reads them back.
    let validator = bus(&server, "lightcl-validator").await;
    validator.ensure_topology().await.unwrap();
    let vpub = Publisher::new(validator.jetstream(), Duration::from_secs(2));
    let t = v1::Target::from_core(&lightcl_core::Target {
        chain_id: CHAIN,
        revision: 1,
        ..lightcl_core::Target::default()
    });
    vpub.publish(&target, names::TARGET, &t, Some("t1")).await.unwrap();
    let r = v1::Rejection { chain_id: CHAIN, ..Default::default() };
    vpub.publish(&subjects::rejected(CHAIN), names::REJECTION, &r, Some("r1")).await.unwrap();
    let last = lightcl_bus::last_message::<v1::Target>(
        &validator.jetstream(),
        subjects::TARGETS_STREAM,
        &target,
        names::TARGET,
    )
    .await
    .unwrap();
    assert!(last.is_some(), "the validator cannot read the newest target");

    // Poller: now the topology exists, it looks it up and publishes its status with a PubAck.
    poller.ensure_topology().await.unwrap();
    let s = v1::RawStatus { chain_id: CHAIN, ..Default::default() };
    let ppub = Publisher::new(poller.jetstream(), Duration::from_secs(2));
    ppub.publish(&status, names::RAW_STATUS, &s, Some("s1")).await.unwrap();

    // Engine-driver: reads the newest target, puts and gets its own key.
    let driver = bus(&server, "lightcl-engine-driver-op-reth-0").await;
    let mut latest =
        LatestConsumer::<TargetUpdate>::new(&driver, subjects::TARGETS_STREAM, &target);
    let got = tokio::time::timeout(DEADLINE, latest.next()).await;
    assert!(got.is_ok(), "the driver cannot read the targets");
    let kv = EngineStates::open(&driver.jetstream(), 1).await.unwrap();
    kv.put(&state(NODE, 1)).await.unwrap();
    assert_eq!(kv.get(CHAIN, NODE).await.unwrap().map(|s| s.applied_revision), Some(1));

    // lightctl: reads the fleet.
    let ctl = bus(&server, "lightctl").await;
    let fleet = EngineStates::open_existing(&ctl.jetstream()).await.unwrap().unwrap();
    let entries = fleet.entries(Some(CHAIN)).await.unwrap();
    assert_eq!(entries.len(), 1, "lightctl does not see the driver's key");

    // Refusals, each named by the server.
    let other_key = format!("$KV.lightcl-engine.{}", subjects::engine_key(CHAIN, "op-reth-1"));
    let own_key = format!("$KV.lightcl-engine.{}", subjects::engine_key(CHAIN, NODE));
    let raw_poller = raw(&server, "lightcl-poller").await;
    raw_poller.refused(&target, "poller").await;
    raw_poller.refused(&subjects::status(CHAIN, "other-source"), "poller").await;
    raw_poller.refused(&own_key, "poller").await;
    let raw_driver = raw(&server, "lightcl-engine-driver-op-reth-0").await;
    raw_driver.refused(&other_key, "driver").await;
    raw_driver.refused(&target, "driver").await;
    raw_driver.refused(&status, "driver").await;
    raw_driver.refused("$JS.API.STREAM.DELETE.LIGHTCL_TARGETS", "driver").await;
    let raw_ctl = raw(&server, "lightctl").await;
    for subject in [&target, &status, &own_key, &subjects::rejected(CHAIN)] {
        raw_ctl.refused(subject, "lightctl").await;
    }
    raw_ctl.refused("$JS.API.STREAM.PURGE.KV_lightcl-engine", "lightctl").await;
    raw_ctl.refused("$JS.API.STREAM.CREATE.LIGHTCL_TARGETS", "lightctl").await;
    let raw_validator = raw(&server, "lightcl-validator").await;
    raw_validator.refused(&status, "validator").await;
    raw_validator.refused(&own_key, "validator").await;

    // Nothing refused was stored: the target is still the validator's, the driver's key its own.
    let last = lightcl_bus::last_message::<v1::Target>(
        &validator.jetstream(),
        subjects::TARGETS_STREAM,
        &target,
        names::TARGET,
    )
    .await
    .unwrap();
    assert!(last.is_some());
    assert_eq!(fleet.entries(Some(CHAIN)).await.unwrap().len(), 1);
    // A wrong password is refused outright.
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::ConnectOptions::new()
            .user_and_password("lightctl".into(), "wrong".into())
            .connect(server.url.as_str()),
    )
    .await;
    assert!(!matches!(client, Ok(Ok(_))), "a wrong password was accepted");
}

/// The validator's durable status consumer, as the validator builds it
/// (services/validator/src/service.rs), with a long ack wait (see [`ACK_WAIT`]).
fn status_spec() -> ConsumerSpec {
    ConsumerSpec {
        stream: subjects::STATUS_STREAM.to_owned(),
        filter_subject: subjects::status_filter(CHAIN),
        durable: Some(subjects::validator_durable(CHAIN)),
        start: StartAt::LastPerSubject,
        ack_wait: ACK_WAIT,
    }
}

fn raw_status(poll_seq: u64) -> v1::RawStatus {
    v1::RawStatus { chain_id: CHAIN, source_id: SOURCE.into(), poll_seq, ..Default::default() }
}

async fn next_status(c: &mut TypedConsumer<v1::RawStatus>, who: &str) -> Delivery<v1::RawStatus> {
    tokio::time::timeout(DEADLINE, c.next())
        .await
        .unwrap_or_else(|_| panic!("{who}: no status within {DEADLINE:?}"))
}

/// The durable's state as the validator sees it (`CONSUMER.INFO`).
async fn durable_info(validator: &Bus) -> async_nats::jetstream::consumer::Info {
    let stream = bounded(
        "validator: status stream",
        validator.jetstream().get_stream(subjects::STATUS_STREAM),
    )
    .await;
    bounded("validator: durable info", stream.consumer_info(subjects::validator_durable(CHAIN)))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn validator_replicas_share_the_durable_status_consumer() {
    let server = start().await;
    let status = subjects::status(CHAIN, SOURCE);
    let validator = bus(&server, "lightcl-validator").await;
    validator.ensure_topology().await.unwrap();
    let poller = bus(&server, "lightcl-poller").await;
    poller.ensure_topology().await.unwrap();
    let ppub = Publisher::new(poller.jetstream(), Duration::from_secs(2));
    bounded(
        "poller: status 1",
        ppub.publish(&status, names::RAW_STATUS, &raw_status(1), Some("s1")),
    )
    .await;

    // Replica A (a connection that records the server's refusals) finds the topology and
    // creates the durable, which starts at the poller's last status...
    let raw_a = raw(&server, "lightcl-validator").await;
    bounded("replica A: topology", lightcl_bus::ensure_topology(&raw_a.js, 1)).await;
    let mut a =
        TypedConsumer::<v1::RawStatus>::new(raw_a.js.clone(), status_spec(), names::RAW_STATUS);
    bounded("replica A: create the durable", a.open_now()).await;
    let d = next_status(&mut a, "replica A").await;
    assert_eq!((d.message.poll_seq, d.subject.as_str(), d.delivered), (1, status.as_str(), 1));
    // ... says it is still working on it, then naks it for an immediate redelivery: the ack wait
    // is longer than the deadline, so only the nak brings it back in time ...
    bounded("replica A: in progress", d.in_progress()).await;
    bounded("replica A: nak", d.nak(Duration::ZERO)).await;
    let again = next_status(&mut a, "replica A").await;
    assert_eq!((again.sequence, again.delivered), (d.sequence, 2), "the nak did not redeliver");
    // ... and acks it, waiting for the server's confirmation (a double ack).
    bounded("replica A: ack", again.ack()).await;
    raw_a.no_violations("validator replica A").await;
    let info = durable_info(&validator).await;
    assert_eq!(info.ack_floor.stream_sequence, d.sequence, "the ack was not recorded");
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));

    // Replica B (another connection, the service's own bus client) binds the same durable
    // while A still pulls from it.
    let validator_b = bus(&server, "lightcl-validator").await;
    let mut b = TypedConsumer::<v1::RawStatus>::new(
        validator_b.jetstream(),
        status_spec(),
        names::RAW_STATUS,
    );
    bounded("replica B: bind the durable", b.open_now()).await;
    assert_eq!(durable_info(&validator).await.created, info.created, "B made a new consumer");
    // A stops: once the server has processed its unsubscribe (the marker of `no_violations`),
    // A's pending pulls have no interest and are skipped; the next status goes to B.
    drop(a);
    raw_a.no_violations("validator replica A").await;
    bounded(
        "poller: status 2",
        ppub.publish(&status, names::RAW_STATUS, &raw_status(2), Some("s2")),
    )
    .await;
    let Ok(d2) = tokio::time::timeout(DEADLINE, b.next()).await else {
        let i = durable_info(&validator).await;
        panic!(
            "replica B: no status within {DEADLINE:?}: delivered {:?} ack floor {:?} ack pending {} waiting {} pending {} redelivered {}",
            i.delivered,
            i.ack_floor,
            i.num_ack_pending,
            i.num_waiting,
            i.num_pending,
            i.num_redelivered
        );
    };
    assert_eq!((d2.message.poll_seq, d2.delivered), (2, 1));
    assert!(d2.sequence > d.sequence);
    bounded("replica B: ack", d2.ack()).await;
    let info = durable_info(&validator).await;
    assert_eq!(info.ack_floor.stream_sequence, d2.sequence, "B's ack was not recorded");
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn lightctl_watches_the_puts_of_a_driver() {
    let server = start().await;
    let validator = bus(&server, "lightcl-validator").await;
    validator.ensure_topology().await.unwrap();
    // lightctl's fleet watch (crates/lightctl/src/fleet.rs): a plain connection of its user,
    // the existing bucket, `EngineStates::watch` of the chain.
    let ctl = raw(&server, "lightctl").await;
    let fleet = bounded("lightctl: open the bucket", EngineStates::open_existing(&ctl.js))
        .await
        .expect("the validator created the bucket");
    let mut changes = Box::pin(bounded("lightctl: watch", fleet.watch(Some(CHAIN))).await);
    let driver = bus(&server, DRIVER).await;
    let kv = bounded("driver: open the bucket", EngineStates::open(&driver.jetstream(), 1)).await;
    for revision in [1, 2] {
        bounded("driver: put", kv.put(&state(NODE, revision))).await;
        let change = tokio::time::timeout(DEADLINE, changes.next())
            .await
            .unwrap_or_else(|_| panic!("lightctl saw no change within {DEADLINE:?}"));
        match change {
            Some(Ok(EngineChange::Put(entry))) => {
                assert_eq!(entry.key, subjects::engine_key(CHAIN, NODE));
                let seen = entry.state.as_ref().map(|s| s.applied_revision).ok();
                assert_eq!(seen, Some(revision), "lightctl saw {entry:?}");
            }
            other => panic!("lightctl: expected the driver's put, got {other:?}"),
        }
    }
    ctl.no_violations("lightctl").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_driver_re_creates_its_target_consumer_after_a_server_restart() {
    let mut server = start().await;
    let target = subjects::target(CHAIN);
    let validator = bus(&server, "lightcl-validator").await;
    validator.ensure_topology().await.unwrap();
    let vpub = Publisher::new(validator.jetstream(), Duration::from_secs(2));
    publish_target(&vpub, 1).await;

    // The topology as every (re-)creation looks it up first, then the create request the
    // driver's consumer sends (async-nats, a consumer with neither name
    // nor durable name): no name in the subject, the server picks one.
    let raw_driver = raw(&server, DRIVER).await;
    bounded("driver: topology", lightcl_bus::ensure_topology(&raw_driver.js, 1)).await;
    let request = format!(
        r#"{{"stream_name":"{}","config":{{"filter_subject":"{target}","deliver_policy":"last_per_subject","ack_policy":"none","mem_storage":true,"num_replicas":1,"inactive_threshold":5000000000}},"action":"create"}}"#,
        subjects::TARGETS_STREAM
    );
    let subject = format!("$JS.API.CONSUMER.CREATE.{}", subjects::TARGETS_STREAM);
    let reply = bounded(
        "driver: unnamed consumer create",
        raw_driver.client.request(subject, request.into()),
    )
    .await;
    let reply = String::from_utf8_lossy(&reply.payload).into_owned();
    assert!(
        reply.contains(r#""name":"#) && !reply.contains(r#""error""#),
        "driver: unnamed consumer create answered {reply}"
    );
    raw_driver.no_violations("driver").await;

    // The driver follows the targets ...
    let driver = bus(&server, DRIVER).await;
    let mut latest =
        LatestConsumer::<TargetUpdate>::new(&driver, subjects::TARGETS_STREAM, &target);
    let first = tokio::time::timeout(DEADLINE, latest.next()).await.expect("driver: first target");
    assert_eq!(first.message.target.revision, 1);
    // ... the server restarts (its in-memory consumer is gone) ...
    server.restart().await;
    publish_target(&vpub, 2).await;
    // ... and the driver re-creates its consumer (ensure_topology, then the create above) and
    // receives the target published after the restart.
    let after = tokio::time::timeout(DEADLINE, async {
        loop {
            let l = latest.next().await;
            if l.message.target.revision == 2 {
                return l;
            }
        }
    })
    .await;
    assert!(after.is_ok(), "driver: no target after the restart within {DEADLINE:?}");
    let generation = driver.connection().borrow().generation;
    assert!(generation >= 2, "the driver never reconnected (generation {generation})");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_validator_converges_streams_and_bucket_with_other_settings() {
    let server = start().await;
    // Streams and a bucket made with other limits (an older release, a hand edit) ...
    let validator = raw(&server, "lightcl-validator").await;
    for spec in lightcl_bus::stream_specs() {
        let drifted = async_nats::jetstream::stream::Config {
            name: spec.name.to_owned(),
            subjects: vec![spec.subjects.to_owned()],
            max_messages_per_subject: 3,
            ..Default::default()
        };
        bounded("validator: drifted stream", validator.js.create_stream(drifted)).await;
    }
    let drifted = async_nats::jetstream::kv::Config {
        bucket: subjects::ENGINE_BUCKET.to_owned(),
        history: 1,
        ..Default::default()
    };
    bounded("validator: drifted bucket", validator.js.create_key_value(drifted)).await;
    // ... are updated to the configured ones when the validator ensures the topology (a refused
    // update is only logged: the settings tell).
    bounded("validator: topology", lightcl_bus::ensure_topology(&validator.js, 1)).await;
    validator.no_violations("validator").await;
    for spec in lightcl_bus::stream_specs() {
        let mut stream = bounded("validator: stream", validator.js.get_stream(spec.name)).await;
        let config = bounded("validator: stream info", stream.info()).await.config.clone();
        assert_eq!(
            (config.max_age, config.max_messages_per_subject, config.allow_direct),
            (spec.max_age, spec.max_per_subject, true),
            "{} was not updated",
            spec.name
        );
    }
    let mut bucket =
        bounded("validator: bucket", validator.js.get_stream(subjects::ENGINE_BUCKET_STREAM)).await;
    let history =
        bounded("validator: bucket info", bucket.info()).await.config.max_messages_per_subject;
    assert_eq!(history, 5, "the bucket's history was not updated (ENGINE_HISTORY)");
}

/// The validator's vote window (every source's statuses since a start time, through a
/// server-named consumer) and its watch of the drivers' applied positions in the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn the_validator_reads_the_vote_window_and_watches_the_drivers() {
    let server = start().await;
    let validator = bus(&server, "lightcl-validator").await;
    validator.ensure_topology().await.unwrap();
    let poller = bus(&server, "lightcl-poller").await;
    let full = v1::RawStatus {
        chain_id: CHAIN,
        source_id: SOURCE.into(),
        status: Some((&lightcl_core::SyncStatus::default()).into()),
        ..Default::default()
    };
    let ppub = Publisher::new(poller.jetstream(), Duration::from_secs(2));
    let subject = subjects::status(CHAIN, SOURCE);
    bounded("poller: publish", ppub.publish(&subject, names::RAW_STATUS, &full, Some("w1"))).await;
    let mut window = LatestConsumer::<lightcl_proto::SourceStatus>::new(
        &validator,
        subjects::STATUS_STREAM,
        subjects::status_filter(CHAIN),
    )
    .since(Duration::from_secs(30));
    let got = tokio::time::timeout(DEADLINE, window.next())
        .await
        .unwrap_or_else(|_| panic!("the validator's vote window saw nothing within {DEADLINE:?}"));
    assert_eq!(got.message.source_id, SOURCE);
    let fleet =
        bounded("validator: open the bucket", EngineStates::open_existing(&validator.jetstream()))
            .await
            .expect("bucket");
    let mut changes = Box::pin(bounded("validator: watch", fleet.watch(Some(CHAIN))).await);
    let driver = bus(&server, DRIVER).await;
    let kv = bounded("driver: open the bucket", EngineStates::open(&driver.jetstream(), 1)).await;
    bounded("driver: put", kv.put(&state(NODE, 3))).await;
    let change = tokio::time::timeout(DEADLINE, changes.next())
        .await
        .unwrap_or_else(|_| panic!("the validator saw no driver position within {DEADLINE:?}"));
    assert!(matches!(change, Some(Ok(EngineChange::Put(_)))), "{change:?}");
}

/// The single-writer lease of the driver's EL (services/engine-driver/src/lease.rs), through
/// the bus API as the driver's user: read the absent key, watch it, create it, renew it by
/// compare-and-set, lose a stale compare-and-set and a create over it, release it, read the
/// released value from the key's history and create it again over the delete marker. The server refuses nothing of it, and refuses the lease key of
/// another chain; lightctl's fleet does not list the lease as an engine state.
#[tokio::test(flavor = "multi_thread")]
async fn the_driver_can_hold_the_lease_of_its_el() {
    let server = start().await;
    let validator = bus(&server, "lightcl-validator").await;
    validator.ensure_topology().await.unwrap();
    let driver = raw(&server, DRIVER).await;
    let el_id = lightcl_bus::el_lease_id(&[7u8; 32]);
    let store = bounded(
        "driver: open the lease",
        lightcl_bus::LeaseStore::open(&driver.js, 1, CHAIN, &el_id),
    )
    .await;
    assert_eq!(store.key(), subjects::lease_key(CHAIN, &el_id));
    assert!(bounded("driver: get the absent lease", store.get()).await.is_none());
    let mut watch = Box::pin(bounded("driver: watch the lease", store.watch()).await);
    let lease = v1::EngineLease {
        holder: format!("{NODE}-0a1b2c3d"),
        node_id: NODE.into(),
        chain_id: CHAIN,
        el_id: el_id.clone(),
        written_at_ms: 1,
        invalid_heads: vec![vec![0xab; 32]],
    };
    let history = bounded("driver: the history of the absent lease", store.held_history()).await;
    assert!(history.is_empty(), "{history:?}");
    let created = bounded("driver: create the lease", store.write(&lease, 0)).await;
    let seen = tokio::time::timeout(DEADLINE, watch.next())
        .await
        .unwrap_or_else(|_| panic!("driver: the watch saw no write within {DEADLINE:?}"));
    match seen {
        Some(Ok(e)) => {
            assert_eq!(e.revision, created);
            assert_eq!(e.holder(), Some(lease.holder.as_str()));
        }
        other => panic!("driver: expected its own write on the watch, got {other:?}"),
    }
    let renewed = bounded("driver: renew the lease", store.write(&lease, created)).await;
    assert!(renewed > created);
    for (expect, what) in [(created, "a stale compare-and-set"), (0, "a create over the lease")] {
        match tokio::time::timeout(DEADLINE, store.write(&lease, expect)).await {
            Ok(Err(lightcl_bus::BusError::WrongLastSequence { .. })) => {}
            other => panic!("driver: {what} was not refused as lost: {other:?}"),
        }
    }
    let current = bounded("driver: get the lease", store.get()).await;
    assert_eq!(current.map(|e| e.revision), Some(renewed));
    bounded("driver: release the lease", store.release(renewed)).await;
    // The released value (its INVALID heads) is still read from the key's history.
    let history = bounded("driver: the history of the released lease", store.held_history()).await;
    assert_eq!(history.last(), Some(&lease), "{history:?}");
    let again = bounded("driver: create after the release", store.write(&lease, 0)).await;
    assert!(again > renewed);
    driver.no_violations("driver").await;

    // Another chain's lease is not the driver's to write.
    let other = format!("$KV.lightcl-engine.{}", subjects::lease_key(CHAIN + 1, &el_id));
    driver.refused(&other, "driver").await;

    // lightctl's fleet (every key of the bucket) lists no lease as an engine state.
    let ctl = raw(&server, "lightctl").await;
    let fleet = bounded("lightctl: open the bucket", EngineStates::open_existing(&ctl.js))
        .await
        .expect("the validator created the bucket");
    let entries = bounded("lightctl: list the bucket", fleet.entries(None)).await;
    assert!(entries.is_empty(), "lightctl lists the lease: {entries:?}");
    ctl.no_violations("lightctl").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_validator_takes_early_copies_of_statuses() {
    let server = start().await;
    let status = subjects::status(CHAIN, SOURCE);
    let validator = bus(&server, "lightcl-validator").await;
    validator.ensure_topology().await.unwrap();
    let raw_v = raw(&server, "lightcl-validator").await;
    let mut copies = bounded(
        "validator: early copies",
        lightcl_bus::CoreCopies::<v1::RawStatus>::subscribe(
            &raw_v.client,
            subjects::status_filter(CHAIN),
            format!("{}-early", subjects::validator_durable(CHAIN)),
            names::RAW_STATUS,
        ),
    )
    .await;
    // The subscription is in place once the server has processed it (the marker's refusal).
    raw_v.no_violations("validator").await;
    let poller = bus(&server, "lightcl-poller").await;
    let ppub = Publisher::new(poller.jetstream(), Duration::from_secs(2));
    bounded("poller: status", ppub.publish(&status, names::RAW_STATUS, &raw_status(7), Some("s7")))
        .await;
    let Ok(copy) = tokio::time::timeout(DEADLINE, copies.next()).await else {
        panic!("validator: no early copy within {DEADLINE:?}");
    };
    assert_eq!(copy.message.poll_seq, 7);
    assert_eq!((copy.subject.as_str(), copy.msg_id.as_deref()), (status.as_str(), Some("s7")));
    assert_eq!(copy.sequence, 0, "a copy has no stream sequence");
    raw_v.no_violations("validator").await;

    // An engine-driver may not read the statuses.
    let raw_d = raw(&server, DRIVER).await;
    let _sub =
        bounded("driver: subscribe", raw_d.client.subscribe(subjects::status_filter(CHAIN))).await;
    let filter = subjects::status_filter(CHAIN);
    let refused = || {
        raw_d.errors.lock().unwrap().iter().any(|e| {
            e.contains("Permissions Violation") && e.contains("Subscription") && e.contains(&filter)
        })
    };
    let seen =
        lightcl_harness::wait::until_async(DEADLINE, lightcl_harness::wait::POLL, || async {
            refused()
        })
        .await;
    assert!(seen.is_ok(), "driver: its status subscription was not refused: {:?}", raw_d.errors);
}
