//! `BillingService` over gRPC, scoped to the caller's org: the price book,
//! projects, budgets, the ledger, reconciliation, reports and alerts.

use std::time::Duration;

use promptops_account::account::{self, Account, AccountCommand, AccountError, AccountState};
use promptops_account::budget;
use promptops_account::prices::{self, SEED, SEED_EFFECTIVE_FROM_MS};
use promptops_auth::roles::Permission;
use promptops_eventlog::aggregate::{ExecuteError, execute, load};
use promptops_eventlog::{AggregateRef, Context, EventLog};
use promptops_platform::authn::Authenticator;
use promptops_platform::caller::Caller;
use promptops_platform::db::unix_ms;
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, ms_from_timestamp, page_size, split_page, timestamp_from_ms};
use promptops_platform::read_your_write::position;
use promptops_proto::billing::v1::billing_service_server::BillingService;
use promptops_proto::billing::v1::{
    Alert, Budget, BudgetScope, BudgetStatus, GetUsageReportRequest, ListAlertsRequest, ListAlertsResponse,
    ListBudgetsRequest, ListBudgetsResponse, ListLedgerLinesRequest, ListLedgerLinesResponse,
    ListPricesRequest, ListPricesResponse, ListProjectsRequest, ListProjectsResponse, PriceEntry, Project,
    ReconcileRequest, ReconcileResponse, RemoveBudgetRequest, RemoveBudgetResponse, RemoveProjectRequest,
    RemoveProjectResponse, SetPriceRequest, UsageGrouping, UsageReport,
};
use sqlx::AnyPool;
use tonic::{Request, Response, Status};

use crate::ledger::{self, LINE_COLUMNS, LineRow};
use crate::{reconcile, report};

type Result<T> = std::result::Result<T, Status>;

/// The longest range a report or reconciliation covers.
const MAX_RANGE_MS: i64 = 400 * 86_400_000;

#[derive(Debug, Clone)]
pub struct BillingApi {
    log: EventLog,
    db: AnyPool,
    auth: Authenticator,
}

impl BillingApi {
    pub fn new(log: EventLog, db: AnyPool, auth: Authenticator) -> Self {
        Self { log, db, auth }
    }

    async fn caller<T>(&self, request: &Request<T>, permission: Permission) -> Result<Caller> {
        Ok(self.auth.authorize(request.metadata(), permission).await?.0)
    }

    fn aggregate(org_id: &str) -> std::result::Result<AggregateRef, ServiceError> {
        AggregateRef::new(
            Context::Billing,
            org_id,
            account::AGGREGATE_TYPE,
            account::AGGREGATE_ID,
        )
        .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))
    }

    async fn account(&self, org_id: &str) -> std::result::Result<AccountState, ServiceError> {
        Ok(load::<Account>(&self.log, &Self::aggregate(org_id)?)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?
            .state)
    }

    async fn run(
        &self,
        caller: &Caller,
        command: AccountCommand,
    ) -> std::result::Result<(AccountState, u64), ServiceError> {
        let done = execute::<Account>(
            &self.log,
            &Self::aggregate(&caller.org_id)?,
            command,
            &caller.event_metadata(),
        )
        .await
        .map_err(account_error)?;
        Ok((done.state, done.last_sequence))
    }

    /// The keys the org does not have, after giving the directory a moment
    /// to catch up with the identity stream (a key created just now).
    async fn unknown_keys(
        &self,
        org_id: &str,
        keys: &[String],
    ) -> std::result::Result<Vec<String>, ServiceError> {
        let db_error = |e| ServiceError::unavailable("the billing database", e);
        let mut unknown = Vec::new();
        for key in keys {
            if !ledger::key_exists(&self.db, org_id, key)
                .await
                .map_err(db_error)?
            {
                unknown.push(key.clone());
            }
        }
        if unknown.is_empty() {
            return Ok(unknown);
        }
        let end = self
            .log
            .last_sequence(Context::Identity)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        promptops_eventlog::projection::wait_for_position(
            &self.db,
            ledger::DIRECTORY,
            Context::Identity,
            end,
            Duration::from_secs(3),
        )
        .await
        .map_err(db_error)?;
        let mut still = Vec::new();
        for key in unknown {
            if !ledger::key_exists(&self.db, org_id, &key)
                .await
                .map_err(db_error)?
            {
                still.push(key);
            }
        }
        Ok(still)
    }

    async fn status(
        &self,
        org_id: &str,
        set: &promptops_proto::billing::v1::BudgetSet,
        now: i64,
    ) -> std::result::Result<BudgetStatus, ServiceError> {
        let b = set.budget.clone().unwrap_or_default();
        let start = budget::period_start_ms(b.period(), now);
        let keys = scope_keys(&self.db, org_id, &b)
            .await
            .map_err(|e| ServiceError::unavailable("the billing database", e))?;
        // The ledger holds the whole period, before the budget was set too.
        let used = ledger::used(&self.db, org_id, b.metric(), keys.as_deref(), start)
            .await
            .map_err(|e| ServiceError::unavailable("the ledger", e))?;
        Ok(BudgetStatus {
            budget: Some(b),
            period_start: Some(timestamp_from_ms(start)),
            used,
            position: None,
        })
    }
}

