//! The evaluation service: datasets, metrics and evaluation runs.
//!
//! Owns the `EVT_EVALUATION` stream (`evt.evaluation.<org>.dataset.<id>`,
//! `….evaluation_run.<id>`) and the `evaluation` read model; serves
//! `promptops.evaluation.v1.EvaluationService`.
//!
//! - [`metrics`]: BLEU and ROUGE identical to sacrebleu and rouge-score;
//!   [`scoring`]: metrics and assertions per case, aggregates, comparisons;
//! - [`dataset`]: CSV / JSON Lines import and export of test cases;
//!   [`datasets`] and [`evaluation_run`]: the aggregates, pure;
//! - [`runner`]: runs every case through the execution service, resumable;
//! - [`read_model`]: lists of datasets and runs; [`grpc`]: the API.

pub mod dataset;
pub mod datasets;
pub mod evaluation_run;
pub mod grpc;
pub mod metrics;
pub mod read_model;
pub mod runner;
pub mod sandbox;
pub mod scoring;

use std::sync::Arc;

use promptops_eventlog::Context;
use promptops_eventlog::projection::ProjectionRunner;
use promptops_platform::authn::Authenticator;
use promptops_platform::config::{ConfigError, Env, ServiceConfig, ServiceName};
use promptops_platform::runtime::{RunError, open_resources};
use promptops_platform::server::{GrpcService, bind, serve_grpc};
use promptops_platform::upstream::Upstream;
use promptops_proto::evaluation::v1::evaluation_service_server::{EvaluationServiceServer, SERVICE_NAME};
use promptops_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const SERVICE: ServiceName = ServiceName::Evaluation;

#[derive(Debug, Clone)]
pub struct Config {
    pub service: ServiceConfig,
    /// Where the prompts service is (`PROMPTOPS_PROMPTS_URL`).
    pub prompts_url: String,
    /// Where the execution service is (`PROMPTOPS_EXECUTION_URL`).
    pub execution_url: String,
}

/// Reads the configuration from the environment.
pub fn config_from_env(env: &Env) -> Result<Config, ConfigError> {
    Ok(Config {
        service: ServiceConfig::from_env(SERVICE, env)?,
        prompts_url: ServiceName::Prompts.url(env)?,
        execution_url: ServiceName::Execution.url(env)?,
    })
}

fn channel(url: &str, what: &str) -> Result<Upstream, RunError> {
    Upstream::lazy(url, None).map_err(|e| RunError::Other(format!("{what} address: {e}")))
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let service = config.service;
    let resources = open_resources(&service.common, SERVICE, read_model::MIGRATIONS).await?;
    let listener = bind(service.grpc_addr).await?;
    tracing::info!(addr = %service.grpc_addr, "evaluation service listening");

    let auth = Authenticator::new(service.auth.clone()).map_err(|e| RunError::Other(e.to_string()))?;
    let background = TaskTracker::new();
    auth.start(resources.log.clone(), &background, shutdown.clone());
    background.spawn(
        ProjectionRunner::new(
            resources.log.clone(),
            resources.db.clone(),
            Arc::new(read_model::EvaluationProjection),
            Context::Evaluation,
        )
        .run(shutdown.clone()),
    );
    let execution = ExecutionServiceClient::new(channel(&config.execution_url, "execution")?);
    let runs = TaskTracker::new();
    let runner = runner::Runner::new(
        resources.log.clone(),
        execution.clone(),
        auth.clone(),
        runs.clone(),
        shutdown.clone(),
    );
    {
        let (runner, db) = (runner.clone(), resources.db.clone());
        background.spawn(async move { runner.resume_unfinished(&db).await });
    }
    background.close();

    let readiness = resources.readiness().with_authenticator(auth.clone());
    let api = grpc::EvaluationApi::new(
        resources.log.clone(),
        resources.db.clone(),
        auth,
        PromptServiceClient::new(channel(&config.prompts_url, "prompts")?),
        execution,
        runner,
        shutdown.clone(),
    );
    let server = EvaluationServiceServer::new(api)
        .max_decoding_message_size(promptops_proto::MAX_LARGE_MESSAGE_BYTES)
        .max_encoding_message_size(promptops_proto::MAX_LARGE_MESSAGE_BYTES);
    let grpc = GrpcService {
        name: SERVICE,
        routes: tonic::service::Routes::new(server),
        grpc_names: vec![SERVICE_NAME],
        readiness,
    };
    let served = serve_grpc(listener, grpc, shutdown.clone(), service.common.shutdown_grace).await;
    shutdown.cancel();
    runs.close();
    runs.wait().await;
    background.wait().await;
    served.map_err(RunError::from)
}
