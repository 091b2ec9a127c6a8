//! Calling a model: the in-process mock, or a provider over HTTP in OpenAI's
//! or Anthropic's wire format, with timeouts and retries.
//!
//! - A run the caller streams is streamed from the provider too (SSE, for
//!   time to first token); a run answered whole is asked for whole — one
//!   JSON body, read once, instead of an event per token.
//!
//! - Connect timeout 5 s, first byte the provider's
//!   [`crate::models::CallLimits::first_byte_timeout`] (30 s by default), the whole run
//!   bounded by the run timeout of the caller.
//! - A retryable failure (connection error, timeout, 429, 5xx, malformed or
//!   dropped answer) **before any output** is tried again up to
//!   [`MAX_ATTEMPTS`] times, after a jittered, growing wait — or after the
//!   provider's `Retry-After`, when it gives one (at most 10 s). Once output
//!   has reached the client, a failure is final: tokens cannot be unsent.

use std::sync::Arc;
use std::time::Duration;

use promptops_proto::prompts::v1::{ChatMessage, ChatRole};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use promptops_proto::execution::v1::{Parameters, RateLimits};

use promptops_platform::egress::{self, EgressPolicy, EgressRefused};

use crate::mock::{self, CallError, Completion};
use crate::models::{ApiFormat, Backend, HttpBackend, ModelSpec};

pub const MAX_ATTEMPTS: u32 = 3;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// The HTTP client of every provider call (chat, embeddings, health and
/// validation probes): each request passes the egress policy, host names are
/// checked on what they resolve to at connection time, and redirects are not
/// followed (see `promptops_platform::egress`).
#[derive(Debug, Clone)]
pub struct ProviderClient {
    http: reqwest::Client,
    egress: Arc<EgressPolicy>,
}

impl ProviderClient {
    pub fn new(egress: Arc<EgressPolicy>) -> Self {
        let http = egress::client_builder(egress.clone())
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .unwrap_or_default();
        Self { http, egress }
    }

    /// A request to `url`, unless the egress policy refuses it.
    fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder, EgressRefused> {
        self.egress.check_url(url)?;
        Ok(self.http.request(method, url))
    }
}

/// Why a request failed, for a person: the egress refusal when that is the
/// cause (it hides deep in the connection error), else the error's text
/// without its URL (which could carry a key in its query).
fn reason(err: &reqwest::Error) -> String {
    if let Some(refused) = egress::refusal_in(err) {
        return refused.to_string();
    }
    let text = err.to_string();
    match err.url() {
        Some(url) => text
            .replace(&format!(" for url ({url})"), "")
            .replace(url.as_str(), ""),
        None => text,
    }
}

/// What a call reports besides its outcome.
#[derive(Debug, Default, Clone)]
pub struct CallReport {
    /// Output reached `deltas` (then nothing may be retried or fall back).
    pub sent_any: bool,
    /// The provider's rate-limit headers on its last answer.
    pub rate_limits: Option<RateLimits>,
}

/// What one call asks of a model.
#[derive(Debug, Clone, Copy)]
pub struct CallRequest<'a> {
    pub messages: &'a [ChatMessage],
    pub parameters: &'a Parameters,
    /// The caller reads the answer as it is generated: the provider streams
    /// it. Otherwise the provider answers whole, and `deltas` gets it as one
    /// piece.
    pub streamed: bool,
}

