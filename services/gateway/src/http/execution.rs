//! `/api/v1/models`, `/api/v1/executions`, `/api/v1/runs…`: running prompts
//! over HTTP, translated to the execution service's gRPC API.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{ErrorClass, Problem, ServiceError};
use promptops_prompts::exchange::{MessageDoc, role_from_name};
use promptops_proto::execution::v1::{
    CompareRequest, EmbedRequest, ExecuteChunk, ExecuteRequest, ExecuteResponse, GetRunRequest,
    ListModelsRequest, ListProvidersRequest, ListRunsRequest, Model, Parameters, Provider, ProviderKind,
    ProviderLimits, RemoveModelRequest, RemoveProviderRequest, Run, RunStatus, SetModelRequest,
    SetProviderRequest, execute_chunk,
};
use promptops_proto::prompts::v1::{ChatMessage, PromptRef};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::page;
use super::authn::Authenticated;
use super::extract::{ApiJson, ApiQuery};
use super::model::{
    ActorJson, JSON_PROBLEMS, bad_request, format_position, parse_position, rfc3339, upstream,
};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelJson {
    /// `<provider>/<model>`.
    pub id: String,
    pub provider: String,
    pub description: String,
    pub context_window: u32,
    pub max_output_tokens: u32,
    pub streaming: bool,
    pub embeddings: bool,
    /// USD per 1M tokens, as exact decimals.
    pub input_price_per_mtok_usd: String,
    pub output_price_per_mtok_usd: String,
    pub cached_input_price_per_mtok_usd: String,
    /// The provider's rate-limit headers on its last answer (absent before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimitsJson>,
    /// The last health check (absent before the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthJson>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthJson {
    pub healthy: bool,
    pub error: String,
    pub latency_us: u64,
    pub checked_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RateLimitsJson {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_requests: String,
    pub reset_tokens: String,
    pub observed_at: String,
}

pub use promptops_account::prices::{usd_from_micro, usd_from_nano};

impl From<Model> for ModelJson {
    fn from(m: Model) -> Self {
        Self {
            id: m.id,
            provider: m.provider,
            description: m.description,
            context_window: m.context_window,
            max_output_tokens: m.max_output_tokens,
            streaming: m.streaming,
            embeddings: m.embeddings,
            input_price_per_mtok_usd: usd_from_micro(m.input_price_per_mtok),
            output_price_per_mtok_usd: usd_from_micro(m.output_price_per_mtok),
            cached_input_price_per_mtok_usd: usd_from_micro(m.cached_input_price_per_mtok),
            rate_limits: m.rate_limits.map(|r| RateLimitsJson {
                limit_requests: r.limit_requests,
                remaining_requests: r.remaining_requests,
                limit_tokens: r.limit_tokens,
                remaining_tokens: r.remaining_tokens,
                reset_requests: r.reset_requests,
                reset_tokens: r.reset_tokens,
                observed_at: rfc3339(r.observed_at.as_ref()),
            }),
            health: m.health.map(|h| HealthJson {
                healthy: h.healthy,
                error: h.error,
                latency_us: h.latency_us,
                checked_at: rfc3339(h.checked_at.as_ref()),
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelListJson {
    pub models: Vec<ModelJson>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageJson {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    /// True when counted by promptops rather than reported by the provider.
    pub estimated: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunJson {
    pub id: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub prompt_id: String,
    pub prompt_version: u64,
    pub label: String,
    pub model: String,
    pub output: String,
    pub usage: UsageJson,
    /// USD, exact (nano-dollar precision).
    pub cost_usd: String,
    pub latency_us: u64,
    pub time_to_first_token_us: u64,
    pub finish_reason: String,
    pub error: String,
    pub created_at: String,
    pub actor: ActorJson,
    pub trace_id: String,
    /// A managed prompt's template variables (in history; not in streamed chunks).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variables: std::collections::BTreeMap<String, String>,
}

pub fn status_name(status: i32) -> &'static str {
    match RunStatus::try_from(status).unwrap_or(RunStatus::Unspecified) {
        RunStatus::Running => "running",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
        RunStatus::Unspecified => "unknown",
    }
}

impl From<Run> for RunJson {
    fn from(r: Run) -> Self {
        let usage = r.usage.unwrap_or_default();
        Self {
            id: r.run_id,
            status: status_name(r.status).to_owned(),
            prompt_id: r.prompt_id,
            prompt_version: r.prompt_version,
            label: r.label,
            model: r.model,
            output: r.output,
            usage: UsageJson {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cached_input_tokens: usage.cached_input_tokens,
                estimated: usage.estimated,
            },
            cost_usd: usd_from_nano(r.cost_nano_usd),
            latency_us: r.latency_us,
            time_to_first_token_us: r.time_to_first_token_us,
            finish_reason: r.finish_reason,
            error: r.error,
            created_at: rfc3339(r.created_at.as_ref()),
            actor: r.actor.into(),
            trace_id: r.trace_id,
            variables: r.variables.into_iter().collect(),
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParametersJson {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub stop: Vec<String>,
}

impl From<ParametersJson> for Parameters {
    fn from(p: ParametersJson) -> Self {
        Self {
            temperature: p.temperature,
            top_p: p.top_p,
            max_tokens: p.max_tokens,
            stop: p.stop,
        }
    }
}

/// Body of `POST /api/v1/executions`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteBody {
    /// A managed prompt by id …
    pub prompt_id: Option<String>,
    /// … or by folder and name.
    pub folder: Option<String>,
    pub name: Option<String>,
    /// A label (default `latest`) or a version number.
    pub label: Option<String>,
    pub version: Option<u64>,
    #[serde(default)]
    pub variables: HashMap<String, String>,
    /// Raw messages (with a managed prompt: appended after its messages).
    #[serde(default)]
    pub messages: Vec<MessageDoc>,
    /// Required with raw messages; overrides the prompt version's model.
    pub model: Option<String>,
    #[serde(default)]
    pub parameters: ParametersJson,
    /// Answer as server-sent events: `started`, `delta`…, `completed`.
    #[serde(default)]
    pub stream: bool,
    /// A UUID that makes a non-streaming execution idempotent: when your
    /// org already has a run with this id, it is returned instead of run again.
    pub run_id: Option<String>,
    /// Tried in order when the model fails before any output (default: the
    /// prompt version's fallbacks).
    #[serde(default)]
    pub fallback_models: Vec<String>,
}

pub fn messages_from_docs(docs: Vec<MessageDoc>, field: &str) -> Result<Vec<ChatMessage>, ServiceError> {
    docs.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = role_from_name(&m.role).ok_or_else(|| {
                bad_request(&format!("{field}[{i}].role"), "must be system, user or assistant")
            })?;
            Ok(ChatMessage {
                role: role as i32,
                content: m.content,
            })
        })
        .collect()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ExecutedJson {
    pub run: RunJson,
    /// Pass as `min_position` to `/api/v1/runs` to see the run at once.
    pub position: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsParams {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    pub prompt_id: Option<String>,
    pub prompt_version: Option<u64>,
    pub model: Option<String>,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub status: Option<String>,
    pub min_position: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// A `position` from an execute or send-message answer: the run is
    /// read once the history has reached it (read your own write).
    pub min_position: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunListJson {
    pub runs: Vec<RunJson>,
    pub next_page_token: String,
}

/// The models your org can run, with capabilities and prices.
#[utoipa::path(get, path = "/api/v1/models", tag = "execution",
    responses((status = 200, description = "Models", body = ModelListJson)))]
pub async fn list_models(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
) -> Result<Json<ModelListJson>, ServiceError> {
    let models = state
        .execution
        .clone()
        .list_models(outgoing(&credential, ListModelsRequest {}))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner()
        .models;
    Ok(Json(ModelListJson {
        models: models.into_iter().map(ModelJson::from).collect(),
    }))
}

/// Run a managed prompt or raw messages. With `"stream": true` the answer is
/// server-sent events: `started` (the run), `delta` (`{"text": …}`) and
/// `completed` (the recorded run); `error` (problem JSON) if it fails.
#[utoipa::path(post, path = "/api/v1/executions", tag = "execution", request_body = ExecuteBody,
    responses(
        (status = 200, description = "The recorded run (or an event stream)", body = ExecutedJson),
        (status = 400, description = "Unknown model, missing variables (each named), input over the context window, invalid parameters", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt, label or version", body = Problem, content_type = JSON_PROBLEMS),
        (status = 503, description = "The provider failed (the run is recorded as failed)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn execute(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ServiceError> {
    let request = ExecuteRequest {
        prompt: Some(PromptRef {
            prompt_id: body.prompt_id.unwrap_or_default(),
            folder: body.folder.unwrap_or_default(),
            name: body.name.unwrap_or_default(),
        }),
        label: body.label.unwrap_or_default(),
        version: body.version.unwrap_or(0),
        variables: body.variables,
        messages: messages_from_docs(body.messages, "messages")?,
        model: body.model.unwrap_or_default(),
        parameters: Some(body.parameters.into()),
        fallback_models: body.fallback_models,
        run_id: body.run_id.clone().unwrap_or_default(),
    };
    if body.stream && body.run_id.is_some() {
        return Err(bad_request(
            "run_id",
            "makes non-streaming executions idempotent; leave it out with stream",
        ));
    }
    let mut client = state.execution.clone();
    if !body.stream {
        let response = client
            .execute(outgoing(&credential, request))
            .await
            .map_err(|status| upstream(&status))?
            .into_inner();
        return Ok(Json(executed_json(response)?).into_response());
    }
    let chunks = client
        .execute_stream(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(sse_of_chunks(chunks))
}

/// A recorded run as the API returns it.
pub fn executed_json(response: ExecuteResponse) -> Result<ExecutedJson, ServiceError> {
    let run = response
        .run
        .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "the execution service returned no run"))?;
    Ok(ExecutedJson {
        run: run.into(),
        position: response.position.map(|p| format_position(&p)).unwrap_or_default(),
    })
}

/// A run's chunks as server-sent events: `started`, `delta`
/// (`{"text": …}`), `completed`, or `error` (problem JSON).
pub fn sse_of_chunks(chunks: tonic::Streaming<ExecuteChunk>) -> Response {
    let events = chunks.map(|item| {
        let event = match item {
            Ok(chunk) => match chunk.kind {
                Some(execute_chunk::Kind::Started(run)) => {
                    Event::default().event("started").json_data(RunJson::from(run))
                }
                Some(execute_chunk::Kind::Delta(text)) => Event::default()
                    .event("delta")
                    .json_data(serde_json::json!({ "text": text })),
                Some(execute_chunk::Kind::Completed(run)) => {
                    Event::default().event("completed").json_data(RunJson::from(run))
                }
                None => Ok(Event::default().comment("empty chunk")),
            },
            Err(status) => Event::default()
                .event("error")
                .json_data(upstream(&status).to_problem()),
        };
        Ok::<_, Infallible>(event.unwrap_or_else(|_| Event::default().event("error")))
    });
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

/// Body of `POST /api/v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedBody {
    /// An embedding model, e.g. `mock/embed`.
    pub model: String,
    /// One text or 1–256 texts.
    #[schema(value_type = Vec<String>)]
    pub input: EmbedInput,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingJson {
    pub index: usize,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingsJson {
    pub model: String,
    /// One per input, in order.
    pub data: Vec<EmbeddingJson>,
    /// The recorded run: input tokens and cost.
    pub run: RunJson,
}

/// Embeddings of texts on an embedding model (recorded as a run).
#[utoipa::path(post, path = "/api/v1/embeddings", tag = "execution", request_body = EmbedBody,
    responses(
        (status = 200, description = "The embeddings", body = EmbeddingsJson),
        (status = 400, description = "Not an embedding model, no inputs, input too long", body = Problem, content_type = JSON_PROBLEMS),
        (status = 503, description = "The provider failed (the run is recorded as failed)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn embed(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<EmbedBody>,
) -> Result<Json<EmbeddingsJson>, ServiceError> {
    let inputs = match body.input {
        EmbedInput::One(text) => vec![text],
        EmbedInput::Many(texts) => texts,
    };
    let request = EmbedRequest {
        model: body.model,
        inputs,
    };
    let response = state
        .execution
        .clone()
        .embed(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let run = response.run.unwrap_or_default();
    Ok(Json(EmbeddingsJson {
        model: run.model.clone(),
        data: response
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(index, e)| EmbeddingJson {
                index,
                embedding: e.values,
            })
            .collect(),
        run: run.into(),
    }))
}

/// Runs, newest first: the last runs of a prompt or version, filtered.
#[utoipa::path(get, path = "/api/v1/runs", tag = "execution", params(RunsParams),
    responses(
        (status = 200, description = "A page of runs", body = RunListJson),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn list_runs(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<RunsParams>,
) -> Result<Json<RunListJson>, ServiceError> {
    let status = match params.status.as_deref() {
        None => RunStatus::Unspecified,
        Some("running") => RunStatus::Running,
        Some("completed") => RunStatus::Completed,
        Some("failed") => RunStatus::Failed,
        Some("cancelled") => RunStatus::Cancelled,
        Some(_) => {
            return Err(bad_request(
                "status",
                "must be running, completed, failed or cancelled",
            ));
        }
    };
    let request = ListRunsRequest {
        page: Some(page(params.page_size, params.page_token)?),
        prompt_id: params.prompt_id.unwrap_or_default(),
        prompt_version: params.prompt_version.unwrap_or(0),
        model: params.model.unwrap_or_default(),
        status: status as i32,
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .execution
        .clone()
        .list_runs(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(RunListJson {
        runs: response.runs.into_iter().map(RunJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

/// One run.
#[utoipa::path(get, path = "/api/v1/runs/{run_id}", tag = "execution",
    params(("run_id" = String, Path, description = "The run's id"), RunParams),
    responses(
        (status = 200, description = "The run", body = RunJson),
        (status = 400, description = "A malformed run id or position", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such run in your org", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn get_run(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(run_id): Path<String>,
    ApiQuery(params): ApiQuery<RunParams>,
) -> Result<Json<RunJson>, ServiceError> {
    let min_position = parse_position(params.min_position.as_deref())?;
    let run = state
        .execution
        .clone()
        .get_run(outgoing(&credential, GetRunRequest { run_id, min_position }))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(run.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(micro_usd("p", "0.15").unwrap(), 150_000);
        assert_eq!(micro_usd("p", "2").unwrap(), 2_000_000);
        assert_eq!(micro_usd("p", "0.000001").unwrap(), 1);
        for bad in ["-1", "0.0000001", "1e3", "", ".5", "abc"] {
            assert!(micro_usd("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn money_is_printed_exactly() {
        assert_eq!(usd_from_nano(1_200_000), "0.001200000");
        assert_eq!(usd_from_nano(2_500_000_001), "2.500000001");
        assert_eq!(usd_from_micro(150_000), "0.150000");
        assert_eq!(usd_from_micro(-1), "-0.000001");
    }
}

// ---- providers and models of the org --------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderJson {
    pub name: String,
    /// `openai`, `anthropic` or `openai_compatible`.
    pub kind: String,
    pub base_url: String,
    pub has_credential: bool,
    /// e.g. `sk-…1234`; the key itself is never returned.
    pub credential_hint: String,
    /// The limits in force (defaults filled in).
    pub limits: ProviderLimitsJson,
}

/// How calls to one provider are bounded; in a request, an absent or 0
/// field means the default.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderLimitsJson {
    /// Calls in flight at once per replica (default 64, 1–10,000).
    pub max_concurrent_calls: u32,
    /// Wait for the provider's first byte (default 30,000 ms, 100–600,000).
    pub first_byte_timeout_ms: u32,
    /// Consecutive failures of a model that open its circuit (default 5, 1–1,000).
    pub failures_to_open: u32,
    /// How long an open circuit rejects calls before one trial (default 30,000 ms, 100–3,600,000).
    pub open_for_ms: u32,
}

impl From<ProviderLimits> for ProviderLimitsJson {
    fn from(l: ProviderLimits) -> Self {
        Self {
            max_concurrent_calls: l.max_concurrent_calls,
            first_byte_timeout_ms: l.first_byte_timeout_ms,
            failures_to_open: l.failures_to_open,
            open_for_ms: l.open_for_ms,
        }
    }
}

impl From<ProviderLimitsJson> for ProviderLimits {
    fn from(l: ProviderLimitsJson) -> Self {
        Self {
            max_concurrent_calls: l.max_concurrent_calls,
            first_byte_timeout_ms: l.first_byte_timeout_ms,
            failures_to_open: l.failures_to_open,
            open_for_ms: l.open_for_ms,
        }
    }
}

fn kind_name(kind: i32) -> &'static str {
    match ProviderKind::try_from(kind).unwrap_or(ProviderKind::Unspecified) {
        ProviderKind::Openai => "openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::OpenaiCompatible => "openai_compatible",
        ProviderKind::Unspecified => "unknown",
    }
}

impl From<Provider> for ProviderJson {
    fn from(p: Provider) -> Self {
        Self {
            name: p.name,
            kind: kind_name(p.kind).to_owned(),
            base_url: p.base_url,
            has_credential: p.has_credential,
            credential_hint: p.credential_hint,
            limits: p.limits.unwrap_or_default().into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProviderListJson {
    pub providers: Vec<ProviderJson>,
}

/// Body of `PUT /api/v1/providers/{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    /// `openai`, `anthropic` or `openai_compatible` (vLLM, TGI, Ollama, …).
    pub kind: String,
    /// e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// Write-only: stored encrypted, shown masked, never logged.
    pub api_key: Option<String>,
    /// Skip the check call against the provider.
    #[serde(default)]
    pub skip_validation: bool,
    #[serde(default)]
    pub limits: Option<ProviderLimitsJson>,
}

/// Body of `POST /api/v1/models`: a model on one of your providers.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelBody {
    /// `<provider>/<name>`.
    pub id: String,
    /// The provider's name for it.
    pub upstream_model: String,
    pub context_window: u32,
    pub max_output_tokens: u32,
    /// USD per 1M tokens as exact decimals (up to 6 places), e.g. `"0.15"`.
    pub input_price_per_mtok_usd: String,
    pub output_price_per_mtok_usd: String,
    #[serde(default)]
    pub cached_input_price_per_mtok_usd: Option<String>,
    /// An embedding model (OpenAI's `/embeddings`; `max_output_tokens` 0).
    #[serde(default)]
    pub embeddings: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ModelIdParams {
    pub id: String,
}

/// `"0.15"` → 150000 micro-USD; exact, no floats.
pub fn micro_usd(field: &str, value: &str) -> Result<i64, ServiceError> {
    let invalid = || {
        bad_request(
            field,
            "a non-negative decimal with at most 6 places, e.g. \"0.15\"",
        )
    };
    let (whole, fraction) = value.trim().split_once('.').unwrap_or((value.trim(), ""));
    if whole.is_empty()
        || fraction.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(invalid());
    }
    let whole: i64 = whole.parse().map_err(|_| invalid())?;
    let fraction: i64 = format!("{fraction:0<6}").parse().map_err(|_| invalid())?;
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(fraction))
        .ok_or_else(invalid)
}

/// Your org's providers.
#[utoipa::path(get, path = "/api/v1/providers", tag = "execution",
    responses((status = 200, description = "Providers (keys masked)", body = ProviderListJson)))]
pub async fn list_providers(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
) -> Result<Json<ProviderListJson>, ServiceError> {
    let providers = state
        .execution
        .clone()
        .list_providers(outgoing(&credential, ListProvidersRequest {}))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner()
        .providers;
    Ok(Json(ProviderListJson {
        providers: providers.into_iter().map(ProviderJson::from).collect(),
    }))
}

/// Add or change a provider. Its address and key are checked with a cheap
/// call (its model list) before anything is stored; the key is stored
/// encrypted (AES-256-GCM, a data key per org wrapped by the master key).
#[utoipa::path(put, path = "/api/v1/providers/{name}", tag = "execution", request_body = ProviderBody,
    params(("name" = String, Path, description = "`[a-z0-9-]`, the first part of its models' ids")),
    responses(
        (status = 200, description = "Stored", body = ProviderJson),
        (status = 400, description = "Invalid, or the provider refused the address or key", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "Needs settings:manage", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn set_provider(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ProviderBody>,
) -> Result<Json<ProviderJson>, ServiceError> {
    let kind = match body.kind.as_str() {
        "openai" => ProviderKind::Openai,
        "anthropic" => ProviderKind::Anthropic,
        "openai_compatible" => ProviderKind::OpenaiCompatible,
        _ => {
            return Err(bad_request(
                "kind",
                "must be openai, anthropic or openai_compatible",
            ));
        }
    };
    let request = SetProviderRequest {
        name,
        kind: kind as i32,
        base_url: body.base_url,
        api_key: body.api_key.unwrap_or_default(),
        skip_validation: body.skip_validation,
        limits: body.limits.map(ProviderLimits::from),
    };
    let provider = state
        .execution
        .clone()
        .set_provider(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(provider.into()))
}

/// Remove a provider (once it has no models).
#[utoipa::path(delete, path = "/api/v1/providers/{name}", tag = "execution",
    params(("name" = String, Path, description = "The provider")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "It still has models", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such provider", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn remove_provider(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(name): Path<String>,
) -> Result<http::StatusCode, ServiceError> {
    state
        .execution
        .clone()
        .remove_provider(outgoing(&credential, RemoveProviderRequest { name }))
        .await
        .map_err(|status| upstream(&status))?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// Add or change a model on one of your providers.
#[utoipa::path(post, path = "/api/v1/models", tag = "execution", request_body = ModelBody,
    responses(
        (status = 200, description = "Stored", body = ModelJson),
        (status = 400, description = "Invalid (each field named)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn set_model(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<ModelBody>,
) -> Result<Json<ModelJson>, ServiceError> {
    let request = SetModelRequest {
        id: body.id,
        upstream_model: body.upstream_model,
        context_window: body.context_window,
        max_output_tokens: body.max_output_tokens,
        input_price_per_mtok: micro_usd("input_price_per_mtok_usd", &body.input_price_per_mtok_usd)?,
        output_price_per_mtok: micro_usd("output_price_per_mtok_usd", &body.output_price_per_mtok_usd)?,
        cached_input_price_per_mtok: match &body.cached_input_price_per_mtok_usd {
            Some(price) => micro_usd("cached_input_price_per_mtok_usd", price)?,
            None => micro_usd("input_price_per_mtok_usd", &body.input_price_per_mtok_usd)?,
        },
        embeddings: body.embeddings,
    };
    let model = state
        .execution
        .clone()
        .set_model(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(model.into()))
}

/// Remove a model of yours.
#[utoipa::path(delete, path = "/api/v1/models", tag = "execution", params(ModelIdParams),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such model", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn remove_model(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<ModelIdParams>,
) -> Result<http::StatusCode, ServiceError> {
    state
        .execution
        .clone()
        .remove_model(outgoing(&credential, RemoveModelRequest { id: params.id }))
        .await
        .map_err(|status| upstream(&status))?;
    Ok(http::StatusCode::NO_CONTENT)
}

/// Body of `POST /api/v1/executions/compare`: the input of an execution,
/// and what to vary.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompareBody {
    pub prompt_id: Option<String>,
    pub folder: Option<String>,
    pub name: Option<String>,
    pub label: Option<String>,
    #[serde(default)]
    pub variables: HashMap<String, String>,
    #[serde(default)]
    pub messages: Vec<MessageDoc>,
    #[serde(default)]
    pub parameters: ParametersJson,
    /// Run the input on each of these models …
    #[serde(default)]
    pub models: Vec<String>,
    /// … and/or on each of these versions of the managed prompt.
    #[serde(default)]
    pub versions: Vec<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CompareResultJson {
    /// `model:<id>` or `version:<n>`.
    pub variant: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<RunJson>,
    /// Why this variant has no completed run (recorded as failed, or refused).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CompareJson {
    pub results: Vec<CompareResultJson>,
}

/// Side by side: one input on several models or prompt versions at once,
/// every run recorded, the results together in the order asked.
#[utoipa::path(post, path = "/api/v1/executions/compare", tag = "execution", request_body = CompareBody,
    responses(
        (status = 200, description = "One result per variant", body = CompareJson),
        (status = 400, description = "Nothing to compare, or invalid input", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn compare(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<CompareBody>,
) -> Result<Json<CompareJson>, ServiceError> {
    let input = ExecuteRequest {
        prompt: Some(PromptRef {
            prompt_id: body.prompt_id.unwrap_or_default(),
            folder: body.folder.unwrap_or_default(),
            name: body.name.unwrap_or_default(),
        }),
        label: body.label.unwrap_or_default(),
        version: 0,
        variables: body.variables,
        messages: messages_from_docs(body.messages, "messages")?,
        model: String::new(),
        parameters: Some(body.parameters.into()),
        fallback_models: Vec::new(),
        run_id: String::new(),
    };
    let response = state
        .execution
        .clone()
        .compare(outgoing(
            &credential,
            CompareRequest {
                input: Some(input),
                models: body.models,
                versions: body.versions,
            },
        ))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(CompareJson {
        results: response
            .results
            .into_iter()
            .map(|r| CompareResultJson {
                variant: r.variant,
                run: r.run.map(RunJson::from),
                error: r.error,
            })
            .collect(),
    }))
}
