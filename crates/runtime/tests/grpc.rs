//! gRPC scaffolding over real sockets: health follows readiness, reflection lists the service,
//! bearer auth guards mutations, WatchStatus is latest-wins and ends on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lightcl_harness::wait;
use lightcl_proto::v1::poller_control_client::PollerControlClient;
use lightcl_proto::v1::poller_control_server::{PollerControl, PollerControlServer};
use lightcl_proto::v1::{
    GetStatusRequest, PauseRequest, PauseState, PollerStatus, ResumeRequest, WatchStatusRequest,
};
use lightcl_runtime::grpc::names;
use lightcl_runtime::{Auth, GrpcOptions, Readiness, WatchStream, serve_grpc, watch_stream_map};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// A tiny poller control service: a paused flag and a watched counter.
struct TestPoller {
    auth: Auth,
    paused: Arc<AtomicBool>,
    status: watch::Receiver<u64>,
    cancel: CancellationToken,
}

fn status_of(polls: &u64) -> PollerStatus {
    PollerStatus { chain_id: 10, polls_ok: *polls, ..Default::default() }
}

#[tonic::async_trait]
impl PollerControl for TestPoller {
    async fn get_status(
        &self,
        req: Request<GetStatusRequest>,
    ) -> Result<Response<PollerStatus>, Status> {
        self.auth.check_read(&req)?;
        let mut s = status_of(&self.status.borrow());
        s.paused = self.paused.load(Ordering::SeqCst);
        Ok(Response::new(s))
    }

    type WatchStatusStream = WatchStream<PollerStatus>;

    async fn watch_status(
        &self,
        req: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.auth.check_read(&req)?;
        Ok(Response::new(watch_stream_map(self.status.clone(), self.cancel.clone(), status_of)))
    }

    async fn pause(&self, req: Request<PauseRequest>) -> Result<Response<PauseState>, Status> {
        self.auth.check_mutation(&req)?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(Response::new(PauseState { paused: true }))
    }

    async fn resume(&self, req: Request<ResumeRequest>) -> Result<Response<PauseState>, Status> {
        self.auth.check_mutation(&req)?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(Response::new(PauseState { paused: false }))
    }
}

