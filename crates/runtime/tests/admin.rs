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

/// Reads until EOF (the server closed) or `limit`; `Err` when the server still holds the
/// connection open at `limit`.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    limit: Duration,
) -> Result<Vec<u8>, tokio::time::error::Elapsed> {
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(limit, async {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

#[tokio::test]
async fn slowloris_is_dropped_while_others_are_served() {
    use lightcl_runtime::admin::ADMIN_HEADER_READ_TIMEOUT;
    use tokio::io::AsyncWriteExt;
    let (addr, cancel, _task) =
        start(Readiness::default(), Liveness::new(), Registry::default()).await;
    let started = tokio::time::Instant::now();

    // One client trickles a request head byte by byte, never finishing it...
    let mut trickle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let trickler = tokio::spawn(async move {
        for b in b"GET /live HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
            if trickle.write_all(&[*b]).await.is_err() {
                return started.elapsed(); // the server closed the connection
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if started.elapsed() > ADMIN_HEADER_READ_TIMEOUT * 4 {
                break;
            }
        }
        started.elapsed()
    });
    // ...another connects and sends nothing at all.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();

    // Meanwhile a normal client is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let HttpAnswer { status, .. } = http_get(addr, "/live").await;
    assert_eq!(status, 200);

    let limit = ADMIN_HEADER_READ_TIMEOUT + Duration::from_secs(3);
    closed_within(&mut silent, limit).await.expect("a silent connection is closed");
    let dropped_after = trickler.await.unwrap();
    assert!(
        dropped_after < ADMIN_HEADER_READ_TIMEOUT * 2,
        "slowloris client held on for {dropped_after:?}"
    );
    assert!(dropped_after >= ADMIN_HEADER_READ_TIMEOUT - Duration::from_millis(500));
    assert_eq!(http_get(addr, "/live").await.status, 200);
    cancel.cancel();
}

#[tokio::test]
async fn other_methods_get_a_small_405_and_a_closed_connection() {
    use tokio::io::AsyncWriteExt;
    let (addr, cancel, _task) =
        start(Readiness::default(), Liveness::new(), Registry::default()).await;
    for path in ["/live", "/metrics", "/nope"] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Announces a large body it never sends: the server must not wait for it.
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nsome");
        s.write_all(head.as_bytes()).await.unwrap();
        let got = closed_within(&mut s, Duration::from_secs(3)).await.expect("closed");
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 405"), "{text}");
        assert!(text.to_ascii_lowercase().contains("allow: get, head"), "{text}");
        assert!(got.len() < 512, "{} bytes: {text}", got.len());
    }
    // An oversized head is refused too, and small.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let big = format!("GET /live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let _ = s.write_all(big.as_bytes()).await;
    let got = closed_within(&mut s, Duration::from_secs(3)).await.expect("closed");
    assert!(got.len() < 512, "{}", String::from_utf8_lossy(&got));
    assert_eq!(http_get(addr, "/live").await.status, 200);
    cancel.cancel();
}
