//! The gateway: the HTTP/JSON API for the web UI and other clients.
//!
//! Serves HTTP on `PROMPTOPS_HTTP_ADDR` (default `127.0.0.1:8080`) and gRPC
//! health and reflection on `PROMPTOPS_GATEWAY_GRPC_ADDR` (50051). It owns
//! identity (arriving with its issue); requests reach the services over
//! their gRPC APIs (`PROMPTOPS_PROMPTS_URL`, `PROMPTOPS_AUDIT_URL`).

pub mod http;
pub mod identity;

use std::net::SocketAddr;
use std::time::Duration;

use promptops_eventlog::Context;
use promptops_eventlog::projection::ProjectionRunner;
use promptops_platform::config::{CommonConfig, ConfigError, Env, ServiceName};
use promptops_platform::db::Migration;
use promptops_platform::runtime::{RunError, open_resources};
use promptops_platform::server::{GrpcService, Readiness, bind, serve, serve_grpc};
use promptops_platform::upstream::Upstream;
use promptops_proto::audit::v1::analytics_service_client::AnalyticsServiceClient;
use promptops_proto::audit::v1::audit_service_client::AuditServiceClient;
use promptops_proto::billing::v1::billing_service_client::BillingServiceClient;
use promptops_proto::evaluation::v1::evaluation_service_client::EvaluationServiceClient;
use promptops_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use promptops_proto::identity::v1::identity_service_server::{
    IdentityServiceServer, SERVICE_NAME as IDENTITY_SERVICE_NAME,
};
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SERVICE: ServiceName = ServiceName::Gateway;

/// The default limit on request bodies: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// The largest dataset file uploaded as a body, by default.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 32 * 1024 * 1024;

pub const MIGRATIONS: &[Migration] = identity::store::MIGRATIONS;

#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub prompts_url: String,
    pub execution_url: String,
    pub audit_url: String,
    pub evaluation_url: String,
    pub billing_url: String,
    pub max_body_bytes: usize,
    /// `PROMPTOPS_MAX_UPLOAD_BYTES`: data files (dataset versions).
    pub max_upload_bytes: usize,
    pub tokens: identity::service::TokenConfig,
    /// `PROMPTOPS_INIT_*`: the org, owner and API key to create at first start.
    pub init: identity::service::InitConfig,
    /// `PROMPTOPS_RATE_LIMIT_*`.
    pub rate_limits: http::limits::RateLimits,
    pub common: CommonConfig,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let limit = |variable: &str, default: usize| -> Result<usize, ConfigError> {
            let bytes = env.parse(variable, default)?;
            if !(1024..=64 * 1024 * 1024).contains(&bytes) {
                return Err(ConfigError {
                    variable: variable.into(),
                    value: bytes.to_string(),
                    reason: "must be between 1024 and 67108864".into(),
                });
            }
            Ok(bytes)
        };
        let max_body_bytes = limit("PROMPTOPS_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?;
        let max_upload_bytes = limit("PROMPTOPS_MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)?;
        Ok(Self {
            http_addr: env.socket_addr("PROMPTOPS_HTTP_ADDR", "127.0.0.1:8080")?,
            grpc_addr: SERVICE.grpc_addr(env)?,
            prompts_url: ServiceName::Prompts.url(env)?,
            execution_url: ServiceName::Execution.url(env)?,
            audit_url: ServiceName::Audit.url(env)?,
            evaluation_url: ServiceName::Evaluation.url(env)?,
            billing_url: ServiceName::Billing.url(env)?,
            max_body_bytes,
            max_upload_bytes,
            tokens: token_config(env)?,
            rate_limits: http::limits::RateLimits {
                per_key_per_second: positive(env, "PROMPTOPS_RATE_LIMIT_PER_KEY", 50)?,
                per_key_burst: positive(env, "PROMPTOPS_RATE_LIMIT_PER_KEY_BURST", 100)?,
                per_org_per_second: positive(env, "PROMPTOPS_RATE_LIMIT_PER_ORG", 200)?,
                per_org_burst: positive(env, "PROMPTOPS_RATE_LIMIT_PER_ORG_BURST", 400)?,
            },
            init: identity::service::InitConfig {
                org: init_org(env)?,
                email: env.get("PROMPTOPS_INIT_USER_EMAIL").map(str::to_owned),
                password: env.get("PROMPTOPS_INIT_USER_PASSWORD").map(str::to_owned),
                api_key: env.get("PROMPTOPS_INIT_API_KEY").map(str::to_owned),
            },
            common: CommonConfig::from_env(env)?,
        })
    }
}