/// The API keys a budget's scope covers: `None` for the whole org.
pub async fn scope_keys(
    db: &AnyPool,
    org_id: &str,
    b: &Budget,
) -> std::result::Result<Option<Vec<String>>, sqlx::Error> {
    Ok(match b.scope() {
        BudgetScope::ApiKey => Some(vec![b.target.clone()]),
        BudgetScope::Project => Some(ledger::project_keys(db, org_id, &b.target).await?),
        _ => None,
    })
}

fn account_error(err: ExecuteError<AccountError>) -> ServiceError {
    match err {
        ExecuteError::Domain(AccountError::Invalid(v)) => ServiceError::invalid(v),
        ExecuteError::Domain(AccountError::NotFound(m)) => ServiceError::new(ErrorClass::NotFound, m),
        ExecuteError::Domain(AccountError::Conflict(m)) => ServiceError::new(ErrorClass::Conflict, m),
        ExecuteError::Conflict => {
            ServiceError::new(ErrorClass::Conflict, "the account kept changing; try again")
        }
        ExecuteError::Store(e) => ServiceError::unavailable("the event log", e),
        ExecuteError::Invalid(m) => ServiceError::new(ErrorClass::Internal, m),
    }
}

/// `[from, to)` in ms: both required unless `default_days` gives a default
/// (the last N days to now); `to` after `from`; at most 400 days.
pub fn range(
    from: Option<&prost_types::Timestamp>,
    to: Option<&prost_types::Timestamp>,
    default_days: Option<i64>,
) -> std::result::Result<(i64, i64), ServiceError> {
    let now = unix_ms();
    let mut problems = Vec::new();
    let to_ms = match (to, default_days) {
        (Some(t), _) => ms_from_timestamp(Some(t)),
        (None, Some(_)) => now + 1,
        (None, None) => {
            problems.push(FieldViolation::new("to", "is required"));
            0
        }
    };
    let from_ms = match (from, default_days) {
        (Some(f), _) => ms_from_timestamp(Some(f)),
        (None, Some(days)) => to_ms - days * 86_400_000,
        (None, None) => {
            problems.push(FieldViolation::new("from", "is required"));
            0
        }
    };
    if problems.is_empty() && to_ms <= from_ms {
        problems.push(FieldViolation::new("to", "must be after `from`"));
    }
    if problems.is_empty() && to_ms - from_ms > MAX_RANGE_MS {
        problems.push(FieldViolation::new("to", "at most 400 days after `from`"));
    }
    if problems.is_empty() {
        Ok((from_ms, to_ms))
    } else {
        Err(ServiceError::invalid(problems))
    }
}

fn entry(
    model: &str,
    from_ms: i64,
    prices: promptops_proto::common::v1::TokenPrices,
    source: &str,
    current: bool,
) -> PriceEntry {
    PriceEntry {
        model: model.to_owned(),
        effective_from: Some(timestamp_from_ms(from_ms)),
        prices: Some(prices),
        source: source.to_owned(),
        current,
    }
}

