//! `promptops.evaluation.v1.EvaluationService`: datasets and evaluation runs.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use promptops_auth::roles::Permission;
use promptops_eventlog::aggregate::{self, ExecuteError, Loaded};
use promptops_eventlog::{AggregateRef, Context, EventLog};
use promptops_platform::authn::Authenticator;
use promptops_platform::caller::{Caller, outgoing};
use promptops_platform::db::unix_ms;
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, page_size, timestamp_from_ms};
use promptops_platform::read_your_write;
use promptops_platform::upstream::Upstream;
use promptops_proto::common::v1::PageRequest;
use promptops_proto::evaluation::v1::evaluation_service_server::EvaluationService;
use promptops_proto::evaluation::v1::{
    AddDatasetVersionFromRunsRequest, AddDatasetVersionRequest, CancelEvaluationRunRequest, CaseResult,
    CompareEvaluationRunsRequest, CreateDatasetRequest, Dataset, DatasetVersion, EvaluationComparison,
    EvaluationRun, EvaluationRunStarted, EvaluationRunStatus, ExportDatasetRequest, ExportDatasetResponse,
    GetDatasetRequest, GetEvaluationRunRequest, ListCaseResultsRequest, ListCaseResultsResponse,
    ListDatasetCasesRequest, ListDatasetCasesResponse, ListDatasetsRequest, ListDatasetsResponse,
    ListEvaluationRunsRequest, ListEvaluationRunsResponse, ListScoreHistoryRequest, ListScoreHistoryResponse,
    MetricSpec, ResolvedTarget, StartEvaluationRunRequest,
};
use promptops_proto::execution::v1::execution_service_client::ExecutionServiceClient;
use promptops_proto::execution::v1::{ListModelsRequest, ListRunsRequest, RunStatus};
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use promptops_proto::prompts::v1::{PromptRef, ResolvePromptRequest, ResolvedPrompt, template};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response};
use uuid::Uuid;

use crate::dataset::{self, Format};
use crate::datasets::{self, Dataset as DatasetAggregate, DatasetCommand, DatasetError};
use crate::evaluation_run::{self, EvaluationRun as RunAggregate, RunCommand, RunError, RunState};
use crate::read_model::{self, PROJECTION};
use crate::runner::{Runner, run_ref};
use crate::scoring::{self, CaseScore};

type Result<T> = std::result::Result<T, tonic::Status>;

fn evaluation_position(sequence: u64) -> promptops_proto::common::v1::LogPosition {
    read_your_write::position(Context::Evaluation, sequence)
}

/// Targets per run, at most.
pub const MAX_TARGETS: usize = 10;
/// Concurrency when not given, and at most.
pub const DEFAULT_CONCURRENCY: u32 = 8;
pub const MAX_CONCURRENCY: u32 = 64;
/// Runs taken into a dataset version by default, and at most.
const DEFAULT_RUNS_TAKEN: usize = 100;
const MAX_RUNS_TAKEN: usize = 10_000;
/// Rows named in one refusal for missing variables, at most.
const MAX_REPORTED_ROWS: usize = 1_000;

#[derive(Clone)]
pub struct EvaluationApi {
    log: EventLog,
    db: AnyPool,
    auth: Authenticator,
    prompts: PromptServiceClient<Upstream>,
    execution: ExecutionServiceClient<Upstream>,
    runner: Runner,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for EvaluationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvaluationApi").finish_non_exhaustive()
    }
}

fn check_uuid(field: &str, id: &str) -> std::result::Result<(), ServiceError> {
    if Uuid::parse_str(id).is_err() {
        return Err(ServiceError::invalid_field(field, "must be a UUID"));
    }
    Ok(())
}

fn dataset_error(err: ExecuteError<DatasetError>) -> ServiceError {
    match err {
        ExecuteError::Domain(e @ DatasetError::NotFound) => {
            ServiceError::new(ErrorClass::NotFound, e.to_string())
        }
        ExecuteError::Domain(e @ DatasetError::Exists) => {
            ServiceError::new(ErrorClass::AlreadyExists, e.to_string())
        }
        ExecuteError::Domain(e @ DatasetError::Full) => {
            ServiceError::new(ErrorClass::FailedPrecondition, e.to_string())
        }
        ExecuteError::Domain(e @ DatasetError::Empty) => {
            ServiceError::invalid_field("content", e.to_string())
        }
        ExecuteError::Conflict => {
            ServiceError::new(ErrorClass::Conflict, "the dataset changed concurrently; retry")
        }
        ExecuteError::Store(e) => ServiceError::unavailable("the event log", e),
        ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
    }
}

