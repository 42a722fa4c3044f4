//! The `PollerControl` gRPC service: status, watch, pause/resume.

use lightcl_proto::v1;
use lightcl_proto::v1::poller_control_server::PollerControl;
use lightcl_runtime::{Auth, WatchStream, watch_stream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// The control service over the poller's published status and its pause switch.
#[derive(Debug, Clone)]
pub struct Control {
    status: watch::Receiver<v1::PollerStatus>,
    paused: watch::Sender<bool>,
    auth: Auth,
    cancel: CancellationToken,
}

impl Control {
    /// A control service.
    pub fn new(
        status: watch::Receiver<v1::PollerStatus>,
        paused: watch::Sender<bool>,
        auth: Auth,
        cancel: CancellationToken,
    ) -> Self {
        Self { status, paused, auth, cancel }
    }
}

#[tonic::async_trait]
impl PollerControl for Control {
    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::PollerStatus>, Status> {
        self.auth.check_read(&request)?;
        let mut s = self.status.borrow().clone();
        s.paused = *self.paused.borrow();
        Ok(Response::new(s))
    }

    type WatchStatusStream = WatchStream<v1::PollerStatus>;

    async fn watch_status(
        &self,
        request: Request<v1::WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        self.auth.check_read(&request)?;
        Ok(Response::new(watch_stream(self.status.clone(), self.cancel.clone())))
    }

    async fn pause(
        &self,
        request: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.auth.check_mutation(&request)?;
        let reason = request.into_inner().reason;
        tracing::warn!(%reason, "paused over gRPC: no polls until Resume");
        self.paused.send_replace(true);
        Ok(Response::new(v1::PauseState { paused: true }))
    }

    async fn resume(
        &self,
        request: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.auth.check_mutation(&request)?;
        tracing::info!("resumed over gRPC");
        self.paused.send_replace(false);
        Ok(Response::new(v1::PauseState { paused: false }))
    }
}
