//! What every service does at start and at exit, written once.
//!
//! [`open_resources`] opens the event log and the service's database;
//! [`main`] is the whole of each service binary's `main`: telemetry, then
//! configuration (an invalid value exits with code 64 and names the
//! variable), then the service until SIGINT / SIGTERM, then telemetry flush.

use std::future::Future;
use std::process::ExitCode;

use promptops_eventlog::{EventLog, StoreError};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::config::{CommonConfig, ConfigError, Env, ServiceName};
use crate::db::{DbError, Migration};
use crate::server::{Readiness, ServeError};

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    EventLog(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] DbError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("{0}")]
    Other(String),
}

/// The exit code for a configuration error (`EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// The exit code for a failure while running (`EX_SOFTWARE`).
pub const EXIT_FAILURE: u8 = 70;

/// A service's event log and database, opened and migrated.
#[derive(Debug, Clone)]
pub struct Resources {
    pub log: EventLog,
    pub db: AnyPool,
}

impl Resources {
    /// `/readyz` checks for both.
    pub fn readiness(&self) -> Readiness {
        let log = self.log.clone();
        let db = self.db.clone();
        Readiness::new()
            .with_check("eventlog", move || {
                let log = log.clone();
                async move { log.check_ready().await.map_err(|e| e.to_string()) }
            })
            .with_check("database", move || {
                let db = db.clone();
                async move { crate::db::ping(&db).await.map_err(|e| e.to_string()) }
            })
    }
}

pub async fn open_resources(
    common: &CommonConfig,
    service: ServiceName,
    migrations: &[Migration],
) -> Result<Resources, RunError> {
    let log = crate::eventlog::open(&common.event_log).await?;
    let db = crate::db::open(&common.database, service.as_str(), migrations).await?;
    tracing::info!(
        service = service.as_str(),
        eventlog = log.backend_name(),
        "resources open"
    );
    Ok(Resources { log, db })
}

/// The body of a service binary's `main`.
pub fn main<C, F, Fut>(service: ServiceName, parse: fn(&Env) -> Result<C, ConfigError>, run: F) -> ExitCode
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), RunError>>,
{
    let env = Env::from_process();
    // The runtime comes first: the OTLP exporter's gRPC channel is created
    // on it (and flushes through it at the end).
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("promptops-{service}: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let telemetry = match crate::telemetry::TelemetryConfig::from_env(&env, &format!("promptops-{service}")) {
        Ok(config) => config,
        Err(err) => return config_error(&err),
    };
    let guard = {
        let _entered = runtime.enter();
        match crate::telemetry::init(&telemetry) {
            Ok(guard) => guard,
            Err(err) => {
                eprintln!("promptops-{service}: cannot start telemetry: {err}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    };
    let config = match parse(&env) {
        Ok(config) => config,
        Err(err) => return config_error(&err),
    };
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = crate::shutdown::cancel_on_signal(shutdown.clone());
        let result = tokio::select! {
            result = run(config, shutdown.clone()) => result,
            () = async { signals.await; std::future::pending::<()>().await } => Ok(()),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                tracing::error!(error = %err, "promptops-{service} stopped");
                eprintln!("promptops-{service}: {err}");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    });
    // Last: flush telemetry while the runtime still runs, then stop it.
    drop(guard);
    drop(runtime);
    code
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("{err}");
    ExitCode::from(EXIT_CONFIG)
}

/// Runs a service that has no API of its own yet: it opens its event log and
/// database (so `/readyz` means something) and serves health, reflection and
/// metrics on its gRPC port until `shutdown`.
pub async fn run_without_api(
    config: &crate::config::ServiceConfig,
    migrations: &[Migration],
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let (service, grpc_addr, common) = (config.service, config.grpc_addr, &config.common);
    let resources = open_resources(common, service, migrations).await?;
    let listener = crate::server::bind(grpc_addr).await?;
    tracing::info!(addr = %grpc_addr, "{service} service listening");
    let grpc = crate::server::GrpcService {
        name: service,
        routes: tonic::service::Routes::default(),
        grpc_names: Vec::new(),
        readiness: resources.readiness(),
    };
    crate::server::serve_grpc(listener, grpc, shutdown, common.shutdown_grace).await?;
    Ok(())
}
