//! The shipped dev NATS config (`deploy/k8s/nats/dev/nats.conf`) against a real nats-server:
//! every lightcl identity can do its job through the bus API, and the server refuses what it
//! must not do (docs/bus.md#trust-boundary). Only the ports, the pid file and the store dir are
//! changed; the `authorization` block is used exactly as shipped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightcl_bus::{Bus, EngineStates, LatestConsumer, NatsArgs, Publisher, subjects};
use lightcl_proto::{TargetUpdate, names, v1};

const CHAIN: u64 = 11_155_420;
const SOURCE: &str = "primary";
const NODE: &str = "op-reth-0";
const DEADLINE: Duration = Duration::from_secs(15);
/// A refused publish is never acked; its PubAck wait gives up after this.
const REFUSED: Duration = Duration::from_secs(1);

const USERS: [(&str, &str, &str); 4] = [
    ("lightcl-poller", "NATS_POLLER_PASSWORD", "poller-pw"),
    ("lightcl-validator", "NATS_VALIDATOR_PASSWORD", "validator-pw"),
    ("lightcl-engine-driver-op-reth-0", "NATS_ENGINE_DRIVER_PASSWORD", "driver-pw"),
    ("lightctl", "NATS_LIGHTCTL_PASSWORD", "lightctl-pw"),
];

struct Server {
    child: std::process::Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts nats-server from the shipped config, with test ports and directories.
async fn start() -> Server {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s/nats/dev/nats.conf");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut replaced = 0;
    let conf: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            let new = if t.starts_with("port:") {
                format!("port: {port}")
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
    let path = dir.path().join("nats.conf");
    std::fs::write(&path, conf).unwrap();
    let bin = std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".into());
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("-c").arg(&path).env("POD_NAME", "nats-0");
    for (_, var, pw) in USERS {
        cmd.env(var, pw);
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin} (set NATS_SERVER_BIN): {e}"));
    let server = Server { child, url: format!("nats://127.0.0.1:{port}"), dir };
    let up = tokio::time::timeout(DEADLINE, async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(up.is_ok(), "nats-server did not listen on {port}");
    server
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
    Raw { js: async_nats::jetstream::new(client), errors }
}

impl Raw {
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

fn state(node: &str) -> v1::EngineState {
    v1::EngineState {
        chain_id: CHAIN,
        node_id: node.into(),
        applied_revision: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_identity_can_do_its_job_and_nothing_else() {
    let server = start().await;
    let status = subjects::status(CHAIN, SOURCE);
    let target = subjects::target(CHAIN);

    // The poller may not create the whole topology (the validator does).
    let poller = bus(&server, "lightcl-poller").await;
    assert!(poller.ensure_topology().await.is_err(), "the poller created every stream");

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
    kv.put(&state(NODE)).await.unwrap();
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
