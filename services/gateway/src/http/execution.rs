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
    ExecuteRequest, GetRunRequest, ListModelsRequest, ListRunsRequest, Model, Parameters, Run, RunStatus,
    execute_chunk,
};
use promptops_proto::prompts::v1::{ChatMessage, PromptRef};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::page;
use super::authn::Authenticated;
use super::extract::{ApiJson, ApiQuery};
use super::model::{ActorJson, bad_request, format_position, parse_position, rfc3339, upstream};

const JSON_PROBLEMS: &str = "application/problem+json";

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
}

/// Micro-USD as an exact decimal string.
fn usd_from_micro(micro: i64) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let micro = micro.unsigned_abs();
    format!("{sign}{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

/// Nano-USD as an exact decimal string.
pub fn usd_from_nano(nano: i64) -> String {
    let sign = if nano < 0 { "-" } else { "" };
    let nano = nano.unsigned_abs();
    format!("{sign}{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

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
        parameters: Some(Parameters {
            temperature: body.parameters.temperature,
            top_p: body.parameters.top_p,
            max_tokens: body.parameters.max_tokens,
            stop: body.parameters.stop,
        }),
    };
    let mut client = state.execution.clone();
    if !body.stream {
        let response = client
            .execute(outgoing(&credential, request))
            .await
            .map_err(|status| upstream(&status))?
            .into_inner();
        let run = response.run.ok_or_else(|| {
            ServiceError::new(ErrorClass::Internal, "the execution service returned no run")
        })?;
        return Ok(Json(ExecutedJson {
            run: run.into(),
            position: response.position.map(|p| format_position(&p)).unwrap_or_default(),
        })
        .into_response());
    }
    let chunks = client
        .execute_stream(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
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
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
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
    params(("run_id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = RunJson),
        (status = 404, description = "No such run in your org", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn get_run(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(run_id): Path<String>,
) -> Result<Json<RunJson>, ServiceError> {
    let run = state
        .execution
        .clone()
        .get_run(outgoing(
            &credential,
            GetRunRequest {
                run_id,
                min_position: None,
            },
        ))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(run.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_printed_exactly() {
        assert_eq!(usd_from_nano(1_200_000), "0.001200000");
        assert_eq!(usd_from_nano(2_500_000_001), "2.500000001");
        assert_eq!(usd_from_micro(150_000), "0.150000");
        assert_eq!(usd_from_micro(-1), "-0.000001");
    }
}
