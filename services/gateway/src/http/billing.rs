//! `/api/v1/billing/…`: the price book, projects, budgets, the usage
//! ledger, reconciliation, usage reports (JSON / CSV) and alerts.
//!
//! Money is exact: prices are integer micro-USD per 1M tokens, costs and
//! spend limits integer nano-USD, each shown beside as a decimal USD string.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{FieldViolation, Problem, ServiceError};
use promptops_proto::billing::v1::{
    Budget, BudgetMetric, BudgetPeriod, BudgetScope, BudgetStatus, GetUsageReportRequest, LedgerLine,
    ListAlertsRequest, ListBudgetsRequest, ListLedgerLinesRequest, ListPricesRequest, ListProjectsRequest,
    PriceEntry, Project, ReconcileRequest, ReconcileResponse, RemoveBudgetRequest, RemoveProjectRequest,
    SetPriceRequest, UsageGrouping, UsageReport, UsageRow,
};
use promptops_proto::common::v1::TokenPrices;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::page;
use super::audit::{parse_range, parse_time, unprefixed};
use super::authn::Authenticated;
use super::execution::usd_from_nano as usd;
use super::extract::{ApiJson, ApiQuery};
use super::model::{JSON_PROBLEMS, bad_request, format_position, rfc3339, upstream};

