//! `POST /v1/chat/completions` and `GET /v1/models` in OpenAI's wire format,
//! so the official OpenAI SDKs work unchanged against promptops (base URL
//! `http://<gateway>/v1`, a promptops API key as the key).
//!
//! `model` is a model id (`mock/echo`) or a managed prompt:
//! `prompt/<folder>/<name>` (label `production`), `prompt/<name>@<label>`,
//! `prompt/<name>#<version>`; its variables go in the extra body field
//! `variables`, and the request's `messages` follow the rendered ones.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use http::StatusCode;
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{ErrorClass, ServiceError};
use promptops_proto::execution::v1::{ExecuteRequest, ListModelsRequest, Parameters, Run, execute_chunk};
use promptops_proto::prompts::v1::{ChatMessage, ChatRole, PromptRef};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::authn::Authenticated;
use super::model::upstream;

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError(ServiceError);

impl From<ServiceError> for OpenAiError {
    fn from(err: ServiceError) -> Self {
        Self(err)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.0.class.http_status();
        let kind = match self.0.class {
            ErrorClass::InvalidArgument | ErrorClass::NotFound => "invalid_request_error",
            ErrorClass::Unauthenticated => "authentication_error",
            ErrorClass::PermissionDenied => "permission_error",
            ErrorClass::ResourceExhausted => "rate_limit_error",
            _ => "api_error",
        };
        let param = self.0.violations.first().map(|v| v.field.clone());
        let body = json!({
            "error": {
                "message": self.0.message,
                "type": kind,
                "param": param,
                "code": self.0.class.problem_type().rsplit(':').next().unwrap_or_default(),
            }
        });
        (status, Json(body)).into_response()
    }
}

fn invalid(param: &str, message: &str) -> OpenAiError {
    OpenAiError(ServiceError::invalid(vec![
        promptops_platform::errors::FieldViolation::new(param, message),
    ]))
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
    Null(()),
}

#[derive(Debug, Deserialize)]
struct MessageIn {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The request fields promptops uses; other OpenAI fields are accepted and ignored.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<MessageIn>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    stop: Option<Stop>,
    /// promptops: the managed prompt's variables.
    #[serde(default)]
    variables: HashMap<String, String>,
    /// promptops: models to try in order when `model` fails.
    #[serde(default)]
    fallback_models: Vec<String>,
}

/// A managed prompt named in `model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPrompt {
    pub folder: String,
    pub name: String,
    /// Empty when a version is given.
    pub label: String,
    pub version: u64,
}

/// `prompt/<path>[@label|#version]`, if `model` names a managed prompt.
pub fn managed_prompt(model: &str) -> Option<Result<ManagedPrompt, &'static str>> {
    let rest = model.strip_prefix("prompt/")?;
    let (path, label, version) = if let Some((path, version)) = rest.rsplit_once('#') {
        match version.parse::<u64>() {
            Ok(v) if v > 0 => (path, String::new(), v),
            _ => return Some(Err("the version after # must be a positive number")),
        }
    } else if let Some((path, label)) = rest.rsplit_once('@') {
        (path, label.to_owned(), 0)
    } else {
        (rest, "production".to_owned(), 0)
    };
    let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
    if name.is_empty() {
        return Some(Err("name the prompt: prompt/<folder>/<name>"));
    }
    Some(Ok(ManagedPrompt {
        folder: folder.to_owned(),
        name: name.to_owned(),
        label,
        version,
    }))
}

fn message(m: MessageIn, i: usize) -> Result<ChatMessage, OpenAiError> {
    let role = match m.role.as_str() {
        "system" | "developer" => ChatRole::System,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        _ => {
            return Err(invalid(
                &format!("messages[{i}].role"),
                "must be system, user or assistant",
            ));
        }
    };
    let content = match m.content {
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .map(|p| p["text"].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(""),
        Some(Content::Null(())) | None => String::new(),
    };
    Ok(ChatMessage {
        role: role as i32,
        content,
    })
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn usage_json(run: &Run) -> Value {
    let usage = run.usage.unwrap_or_default();
    json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
    })
}

/// OpenAI-compatible chat completions (streaming and not): OpenAI's request
/// and response formats, `usage` included; `model` may name a managed prompt
/// (`prompt/<folder>/<name>[@label|#version]`, variables in `variables`).
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    request_body(content = Object, description = "An OpenAI chat completion request"),
    responses(
        (status = 200, description = "A chat completion, or `chat.completion.chunk` events ending in `[DONE]`", body = Object),
        (status = 400, description = "OpenAI-shaped error: unknown model, missing variables, …", body = Object),
    ))]
