//! The `EngineDriverControl` gRPC service: status, watch, pause/resume, resync.

use lightcl_proto::v1;
use lightcl_proto::v1::engine_driver_control_server::EngineDriverControl;
use lightcl_runtime::{Auth, WatchStream, watch_stream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::driver::Command;

/// The control service.
#[derive(Debug, Clone)]
pub struct Control {
    status: watch::Receiver<v1::EngineDriverStatus>,
    commands: mpsc::Sender<Command>,
    auth: Auth,
    cancel: CancellationToken,
}

impl Control {
    /// A control service over the driver's status and command channel.
    pub fn new(
        status: watch::Receiver<v1::EngineDriverStatus>,
        commands: mpsc::Sender<Command>,
        auth: Auth,
        cancel: CancellationToken,
    ) -> Self {
        Self { status, commands, auth, cancel }
    }

    #[allow(clippy::result_large_err)]
    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, Status> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Status::unavailable("engine-driver is shutting down"))?;
        rx.await.map_err(|_| Status::unavailable("engine-driver is shutting down"))
    }
}

#[tonic::async_trait]
impl EngineDriverControl for Control {
    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::EngineDriverStatus>, Status> {
        self.auth.check_read(&request)?;
        Ok(Response::new(self.status.borrow().clone()))
    }

    type WatchStatusStream = WatchStream<v1::EngineDriverStatus>;

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
        tracing::warn!(%reason, "Pause requested over gRPC");
        let paused = self.send(Command::Pause).await?;
        Ok(Response::new(v1::PauseState { paused }))
    }

    async fn resume(
        &self,
        request: Request<v1::ResumeRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.auth.check_mutation(&request)?;
        let paused = self.send(Command::Resume).await?;
        Ok(Response::new(v1::PauseState { paused }))
    }

    async fn resync(
        &self,
        request: Request<v1::ResyncRequest>,
    ) -> Result<Response<v1::EngineDriverStatus>, Status> {
        self.auth.check_mutation(&request)?;
        self.send(Command::Resync).await?;
        Ok(Response::new(self.status.borrow().clone()))
    }
}
