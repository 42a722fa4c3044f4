//! The `PollerControl` gRPC service: status, watch, pause/resume (shared logic in
//! [`lightcl_runtime::PauseControl`]).

use lightcl_proto::v1;
use lightcl_proto::v1::poller_control_server::PollerControl;
use lightcl_runtime::{Auth, PauseControl, WatchStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The control service over the poller's published status and its pause switch.
#[derive(Debug, Clone)]
pub struct Control(PauseControl<v1::PollerStatus>);

impl Control {
    /// A control service.
    pub fn new(
        status: watch::Receiver<v1::PollerStatus>,
        paused: watch::Sender<bool>,
        auth: Auth,
        cancel: CancellationToken,
    ) -> Self {
        Self(PauseControl::new(
            status,
            paused,
            auth,
            cancel,
            |s, p| s.paused = p,
            "no polls until Resume",
        ))
    }
}

#[tonic::async_trait]
impl PollerControl for Control {
    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::PollerStatus>, Status> {
        self.0.get_status(&request)
    }

    type WatchStatusStream = WatchStream<v1::PollerStatus>;

    async fn watch_status(
        &self,
        request: Request<v1::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.0.watch_status(&request)
    }

    async fn pause(
        &self,
        request: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.0.pause(request)
    }

    async fn resume(
        &self,
        request: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.0.resume(&request)
    }
}
