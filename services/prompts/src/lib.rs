//! The prompts service: the prompt registry.
//!
//! Owns the `EVT_PROMPTS` stream (`evt.prompts.<org>.prompt.<id>`) and the
//! `prompts` read model; serves `promptops.prompts.v1.PromptService`.
//!
//! - [`domain`]: the Prompt aggregate, pure; [`template`]: `{{ var }}`
//!   templates; [`diff`]: version diffs; [`exchange`]: JSON / YAML documents
//!   and import planning;
//! - [`events`]: how its events are stored;
//! - [`live`]: prompt states cached from the log, kept fresh by following
//!   it, and the changes watchers are sent;
//! - [`read_model`]: the catalog projection for listing and search;
//! - [`grpc`]: the API.

pub mod diff;
pub mod domain;
pub mod events;
pub mod exchange;
pub mod grpc;
pub mod live;
pub mod read_model;
pub mod template;

use std::sync::Arc;

use promptops_eventlog::Context;
use promptops_eventlog::projection::ProjectionRunner;
use promptops_platform::authn::Authenticator;
use promptops_platform::config::{ConfigError, Env, ServiceConfig, ServiceName};
use promptops_platform::runtime::{RunError, open_resources};
use promptops_platform::server::{GrpcService, bind, serve_grpc};
use promptops_proto::prompts::v1::prompt_service_server::{PromptServiceServer, SERVICE_NAME};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SERVICE: ServiceName = ServiceName::Prompts;

/// The service's configuration: its gRPC address and the shared settings.
pub type Config = ServiceConfig;

/// Reads the configuration from the environment.
pub fn config_from_env(env: &Env) -> Result<Config, ConfigError> {
    ServiceConfig::from_env(SERVICE, env)
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let resources = open_resources(&config.common, SERVICE, read_model::MIGRATIONS).await?;
    let listener = bind(config.grpc_addr).await?;
    tracing::info!(addr = %config.grpc_addr, "prompts service listening");

    let auth = Authenticator::new(config.auth.clone()).map_err(|e| RunError::Other(e.to_string()))?;
    let projections = TaskTracker::new();
    auth.start(resources.log.clone(), &projections, shutdown.clone());
    projections.spawn(
        ProjectionRunner::new(
            resources.log.clone(),
            resources.db.clone(),
            Arc::new(read_model::CatalogProjection),
            Context::Prompts,
        )
        .run(shutdown.clone()),
    );
    let live = live::Live::new(resources.log.clone());
    projections.spawn(live.clone().run(shutdown.clone()));
    projections.close();

    let readiness = resources.readiness().with_authenticator(auth.clone());
    let watches = TaskTracker::new();
    let api = grpc::PromptsApi::new(
        resources.log.clone(),
        resources.db.clone(),
        auth,
        live,
        watches.clone(),
        shutdown.clone(),
    );
    let service = GrpcService {
        name: SERVICE,
        routes: tonic::service::Routes::new(PromptServiceServer::new(api)),
        grpc_names: vec![SERVICE_NAME],
        readiness,
    };
    let served = serve_grpc(listener, service, shutdown.clone(), config.common.shutdown_grace).await;
    // Requests are drained; stop the projection and wait for it.
    shutdown.cancel();
    watches.close();
    watches.wait().await;
    projections.wait().await;
    served.map_err(RunError::from)
}
