//! The audit service: projections over every stream of the log.
//!
//! Owns no stream. Runs the `audit_trail` projection (hash-chained entries,
//! [`trail`]) once per bounded context and the `analytics` projection over
//! the execution stream, signs the chains' heads ([`signing`]), and serves
//! `promptops.audit.v1.AuditService` and `AnalyticsService`.

pub mod analytics;
pub mod chain;
pub mod classify;
pub mod grpc;
pub mod rebuild;
pub mod report;
pub mod retention;
pub mod signing;
pub mod trail;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use promptops_eventlog::Context;
use promptops_eventlog::projection::ProjectionRunner;
use promptops_platform::authn::Authenticator;
use promptops_platform::config::{ConfigError, Env, ServiceConfig, ServiceName};
use promptops_platform::db::Migration;
use promptops_platform::runtime::{RunError, open_resources};
use promptops_platform::server::{GrpcService, bind, serve_grpc};
use promptops_proto::audit::v1::analytics_service_server::{
    AnalyticsServiceServer, SERVICE_NAME as ANALYTICS_SERVICE_NAME,
};
use promptops_proto::audit::v1::audit_service_server::{AuditServiceServer, SERVICE_NAME};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SERVICE: ServiceName = ServiceName::Audit;

/// Every migration of the audit database, in order.
pub fn migrations() -> Vec<Migration> {
    trail::MIGRATIONS
        .iter()
        .chain(analytics::MIGRATIONS)
        .copied()
        .collect()
}

/// A fresh SQLite database with the service's schema, for unit tests.
#[cfg(test)]
pub(crate) async fn test_database() -> (sqlx::AnyPool, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = promptops_platform::db::open(
        &promptops_platform::config::DatabaseConfig::Sqlite {
            data_dir: dir.path().to_owned(),
        },
        "audit",
        &migrations(),
    )
    .await
    .unwrap();
    (db, dir)
}

/// The service's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub service: ServiceConfig,
    /// `PROMPTOPS_AUDIT_SIGNING_KEY` / `PROMPTOPS_AUDIT_SIGNING_KEY_FILE`.
    pub signing_key: signing::KeySource,
    /// `PROMPTOPS_AUDIT_CHECKPOINT_SECS` (60): how often moved chain heads are signed.
    pub checkpoint_interval: Duration,
    /// `PROMPTOPS_AUDIT_RETENTION_DAYS` (365): how long entries are kept unless an org chose.
    pub retention_days: u32,
    /// `PROMPTOPS_AUDIT_PRUNE_SECS` (3600): how often entries past retention are pruned.
    pub prune_interval: Duration,
    /// `PROMPTOPS_RUN_PAYLOAD_RETENTION_DAYS` (90), shown with the policy.
    pub run_payload_days: u32,
}

/// Reads the configuration from the environment.
pub fn config_from_env(env: &Env) -> Result<Config, ConfigError> {
    Ok(Config {
        service: ServiceConfig::from_env(SERVICE, env)?,
        signing_key: signing::KeySource::from_env(env),
        checkpoint_interval: env
            .seconds("PROMPTOPS_AUDIT_CHECKPOINT_SECS", 60)?
            .max(Duration::from_secs(1)),
        retention_days: retention_days(env)?,
        prune_interval: env
            .seconds("PROMPTOPS_AUDIT_PRUNE_SECS", 3600)?
            .max(Duration::from_secs(1)),
        run_payload_days: promptops_platform::config::run_payload_retention_days(env)?,
    })
}

fn retention_days(env: &Env) -> Result<u32, ConfigError> {
    let days = env.parse::<u32>("PROMPTOPS_AUDIT_RETENTION_DAYS", 365)?;
    if (1..=36_500).contains(&days) {
        Ok(days)
    } else {
        Err(ConfigError {
            variable: "PROMPTOPS_AUDIT_RETENTION_DAYS".into(),
            value: days.to_string(),
            reason: "expected 1 to 36500 days".into(),
        })
    }
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let signer = config
        .signing_key
        .load()
        .map_err(|e| RunError::Other(e.to_string()))?;
    let common = &config.service.common;
    let resources = open_resources(common, SERVICE, &migrations()).await?;
    if matches!(
        common.database,
        promptops_platform::config::DatabaseConfig::Postgres { .. }
    ) {
        trail::create_postgres_text_index(&resources.db).await;
    }
    let listener = bind(config.service.grpc_addr).await?;
    tracing::info!(addr = %config.service.grpc_addr, "audit service listening");

    let auth = Authenticator::new(config.service.auth.clone()).map_err(|e| RunError::Other(e.to_string()))?;
    // Shutdown: 1. stop serving (serve_grpc drains in-flight requests);
    // 2. cancel the projections and the checkpoint signer, which signs the
    // heads once more; 3. wait for all of them.
    let tasks = TaskTracker::new();
    auth.start(resources.log.clone(), &tasks, shutdown.clone());
    let trail = Arc::new(trail::AuditTrail);
    for context in Context::ALL {
        tasks.spawn(
            ProjectionRunner::new(
                resources.log.clone(),
                resources.db.clone(),
                Arc::clone(&trail),
                context,
            )
            .run(shutdown.clone()),
        );
    }
    tasks.spawn(
        ProjectionRunner::new(
            resources.log.clone(),
            resources.db.clone(),
            Arc::new(analytics::Analytics),
            Context::Execution,
        )
        .run(shutdown.clone()),
    );
    tasks.spawn(signing::run_checkpoints(
        resources.db.clone(),
        signer.clone(),
        config.checkpoint_interval,
        shutdown.clone(),
    ));
    tasks.spawn(retention::run_pruner(
        resources.db.clone(),
        signer.clone(),
        config.retention_days,
        config.prune_interval,
        shutdown.clone(),
    ));
    tasks.close();

    let routes = tonic::service::Routes::new(AuditServiceServer::new(grpc::AuditApi::new(
        resources.db.clone(),
        auth.clone(),
        signer,
        grpc::RetentionDefaults {
            audit_days: config.retention_days,
            run_payload_days: config.run_payload_days,
        },
    )))
    .add_service(AnalyticsServiceServer::new(analytics::grpc::AnalyticsApi::new(
        resources.db.clone(),
        auth.clone(),
    )));
    let service = GrpcService {
        name: SERVICE,
        routes,
        grpc_names: vec![SERVICE_NAME, ANALYTICS_SERVICE_NAME],
        readiness: resources.readiness().with_authenticator(auth),
    };
    let served = serve_grpc(listener, service, shutdown.clone(), common.shutdown_grace).await;
    shutdown.cancel();
    tasks.wait().await;
    served.map_err(RunError::from)
}