/// The price book as entries: per model, the seed and the org's own, each
/// marked current when it is the one in force at `at_ms`.
pub fn price_entries(state: &AccountState, model: Option<&str>, at_ms: i64) -> Vec<PriceEntry> {
    let mut models: std::collections::BTreeSet<&str> = SEED.iter().map(|(id, _)| *id).collect();
    models.extend(state.prices.entries.keys().map(String::as_str));
    let mut out = Vec::new();
    for id in models.into_iter().filter(|id| model.is_none_or(|m| m == *id)) {
        let own_current = state
            .prices
            .entries
            .get(id)
            .and_then(|by_time| by_time.range(..=at_ms).next_back().map(|(from, _)| *from));
        if let Some(seed) = prices::seed(id) {
            out.push(entry(
                id,
                SEED_EFFECTIVE_FROM_MS,
                seed,
                "seed",
                own_current.is_none() && at_ms >= SEED_EFFECTIVE_FROM_MS,
            ));
        }
        for (from, p) in state.prices.entries.get(id).into_iter().flatten() {
            out.push(entry(id, *from, *p, "org", own_current == Some(*from)));
        }
    }
    out
}

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn list_prices(&self, request: Request<ListPricesRequest>) -> Result<Response<ListPricesResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let at = req
            .at
            .as_ref()
            .map_or_else(unix_ms, |t| ms_from_timestamp(Some(t)));
        let state = self.account(&caller.org_id).await?;
        let model = Some(req.model.as_str()).filter(|m| !m.is_empty());
        let entries = price_entries(&state, model, at);
        if entries.is_empty() && model.is_some() {
            return Err(
                ServiceError::new(ErrorClass::NotFound, format!("no price for {:?}", req.model)).into(),
            );
        }
        Ok(Response::new(ListPricesResponse { entries }))
    }

    async fn set_price(&self, request: Request<SetPriceRequest>) -> Result<Response<PriceEntry>> {
        let caller = self.caller(&request, Permission::ManageSettings).await?;
        let req = request.into_inner();
        let now = unix_ms();
        let (state, _) = self
            .run(
                &caller,
                AccountCommand::SetPrice {
                    model: req.model.clone(),
                    effective_from_ms: req.effective_from.as_ref().map(|t| ms_from_timestamp(Some(t))),
                    prices: req.prices,
                    now_ms: now,
                },
            )
            .await?;
        let from = state.prices.newest_from(&req.model).unwrap_or(now);
        let p = state.prices.own_at(&req.model, from).copied().unwrap_or_default();
        Ok(Response::new(entry(&req.model, from, p, "org", from <= now)))
    }

    async fn list_projects(
        &self,
        request: Request<ListProjectsRequest>,
    ) -> Result<Response<ListProjectsResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let state = self.account(&caller.org_id).await?;
        let projects = state
            .projects
            .into_iter()
            .map(|(name, api_keys)| Project { name, api_keys })
            .collect();
        Ok(Response::new(ListProjectsResponse { projects }))
    }

    async fn set_project(&self, request: Request<Project>) -> Result<Response<Project>> {
        let caller = self.caller(&request, Permission::ManageSettings).await?;
        let req = request.into_inner();
        let unknown_keys = self.unknown_keys(&caller.org_id, &req.api_keys).await?;
        let (state, _) = self
            .run(
                &caller,
                AccountCommand::SetProject {
                    name: req.name.clone(),
                    api_keys: req.api_keys,
                    unknown_keys,
                },
            )
            .await?;
        let api_keys = state.projects.get(&req.name).cloned().unwrap_or_default();
        Ok(Response::new(Project {
            name: req.name,
            api_keys,
        }))
    }

    async fn remove_project(
        &self,
        request: Request<RemoveProjectRequest>,
    ) -> Result<Response<RemoveProjectResponse>> {
        let caller = self.caller(&request, Permission::ManageSettings).await?;
        let name = request.into_inner().name;
        self.run(&caller, AccountCommand::RemoveProject(name)).await?;
        Ok(Response::new(RemoveProjectResponse {}))
    }

    async fn list_budgets(
        &self,
        request: Request<ListBudgetsRequest>,
    ) -> Result<Response<ListBudgetsResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let state = self.account(&caller.org_id).await?;
        let now = unix_ms();
        let mut budgets = Vec::with_capacity(state.budgets.len());
        for set in state.budgets.values() {
            budgets.push(self.status(&caller.org_id, set, now).await?);
        }
        Ok(Response::new(ListBudgetsResponse { budgets }))
    }

    async fn set_budget(&self, request: Request<Budget>) -> Result<Response<BudgetStatus>> {
        let caller = self.caller(&request, Permission::ManageSettings).await?;
        let budget = request.into_inner();
        let target_exists = budget.scope() != BudgetScope::ApiKey
            || budget.target.is_empty()
            || self
                .unknown_keys(&caller.org_id, std::slice::from_ref(&budget.target))
                .await?
                .is_empty();
        // What the period used before the budget existed counts against it.
        let now = unix_ms();
        let start = budget::period_start_ms(budget.period(), now);
        let baseline_used = if budget::violations(&budget).is_empty() {
            let keys = scope_keys(&self.db, &caller.org_id, &budget)
                .await
                .map_err(|e| ServiceError::unavailable("the billing database", e))?;
            ledger::used(&self.db, &caller.org_id, budget.metric(), keys.as_deref(), start)
                .await
                .map_err(|e| ServiceError::unavailable("the ledger", e))?
        } else {
            0
        };
        let id = budget.id.clone();
        let (state, at) = self
            .run(
                &caller,
                AccountCommand::SetBudget {
                    budget,
                    target_exists,
                    baseline_period_start_ms: start,
                    baseline_used,
                },
            )
            .await?;
        let set = state
            .budgets
            .get(&id)
            .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "the budget just set is missing"))?;
        let mut status = self.status(&caller.org_id, set, now).await?;
        status.position = Some(position(Context::Billing, at));
        Ok(Response::new(status))
    }

    async fn remove_budget(
        &self,
        request: Request<RemoveBudgetRequest>,
    ) -> Result<Response<RemoveBudgetResponse>> {
        let caller = self.caller(&request, Permission::ManageSettings).await?;
        let id = request.into_inner().id;
        self.run(&caller, AccountCommand::RemoveBudget(id)).await?;
        Ok(Response::new(RemoveBudgetResponse {}))
    }

    async fn list_ledger_lines(
        &self,
        request: Request<ListLedgerLinesRequest>,
    ) -> Result<Response<ListLedgerLinesResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let (from_ms, to_ms) = range(req.from.as_ref(), req.to.as_ref(), Some(30))?;
        let page = req.page.unwrap_or_default();
        let size = page_size(page.page_size);
        let cursor = Cursor::decode(&page.page_token, "page.page_token")?;
        let (before_ms, before_id) = cursor.map_or((to_ms, String::new()), |c| (c.time_ms, c.id));
        let rows: Vec<LineRow> = sqlx::query_as(&format!(
            "SELECT {LINE_COLUMNS} FROM ledger_lines
             WHERE org_id = $1 AND status <> 'running' AND ended_at_ms >= $2
               AND (ended_at_ms < $3 OR (ended_at_ms = $3 AND run_id < $4))
             ORDER BY ended_at_ms DESC, run_id DESC LIMIT $5"
        ))
        .bind(&caller.org_id)
        .bind(from_ms)
        .bind(before_ms)
        .bind(&before_id)
        .bind(i64::from(size) + 1)
        .fetch_all(&self.db)
        .await
        .map_err(|e| ServiceError::unavailable("the ledger", e))?;
        let (rows, next) = split_page(rows, size, |r| Cursor {
            time_ms: r.ended_at_ms,
            id: r.run_id.clone(),
        });
        Ok(Response::new(ListLedgerLinesResponse {
            lines: rows.into_iter().map(LineRow::into_message).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn reconcile(&self, request: Request<ReconcileRequest>) -> Result<Response<ReconcileResponse>> {
        let caller = self.caller(&request, Permission::ReadAudit).await?;
        let req = request.into_inner();
        let (from_ms, to_ms) = range(req.from.as_ref(), req.to.as_ref(), None)?;
        let report = reconcile::reconcile(
            &self.log,
            &self.db,
            &caller.org_id,
            from_ms,
            to_ms,
            Duration::from_secs(10),
        )
        .await
        .map_err(|e| ServiceError::unavailable("reconciliation", e))?
        .ok_or_else(|| {
            ServiceError::new(
                ErrorClass::Unavailable,
                "the ledger has not caught up with the log within 10 s; try again",
            )
        })?;
        metrics::counter!("promptops_billing_reconciliations_total", "reconciled" => report.reconciled.to_string())
            .increment(1);
        Ok(Response::new(report))
    }

    async fn get_usage_report(
        &self,
        request: Request<GetUsageReportRequest>,
    ) -> Result<Response<UsageReport>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let (from_ms, to_ms) = range(req.from.as_ref(), req.to.as_ref(), None)?;
        let grouping = UsageGrouping::try_from(req.group_by).unwrap_or(UsageGrouping::Unspecified);
        let projects = if grouping == UsageGrouping::Project {
            self.account(&caller.org_id).await?.projects
        } else {
            Default::default()
        };
        let report = report::usage_report(
            &self.db,
            &caller.org_id,
            from_ms,
            to_ms,
            grouping,
            &projects,
            unix_ms(),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the ledger", e))?;
        Ok(Response::new(report))
    }

    async fn list_alerts(&self, request: Request<ListAlertsRequest>) -> Result<Response<ListAlertsResponse>> {
        let caller = self.caller(&request, Permission::Read).await?;
        let limit = match request.into_inner().limit {
            0 => 50,
            n => n.min(200),
        };
        let rows: Vec<(String, i64, String, i64, String, String)> = sqlx::query_as(
            "SELECT kind, raised_at_ms, budget_id, percent, day, message FROM billing_alerts
             WHERE org_id = $1 ORDER BY raised_at_ms DESC, alert_id DESC LIMIT $2",
        )
        .bind(&caller.org_id)
        .bind(i64::from(limit))
        .fetch_all(&self.db)
        .await
        .map_err(|e| ServiceError::unavailable("the billing database", e))?;
        let alerts = rows
            .into_iter()
            .map(|(kind, at, budget_id, percent, day, message)| Alert {
                kind,
                raised_at: Some(timestamp_from_ms(at)),
                budget_id,
                percent: u32::try_from(percent).unwrap_or(0),
                day,
                message,
            })
            .collect();
        Ok(Response::new(ListAlertsResponse { alerts }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_price_book_lists_seed_and_own_entries_marking_the_current_one() {
        let mut state = AccountState::default();
        state
            .prices
            .entries
            .entry("mock/echo".into())
            .or_default()
            .insert(2_000_000_000_000, prices::prices([9, 9, 9, 0]));
        let before = price_entries(&state, Some("mock/echo"), 1_900_000_000_000);
        assert_eq!(before.len(), 2);
        assert!(before[0].current && before[0].source == "seed");
        assert!(!before[1].current);
        let after = price_entries(&state, Some("mock/echo"), 2_000_000_000_000);
        assert!(!after[0].current && after[1].current);
        assert!(price_entries(&state, None, 0).len() >= SEED.len());
    }

    #[test]
    fn ranges_are_checked_and_named() {
        assert!(range(None, None, None).is_err());
        let t = |s| prost_types::Timestamp { seconds: s, nanos: 0 };
        assert!(range(Some(&t(10)), Some(&t(5)), None).is_err());
        assert!(range(Some(&t(0)), Some(&t(401 * 86_400)), None).is_err());
        assert_eq!(range(Some(&t(1)), Some(&t(2)), None).unwrap(), (1000, 2000));
        assert!(range(None, None, Some(30)).is_ok());
    }
}
