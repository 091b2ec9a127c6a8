//! The execution service: models, provider credentials, runs and conversations.
//!
//! This release runs the service's skeleton: its own database and the event
//! log are opened and migrated, and its port serves gRPC health, reflection,
//! `/healthz`, `/readyz` and `/metrics`. Its API arrives with its issue.

use std::net::SocketAddr;

use promptops_platform::config::{CommonConfig, ConfigError, Env, ServiceName};
use promptops_platform::db::Migration;
use promptops_platform::runtime::{RunError, run_without_api};
use tokio_util::sync::CancellationToken;

pub const SERVICE: ServiceName = ServiceName::Execution;

/// The service's schema: for now the projection checkpoints it will need.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "projection checkpoints",
    statements: &[promptops_eventlog::projection::CHECKPOINT_TABLE],
}];

#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            grpc_addr: SERVICE.grpc_addr(env)?,
            common: CommonConfig::from_env(env)?,
        })
    }
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    run_without_api(SERVICE, config.grpc_addr, &config.common, MIGRATIONS, shutdown).await
}
