//! Everything from the environment, in a child process (this test binary re-run with a filter):
//! `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`, a base `OTEL_EXPORTER_OTLP_ENDPOINT` (so
//! `/v1/traces` is appended), `OTEL_EXPORTER_OTLP_HEADERS`, and an `https://` receiver whose CA
//! is trusted only through `SSL_CERT_FILE` (the default, system trust roots). And a collector
//! that is not trusted: the failure is logged once, with the endpoint as `scheme://host:port`.

mod common;

use std::process::Command;

use lightcl_telemetry::{LogFormat, TelemetryConfig};

const CHILD: &str = "LIGHTCL_TELEMETRY_SSL_CHILD";

/// Runs only in the child: export one span with the default (environment) configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_entry() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let guard = lightcl_telemetry::init(TelemetryConfig::new("poller", LogFormat::Text)).unwrap();
    assert!(guard.exporting());
    tracing::info_span!("child.span").in_scope(|| tracing::info!("from the child"));
    guard.shutdown().await;
}

/// The child test, run with `env` on top of a cleaned OTLP environment: (exit ok, stderr).
async fn run_child(env: Vec<(&'static str, String)>) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"]).env(CHILD, "1");
    for k in [
        "SSL_CERT_DIR",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_SERVICE_NAME",
    ] {
        cmd.env_remove(k);
    }
    cmd.envs(env);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.unwrap().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_configured_https_export_honours_ssl_cert_file() {
    let ca = common::TestCa::new();
    let rx = common::HttpReceiver::start(Some(ca.server_config())).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();

    let (ok, stderr) = run_child(vec![
        ("SSL_CERT_FILE", ca_file.display().to_string()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", rx.base_url()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=lightcl".into()),
        ("RUST_LOG", "info".into()),
    ])
    .await;
    assert!(ok, "child failed: {stderr}");
    // The endpoint is logged, but only as scheme://host:port.
    assert!(stderr.contains(&format!("https://{}", rx.addr)), "{stderr}");
    assert!(!stderr.contains("/v1/traces"), "{stderr}");
    assert!(!stderr.contains("OTLP span export failing"), "{stderr}");

    let got = rx.wait_for_span("child.span").await.unwrap_or_else(|| {
        panic!("no span received: {:?}\nchild stderr: {stderr}", rx.received());
    });
    assert_eq!(got.path, "/v1/traces");
    assert_eq!(got.headers.get("x-tenant").unwrap(), "lightcl");
    assert_eq!(got.spans, vec![("poller".to_owned(), "child.span".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_collector_is_logged_once_without_secrets() {
    let ca = common::TestCa::new();
    let rx = common::HttpReceiver::start(Some(ca.server_config())).await;
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, common::TestCa::new().ca_pem()).unwrap();
    let secret = "k3y-0123456789abcdef";
    let endpoint = format!("https://otel:pa55word@{}/{secret}/v1/traces?token={secret}", rx.addr);

    let (ok, stderr) = run_child(vec![
        ("SSL_CERT_FILE", other_ca.display().to_string()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://unused.invalid".into()),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".into()),
        // Everything, the OpenTelemetry crates' debug events included.
        ("RUST_LOG", "debug".into()),
    ])
    .await;
    assert!(ok, "child failed: {stderr}");
    assert!(rx.received().is_empty());
    let failing: Vec<&str> =
        stderr.lines().filter(|l| l.contains("OTLP span export failing")).collect();
    assert_eq!(failing.len(), 1, "{stderr}");
    assert!(failing[0].contains(&format!("https://{}", rx.addr)), "{stderr}");
    assert!(failing[0].contains("not signed by a trusted CA"), "{stderr}");
    for hidden in [secret, "pa55word", "/v1/traces"] {
        assert!(!stderr.contains(hidden), "{hidden} in {stderr}");
    }
}
