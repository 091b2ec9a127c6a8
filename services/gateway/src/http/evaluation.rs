//! `/api/v1/datasets` and `/api/v1/evaluation-runs`: test cases and
//! evaluation runs, over the evaluation service.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{Problem, ServiceError};
use promptops_proto::evaluation::v1::{
    AddDatasetVersionFromRunsRequest, AddDatasetVersionRequest, CancelEvaluationRunRequest, CaseResult,
    CompareEvaluationRunsRequest, CreateDatasetRequest, Dataset, DatasetCase, DatasetVersion,
    EvaluationComparison, EvaluationRun, EvaluationRunStatus, EvaluationTarget, ExportDatasetRequest,
    GetDatasetRequest, GetEvaluationRunRequest, ListCaseResultsRequest, ListDatasetCasesRequest,
    ListDatasetsRequest, ListEvaluationRunsRequest, ListScoreHistoryRequest, MetricAggregate, MetricSpec,
    StartEvaluationRunRequest,
};
use promptops_proto::prompts::v1::PromptRef;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::page;
use super::authn::Authenticated;
use super::extract::{ApiFile, ApiJson, ApiQuery, file_format};
use super::model::{
    ActorJson, JSON_PROBLEMS, bad_request, format_position, parse_position, rfc3339, upstream,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetVersionJson {
    pub number: u64,
    pub case_count: u64,
    /// Every variable some case sets, sorted.
    pub variables: Vec<String>,
    /// `csv` or `jsonl`.
    pub source_format: String,
    /// Pass as `min_position` to read your write.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

impl From<DatasetVersion> for DatasetVersionJson {
    fn from(v: DatasetVersion) -> Self {
        Self {
            number: v.number,
            case_count: v.case_count,
            variables: v.variables,
            source_format: v.source_format,
            position: v.position.as_ref().map(format_position),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetJson {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Oldest first (empty in lists).
    pub versions: Vec<DatasetVersionJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_by: Option<ActorJson>,
    pub created_at: String,
}

impl From<Dataset> for DatasetJson {
    fn from(d: Dataset) -> Self {
        Self {
            id: d.id,
            name: d.name,
            description: d.description,
            versions: d.versions.into_iter().map(DatasetVersionJson::from).collect(),
            created_by: d.created_by.map(|a| ActorJson::from(Some(a))),
            created_at: rfc3339(d.created_at.as_ref()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatasetListJson {
    pub datasets: Vec<DatasetJson>,
    pub next_page_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaseJson {
    pub id: String,
    pub variables: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

impl From<DatasetCase> for CaseJson {
    fn from(c: DatasetCase) -> Self {
        Self {
            id: c.id,
            variables: c.variables.into_iter().collect(),
            expected: c.expected,
            metadata: c.metadata.into_iter().collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaseListJson {
    pub version: u64,
    pub cases: Vec<CaseJson>,
    pub next_page_token: String,
}

/// Body of `POST /api/v1/datasets`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDatasetBody {
    /// 1–100 characters, unique in the org.
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DatasetsParams {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    pub min_position: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CasesParams {
    /// The version (default: the newest).
    pub version: Option<u64>,
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// The version (default: the newest).
    pub version: Option<u64>,
    /// `csv` or `jsonl` (default).
    pub format: Option<String>,
}

/// A metric of a run: a reference metric or an assertion.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricJson {
    /// `bleu`, `rouge1`, `rouge2`, `rougeL`, `rougeLsum`, `exact_match`,
    /// `contains`, `regex`, `json_valid`, `length`, `latency` or `cost`.
    pub kind: String,
    /// Shown in results (default: `kind`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// ROUGE: Porter-stem tokens.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stem: bool,
    /// `contains`: the strings looked for; `exact_match`: instead of the expected output.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// `contains`: all of `values` (default: any).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
    /// `regex`: the pattern the output must match.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pattern: String,
    /// `length`: characters; `latency`: ms; `cost`: nano-USD. 0 = unbounded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max: u64,
    /// `llm_judge`: the rubric prompt and the model that scores with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeJson>,
    /// `json_schema`: the JSON Schema the output (parsed as JSON) must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<serde_json::Value>,
    /// `script`: a Rhai script returning the score (number or bool), run
    /// sandboxed with `output`, `expected`, `variables`, `latency_ms` and
    /// `cost_nano_usd` in scope.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub script: String,
    /// `embedding_similarity`: the embedding model, e.g. `mock/embed`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub embedding_model: String,
}

/// An LLM judge: a rubric prompt from the registry (given `output`,
/// `expected` and the case's variables) answering
/// `{"score": <number>, "reasoning": "…"}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JudgeJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Default: the rubric version's model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl From<MetricJson> for MetricSpec {
    fn from(m: MetricJson) -> Self {
        let judge = m.judge.unwrap_or_default();
        MetricSpec {
            judge_prompt: (judge.prompt_id.is_some() || judge.name.is_some()).then(|| PromptRef {
                prompt_id: judge.prompt_id.unwrap_or_default(),
                folder: judge.folder.unwrap_or_default(),
                name: judge.name.unwrap_or_default(),
            }),
            judge_label: judge.label.unwrap_or_default(),
            judge_version: judge.version.unwrap_or(0),
            judge_model: judge.model.unwrap_or_default(),
            schema: m.schema.map(|s| s.to_string()).unwrap_or_default(),
            script: m.script,
            embedding_model: m.embedding_model,
            kind: m.kind,
            stem: m.stem,
            values: m.values,
            all: m.all,
            ignore_case: m.ignore_case,
            pattern: m.pattern,
            min: m.min,
            max: m.max,
            name: m.name,
        }
    }
}

impl From<MetricSpec> for MetricJson {
    fn from(m: MetricSpec) -> Self {
        let judge = m.judge_prompt.map(|p| JudgeJson {
            prompt_id: Some(p.prompt_id).filter(|s| !s.is_empty()),
            folder: Some(p.folder).filter(|s| !s.is_empty()),
            name: Some(p.name).filter(|s| !s.is_empty()),
            label: Some(m.judge_label).filter(|s| !s.is_empty()),
            version: Some(m.judge_version).filter(|v| *v != 0),
            model: Some(m.judge_model).filter(|s| !s.is_empty()),
        });
        MetricJson {
            judge,
            schema: serde_json::from_str(&m.schema).ok(),
            script: m.script,
            embedding_model: m.embedding_model,
            kind: m.kind,
            name: m.name,
            stem: m.stem,
            values: m.values,
            all: m.all,
            ignore_case: m.ignore_case,
            pattern: m.pattern,
            min: m.min,
            max: m.max,
        }
    }
}

/// What a run evaluates: a prompt (id, or folder + name) at a label or version.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetBody {
    pub prompt_id: Option<String>,
    pub folder: Option<String>,
    pub name: Option<String>,
    /// Default: `latest`.
    pub label: Option<String>,
    pub version: Option<u64>,
    /// Instead of the version's model.
    pub model: Option<String>,
}

/// Body of `POST /api/v1/evaluation-runs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvaluationRunBody {
    pub dataset_id: String,
    /// Default: the newest.
    pub dataset_version: Option<u64>,
    /// 1–10.
    pub targets: Vec<TargetBody>,
    /// 1–20.
    pub metrics: Vec<MetricJson>,
    /// Cases executed at once, 1–64 (default 8).
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetJson {
    pub prompt_id: String,
    pub prompt_version: u64,
    pub label: String,
    pub model: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregateJson {
    /// Index into `targets`.
    pub target: u32,
    pub metric: String,
    pub count: u64,
    pub mean: f64,
    pub std_dev: f64,
    /// 95% confidence interval of the mean.
    pub ci_low: f64,
    pub ci_high: f64,
}

impl From<MetricAggregate> for AggregateJson {
    fn from(a: MetricAggregate) -> Self {
        Self {
            target: a.target,
            metric: a.metric,
            count: a.count,
            mean: a.mean,
            std_dev: a.std_dev,
            ci_low: a.ci_low,
            ci_high: a.ci_high,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluationRunJson {
    pub id: String,
    pub name: String,
    pub dataset_id: String,
    pub dataset_version: u64,
    /// `running`, `completed`, `cancelled` or `failed`.
    pub status: String,
    /// Cases × targets.
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    /// Empty in lists.
    pub targets: Vec<TargetJson>,
    pub metrics: Vec<MetricJson>,
    pub aggregates: Vec<AggregateJson>,
    pub concurrency: u32,
    pub created_by: ActorJson,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Pass as `min_position` (e.g. to `/api/v1/evaluation-scores`) to read
    /// what this state of the run implies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<String>,
}

pub fn status_name(status: i32) -> &'static str {
    match EvaluationRunStatus::try_from(status).unwrap_or(EvaluationRunStatus::Unspecified) {
        EvaluationRunStatus::Running => "running",
        EvaluationRunStatus::Completed => "completed",
        EvaluationRunStatus::Cancelled => "cancelled",
        EvaluationRunStatus::Failed => "failed",
        EvaluationRunStatus::Unspecified => "unknown",
    }
}

impl From<EvaluationRun> for EvaluationRunJson {
    fn from(r: EvaluationRun) -> Self {
        Self {
            id: r.id,
            name: r.name,
            dataset_id: r.dataset_id,
            dataset_version: r.dataset_version,
            status: status_name(r.status).to_owned(),
            total: r.total,
            done: r.done,
            failed: r.failed,
            targets: r
                .targets
                .into_iter()
                .map(|t| TargetJson {
                    prompt_id: t.prompt_id,
                    prompt_version: t.prompt_version,
                    label: t.label,
                    model: t.model,
                })
                .collect(),
            metrics: r.metrics.into_iter().map(MetricJson::from).collect(),
            aggregates: r.aggregates.into_iter().map(AggregateJson::from).collect(),
            concurrency: r.concurrency,
            created_by: r.created_by.into(),
            created_at: rfc3339(r.created_at.as_ref()),
            finished_at: r.finished_at.as_ref().map(|t| rfc3339(Some(t))),
            error: r.error,
            position: r.position.as_ref().map(format_position),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EvaluationRunListJson {
    pub runs: Vec<EvaluationRunJson>,
    pub next_page_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaseResultJson {
    pub case_id: String,
    pub target: u32,
    /// The execution's run (see `/api/v1/runs/{run_id}`).
    pub run_id: String,
    pub output: String,
    /// Metric name → score (absent when the execution failed or the metric
    /// needs an expected output the case lacks).
    pub scores: BTreeMap<String, f64>,
    /// Metrics scored by a model (`llm_judge`, `embedding_similarity`):
    /// metric name → the run that scored it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metric_runs: BTreeMap<String, String>,
    /// `llm_judge`: metric name → the judge's reasoning.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub reasoning: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Problems that cost a score, not the case (a judge that gave none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub latency_us: u64,
    pub cost_nano_usd: i64,
}

impl From<CaseResult> for CaseResultJson {
    fn from(r: CaseResult) -> Self {
        Self {
            case_id: r.case_id,
            target: r.target,
            run_id: r.run_id,
            output: r.output,
            metric_runs: r
                .scores
                .iter()
                .filter(|s| !s.run_id.is_empty())
                .map(|s| (s.metric.clone(), s.run_id.clone()))
                .collect(),
            reasoning: r
                .scores
                .iter()
                .filter(|s| !s.reasoning.is_empty())
                .map(|s| (s.metric.clone(), s.reasoning.clone()))
                .collect(),
            scores: r.scores.into_iter().map(|s| (s.metric, s.value)).collect(),
            error: r.error,
            notes: r.notes,
            latency_us: r.latency_us,
            cost_nano_usd: r.cost_nano_usd,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaseResultListJson {
    pub results: Vec<CaseResultJson>,
    pub next_page_token: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    pub dataset_id: Option<String>,
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResultsParams {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ComparisonParams {
    /// The run this one is compared with (the base).
    pub against: String,
    /// The metric's name in both runs.
    pub metric: String,
    /// A case regressed when this run's score is lower by more than this (default 0).
    pub threshold: Option<f64>,
    /// Target indexes (default 0).
    pub target: Option<u32>,
    pub against_target: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CaseDeltaJson {
    pub case_id: String,
    pub base: f64,
    pub candidate: f64,
    pub delta: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ComparisonJson {
    pub metric: String,
    pub base_mean: f64,
    pub candidate_mean: f64,
    pub deltas: Vec<CaseDeltaJson>,
    /// Worst first.
    pub regressed: Vec<CaseDeltaJson>,
    pub improved: u64,
    pub unchanged: u64,
}

impl From<EvaluationComparison> for ComparisonJson {
    fn from(c: EvaluationComparison) -> Self {
        let delta = |d: promptops_proto::evaluation::v1::CaseDelta| CaseDeltaJson {
            case_id: d.case_id,
            base: d.base,
            candidate: d.candidate,
            delta: d.delta,
        };
        Self {
            metric: c.metric,
            base_mean: c.base_mean,
            candidate_mean: c.candidate_mean,
            deltas: c.deltas.into_iter().map(delta).collect(),
            regressed: c.regressed.into_iter().map(delta).collect(),
            improved: c.improved,
            unchanged: c.unchanged,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScoresParams {
    pub prompt_id: String,
    /// Only this version.
    pub prompt_version: Option<u64>,
    /// Only this metric (its name in the runs).
    pub metric: Option<String>,
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    pub min_position: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScorePointJson {
    pub run_id: String,
    pub run_name: String,
    pub dataset_id: String,
    pub dataset_version: u64,
    pub prompt_version: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    pub metric: String,
    pub count: u64,
    pub mean: f64,
    pub std_dev: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub finished_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScoreHistoryJson {
    pub points: Vec<ScorePointJson>,
    pub next_page_token: String,
}

/// A prompt's evaluation scores over time: each completed run's aggregate
/// per version and metric, newest first.
#[utoipa::path(get, path = "/api/v1/evaluation-scores", tag = "evaluation", params(ScoresParams),
    responses(
        (status = 200, description = "A page of score points", body = ScoreHistoryJson),
        (status = 400, description = "Invalid prompt id or page token", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn score_history(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<ScoresParams>,
) -> Result<Json<ScoreHistoryJson>, ServiceError> {
    let request = ListScoreHistoryRequest {
        prompt_id: params.prompt_id,
        prompt_version: params.prompt_version.unwrap_or(0),
        metric: params.metric.unwrap_or_default(),
        page: Some(page(params.page_size, params.page_token)?),
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .evaluation
        .clone()
        .list_score_history(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(ScoreHistoryJson {
        points: response
            .points
            .into_iter()
            .map(|p| ScorePointJson {
                run_id: p.run_id,
                run_name: p.run_name,
                dataset_id: p.dataset_id,
                dataset_version: p.dataset_version,
                prompt_version: p.prompt_version,
                model: p.model,
                metric: p.metric,
                count: p.count,
                mean: p.mean,
                std_dev: p.std_dev,
                ci_low: p.ci_low,
                ci_high: p.ci_high,
                finished_at: rfc3339(p.finished_at.as_ref()),
            })
            .collect(),
        next_page_token: response.next_page_token,
    }))
}

/// Create a dataset.
#[utoipa::path(post, path = "/api/v1/datasets", tag = "evaluation", request_body = NewDatasetBody,
    responses(
        (status = 201, description = "The dataset", body = DatasetJson),
        (status = 400, description = "Invalid name or description", body = Problem, content_type = JSON_PROBLEMS),
        (status = 409, description = "A dataset with this name exists", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn create_dataset(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<NewDatasetBody>,
) -> Result<(StatusCode, Json<DatasetJson>), ServiceError> {
    let request = CreateDatasetRequest {
        name: body.name,
        description: body.description,
    };
    let dataset = state
        .evaluation
        .clone()
        .create_dataset(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(dataset.into())))
}

/// The org's datasets, newest first.
#[utoipa::path(get, path = "/api/v1/datasets", tag = "evaluation", params(DatasetsParams),
    responses((status = 200, description = "A page of datasets", body = DatasetListJson)))]
pub async fn list_datasets(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<DatasetsParams>,
) -> Result<Json<DatasetListJson>, ServiceError> {
    let request = ListDatasetsRequest {
        page: Some(page(params.page_size, params.page_token)?),
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .evaluation
        .clone()
        .list_datasets(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(DatasetListJson {
        datasets: response.datasets.into_iter().map(DatasetJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

/// A dataset with its versions.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset_id}", tag = "evaluation",
    responses(
        (status = 200, description = "The dataset", body = DatasetJson),
        (status = 404, description = "No such dataset", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn get_dataset(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(dataset_id): Path<String>,
) -> Result<Json<DatasetJson>, ServiceError> {
    let request = GetDatasetRequest {
        id: dataset_id,
        min_position: None,
    };
    let dataset = state
        .evaluation
        .clone()
        .get_dataset(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(dataset.into()))
}

/// Add a version: the body is the file (`text/csv` or `application/jsonl`).
/// A file with problems is refused whole, each problem named by line.
#[utoipa::path(post, path = "/api/v1/datasets/{dataset_id}/versions", tag = "evaluation",
    request_body(content = String, description = "CSV (header row; columns id, expected, metadata.<key>, the rest variables) or JSON Lines ({id, variables, expected, metadata} per line)", content_type = "text/csv"),
    responses(
        (status = 201, description = "The new version", body = DatasetVersionJson),
        (status = 400, description = "Problems in the file, by line", body = Problem, content_type = JSON_PROBLEMS),
        (status = 413, description = "The file is over the body limit", body = Problem, content_type = JSON_PROBLEMS),
        (status = 415, description = "Not CSV or JSON Lines", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn add_dataset_version(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(dataset_id): Path<String>,
    file: ApiFile,
) -> Result<(StatusCode, Json<DatasetVersionJson>), ServiceError> {
    let request = AddDatasetVersionRequest {
        dataset_id,
        format: file.format.to_owned(),
        content: file.bytes,
    };
    let version = state
        .evaluation
        .clone()
        .add_dataset_version(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(version.into())))
}

/// Body of `POST /api/v1/datasets/{dataset_id}/versions/from-runs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FromRunsBody {
    pub prompt_id: String,
    /// Only this version's runs (default: every version).
    pub prompt_version: Option<u64>,
    /// Runs taken, newest first (1–10,000; default 100).
    pub limit: Option<u32>,
    /// Also failed and cancelled runs (their expected output is empty).
    #[serde(default)]
    pub include_unsuccessful: bool,
}

/// Add a version built from past runs of a prompt: each run's variables,
/// its output as the expected output (run id, model and version as metadata).
#[utoipa::path(post, path = "/api/v1/datasets/{dataset_id}/versions/from-runs", tag = "evaluation",
    request_body = FromRunsBody,
    responses(
        (status = 201, description = "The new version", body = DatasetVersionJson),
        (status = 400, description = "Invalid prompt id or limit, or no finished runs match", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn add_version_from_runs(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(dataset_id): Path<String>,
    ApiJson(body): ApiJson<FromRunsBody>,
) -> Result<(StatusCode, Json<DatasetVersionJson>), ServiceError> {
    if body.limit == Some(0) {
        return Err(bad_request("limit", "1 to 10000"));
    }
    let request = AddDatasetVersionFromRunsRequest {
        dataset_id,
        prompt_id: body.prompt_id,
        prompt_version: body.prompt_version.unwrap_or(0),
        limit: body.limit.unwrap_or(0),
        include_unsuccessful: body.include_unsuccessful,
    };
    let version = state
        .evaluation
        .clone()
        .add_dataset_version_from_runs(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(version.into())))
}

/// The cases of a version, in order.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset_id}/cases", tag = "evaluation", params(CasesParams),
    responses((status = 200, description = "A page of cases", body = CaseListJson)))]
pub async fn list_cases(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(dataset_id): Path<String>,
    ApiQuery(params): ApiQuery<CasesParams>,
) -> Result<Json<CaseListJson>, ServiceError> {
    let request = ListDatasetCasesRequest {
        dataset_id,
        version: params.version.unwrap_or(0),
        page: Some(page(params.page_size, params.page_token)?),
    };
    let response = state
        .evaluation
        .clone()
        .list_dataset_cases(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(CaseListJson {
        version: response.version,
        cases: response.cases.into_iter().map(CaseJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

/// A version as a file.
#[utoipa::path(get, path = "/api/v1/datasets/{dataset_id}/export", tag = "evaluation", params(ExportParams),
    responses(
        (status = 200, description = "The file", body = String, content_type = "application/jsonl"),
        (status = 404, description = "No such dataset or version", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn export_dataset(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(dataset_id): Path<String>,
    ApiQuery(params): ApiQuery<ExportParams>,
) -> Result<Response, ServiceError> {
    let format = match params.format.as_deref() {
        None => "jsonl",
        Some(name) => match name {
            "csv" | "jsonl" => name,
            other => file_format(other).ok_or_else(|| bad_request("format", "must be csv or jsonl"))?,
        },
    };
    let request = ExportDatasetRequest {
        dataset_id: dataset_id.clone(),
        version: params.version.unwrap_or(0),
        format: format.to_owned(),
    };
    let file = state
        .evaluation
        .clone()
        .export_dataset(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    let disposition = format!(
        "attachment; filename=\"dataset-{dataset_id}-v{}.{format}\"",
        file.version
    );
    Ok((
        [
            (header::CONTENT_TYPE, file.media_type),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        file.content,
    )
        .into_response())
}

/// Start an evaluation run: every case of the dataset on every target,
/// scored with the metrics. Cases missing a variable a target's prompt needs
/// are all reported, by row, and nothing runs.
#[utoipa::path(post, path = "/api/v1/evaluation-runs", tag = "evaluation", request_body = NewEvaluationRunBody,
    responses(
        (status = 201, description = "The run, started", body = EvaluationRunJson),
        (status = 400, description = "Invalid targets or metrics, or cases missing variables (each named)", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such dataset or version", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn start_run(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<NewEvaluationRunBody>,
) -> Result<(StatusCode, Json<EvaluationRunJson>), ServiceError> {
    let request = StartEvaluationRunRequest {
        dataset_id: body.dataset_id,
        dataset_version: body.dataset_version.unwrap_or(0),
        targets: body
            .targets
            .into_iter()
            .map(|t| EvaluationTarget {
                prompt: Some(PromptRef {
                    prompt_id: t.prompt_id.unwrap_or_default(),
                    folder: t.folder.unwrap_or_default(),
                    name: t.name.unwrap_or_default(),
                }),
                label: t.label.unwrap_or_default(),
                version: t.version.unwrap_or(0),
                model: t.model.unwrap_or_default(),
            })
            .collect(),
        metrics: body.metrics.into_iter().map(MetricSpec::from).collect(),
        concurrency: body.concurrency.unwrap_or(0),
        name: body.name,
    };
    let run = state
        .evaluation
        .clone()
        .start_evaluation_run(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(run.into())))
}

/// The org's evaluation runs, newest first.
#[utoipa::path(get, path = "/api/v1/evaluation-runs", operation_id = "list_evaluation_runs", tag = "evaluation", params(RunsParams),
    responses((status = 200, description = "A page of runs", body = EvaluationRunListJson)))]
pub async fn list_runs(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<RunsParams>,
) -> Result<Json<EvaluationRunListJson>, ServiceError> {
    let request = ListEvaluationRunsRequest {
        page: Some(page(params.page_size, params.page_token)?),
        dataset_id: params.dataset_id.unwrap_or_default(),
    };
    let response = state
        .evaluation
        .clone()
        .list_evaluation_runs(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(EvaluationRunListJson {
        runs: response.runs.into_iter().map(EvaluationRunJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

/// A run: progress and, once finished, aggregates.
#[utoipa::path(get, path = "/api/v1/evaluation-runs/{run_id}", operation_id = "get_evaluation_run", tag = "evaluation",
    responses(
        (status = 200, description = "The run", body = EvaluationRunJson),
        (status = 404, description = "No such run", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn get_run(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(run_id): Path<String>,
) -> Result<Json<EvaluationRunJson>, ServiceError> {
    let run = state
        .evaluation
        .clone()
        .get_evaluation_run(outgoing(&credential, GetEvaluationRunRequest { id: run_id }))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(run.into()))
}

/// Progress as server-sent events: `progress` (the run) on every change,
/// the last one when it has finished.
#[utoipa::path(get, path = "/api/v1/evaluation-runs/{run_id}/events", tag = "evaluation",
    responses(
        (status = 200, description = "`progress` events, each the run as JSON", content_type = "text/event-stream"),
        (status = 404, description = "No such run", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn watch_run(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(run_id): Path<String>,
) -> Result<Response, ServiceError> {
    let updates = state
        .evaluation
        .clone()
        .watch_evaluation_run(outgoing(&credential, GetEvaluationRunRequest { id: run_id }))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    let events = updates.map(|item| {
        let event = match item {
            Ok(run) => Event::default()
                .event("progress")
                .json_data(EvaluationRunJson::from(run)),
            Err(status) => Event::default()
                .event("error")
                .json_data(upstream(&status).to_problem()),
        };
        Ok::<_, Infallible>(event.unwrap_or_else(|_| Event::default().event("error")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// Per-case results, in dataset order.
#[utoipa::path(get, path = "/api/v1/evaluation-runs/{run_id}/results", tag = "evaluation", params(ResultsParams),
    responses((status = 200, description = "A page of results", body = CaseResultListJson)))]
pub async fn list_results(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(run_id): Path<String>,
    ApiQuery(params): ApiQuery<ResultsParams>,
) -> Result<Json<CaseResultListJson>, ServiceError> {
    let request = ListCaseResultsRequest {
        run_id,
        page: Some(page(params.page_size, params.page_token)?),
    };
    let response = state
        .evaluation
        .clone()
        .list_case_results(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(CaseResultListJson {
        results: response.results.into_iter().map(CaseResultJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

/// Stop a run; cases not yet scored are not run.
#[utoipa::path(post, path = "/api/v1/evaluation-runs/{run_id}/cancel", tag = "evaluation",
    responses((status = 200, description = "The run, cancelled (or already finished)", body = EvaluationRunJson)))]
pub async fn cancel_run(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(run_id): Path<String>,
) -> Result<Json<EvaluationRunJson>, ServiceError> {
    let run = state
        .evaluation
        .clone()
        .cancel_evaluation_run(outgoing(&credential, CancelEvaluationRunRequest { id: run_id }))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(run.into()))
}

/// Compare this run with another run of the same dataset: per-case deltas
/// of one metric and the cases that regressed.
#[utoipa::path(get, path = "/api/v1/evaluation-runs/{run_id}/comparison", tag = "evaluation", params(ComparisonParams),
    responses(
        (status = 200, description = "The comparison", body = ComparisonJson),
        (status = 400, description = "Unknown metric or target", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn compare_runs(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(run_id): Path<String>,
    ApiQuery(params): ApiQuery<ComparisonParams>,
) -> Result<Json<ComparisonJson>, ServiceError> {
    let request = CompareEvaluationRunsRequest {
        base_run_id: params.against,
        candidate_run_id: run_id,
        metric: params.metric,
        base_target: params.against_target.unwrap_or(0),
        candidate_target: params.target.unwrap_or(0),
        threshold: params.threshold.unwrap_or(0.0),
    };
    let comparison = state
        .evaluation
        .clone()
        .compare_evaluation_runs(outgoing(&credential, request))
        .await
        .map_err(|s| upstream(&s))?
        .into_inner();
    Ok(Json(comparison.into()))
}