/// Calls `spec` with `request`, sending the answer's pieces to `deltas`.
pub async fn complete(
    client: &ProviderClient,
    spec: &ModelSpec,
    request: CallRequest<'_>,
    deltas: &mpsc::Sender<String>,
    cancel: &CancellationToken,
    report: &mut CallReport,
) -> Result<Completion, CallError> {
    let Backend::Http(http) = &spec.backend else {
        // The mock fails (if at all) before its first piece.
        let max_tokens = request.parameters.max_tokens;
        return mock::complete(spec, request.messages, max_tokens, Some(deltas), cancel)
            .await
            .inspect(|_| report.sent_any = true);
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = call_http(client, spec, http, request, deltas, cancel, report).await;
        match result {
            Err(CallError::Provider {
                retryable: true,
                retry_after,
                message,
            }) if !report.sent_any && attempt < MAX_ATTEMPTS => {
                metrics::counter!("promptops_provider_retries_total", "model" => spec.id.clone())
                    .increment(1);
                let wait = retry_after.map_or_else(
                    || {
                        let ceiling = 100_u64 << attempt;
                        Duration::from_millis(rand::random::<u64>() % ceiling + ceiling / 2)
                    },
                    |after| after.min(MAX_RETRY_AFTER),
                );
                tracing::info!(model = %spec.id, attempt, ?wait, error = %message, "retrying the provider call");
                tokio::select! {
                    () = cancel.cancelled() => return Err(CallError::Cancelled { partial: String::new(), output_tokens: 0 }),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            other => return other,
        }
    }
}

/// Embeddings of `inputs` on an embedding model: the mock's, or OpenAI's
/// `POST {base}/embeddings`; with the input tokens the provider reported.
pub async fn embed(
    client: &ProviderClient,
    spec: &ModelSpec,
    inputs: &[String],
) -> Result<(Vec<Vec<f32>>, Option<u64>), String> {
    let Backend::Http(http) = &spec.backend else {
        return Ok((inputs.iter().map(|text| mock::embed(text)).collect(), None));
    };
    if http.format != ApiFormat::OpenAi {
        return Err(format!(
            "{} has no embeddings API (only OpenAI-compatible providers do)",
            spec.id
        ));
    }
    let url = format!("{}/embeddings", http.base_url.trim_end_matches('/'));
    let body = json!({"model": http.upstream_model, "input": inputs, "encoding_format": "float"});
    let request = authorize(
        client
            .request(reqwest::Method::POST, &url)
            .map_err(|refused| refused.to_string())?
            .json(&body),
        http,
    );
    let response = tokio::time::timeout(spec.limits.first_byte_timeout, request.send())
        .await
        .map_err(|_| {
            format!(
                "no answer within {} ms",
                spec.limits.first_byte_timeout.as_millis()
            )
        })?
        // The error's text names the URL, never a header: the key stays out.
        .map_err(|e| format!("calling {url}: {}", reason(&e)))?;
    let mut response = response;
    let status = response.status();
    if !status.is_success() {
        let text = read_prefix(&mut response, MAX_ERROR_BODY_BYTES).await;
        let detail: String = String::from_utf8_lossy(&text).chars().take(300).collect();
        return Err(format!("the provider answered {status}: {detail}"));
    }
    let body = read_capped(&mut response, MAX_EMBEDDINGS_BYTES)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge(limit) => format!("the provider's answer is larger than {limit} bytes"),
            ReadError::Broken(e) => format!("reading the answer: {}", e.without_url()),
        })?;
    let answer: Value =
        serde_json::from_slice(&body).map_err(|e| format!("malformed JSON from the provider: {e}"))?;
    let mut data: Vec<(u64, Vec<f32>)> = answer["data"]
        .as_array()
        .ok_or("the provider's answer has no data")?
        .iter()
        .map(|item| {
            let values = item["embedding"]
                .as_array()
                .ok_or("an item without an embedding")?
                .iter()
                .map(|v| v.as_f64().map(|f| f as f32).ok_or("a value that is not a number"))
                .collect::<Result<Vec<f32>, _>>()?;
            Ok((item["index"].as_u64().unwrap_or(0), values))
        })
        .collect::<Result<_, &str>>()?;
    if data.len() != inputs.len() {
        return Err(format!(
            "the provider gave {} embeddings for {} inputs",
            data.len(),
            inputs.len()
        ));
    }
    data.sort_by_key(|(index, _)| *index);
    let tokens = answer["usage"]["prompt_tokens"].as_u64();
    Ok((data.into_iter().map(|(_, v)| v).collect(), tokens))
}

/// The most a provider may send for one chat answer (whole, or all of a stream).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// The most one event of a provider's stream may hold.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;
/// The most an embeddings answer may hold (256 inputs of 3,072 floats as JSON).
pub const MAX_EMBEDDINGS_BYTES: usize = 64 * 1024 * 1024;
/// How much of an error body is read (for its message); the rest is dropped.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// Why a body was not read.
#[derive(Debug)]
enum ReadError {
    /// More than the limit (by its Content-Length, or as it arrived).
    TooLarge(usize),
    Broken(reqwest::Error),
}

/// A whole body, refused past `limit` bytes: by its Content-Length before
/// anything is read, else as soon as the chunks pass it.
async fn read_capped(response: &mut reqwest::Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Broken)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The start of a body, at most `limit` bytes; the rest is never read.
async fn read_prefix(response: &mut reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]),
            _ => break,
        }
    }
    body
}

fn too_large(what: &str, limit: usize) -> CallError {
    provider_error(
        format!("the provider's {what} is larger than {limit} bytes"),
        false,
        None,
    )
}

fn provider_error(message: String, retryable: bool, retry_after: Option<Duration>) -> CallError {
    CallError::Provider {
        message,
        retryable,
        retry_after,
    }
}

