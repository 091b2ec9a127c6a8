//! The audit service: projections over every stream of the log.
//!
//! Owns no stream. Runs the `audit_trail` projection once per bounded
//! context and serves `promptops.audit.v1.AuditService`.

pub mod grpc;
mod summary;
pub mod trail;

use std::sync::Arc;

use promptops_eventlog::Context;
use promptops_eventlog::projection::ProjectionRunner;
use promptops_platform::authn::Authenticator;
use promptops_platform::config::{ConfigError, Env, ServiceConfig, ServiceName};
use promptops_platform::runtime::{RunError, open_resources};
use promptops_platform::server::{GrpcService, bind, serve_grpc};
use promptops_proto::audit::v1::audit_service_server::{AuditServiceServer, SERVICE_NAME};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SERVICE: ServiceName = ServiceName::Audit;

/// The service's configuration: its gRPC address and the shared settings.
pub type Config = ServiceConfig;

/// Reads the configuration from the environment.
pub fn config_from_env(env: &Env) -> Result<Config, ConfigError> {
    ServiceConfig::from_env(SERVICE, env)
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let resources = open_resources(&config.common, SERVICE, trail::MIGRATIONS).await?;
    let listener = bind(config.grpc_addr).await?;
    tracing::info!(addr = %config.grpc_addr, "audit service listening");

    let auth = Authenticator::new(config.auth.clone()).map_err(|e| RunError::Other(e.to_string()))?;
    let projections = TaskTracker::new();
    auth.start(resources.log.clone(), &projections, shutdown.clone());
    let trail = Arc::new(trail::AuditTrail);
    for context in Context::ALL {
        projections.spawn(
            ProjectionRunner::new(
                resources.log.clone(),
                resources.db.clone(),
                Arc::clone(&trail),
                context,
            )
            .run(shutdown.clone()),
        );
    }
    projections.close();

    let service = GrpcService {
        name: SERVICE,
        routes: tonic::service::Routes::new(AuditServiceServer::new(grpc::AuditApi::new(
            resources.db.clone(),
            auth.clone(),
        ))),
        grpc_names: vec![SERVICE_NAME],
        readiness: resources.readiness().with_authenticator(auth),
    };
    let served = serve_grpc(listener, service, shutdown.clone(), config.common.shutdown_grace).await;
    shutdown.cancel();
    projections.wait().await;
    served.map_err(RunError::from)
}