fn run_error(err: ExecuteError<RunError>) -> ServiceError {
    match err {
        ExecuteError::Domain(e @ RunError::NotFound) => {
            ServiceError::new(ErrorClass::NotFound, e.to_string())
        }
        ExecuteError::Domain(e) => ServiceError::new(ErrorClass::FailedPrecondition, e.to_string()),
        ExecuteError::Conflict => {
            ServiceError::new(ErrorClass::Conflict, "the run changed concurrently; retry")
        }
        ExecuteError::Store(e) => ServiceError::unavailable("the event log", e),
        ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
    }
}

/// An offset page token (results and cases are in a fixed order).
fn offset_token(token: &str) -> std::result::Result<usize, ServiceError> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix('o')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ServiceError::invalid_field("page_token", "is not a page token from this API"))
}

fn page_of<T>(items: Vec<T>, offset: usize, size: u32) -> (Vec<T>, String) {
    let size = size as usize;
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(offset).take(size).collect();
    let next = if offset + size < total {
        format!("o{}", offset + size)
    } else {
        String::new()
    };
    (page, next)
}

/// The variables a version needs: those its template uses, less those
/// declared with a default.
fn required_variables(resolved: &ResolvedPrompt) -> Vec<String> {
    let Some(version) = &resolved.version else {
        return Vec::new();
    };
    let texts: Vec<&str> = match version.template.as_ref().and_then(|t| t.kind.as_ref()) {
        Some(template::Kind::Text(text)) => vec![text.as_str()],
        Some(template::Kind::Chat(chat)) => chat.messages.iter().map(|m| m.content.as_str()).collect(),
        None => Vec::new(),
    };
    let defaults: BTreeSet<&str> = version
        .variables
        .iter()
        .filter(|v| v.default_value.is_some())
        .map(|v| v.name.as_str())
        .collect();
    let mut required = Vec::new();
    for text in texts {
        if let Ok(parsed) = promptops_prompts::template::parse(text) {
            for name in parsed.variables() {
                if !defaults.contains(name) && !required.iter().any(|r: &String| r == name) {
                    required.push(name.to_owned());
                }
            }
        }
    }
    required
}

