//! The standalone mock provider: OpenAI's and Anthropic's wire formats
//! (SSE included) over HTTP, answered by the built-in mock models, with
//! latency and faults injected on request — for tests, benchmarks and demos.
//!
//! - `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic),
//!   `GET /v1/models`.
//! - The model picks the behaviour: `echo`, `lorem`, `slow`, `fail`, with or
//!   without a `mock/` prefix.
//! - The model name may carry faults after `;`, for clients that cannot send
//!   headers (promptops itself): `echo;fail_first=2` answers 503 to the first
//!   two requests for that name, `echo;status=429;retry_after=1`,
//!   `echo;latency_ms=300`, `echo;drop_after=1`, `echo;malformed=true`.
//! - Per request, headers inject what a real provider does on a bad day:
//!   `x-mock-latency-ms: 200` (before the first byte), `x-mock-status: 429`
//!   (answer that status; with `x-mock-retry-after: 2` for 429),
//!   `x-mock-malformed: true` (a body that is not JSON),
//!   `x-mock-drop-after: 3` (close the stream after 3 chunks; an answer
//!   asked for whole, of more than 3 tokens, is cut off halfway through
//!   its body).
//! - Server defaults for every request: [`MockConfig`] (`--latency-ms`,
//!   `--error-rate`).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use http::{HeaderMap, StatusCode, header};
use promptops_proto::prompts::v1::{ChatMessage, ChatRole};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::mock;
use crate::models::{self, ModelSpec};

/// Defaults applied to every request.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    /// Added before the first byte of every answer.
    pub latency_ms: u64,
    /// The fraction of requests (0-1) answered 500.
    pub error_rate: f64,
    /// Requests seen per model name (for `fail_first`).
    pub seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>,
}

/// The mock provider's routes.
pub fn router(config: MockConfig) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", post(openai))
        .route("/v1/messages", post(anthropic))
        .route("/v1/models", get(list_models))
        .route("/v1/embeddings", post(embeddings))
        .with_state(config)
}

/// What the headers ask for.
#[derive(Debug, Default)]
struct Faults {
    latency_ms: u64,
    status: Option<u16>,
    retry_after: Option<String>,
    malformed: bool,
    drop_after: Option<usize>,
    /// Requests seen for this model name, this one included.
    seen: u64,
}

fn faults(headers: &HeaderMap, config: &MockConfig, model: &str) -> Faults {
    let options: std::collections::HashMap<&str, &str> = model
        .split(';')
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let seen = {
        let mut seen = config
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = seen.entry(model.to_owned()).or_insert(0);
        *count += 1;
        *count
    };
    let failing_first = options
        .get("fail_first")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| seen <= n);
    let get = |name: &str| {
        headers.get(name).and_then(|v| v.to_str().ok()).or_else(|| {
            options
                .get(name.trim_start_matches("x-mock-").replace('-', "_").as_str())
                .copied()
        })
    };
    let random_error = config.error_rate > 0.0 && rand::random::<f64>() < config.error_rate;
    Faults {
        latency_ms: get("x-mock-latency-ms")
            .and_then(|v| v.parse().ok())
            .unwrap_or(config.latency_ms),
        status: get("x-mock-status")
            .and_then(|v| v.parse().ok())
            .or(failing_first.then_some(503))
            .or(random_error.then_some(500)),
        retry_after: get("x-mock-retry-after").map(str::to_owned),
        malformed: get("x-mock-malformed") == Some("true"),
        drop_after: get("x-mock-drop-after").and_then(|v| v.parse().ok()),
        seen,
    }
}

fn spec_for(model: &str) -> Option<&'static ModelSpec> {
    let model = model.split(';').next().unwrap_or(model);
    let name = model.strip_prefix("mock/").unwrap_or(model);
    models::find(&format!("mock/{name}")).map(AsRef::as_ref)
}

fn role(name: &str) -> ChatRole {
    match name {
        "system" | "developer" => ChatRole::System,
        "assistant" => ChatRole::Assistant,
        _ => ChatRole::User,
    }
}

/// Message content as text: a string, or the text parts of a list.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

fn error(status: StatusCode, message: &str, retry_after: Option<&str>) -> Response {
    let body = Json(json!({"error": {"message": message, "type": "mock_error", "code": status.as_u16()}}));
    match retry_after {
        Some(seconds) => (status, [(header::RETRY_AFTER, seconds.to_owned())], body).into_response(),
        None => (status, body).into_response(),
    }
}