/// An exact decimal USD string (at most 9 decimals) as nano-USD.
pub fn parse_usd(field: &str, value: &str) -> Result<i64, FieldViolation> {
    let invalid = || {
        FieldViolation::new(
            field,
            "a decimal number of USD, e.g. \"25.00\" (at most 9 decimals)",
        )
    };
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if whole.is_empty() || fraction.len() > 9 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let fraction: i64 = format!("{fraction:0<9}").parse().map_err(|_| invalid())?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(invalid)
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PricesJson {
    /// Micro-USD per 1M input tokens (2500000 = 2.50 USD).
    #[serde(default)]
    pub input_per_mtok: i64,
    #[serde(default)]
    pub output_per_mtok: i64,
    /// Input read from the provider's prompt cache.
    #[serde(default)]
    pub cached_input_per_mtok: i64,
    /// Input written to the prompt cache (0: priced as input).
    #[serde(default)]
    pub cache_write_per_mtok: i64,
}

impl From<TokenPrices> for PricesJson {
    fn from(p: TokenPrices) -> Self {
        Self {
            input_per_mtok: p.input_per_mtok,
            output_per_mtok: p.output_per_mtok,
            cached_input_per_mtok: p.cached_input_per_mtok,
            cache_write_per_mtok: p.cache_write_per_mtok,
        }
    }
}

impl From<PricesJson> for TokenPrices {
    fn from(p: PricesJson) -> Self {
        Self {
            input_per_mtok: p.input_per_mtok,
            output_per_mtok: p.output_per_mtok,
            cached_input_per_mtok: p.cached_input_per_mtok,
            cache_write_per_mtok: p.cache_write_per_mtok,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceEntryJson {
    pub model: String,
    pub effective_from: String,
    pub prices: PricesJson,
    /// `seed` (the public list price shipped with promptops) or `org`.
    pub source: String,
    /// In force at the asked time.
    pub current: bool,
}

impl From<PriceEntry> for PriceEntryJson {
    fn from(e: PriceEntry) -> Self {
        Self {
            model: e.model,
            effective_from: rfc3339(e.effective_from.as_ref()),
            prices: e.prices.unwrap_or_default().into(),
            source: e.source,
            current: e.current,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceListJson {
    pub entries: Vec<PriceEntryJson>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PriceParams {
    /// One model, e.g. `openai/gpt-4o`.
    pub model: Option<String>,
    /// The time the `current` flags are for (RFC 3339; default now).
    pub at: Option<String>,
}

/// The price book: every model's seeded list price and your org's own
/// entries, with the one in force marked.
#[utoipa::path(get, path = "/api/v1/billing/prices", tag = "billing", params(PriceParams),
    responses(
        (status = 200, description = "The price book", body = PriceListJson),
        (status = 404, description = "No price for that model", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn list_prices(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<PriceParams>,
) -> Result<Json<PriceListJson>, ServiceError> {
    let at = parse_time("at", params.at.as_deref()).map_err(|v| ServiceError::invalid(vec![v]))?;
    let request = ListPricesRequest {
        model: params.model.unwrap_or_default(),
        at,
    };
    let listed = state
        .billing
        .clone()
        .list_prices(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(PriceListJson {
        entries: listed.entries.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPriceBody {
    pub model: String,
    /// RFC 3339; now when left out. Never in the past, and after the
    /// model's newest entry (effective dates do not overlap).
    pub effective_from: Option<String>,
    pub prices: PricesJson,
}

/// Schedule a price for a model: it applies from its time; runs before keep
/// the prices they ran at.
#[utoipa::path(post, path = "/api/v1/billing/prices", tag = "billing", request_body = SetPriceBody,
    responses(
        (status = 201, description = "Scheduled", body = PriceEntryJson),
        (status = 400, description = "Negative price, bad model or a time in the past (each named)", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "Needs settings:manage", body = Problem, content_type = JSON_PROBLEMS),
        (status = 409, description = "Overlaps the model's newest entry", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn set_price(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<SetPriceBody>,
) -> Result<(StatusCode, Json<PriceEntryJson>), ServiceError> {
    let effective_from = parse_time("effective_from", body.effective_from.as_deref())
        .map_err(|v| ServiceError::invalid(vec![v]))?;
    let request = SetPriceRequest {
        model: body.model,
        effective_from,
        prices: Some(body.prices.into()),
    };
    let entry = state
        .billing
        .clone()
        .set_price(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(entry.into())))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectBody {
    /// The API keys (ids) in the project; a key is in at most one.
    pub api_keys: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectJson {
    pub name: String,
    pub api_keys: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectListJson {
    pub projects: Vec<ProjectJson>,
}

/// Projects: named groups of API keys, for budgets and reports per team.
#[utoipa::path(get, path = "/api/v1/billing/projects", tag = "billing",
    responses((status = 200, description = "The projects", body = ProjectListJson)))]
pub async fn list_projects(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
) -> Result<Json<ProjectListJson>, ServiceError> {
    let listed = state
        .billing
        .clone()
        .list_projects(outgoing(&credential, ListProjectsRequest {}))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(ProjectListJson {
        projects: listed
            .projects
            .into_iter()
            .map(|p| ProjectJson {
                name: p.name,
                api_keys: p.api_keys,
            })
            .collect(),
    }))
}

/// Create or replace a project.
#[utoipa::path(put, path = "/api/v1/billing/projects/{name}", tag = "billing", request_body = ProjectBody,
    params(("name" = String, Path, description = "`[a-z0-9-]{1,64}`")),
    responses(
        (status = 200, description = "Set", body = ProjectJson),
        (status = 400, description = "Unknown keys or a key in another project (each named)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn set_project(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ProjectBody>,
) -> Result<Json<ProjectJson>, ServiceError> {
    let set = state
        .billing
        .clone()
        .set_project(outgoing(
            &credential,
            Project {
                name,
                api_keys: body.api_keys,
            },
        ))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(ProjectJson {
        name: set.name,
        api_keys: set.api_keys,
    }))
}

/// Remove a project (no budget may limit it).
#[utoipa::path(delete, path = "/api/v1/billing/projects/{name}", tag = "billing",
    params(("name" = String, Path, description = "The project")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such project", body = Problem, content_type = JSON_PROBLEMS),
        (status = 409, description = "A budget limits it", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn remove_project(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state
        .billing
        .clone()
        .remove_project(outgoing(&credential, RemoveProjectRequest { name }))
        .await
        .map_err(|s| upstream(&s))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetBody {
    pub name: String,
    /// `org`, `project` or `api_key`.
    pub scope: String,
    /// The project's name or the API key's id (not for `org`).
    #[serde(default)]
    pub target: String,
    /// `spend` (nano-USD), `requests` or `tokens` (input + output).
    pub metric: String,
    /// `day` or `month` (UTC).
    pub period: String,
    /// In the metric's unit; for spend, nano-USD. Or give `limit_usd`.
    pub limit: Option<i64>,
    /// Spend only: the limit as a decimal USD string, e.g. `"25.00"`.
    pub limit_usd: Option<String>,
    /// Refuse runs once reached (402 for spend, 429 for a quota); default true.
    #[serde(default = "yes")]
    pub hard: bool,
    /// Percentages that raise an alert; default [50, 80, 100].
    #[serde(default)]
    pub thresholds: Vec<u32>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetJson {
    pub id: String,
    pub name: String,
    pub scope: String,
    pub target: String,
    pub metric: String,
    pub period: String,
    pub limit: i64,
    pub hard: bool,
    pub thresholds: Vec<u32>,
    /// The current period's start.
    pub period_start: String,
    /// Settled use in the current period (from the ledger).
    pub used: i64,
    /// Spend budgets: `limit` and `used` in USD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_usd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_usd: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub position: String,
}

fn scope_name(s: BudgetScope) -> &'static str {
    match s {
        BudgetScope::Org => "org",
        BudgetScope::Project => "project",
        BudgetScope::ApiKey => "api_key",
        BudgetScope::Unspecified => "",
    }
}

fn metric_name(m: BudgetMetric) -> &'static str {
    match m {
        BudgetMetric::Spend => "spend",
        BudgetMetric::Requests => "requests",
        BudgetMetric::Tokens => "tokens",
        BudgetMetric::Unspecified => "",
    }
}

impl From<BudgetStatus> for BudgetJson {
    fn from(s: BudgetStatus) -> Self {
        let b = s.budget.unwrap_or_default();
        let spend = b.metric() == BudgetMetric::Spend;
        Self {
            scope: scope_name(b.scope()).into(),
            metric: metric_name(b.metric()).into(),
            period: match b.period() {
                BudgetPeriod::Day => "day",
                BudgetPeriod::Month => "month",
                BudgetPeriod::Unspecified => "",
            }
            .into(),
            limit_usd: spend.then(|| usd(b.limit)),
            used_usd: spend.then(|| usd(s.used)),
            id: b.id,
            name: b.name,
            target: b.target,
            limit: b.limit,
            hard: b.hard,
            thresholds: b.thresholds,
            period_start: rfc3339(s.period_start.as_ref()),
            used: s.used,
            position: s.position.as_ref().map(format_position).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BudgetListJson {
    pub budgets: Vec<BudgetJson>,
}

impl BudgetBody {
    fn into_budget(self, id: String) -> Result<Budget, ServiceError> {
        let mut problems = Vec::new();
        let scope = match self.scope.as_str() {
            "org" => BudgetScope::Org,
            "project" => BudgetScope::Project,
            "api_key" => BudgetScope::ApiKey,
            _ => {
                problems.push(FieldViolation::new("scope", "must be org, project or api_key"));
                BudgetScope::Unspecified
            }
        };
        let metric = match self.metric.as_str() {
            "spend" => BudgetMetric::Spend,
            "requests" => BudgetMetric::Requests,
            "tokens" => BudgetMetric::Tokens,
            _ => {
                problems.push(FieldViolation::new("metric", "must be spend, requests or tokens"));
                BudgetMetric::Unspecified
            }
        };
        let period = match self.period.as_str() {
            "day" => BudgetPeriod::Day,
            "month" => BudgetPeriod::Month,
            _ => {
                problems.push(FieldViolation::new("period", "must be day or month"));
                BudgetPeriod::Unspecified
            }
        };
        let limit = match (self.limit, self.limit_usd.as_deref()) {
            (Some(limit), None) => limit,
            (None, Some(text)) if metric == BudgetMetric::Spend => parse_usd("limit_usd", text)
                .unwrap_or_else(|v| {
                    problems.push(v);
                    0
                }),
            (None, Some(_)) => {
                problems.push(FieldViolation::new(
                    "limit_usd",
                    "is for spend budgets; give limit",
                ));
                0
            }
            (Some(_), Some(_)) => {
                problems.push(FieldViolation::new("limit", "give limit or limit_usd, not both"));
                0
            }
            (None, None) => {
                problems.push(FieldViolation::new(
                    "limit",
                    "is required (or limit_usd for spend)",
                ));
                0
            }
        };
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }
        Ok(Budget {
            id,
            name: self.name,
            scope: scope as i32,
            target: self.target,
            metric: metric as i32,
            period: period as i32,
            limit,
            hard: self.hard,
            thresholds: self.thresholds,
        })
    }
}

/// Budgets and quotas with their use in the current period.
#[utoipa::path(get, path = "/api/v1/billing/budgets", tag = "billing",
    responses((status = 200, description = "The budgets", body = BudgetListJson)))]
pub async fn list_budgets(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
) -> Result<Json<BudgetListJson>, ServiceError> {
    let listed = state
        .billing
        .clone()
        .list_budgets(outgoing(&credential, ListBudgetsRequest {}))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(BudgetListJson {
        budgets: listed.budgets.into_iter().map(Into::into).collect(),
    }))
}

/// Create or replace a budget or quota: spend, requests or tokens per day
/// or month, for the org, a project or an API key; hard ones refuse runs
/// before they start.
#[utoipa::path(put, path = "/api/v1/billing/budgets/{id}", tag = "billing", request_body = BudgetBody,
    params(("id" = String, Path, description = "`[a-z0-9-]{1,64}`")),
    responses(
        (status = 200, description = "Set", body = BudgetJson),
        (status = 400, description = "Invalid, or an unknown key or project (each named)", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "Needs settings:manage", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn set_budget(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BudgetBody>,
) -> Result<Json<BudgetJson>, ServiceError> {
    let budget = body.into_budget(id)?;
    let set = state
        .billing
        .clone()
        .set_budget(outgoing(&credential, budget))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(set.into()))
}

/// Remove a budget.
#[utoipa::path(delete, path = "/api/v1/billing/budgets/{id}", tag = "billing",
    params(("id" = String, Path, description = "The budget")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such budget", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn remove_budget(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state
        .billing
        .clone()
        .remove_budget(outgoing(&credential, RemoveBudgetRequest { id }))
        .await
        .map_err(|s| upstream(&s))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerLineJson {
    pub run_id: String,
    pub status: String,
    pub model: String,
    pub prompt_id: String,
    pub prompt_version: u64,
    pub user_id: String,
    pub api_key_id: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    /// The prices it ran at (absent for runs recorded before prices were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prices: Option<PricesJson>,
    pub cost_nano_usd: i64,
    pub cost_usd: String,
    pub estimated: bool,
    pub ended_at: String,
    pub event_id: String,
}

impl From<LedgerLine> for LedgerLineJson {
    fn from(l: LedgerLine) -> Self {
        Self {
            cost_usd: usd(l.cost_nano_usd),
            prices: l.prices.map(Into::into),
            ended_at: rfc3339(l.ended_at.as_ref()),
            run_id: l.run_id,
            status: l.status,
            model: l.model,
            prompt_id: l.prompt_id,
            prompt_version: l.prompt_version,
            user_id: l.user_id,
            api_key_id: l.api_key_id,
            input_tokens: l.input_tokens,
            output_tokens: l.output_tokens,
            cached_input_tokens: l.cached_input_tokens,
            cost_nano_usd: l.cost_nano_usd,
            estimated: l.estimated,
            event_id: l.event_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPageJson {
    pub lines: Vec<LedgerLineJson>,
    pub next_page_token: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LedgerParams {
    /// From (RFC 3339, inclusive; default 30 days before `to`).
    pub from: Option<String>,
    /// Before (RFC 3339, exclusive; default now).
    pub to: Option<String>,
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
}

/// The usage ledger: one line per finished run, newest first.
#[utoipa::path(get, path = "/api/v1/billing/ledger", tag = "billing", params(LedgerParams),
    responses(
        (status = 200, description = "A page of lines", body = LedgerPageJson),
        (status = 400, description = "Invalid parameters (each named)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn list_ledger(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<LedgerParams>,
) -> Result<Json<LedgerPageJson>, ServiceError> {
    let (from, to) =
        parse_range(params.from.as_deref(), params.to.as_deref()).map_err(ServiceError::invalid)?;
    let request = ListLedgerLinesRequest {
        from,
        to,
        page: Some(page(params.page_size, params.page_token)?),
    };
    let listed = state
        .billing
        .clone()
        .list_ledger_lines(outgoing(&credential, request))
        .await
        .map_err(|s| unprefixed(upstream(&s), &["page."]))?
        .into_inner();
    Ok(Json(LedgerPageJson {
        lines: listed.lines.into_iter().map(Into::into).collect(),
        next_page_token: listed.next_page_token,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReconcileParams {
    /// From (RFC 3339, inclusive), by the run's end.
    pub from: Option<String>,
    /// Before (RFC 3339, exclusive).
    pub to: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GapJson {
    pub run_id: String,
    /// `missing`, `extra`, `cost` or `price`.
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReconcileJson {
    pub reconciled: bool,
    pub terminal_runs: u64,
    pub ledger_lines: u64,
    pub runs_cost_nano_usd: i64,
    pub ledger_cost_nano_usd: i64,
    pub gaps: Vec<GapJson>,
    pub log_position: u64,
}

impl From<ReconcileResponse> for ReconcileJson {
    fn from(r: ReconcileResponse) -> Self {
        Self {
            reconciled: r.reconciled,
            terminal_runs: r.terminal_runs,
            ledger_lines: r.ledger_lines,
            runs_cost_nano_usd: r.runs_cost_nano_usd,
            ledger_cost_nano_usd: r.ledger_cost_nano_usd,
            gaps: r
                .gaps
                .into_iter()
                .map(|g| GapJson {
                    run_id: g.run_id,
                    kind: g.kind,
                    detail: g.detail,
                })
                .collect(),
            log_position: r.log_position,
        }
    }
}

/// Prove the ledger's lines equal the log's terminal runs for a range; any
/// gap is listed.
#[utoipa::path(get, path = "/api/v1/billing/reconcile", tag = "billing", params(ReconcileParams),
    responses(
        (status = 200, description = "The comparison (reconciled or not)", body = ReconcileJson),
        (status = 400, description = "Missing or invalid range", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "Needs audit:read", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn reconcile(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<ReconcileParams>,
) -> Result<Json<ReconcileJson>, ServiceError> {
    let (from, to) =
        parse_range(params.from.as_deref(), params.to.as_deref()).map_err(ServiceError::invalid)?;
    let report = state
        .billing
        .clone()
        .reconcile(outgoing(&credential, ReconcileRequest { from, to }))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(report.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    pub from: Option<String>,
    pub to: Option<String>,
    /// `day` (default), `model`, `prompt`, `api_key`, `user` or `project`.
    pub group_by: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageRowJson {
    pub key: String,
    pub runs: u64,
    pub failed_runs: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cost_nano_usd: i64,
    pub cost_usd: String,
}

impl From<UsageRow> for UsageRowJson {
    fn from(r: UsageRow) -> Self {
        Self {
            cost_usd: usd(r.cost_nano_usd),
            key: r.key,
            runs: r.runs,
            failed_runs: r.failed_runs,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cost_nano_usd: r.cost_nano_usd,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ForecastJson {
    pub month: String,
    pub month_to_date_usd: String,
    pub projected_month_end_usd: String,
    pub daily_rate_usd: String,
    pub trailing_days: u32,
    pub method: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReportJson {
    pub group_by: String,
    pub rows: Vec<UsageRowJson>,
    pub total: UsageRowJson,
    pub forecast: ForecastJson,
}

fn report_json(group_by: &str, r: UsageReport) -> UsageReportJson {
    let f = r.forecast.unwrap_or_default();
    UsageReportJson {
        group_by: group_by.to_owned(),
        rows: r.rows.into_iter().map(Into::into).collect(),
        total: r.total.unwrap_or_default().into(),
        forecast: ForecastJson {
            month: f.month,
            month_to_date_usd: usd(f.month_to_date_nano_usd),
            projected_month_end_usd: usd(f.projected_month_end_nano_usd),
            daily_rate_usd: usd(f.daily_rate_nano_usd),
            trailing_days: f.trailing_days,
            method: f.method,
        },
    }
}

fn report_csv(group_by: &str, r: &UsageReport) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        group_by,
        "runs",
        "failed_runs",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cost_nano_usd",
        "cost_usd",
    ]);
    for row in r.rows.iter().chain(r.total.as_ref()) {
        let _ = w.write_record([
            // The group's key is a tenant's name (a model, prompt, key or project).
            promptops_platform::spreadsheet::cell(&row.key).into_owned(),
            row.runs.to_string(),
            row.failed_runs.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            row.cached_input_tokens.to_string(),
            row.cost_nano_usd.to_string(),
            usd(row.cost_nano_usd),
        ]);
    }
    w.into_inner().unwrap_or_default()
}

/// Spend and usage for a range, grouped, with the month-end forecast; as
/// JSON or CSV (the rows and a `total` row).
#[utoipa::path(get, path = "/api/v1/billing/usage", tag = "billing", params(UsageParams),
    responses(
        (status = 200, description = "The report", body = UsageReportJson),
        (status = 400, description = "Invalid parameters (each named)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn usage_report(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Response, ServiceError> {
    let mut problems = Vec::new();
    let (from, to) = parse_range(params.from.as_deref(), params.to.as_deref()).unwrap_or_else(|p| {
        problems.extend(p);
        (None, None)
    });
    let group_by = params.group_by.as_deref().unwrap_or("day");
    let grouping = match group_by {
        "day" => UsageGrouping::Day,
        "model" => UsageGrouping::Model,
        "prompt" => UsageGrouping::Prompt,
        "api_key" => UsageGrouping::ApiKey,
        "user" => UsageGrouping::User,
        "project" => UsageGrouping::Project,
        _ => {
            problems.push(FieldViolation::new(
                "group_by",
                "must be day, model, prompt, api_key, user or project",
            ));
            UsageGrouping::Unspecified
        }
    };
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            problems.push(FieldViolation::new("format", "must be json or csv"));
            false
        }
    };
    if !problems.is_empty() {
        return Err(ServiceError::invalid(problems));
    }
    let request = GetUsageReportRequest {
        from,
        to,
        group_by: grouping as i32,
    };
    let report = state
        .billing
        .clone()
        .get_usage_report(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    if csv {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"usage-by-{group_by}.csv\""),
                ),
            ],
            report_csv(group_by, &report),
        )
            .into_response());
    }
    Ok(Json(report_json(group_by, report)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertParams {
    /// At most this many (default 50, at most 200).
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertJson {
    /// `budget.threshold` or `spend.anomaly`.
    pub kind: String,
    pub raised_at: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub budget_id: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub percent: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub day: String,
    pub message: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertListJson {
    pub alerts: Vec<AlertJson>,
}

/// Budget thresholds crossed and anomalous days of spend, newest first.
#[utoipa::path(get, path = "/api/v1/billing/alerts", tag = "billing", params(AlertParams),
    responses((status = 200, description = "The alerts", body = AlertListJson)))]
pub async fn list_alerts(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AlertParams>,
) -> Result<Json<AlertListJson>, ServiceError> {
    if params.limit.is_some_and(|l| l > 200) {
        return Err(bad_request("limit", "at most 200"));
    }
    let listed = state
        .billing
        .clone()
        .list_alerts(outgoing(
            &credential,
            ListAlertsRequest {
                limit: params.limit.unwrap_or(0),
            },
        ))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(AlertListJson {
        alerts: listed
            .alerts
            .into_iter()
            .map(|a| AlertJson {
                kind: a.kind,
                raised_at: rfc3339(a.raised_at.as_ref()),
                budget_id: a.budget_id,
                percent: a.percent,
                day: a.day,
                message: a.message,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_strings_are_exact_both_ways() {
        assert_eq!(usd(1_500), "0.000001500");
        assert_eq!(usd(25_000_000_000), "25.000000000");
        assert_eq!(usd(-1), "-0.000000001");
        assert_eq!(parse_usd("l", "25.00").unwrap(), 25_000_000_000);
        assert_eq!(parse_usd("l", "0.000000001").unwrap(), 1);
        assert_eq!(parse_usd("l", "3").unwrap(), 3_000_000_000);
        for bad in ["", "-1", "1.0000000001", "1e3", "1.2.3", ".5"] {
            assert!(parse_usd("l", bad).is_err(), "{bad}");
        }
    }
}