impl EvaluationApi {
    pub fn new(
        log: EventLog,
        db: AnyPool,
        auth: Authenticator,
        prompts: PromptServiceClient<Upstream>,
        execution: ExecutionServiceClient<Upstream>,
        runner: Runner,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            log,
            db,
            auth,
            prompts,
            execution,
            runner,
            shutdown,
        }
    }

    async fn caller<T>(&self, request: &Request<T>, permission: Permission) -> Result<(Caller, String)> {
        Ok(self.auth.authorize(request.metadata(), permission).await?)
    }

    fn dataset_ref(org_id: &str, id: &str) -> std::result::Result<AggregateRef, ServiceError> {
        check_uuid("dataset_id", id)?;
        AggregateRef::new(Context::Evaluation, org_id, datasets::AGGREGATE_TYPE, id)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))
    }

    fn run_aggregate(org_id: &str, id: &str, field: &str) -> std::result::Result<AggregateRef, ServiceError> {
        check_uuid(field, id)?;
        run_ref(org_id, id).ok_or_else(|| ServiceError::new(ErrorClass::Internal, "bad run reference"))
    }

    async fn load_dataset(
        &self,
        org_id: &str,
        id: &str,
    ) -> std::result::Result<(Dataset, u64), ServiceError> {
        let aggregate = Self::dataset_ref(org_id, id)?;
        let loaded = aggregate::load::<DatasetAggregate>(&self.log, &aggregate)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        let created = loaded
            .state
            .created
            .clone()
            .ok_or_else(|| ServiceError::new(ErrorClass::NotFound, format!("dataset {id} not found")))?;
        let versions = loaded
            .state
            .versions
            .iter()
            .map(|v| version_view(v, None))
            .collect();
        Ok((
            Dataset {
                id: created.dataset_id,
                name: created.name,
                description: created.description,
                versions,
                created_by: None,
                created_at: loaded.first_occurred_at,
            },
            loaded.last_sequence,
        ))
    }

    /// A committed version's cases (`0` = the newest) and its number.
    async fn dataset_cases(
        &self,
        org_id: &str,
        id: &str,
        version: u64,
    ) -> std::result::Result<(Vec<promptops_proto::evaluation::v1::DatasetCase>, u64), ServiceError> {
        let aggregate = Self::dataset_ref(org_id, id)?;
        let events = self
            .log
            .read_aggregate(&aggregate)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        let state = events
            .iter()
            .filter_map(|e| <DatasetAggregate as aggregate::Aggregate>::decode(&e.envelope))
            .fold(datasets::DatasetState::default(), |s, e| datasets::evolve(s, &e));
        if state.created.is_none() {
            return Err(ServiceError::new(
                ErrorClass::NotFound,
                format!("dataset {id} not found"),
            ));
        }
        let number = if version == 0 {
            state.versions.len() as u64
        } else {
            version
        };
        if number == 0 {
            return Err(ServiceError::new(
                ErrorClass::FailedPrecondition,
                "the dataset has no versions yet; add one",
            ));
        }
        let cases = datasets::cases_of(&events, number).ok_or_else(|| {
            ServiceError::new(
                ErrorClass::NotFound,
                format!("dataset {id} has no version {number}"),
            )
        })?;
        Ok((cases, number))
    }

    /// Records a new version of the dataset with `cases`.
    async fn add_version(
        &self,
        caller: &Caller,
        aggregate: &AggregateRef,
        cases: Vec<dataset::Case>,
        source: &'static str,
    ) -> std::result::Result<DatasetVersion, ServiceError> {
        let executed = aggregate::execute::<DatasetAggregate>(
            &self.log,
            aggregate,
            DatasetCommand::AddVersion { cases, source },
            &caller.event_metadata(),
        )
        .await
        .map_err(dataset_error)?;
        metrics::counter!("evaluation_dataset_versions_total").increment(1);
        let added = executed.state.versions.last().cloned().unwrap_or_default();
        let mut view = version_view(&added, Some(executed.last_sequence));
        view.created_by = Some(caller.actor.clone());
        Ok(view)
    }

    async fn load_run(&self, org_id: &str, id: &str) -> std::result::Result<Loaded<RunState>, ServiceError> {
        let aggregate = Self::run_aggregate(org_id, id, "id")?;
        let loaded = aggregate::load::<RunAggregate>(&self.log, &aggregate)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        if loaded.state.started.is_none() {
            return Err(ServiceError::new(
                ErrorClass::NotFound,
                format!("evaluation run {id} not found"),
            ));
        }
        Ok(loaded)
    }

    /// Resolves each target and each judge's rubric prompt (as the caller)
    /// and checks their models and the dataset's variables; every problem is
    /// reported. Judges' specs get the resolved prompt id and version.
    async fn resolve_prompts(
        &self,
        credential: &str,
        req: &StartEvaluationRunRequest,
        metrics: &mut [MetricSpec],
        cases: &[dataset::Case],
        violations: &mut Vec<FieldViolation>,
    ) -> std::result::Result<Vec<ResolvedTarget>, ServiceError> {
        // Model id → whether it is an embedding model.
        let models: BTreeMap<String, bool> = self
            .execution
            .clone()
            .list_models(outgoing(credential, ListModelsRequest {}))
            .await
            .map_err(|s| ServiceError::from_status(&s))?
            .into_inner()
            .models
            .into_iter()
            .map(|m| (m.id, m.embeddings))
            .collect();
        let mut check = PromptCheck {
            credential,
            cases,
            models: &models,
            violations,
            missing_rows: 0,
        };
        let mut resolved = Vec::new();
        for (i, target) in req.targets.iter().enumerate() {
            let use_ = PromptUse {
                field: format!("targets[{i}]"),
                prompt: target.prompt.clone(),
                label: target.label.clone(),
                version: target.version,
                model: target.model.clone(),
                provided: &[],
            };
            if let Some((prompt_id, version, label)) =
                self.check_prompt(&mut check, use_, "prompt", "model").await?
            {
                resolved.push(ResolvedTarget {
                    prompt_id,
                    prompt_version: version,
                    label,
                    model: target.model.clone(),
                });
            }
        }
        for (i, spec) in metrics
            .iter_mut()
            .enumerate()
            .filter(|(_, m)| m.kind == "llm_judge")
        {
            let use_ = PromptUse {
                field: format!("metrics[{i}]"),
                prompt: spec.judge_prompt.clone(),
                label: spec.judge_label.clone(),
                version: spec.judge_version,
                model: spec.judge_model.clone(),
                provided: &["output", "expected"],
            };
            if let Some((prompt_id, version, label)) = self
                .check_prompt(&mut check, use_, "judge_prompt", "judge_model")
                .await?
            {
                spec.judge_prompt = Some(PromptRef {
                    prompt_id,
                    ..Default::default()
                });
                spec.judge_version = version;
                spec.judge_label = label;
            }
        }
        for (i, spec) in metrics
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == "embedding_similarity")
        {
            let field = format!("metrics[{i}].embedding_model");
            match check.models.get(&spec.embedding_model) {
                None if !spec.embedding_model.is_empty() => check.violations.push(FieldViolation::new(
                    field,
                    format!("unknown model {:?}", spec.embedding_model),
                )),
                Some(false) => check.violations.push(FieldViolation::new(
                    field,
                    format!("{} is not an embedding model", spec.embedding_model),
                )),
                _ => {}
            }
        }
        if check.missing_rows > MAX_REPORTED_ROWS {
            check.violations.push(FieldViolation::new(
                "cases",
                format!(
                    "{} more rows miss variables",
                    check.missing_rows - MAX_REPORTED_ROWS
                ),
            ));
        }
        Ok(resolved)
    }

    /// One prompt a run uses: resolved, its model known, every case with
    /// the variables it needs. `(prompt id, version, label)` when it resolves.
    async fn check_prompt(
        &self,
        check: &mut PromptCheck<'_>,
        use_: PromptUse<'_>,
        prompt_field: &str,
        model_field: &str,
    ) -> std::result::Result<Option<(String, u64, String)>, ServiceError> {
        let field = |name: &str| format!("{}.{name}", use_.field);
        let answer = self
            .prompts
            .clone()
            .resolve_prompt(outgoing(
                check.credential,
                ResolvePromptRequest {
                    prompt: use_.prompt.clone(),
                    label: use_.label.clone(),
                    version: use_.version,
                    min_position: None,
                },
            ))
            .await;
        let prompt = match answer {
            Ok(answer) => answer.into_inner(),
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                check.violations.push(FieldViolation::new(
                    field(prompt_field),
                    status.message().to_owned(),
                ));
                return Ok(None);
            }
            Err(status) => return Err(ServiceError::from_status(&status)),
        };
        let version = prompt.version.clone().unwrap_or_default();
        let model = if use_.model.is_empty() {
            version
                .model
                .as_ref()
                .map(|m| m.model.clone())
                .unwrap_or_default()
        } else {
            use_.model.clone()
        };
        if model.is_empty() {
            check.violations.push(FieldViolation::new(
                field(model_field),
                "the prompt version names no model; give one",
            ));
        } else {
            match check.models.get(&model) {
                None => check.violations.push(FieldViolation::new(
                    field(model_field),
                    format!("unknown model {model:?}"),
                )),
                Some(true) => check.violations.push(FieldViolation::new(
                    field(model_field),
                    format!("{model} is an embedding model; it does not answer prompts"),
                )),
                Some(false) => {}
            }
        }
        let required: Vec<String> = required_variables(&prompt)
            .into_iter()
            .filter(|v| !use_.provided.contains(&v.as_str()))
            .collect();
        for missing in dataset::missing_variables(check.cases, &required) {
            check.missing_rows += 1;
            if check.missing_rows <= MAX_REPORTED_ROWS {
                check.violations.push(FieldViolation::new(
                    format!("cases[{}]", missing.row),
                    format!("{missing} (needed by {})", use_.field),
                ));
            }
        }
        let prompt_id = prompt
            .prompt
            .as_ref()
            .map(|p| p.prompt_id.clone())
            .unwrap_or_default();
        Ok(Some((prompt_id, version.number, prompt.label)))
    }
}