/// Applies the faults that answer before any content; `Some` = answered.
async fn before_content(faults: &Faults) -> Option<Response> {
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    if let Some(status) = faults.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Some(error(
            status,
            "injected by x-mock-status",
            faults.retry_after.as_deref(),
        ));
    }
    if faults.malformed {
        return Some(
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                "{\"id\": \"broken\", \"choices\": [",
            )
                .into_response(),
        );
    }
    None
}

/// The model asked for and the faults to inject; or the answer already
/// given (unknown model, or a fault that answers before any content).
async fn admit(
    headers: &HeaderMap,
    config: &MockConfig,
    request: &Value,
) -> Result<(String, &'static ModelSpec, Faults), Response> {
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let faults = faults(headers, config, &model);
    let Some(spec) = spec_for(&model) else {
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("model {model:?} does not exist"),
            None,
        ));
    };
    if let Some(answered) = before_content(&faults).await {
        return Err(answered);
    }
    Ok((model, spec, faults))
}

/// Runs the mock model, streaming pieces into the returned receiver.
fn generate(
    spec: &'static ModelSpec,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u32>,
) -> (
    mpsc::Receiver<String>,
    tokio::task::JoinHandle<Result<mock::Completion, mock::CallError>>,
) {
    let (tx, rx) = mpsc::channel(64);
    #[allow(clippy::disallowed_methods, reason = "bounded by the response that reads it")]
    let call = tokio::spawn(async move {
        mock::complete(spec, &messages, max_tokens, Some(&tx), &CancellationToken::new()).await
    });
    (rx, call)
}

/// The provider-style rate-limit headers: 10,000 requests a minute, one used
/// per request seen for the model.
fn with_rate_limits(mut response: Response, faults: &Faults, anthropic: bool) -> Response {
    let remaining = 10_000_u64.saturating_sub(faults.seen).to_string();
    let names: [&str; 3] = if anthropic {
        [
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
        ]
    } else {
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ]
    };
    let headers = response.headers_mut();
    for (name, value) in names.into_iter().zip(["10000", remaining.as_str(), "60s"]) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

/// A whole answer; cut off halfway through its body (the connection
/// dropped) when `drop_after` is fewer tokens than it has.
fn whole(faults: &Faults, done: &mock::Completion, answer: Value) -> Response {
    let tokens = usize::try_from(done.output_tokens).unwrap_or(usize::MAX);
    if faults.drop_after.is_none_or(|n| tokens <= n) {
        return Json(answer).into_response();
    }
    let text = answer.to_string();
    let half = Bytes::copy_from_slice(&text.as_bytes()[..text.len() / 2]);
    let parts = futures::stream::iter([
        Ok(half),
        Err(std::io::Error::other("the mock drops the connection")),
    ]);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(parts),
    )
        .into_response()
}