fn role_name(role: i32) -> &'static str {
    match ChatRole::try_from(role).unwrap_or(ChatRole::User) {
        ChatRole::System => "system",
        ChatRole::Assistant => "assistant",
        _ => "user",
    }
}

/// The provider's request for `request` (parameters unset are left to the
/// provider's defaults).
fn request_for(http: &HttpBackend, request: CallRequest<'_>) -> (String, Value) {
    let CallRequest {
        messages,
        parameters,
        streamed,
    } = request;
    let base = http.base_url.trim_end_matches('/');
    match http.format {
        ApiFormat::OpenAi => {
            let messages: Vec<Value> = messages
                .iter()
                .map(|m| json!({"role": role_name(m.role), "content": m.content}))
                .collect();
            let mut body = json!({"model": http.upstream_model, "messages": messages, "stream": streamed});
            if streamed {
                body["stream_options"] = json!({"include_usage": true});
            }
            if let Some(max) = parameters.max_tokens {
                body["max_tokens"] = json!(max);
            }
            if !parameters.stop.is_empty() {
                body["stop"] = json!(parameters.stop);
            }
            sampling(&mut body, parameters);
            (format!("{base}/chat/completions"), body)
        }
        ApiFormat::Anthropic => {
            let system: Vec<&str> = messages
                .iter()
                .filter(|m| m.role == ChatRole::System as i32)
                .map(|m| m.content.as_str())
                .collect();
            let turns: Vec<Value> = messages
                .iter()
                .filter(|m| m.role != ChatRole::System as i32)
                .map(|m| json!({"role": role_name(m.role), "content": m.content}))
                .collect();
            let mut body = json!({"model": http.upstream_model, "messages": turns, "stream": streamed,
                "max_tokens": parameters.max_tokens.unwrap_or(1024)});
            if !system.is_empty() {
                body["system"] = json!(system.join("\n\n"));
            }
            if !parameters.stop.is_empty() {
                body["stop_sequences"] = json!(parameters.stop);
            }
            sampling(&mut body, parameters);
            (format!("{base}/messages"), body)
        }
    }
}

fn sampling(body: &mut Value, parameters: &Parameters) {
    if let Some(t) = parameters.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = parameters.top_p {
        body["top_p"] = json!(p);
    }
}

/// The provider's key in the provider's way (and Anthropic's API version).
fn authorize(request: reqwest::RequestBuilder, http: &HttpBackend) -> reqwest::RequestBuilder {
    match (&http.api_key, http.format) {
        (None, ApiFormat::OpenAi) => request,
        (None, ApiFormat::Anthropic) => request.header("anthropic-version", "2023-06-01"),
        (Some(key), ApiFormat::OpenAi) => request.bearer_auth(key.expose()),
        (Some(key), ApiFormat::Anthropic) => request
            .header("x-api-key", key.expose())
            .header("anthropic-version", "2023-06-01"),
    }
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// What the stream said so far.
#[derive(Debug, Default)]
struct Progress {
    output: String,
    output_tokens: u64,
    input_tokens: Option<u64>,
    reported_output_tokens: Option<u64>,
    cached_input_tokens: Option<u64>,
    cache_write_input_tokens: u64,
    finish_reason: Option<String>,
    done: bool,
}

/// The rate-limit headers of an answer (OpenAI's `x-ratelimit-*`,
/// Anthropic's `anthropic-ratelimit-*`), if it has any.
pub fn rate_limits_of(headers: &reqwest::header::HeaderMap) -> Option<RateLimits> {
    let text = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
            .map(str::to_owned)
    };
    let number = |names: [&str; 2]| text(names).and_then(|v| v.trim().parse::<u64>().ok());
    let limits = RateLimits {
        limit_requests: number(["x-ratelimit-limit-requests", "anthropic-ratelimit-requests-limit"]),
        remaining_requests: number([
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-requests-remaining",
        ]),
        limit_tokens: number(["x-ratelimit-limit-tokens", "anthropic-ratelimit-tokens-limit"]),
        remaining_tokens: number([
            "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-remaining",
        ]),
        reset_requests: text(["x-ratelimit-reset-requests", "anthropic-ratelimit-requests-reset"])
            .unwrap_or_default(),
        reset_tokens: text(["x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-reset"])
            .unwrap_or_default(),
        observed_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
    };
    let any = limits.limit_requests.is_some()
        || limits.remaining_requests.is_some()
        || limits.limit_tokens.is_some()
        || limits.remaining_tokens.is_some();
    any.then_some(limits)
}

fn cancelled(progress: &Progress) -> CallError {
    CallError::Cancelled {
        partial: progress.output.clone(),
        output_tokens: progress.output_tokens,
    }
}

