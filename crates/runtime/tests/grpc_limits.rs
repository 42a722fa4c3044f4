//! The control port's limits and read auth over real sockets: the `WatchStatus` cap
//! (`RESOURCE_EXHAUSTED`, a freed slot is reusable), the connection cap, and
//! `--grpc.auth-reads` (reads need the token; health and reflection stay open).

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use lightcl_proto::v1;
use lightcl_proto::v1::poller_control_client::PollerControlClient;
use lightcl_proto::v1::poller_control_server::{PollerControl, PollerControlServer};
use lightcl_runtime::grpc::names;
use lightcl_runtime::{Auth, GrpcLimits, GrpcOptions, PauseControl, Readiness, serve_grpc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// The runtime's own GetStatus/WatchStatus/Pause/Resume, as the poller and validator use it.
struct Control(PauseControl<v1::PollerStatus>);
lightcl_runtime::pause_control_service!(Control, PollerControl, v1::PollerStatus);

struct Served {
    addr: SocketAddr,
    status: watch::Sender<v1::PollerStatus>,
    cancel: CancellationToken,
    _paused: watch::Sender<bool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve(auth: Auth, limits: GrpcLimits) -> Served {
    let cancel = CancellationToken::new();
    let (status, status_rx) =
        watch::channel(v1::PollerStatus { chain_id: 10, ..Default::default() });
    let (paused, _) = watch::channel(false);
    let control = PauseControl::new(
        status_rx,
        paused.clone(),
        auth,
        cancel.clone(),
        |s: &mut v1::PollerStatus, p| s.paused = p,
        "test",
    );
    let readiness = Readiness::default();
    let opts = GrpcOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        health_service: names::POLLER_CONTROL,
        readiness,
        limits,
    };
    let routes = tonic::service::Routes::new(PollerControlServer::new(Control(control)));
    let (addr, _task) = serve_grpc(opts, routes, cancel.clone()).await.unwrap();
    Served { addr, status, cancel, _paused: paused }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut r = Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_above_the_cap_are_resource_exhausted_and_slots_are_reused() {
    let limits = GrpcLimits { max_watch_streams: 2, ..GrpcLimits::default() };
    let s = serve(Auth::new(None, false), limits).await;
    let ch = channel(s.addr).await;
    let mut client = PollerControlClient::new(ch.clone());

    let mut open = Vec::new();
    for _ in 0..2 {
        let mut stream = client.watch_status(v1::WatchStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(stream.next().await.unwrap().unwrap().chain_id, 10);
        open.push(stream);
    }
    // The third, on the same connection or another, is refused with a clear message.
    let other = PollerControlClient::new(channel(s.addr).await);
    for mut c in [client.clone(), other] {
        let e = c.watch_status(v1::WatchStatusRequest {}).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("too many WatchStatus streams"), "{e:?}");
        assert!(e.message().contains("at most 2"), "{e:?}");
    }
    // Unary calls are not affected.
    assert_eq!(client.get_status(v1::GetStatusRequest {}).await.unwrap().into_inner().chain_id, 10);

    // The open streams still get updates.
    s.status.send_modify(|st| st.polls_ok = 7);
    for st in &mut open {
        assert_eq!(st.next().await.unwrap().unwrap().polls_ok, 7);
    }

    // Closing one frees its slot: a new stream gets it (the server sees the reset shortly).
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut reopened = loop {
        match client.watch_status(v1::WatchStatusRequest {}).await {
            Ok(r) => break r.into_inner(),
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "a freed WatchStatus slot is not reusable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reopened.next().await.unwrap().unwrap().polls_ok, 7);
    // ...and the cap holds again.
    let e = client.watch_status(v1::WatchStatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_above_the_cap_wait_until_one_closes() {
    let limits = GrpcLimits { max_connections: 1, ..GrpcLimits::default() };
    let s = serve(Auth::new(None, false), limits).await;
    let first = channel(s.addr).await;
    let mut c1 = PollerControlClient::new(first.clone());
    c1.get_status(v1::GetStatusRequest {}).await.unwrap();

    // The second connection is not served while the first is open...
    let second = Channel::from_shared(format!("http://{}", s.addr)).unwrap().connect_lazy();
    let mut c2 = PollerControlClient::new(second);
    let pending = tokio::spawn(async move { c2.get_status(v1::GetStatusRequest {}).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "a connection above the cap was served");

    // ...and is once the first closes.
    drop(c1);
    drop(first);
    let got = tokio::time::timeout(Duration::from_secs(5), pending).await.unwrap().unwrap();
    assert_eq!(got.unwrap().into_inner().chain_id, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_reads_needs_the_token_but_health_and_reflection_stay_open() {
    let s = serve(Auth::new(Some("s3cret".into()), true), GrpcLimits::default()).await;
    let ch = channel(s.addr).await;
    let mut client = PollerControlClient::new(ch.clone());

    for bad in [None, Some("wrong"), Some("s3cre")] {
        let e = client.get_status(with_token(v1::GetStatusRequest {}, bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "GetStatus with {bad:?}: {e:?}");
        let e = client.watch_status(with_token(v1::WatchStatusRequest {}, bad)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "WatchStatus with {bad:?}: {e:?}");
    }
    let st = client.get_status(with_token(v1::GetStatusRequest {}, Some("s3cret"))).await;
    assert_eq!(st.unwrap().into_inner().chain_id, 10);
    let mut w = client
        .watch_status(with_token(v1::WatchStatusRequest {}, Some("s3cret")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.next().await.unwrap().unwrap().chain_id, 10);
    // Mutations still need it too.
    let e = client.pause(with_token(v1::PauseRequest::default(), None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // Probes need no token: gRPC health...
    let h = HealthClient::new(ch.clone())
        .check(HealthCheckRequest { service: names::POLLER_CONTROL.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    // ...and reflection.
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    assert!(list.service.iter().any(|s| s.name == names::POLLER_CONTROL), "{list:?}");
}
