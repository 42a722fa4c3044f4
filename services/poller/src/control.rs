//! The `PollerControl` gRPC service: status, watch, pause/resume (shared logic in
//! [`lightcl_runtime::PauseControl`]).

use lightcl_proto::v1;
use lightcl_proto::v1::poller_control_server::PollerControl;
use lightcl_runtime::{Auth, PauseControl, pause_control_service};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

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
        let set_paused = |s: &mut v1::PollerStatus, p| s.paused = p;
        Self(PauseControl::new(status, paused, auth, cancel, set_paused, "no polls until Resume"))
    }
}

pause_control_service!(Control, PollerControl, v1::PollerStatus);