/// One call; `report` says whether output reached `deltas` and what the
/// rate-limit headers said.
async fn call_http(
    client: &ProviderClient,
    spec: &ModelSpec,
    http: &HttpBackend,
    request: CallRequest<'_>,
    deltas: &mpsc::Sender<String>,
    cancel: &CancellationToken,
    report: &mut CallReport,
) -> Result<Completion, CallError> {
    let (url, body) = request_for(http, request);
    let sending = match client.request(reqwest::Method::POST, &url) {
        Ok(request) => authorize(request.json(&body), http),
        Err(refused) => return Err(provider_error(refused.to_string(), false, None)),
    };
    let mut progress = Progress::default();
    let sent = tokio::select! {
        () = cancel.cancelled() => return Err(cancelled(&progress)),
        sent = tokio::time::timeout(spec.limits.first_byte_timeout, sending.send()) => sent,
    };
    let response = match sent {
        Err(_) => {
            return Err(provider_error(
                format!(
                    "no answer from {url} within {} ms",
                    spec.limits.first_byte_timeout.as_millis()
                ),
                true,
                None,
            ));
        }
        // The error's text names the URL, never a header: the key stays out.
        Ok(Err(err)) => {
            let refused = egress::refusal_in(&err).is_some();
            return Err(provider_error(
                format!("cannot reach the provider: {}", reason(&err)),
                !refused,
                None,
            ));
        }
        Ok(Ok(response)) => response,
    };
    if let Some(observed) = rate_limits_of(response.headers()) {
        report.rate_limits = Some(observed);
    }
    let mut response = response;
    let status = response.status();
    if !status.is_success() {
        let after = retry_after(&response);
        let text =
            String::from_utf8_lossy(&read_prefix(&mut response, MAX_ERROR_BODY_BYTES).await).into_owned();
        let detail: String = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let retryable = status.as_u16() == 429 || status.is_server_error();
        return Err(provider_error(
            format!("the provider answered {}: {detail}", status.as_u16()),
            retryable,
            after,
        ));
    }
    if request.streamed {
        read_stream(http.format, response, &mut progress, deltas, cancel, report).await?;
    } else {
        read_whole(http.format, response, &mut progress, deltas, cancel, report).await?;
    }
    let tokenizer = spec.tokenizer;
    let usage_reported = progress.input_tokens.is_some() && progress.reported_output_tokens.is_some();
    Ok(Completion {
        input_tokens: progress
            .input_tokens
            .unwrap_or_else(|| tokenizer.count_messages(request.messages)),
        output_tokens: progress
            .reported_output_tokens
            .unwrap_or_else(|| tokenizer.count(&progress.output)),
        cached_input_tokens: progress.cached_input_tokens.unwrap_or(0),
        cache_write_input_tokens: progress.cache_write_input_tokens,
        usage_reported,
        output: progress.output,
        finish_reason: match progress.finish_reason.as_deref() {
            Some("length" | "max_tokens") => "length",
            _ => "stop",
        },
    })
}

/// Reads an SSE answer event by event, each piece of output to `deltas` as
/// it comes.
async fn read_stream(
    format: ApiFormat,
    mut response: reqwest::Response,
    progress: &mut Progress,
    deltas: &mpsc::Sender<String>,
    cancel: &CancellationToken,
    report: &mut CallReport,
) -> Result<(), CallError> {
    // Bytes, not text: a chunk may end inside a UTF-8 character.
    let mut buffer: Vec<u8> = Vec::new();
    // How much of `buffer` is known to hold no event end: only new bytes
    // are searched (and the one before them, for a "\n\n" cut in two).
    let mut scanned: usize = 0;
    let mut received = 0usize;
    loop {
        let chunk = tokio::select! {
            () = cancel.cancelled() => return Err(cancelled(progress)),
            chunk = response.chunk() => chunk,
        };
        let chunk = match chunk {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(err) => {
                return Err(provider_error(
                    format!("the provider's stream broke: {}", err.without_url()),
                    true,
                    None,
                ));
            }
        };
        received = received.saturating_add(chunk.len());
        if received > MAX_ANSWER_BYTES {
            return Err(too_large("stream", MAX_ANSWER_BYTES));
        }
        buffer.extend_from_slice(&chunk);
        loop {
            let from = scanned.saturating_sub(1);
            let Some(found) = buffer[from..].windows(2).position(|w| w == b"\n\n") else {
                scanned = buffer.len();
                if buffer.len() > MAX_EVENT_BYTES {
                    return Err(too_large("stream event", MAX_EVENT_BYTES));
                }
                break;
            };
            let end = from + found;
            scanned = 0;
            let bytes: Vec<u8> = buffer.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&bytes);
            for data in event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim)
            {
                let piece = apply_event(format, data, progress)?;
                if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                    if deltas.send(piece.clone()).await.is_err() {
                        return Err(cancelled(progress));
                    }
                    report.sent_any = true;
                    progress.output.push_str(&piece);
                    progress.output_tokens += 1;
                }
            }
        }
        if progress.done {
            break;
        }
    }
    if progress.finish_reason.is_none() && !progress.done {
        return Err(provider_error(
            "the provider's stream ended before the answer did".into(),
            true,
            None,
        ));
    }
    Ok(())
}