fn positive(env: &Env, variable: &str, default: u32) -> Result<u32, ConfigError> {
    let value = env.parse::<u32>(variable, default)?;
    if value == 0 {
        return Err(ConfigError {
            variable: variable.into(),
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

/// `PROMPTOPS_INIT_ORG`: an org id (it names subjects, so `[A-Za-z0-9_-]`).
fn init_org(env: &Env) -> Result<Option<String>, ConfigError> {
    let Some(org) = env.get("PROMPTOPS_INIT_ORG") else {
        return Ok(None);
    };
    let valid = org.len() <= 64
        && !org.starts_with('_')
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(Some(org.to_owned()))
    } else {
        Err(ConfigError {
            variable: "PROMPTOPS_INIT_ORG".into(),
            value: org.to_owned(),
            reason: "an org id: 1-64 characters from [A-Za-z0-9_-], not starting with _".into(),
        })
    }
}

/// `PROMPTOPS_AUTH_ISSUER`, `PROMPTOPS_AUTH_AUDIENCE`,
/// `PROMPTOPS_ACCESS_TOKEN_TTL_SECS` (at most 900).
fn token_config(env: &Env) -> Result<identity::service::TokenConfig, ConfigError> {
    let ttl = env.parse::<u64>("PROMPTOPS_ACCESS_TOKEN_TTL_SECS", 900)?;
    if !(30..=900).contains(&ttl) {
        return Err(ConfigError {
            variable: "PROMPTOPS_ACCESS_TOKEN_TTL_SECS".into(),
            value: ttl.to_string(),
            reason: "access tokens live 30 to 900 seconds".into(),
        });
    }
    Ok(identity::service::TokenConfig {
        issuer: env.string("PROMPTOPS_AUTH_ISSUER", "promptops"),
        audience: env.string("PROMPTOPS_AUTH_AUDIENCE", "promptops-api"),
        access_ttl: Duration::from_secs(ttl),
        keys: identity::service::KeyPolicy {
            rotation: env.seconds("PROMPTOPS_SIGNING_KEY_ROTATION_SECS", 30 * 24 * 3600)?,
            lead: env.seconds("PROMPTOPS_SIGNING_KEY_LEAD_SECS", 600)?,
            overlap: env.seconds("PROMPTOPS_SIGNING_KEY_OVERLAP_SECS", 24 * 3600)?,
        },
    })
}

fn channel(url: &str, variable: &str) -> Result<Upstream, RunError> {
    Upstream::lazy(url, Some(Duration::from_secs(30)))
        .map_err(|e| RunError::Other(format!("{variable}: {e}")))
}

/// Ready when its own resources and the services it calls answer.
fn upstream_check(readiness: Readiness, name: &'static str, channel: Upstream) -> Readiness {
    readiness.with_check(name, move || {
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        async move {
            let response = client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|s| format!("{}: {}", s.code(), s.message()))?;
            if response.into_inner().status
                == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                Ok(())
            } else {
                Err("not serving".to_owned())
            }
        }
    })
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let resources = open_resources(&config.common, SERVICE, MIGRATIONS).await?;
    let prompts = channel(&config.prompts_url, "PROMPTOPS_PROMPTS_URL")?;
    let audit = channel(&config.audit_url, "PROMPTOPS_AUDIT_URL")?;
    let execution = channel(&config.execution_url, "PROMPTOPS_EXECUTION_URL")?;
    let evaluation = channel(&config.evaluation_url, "PROMPTOPS_EVALUATION_URL")?;
    let billing = channel(&config.billing_url, "PROMPTOPS_BILLING_URL")?;
    let readiness = upstream_check(
        upstream_check(
            upstream_check(
                upstream_check(resources.readiness(), "prompts", prompts.clone()),
                "execution",
                execution.clone(),
            ),
            "audit",
            audit.clone(),
        ),
        "evaluation",
        evaluation.clone(),
    );

    let http_listener = bind(config.http_addr).await?;
    let grpc_listener = bind(config.grpc_addr).await?;
    tracing::info!(http = %config.http_addr, grpc = %config.grpc_addr, "gateway listening");

    let identity =
        identity::service::Identity::open(resources.log.clone(), resources.db.clone(), config.tokens.clone())
            .await
            .map_err(|e| RunError::Other(e.to_string()))?;
    let projections = TaskTracker::new();
    projections.spawn(
        ProjectionRunner::new(
            resources.log.clone(),
            resources.db.clone(),
            std::sync::Arc::new(identity::store::IdentityProjection),
            Context::Identity,
        )
        .run(shutdown.clone()),
    );
    {
        // Revoked sessions and changed API keys, from every replica.
        let identity = identity.clone();
        let log = resources.log.clone();
        let stop = shutdown.clone();
        projections.spawn(async move { identity.follow_revocations(log, stop).await });
    }
    {
        // Signing-key rotation: check, create when due, reload (replicas converge).
        let identity = identity.clone();
        let stop = shutdown.clone();
        projections.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(identity.key_check_interval()) => {}
                }
                if let Err(err) = identity.rotate_keys_if_due().await {
                    tracing::warn!(error = %err, "signing-key check failed");
                }
            }
        });
    }
    projections.close();
    if let Err(err) = identity.initialise(&config.init).await {
        shutdown.cancel();
        projections.wait().await;
        return Err(RunError::Other(format!(
            "headless initialisation (PROMPTOPS_INIT_*): {err}"
        )));
    }
    if config.init.is_empty() {
        tracing::info!(
            "to start, sign up: curl -X POST http://{}/api/v1/auth/signup -H 'content-type: application/json' -d '{{\"email\": \"you@example.com\", \"password\": \"a long passphrase\"}}'",
            config.http_addr
        );
    }

    let background = TaskTracker::new();
    let state = http::AppState {
        identity,
        limiter: std::sync::Arc::new(http::limits::Limiter::new(config.rate_limits)),
        prompts: PromptServiceClient::new(prompts),
        execution: ExecutionServiceClient::new(execution),
        audit: AuditServiceClient::new(audit.clone()),
        analytics: AnalyticsServiceClient::new(audit),
        billing: BillingServiceClient::new(billing),
        evaluation: EvaluationServiceClient::new(evaluation)
            .max_decoding_message_size(promptops_proto::MAX_LARGE_MESSAGE_BYTES)
            .max_encoding_message_size(promptops_proto::MAX_LARGE_MESSAGE_BYTES),
        background: background.clone(),
        max_body_bytes: config.max_body_bytes,
        max_upload_bytes: config.max_upload_bytes,
    };
    let router = http::router(state.clone(), readiness.clone());
    let grpc = GrpcService {
        name: SERVICE,
        routes: tonic::service::Routes::new(IdentityServiceServer::new(identity::grpc::IdentityApi::new(
            state.identity.clone(),
        ))),
        grpc_names: vec![IDENTITY_SERVICE_NAME],
        readiness,
    };
    let grace = config.common.shutdown_grace;
    let (http_result, grpc_result) = tokio::join!(
        serve(http_listener, router, shutdown.clone(), grace),
        serve_grpc(grpc_listener, grpc, shutdown.clone(), grace),
    );
    // Mutations started before shutdown finish before the process exits.
    background.close();
    if tokio::time::timeout(grace, background.wait()).await.is_err() {
        tracing::warn!("mutations still running at the drain deadline");
    }
    shutdown.cancel();
    projections.wait().await;
    http_result?;
    grpc_result?;
    Ok(())
}
