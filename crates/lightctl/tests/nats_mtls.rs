//! The real `lightctl` binary reading the fleet from a real nats-server that requires mutual TLS
//! (`tls { ... verify: true }`, certificates from a private CA made here): with
//! `--nats.tls-ca` + `--nats.tls-cert` + `--nats.tls-key` (or their env twins, or the config
//! file keys) it lists the `lightcl-engine` bucket; without a client certificate, or with one
//! of another CA, the fleet section reports a NATS error (exit 1) within `--timeout`; a bad
//! certificate or key file is a usage error naming the flag (exit 64) before any connection.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use lightcl_bus::{Bus, NatsArgs};
use lightcl_harness::nats::{NatsOptions, NatsServer};
use lightcl_harness::tls::{CertFiles, TestCa};
use prost::Message;

/// A nats-server requiring TLS with verified client certificates, the CA file behind both
/// sides, and one client certificate of that CA.
struct Rig {
    server: NatsServer,
    ca_file: PathBuf,
    client: CertFiles,
    dir: tempfile::TempDir,
}

async fn start() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("nats");
    let ca_file = ca.write_pem(dir.path());
    let server_files = ca.server_cert().write_pem(dir.path(), "server");
    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 2\n}}\n",
        server_files.cert.display().to_string(),
        server_files.key.display().to_string(),
        ca_file.display().to_string(),
    );
    let opts = NatsOptions { extra_config: Some(tls), ..NatsOptions::default() };
    let server = NatsServer::start_with(opts).await.expect("nats-server with mutual TLS");
    let client = ca.client_cert("lightctl").write_pem(dir.path(), "client");
    Rig { server, ca_file, client, dir }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Rig {
    /// `status -o json` of the fleet over TLS trusting the server's CA, plus `extra`.
    fn status_args<'a>(&'a self, url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args =
            vec!["status", "-o", "json", "--timeout", "2s", "--nats.url", url, "--chain-id", "10"];
        args.extend(["--nats.tls-ca", path(&self.ca_file)]);
        args.extend(extra);
        args
    }

    /// Put one engine state into the `lightcl-engine` bucket, connected as a service is (the
    /// bus's own mutual-TLS flags).
    async fn put_engine_state(&self, node: &str) {
        let mut args = NatsArgs::local(self.server.url());
        args.tls_ca = Some(self.ca_file.clone());
        args.tls_cert = Some(self.client.cert.clone());
        args.tls_key = Some(self.client.key.clone());
        let bus = Bus::connect(&args, "lightctl-test").await.expect("bus");
        tokio::time::timeout(Duration::from_secs(15), bus.connected().wait_for(|c| *c))
            .await
            .expect("the test client connects over mutual TLS")
            .expect("connection state");
        let kv = bus
            .jetstream()
            .create_key_value(async_nats::jetstream::kv::Config {
                bucket: "lightcl-engine".into(),
                ..Default::default()
            })
            .await
            .expect("bucket");
        let state = driver_status(node, 120).state.expect("state");
        kv.put(format!("10.{node}"), state.encode_to_vec().into()).await.expect("put");
    }
}

fn fleet_keys(r: &Ran) -> Vec<String> {
    let j = r.json();
    assert!(j["fleet"]["error"].is_null(), "fleet error: {r:?}");
    j["fleet"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["key"].as_str().map(str::to_owned))
        .collect()
}

