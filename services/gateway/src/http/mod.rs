//! The gateway's HTTP API.
//!
//! Routes are registered through `utoipa_axum`, which records each handler's
//! OpenAPI operation as it mounts it, so `/openapi.json` is generated from the
//! same code that routes and cannot drift.
//!
//! Every other GET outside `/api/`, `/v1/` and `/.well-known/` is the web
//! console (`promptops-console`): its files, or its app for a client route.
//!
//! Routes without authentication: `/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`, `/.well-known/jwks.json`, `/api/v1/auth/{signup,login,
//! refresh,logout,setup}`. Every other handler takes `Authenticated`.

mod analytics;
mod api;
mod audit;
mod auth;
mod authn;
mod billing;
mod conversations;
mod evaluation;
mod execution;
mod extract;
mod keys;
pub mod limits;
mod members;
pub mod model;
mod openai;
mod prompts;

use axum::Json;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use promptops_platform::caller::Origin;
use promptops_platform::errors::{ErrorClass, Problem, ServiceError};
use promptops_platform::server::{Readiness, observed, ops_router};
use promptops_platform::upstream::Upstream;
use promptops_proto::audit::v1::analytics_service_client::AnalyticsServiceClient;
use promptops_proto::audit::v1::audit_service_client::AuditServiceClient;
use promptops_proto::billing::v1::billing_service_client::BillingServiceClient;
use promptops_proto::evaluation::v1::evaluation_service_client::EvaluationServiceClient;
use promptops_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use tokio_util::task::TaskTracker;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub prompts: PromptServiceClient<Upstream>,
    pub execution: ExecutionServiceClient<Upstream>,
    pub audit: AuditServiceClient<Upstream>,
    pub analytics: AnalyticsServiceClient<Upstream>,
    pub evaluation: EvaluationServiceClient<Upstream>,
    pub billing: BillingServiceClient<Upstream>,
    /// Mutations run here so a client disconnect cannot cut them short.
    pub background: TaskTracker,
    /// The largest accepted request body (`PROMPTOPS_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// The largest data file uploaded as a body (`PROMPTOPS_MAX_UPLOAD_BYTES`).
    pub max_upload_bytes: usize,
    /// Accounts, sessions and signing keys.
    pub identity: crate::identity::service::Identity,
    /// Rate limits per key and per org.
    pub limiter: std::sync::Arc<limits::Limiter>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "promptops",
        description = "The promptops HTTP API: errors are problem JSON (RFC 9457).",
    ),
    components(schemas(Problem, promptops_platform::errors::FieldViolation)),
    tags(
        (name = "auth", description = "Accounts, sessions and tokens"),
        (name = "members", description = "Members, roles and invitations"),
        (name = "prompts", description = "The prompt registry"),
        (name = "execution", description = "Models and runs"),
        (name = "conversations", description = "Multi-turn threads"),
        (name = "evaluation", description = "Datasets and evaluation runs"),
        (name = "openai", description = "OpenAI-compatible endpoints for the official SDKs"),
        (name = "audit", description = "The audit trail: query, export, verify, compliance report"),
        (name = "analytics", description = "Dashboards over the org's runs"),
        (name = "billing", description = "Price book, usage ledger, budgets, reports"),
    )
)]
struct ApiDoc;