pub async fn chat_completions(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    body: Bytes,
) -> Result<Response, OpenAiError> {
    let request: ChatRequest = serde_json::from_slice(&body)
        .map_err(|e| invalid("body", &format!("not a chat completion request: {e}")))?;
    let messages = request
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| message(m, i))
        .collect::<Result<Vec<_>, _>>()?;
    let stop = match request.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    let parameters = Some(Parameters {
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens: request.max_completion_tokens.or(request.max_tokens),
        stop,
    });
    let model_name = request.model.clone();
    let execute = match managed_prompt(&request.model) {
        Some(parsed) => {
            let managed = parsed.map_err(|m| invalid("model", m))?;
            ExecuteRequest {
                prompt: Some(PromptRef {
                    prompt_id: String::new(),
                    folder: managed.folder,
                    name: managed.name,
                }),
                label: managed.label,
                version: managed.version,
                variables: request.variables,
                messages,
                model: String::new(),
                parameters,
                fallback_models: request.fallback_models,
                run_id: String::new(),
            }
        }
        None => ExecuteRequest {
            prompt: None,
            label: String::new(),
            version: 0,
            variables: request.variables,
            messages,
            model: request.model,
            parameters,
            fallback_models: request.fallback_models,
            run_id: String::new(),
        },
    };
    let mut client = state.execution.clone();
    if !request.stream {
        let run = client
            .execute(outgoing(&credential, execute))
            .await
            .map_err(|status| upstream(&status))?
            .into_inner()
            .run
            .unwrap_or_default();
        let body = json!({
            "id": format!("chatcmpl-{}", run.run_id),
            "object": "chat.completion",
            "created": unix_now(),
            "model": model_name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": run.output, "refusal": null},
                "logprobs": null,
                "finish_reason": run.finish_reason,
            }],
            "usage": usage_json(&run),
            "system_fingerprint": null,
        });
        return Ok((StatusCode::OK, Json(body)).into_response());
    }
    let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
    let chunks = client
        .execute_stream(outgoing(&credential, execute))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let created = unix_now();
    let chunk = move |id: &str, model: &str, delta: Value, finish: Option<&str>| {
        json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        })
    };
    let mut run_id = String::new();
    let events = chunks
        .map(move |item| -> Vec<Value> {
            match item {
                Ok(c) => match c.kind {
                    Some(execute_chunk::Kind::Started(run)) => {
                        run_id = run.run_id;
                        vec![chunk(
                            &run_id,
                            &model_name,
                            json!({"role": "assistant", "content": ""}),
                            None,
                        )]
                    }
                    Some(execute_chunk::Kind::Delta(text)) => {
                        vec![chunk(&run_id, &model_name, json!({"content": text}), None)]
                    }
                    Some(execute_chunk::Kind::Completed(run)) => {
                        let mut out = vec![chunk(&run_id, &model_name, json!({}), Some(&run.finish_reason))];
                        if include_usage {
                            out.push(json!({
                                "id": format!("chatcmpl-{run_id}"),
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model_name,
                                "choices": [],
                                "usage": usage_json(&run),
                            }));
                        }
                        out
                    }
                    None => Vec::new(),
                },
                Err(status) => {
                    let err = upstream(&status);
                    vec![json!({"error": {"message": err.message, "type": "api_error", "code": null}})]
                }
            }
        })
        .flat_map(futures::stream::iter)
        .map(|value| Ok::<_, Infallible>(Event::default().data(value.to_string())))
        .chain(futures::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    Ok(Sse::new(events).into_response())
}

/// OpenAI-compatible model list.
#[utoipa::path(get, path = "/v1/models", operation_id = "list_openai_models", tag = "openai",
    responses((status = 200, description = "`{\"object\": \"list\", \"data\": [...]}`", body = Object)))]
pub async fn list_models(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
) -> Result<Json<Value>, OpenAiError> {
    let models = state
        .execution
        .clone()
        .list_models(outgoing(&credential, ListModelsRequest {}))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner()
        .models;
    let data: Vec<Value> = models
        .into_iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.provider}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_prompt_names_parse() {
        let parsed = |m: &str| {
            let p = managed_prompt(m).unwrap().unwrap();
            (p.folder, p.name, p.label, p.version)
        };
        assert_eq!(
            parsed("prompt/support/greeting"),
            ("support".into(), "greeting".into(), "production".into(), 0)
        );
        assert_eq!(
            parsed("prompt/greeting@staging"),
            (String::new(), "greeting".into(), "staging".into(), 0)
        );
        assert_eq!(
            parsed("prompt/a/b/greeting#3"),
            ("a/b".into(), "greeting".into(), String::new(), 3)
        );
        assert!(managed_prompt("prompt/greeting#x").unwrap().is_err());
        assert!(managed_prompt("mock/echo").is_none());
    }
}
