//! The admin HTTP port over a real socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lightcl_runtime::{AdminState, Liveness, Readiness, serve_admin};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Minimal HTTP/1.1 GET: (status, content-type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let ctype = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    (status, ctype, body.to_owned())
}

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

    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("nats") && body.contains("source"), "{body}");

    readiness.set("nats", true);
    let (status, _, body) = get(addr, "/ready").await;
    assert_eq!(status, 503);
    assert!(!body.contains("nats") && body.contains("source"), "{body}");

    readiness.set("source", true);
    assert_eq!(get(addr, "/ready").await.0, 200);
    readiness.set("source", false);
    assert_eq!(get(addr, "/ready").await.0, 503);

    assert_eq!(get(addr, "/nope").await.0, 404);

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener closed after cancel");
}

#[tokio::test]
async fn live_reports_dead_loops() {
    let liveness = Liveness::new();
    let (addr, cancel, _task) =
        start(Readiness::default(), liveness.clone(), Registry::default()).await;
    let guard = liveness.register("poll-loop");
    let (status, _, _) = get(addr, "/live").await;
    assert_eq!(status, 200);
    // A loop ending without shutdown → not live.
    drop(guard);
    let (status, _, body) = get(addr, "/live").await;
    assert_eq!(status, 503);
    assert!(body.contains("poll-loop"), "{body}");

    // Loops ending during shutdown are expected.
    let l2 = Liveness::new();
    let g = l2.register("x");
    l2.shutting_down();
    drop(g);
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
    let (status, ctype, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(body.contains("# HELP lightcl_test_polls Polls done."), "{body}");
    assert!(body.contains("lightcl_test_polls_total 3"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    polls.inc();
    assert!(get(addr, "/metrics").await.2.contains("lightcl_test_polls_total 4"));
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
    let deadline = Instant::now() + Duration::from_secs(2);
    while !rx.has_changed().unwrap() {
        assert!(Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    assert!(r.is_ready());
    assert!(r.not_ready().is_empty());
}
