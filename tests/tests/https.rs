//! The whole pipeline over HTTPS (issue: real endpoints): the source, our L1 and the EL sit
//! behind TLS fronts signed by a private CA that the services trust through `SSL_CERT_FILE`,
//! and the source and L1 URLs carry an API key in their path, as hosted providers' do. The EL
//! must follow, and the key must appear in no process output, no exported span, no metric and
//! no control-API answer.

use std::time::Duration;

use lightcl_devnet::{Devnet, DevnetConfig, Service};
use lightcl_harness::otlp::OtlpReceiver;
use lightcl_harness::wait;
use lightcl_proto::v1;
use lightcl_tests::{ensure_binaries, fast_config, finish};

/// Looks like a hosted provider's key: long, random-looking, in the URL path.
const KEY: &str = "sk9f8e7d6c5b4a39281706aabbccdd";

async fn control_answers(net: &Devnet) -> Result<Vec<String>, String> {
    let grpc = |s| {
        net.grpc_addr(s).map(|a| format!("http://{a}")).ok_or_else(|| format!("{s}: no gRPC addr"))
    };
    let req = || v1::GetStatusRequest::default();
    let mut out = Vec::new();
    let mut c = v1::poller_control_client::PollerControlClient::connect(grpc(Service::Poller)?)
        .await
        .map_err(|e| format!("poller gRPC: {e}"))?;
    let p = c.get_status(req()).await.map_err(|e| format!("poller GetStatus: {e}"))?.into_inner();
    out.push(format!("{p:?}"));
    let mut c =
        v1::validator_control_client::ValidatorControlClient::connect(grpc(Service::Validator)?)
            .await
            .map_err(|e| format!("validator gRPC: {e}"))?;
    let v = c.get_status(req()).await.map_err(|e| format!("validator GetStatus: {e}"))?;
    out.push(format!("{:?}", v.into_inner()));
    let mut c = v1::engine_driver_control_client::EngineDriverControlClient::connect(grpc(
        Service::Driver(0),
    )?)
    .await
    .map_err(|e| format!("driver gRPC: {e}"))?;
    let d = c.get_status(req()).await.map_err(|e| format!("driver GetStatus: {e}"))?;
    out.push(format!("{:?}", d.into_inner()));
    // The poller shows its source as scheme://host:port.
    let (source_url, _, _) = net.service_urls();
    let shown = source_url.split("/v2/").next().unwrap_or_default().to_owned();
    if p.source_url != shown {
        return Err(format!("poller GetStatus source_url {:?}, expected {shown:?}", p.source_url));
    }
    Ok(out)
}

async fn check(net: &Devnet, rx: &OtlpReceiver) -> Result<(), String> {
    // The EL follows the source through the TLS fronts.
    let every = Duration::from_millis(100);
    let followed = wait::until_async(Duration::from_secs(40), every, || {
        let all_used = net.tls_forwarded().iter().all(|(_, n)| *n > 0);
        std::future::ready(net.all_at_source() && net.targets().len() >= 3 && all_used)
    })
    .await;
    let through = net.tls_forwarded();
    if followed.is_err() {
        return Err(format!(
            "the EL did not follow over HTTPS within 40 s (fronts {through:?}, {} targets)",
            net.targets().len()
        ));
    }
    eprintln!("following over HTTPS; requests through each front: {through:?}");
    if let Err(v) = net.check_invariants() {
        return Err(format!("invariants: {v:?}"));
    }

    // Spans: exported, carrying endpoints, and never the key.
    // Whether or not one comes in time, the check below says what is missing.
    let _ = wait::until_async(Duration::from_secs(10), Duration::from_millis(100), || {
        std::future::ready(rx.spans().iter().any(|s| s.name == "jsonrpc.batch"))
    })
    .await;
    let spans = rx.spans();
    let batch = spans
        .iter()
        .find(|s| s.name == "jsonrpc.batch")
        .ok_or_else(|| format!("no jsonrpc.batch span among {} spans", spans.len()))?;
    let addr = batch.attr("server.address").unwrap_or_default();
    if !addr.starts_with("127.0.0.1:") {
        return Err(format!("jsonrpc.batch server.address {addr:?}"));
    }
    let mut texts: Vec<(String, String)> = spans
        .iter()
        .map(|s| (format!("span {}/{}", s.service, s.name), format!("{s:?}")))
        .collect();

    // Metrics of every service.
    for s in net.service_list() {
        let m = net.metrics(s).await.ok_or_else(|| format!("{s}: no /metrics"))?;
        texts.push((format!("{s} /metrics"), m));
    }
    // Control-API answers.
    for (i, a) in control_answers(net).await?.into_iter().enumerate() {
        texts.push((format!("control answer {i}"), a));
    }
    // Everything the processes printed (logs at debug level).
    for s in net.service_list() {
        let path = net.dir().join(format!("{s}.log"));
        let log = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if log.is_empty() {
            return Err(format!("{s}: empty log"));
        }
        texts.push((format!("{s} log"), log));
    }
    // The endpoints are printed, redacted: the check above reads text that names them.
    let (source_url, l1_url, _) = net.service_urls();
    for (url, log) in [(source_url, "poller log"), (l1_url, "validator log")] {
        let shown = url.split("/v2/").next().unwrap_or_default();
        let text = texts.iter().find(|(w, _)| w == log).map(|(_, t)| t.as_str()).unwrap_or("");
        if !text.contains(shown) {
            return Err(format!("{log} never names its endpoint {shown}"));
        }
    }
    let leaks: Vec<&String> =
        texts.iter().filter(|(_, t)| t.contains(KEY)).map(|(what, _)| what).collect();
    if !leaks.is_empty() {
        return Err(format!("the API key leaked into: {leaks:?}"));
    }
    eprintln!("checked {} texts (spans, metrics, control answers, logs): no key", texts.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_over_https_with_api_keys_never_prints_them() {
    let bin_dir = ensure_binaries().unwrap_or_else(|e| panic!("{e}"));
    let rx = OtlpReceiver::start().await.expect("OTLP receiver");
    let cfg = DevnetConfig {
        bin_dir: Some(bin_dir),
        https_api_key: Some(KEY.into()),
        rust_log: "debug".into(),
        extra_env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), rx.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
        ],
        ..fast_config()
    };
    let net = Devnet::start(cfg).await.unwrap_or_else(|e| panic!("devnet start: {e}"));
    let (source, l1, els) = net.service_urls();
    assert!(source.starts_with("https://") && source.contains(KEY), "{source}");
    assert!(l1.starts_with("https://") && l1.contains(KEY), "{l1}");
    assert!(els.iter().all(|e| e.starts_with("https://")), "{els:?}");
    let result = check(&net, &rx).await;
    finish(net, result).await;
}
