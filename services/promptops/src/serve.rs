//! `promptops serve [SERVICE]`.

use std::process::ExitCode;

use promptops_platform::config::{ConfigError, Env, ServiceName};
use promptops_platform::runtime::{self, EXIT_CONFIG, RunError};
use tokio_util::sync::CancellationToken;

/// Every service's configuration, read from one environment.
#[derive(Debug, Clone)]
struct AllConfig {
    gateway: promptops_gateway::Config,
    prompts: promptops_prompts::Config,
    execution: promptops_execution::Config,
    evaluation: promptops_evaluation::Config,
    billing: promptops_billing::Config,
    audit: promptops_audit::Config,
}

impl AllConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            gateway: promptops_gateway::Config::from_env(env)?,
            prompts: promptops_prompts::config_from_env(env)?,
            execution: promptops_execution::config_from_env(env)?,
            evaluation: promptops_evaluation::config_from_env(env)?,
            billing: promptops_billing::config_from_env(env)?,
            audit: promptops_audit::config_from_env(env)?,
        })
    }
}

pub fn main(service: Option<&str>) -> ExitCode {
    let Some(name) = service else {
        return runtime::main(ServiceName::Gateway, AllConfig::from_env, run_all);
    };
    match ServiceName::parse(name) {
        Some(ServiceName::Gateway) => runtime::main(
            ServiceName::Gateway,
            promptops_gateway::Config::from_env,
            promptops_gateway::run,
        ),
        Some(ServiceName::Prompts) => runtime::main(
            ServiceName::Prompts,
            promptops_prompts::config_from_env,
            promptops_prompts::run,
        ),
        Some(ServiceName::Execution) => runtime::main(
            ServiceName::Execution,
            promptops_execution::config_from_env,
            promptops_execution::run,
        ),
        Some(ServiceName::Evaluation) => runtime::main(
            ServiceName::Evaluation,
            promptops_evaluation::config_from_env,
            promptops_evaluation::run,
        ),
        Some(ServiceName::Billing) => runtime::main(
            ServiceName::Billing,
            promptops_billing::config_from_env,
            promptops_billing::run,
        ),
        Some(ServiceName::Audit) => runtime::main(
            ServiceName::Audit,
            promptops_audit::config_from_env,
            promptops_audit::run,
        ),
        None => {
            eprintln!(
                "unknown service {name:?}: expected one of {}",
                ServiceName::ALL.map(ServiceName::as_str).join(", ")
            );
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// All six services in this process. If one stops with an error the others
/// are shut down too and the error is reported.
async fn run_all(config: AllConfig, shutdown: CancellationToken) -> Result<(), RunError> {
    let http = config.gateway.http_addr;
    let backend = match &config.gateway.common.event_log {
        promptops_platform::config::EventLogConfig::JetStream { .. } => "NATS JetStream",
        promptops_platform::config::EventLogConfig::Embedded { .. } => "the embedded event log",
    };
    tracing::info!(%http, "promptops starting all services on {backend}");
    let stop_all = |result: Result<(), RunError>| {
        if result.is_err() {
            shutdown.cancel();
        }
        result
    };
    let started = async {
        // Announce once every port is bound and answering.
        let url = format!("http://{http}/readyz");
        for _ in 0..100 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status().is_success()) {
                if promptops_console::is_built() {
                    tracing::info!(
                        "promptops is ready: open the console at http://{http}/ (API description at /openapi.json)"
                    );
                } else {
                    tracing::info!(
                        "promptops is ready: http://{http} (API description at /openapi.json; the console was not built: Node.js and npm are needed)"
                    );
                }
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    let (gateway, prompts, execution, evaluation, billing, audit, ()) = tokio::join!(
        async { stop_all(promptops_gateway::run(config.gateway, shutdown.clone()).await) },
        async { stop_all(promptops_prompts::run(config.prompts, shutdown.clone()).await) },
        async { stop_all(promptops_execution::run(config.execution, shutdown.clone()).await) },
        async { stop_all(promptops_evaluation::run(config.evaluation, shutdown.clone()).await) },
        async { stop_all(promptops_billing::run(config.billing, shutdown.clone()).await) },
        async { stop_all(promptops_audit::run(config.audit, shutdown.clone()).await) },
        async {
            tokio::select! {
                () = started => {}
                () = shutdown.cancelled() => {}
            }
        },
    );
    gateway?;
    prompts?;
    execution?;
    evaluation?;
    billing?;
    audit?;
    Ok(())
}
