//! Mutual TLS against a real nats-server that verifies client certificates
//! (`tls { ... verify: true }`, certificates made here by a private CA): a client presenting a
//! certificate of the server's CA (`--nats.tls-ca` + `--nats.tls-cert` + `--nats.tls-key`)
//! connects and uses JetStream; one with only `--nats.tls-ca`, or with a certificate of another
//! CA, is refused by the server — reported by the client as a failed connection attempt and by
//! the server as a TLS handshake error, both within a deadline.

use std::path::PathBuf;
use std::time::Duration;

use lightcl_bus::{Bus, NatsArgs, Publisher, last_message, subjects};
use lightcl_harness::nats::{NatsOptions, NatsServer};
use lightcl_harness::tls::{CertFiles, TestCa};
use lightcl_harness::wait;
use lightcl_proto::{names, v1};

const CHAIN: u64 = 10;
const DEADLINE: Duration = Duration::from_secs(15);

/// A nats-server requiring TLS with verified client certificates, and the CA behind both sides.
struct Rig {
    server: NatsServer,
    ca: TestCa,
    ca_file: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

async fn start() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("nats");
    let ca_file = ca.write_pem(dir.path());
    let server_files = ca.server_cert().write_pem(dir.path(), "server");
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 2\n}}\n",
        server_files.cert.display().to_string(),
        server_files.key.display().to_string(),
        ca_file.display().to_string(),
    );
    let log = dir.path().join("nats.log");
    let opts = NatsOptions {
        log_file: Some(log.clone()),
        extra_config: Some(tls),
        ..NatsOptions::default()
    };
    let server = NatsServer::start_with(opts).await.unwrap();
    Rig { server, ca, ca_file, log, dir }
}

impl Rig {
    /// The flags of a service trusting the server's CA, presenting `client` if given.
    fn args(&self, client: Option<&CertFiles>) -> NatsArgs {
        let mut a = NatsArgs::local(self.server.url());
        a.tls_ca = Some(self.ca_file.clone());
        a.tls_cert = client.map(|c| c.cert.clone());
        a.tls_key = client.map(|c| c.key.clone());
        a
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connects with `args` (retrying in the background, as the services do) and waits until
    /// the client reports a failed attempt and the server logs a refused TLS handshake whose
    /// reason contains `why`; the client must never have connected.
    async fn refused(&self, args: &NatsArgs, who: &str, why: &str) {
        args.check().unwrap_or_else(|e| panic!("{who}: the flags themselves are fine: {e}"));
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let opts = args.connect_options(who).await.unwrap().event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e);
            }
        });
        // `retry_on_initial_connect`: returns at once, the attempts run in the background.
        let client = opts.connect(self.server.url()).await.unwrap();
        let failed = tokio::time::timeout(DEADLINE, async {
            while let Some(event) = events.recv().await {
                match event {
                    async_nats::Event::ClientError(e) => return e.to_string(),
                    async_nats::Event::Connected => panic!("{who}: connected"),
                    _ => {}
                }
            }
            panic!("{who}: the event stream ended");
        })
        .await
        .unwrap_or_else(|_| panic!("{who}: no failed connection attempt within {DEADLINE:?}"));
        let logged = wait::until_async(DEADLINE, wait::POLL, || {
            let log = self.log();
            std::future::ready(
                log.lines().any(|l| l.contains("TLS handshake error") && l.contains(why)),
            )
        })
        .await;
        assert!(
            logged.is_ok(),
            "{who}: the server logged no refusal with {why:?}:\n{}",
            self.log()
        );
        assert_ne!(
            client.connection_state(),
            async_nats::connection::State::Connected,
            "{who}: connected after {failed}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_of_the_servers_ca_connects_and_publishes() {
    let rig = start().await;
    let client = rig.ca.client_cert("lightcl-poller").write_pem(rig.dir.path(), "client");
    let args = rig.args(Some(&client));
    args.check().unwrap();
    let bus = Bus::connect(&args, "mtls-test").await.unwrap();
    let mut connected = bus.connected();
    tokio::time::timeout(DEADLINE, connected.wait_for(|c| *c))
        .await
        .expect("connected over mutual TLS")
        .unwrap();
    assert!(bus.client().server_info().tls_required, "the server does not require TLS");
    bus.ensure_topology().await.unwrap();

    let subject = subjects::status(CHAIN, "primary");
    let status = v1::RawStatus { chain_id: CHAIN, ..Default::default() };
    let publisher = Publisher::new(bus.jetstream(), args.publish_timeout);
    publisher.publish(&subject, names::RAW_STATUS, &status, Some("s1")).await.unwrap();
    let last = last_message::<v1::RawStatus>(
        &bus.jetstream(),
        subjects::STATUS_STREAM,
        &subject,
        names::RAW_STATUS,
    )
    .await
    .unwrap()
    .expect("the status was stored");
    assert_eq!(last.message.chain_id, CHAIN);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_client_certificate_the_connection_is_refused() {
    let rig = start().await;
    rig.refused(&rig.args(None), "no-cert", "didn't provide a certificate").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_of_another_ca_is_refused() {
    let rig = start().await;
    let rogue = TestCa::new("rogue");
    let client = rogue.client_cert("lightcl-poller").write_pem(rig.dir.path(), "rogue-client");
    rig.refused(&rig.args(Some(&client)), "rogue-cert", "unknown authority").await;
}