fn sse(lines: impl futures::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(lines.map(|line| Ok::<_, Infallible>(Bytes::from(line))));
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn openai(
    State(config): State<MockConfig>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let (model, spec, faults) = match admit(&headers, &config, &request).await {
        Ok(admitted) => admitted,
        Err(answered) => return answered,
    };
    let messages: Vec<ChatMessage> = request["messages"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| ChatMessage {
                    role: role(m["role"].as_str().unwrap_or("user")) as i32,
                    content: text_of(&m["content"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let max_tokens = request["max_completion_tokens"]
        .as_u64()
        .or(request["max_tokens"].as_u64())
        .and_then(|m| u32::try_from(m).ok());
    let id = format!("chatcmpl-mock-{}", uuid::Uuid::now_v7().simple());
    let created = time::OffsetDateTime::now_utc().unix_timestamp();
    let (mut pieces, call) = generate(spec, messages, max_tokens);
    if request["stream"].as_bool() != Some(true) {
        let mut output = String::new();
        while let Some(piece) = pieces.recv().await {
            output.push_str(&piece);
        }
        return match call.await {
            Ok(Ok(done)) => with_rate_limits(
                whole(
                    &faults,
                    &done,
                    json!({
                        "id": id, "object": "chat.completion", "created": created, "model": model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": done.output},
                            "finish_reason": done.finish_reason}],
                        "usage": {"prompt_tokens": done.input_tokens, "completion_tokens": done.output_tokens,
                            "total_tokens": done.input_tokens + done.output_tokens},
                    }),
                ),
                &faults,
                false,
            ),
            Ok(Err(err)) => error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string(), None),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string(), None),
        };
    }
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let drop_after = faults.drop_after;
    let chunk = move |delta: Value, finish: Value| {
        format!(
            "data: {}\n\n",
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        )
    };
    let lines = async_stream(move |tx| async move {
        let mut sent = 0;
        if tx
            .send(chunk(json!({"role": "assistant", "content": ""}), Value::Null))
            .await
            .is_err()
        {
            return;
        }
        while let Some(piece) = pieces.recv().await {
            if drop_after.is_some_and(|n| sent >= n) {
                return; // the connection ends mid-stream
            }
            if tx
                .send(chunk(json!({"content": piece}), Value::Null))
                .await
                .is_err()
            {
                return;
            }
            sent += 1;
        }
        let Ok(Ok(done)) = call.await else {
            let _ = tx
                .send("data: {\"error\": {\"message\": \"the mock model failed\"}}\n\n".into())
                .await;
            return;
        };
        let _ = tx.send(chunk(json!({}), json!(done.finish_reason))).await;
        if include_usage {
            let usage = json!({"choices": [], "usage": {"prompt_tokens": done.input_tokens,
                "completion_tokens": done.output_tokens,
                "total_tokens": done.input_tokens + done.output_tokens}});
            let _ = tx.send(format!("data: {usage}\n\n")).await;
        }
        let _ = tx.send("data: [DONE]\n\n".into()).await;
    });
    with_rate_limits(sse(lines), &faults, false)
}

async fn anthropic(
    State(config): State<MockConfig>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let (model, spec, faults) = match admit(&headers, &config, &request).await {
        Ok(admitted) => admitted,
        Err(answered) => return answered,
    };
    let mut messages = Vec::new();
    let system = text_of(&request["system"]);
    if !system.is_empty() {
        messages.push(ChatMessage {
            role: ChatRole::System as i32,
            content: system,
        });
    }
    for m in request["messages"].as_array().into_iter().flatten() {
        messages.push(ChatMessage {
            role: role(m["role"].as_str().unwrap_or("user")) as i32,
            content: text_of(&m["content"]),
        });
    }
    let max_tokens = request["max_tokens"].as_u64().and_then(|m| u32::try_from(m).ok());
    let id = format!("msg_mock_{}", uuid::Uuid::now_v7().simple());
    let stop_reason = |finish: &str| {
        if finish == "length" {
            "max_tokens"
        } else {
            "end_turn"
        }
    };
    let (mut pieces, call) = generate(spec, messages, max_tokens);
    if request["stream"].as_bool() != Some(true) {
        while pieces.recv().await.is_some() {}
        return match call.await {
            Ok(Ok(done)) => with_rate_limits(
                whole(
                    &faults,
                    &done,
                    json!({
                        "id": id, "type": "message", "role": "assistant", "model": model,
                        "content": [{"type": "text", "text": done.output}],
                        "stop_reason": stop_reason(done.finish_reason), "stop_sequence": null,
                        "usage": {"input_tokens": done.input_tokens, "output_tokens": done.output_tokens},
                    }),
                ),
                &faults,
                true,
            ),
            Ok(Err(err)) => error(StatusCode::SERVICE_UNAVAILABLE, &err.to_string(), None),
            Err(err) => error(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string(), None),
        };
    }
    let drop_after = faults.drop_after;
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let lines = async_stream(move |tx| async move {
        let start = json!({"type": "message_start", "message": {"id": id, "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}});
        let block = json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}});
        for line in [event("message_start", start), event("content_block_start", block)] {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let mut sent = 0;
        while let Some(piece) = pieces.recv().await {
            if drop_after.is_some_and(|n| sent >= n) {
                return;
            }
            let delta = json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}});
            if tx.send(event("content_block_delta", delta)).await.is_err() {
                return;
            }
            sent += 1;
        }
        let Ok(Ok(done)) = call.await else {
            let _ = tx
                .send(event(
                    "error",
                    json!({"type": "error", "error": {"type": "api_error",
                    "message": "the mock model failed"}}),
                ))
                .await;
            return;
        };
        let _ = tx
            .send(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ))
            .await;
        let _ = tx
            .send(event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(done.finish_reason)},
                    "usage": {"input_tokens": done.input_tokens, "output_tokens": done.output_tokens}}),
            ))
            .await;
        let _ = tx
            .send(event("message_stop", json!({"type": "message_stop"})))
            .await;
    });
    with_rate_limits(sse(lines), &faults, true)
}