/// The fleet section failed with the server's TLS alert `why` (a NATS error, exit 1), and
/// stderr says so on the fleet's line.
fn refused(r: &Ran, who: &str, why: &str) {
    assert_eq!(r.code, 1, "{who}: {r:?}");
    let j = r.json();
    assert_eq!(j["fleet"]["error"]["kind"], "nats", "{who}: {r:?}");
    assert_eq!(j["fleet"]["nodes"].as_array().map(Vec::len), Some(0), "{who}: {r:?}");
    let message = j["fleet"]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("cannot connect to NATS at nats://127.0.0.1:") && message.contains(why),
        "{who}: {message}"
    );
    assert!(
        r.stderr.contains("fleet (KV lightcl-engine") && r.stderr.contains(why),
        "{who}: {}",
        r.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_client_certificate_the_fleet_is_read_over_mutual_tls() {
    let rig = start().await;
    rig.put_engine_state("reth-0").await;
    let url = rig.server.url();
    let (cert, key) = (path(&rig.client.cert), path(&rig.client.key));

    let r =
        lightctl(&rig.status_args(&url, &["--nats.tls-cert", cert, "--nats.tls-key", key])).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(fleet_keys(&r), ["10.reth-0"]);

    // The env twins.
    let mut cmd = lightctl_cmd();
    cmd.args(rig.status_args(&url, &[]))
        .env("LIGHTCL_NATS_TLS_CERT", cert)
        .env("LIGHTCL_NATS_TLS_KEY", key);
    let r = run_lightctl(cmd).await;
    assert_eq!(r.code, 0, "env twins: {r:?}");
    assert_eq!(fleet_keys(&r), ["10.reth-0"]);

    // The config file keys, relative to the file.
    let name = |p: &Path| p.file_name().and_then(|n| n.to_str()).expect("file name").to_owned();
    let cfg = write_file(
        rig.dir.path(),
        "ctl.toml",
        &format!(
            "nats_url = \"{url}\"\nnats_tls_ca = \"{}\"\nnats_tls_cert = \"{}\"\n\
             nats_tls_key = \"{}\"\n",
            name(&rig.ca_file),
            name(&rig.client.cert),
            name(&rig.client.key),
        ),
    );
    let r = lightctl(&["status", "-o", "json", "--timeout", "2s", "--config", path(&cfg)]).await;
    assert_eq!(r.code, 0, "config file: {r:?}");
    assert_eq!(fleet_keys(&r), ["10.reth-0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_certificate_of_the_servers_ca_the_fleet_reports_the_refusal() {
    let rig = start().await;
    let url = rig.server.url();
    // `--timeout 2s` bounds the connect; the whole run stays well inside the runner's 20 s.
    let started = std::time::Instant::now();
    let r = lightctl(&rig.status_args(&url, &[])).await;
    refused(&r, "no client certificate", "CertificateRequired");

    let rogue = TestCa::new("rogue").client_cert("lightctl").write_pem(rig.dir.path(), "rogue");
    let r = lightctl(&rig.status_args(
        &url,
        &["--nats.tls-cert", path(&rogue.cert), "--nats.tls-key", path(&rogue.key)],
    ))
    .await;
    refused(&r, "client certificate of another CA", "UnknownCA");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_client_certificate_or_key_is_a_usage_error_naming_the_flag() {
    // No server: the files are checked before connecting.
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("nats");
    let good = ca.client_cert("lightctl").write_pem(dir.path(), "client");
    let other = ca.client_cert("someone-else").write_pem(dir.path(), "other");
    let missing = dir.path().join("missing.pem");
    let url = dead_addr().replace("http://", "nats://");
    for (cert, key, flag) in [
        (missing.as_path(), good.key.as_path(), "--nats.tls-cert"),
        (dir.path(), good.key.as_path(), "--nats.tls-cert"),
        (good.cert.as_path(), missing.as_path(), "--nats.tls-key"),
        (good.key.as_path(), good.cert.as_path(), "--nats.tls-cert"),
        (good.cert.as_path(), other.key.as_path(), "--nats.tls-key"),
    ] {
        let r = lightctl(&[
            "status",
            "--nats.url",
            &url,
            "--nats.tls-cert",
            path(cert),
            "--nats.tls-key",
            path(key),
        ])
        .await;
        assert_eq!(r.code, 64, "{cert:?} {key:?}: {r:?}");
        assert!(
            r.stderr.starts_with(&format!("error: {flag}: ")),
            "{cert:?} {key:?}: {}",
            r.stderr
        );
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
        assert!(r.stdout.is_empty(), "{r:?}");
    }
    // One without the other.
    for (given, missing_flag) in
        [("--nats.tls-cert", "--nats.tls-key"), ("--nats.tls-key", "--nats.tls-cert")]
    {
        let r = lightctl(&["status", "--nats.url", &url, given, path(&good.cert)]).await;
        assert_eq!(r.code, 64, "{given}: {r:?}");
        assert!(r.stderr.contains(missing_flag), "{given}: {}", r.stderr);
    }
}
