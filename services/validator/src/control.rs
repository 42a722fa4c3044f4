//! The `ValidatorControl` gRPC service: status, watch, pause/resume (shared logic in
//! [`lightcl_runtime::PauseControl`]).

use lightcl_proto::v1;
use lightcl_proto::v1::validator_control_server::ValidatorControl;
use lightcl_runtime::{Auth, PauseControl, pause_control_service};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The control service over the validator's published status and its pause switch.
#[derive(Debug, Clone)]
pub struct Control(PauseControl<v1::ValidatorStatus>);

impl Control {
    /// A control service.
    pub fn new(
        status: watch::Receiver<v1::ValidatorStatus>,
        paused: watch::Sender<bool>,
        auth: Auth,
        cancel: CancellationToken,
    ) -> Self {
        let set_paused = |s: &mut v1::ValidatorStatus, p| s.paused = p;
        Self(PauseControl::new(
            status,
            paused,
            auth,
            cancel,
            set_paused,
            "statuses stay in the stream until Resume",
        ))
    }
}

pause_control_service!(Control, ValidatorControl, v1::ValidatorStatus);