/// OpenAI's embeddings format: the mock's deterministic embeddings of
/// `input` (a string or an array of strings), whatever the model.
async fn embeddings(Json(body): Json<Value>) -> Response {
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    if inputs.is_empty() {
        let error = json!({"error": {"message": "input must be a string or an array of strings", "type": "invalid_request_error"}});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let tokens: u64 = inputs
        .iter()
        .map(|t| crate::tokens::Tokenizer::Words.count(t))
        .sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": crate::mock::embed(text)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": body["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
    .into_response()
}

async fn list_models() -> Json<Value> {
    let data: Vec<Value> = models::built_in()
        .iter()
        .map(|m| json!({"id": m.id, "object": "model", "created": 0, "owned_by": "mock"}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}

/// A stream fed by `produce` through a channel (ends when it returns).
fn async_stream<F, Fut>(produce: F) -> impl futures::Stream<Item = String> + Send + 'static
where
    F: FnOnce(mpsc::Sender<String>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    #[allow(clippy::disallowed_methods, reason = "ends with the response that reads it")]
    tokio::spawn(produce(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use http::Request;
    use tower::ServiceExt as _;

    use super::*;

    async fn call(path: &str, headers: &[(&str, &str)], body: Value) -> (StatusCode, HeaderMap, String) {
        let mut request = Request::post(path).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router(MockConfig::default())
            .oneshot(request.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn chat(stream: bool) -> Value {
        json!({"model": "mock/echo", "stream": stream, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "one two"}]})
    }

    #[tokio::test]
    async fn openai_format_whole_and_streamed() {
        let (status, _, body) = call("/v1/chat/completions", &[], chat(false)).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "one two");
        assert_eq!(v["usage"]["completion_tokens"], 2);
        let (_, headers, body) = call("/v1/chat/completions", &[], chat(true)).await;
        assert_eq!(headers["content-type"], "text/event-stream");
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        assert_eq!(
            body.matches("\"content\":\"").count(),
            3,
            "role chunk + 2 pieces: {body}"
        );
        assert!(body.contains("\"completion_tokens\":2"), "{body}");
    }

    #[tokio::test]
    async fn anthropic_format_whole_and_streamed() {
        let request = json!({"model": "echo", "max_tokens": 100, "system": "be brief",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}]});
        let (status, _, body) = call("/v1/messages", &[], request.clone()).await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["content"][0]["text"], "hi there");
        assert_eq!(v["stop_reason"], "end_turn");
        let mut streamed = request;
        streamed["stream"] = json!(true);
        let (_, _, body) = call("/v1/messages", &[], streamed).await;
        for event in [
            "message_start",
            "content_block_delta",
            "message_delta",
            "message_stop",
        ] {
            assert!(body.contains(&format!("event: {event}\n")), "{event}: {body}");
        }
    }

    #[tokio::test]
    async fn faults_can_ride_on_the_model_name() {
        let app = router(MockConfig::default());
        let request = |model: &str| {
            Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"model": model, "messages": [{"role": "user", "content": "x"}]}).to_string(),
                ))
                .unwrap()
        };
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(
                app.clone()
                    .oneshot(request("echo;fail_first=2"))
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(statuses, [503, 503, 200]);
        let limited = app
            .oneshot(request("echo;status=429;retry_after=1"))
            .await
            .unwrap();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "1");
    }

    #[tokio::test]
    async fn faults_are_injected_on_request() {
        let (status, headers, _) = call(
            "/v1/chat/completions",
            &[("x-mock-status", "429"), ("x-mock-retry-after", "2")],
            chat(false),
        )
        .await;
        assert_eq!(
            (status.as_u16(), headers["retry-after"].to_str().unwrap()),
            (429, "2")
        );
        let (status, _, body) = call(
            "/v1/chat/completions",
            &[("x-mock-malformed", "true")],
            chat(false),
        )
        .await;
        assert_eq!(status, 200);
        assert!(serde_json::from_str::<Value>(&body).is_err());
        let (_, _, body) = call("/v1/chat/completions", &[("x-mock-drop-after", "1")], chat(true)).await;
        assert!(!body.contains("[DONE]"), "dropped mid-stream: {body}");
        // Asked for whole: the body breaks off (two tokens, one allowed).
        let response = router(MockConfig::default())
            .oneshot(
                Request::post("/v1/chat/completions")
                    .header("content-type", "application/json")
                    .header("x-mock-drop-after", "1")
                    .body(Body::from(chat(false).to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .is_err()
        );
        let (status, _, body) =
            call("/v1/chat/completions", &[("x-mock-drop-after", "2")], chat(false)).await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["usage"]["completion_tokens"],
            2
        );
        let (status, _, _) = call(
            "/v1/chat/completions",
            &[],
            json!({"model": "gpt-9", "messages": []}),
        )
        .await;
        assert_eq!(status, 404);
    }
}