/// The API routes and their OpenAPI description.
pub fn api() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    OpenApiRouter::with_openapi(doc)
        .routes(routes!(prompts::create_prompt, prompts::list_prompts))
        .routes(routes!(prompts::get_prompt, prompts::update_prompt))
        .routes(routes!(prompts::create_version, prompts::list_versions))
        .routes(routes!(prompts::resolve))
        .routes(routes!(prompts::list_folders))
        .routes(routes!(prompts::move_label, prompts::remove_label))
        .routes(routes!(prompts::archive_prompt))
        .routes(routes!(prompts::restore_prompt))
        .routes(routes!(prompts::diff))
        .routes(routes!(prompts::render))
        .routes(routes!(prompts::export))
        .routes(routes!(prompts::import))
        .routes(routes!(prompts::watch))
        .routes(routes!(prompts::get_policy, prompts::set_policy))
        .routes(routes!(audit::list_audit_entries))
        .routes(routes!(audit::export_audit_entries))
        .routes(routes!(audit::verify_audit_trail))
        .routes(routes!(audit::compliance_report))
        .routes(routes!(audit::get_retention, audit::set_retention))
        .routes(routes!(billing::list_prices, billing::set_price))
        .routes(routes!(billing::list_projects))
        .routes(routes!(billing::set_project, billing::remove_project))
        .routes(routes!(billing::list_budgets))
        .routes(routes!(billing::set_budget, billing::remove_budget))
        .routes(routes!(billing::list_ledger))
        .routes(routes!(billing::reconcile))
        .routes(routes!(billing::usage_report))
        .routes(routes!(billing::list_alerts))
        .routes(routes!(analytics::kpis))
        .routes(routes!(analytics::time_series))
        .routes(routes!(analytics::top))
        .routes(routes!(analytics::compare))
        .routes(routes!(auth::signup))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::setup))
        .routes(routes!(auth::switch_org))
        .routes(routes!(auth::jwks))
        .routes(routes!(keys::create_api_key, keys::list_api_keys))
        .routes(routes!(keys::rotate_api_key))
        .routes(routes!(keys::revoke_api_key))
        .routes(routes!(keys::list_sessions))
        .routes(routes!(keys::revoke_session))
        .routes(routes!(members::list_members))
        .routes(routes!(members::change_role, members::remove_member))
        .routes(routes!(members::force_logout))
        .routes(routes!(members::grant, members::revoke_grant))
        .routes(routes!(members::list_grants))
        .routes(routes!(
            execution::list_models,
            execution::set_model,
            execution::remove_model
        ))
        .routes(routes!(execution::list_providers))
        .routes(routes!(execution::set_provider, execution::remove_provider))
        .routes(routes!(execution::execute))
        .routes(routes!(execution::compare))
        .routes(routes!(execution::list_runs))
        .routes(routes!(execution::get_run))
        .routes(routes!(
            conversations::create_conversation,
            conversations::list_conversations
        ))
        .routes(routes!(conversations::get_conversation))
        .routes(routes!(conversations::send_message))
        .routes(routes!(openai::chat_completions))
        .routes(routes!(openai::list_models))
        .routes(routes!(execution::embed))
        .routes(routes!(evaluation::create_dataset, evaluation::list_datasets))
        .routes(routes!(evaluation::get_dataset))
        .routes(routes!(evaluation::add_dataset_version))
        .routes(routes!(evaluation::add_version_from_runs))
        .routes(routes!(evaluation::list_cases))
        .routes(routes!(evaluation::export_dataset))
        .routes(routes!(evaluation::start_run, evaluation::list_runs))
        .routes(routes!(evaluation::get_run))
        .routes(routes!(evaluation::watch_run))
        .routes(routes!(evaluation::list_results))
        .routes(routes!(evaluation::cancel_run))
        .routes(routes!(evaluation::compare_runs))
        .routes(routes!(evaluation::score_history))
        .routes(routes!(members::invite))
        .routes(routes!(members::accept))
        .split_for_parts()
}

/// The whole HTTP router: API, OpenAPI document, ops routes, limits.
pub fn router(state: AppState, readiness: Readiness) -> axum::Router {
    let max_body_bytes = state.max_body_bytes;
    let (api, doc) = api();
    let doc = std::sync::Arc::new(doc);
    let app = api
        .with_state(state)
        .route(
            "/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .merge(ops_router(readiness))
        .fallback(console_or_not_found)
        .method_not_allowed_fallback(|| async {
            Problem {
                problem_type: "urn:promptops:problem:method-not-allowed".into(),
                title: "Method Not Allowed".into(),
                status: 405,
                detail: "this route does not accept that method".into(),
                errors: Vec::new(),
                budget: None,
            }
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(with_origin));
    observed(app, "gateway")
}

/// The web console for any other GET (its files, or the app for a client
/// route); problem JSON 404 under the API's own prefixes and for writes.
async fn console_or_not_found(
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let path = uri.path();
    let api_prefix = ["/api/", "/v1/", "/.well-known/"]
        .iter()
        .any(|prefix| path.starts_with(prefix))
        || path == "/api"
        || path == "/v1";
    if !api_prefix && let Some(page) = promptops_console::respond(&method, path, &headers) {
        return page;
    }
    ServiceError::new(ErrorClass::NotFound, "no such route").into_response()
}

/// Runs the request with its [`Origin`] (peer address, User-Agent), which
/// every call to a service passes on and the events it causes record.
async fn with_origin(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user_agent = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    Origin::new(&peer.ip().to_string(), user_agent)
        .scope(next.run(request))
        .await
}

#[cfg(test)]
mod openapi_tests {
    /// The console's typed client is generated from `web/src/api/openapi.json`.
    /// This fails when the API and that copy drift; to update the copy, run
    /// `PROMPTOPS_WRITE_OPENAPI=1 cargo nextest run --workspace -E 'test(checked_in_openapi)'`
    /// and then `npm run gen:api` in `web/`.
    #[test]
    fn the_checked_in_openapi_description_matches_the_api() {
        let (_, doc) = super::api();
        let served = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/src/api/openapi.json");
        if std::env::var_os("PROMPTOPS_WRITE_OPENAPI").is_some() {
            std::fs::write(&path, &served).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == served,
            "web/src/api/openapi.json differs from the API's description: regenerate it \
             (PROMPTOPS_WRITE_OPENAPI=1 cargo nextest run --workspace -E 'test(checked_in_openapi)'; cd web && npm run gen:api)"
        );
    }

    /// Generated clients name methods by operation id: two operations with
    /// one id would make one of them unreachable (or mistyped).
    #[test]
    fn every_operation_has_its_own_id() {
        let (_, doc) = super::api();
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in &doc.paths.paths {
            for (method, operation) in [
                ("get", &item.get),
                ("put", &item.put),
                ("post", &item.post),
                ("delete", &item.delete),
                ("patch", &item.patch),
            ] {
                let Some(operation) = operation else { continue };
                let id = operation.operation_id.clone().unwrap_or_default();
                if let Some(other) = seen.insert(id.clone(), format!("{method} {path}")) {
                    panic!("operation id {id} is used by {other} and {method} {path}");
                }
            }
        }
    }
}
