//! The execution service: models, runs and their records.
//!
//! Owns the `EVT_EXECUTION` stream (`evt.execution.<org>.run.<id>`) and the
//! `runs` read model; serves `promptops.execution.v1.ExecutionService`.
//!
//! - [`models`]: the model catalog (the built-in `mock` provider for now);
//! - [`mock`]: the mock provider; [`mock_server`]: the same as a standalone
//!   HTTP server (`promptops-mock-provider`, OpenAI and Anthropic formats);
//!   [`tokens`]: token counting;
//! - [`events`]: how a run is recorded (start, then exactly one end);
//! - [`runs`]: the history read model;
//! - [`grpc`]: the API.

pub mod accounts;
pub mod catalog;
pub mod conversation;
pub mod conversations;
pub mod events;
pub mod grpc;
pub mod health;
pub mod mock;
pub mod mock_server;
pub mod models;
pub mod providers;
pub mod resilience;
pub mod run_retention;
pub mod runs;
pub mod secrets;
pub mod sweeper;
pub mod tokens;

use std::sync::Arc;

use promptops_eventlog::Context;
use promptops_eventlog::projection::ProjectionRunner;
use promptops_platform::authn::Authenticator;
use promptops_platform::config::{ConfigError, Env, ServiceConfig, ServiceName};
use promptops_platform::runtime::{RunError, open_resources};
use promptops_platform::server::{GrpcService, bind, serve_grpc};
use promptops_proto::execution::v1::execution_service_server::{ExecutionServiceServer, SERVICE_NAME};
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SERVICE: ServiceName = ServiceName::Execution;

pub use runs::MIGRATIONS;

/// The service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// Where the prompts service is (`PROMPTOPS_PROMPTS_URL`), to
    /// render managed prompts.
    pub prompts_url: String,
    /// The longest a run may take, provider call included
    /// (`PROMPTOPS_RUN_TIMEOUT_SECS`, default 600); a run still open at twice
    /// that is recorded as abandoned by the sweeper.
    pub run_timeout: std::time::Duration,
    /// `PROMPTOPS_MASTER_KEY` (base64 of 32 bytes; kept redacted) …
    pub master_key: Option<secrets::Secret>,
    /// … or `PROMPTOPS_MASTER_KEY_FILE`; neither: `$PROMPTOPS_DATA_DIR/master.key`.
    pub master_key_file: Option<std::path::PathBuf>,
    /// How often every configured model is checked
    /// (`PROMPTOPS_MODEL_HEALTH_CHECK_SECS`, default 300).
    pub health_check_every: std::time::Duration,
    /// `PROMPTOPS_RUN_PAYLOAD_RETENTION_DAYS` (90) unless an org chose.
    pub run_payload_days: u32,
    /// `PROMPTOPS_RUN_PAYLOAD_PRUNE_SECS` (3600).
    pub run_payload_prune_every: std::time::Duration,
    /// `PROMPTOPS_EGRESS_ALLOW`: what inside the network providers may be.
    pub egress: std::sync::Arc<promptops_platform::egress::EgressPolicy>,
}