/// What checking a run's prompts shares.
struct PromptCheck<'a> {
    credential: &'a str,
    cases: &'a [dataset::Case],
    models: &'a BTreeMap<String, bool>,
    violations: &'a mut Vec<FieldViolation>,
    missing_rows: usize,
}

/// A prompt a run uses: a target, or a judge's rubric.
struct PromptUse<'a> {
    /// `targets[i]` or `metrics[i]`.
    field: String,
    prompt: Option<PromptRef>,
    label: String,
    version: u64,
    model: String,
    /// Variables the run provides itself (a judge's `output`, `expected`).
    provided: &'a [&'a str],
}

fn version_view(v: &promptops_proto::evaluation::v1::DatasetVersionAdded, at: Option<u64>) -> DatasetVersion {
    DatasetVersion {
        dataset_id: v.dataset_id.clone(),
        number: v.version,
        case_count: v.case_count,
        variables: v.variables.clone(),
        source_format: v.source_format.clone(),
        created_by: None,
        created_at: None,
        position: at.map(evaluation_position),
    }
}

/// The API's view of a run.
pub fn run_view(loaded: &Loaded<RunState>) -> EvaluationRun {
    let state = &loaded.state;
    let started = state.started.clone().unwrap_or_default();
    let aggregates = match &state.finished {
        Some(finished) => finished.aggregates.clone(),
        None => state.aggregates(),
    };
    EvaluationRun {
        id: started.run_id,
        name: started.name,
        dataset_id: started.dataset_id,
        dataset_version: started.dataset_version,
        targets: started.targets,
        metrics: started.metrics,
        concurrency: started.concurrency,
        status: state.status() as i32,
        total: state.total() as u64,
        done: state.results.len() as u64,
        failed: state.failed() as u64,
        aggregates,
        created_by: started.actor,
        created_at: loaded.first_occurred_at,
        finished_at: state
            .finished
            .as_ref()
            .map(|f| timestamp_from_ms(f.finished_at_ms)),
        error: state
            .finished
            .as_ref()
            .map(|f| f.error.clone())
            .unwrap_or_default(),
        position: Some(evaluation_position(loaded.last_sequence)),
    }
}

