//! The evaluation service: datasets, evaluators and evaluation runs.
//!
//! This release runs the service's skeleton: its own database and the event
//! log are opened and migrated, and its port serves gRPC health, reflection,
//! `/healthz`, `/readyz` and `/metrics`. Its API arrives with its issue.

pub mod dataset;
pub mod datasets;
pub mod evaluation_run;
pub mod metrics;
pub mod scoring;

use promptops_platform::config::{ConfigError, Env, ServiceConfig, ServiceName};
use promptops_platform::db::Migration;
use promptops_platform::runtime::{RunError, run_without_api};
use tokio_util::sync::CancellationToken;

pub const SERVICE: ServiceName = ServiceName::Evaluation;

/// The service's schema: for now the projection checkpoints it will need.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "projection checkpoints",
    statements: &[promptops_eventlog::projection::CHECKPOINT_TABLE],
}];

/// The service's configuration: its gRPC address and the shared settings.
pub type Config = ServiceConfig;

/// Reads the configuration from the environment.
pub fn config_from_env(env: &Env) -> Result<Config, ConfigError> {
    ServiceConfig::from_env(SERVICE, env)
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    run_without_api(&config, MIGRATIONS, shutdown).await
}