/// Reads a whole answer: one JSON body, its output to `deltas` in one piece.
async fn read_whole(
    format: ApiFormat,
    response: reqwest::Response,
    progress: &mut Progress,
    deltas: &mpsc::Sender<String>,
    cancel: &CancellationToken,
    report: &mut CallReport,
) -> Result<(), CallError> {
    let mut response = response;
    let body = tokio::select! {
        () = cancel.cancelled() => return Err(cancelled(progress)),
        body = read_capped(&mut response, MAX_ANSWER_BYTES) => body,
    };
    let body = body.map_err(|err| match err {
        ReadError::TooLarge(limit) => too_large("answer", limit),
        ReadError::Broken(err) => provider_error(
            format!("the provider's answer broke off: {}", err.without_url()),
            true,
            None,
        ),
    })?;
    apply_answer(format, &body, progress)?;
    if !progress.output.is_empty() {
        if deltas.send(progress.output.clone()).await.is_err() {
            return Err(cancelled(progress));
        }
        report.sent_any = true;
    }
    Ok(())
}

fn malformed_json() -> CallError {
    provider_error("the provider sent malformed JSON".into(), true, None)
}

/// A provider's JSON (an SSE event's or a whole answer), unless it is
/// malformed or an error the provider reports in it.
fn provider_json(bytes: &[u8]) -> Result<Value, CallError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| malformed_json())?;
    match value["error"]["message"].as_str() {
        Some(message) => Err(provider_error(
            format!("the provider failed: {message}"),
            true,
            None,
        )),
        None => Ok(value),
    }
}

/// Folds one SSE `data:` payload into `progress`; returns new output text.
fn apply_event(format: ApiFormat, data: &str, progress: &mut Progress) -> Result<Option<String>, CallError> {
    if data == "[DONE]" {
        progress.done = true;
        return Ok(None);
    }
    let value = provider_json(data.as_bytes())?;
    match format {
        ApiFormat::OpenAi => {
            if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                fold_openai_usage(usage, progress);
            }
            let choice = &value["choices"][0];
            if let Some(reason) = choice["finish_reason"].as_str() {
                progress.finish_reason = Some(reason.to_owned());
            }
            Ok(choice["delta"]["content"].as_str().map(str::to_owned))
        }
        ApiFormat::Anthropic => match value["type"].as_str() {
            Some("message_start") => {
                fold_anthropic_input(&value["message"]["usage"], progress);
                Ok(None)
            }
            Some("content_block_delta") => Ok(value["delta"]["text"].as_str().map(str::to_owned)),
            Some("message_delta") => {
                progress.finish_reason = value["delta"]["stop_reason"].as_str().map(str::to_owned);
                // Only when `message_start` gave none (its count includes the cache).
                if let (None, Some(n)) = (progress.input_tokens, value["usage"]["input_tokens"].as_u64()) {
                    progress.input_tokens = Some(n + progress.cached_input_tokens.unwrap_or(0));
                }
                progress.reported_output_tokens = value["usage"]["output_tokens"].as_u64();
                Ok(None)
            }
            Some("message_stop") => {
                progress.done = true;
                Ok(None)
            }
            _ => Ok(None),
        },
    }
}

/// Folds a whole answer (one JSON body) into `progress`.
fn apply_answer(format: ApiFormat, body: &[u8], progress: &mut Progress) -> Result<(), CallError> {
    let value = provider_json(body)?;
    match format {
        ApiFormat::OpenAi => {
            let choice = &value["choices"][0];
            if !choice.is_object() {
                return Err(malformed_json());
            }
            // `null` content is an answer without text (a refusal, say).
            progress.output = choice["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            progress.finish_reason = choice["finish_reason"].as_str().map(str::to_owned);
            if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
                fold_openai_usage(usage, progress);
            }
        }
        ApiFormat::Anthropic => {
            let blocks = value["content"].as_array().ok_or_else(malformed_json)?;
            progress.output = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            progress.finish_reason = value["stop_reason"].as_str().map(str::to_owned);
            let usage = &value["usage"];
            fold_anthropic_input(usage, progress);
            progress.reported_output_tokens = usage["output_tokens"].as_u64();
        }
    }
    progress.done = true;
    Ok(())
}

