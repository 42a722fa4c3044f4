//! The admin HTTP port over a real socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lightcl_harness::{HttpAnswer, http_get, wait};
use lightcl_runtime::{AdminState, Liveness, Readiness, serve_admin};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

async fn start(
    readiness: Readiness,
    liveness: Liveness,
    registry: Registry,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let cancel = CancellationToken::new();
    let state = AdminState { readiness, liveness, registry: Arc::new(registry) };
    let (addr, task) =
        serve_admin("127.0.0.1:0".parse().unwrap(), state, cancel.clone()).await.unwrap();
    assert_ne!(addr.port(), 0);
    (addr, cancel, task)
}

#[tokio::test]
async fn ready_flips_and_lists_missing_conditions() {
    let readiness = Readiness::new(&["nats", "source"]);
    let (addr, cancel, task) = start(readiness.clone(), Liveness::new(), Registry::default()).await;

    let HttpAnswer { status, body, .. } = http_get(addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("nats") && body.contains("source"), "{body}");

    readiness.set("nats", true);
    let HttpAnswer { status, body, .. } = http_get(addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(!body.contains("nats") && body.contains("source"), "{body}");

    readiness.set("source", true);
    assert_eq!(http_get(addr, "/ready").await.status, 200);
    readiness.set("source", false);
    assert_eq!(http_get(addr, "/ready").await.status, 503);

    assert_eq!(http_get(addr, "/nope").await.status, 404);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener closed after cancel");
}

#[tokio::test]
async fn live_reports_dead_loops() {
    let liveness = Liveness::new();
    let (addr, cancel, _task) =
        start(Readiness::default(), liveness.clone(), Registry::default()).await;
    let HttpAnswer { status, .. } = http_get(addr, "/live").await;
    assert_eq!(status, 200);
    // A task ending without shutdown → not live.
    liveness.died("poll-loop");
    let HttpAnswer { status, body, .. } = http_get(addr, "/live").await;
    assert_eq!(status, 503);
    assert!(body.contains("poll-loop"), "{body}");

    // Loops ending during shutdown are expected.
    let l2 = Liveness::new();
    l2.shutting_down();
    l2.died("x");
    assert!(l2.is_alive());
    cancel.cancel();
}

#[tokio::test]
async fn metrics_in_openmetrics_text() {
    let mut registry = Registry::with_prefix("lightcl_test");
    let polls: Counter = Counter::default();
    registry.register("polls", "Polls done", polls.clone());
    polls.inc_by(3);
    let (addr, cancel, _task) = start(Readiness::default(), Liveness::new(), registry).await;
    let m = http_get(addr, "/metrics").await;
    let ctype = m.header("content-type").unwrap_or_default().to_ascii_lowercase();
    let (status, body) = (m.status, m.body);
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.contains("# HELP lightcl_test_polls Polls done."), "{body}");
    assert!(body.contains("lightcl_test_polls_total 3"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    polls.inc();
    assert!(http_get(addr, "/metrics").await.body.contains("lightcl_test_polls_total 4"));
    cancel.cancel();
}

#[tokio::test]
async fn bind_error_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let state = AdminState {
        readiness: Readiness::default(),
        liveness: Liveness::new(),
        registry: Arc::new(Registry::default()),
    };
    let err = serve_admin(addr, state, CancellationToken::new()).await.unwrap_err();
    assert_eq!(err.to_config_error().flag, "--admin.addr");
}

#[tokio::test]
async fn readiness_subscribers_see_changes() {
    let r = Readiness::new(&["a"]);
    let mut rx = r.subscribe();
    rx.borrow_and_update();
    r.set("a", false); // no change → no notification
    assert!(!rx.has_changed().unwrap());
    r.set("a", true);
    wait::until_async(Duration::from_secs(2), Duration::from_millis(1), || {
        std::future::ready(rx.has_changed().unwrap())
    })
    .await
    .expect("the subscriber sees the change");
    assert!(r.is_ready());
    assert!(r.not_ready().is_empty());
}
