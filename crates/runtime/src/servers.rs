//! The two servers every service runs: admin HTTP and gRPC control, started together on the
//! service's default ports (or `--admin.addr`/`--grpc.addr`) and awaited together on shutdown.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::admin::{AdminState, serve_admin};
use crate::args::CommonArgs;
use crate::error::StartError;
use crate::grpc::{GrpcLimits, GrpcOptions, serve_grpc};

/// A service's default ports and the gRPC service whose health follows readiness.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// Default admin port.
    pub admin_port: u16,
    /// Default gRPC port.
    pub grpc_port: u16,
    /// Fully-qualified control service name (health reports it).
    pub health_service: &'static str,
}

/// The running admin and gRPC servers.
#[derive(Debug)]
pub struct Servers {
    /// Bound admin address.
    pub admin: SocketAddr,
    /// Bound gRPC address.
    pub grpc: SocketAddr,
    admin_task: JoinHandle<()>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Servers {
    /// Starts both servers; they stop when `cancel` fires.
    pub async fn start(
        common: &CommonArgs,
        spec: ServiceSpec,
        admin: AdminState,
        routes: Routes,
        cancel: &CancellationToken,
    ) -> Result<Self, StartError> {
        let tls = common.tls().map_err(StartError::Config)?;
        let readiness = admin.readiness.clone();
        let (admin_addr, admin_task) =
            serve_admin(common.admin_addr_or(spec.admin_port), admin, cancel.clone()).await?;
        let grpc = serve_grpc(
            GrpcOptions {
                addr: common.grpc_addr_or(spec.grpc_port),
                tls,
                health_service: spec.health_service,
                readiness,
                limits: GrpcLimits::default(),
            },
            routes,
            cancel.clone(),
        )
        .await;
        let (grpc_addr, grpc_task) = match grpc {
            Ok(g) => g,
            Err(e) => {
                admin_task.abort();
                return Err(e.into());
            }
        };
        Ok(Self { admin: admin_addr, grpc: grpc_addr, admin_task, grpc_task })
    }

    /// Waits until both servers have stopped (after the cancellation).
    pub async fn stopped(self) {
        if let Ok(Err(e)) = self.grpc_task.await {
            tracing::warn!(error = %e, "gRPC server ended with an error");
        }
        let _ = self.admin_task.await;
    }
}