/// Reads the configuration from the environment.
pub fn config_from_env(env: &Env) -> Result<Config, ConfigError> {
    if let Some(value) = env.get("PROMPTOPS_MASTER_KEY") {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD.decode(value.trim());
        if decoded.map(|k| k.len()) != Ok(32) {
            return Err(ConfigError {
                variable: "PROMPTOPS_MASTER_KEY".into(),
                value: "[redacted]".into(),
                reason: "must be base64 of 32 random bytes (openssl rand -base64 32)".into(),
            });
        }
    }
    Ok(Config {
        service: ServiceConfig::from_env(SERVICE, env)?,
        prompts_url: ServiceName::Prompts.url(env)?,
        run_timeout: env.seconds("PROMPTOPS_RUN_TIMEOUT_SECS", 600)?,
        master_key: env
            .get("PROMPTOPS_MASTER_KEY")
            .map(|k| secrets::Secret::new(k.to_owned())),
        master_key_file: env.get("PROMPTOPS_MASTER_KEY_FILE").map(std::path::PathBuf::from),
        health_check_every: env.seconds("PROMPTOPS_MODEL_HEALTH_CHECK_SECS", 300)?,
        run_payload_days: promptops_platform::config::run_payload_retention_days(env)?,
        run_payload_prune_every: env
            .seconds("PROMPTOPS_RUN_PAYLOAD_PRUNE_SECS", 3600)?
            .max(std::time::Duration::from_secs(1)),
        egress: std::sync::Arc::new(promptops_platform::egress::EgressPolicy::from_env(env)?),
    })
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let service = config.service;
    let master = secrets::master_key(
        config.master_key.as_ref().map(secrets::Secret::expose),
        config.master_key_file.as_deref(),
        &service.common.data_dir,
    )
    .map_err(|e| RunError::Other(format!("provider credentials: {e}")))?;
    let resources = open_resources(&service.common, SERVICE, MIGRATIONS).await?;
    let listener = bind(service.grpc_addr).await?;
    tracing::info!(addr = %service.grpc_addr, "execution service listening");

    let auth = Authenticator::new(service.auth.clone()).map_err(|e| RunError::Other(e.to_string()))?;
    let background = TaskTracker::new();
    // The default tokenizer table takes ~140 ms to load: not on the first
    // request (the others load when a catalog first needs them).
    background.spawn_blocking(tokens::Tokenizer::warm_up);
    auth.start(resources.log.clone(), &background, shutdown.clone());
    background.spawn(
        ProjectionRunner::new(
            resources.log.clone(),
            resources.db.clone(),
            Arc::new(runs::RunsProjection),
            Context::Execution,
        )
        .run(shutdown.clone()),
    );
    background.spawn(
        ProjectionRunner::new(
            resources.log.clone(),
            resources.db.clone(),
            Arc::new(run_retention::RetentionPolicies),
            Context::Identity,
        )
        .run(shutdown.clone()),
    );
    background.spawn(run_retention::run_pruner(
        resources.db.clone(),
        config.run_payload_days,
        config.run_payload_prune_every,
        shutdown.clone(),
    ));
    background.spawn(
        sweeper::Sweeper {
            log: resources.log.clone(),
            db: resources.db.clone(),
            abandon_after: sweeper::abandon_after(config.run_timeout),
        }
        .run(shutdown.clone()),
    );
    let catalogs = Arc::new(catalog::Catalogs::new(resources.log.clone(), master));
    let accounts = Arc::new(accounts::Accounts::new(resources.log.clone()));
    let billing_at = resources
        .log
        .last_sequence(Context::Billing)
        .await
        .map_err(|e| RunError::Other(format!("the event log: {e}")))?;
    background.spawn(accounts.clone().follow(billing_at, shutdown.clone()));
    background.spawn(accounts.clone().run_returns(shutdown.clone()));
    let health = Arc::new(health::HealthBoard::default());
    let http = providers::ProviderClient::new(config.egress.clone());
    background.spawn(
        health::HealthChecker {
            db: resources.db.clone(),
            catalogs: catalogs.clone(),
            board: health.clone(),
            client: http.clone(),
            every: config.health_check_every,
        }
        .run(shutdown.clone()),
    );
    background.close();

    let prompts = promptops_platform::upstream::Upstream::lazy(&config.prompts_url, None)
        .map_err(|e| RunError::Other(format!("prompts address: {e}")))?;
    let readiness = resources.readiness().with_authenticator(auth.clone());
    let runs = TaskTracker::new();
    let api = grpc::ExecutionApi {
        log: resources.log.clone(),
        db: resources.db.clone(),
        auth,
        prompts: PromptServiceClient::new(prompts),
        runs: runs.clone(),
        shutdown: shutdown.clone(),
        run_timeout: config.run_timeout,
        models: catalogs,
        http,
        resilience: Arc::new(resilience::Resilience::default()),
        health,
        accounts: accounts.clone(),
    };
    let served = serve_grpc(
        listener,
        GrpcService {
            name: SERVICE,
            routes: tonic::service::Routes::new(ExecutionServiceServer::new(api)),
            grpc_names: vec![SERVICE_NAME],
            readiness,
        },
        shutdown.clone(),
        service.common.shutdown_grace,
    )
    .await;
    // Requests are drained; runs in flight are cancelled and recorded.
    shutdown.cancel();
    runs.close();
    runs.wait().await;
    // Budget credit this replica holds goes back for the others.
    accounts.return_credit(true).await;
    background.wait().await;
    served.map_err(RunError::from)
}
