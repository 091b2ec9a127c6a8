//! The billing service: the price book, the usage ledger, budgets, reports
//! and alerts.
//!
//! Owns the `EVT_BILLING` stream: each org's `account` aggregate (prices,
//! projects, budgets; see [`promptops_account`]) and its `alerts`. Runs the
//! usage ledger over `EVT_EXECUTION` ([`ledger`]), the directory of API keys
//! and budgets over `EVT_IDENTITY` and `EVT_BILLING`, the alert checker
//! ([`alerts`]), and serves `promptops.billing.v1.BillingService`
//! ([`grpc`]). Hard budgets are enforced by the execution service from the
//! same events, without calling this one.

pub mod alerts;
pub mod grpc;
pub mod ledger;
pub mod reconcile;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use promptops_eventlog::Context;
use promptops_eventlog::projection::ProjectionRunner;
use promptops_platform::authn::Authenticator;
use promptops_platform::config::{ConfigError, Env, ServiceConfig, ServiceName};
use promptops_platform::runtime::{RunError, open_resources};
use promptops_platform::server::{GrpcService, bind, serve_grpc};
use promptops_proto::billing::v1::billing_service_server::{BillingServiceServer, SERVICE_NAME};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SERVICE: ServiceName = ServiceName::Billing;

pub use ledger::MIGRATIONS;

/// The service's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub service: ServiceConfig,
    /// `PROMPTOPS_BILLING_ALERT_SECS` (30): how often budgets' thresholds and
    /// the day's spend are checked.
    pub alert_interval: Duration,
}

/// Reads the configuration from the environment.
pub fn config_from_env(env: &Env) -> Result<Config, ConfigError> {
    Ok(Config {
        service: ServiceConfig::from_env(SERVICE, env)?,
        alert_interval: env
            .seconds("PROMPTOPS_BILLING_ALERT_SECS", 30)?
            .max(Duration::from_secs(1)),
    })
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let common = &config.service.common;
    let resources = open_resources(common, SERVICE, MIGRATIONS).await?;
    let listener = bind(config.service.grpc_addr).await?;
    tracing::info!(addr = %config.service.grpc_addr, "billing service listening");

    let auth = Authenticator::new(config.service.auth.clone()).map_err(|e| RunError::Other(e.to_string()))?;
    let tasks = TaskTracker::new();
    auth.start(resources.log.clone(), &tasks, shutdown.clone());
    tasks.spawn(
        ProjectionRunner::new(
            resources.log.clone(),
            resources.db.clone(),
            Arc::new(ledger::UsageLedger),
            Context::Execution,
        )
        .run(shutdown.clone()),
    );
    for context in [Context::Identity, Context::Billing] {
        tasks.spawn(
            ProjectionRunner::new(
                resources.log.clone(),
                resources.db.clone(),
                Arc::new(ledger::Directory),
                context,
            )
            .run(shutdown.clone()),
        );
    }
    tasks.spawn(alerts::run(
        resources.db.clone(),
        resources.log.clone(),
        config.alert_interval,
        shutdown.clone(),
    ));
    tasks.close();

    let api = grpc::BillingApi::new(resources.log.clone(), resources.db.clone(), auth.clone());
    let service = GrpcService {
        name: SERVICE,
        routes: tonic::service::Routes::new(BillingServiceServer::new(api)),
        grpc_names: vec![SERVICE_NAME],
        readiness: resources.readiness().with_authenticator(auth),
    };
    let served = serve_grpc(listener, service, shutdown.clone(), common.shutdown_grace).await;
    shutdown.cancel();
    tasks.wait().await;
    served.map_err(RunError::from)
}