/// Results in dataset order, target by target.
fn ordered_results(state: &RunState) -> Vec<CaseResult> {
    let order: std::collections::HashMap<&str, usize> = state
        .started
        .as_ref()
        .map(|s| {
            s.case_ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect()
        })
        .unwrap_or_default();
    let mut results = state.results.clone();
    results.sort_by_key(|r| {
        (
            order.get(r.case_id.as_str()).copied().unwrap_or(usize::MAX),
            r.target,
        )
    });
    results
}

type RunStream = Pin<Box<dyn Stream<Item = Result<EvaluationRun>> + Send>>;

#[tonic::async_trait]
impl EvaluationService for EvaluationApi {
    async fn create_dataset(&self, request: Request<CreateDatasetRequest>) -> Result<Response<Dataset>> {
        let (caller, _) = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        let name = req.name.trim().to_owned();
        let mut violations = Vec::new();
        if name.is_empty()
            || name.chars().count() > datasets::MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            violations.push(FieldViolation::new(
                "name",
                format!(
                    "1 to {} characters, no control characters",
                    datasets::MAX_NAME_CHARS
                ),
            ));
        }
        if req.description.chars().count() > datasets::MAX_DESCRIPTION_CHARS {
            violations.push(FieldViolation::new(
                "description",
                format!("at most {} characters", datasets::MAX_DESCRIPTION_CHARS),
            ));
        }
        if !violations.is_empty() {
            return Err(ServiceError::invalid(violations).into());
        }
        let id = datasets::dataset_id(&caller.org_id, &name);
        let aggregate = Self::dataset_ref(&caller.org_id, &id)?;
        let command = DatasetCommand::Create {
            dataset_id: id.clone(),
            name: name.clone(),
            description: req.description,
        };
        let executed =
            aggregate::execute::<DatasetAggregate>(&self.log, &aggregate, command, &caller.event_metadata())
                .await
                .map_err(|e| match e {
                    ExecuteError::Domain(DatasetError::Exists) => ServiceError::new(
                        ErrorClass::AlreadyExists,
                        format!("a dataset named {name:?} exists already ({id})"),
                    ),
                    other => dataset_error(other),
                })?;
        metrics::counter!("evaluation_datasets_created_total").increment(1);
        let created = executed.state.created.unwrap_or_default();
        Ok(Response::new(Dataset {
            id: created.dataset_id,
            name: created.name,
            description: created.description,
            versions: Vec::new(),
            created_by: Some(caller.actor),
            created_at: executed.first_occurred_at,
        }))
    }

    async fn get_dataset(&self, request: Request<GetDatasetRequest>) -> Result<Response<Dataset>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let (dataset, _) = self
            .load_dataset(&caller.org_id, &request.into_inner().id)
            .await?;
        Ok(Response::new(dataset))
    }

    async fn list_datasets(
        &self,
        request: Request<ListDatasetsRequest>,
    ) -> Result<Response<ListDatasetsResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page_token")?;
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let (datasets, next) = read_model::list_datasets(
            &self.db,
            &caller.org_id,
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the evaluation database", e))?;
        Ok(Response::new(ListDatasetsResponse {
            datasets,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn add_dataset_version(
        &self,
        request: Request<AddDatasetVersionRequest>,
    ) -> Result<Response<DatasetVersion>> {
        let (caller, _) = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        let aggregate = Self::dataset_ref(&caller.org_id, &req.dataset_id)?;
        let format = Format::parse(&req.format).ok_or_else(|| {
            ServiceError::invalid_field(
                "format",
                "csv or jsonl (text/csv, application/jsonl, application/x-ndjson)",
            )
        })?;
        let cases = dataset::import(format, &req.content).map_err(|problems| {
            let mut violations: Vec<FieldViolation> = problems
                .errors
                .iter()
                .map(|e| FieldViolation::new("content", e.to_string()))
                .collect();
            if problems.total > problems.errors.len() {
                violations.push(FieldViolation::new(
                    "content",
                    format!("and {} more problems", problems.total - problems.errors.len()),
                ));
            }
            ServiceError::invalid(violations)
        })?;
        Ok(Response::new(
            self.add_version(&caller, &aggregate, cases, format.name())
                .await?,
        ))
    }

    async fn add_dataset_version_from_runs(
        &self,
        request: Request<AddDatasetVersionFromRunsRequest>,
    ) -> Result<Response<DatasetVersion>> {
        let (caller, credential) = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        let aggregate = Self::dataset_ref(&caller.org_id, &req.dataset_id)?;
        check_uuid("prompt_id", &req.prompt_id)?;
        let limit = match req.limit {
            0 => DEFAULT_RUNS_TAKEN,
            n if n as usize > MAX_RUNS_TAKEN => {
                return Err(ServiceError::invalid_field("limit", format!("1 to {MAX_RUNS_TAKEN}")).into());
            }
            n => n as usize,
        };
        let mut cases = Vec::new();
        let mut page_token = String::new();
        while cases.len() < limit {
            let page = self
                .execution
                .clone()
                .list_runs(outgoing(
                    &credential,
                    ListRunsRequest {
                        page: Some(PageRequest {
                            page_size: 200,
                            page_token: page_token.clone(),
                        }),
                        prompt_id: req.prompt_id.clone(),
                        prompt_version: req.prompt_version,
                        status: if req.include_unsuccessful {
                            RunStatus::Unspecified
                        } else {
                            RunStatus::Completed
                        } as i32,
                        ..Default::default()
                    },
                ))
                .await
                .map_err(|s| ServiceError::from_status(&s))?
                .into_inner();
            for run in page.runs {
                if cases.len() == limit {
                    break;
                }
                if run.status == RunStatus::Running as i32 {
                    continue;
                }
                let completed = run.status == RunStatus::Completed as i32;
                cases.push(dataset::Case {
                    id: run.run_id.clone(),
                    variables: run.variables.into_iter().collect(),
                    expected: completed.then_some(run.output),
                    metadata: [
                        ("run_id".to_owned(), run.run_id),
                        ("model".to_owned(), run.model),
                        ("prompt_version".to_owned(), run.prompt_version.to_string()),
                    ]
                    .into_iter()
                    .collect(),
                });
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if cases.is_empty() {
            return Err(ServiceError::new(
                ErrorClass::FailedPrecondition,
                "no finished runs of this prompt match; run it first",
            )
            .into());
        }
        Ok(Response::new(
            self.add_version(&caller, &aggregate, cases, "runs").await?,
        ))
    }

    async fn list_dataset_cases(
        &self,
        request: Request<ListDatasetCasesRequest>,
    ) -> Result<Response<ListDatasetCasesResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let offset = offset_token(&page.page_token)?;
        let (cases, version) = self
            .dataset_cases(&caller.org_id, &req.dataset_id, req.version)
            .await?;
        let (cases, next_page_token) = page_of(cases, offset, page_size(page.page_size));
        Ok(Response::new(ListDatasetCasesResponse {
            cases,
            next_page_token,
            version,
        }))
    }

    async fn export_dataset(
        &self,
        request: Request<ExportDatasetRequest>,
    ) -> Result<Response<ExportDatasetResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let format = if req.format.is_empty() {
            Format::JsonLines
        } else {
            Format::parse(&req.format).ok_or_else(|| ServiceError::invalid_field("format", "csv or jsonl"))?
        };
        let (cases, version) = self
            .dataset_cases(&caller.org_id, &req.dataset_id, req.version)
            .await?;
        let cases: Vec<dataset::Case> = cases.iter().map(datasets::from_proto).collect();
        Ok(Response::new(ExportDatasetResponse {
            content: dataset::export(format, &cases),
            media_type: format.media_type().to_owned(),
            version,
        }))
    }

    async fn start_evaluation_run(
        &self,
        request: Request<StartEvaluationRunRequest>,
    ) -> Result<Response<EvaluationRun>> {
        let (caller, credential) = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        if req.targets.is_empty() || req.targets.len() > MAX_TARGETS {
            violations.push(FieldViolation::new(
                "targets",
                format!("give 1 to {MAX_TARGETS} targets"),
            ));
        }
        let concurrency = match req.concurrency {
            0 => DEFAULT_CONCURRENCY,
            n if n > MAX_CONCURRENCY => {
                violations.push(FieldViolation::new(
                    "concurrency",
                    format!("1 to {MAX_CONCURRENCY}"),
                ));
                n
            }
            n => n,
        };
        if req.name.chars().count() > datasets::MAX_NAME_CHARS {
            violations.push(FieldViolation::new(
                "name",
                format!("at most {} characters", datasets::MAX_NAME_CHARS),
            ));
        }
        if let Err(mut metric_violations) = scoring::compile(&req.metrics) {
            violations.append(&mut metric_violations);
        }
        check_uuid("dataset_id", &req.dataset_id)?;
        let (cases, dataset_version) = self
            .dataset_cases(&caller.org_id, &req.dataset_id, req.dataset_version)
            .await?;
        let cases: Vec<dataset::Case> = cases.iter().map(datasets::from_proto).collect();
        if cases.len() * req.targets.len() > evaluation_run::MAX_PAIRS {
            violations.push(FieldViolation::new(
                "targets",
                format!("cases × targets is at most {}", evaluation_run::MAX_PAIRS),
            ));
        }
        let mut metric_specs = req.metrics.clone();
        let targets = if req.targets.len() <= MAX_TARGETS && metric_specs.len() <= scoring::MAX_METRICS {
            self.resolve_prompts(&credential, &req, &mut metric_specs, &cases, &mut violations)
                .await?
        } else {
            Vec::new()
        };
        if !violations.is_empty() {
            return Err(ServiceError::invalid(violations).into());
        }
        // Checked now, so that a run is never started that cannot be driven.
        self.auth.service_credential()?;
        let run_id = Uuid::now_v7().to_string();
        let aggregate = Self::run_aggregate(&caller.org_id, &run_id, "id")?;
        let started = EvaluationRunStarted {
            run_id: run_id.clone(),
            name: req.name,
            dataset_id: req.dataset_id,
            dataset_version,
            targets,
            metrics: metric_specs,
            concurrency,
            case_ids: cases.into_iter().map(|c| c.id).collect(),
            role: caller.role.as_str().to_owned(),
            scopes: caller.scopes.clone(),
            actor: Some(caller.actor.clone()),
        };
        let executed = aggregate::execute::<RunAggregate>(
            &self.log,
            &aggregate,
            RunCommand::Start(started),
            &caller.event_metadata(),
        )
        .await
        .map_err(run_error)?;
        metrics::counter!("evaluation_runs_started_total").increment(1);
        self.runner.launch(&caller.org_id, &run_id);
        let loaded = Loaded {
            state: executed.state,
            version: 1,
            last_sequence: executed.last_sequence,
            first_occurred_at: executed.first_occurred_at,
        };
        Ok(Response::new(run_view(&loaded)))
    }

    async fn get_evaluation_run(
        &self,
        request: Request<GetEvaluationRunRequest>,
    ) -> Result<Response<EvaluationRun>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let loaded = self.load_run(&caller.org_id, &request.into_inner().id).await?;
        Ok(Response::new(run_view(&loaded)))
    }

    async fn list_evaluation_runs(
        &self,
        request: Request<ListEvaluationRunsRequest>,
    ) -> Result<Response<ListEvaluationRunsResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page_token")?;
        if !req.dataset_id.is_empty() {
            check_uuid("dataset_id", &req.dataset_id)?;
        }
        let dataset = (!req.dataset_id.is_empty()).then_some(req.dataset_id.as_str());
        let (runs, next) = read_model::list_runs(
            &self.db,
            &caller.org_id,
            dataset,
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the evaluation database", e))?;
        Ok(Response::new(ListEvaluationRunsResponse {
            runs,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn list_case_results(
        &self,
        request: Request<ListCaseResultsRequest>,
    ) -> Result<Response<ListCaseResultsResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let offset = offset_token(&page.page_token)?;
        check_uuid("run_id", &req.run_id)?;
        let loaded = self.load_run(&caller.org_id, &req.run_id).await?;
        let (results, next_page_token) =
            page_of(ordered_results(&loaded.state), offset, page_size(page.page_size));
        Ok(Response::new(ListCaseResultsResponse {
            results,
            next_page_token,
        }))
    }

    type WatchEvaluationRunStream = RunStream;

    async fn watch_evaluation_run(
        &self,
        request: Request<GetEvaluationRunRequest>,
    ) -> Result<Response<Self::WatchEvaluationRunStream>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let id = request.into_inner().id;
        let first = self.load_run(&caller.org_id, &id).await?;
        let aggregate = Self::run_aggregate(&caller.org_id, &id, "id")?;
        let (log, shutdown) = (self.log.clone(), self.shutdown.clone());
        let stream = futures::stream::unfold(Some((first, true)), move |state| {
            let (log, aggregate, shutdown) = (log.clone(), aggregate.clone(), shutdown.clone());
            async move {
                let (mut known, first) = state?;
                if !first {
                    if known.state.is_finished() {
                        return None;
                    }
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => return None,
                            () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        }
                        let before = known.last_sequence;
                        known = match aggregate::catch_up::<RunAggregate>(&log, &aggregate, known).await {
                            Ok(loaded) => loaded,
                            Err(e) => {
                                let status: tonic::Status =
                                    ServiceError::unavailable("the event log", e).into();
                                return Some((Err(status), None));
                            }
                        };
                        if known.last_sequence != before {
                            break;
                        }
                    }
                }
                let view = run_view(&known);
                Some((Ok(view), Some((known, false))))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_evaluation_run(
        &self,
        request: Request<CancelEvaluationRunRequest>,
    ) -> Result<Response<EvaluationRun>> {
        let (caller, _) = self.caller(&request, Permission::Write).await?;
        let id = request.into_inner().id;
        let known = self.load_run(&caller.org_id, &id).await?;
        let aggregate = Self::run_aggregate(&caller.org_id, &id, "id")?;
        let executed = aggregate::execute_from::<RunAggregate>(
            &self.log,
            &aggregate,
            known,
            RunCommand::Finish {
                status: EvaluationRunStatus::Cancelled,
                error: format!("cancelled by {}", caller.actor.id),
                now_ms: unix_ms(),
            },
            &caller.event_metadata(),
        )
        .await
        .map_err(run_error)?;
        self.runner.stop(&id);
        let loaded = Loaded {
            state: executed.state,
            version: 0,
            last_sequence: executed.last_sequence,
            first_occurred_at: executed.first_occurred_at,
        };
        Ok(Response::new(run_view(&loaded)))
    }

    async fn list_score_history(
        &self,
        request: Request<ListScoreHistoryRequest>,
    ) -> Result<Response<ListScoreHistoryResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        check_uuid("prompt_id", &req.prompt_id)?;
        let page = req.page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page_token")?;
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let (points, next) = read_model::score_history(
            &self.db,
            &caller.org_id,
            &req.prompt_id,
            (req.prompt_version != 0).then_some(req.prompt_version),
            (!req.metric.is_empty()).then_some(req.metric.as_str()),
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the evaluation database", e))?;
        Ok(Response::new(ListScoreHistoryResponse {
            points,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn compare_evaluation_runs(
        &self,
        request: Request<CompareEvaluationRunsRequest>,
    ) -> Result<Response<EvaluationComparison>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        check_uuid("base_run_id", &req.base_run_id)?;
        check_uuid("candidate_run_id", &req.candidate_run_id)?;
        if req.metric.is_empty() {
            return Err(ServiceError::invalid_field("metric", "name the metric to compare").into());
        }
        if !(req.threshold.is_finite() && req.threshold >= 0.0) {
            return Err(ServiceError::invalid_field("threshold", "must be a number ≥ 0").into());
        }
        let base = self.load_run(&caller.org_id, &req.base_run_id).await?.state;
        let candidate = self.load_run(&caller.org_id, &req.candidate_run_id).await?.state;
        let scores = |state: &RunState,
                      target: u32,
                      field: &str|
         -> std::result::Result<Vec<CaseScore>, ServiceError> {
            let started = state
                .started
                .as_ref()
                .ok_or_else(|| ServiceError::invalid_field(field, "no such run"))?;
            if target as usize >= started.targets.len() {
                return Err(ServiceError::invalid_field(
                    field,
                    format!("the run has {} target(s)", started.targets.len()),
                ));
            }
            let has_metric = started
                .metrics
                .iter()
                .any(|m| scoring::metric_name(m) == req.metric);
            if !has_metric {
                return Err(ServiceError::invalid_field(
                    "metric",
                    format!("run {} has no metric {:?}", started.run_id, req.metric),
                ));
            }
            Ok(ordered_results(state)
                .into_iter()
                .filter(|r| r.target == target)
                .filter_map(|r| {
                    let value = r.scores.iter().find(|s| s.metric == req.metric)?.value;
                    Some(CaseScore {
                        case_id: r.case_id,
                        value,
                    })
                })
                .collect())
        };
        let base_scores = scores(&base, req.base_target, "base_target")?;
        let candidate_scores = scores(&candidate, req.candidate_target, "candidate_target")?;
        let base_dataset = base.started.as_ref().map(|s| s.dataset_id.as_str());
        if base_dataset != candidate.started.as_ref().map(|s| s.dataset_id.as_str()) {
            return Err(ServiceError::new(
                ErrorClass::FailedPrecondition,
                "the two runs evaluate different datasets; compare runs of one dataset",
            )
            .into());
        }
        Ok(Response::new(scoring::compare(
            &req.metric,
            &base_scores,
            &candidate_scores,
            req.threshold,
        )))
    }
}
