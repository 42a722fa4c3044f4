//! gRPC over TLS with a certificate made by the `openssl` CLI (`OPENSSL_BIN`, default
//! `openssl` on PATH), wired through the `--grpc.tls-cert`/`--grpc.tls-key` flags.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clap::Parser;
use lightcl_runtime::{CommonArgs, GrpcOptions, Readiness, serve_grpc};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
}

fn self_signed(dir: &Path) {
    let bin = std::env::var("OPENSSL_BIN").unwrap_or_else(|_| "openssl".into());
    let status = Command::new(bin)
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost"])
        .args([
            "-addext",
            "subjectAltName=DNS:localhost",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl CLI");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let cli = Cli::parse_from([
        "t",
        "--chain-id",
        "1",
        "--grpc.tls-cert",
        cert.to_str().unwrap(),
        "--grpc.tls-key",
        key.to_str().unwrap(),
    ]);
    let tls = cli.common.tls().unwrap().expect("TLS configured");

    let cancel = CancellationToken::new();
    let opts = GrpcOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: Some(tls),
        health_service: "lightcl.v1.PollerControl",
        readiness: Readiness::default(),
        limits: Default::default(),
    };
    // Any service will do as the "control" routes; the v1alpha reflection service is at hand.
    let routes = tonic::service::Routes::new(
        tonic_reflection::server::Builder::configure().build_v1alpha().unwrap(),
    );
    let (addr, task) = serve_grpc(opts, routes, cancel.clone()).await.unwrap();

    // The client side needs the provider too (the server installed it already; idempotent).
    lightcl_runtime::grpc::install_crypto_provider();
    let ca = Certificate::from_pem(std::fs::read(&cert).unwrap());
    let tls = ClientTlsConfig::new().ca_certificate(ca).domain_name("localhost");
    let ch = Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let resp = HealthClient::new(ch)
        .check(HealthCheckRequest { service: "lightcl.v1.PollerControl".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.status, 1, "SERVING over TLS");

    // Plain-text clients are refused.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    let plain_result = match plain.connect().await {
        Ok(ch) => HealthClient::new(ch)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(plain_result.is_err());

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
}

#[test]
fn bad_pem_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a pem").unwrap();
    let cli = Cli::parse_from([
        "t",
        "--chain-id",
        "1",
        "--grpc.tls-cert",
        junk.to_str().unwrap(),
        "--grpc.tls-key",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(cli.common.tls().unwrap_err().flag, "--grpc.tls-cert");
}