struct Fixture {
    addr: SocketAddr,
    readiness: Readiness,
    paused: Arc<AtomicBool>,
    status_tx: watch::Sender<u64>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

async fn start(token: Option<&str>) -> Fixture {
    let cancel = CancellationToken::new();
    let readiness = Readiness::new(&["nats"]);
    let paused = Arc::new(AtomicBool::new(false));
    let (status_tx, status) = watch::channel(0u64);
    let svc = TestPoller {
        auth: Auth::new(token.map(str::to_owned), false),
        paused: paused.clone(),
        status,
        cancel: cancel.clone(),
    };
    let opts = GrpcOptions {
        addr: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        health_service: names::POLLER_CONTROL,
        readiness: readiness.clone(),
        limits: Default::default(),
    };
    let routes = tonic::service::Routes::new(PollerControlServer::new(svc));
    let (addr, task) = serve_grpc(opts, routes, cancel.clone()).await.unwrap();
    Fixture { addr, readiness, paused, status_tx, cancel, task }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
}

async fn health(ch: &Channel, service: &str) -> ServingStatus {
    let resp = HealthClient::new(ch.clone())
        .check(HealthCheckRequest { service: service.to_owned() })
        .await
        .unwrap()
        .into_inner();
    ServingStatus::try_from(resp.status).unwrap()
}

async fn wait_health(ch: &Channel, service: &str, want: ServingStatus) {
    let reached = wait::until_async(Duration::from_secs(5), Duration::from_millis(10), || async {
        health(ch, service).await == want
    })
    .await;
    if reached.is_err() {
        let got = health(ch, service).await;
        panic!("health of {service:?} stuck at {got:?}, want {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_readiness() {
    let f = start(Some("tok")).await;
    let ch = channel(f.addr).await;
    assert_eq!(health(&ch, names::POLLER_CONTROL).await, ServingStatus::NotServing);
    assert_eq!(health(&ch, "").await, ServingStatus::NotServing);
    f.readiness.set("nats", true);
    wait_health(&ch, names::POLLER_CONTROL, ServingStatus::Serving).await;
    wait_health(&ch, "", ServingStatus::Serving).await;
    f.readiness.set("nats", false);
    wait_health(&ch, names::POLLER_CONTROL, ServingStatus::NotServing).await;
    f.cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), f.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_control_service() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let f = start(None).await;
    let mut client = ServerReflectionClient::new(channel(f.addr).await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers =
        client.server_reflection_info(futures::stream::iter([req])).await.unwrap().into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"lightcl.v1.PollerControl".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_owned()), "{names:?}");
    assert!(names.contains(&"grpc.reflection.v1.ServerReflection".to_owned()), "{names:?}");
    for other in ["lightcl.v1.ValidatorControl", "lightcl.v1.EngineDriverControl"] {
        assert!(!names.contains(&other.to_owned()), "{other} is not served here: {names:?}");
    }
    f.cancel.cancel();
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_needs_the_token() {
    let f = start(Some("s3cret")).await;
    let mut c = PollerControlClient::new(channel(f.addr).await);

    let e = c.pause(PauseRequest { reason: "x".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = c.pause(with_token(PauseRequest::default(), "wrong")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!f.paused.load(Ordering::SeqCst), "no side effect without the right token");
    assert!(
        !c.get_status(GetStatusRequest {}).await.unwrap().into_inner().paused,
        "reads are open"
    );

    let ok = c.pause(with_token(PauseRequest::default(), "s3cret")).await.unwrap().into_inner();
    assert!(ok.paused && f.paused.load(Ordering::SeqCst));
    let e = c.resume(ResumeRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(f.paused.load(Ordering::SeqCst));
    c.resume(with_token(ResumeRequest {}, "s3cret")).await.unwrap();
    assert!(!f.paused.load(Ordering::SeqCst));
    f.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_configured_refuses_pause() {
    let f = start(None).await;
    let mut c = PollerControlClient::new(channel(f.addr).await);
    let e = c.pause(with_token(PauseRequest::default(), "anything")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("no token configured"), "{}", e.message());
    assert!(!f.paused.load(Ordering::SeqCst));
    f.cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_status_is_latest_wins_and_ends_on_shutdown() {
    let f = start(None).await;
    let mut c = PollerControlClient::new(channel(f.addr).await);
    let mut stream = c.watch_status(WatchStatusRequest {}).await.unwrap().into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().polls_ok, 0, "current value first");

    f.status_tx.send(1).unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().polls_ok, 1);

    // A burst: the client sees increasing values ending on the latest (how many intermediate
    // values are skipped depends on scheduling; `watch_latest_wins` below checks the skipping
    // deterministically).
    for n in 2..=1000 {
        f.status_tx.send(n).unwrap();
    }
    let mut seen = Vec::new();
    loop {
        let m = stream.message().await.unwrap().unwrap().polls_ok;
        seen.push(m);
        if m == 1000 {
            break;
        }
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    f.cancel.cancel();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap();
    assert!(matches!(end, Ok(None)), "stream ends cleanly on shutdown: {end:?}");
    tokio::time::timeout(Duration::from_secs(5), f.task).await.unwrap().unwrap().unwrap();
}

/// Deterministic latest-wins: values sent while nobody polls collapse into the newest one.
#[tokio::test(flavor = "current_thread")]
async fn watch_latest_wins() {
    let (tx, rx) = watch::channel(0u64);
    let cancel = CancellationToken::new();
    let mut s = lightcl_runtime::watch_stream(rx, cancel.clone());
    assert_eq!(s.next().await.unwrap().unwrap(), 0);
    for n in 1..=1000 {
        tx.send(n).unwrap();
    }
    assert_eq!(s.next().await.unwrap().unwrap(), 1000, "intermediate values skipped");
    tx.send(1001).unwrap();
    assert_eq!(s.next().await.unwrap().unwrap(), 1001);
    // The sender going away ends the stream too.
    drop(tx);
    assert!(s.next().await.is_none());
}
