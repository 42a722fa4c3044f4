//! The parts of a control service every lightcl service shares: a published status behind
//! a `watch` channel, a pause switch, and bearer-token auth. A service's tonic trait impl
//! delegates each RPC to [`PauseControl`]; [`pause_control_service!`](crate::pause_control_service)
//! writes that impl for a service with exactly GetStatus/WatchStatus/Pause/Resume.

use lightcl_proto::v1;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{Auth, WatchStream, watch_stream};

/// Status + pause switch + auth of one service (`S` is its `*Status` message).
#[derive(Debug, Clone)]
pub struct PauseControl<S> {
    status: watch::Receiver<S>,
    paused: watch::Sender<bool>,
    auth: Auth,
    cancel: CancellationToken,
    /// Writes the pause flag into a status snapshot.
    set_paused: fn(&mut S, bool),
    /// What pausing stops, for the log line (e.g. "no polls until Resume").
    pause_effect: &'static str,
}

impl<S: Clone + Send + Sync + 'static> PauseControl<S> {
    /// A control over `status` and the pause switch `paused`.
    pub fn new(
        status: watch::Receiver<S>,
        paused: watch::Sender<bool>,
        auth: Auth,
        cancel: CancellationToken,
        set_paused: fn(&mut S, bool),
        pause_effect: &'static str,
    ) -> Self {
        Self { status, paused, auth, cancel, set_paused, pause_effect }
    }

    /// `GetStatus`: the latest status with the live pause flag.
    #[allow(clippy::result_large_err)]
    pub fn get_status<T>(&self, request: &Request<T>) -> Result<Response<S>, Status> {
        self.auth.check_read(request)?;
        let mut s = self.status.borrow().clone();
        (self.set_paused)(&mut s, *self.paused.borrow());
        Ok(Response::new(s))
    }

    /// `WatchStatus`: every change, latest-wins, ends on shutdown.
    #[allow(clippy::result_large_err)]
    pub fn watch_status<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Response<WatchStream<S>>, Status> {
        self.auth.check_read(request)?;
        Ok(Response::new(watch_stream(self.status.clone(), self.cancel.clone())))
    }

    /// `Pause` (needs the token).
    #[allow(clippy::result_large_err)]
    pub fn pause(
        &self,
        request: Request<v1::PauseRequest>,
    ) -> Result<Response<v1::PauseState>, Status> {
        self.auth.check_mutation(&request)?;
        let reason = request.into_inner().reason;
        tracing::warn!(%reason, "paused over gRPC: {}", self.pause_effect);
        self.paused.send_replace(true);
        Ok(Response::new(v1::PauseState { paused: true }))
    }

    /// `Resume` (needs the token).
    #[allow(clippy::result_large_err)]
    pub fn resume<T>(&self, request: &Request<T>) -> Result<Response<v1::PauseState>, Status> {
        self.auth.check_mutation(request)?;
        tracing::info!("resumed over gRPC");
        self.paused.send_replace(false);
        Ok(Response::new(v1::PauseState { paused: false }))
    }
}

/// Implements a generated `lightcl.v1` control trait with GetStatus, WatchStatus, Pause and
/// Resume for a newtype over [`PauseControl`] (field `.0`):
/// `pause_control_service!(Control, PollerControl, v1::PollerStatus);`
/// (needs `tonic` and `lightcl-proto` in the calling crate).
#[macro_export]
macro_rules! pause_control_service {
    ($control:ty, $trait:path, $status:ty) => {
        #[tonic::async_trait]
        impl $trait for $control {
            async fn get_status(
                &self,
                request: tonic::Request<lightcl_proto::v1::GetStatusRequest>,
            ) -> Result<tonic::Response<$status>, tonic::Status> {
                self.0.get_status(&request)
            }

            type WatchStatusStream = $crate::WatchStream<$status>;

            async fn watch_status(
                &self,
                request: tonic::Request<lightcl_proto::v1::WatchStatusRequest>,
            ) -> Result<tonic::Response<Self::WatchStatusStream>, tonic::Status> {
                self.0.watch_status(&request)
            }

            async fn pause(
                &self,
                request: tonic::Request<lightcl_proto::v1::PauseRequest>,
            ) -> Result<tonic::Response<lightcl_proto::v1::PauseState>, tonic::Status> {
                self.0.pause(request)
            }

            async fn resume(
                &self,
                request: tonic::Request<lightcl_proto::v1::ResumeRequest>,
            ) -> Result<tonic::Response<lightcl_proto::v1::PauseState>, tonic::Status> {
                self.0.resume(&request)
            }
        }
    };
}