/// OpenAI's `usage`: prompt tokens include the cached ones.
fn fold_openai_usage(usage: &Value, progress: &mut Progress) {
    progress.input_tokens = usage["prompt_tokens"].as_u64();
    progress.reported_output_tokens = usage["completion_tokens"].as_u64();
    progress.cached_input_tokens = usage["prompt_tokens_details"]["cached_tokens"].as_u64();
}

/// Anthropic's input `usage`: it counts cache reads and writes apart from
/// `input_tokens`; the run's input is all three.
fn fold_anthropic_input(usage: &Value, progress: &mut Progress) {
    let read = usage["cache_read_input_tokens"].as_u64().unwrap_or(0);
    let written = usage["cache_creation_input_tokens"].as_u64().unwrap_or(0);
    progress.input_tokens = usage["input_tokens"]
        .as_u64()
        .filter(|n| *n > 0)
        .map(|n| n + read + written);
    progress.cached_input_tokens = Some(read);
    progress.cache_write_input_tokens = written;
}

/// A cheap call that proves a provider's address and key work: its model list.
pub async fn validate(client: &ProviderClient, http: &HttpBackend) -> Result<(), String> {
    let base = http.base_url.trim_end_matches('/');
    let request = authorize(
        client
            .request(reqwest::Method::GET, &format!("{base}/models"))
            .map_err(|refused| refused.to_string())?,
        http,
    );
    match tokio::time::timeout(Duration::from_secs(10), request.send()).await {
        Err(_) => Err("no answer within 10 s".into()),
        Ok(Err(err)) => Err(format!("cannot reach it: {}", reason(&err))),
        Ok(Ok(response)) if response.status().is_success() => Ok(()),
        Ok(Ok(response)) => Err(format!(
            "it answered {} to GET {base}/models",
            response.status().as_u16()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider on loopback that answers one request with `raw` bytes
    /// (status line, headers and body as given) and closes.
    async fn provider_answering(raw: Vec<u8>, tasks: &mut tokio::task::JoinSet<()>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tasks.spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(&raw).await;
            let _ = socket.shutdown().await;
        });
        format!("http://{address}/")
    }

    fn answer(headers: &str, body: &[u8]) -> Vec<u8> {
        let mut raw = format!("HTTP/1.1 200 OK\r\n{headers}Connection: close\r\n\r\n").into_bytes();
        raw.extend_from_slice(body);
        raw
    }

    #[tokio::test]
    async fn a_body_past_its_cap_is_refused_by_its_length_or_as_it_arrives() {
        let mut tasks = tokio::task::JoinSet::new();
        let client = reqwest::Client::new();
        // Announced too large: refused before a byte of it is read.
        let url = provider_answering(answer("Content-Length: 999999999999\r\n", b""), &mut tasks).await;
        let mut response = client.get(url).send().await.unwrap();
        assert!(matches!(
            read_capped(&mut response, 1_000).await,
            Err(ReadError::TooLarge(1_000))
        ));
        // Not announced: refused once the chunks pass the cap.
        let url = provider_answering(answer("", &[b'x'; 5_000]), &mut tasks).await;
        let mut response = client.get(url).send().await.unwrap();
        assert!(matches!(
            read_capped(&mut response, 1_000).await,
            Err(ReadError::TooLarge(1_000))
        ));
        // An error body is read only as far as its message needs.
        let url = provider_answering(answer("", &[b'e'; 200_000]), &mut tasks).await;
        let mut response = client.get(url).send().await.unwrap();
        assert_eq!(
            read_prefix(&mut response, MAX_ERROR_BODY_BYTES).await.len(),
            MAX_ERROR_BODY_BYTES
        );
    }

    #[tokio::test]
    async fn a_stream_event_past_its_cap_ends_the_call() {
        let mut tasks = tokio::task::JoinSet::new();
        let mut body = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES + 10));
        let url = provider_answering(answer("Content-Type: text/event-stream\r\n", &body), &mut tasks).await;
        let response = reqwest::Client::new().get(url).send().await.unwrap();
        let (deltas, mut received) = mpsc::channel(16);
        let mut progress = Progress::default();
        let outcome = read_stream(
            ApiFormat::OpenAi,
            response,
            &mut progress,
            &deltas,
            &CancellationToken::new(),
            &mut CallReport::default(),
        )
        .await;
        let Err(CallError::Provider {
            message, retryable, ..
        }) = outcome
        else {
            panic!("expected a provider error, got {outcome:?}");
        };
        assert_eq!(
            message,
            format!("the provider's stream event is larger than {MAX_EVENT_BYTES} bytes")
        );
        assert!(!retryable);
        assert_eq!(
            received.recv().await.as_deref(),
            Some("hi"),
            "the events before it were delivered"
        );
    }

    #[test]
    fn cached_input_tokens_are_read_from_either_provider() {
        let mut p = Progress::default();
        apply_event(
            ApiFormat::OpenAi,
            r#"{"choices":[],"usage":{"prompt_tokens":2000,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":1536}}}"#,
            &mut p,
        )
        .unwrap();
        assert_eq!((p.input_tokens, p.cached_input_tokens), (Some(2000), Some(1536)));
        // Anthropic counts cache reads and writes apart from `input_tokens`.
        let mut p = Progress::default();
        apply_event(
            ApiFormat::Anthropic,
            r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":1000,"cache_creation_input_tokens":50}}}"#,
            &mut p,
        )
        .unwrap();
        apply_event(
            ApiFormat::Anthropic,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":10,"output_tokens":7}}"#,
            &mut p,
        )
        .unwrap();
        assert_eq!(
            (p.input_tokens, p.cached_input_tokens, p.reported_output_tokens),
            (Some(1060), Some(1000), Some(7))
        );
        assert_eq!(p.cache_write_input_tokens, 50);
    }

    #[test]
    fn parameters_reach_the_request_in_each_wire_format() {
        let parameters = Parameters {
            temperature: Some(0.2),
            top_p: Some(0.9),
            max_tokens: Some(64),
            stop: vec!["END".into()],
        };
        let mut http = HttpBackend {
            format: ApiFormat::OpenAi,
            base_url: "http://x/v1".into(),
            upstream_model: "m".into(),
            api_key: None,
        };
        let messages = [ChatMessage {
            role: ChatRole::User as i32,
            content: "hi".into(),
        }];
        let streamed = CallRequest {
            messages: &messages,
            parameters: &parameters,
            streamed: true,
        };
        let (_, body) = request_for(&http, streamed);
        assert_eq!(
            (
                &body["temperature"],
                &body["top_p"],
                &body["max_tokens"],
                &body["stop"]
            ),
            (&json!(0.2), &json!(0.9), &json!(64), &json!(["END"]))
        );
        http.format = ApiFormat::Anthropic;
        let (_, body) = request_for(&http, streamed);
        assert_eq!(
            (&body["temperature"], &body["max_tokens"], &body["stop_sequences"]),
            (&json!(0.2), &json!(64), &json!(["END"]))
        );
        let defaults = Parameters::default();
        let whole = CallRequest {
            parameters: &defaults,
            streamed: false,
            ..streamed
        };
        let (_, body) = request_for(&http, whole);
        assert!(body.get("temperature").is_none() && body.get("stop_sequences").is_none());
        assert_eq!(body["stream"], false);
    }

    #[test]
    fn whole_answers_are_asked_for_whole() {
        let http = HttpBackend {
            format: ApiFormat::OpenAi,
            base_url: "http://x/v1".into(),
            upstream_model: "m".into(),
            api_key: None,
        };
        let defaults = Parameters::default();
        let request = |streamed| CallRequest {
            messages: &[],
            parameters: &defaults,
            streamed,
        };
        let (_, body) = request_for(&http, request(true));
        assert_eq!(
            (&body["stream"], &body["stream_options"]["include_usage"]),
            (&json!(true), &json!(true))
        );
        // OpenAI refuses `stream_options` on a request that is not streamed.
        let (_, body) = request_for(&http, request(false));
        assert_eq!(
            (&body["stream"], body.get("stream_options")),
            (&json!(false), None)
        );
    }

    #[test]
    fn whole_openai_answers_fold_into_output_usage_and_finish() {
        let mut p = Progress::default();
        let body = br#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there"},"finish_reason":"length"}],"usage":{"prompt_tokens":12,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        apply_answer(ApiFormat::OpenAi, body, &mut p).unwrap();
        assert_eq!(p.output, "Hi there");
        assert_eq!(
            (
                p.input_tokens,
                p.reported_output_tokens,
                p.cached_input_tokens,
                p.done
            ),
            (Some(12), Some(2), Some(8), true)
        );
        assert_eq!(p.finish_reason.as_deref(), Some("length"));
        for broken in [&b"{\"id\": \"broken\", \"choices\": ["[..], br#"{"choices":[]}"#] {
            assert!(matches!(
                apply_answer(ApiFormat::OpenAi, broken, &mut Progress::default()),
                Err(CallError::Provider { retryable: true, .. })
            ));
        }
        let failed = apply_answer(
            ApiFormat::OpenAi,
            br#"{"error":{"message":"overloaded"}}"#,
            &mut Progress::default(),
        );
        assert!(matches!(failed, Err(CallError::Provider { message, .. }) if message.contains("overloaded")));
    }

    #[test]
    fn whole_anthropic_answers_fold_text_blocks_and_the_cache() {
        let mut p = Progress::default();
        let body = br#"{"type":"message","content":[{"type":"text","text":"yo "},{"type":"tool_use","id":"t"},{"type":"text","text":"there"}],"stop_reason":"max_tokens","usage":{"input_tokens":10,"cache_read_input_tokens":1000,"cache_creation_input_tokens":50,"output_tokens":7}}"#;
        apply_answer(ApiFormat::Anthropic, body, &mut p).unwrap();
        assert_eq!(p.output, "yo there");
        assert_eq!(
            (p.input_tokens, p.cached_input_tokens, p.reported_output_tokens),
            (Some(1060), Some(1000), Some(7))
        );
        assert_eq!(
            (p.cache_write_input_tokens, p.finish_reason.as_deref()),
            (50, Some("max_tokens"))
        );
        assert!(
            apply_answer(
                ApiFormat::Anthropic,
                br#"{"type":"message"}"#,
                &mut Progress::default()
            )
            .is_err()
        );
    }

    #[test]
    fn openai_stream_events_fold_into_output_usage_and_finish() {
        let mut p = Progress::default();
        assert_eq!(
            apply_event(
                ApiFormat::OpenAi,
                r#"{"choices":[{"delta":{"content":"Hi"}}]}"#,
                &mut p
            )
            .unwrap(),
            Some("Hi".into())
        );
        apply_event(
            ApiFormat::OpenAi,
            r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#,
            &mut p,
        )
        .unwrap();
        apply_event(
            ApiFormat::OpenAi,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#,
            &mut p,
        )
        .unwrap();
        apply_event(ApiFormat::OpenAi, "[DONE]", &mut p).unwrap();
        assert_eq!(
            (p.input_tokens, p.reported_output_tokens, p.done),
            (Some(9), Some(1), true)
        );
        assert_eq!(p.finish_reason.as_deref(), Some("length"));
        assert!(matches!(
            apply_event(ApiFormat::OpenAi, "{not json", &mut p),
            Err(CallError::Provider { retryable: true, .. })
        ));
    }

    #[test]
    fn rate_limit_headers_of_either_provider_are_read() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert!(rate_limits_of(&headers).is_none());
        headers.insert("x-ratelimit-remaining-requests", "99".parse().unwrap());
        headers.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
        let limits = rate_limits_of(&headers).unwrap();
        assert_eq!(
            (limits.remaining_requests, limits.reset_requests.as_str()),
            (Some(99), "1s")
        );
        let mut anthropic = reqwest::header::HeaderMap::new();
        anthropic.insert("anthropic-ratelimit-tokens-remaining", "12345".parse().unwrap());
        assert_eq!(rate_limits_of(&anthropic).unwrap().remaining_tokens, Some(12345));
    }

    #[test]
    fn anthropic_stream_events_fold_too() {
        let mut p = Progress::default();
        let delta = r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"yo"}}"#;
        assert_eq!(
            apply_event(ApiFormat::Anthropic, delta, &mut p).unwrap(),
            Some("yo".into())
        );
        let end = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":4,"output_tokens":1}}"#;
        apply_event(ApiFormat::Anthropic, end, &mut p).unwrap();
        apply_event(ApiFormat::Anthropic, r#"{"type":"message_stop"}"#, &mut p).unwrap();
        assert_eq!(
            (p.input_tokens, p.reported_output_tokens, p.done),
            (Some(4), Some(1), true)
        );
    }

    #[test]
    fn anthropic_requests_move_system_messages_to_the_system_field() {
        let http = HttpBackend {
            format: ApiFormat::Anthropic,
            base_url: "http://x/v1/".into(),
            upstream_model: "claude".into(),
            api_key: None,
        };
        let messages = vec![
            ChatMessage {
                role: ChatRole::System as i32,
                content: "brief".into(),
            },
            ChatMessage {
                role: ChatRole::User as i32,
                content: "hi".into(),
            },
        ];
        let request = CallRequest {
            messages: &messages,
            parameters: &Parameters::default(),
            streamed: true,
        };
        let (url, body) = request_for(&http, request);
        assert_eq!(url, "http://x/v1/messages");
        assert_eq!(body["system"], "brief");
        assert_eq!(body["messages"].as_array().unwrap().len(), 1);
    }
}
