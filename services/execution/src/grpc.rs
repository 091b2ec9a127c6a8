//! `ExecutionService` over gRPC: validate, render (through the prompts
//! service, with the caller's own credential), record the start, call the
//! provider, record the end, answer.
//!
//! Every run executes in a task of the service's tracker, not in the
//! request's future: a client that goes away cannot leave a run unrecorded.
//! A streaming client that goes away cancels the provider call and the run
//! is recorded as cancelled.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use promptops_auth::roles::Permission;
use promptops_eventlog::aggregate::ExecuteError;
use promptops_eventlog::{AggregateRef, AppendError, Context, EventLog, EventMetadata};
use promptops_platform::authn::Authenticator;
use promptops_platform::caller::{Caller, forward};
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, page_size};
use promptops_platform::read_your_write;
use promptops_platform::upstream::Upstream;
use promptops_proto::common::v1::LogPosition;
use promptops_proto::execution::v1::execution_service_server::ExecutionService;
use promptops_proto::execution::v1::{
    CompareRequest, CompareResponse, CompareResult, Conversation, CreateConversationRequest, EmbedRequest,
    EmbedResponse, Embedding, ExecuteChunk, ExecuteRequest, ExecuteResponse, ExecutionCancelled,
    ExecutionCompleted, ExecutionFailed, ExecutionStarted, GetConversationRequest, GetRunRequest,
    ListConversationsRequest, ListConversationsResponse, ListModelsRequest, ListModelsResponse,
    ListProvidersRequest, ListProvidersResponse, ListRunsRequest, ListRunsResponse, Model, ModelSet,
    Parameters, Provider, ProviderKind, ProviderSet, RemoveModelRequest, RemoveModelResponse,
    RemoveProviderRequest, RemoveProviderResponse, Run, RunStatus, SendMessageRequest, SetModelRequest,
    SetProviderRequest, Usage, execute_chunk,
};
use promptops_proto::prompts::v1::prompt_service_client::PromptServiceClient;
use promptops_proto::prompts::v1::{
    ChatMessage, ChatRole, PromptRef, RenderPromptRequest, render_prompt_response,
};
use sqlx::AnyPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::accounts::{Accounts, Hold};
use crate::catalog::{self, CatalogCommand, CatalogError, Catalogs};
use crate::events::{Recorder, Terminal};
use crate::mock::CallError;
use crate::models::ModelSpec;
use crate::models::{ApiFormat, CallLimits, HttpBackend};
use crate::providers::{self, CallRequest};
use crate::resilience::{self, Resilience};
use crate::runs::{self, PROJECTION, RunFilter};
use crate::secrets::{Secret, mask};

/// Output kept in a run's record (and its event); longer output is cut here.
pub const MAX_RECORDED_OUTPUT_BYTES: usize = 64 * 1024;
/// Each input message's content kept in the start event.
pub const MAX_RECORDED_INPUT_BYTES: usize = 64 * 1024;
/// The largest input accepted, all messages together.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;
/// Texts embedded in one call, at most.
pub const MAX_EMBED_INPUTS: usize = 256;

type Result<T> = std::result::Result<T, Status>;

#[derive(Debug, Clone)]
pub struct ExecutionApi {
    pub(crate) log: EventLog,
    pub(crate) db: AnyPool,
    pub(crate) auth: Authenticator,
    pub(crate) prompts: PromptServiceClient<Upstream>,
    /// Runs execute here, never in a request's future.
    pub(crate) runs: TaskTracker,
    pub(crate) shutdown: CancellationToken,
    pub(crate) run_timeout: Duration,
    pub(crate) models: Arc<Catalogs>,
    pub(crate) http: crate::providers::ProviderClient,
    pub(crate) resilience: Arc<Resilience>,
    pub(crate) health: Arc<crate::health::HealthBoard>,
    pub(crate) accounts: Arc<Accounts>,
}

/// A validated request, ready to run.
#[derive(Debug)]
pub struct Prepared {
    pub spec: Arc<ModelSpec>,
    pub messages: Vec<ChatMessage>,
    pub parameters: Parameters,
    pub prompt_id: String,
    pub prompt_version: u64,
    pub label: String,
    pub variables: HashMap<String, String>,
    pub input_tokens: u64,
    /// Tried in order when the model fails before any output.
    pub fallbacks: Vec<Arc<ModelSpec>>,
    /// Its reservations against the org's hard budgets.
    pub hold: Hold,
}

pub(crate) fn truncate(text: &str, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text.to_owned(), false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), true)
}

/// Every problem with the overrides, against the model's limits.
pub fn validate_parameters(parameters: &Parameters, spec: &ModelSpec) -> Vec<FieldViolation> {
    let mut violations = Vec::new();
    let in_range =
        |v: Option<f64>, lo: f64, hi: f64| v.is_none_or(|v| v.is_finite() && (lo..=hi).contains(&v));
    if !in_range(parameters.temperature, 0.0, 2.0) {
        violations.push(FieldViolation::new(
            "parameters.temperature",
            "must be between 0 and 2",
        ));
    }
    if !in_range(parameters.top_p, 0.0, 1.0) {
        violations.push(FieldViolation::new("parameters.top_p", "must be between 0 and 1"));
    }
    if parameters
        .max_tokens
        .is_some_and(|m| m == 0 || m > spec.max_output_tokens)
    {
        violations.push(FieldViolation::new(
            "parameters.max_tokens",
            format!("must be between 1 and {} for {}", spec.max_output_tokens, spec.id),
        ));
    }
    if parameters.stop.len() > 4 || parameters.stop.iter().any(String::is_empty) {
        violations.push(FieldViolation::new(
            "parameters.stop",
            "at most 4 non-empty sequences",
        ));
    }
    violations
}

/// Whether a request's prompt reference names a managed prompt.
fn names_a_prompt(reference: &PromptRef) -> bool {
    !reference.prompt_id.is_empty() || !reference.name.is_empty()
}

fn unknown_model(model: &str) -> ServiceError {
    ServiceError::invalid_field(
        "model",
        format!("unknown model {model:?}; ListModels (GET /api/v1/models) lists the models you can run"),
    )
}

/// The input as one run: the messages, the model and its limits checked.
pub fn prepare_messages(
    messages: Vec<ChatMessage>,
    spec: Option<Arc<ModelSpec>>,
    model: &str,
    parameters: Parameters,
) -> std::result::Result<(Arc<ModelSpec>, Vec<ChatMessage>, Parameters, u64), ServiceError> {
    let spec = spec.ok_or_else(|| unknown_model(model))?;
    if spec.embeddings {
        return Err(ServiceError::invalid_field(
            "model",
            format!(
                "{} is an embedding model; use Embed (POST /api/v1/embeddings)",
                spec.id
            ),
        ));
    }
    let mut violations = validate_parameters(&parameters, &spec);
    if messages.is_empty() {
        violations.push(FieldViolation::new("messages", "at least one message"));
    }
    for (i, m) in messages.iter().enumerate() {
        if ChatRole::try_from(m.role).unwrap_or(ChatRole::Unspecified) == ChatRole::Unspecified {
            violations.push(FieldViolation::new(
                format!("messages[{i}].role"),
                "must be system, user or assistant",
            ));
        }
    }
    let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
    if bytes > MAX_INPUT_BYTES {
        violations.push(FieldViolation::new(
            "messages",
            format!("are {bytes} bytes; the limit is {MAX_INPUT_BYTES}"),
        ));
    }
    if !violations.is_empty() {
        return Err(ServiceError::invalid(violations));
    }
    let input_tokens = spec.tokenizer.count_messages(&messages);
    let wanted_output = u64::from(parameters.max_tokens.unwrap_or(0));
    if input_tokens + wanted_output > u64::from(spec.context_window) {
        return Err(ServiceError::invalid_field(
            "messages",
            format!(
                "the input is {input_tokens} tokens (+ {wanted_output} for the output); {} takes at most {}",
                spec.id, spec.context_window
            ),
        ));
    }
    Ok((spec, messages, parameters, input_tokens))
}

impl ExecutionApi {
    async fn caller<T>(&self, request: &Request<T>, permission: Permission) -> Result<(Caller, String)> {
        Ok(self.auth.authorize(request.metadata(), permission).await?)
    }

    /// Renders a managed prompt (through the prompts service, as the caller)
    /// or takes raw messages; checks the model, parameters and input size.
    async fn prepare(
        &self,
        caller: &Caller,
        credential: &str,
        req: ExecuteRequest,
    ) -> std::result::Result<Prepared, ServiceError> {
        let mut prepared = self.render(caller, credential, req).await?;
        self.price_and_admit(caller, &mut prepared).await?;
        Ok(prepared)
    }

    /// Prices the run's models from the price book and admits it against
    /// the org's hard budgets (reserving its worst case): in process, from
    /// the cached account.
    pub(crate) async fn price_and_admit(
        &self,
        caller: &Caller,
        prepared: &mut Prepared,
    ) -> std::result::Result<(), ServiceError> {
        let account = self.accounts.org(&caller.org_id).await?;
        let now = promptops_platform::db::unix_ms();
        prepared.spec = Accounts::priced(&account, prepared.spec.clone(), now);
        for fallback in &mut prepared.fallbacks {
            *fallback = Accounts::priced(&account, fallback.clone(), now);
        }
        if account.budgets.is_empty() {
            return Ok(());
        }
        // The worst case over the model and its fallbacks.
        let candidates = || std::iter::once(&prepared.spec).chain(&prepared.fallbacks);
        let max_output = candidates()
            .map(|spec| {
                u64::from(
                    prepared
                        .parameters
                        .max_tokens
                        .unwrap_or(spec.max_output_tokens)
                        .min(spec.max_output_tokens.max(1)),
                )
            })
            .max()
            .unwrap_or(0);
        let worst_cost = candidates()
            .map(|spec| {
                spec.cost_nano_usd(&Usage {
                    input_tokens: prepared.input_tokens,
                    output_tokens: max_output,
                    ..Usage::default()
                })
            })
            .max()
            .unwrap_or(0);
        prepared.hold = self
            .accounts
            .admit(
                &caller.org_id,
                &account,
                &caller.actor,
                prepared.input_tokens + max_output,
                worst_cost,
            )
            .await?;
        Ok(())
    }

    /// Renders a managed prompt or takes raw messages (see [`Self::prepare`]).
    async fn render(
        &self,
        caller: &Caller,
        credential: &str,
        req: ExecuteRequest,
    ) -> std::result::Result<Prepared, ServiceError> {
        let managed = req.prompt.as_ref().is_some_and(names_a_prompt);
        if managed {
            let rendered = self
                .prompts
                .clone()
                .render_prompt(forward(
                    credential,
                    caller,
                    RenderPromptRequest {
                        prompt: req.prompt.clone(),
                        label: req.label.clone(),
                        version: req.version,
                        draft: None,
                        variables: req.variables.clone(),
                    },
                ))
                .await
                .map_err(|status| ServiceError::from_status(&status))?
                .into_inner();
            let mut messages = match rendered.kind {
                Some(render_prompt_response::Kind::Text(text)) => vec![ChatMessage {
                    role: ChatRole::User as i32,
                    content: text,
                }],
                Some(render_prompt_response::Kind::Chat(chat)) => chat.messages,
                None => {
                    return Err(ServiceError::new(
                        ErrorClass::Internal,
                        "the prompt rendered to nothing",
                    ));
                }
            };
            // Messages given with a managed prompt follow the rendered ones.
            messages.extend(req.messages);
            let configured = rendered.model.unwrap_or_default();
            let model = if req.model.is_empty() {
                configured.model.clone()
            } else {
                req.model.clone()
            };
            if model.is_empty() {
                return Err(ServiceError::invalid_field(
                    "model",
                    "the prompt version names no model; give one in the request",
                ));
            }
            let overrides = req.parameters.unwrap_or_default();
            let parameters = Parameters {
                temperature: overrides.temperature.or(configured.temperature),
                top_p: overrides.top_p.or(configured.top_p),
                max_tokens: overrides.max_tokens.or(configured.max_tokens),
                stop: if overrides.stop.is_empty() {
                    configured.stop
                } else {
                    overrides.stop
                },
            };
            let spec = self.models.resolve(&caller.org_id, &model).await?;
            let (spec, messages, parameters, input_tokens) =
                prepare_messages(messages, spec, &model, parameters)?;
            let prompt_id = rendered.prompt_id;
            Ok(Prepared {
                spec,
                messages,
                parameters,
                prompt_id,
                prompt_version: rendered.version,
                label: req.label,
                variables: req.variables,
                input_tokens,
                fallbacks: self
                    .fallbacks(caller, &req.fallback_models, &configured.fallback_models)
                    .await?,
                hold: Hold::default(),
            })
        } else {
            if req.model.is_empty() {
                return Err(ServiceError::invalid_field(
                    "model",
                    "required with raw messages, e.g. mock/echo",
                ));
            }
            let spec = self.models.resolve(&caller.org_id, &req.model).await?;
            let (spec, messages, parameters, input_tokens) =
                prepare_messages(req.messages, spec, &req.model, req.parameters.unwrap_or_default())?;
            Ok(Prepared {
                spec,
                messages,
                parameters,
                prompt_id: String::new(),
                prompt_version: 0,
                label: String::new(),
                variables: req.variables,
                input_tokens,
                fallbacks: self.fallbacks(caller, &req.fallback_models, &[]).await?,
                hold: Hold::default(),
            })
        }
    }

    /// The fallback models: the request's, else the prompt version's; each
    /// must exist.
    pub(crate) async fn fallbacks(
        &self,
        caller: &Caller,
        requested: &[String],
        configured: &[String],
    ) -> std::result::Result<Vec<Arc<ModelSpec>>, ServiceError> {
        let ids = if requested.is_empty() {
            configured
        } else {
            requested
        };
        if ids.len() > 5 {
            return Err(ServiceError::invalid_field("fallback_models", "at most 5"));
        }
        let mut specs = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let spec = self.models.resolve(&caller.org_id, id).await?.ok_or_else(|| {
                ServiceError::invalid_field(format!("fallback_models[{i}]"), format!("unknown model {id:?}"))
            })?;
            specs.push(spec);
        }
        Ok(specs)
    }

    /// Starts the run in the tracker; its result arrives on the handle.
    /// The org's run `run_id` once it has ended, and the sequence of its
    /// end; `None` when there is no such run. A run still going is awaited
    /// (a run whose replica died is ended by the sweeper).
    async fn recorded_run(
        &self,
        org_id: &str,
        run_id: &str,
    ) -> std::result::Result<Option<(Run, u64)>, ServiceError> {
        let aggregate = AggregateRef::new(Context::Execution, org_id, crate::events::AGGREGATE_TYPE, run_id)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
        let deadline = tokio::time::Instant::now() + self.run_timeout * 2 + Duration::from_secs(30);
        loop {
            let events = self
                .log
                .read_aggregate(&aggregate)
                .await
                .map_err(|e| ServiceError::unavailable("the event log", e))?;
            match events.as_slice() {
                [] => return Ok(None),
                [_started] if tokio::time::Instant::now() < deadline => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => {
                            return Err(ServiceError::new(ErrorClass::Unavailable, "shutting down"));
                        }
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                [_started] => {
                    return Err(ServiceError::new(
                        ErrorClass::DeadlineExceeded,
                        format!("run {run_id} is still running"),
                    ));
                }
                [.., ended] => {
                    let at = ended.sequence;
                    read_your_write::wait_for(&self.db, PROJECTION, Some(&position(at))).await?;
                    let run = runs::get(&self.db, org_id, run_id)
                        .await
                        .map_err(|e| ServiceError::unavailable("the execution database", e))?
                        .ok_or_else(|| {
                            ServiceError::new(ErrorClass::Internal, "a recorded run is not in the history")
                        })?;
                    return Ok(Some((run, at)));
                }
            }
        }
    }

    pub(crate) fn spawn_run(
        &self,
        caller: &Caller,
        prepared: Prepared,
        chunks: Option<mpsc::Sender<Result<ExecuteChunk>>>,
        run_id: RunId,
    ) -> tokio::task::JoinHandle<std::result::Result<(Run, u64), ServiceError>> {
        let log = self.log.clone();
        let metadata = caller.event_metadata();
        let org_id = caller.org_id.clone();
        let actor = caller.actor.clone();
        let cancel = self.shutdown.child_token();
        let timeout = self.run_timeout;
        let http = self.http.clone();
        let resilience = self.resilience.clone();
        self.runs.spawn(async move {
            run(
                log,
                &http,
                &resilience,
                run_id,
                &org_id,
                actor,
                metadata,
                prepared,
                chunks,
                cancel,
                timeout,
            )
            .await
        })
    }
}

/// One embedding call on `spec`, and the end of its run recorded.
async fn embed_and_record(
    http: &crate::providers::ProviderClient,
    spec: &ModelSpec,
    inputs: &[String],
    input_tokens: u64,
    run_id: &str,
    recorder: &Recorder,
    started_at: u64,
) -> std::result::Result<(Terminal, std::result::Result<Vec<Vec<f32>>, String>), ServiceError> {
    let began = std::time::Instant::now();
    let outcome = providers::embed(http, spec, inputs).await;
    let latency_us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
    metrics::histogram!("promptops_provider_call_seconds", "model" => spec.id.clone(), "kind" => "embed")
        .record(began.elapsed().as_secs_f64());
    let (terminal, result) = match outcome {
        Ok((embeddings, reported)) => {
            let usage = Usage {
                input_tokens: reported.unwrap_or(input_tokens),
                estimated: reported.is_none(),
                ..Default::default()
            };
            let cost = spec.cost_nano_usd(&usage);
            let completed = ExecutionCompleted {
                run_id: run_id.to_owned(),
                output: format!(
                    "{} embeddings of {} dimensions",
                    embeddings.len(),
                    embeddings.first().map_or(0, Vec::len)
                ),
                usage: Some(usage),
                cost_nano_usd: cost,
                latency_us,
                model: spec.id.clone(),
                prices: Some(spec.prices),
                finish_reason: "embeddings".into(),
                ..Default::default()
            };
            (Terminal::Completed(completed), Ok(embeddings))
        }
        Err(message) => {
            let failed = ExecutionFailed {
                run_id: run_id.to_owned(),
                error_class: "provider-error".into(),
                message: message.clone(),
                latency_us,
            };
            (Terminal::Failed(failed), Err(message))
        }
    };
    recorder.ended(started_at, &terminal).await.map_err(|e| {
        metrics::counter!("promptops_runs_unrecorded_total").increment(1);
        ServiceError::unavailable("the event log (the run's end is not recorded)", e)
    })?;
    Ok((terminal, result))
}

/// How long the provider call of a run that is not streamed may take before
/// the run's start is appended on its own. A call that ends sooner is
/// recorded with one append of the start and the end (one commit, not two);
/// a longer one has its start in the log from then on, while it runs.
pub(crate) const START_GRACE: Duration = Duration::from_millis(2);

/// A run's id, and so when its start is recorded.
#[derive(Debug, Clone)]
pub(crate) enum RunId {
    /// Made here (a v7 UUID no other run has): the start is appended while
    /// the provider is called, its latency off the hot path; when the run is
    /// not streamed and the call ends within [`START_GRACE`], with the end.
    New(String),
    /// Chosen by the caller as an idempotency key: the start is appended
    /// first, so a repeat finds the run recorded and calls no provider.
    Chosen(String),
}

impl RunId {
    pub(crate) fn new() -> Self {
        Self::New(Uuid::now_v7().to_string())
    }

    pub(crate) fn into_string(self) -> String {
        match self {
            Self::New(id) | Self::Chosen(id) => id,
        }
    }
}

/// One run, start to end, recorded; the provider call is cut at `timeout`.
#[allow(clippy::too_many_arguments, reason = "one run's inputs, passed once")]
async fn run(
    log: EventLog,
    http: &crate::providers::ProviderClient,
    resilience: &Resilience,
    run_id: RunId,
    org_id: &str,
    actor: promptops_proto::common::v1::Actor,
    metadata: EventMetadata,
    mut prepared: Prepared,
    chunks: Option<mpsc::Sender<Result<ExecuteChunk>>>,
    cancel: CancellationToken,
    timeout: Duration,
) -> std::result::Result<(Run, u64), ServiceError> {
    let start_first = matches!(run_id, RunId::Chosen(_));
    let run_id = run_id.into_string();
    let hold = std::mem::take(&mut prepared.hold);
    let trace_id = metadata
        .traceparent
        .split('-')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let recorder = Recorder::new(log, org_id, &run_id, metadata)
        .map_err(|e| ServiceError::new(ErrorClass::Internal, e))?;
    let spec = prepared.spec.clone();
    let started = ExecutionStarted {
        run_id: run_id.clone(),
        prompt_id: prepared.prompt_id.clone(),
        prompt_version: prepared.prompt_version,
        label: prepared.label.clone(),
        model: spec.id.clone(),
        variables: prepared.variables.clone(),
        messages: prepared
            .messages
            .iter()
            .map(|m| ChatMessage {
                role: m.role,
                content: truncate(&m.content, MAX_RECORDED_INPUT_BYTES).0,
            })
            .collect(),
        parameters: Some(prepared.parameters.clone()),
        input_tokens_counted: prepared.input_tokens,
        trace_id: trace_id.clone(),
    };
    let mut record = Run {
        run_id: run_id.clone(),
        status: RunStatus::Running as i32,
        prompt_id: prepared.prompt_id.clone(),
        prompt_version: prepared.prompt_version,
        label: prepared.label.clone(),
        model: spec.id.clone(),
        usage: Some(Usage {
            input_tokens: prepared.input_tokens,
            estimated: true,
            ..Default::default()
        }),
        created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        actor: Some(actor),
        trace_id,
        ..Default::default()
    };
    let start = recorder.start(&started);
    let clock = Instant::now();
    let span = tracing::info_span!("provider call", model = spec.id, run_id = %run_id);
    let (pieces_tx, mut pieces_rx) = mpsc::channel::<String>(64);
    let call_cancel = cancel.child_token();
    // The start is appended while the provider is called, so its latency is
    // off the hot path; nothing reaches the client, and no end is appended,
    // before the start is in the log. A start that cannot be appended cancels
    // the call (a run id in use, or the log down: the caller gets the error).
    let (start_recorded, recorded) = tokio::sync::watch::channel(false);
    let record_start = async {
        let appended = recorder.append_start(&start).await;
        match appended {
            Ok(_) => drop(start_recorded.send(true)),
            Err(_) => call_cancel.cancel(),
        }
        appended
    };
    let candidates: Vec<Arc<ModelSpec>> = std::iter::once(spec.clone())
        .chain(prepared.fallbacks.iter().cloned())
        .collect();
    let call = async {
        let call = resilience::complete(
            resilience,
            http,
            org_id,
            &candidates,
            CallRequest {
                messages: &prepared.messages,
                parameters: &prepared.parameters,
                streamed: chunks.is_some(),
            },
            &pieces_tx,
            &call_cancel,
        );
        let outcome = tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
            let error = CallError::Provider {
                message: format!("no answer within the run timeout of {} s", timeout.as_secs()),
                retryable: false,
                retry_after: None,
            };
            (Err(error), None)
        });
        drop(pieces_tx);
        // The run's latency is the call's, whatever the start's append took.
        (outcome, clock.elapsed())
    };
    let forward = async {
        let mut first_token = None;
        if chunks.is_some() {
            let mut recorded = recorded.clone();
            tokio::select! {
                () = call_cancel.cancelled() => return first_token,
                in_log = recorded.wait_for(|done| *done) => if in_log.is_err() {
                    return first_token;
                },
            }
        }
        if let Some(chunks) = &chunks
            && chunks
                .send(Ok(ExecuteChunk {
                    kind: Some(execute_chunk::Kind::Started(record.clone())),
                }))
                .await
                .is_err()
        {
            call_cancel.cancel();
            return first_token;
        }
        loop {
            let piece = match &chunks {
                Some(chunks) => tokio::select! {
                    piece = pieces_rx.recv() => piece,
                    () = chunks.closed() => {
                        call_cancel.cancel();
                        break;
                    }
                },
                None => pieces_rx.recv().await,
            };
            let Some(piece) = piece else { break };
            first_token.get_or_insert_with(|| clock.elapsed());
            if let Some(chunks) = &chunks {
                let delta = ExecuteChunk {
                    kind: Some(execute_chunk::Kind::Delta(piece)),
                };
                if chunks.send(Ok(delta)).await.is_err() {
                    call_cancel.cancel();
                    break;
                }
            }
        }
        first_token
    };
    let calling = tracing::Instrument::instrument(async { tokio::join!(call, forward) }, span);
    // `None`: the start is not in the log yet; it is appended with the end.
    let (started_at, (((result, answered_by), latency), first_token)) = if start_first {
        let started_at = record_start.await;
        if started_at.is_err() {
            // The call is not made at all.
            drop(calling);
            let not_made = CallError::Cancelled {
                partial: String::new(),
                output_tokens: 0,
            };
            (Some(started_at), (((Err(not_made), None), Duration::ZERO), None))
        } else {
            (Some(started_at), calling.await)
        }
    } else if chunks.is_none() {
        let mut calling = std::pin::pin!(calling);
        tokio::select! {
            biased;
            ended = &mut calling => (None, ended),
            () = tokio::time::sleep(START_GRACE) => {
                let (started_at, ended) = tokio::join!(record_start, calling);
                (Some(started_at), ended)
            }
        }
    } else {
        let (started_at, ended) = tokio::join!(record_start, calling);
        (Some(started_at), ended)
    };
    let started_at = match started_at.transpose() {
        Ok(appended) => appended,
        Err(err) => {
            let error = match err {
                AppendError::Conflict { .. } => {
                    ServiceError::new(ErrorClass::Conflict, format!("run {run_id} exists already"))
                }
                other => ServiceError::unavailable("the event log", other),
            };
            if let Some(chunks) = &chunks {
                let _ = chunks.send(Err(error.clone().into())).await;
            }
            return Err(error);
        }
    };
    // Priced and recorded as the model that answered (a fallback, maybe).
    let spec = answered_by.unwrap_or(spec);
    record.model = spec.id.clone();
    let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    let ttft_us = first_token.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let terminal = match &result {
        Ok(done) => {
            let (output, output_truncated) = truncate(&done.output, MAX_RECORDED_OUTPUT_BYTES);
            let usage = Usage {
                input_tokens: done.input_tokens,
                output_tokens: done.output_tokens,
                cached_input_tokens: done.cached_input_tokens,
                cache_write_input_tokens: done.cache_write_input_tokens,
                estimated: !done.usage_reported,
            };
            Terminal::Completed(ExecutionCompleted {
                run_id: run_id.clone(),
                output,
                output_truncated,
                cost_nano_usd: spec.cost_nano_usd(&usage),
                prices: Some(spec.prices),
                usage: Some(usage),
                latency_us,
                time_to_first_token_us: ttft_us,
                finish_reason: done.finish_reason.to_owned(),
                model: spec.id.clone(),
            })
        }
        Err(CallError::Provider { message, .. }) => Terminal::Failed(ExecutionFailed {
            run_id: run_id.clone(),
            error_class: "provider-error".into(),
            message: message.clone(),
            latency_us,
        }),
        Err(CallError::Cancelled {
            partial,
            output_tokens,
        }) => {
            let usage = Usage {
                input_tokens: prepared.input_tokens,
                output_tokens: *output_tokens,
                estimated: true,
                ..Usage::default()
            };
            Terminal::Cancelled(ExecutionCancelled {
                run_id: run_id.clone(),
                partial_output: truncate(partial, MAX_RECORDED_OUTPUT_BYTES).0,
                cost_nano_usd: spec.cost_nano_usd(&usage),
                prices: Some(spec.prices),
                usage: Some(usage),
                latency_us,
            })
        }
    };
    let (used_tokens, used_cost) = match &terminal {
        Terminal::Completed(ExecutionCompleted {
            usage, cost_nano_usd, ..
        })
        | Terminal::Cancelled(ExecutionCancelled {
            usage, cost_nano_usd, ..
        }) => {
            let usage = usage.unwrap_or_default();
            (usage.input_tokens + usage.output_tokens, *cost_nano_usd)
        }
        Terminal::Failed(_) => (0, 0),
    };
    hold.settle(used_tokens, used_cost);
    let ended = match started_at {
        Some(started_at) => recorder.ended(started_at, &terminal).await,
        None => recorder.started_and_ended(&start, &terminal).await,
    };
    let ended_at = ended.map_err(|e| {
        metrics::counter!("promptops_runs_unrecorded_total").increment(1);
        ServiceError::unavailable("the event log (the run's end is not recorded)", e)
    })?;
    let status = match &terminal {
        Terminal::Completed(done) => {
            record.status = RunStatus::Completed as i32;
            record.output = done.output.clone();
            record.usage = done.usage;
            record.cost_nano_usd = done.cost_nano_usd;
            record.finish_reason = done.finish_reason.clone();
            "completed"
        }
        Terminal::Failed(failed) => {
            record.status = RunStatus::Failed as i32;
            record.error = format!("{}: {}", failed.error_class, failed.message);
            "failed"
        }
        Terminal::Cancelled(cancelled) => {
            record.status = RunStatus::Cancelled as i32;
            record.output = cancelled.partial_output.clone();
            record.usage = cancelled.usage;
            record.cost_nano_usd = cancelled.cost_nano_usd;
            "cancelled"
        }
    };
    record.latency_us = latency_us;
    record.time_to_first_token_us = ttft_us;
    metrics::counter!("promptops_runs_total", "model" => spec.id.clone(), "status" => status).increment(1);
    metrics::histogram!("promptops_run_duration_seconds", "model" => spec.id.clone())
        .record(Duration::from_micros(latency_us).as_secs_f64());
    if let Terminal::Failed(failed) = &terminal {
        let error = ServiceError::new(
            ErrorClass::Unavailable,
            format!(
                "{}: {} (run {run_id} is recorded as failed)",
                spec.id, failed.message
            ),
        );
        if let Some(chunks) = &chunks {
            let _ = chunks.send(Err(error.clone().into())).await;
        }
        return Err(error);
    }
    if let Some(chunks) = &chunks {
        // Sent after the end is in the log; a client gone by now changes nothing.
        let _ = chunks
            .send(Ok(ExecuteChunk {
                kind: Some(execute_chunk::Kind::Completed(record.clone())),
            }))
            .await;
    }
    Ok((record, ended_at))
}

fn catalog_error(err: ExecuteError<CatalogError>) -> ServiceError {
    match err {
        ExecuteError::Domain(CatalogError::Invalid(violations)) => ServiceError::invalid(violations),
        ExecuteError::Domain(CatalogError::NotFound(message)) => {
            ServiceError::new(ErrorClass::NotFound, message)
        }
        ExecuteError::Domain(CatalogError::InUse(message)) => {
            ServiceError::new(ErrorClass::FailedPrecondition, message)
        }
        ExecuteError::Domain(CatalogError::DataKeyChanged) | ExecuteError::Conflict => {
            ServiceError::new(ErrorClass::Conflict, "the catalog changed concurrently; retry")
        }
        ExecuteError::Store(e) => ServiceError::unavailable("the event log", e),
        ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
    }
}

fn position(sequence: u64) -> LogPosition {
    promptops_platform::read_your_write::position(Context::Execution, sequence)
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ExecuteChunk>> + Send>>;

#[tonic::async_trait]
impl ExecutionService for ExecutionApi {
    async fn list_models(&self, request: Request<ListModelsRequest>) -> Result<Response<ListModelsResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let org = self.models.org(&caller.org_id).await?;
        // Shown at the price book's prices now: what a run would cost.
        let account = self.accounts.org(&caller.org_id).await?;
        let now = promptops_platform::db::unix_ms();
        let models = crate::models::built_in()
            .iter()
            .chain(org.models.values())
            .map(|spec| {
                let priced = Accounts::priced(&account, spec.clone(), now);
                Model {
                    rate_limits: self.resilience.rate_limits(&caller.org_id, &spec.id),
                    health: self.health.get(&caller.org_id, &spec.id),
                    ..priced.to_message()
                }
            })
            .collect();
        Ok(Response::new(ListModelsResponse { models }))
    }

    async fn list_providers(
        &self,
        request: Request<ListProvidersRequest>,
    ) -> Result<Response<ListProvidersResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let org = self.models.org(&caller.org_id).await?;
        Ok(Response::new(ListProvidersResponse {
            providers: org
                .state
                .providers
                .values()
                .map(catalog::provider_message)
                .collect(),
        }))
    }

    async fn set_provider(&self, request: Request<SetProviderRequest>) -> Result<Response<Provider>> {
        let (caller, _) = self.caller(&request, Permission::ManageSettings).await?;
        let req = request.into_inner();
        let kind = ProviderKind::try_from(req.kind).unwrap_or(ProviderKind::Unspecified);
        if req.api_key.len() > 4096 || req.api_key.chars().any(char::is_control) {
            return Err(ServiceError::invalid_field(
                "api_key",
                "at most 4096 characters, no control characters",
            )
            .into());
        }
        if let Some(limits) = &req.limits {
            let violations = CallLimits::violations(limits);
            if !violations.is_empty() {
                return Err(ServiceError::invalid(violations).into());
            }
        }
        let api_key = (!req.api_key.is_empty()).then(|| Secret::new(req.api_key.clone()));
        if !req.skip_validation && kind != ProviderKind::Unspecified {
            let probe = HttpBackend {
                format: if kind == ProviderKind::Anthropic {
                    ApiFormat::Anthropic
                } else {
                    ApiFormat::OpenAi
                },
                base_url: req.base_url.clone(),
                upstream_model: String::new(),
                api_key: api_key.clone(),
            };
            if let Err(reason) = providers::validate(&self.http, &probe).await {
                return Err(ServiceError::invalid_field(
                    "base_url",
                    format!("the provider did not accept the address or key: {reason}"),
                )
                .into());
            }
        }
        let metadata = caller.event_metadata();
        for _ in 0..3 {
            let (sealed, new_data_key) = match &api_key {
                Some(key) => {
                    let (sealed, new_key) = self.models.seal(&caller.org_id, key.expose()).await?;
                    (sealed, new_key)
                }
                None => (Vec::new(), None),
            };
            let provider = ProviderSet {
                name: req.name.clone(),
                kind: req.kind,
                base_url: req.base_url.clone(),
                credential_hint: api_key.as_ref().map(|k| mask(k.expose())).unwrap_or_default(),
                sealed_credential: sealed,
                limits: req.limits,
            };
            let command = CatalogCommand::SetProvider {
                provider: provider.clone(),
                new_data_key,
            };
            match self.models.execute(&caller.org_id, command, &metadata).await {
                Ok(_) => return Ok(Response::new(catalog::provider_message(&provider))),
                Err(ExecuteError::Domain(CatalogError::DataKeyChanged)) => continue,
                Err(err) => return Err(catalog_error(err).into()),
            }
        }
        Err(ServiceError::new(ErrorClass::Conflict, "the catalog kept changing; retry").into())
    }

    async fn remove_provider(
        &self,
        request: Request<RemoveProviderRequest>,
    ) -> Result<Response<RemoveProviderResponse>> {
        let (caller, _) = self.caller(&request, Permission::ManageSettings).await?;
        let name = request.into_inner().name;
        self.models
            .execute(
                &caller.org_id,
                CatalogCommand::RemoveProvider(name),
                &caller.event_metadata(),
            )
            .await
            .map_err(catalog_error)?;
        Ok(Response::new(RemoveProviderResponse {}))
    }

    async fn set_model(&self, request: Request<SetModelRequest>) -> Result<Response<Model>> {
        let (caller, _) = self.caller(&request, Permission::ManageSettings).await?;
        let req = request.into_inner();
        let model = ModelSet {
            id: req.id.clone(),
            upstream_model: req.upstream_model,
            context_window: req.context_window,
            max_output_tokens: req.max_output_tokens,
            input_price_per_mtok: req.input_price_per_mtok,
            output_price_per_mtok: req.output_price_per_mtok,
            cached_input_price_per_mtok: req.cached_input_price_per_mtok,
            embeddings: req.embeddings,
        };
        self.models
            .execute(
                &caller.org_id,
                CatalogCommand::SetModel(model),
                &caller.event_metadata(),
            )
            .await
            .map_err(catalog_error)?;
        let resolved = self
            .models
            .resolve(&caller.org_id, &req.id)
            .await?
            .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "the model just set is missing"))?;
        // A new model is checked at once, then with every round.
        let health = crate::health::check(&self.http, &resolved).await;
        self.health.record(&caller.org_id, &resolved.id, health.clone());
        Ok(Response::new(Model {
            health: Some(health),
            ..resolved.to_message()
        }))
    }

    async fn remove_model(
        &self,
        request: Request<RemoveModelRequest>,
    ) -> Result<Response<RemoveModelResponse>> {
        let (caller, _) = self.caller(&request, Permission::ManageSettings).await?;
        let id = request.into_inner().id;
        self.models
            .execute(
                &caller.org_id,
                CatalogCommand::RemoveModel(id),
                &caller.event_metadata(),
            )
            .await
            .map_err(catalog_error)?;
        Ok(Response::new(RemoveModelResponse {}))
    }

    async fn execute(&self, request: Request<ExecuteRequest>) -> Result<Response<ExecuteResponse>> {
        let (caller, credential) = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        let chosen_id = !req.run_id.is_empty();
        let run_id = if chosen_id {
            if Uuid::parse_str(&req.run_id).is_err() {
                return Err(ServiceError::invalid_field("run_id", "must be a UUID").into());
            }
            if let Some((run, at)) = self.recorded_run(&caller.org_id, &req.run_id).await? {
                return Ok(Response::new(ExecuteResponse {
                    run: Some(run),
                    position: Some(position(at)),
                }));
            }
            RunId::Chosen(req.run_id.clone())
        } else {
            RunId::new()
        };
        let prepared = self.prepare(&caller, &credential, req).await?;
        let handle = self.spawn_run(&caller, prepared, None, run_id.clone());
        let run_id = run_id.into_string();
        let outcome = handle
            .await
            .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("run task failed: {e}")))?;
        let (run, ended_at) = match outcome {
            // Started meanwhile by another request with the same id.
            Err(err) if chosen_id && err.class == ErrorClass::Conflict => {
                self.recorded_run(&caller.org_id, &run_id).await?.ok_or(err)?
            }
            other => other?,
        };
        Ok(Response::new(ExecuteResponse {
            run: Some(run),
            position: Some(position(ended_at)),
        }))
    }

    type ExecuteStreamStream = ChunkStream;

    async fn execute_stream(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<Self::ExecuteStreamStream>> {
        let (caller, credential) = self.caller(&request, Permission::Write).await?;
        let prepared = self.prepare(&caller, &credential, request.into_inner()).await?;
        let (tx, rx) = mpsc::channel(64);
        // The handle is not awaited: the run reports through the stream.
        drop(self.spawn_run(&caller, prepared, Some(tx), RunId::new()));
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as Self::ExecuteStreamStream,
        ))
    }

    async fn embed(&self, request: Request<EmbedRequest>) -> Result<Response<EmbedResponse>> {
        let (caller, _) = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        let spec = self
            .models
            .resolve(&caller.org_id, &req.model)
            .await?
            .ok_or_else(|| unknown_model(&req.model))?;
        let mut violations = Vec::new();
        if !spec.embeddings {
            violations.push(FieldViolation::new(
                "model",
                format!("{} is not an embedding model", spec.id),
            ));
        }
        if req.inputs.is_empty() || req.inputs.len() > MAX_EMBED_INPUTS {
            violations.push(FieldViolation::new(
                "inputs",
                format!("give 1 to {MAX_EMBED_INPUTS} texts"),
            ));
        }
        let input_tokens: u64 = req.inputs.iter().map(|text| spec.tokenizer.count(text)).sum();
        if let Some((i, _)) = req
            .inputs
            .iter()
            .enumerate()
            .find(|(_, t)| spec.tokenizer.count(t) > u64::from(spec.context_window))
        {
            violations.push(FieldViolation::new(
                format!("inputs[{i}]"),
                format!("is longer than {}'s {} tokens", spec.id, spec.context_window),
            ));
        }
        let bytes: usize = req.inputs.iter().map(String::len).sum();
        if bytes > MAX_INPUT_BYTES {
            violations.push(FieldViolation::new(
                "inputs",
                format!("are {bytes} bytes; the limit is {MAX_INPUT_BYTES}"),
            ));
        }
        if !violations.is_empty() {
            return Err(ServiceError::invalid(violations).into());
        }
        let account = self.accounts.org(&caller.org_id).await?;
        let spec = Accounts::priced(&account, spec, promptops_platform::db::unix_ms());
        let worst_cost = spec.cost_nano_usd(&Usage {
            input_tokens,
            ..Usage::default()
        });
        let hold = self
            .accounts
            .admit(&caller.org_id, &account, &caller.actor, input_tokens, worst_cost)
            .await?;
        let run_id = Uuid::now_v7().to_string();
        let recorder = Recorder::new(self.log.clone(), &caller.org_id, &run_id, caller.event_metadata())
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e))?;
        let started_event = ExecutionStarted {
            run_id: run_id.clone(),
            model: spec.id.clone(),
            messages: req
                .inputs
                .iter()
                .map(|text| ChatMessage {
                    role: ChatRole::User as i32,
                    content: truncate(text, MAX_RECORDED_OUTPUT_BYTES).0,
                })
                .collect(),
            input_tokens_counted: input_tokens,
            trace_id: promptops_platform::telemetry::current_trace_id(),
            ..Default::default()
        };
        let started_at = recorder
            .started(&started_event)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        // The call and the record of its end run in the service's run
        // tracker, like every run: a caller that goes away cannot leave the
        // run unended, and shutdown waits for it.
        let (http, task_spec, inputs, task_run_id) =
            (self.http.clone(), spec.clone(), req.inputs, run_id.clone());
        let (terminal, result) = self
            .runs
            .spawn(async move {
                let ended = embed_and_record(
                    &http,
                    &task_spec,
                    &inputs,
                    input_tokens,
                    &task_run_id,
                    &recorder,
                    started_at,
                )
                .await;
                if let Ok((Terminal::Completed(done), _)) = &ended {
                    let usage = done.usage.unwrap_or_default();
                    hold.settle(usage.input_tokens, done.cost_nano_usd);
                }
                ended
            })
            .await
            .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("embedding task failed: {e}")))??;
        let embeddings = result.map_err(|message| ServiceError::unavailable(&spec.id, message))?;
        let Terminal::Completed(done) = terminal else {
            return Err(ServiceError::new(ErrorClass::Internal, "an embedding run ended otherwise").into());
        };
        let run = Run {
            run_id,
            status: RunStatus::Completed as i32,
            model: spec.id.clone(),
            output: done.output,
            usage: done.usage,
            cost_nano_usd: done.cost_nano_usd,
            latency_us: done.latency_us,
            created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            actor: Some(caller.actor.clone()),
            trace_id: started_event.trace_id.clone(),
            finish_reason: done.finish_reason,
            ..Default::default()
        };
        Ok(Response::new(EmbedResponse {
            embeddings: embeddings
                .into_iter()
                .map(|values| Embedding { values })
                .collect(),
            run: Some(run),
        }))
    }

    async fn compare(&self, request: Request<CompareRequest>) -> Result<Response<CompareResponse>> {
        let (caller, credential) = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        let input = req.input.unwrap_or_default();
        let managed = input.prompt.as_ref().is_some_and(names_a_prompt);
        if !req.versions.is_empty() && !managed {
            return Err(
                ServiceError::invalid_field("versions", "comparing versions needs a managed prompt").into(),
            );
        }
        let variants: Vec<(String, ExecuteRequest)> = req
            .models
            .iter()
            .map(|model| {
                let mut variant = input.clone();
                variant.model.clone_from(model);
                (format!("model:{model}"), variant)
            })
            .chain(req.versions.iter().map(|&version| {
                let mut variant = input.clone();
                variant.version = version;
                variant.label.clear();
                (format!("version:{version}"), variant)
            }))
            .collect();
        if variants.is_empty() || variants.len() > 10 {
            return Err(
                ServiceError::invalid_field("models", "give 1-10 models and/or versions to compare").into(),
            );
        }
        // Prepared one by one (cheap), run all at once.
        let mut pending = Vec::with_capacity(variants.len());
        for (variant, variant_request) in variants {
            match self.prepare(&caller, &credential, variant_request).await {
                Ok(prepared) => {
                    let handle = self.spawn_run(&caller, prepared, None, RunId::new());
                    pending.push((variant, Ok(handle)));
                }
                Err(err) => pending.push((variant, Err(err))),
            }
        }
        let mut results = Vec::with_capacity(pending.len());
        for (variant, started) in pending {
            let outcome = match started {
                Ok(handle) => handle
                    .await
                    .unwrap_or_else(|e| Err(ServiceError::new(ErrorClass::Internal, e.to_string()))),
                Err(err) => Err(err),
            };
            results.push(match outcome {
                Ok((run, _)) => CompareResult {
                    variant,
                    run: Some(run),
                    error: String::new(),
                },
                Err(err) => CompareResult {
                    variant,
                    run: None,
                    error: err.message,
                },
            });
        }
        Ok(Response::new(CompareResponse { results }))
    }

    async fn create_conversation(
        &self,
        request: Request<CreateConversationRequest>,
    ) -> Result<Response<Conversation>> {
        let (caller, _) = self.caller(&request, Permission::Write).await?;
        let conversation = self
            .create_conversation_for(&caller, request.into_inner())
            .await?;
        Ok(Response::new(conversation))
    }

    async fn get_conversation(
        &self,
        request: Request<GetConversationRequest>,
    ) -> Result<Response<Conversation>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let conversation = self.conversation(&caller, &request.into_inner().id).await?;
        Ok(Response::new(conversation))
    }

    async fn list_conversations(
        &self,
        request: Request<ListConversationsRequest>,
    ) -> Result<Response<ListConversationsResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page_token")?;
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let (conversations, next) = runs::list_conversations(
            &self.db,
            &caller.org_id,
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the execution database", e))?;
        Ok(Response::new(ListConversationsResponse {
            conversations,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn send_message(&self, request: Request<SendMessageRequest>) -> Result<Response<ExecuteResponse>> {
        let (caller, _) = self.caller(&request, Permission::Write).await?;
        let turn = self.start_turn(&caller, request.into_inner()).await?;
        let (run, position_at) = self
            .spawn_turn(&caller, turn, None)
            .await
            .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("turn task failed: {e}")))??;
        Ok(Response::new(ExecuteResponse {
            run: Some(run),
            position: Some(position(position_at)),
        }))
    }

    type SendMessageStreamStream = ChunkStream;

    async fn send_message_stream(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<Self::SendMessageStreamStream>> {
        let (caller, _) = self.caller(&request, Permission::Write).await?;
        let turn = self.start_turn(&caller, request.into_inner()).await?;
        let (tx, rx) = mpsc::channel(64);
        // The handle is not awaited: the turn reports through the stream.
        drop(self.spawn_turn(&caller, turn, Some(tx)));
        Ok(Response::new(
            Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as Self::SendMessageStreamStream,
        ))
    }

    async fn list_runs(&self, request: Request<ListRunsRequest>) -> Result<Response<ListRunsResponse>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        let page = req.page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page_token")?;
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let status = RunStatus::try_from(req.status).unwrap_or(RunStatus::Unspecified);
        let filter = RunFilter {
            prompt_id: (!req.prompt_id.is_empty()).then_some(req.prompt_id),
            prompt_version: (req.prompt_version != 0).then_some(req.prompt_version),
            model: (!req.model.is_empty()).then_some(req.model),
            status: (status != RunStatus::Unspecified).then_some(status),
        };
        let (runs, next) = runs::list(
            &self.db,
            &caller.org_id,
            &filter,
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the execution database", e))?;
        Ok(Response::new(ListRunsResponse {
            runs,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    async fn get_run(&self, request: Request<GetRunRequest>) -> Result<Response<Run>> {
        let (caller, _) = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        if Uuid::parse_str(&req.run_id).is_err() {
            return Err(ServiceError::invalid_field("run_id", "must be a UUID").into());
        }
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let run = runs::get(&self.db, &caller.org_id, &req.run_id)
            .await
            .map_err(|e| ServiceError::unavailable("the execution database", e))?
            .ok_or_else(|| {
                ServiceError::new(ErrorClass::NotFound, format!("run {} not found", req.run_id))
            })?;
        Ok(Response::new(run))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str) -> Option<Arc<ModelSpec>> {
        crate::models::find(id).cloned()
    }

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage {
            role: ChatRole::User as i32,
            content: text.into(),
        }]
    }

    /// Runs `model` (not streamed) on a fresh embedded log; returns the
    /// run's events and how many appends were made to `EVT_EXECUTION`, and
    /// what the log held `peek_after` into the run.
    async fn recorded_run(model: &str, peek_after: Duration) -> (Vec<String>, usize, usize) {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::Embedded(
            promptops_eventlog::embedded::EmbeddedLog::open(&dir.path().join("events.db"))
                .await
                .unwrap(),
        );
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let metrics = recorder.handle();
        let _local = metrics::set_default_local_recorder(&recorder);
        let prepared = Prepared {
            spec: spec(model).unwrap(),
            messages: user("one two three"),
            parameters: Parameters::default(),
            prompt_id: String::new(),
            prompt_version: 0,
            label: String::new(),
            variables: HashMap::new(),
            input_tokens: 3,
            fallbacks: Vec::new(),
            hold: Hold::default(),
        };
        let run_id = RunId::new();
        let aggregate = AggregateRef::new(
            Context::Execution,
            "org-1",
            crate::events::AGGREGATE_TYPE,
            run_id.clone().into_string(),
        )
        .unwrap();
        let (http, resilience) = (
            crate::providers::ProviderClient::new(std::sync::Arc::default()),
            Resilience::default(),
        );
        let running = run(
            log.clone(),
            &http,
            &resilience,
            run_id,
            "org-1",
            promptops_proto::common::v1::Actor::default(),
            EventMetadata::default(),
            prepared,
            None,
            CancellationToken::new(),
            Duration::from_secs(10),
        );
        let peek = async {
            tokio::time::sleep(peek_after).await;
            log.read_aggregate(&aggregate).await.unwrap().len()
        };
        let (ran, seen_while_running) = tokio::join!(running, peek);
        let (record, _) = ran.unwrap();
        assert_eq!(record.status, RunStatus::Completed as i32);
        let events = log.read_aggregate(&aggregate).await.unwrap();
        let appends = metrics
            .render()
            .lines()
            .find(|l| l.starts_with("eventlog_append_seconds_count{stream=\"EVT_EXECUTION\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert!(events.windows(2).all(|w| w[1].sequence == w[0].sequence + 1));
        let types = events.iter().map(|e| e.envelope.event_type.clone()).collect();
        (types, appends, seen_while_running)
    }

    #[tokio::test]
    async fn a_call_that_ends_within_the_grace_is_recorded_start_and_end_in_one_append() {
        let (events, appends, _) = recorded_run("mock/echo", Duration::ZERO).await;
        assert_eq!(events, [crate::events::STARTED, crate::events::COMPLETED]);
        assert_eq!(appends, 1);
    }

    #[tokio::test]
    async fn a_longer_call_has_its_start_in_the_log_while_it_runs() {
        // mock/slow: 100 ms to the first of 20 tokens, 50 ms each (1.05 s),
        // so the start has ~300 ms to be appended however busy the machine.
        let (events, appends, seen_while_running) =
            recorded_run("mock/slow", START_GRACE + Duration::from_millis(300)).await;
        assert_eq!(seen_while_running, 1, "the start, and only the start");
        assert_eq!(events, [crate::events::STARTED, crate::events::COMPLETED]);
        assert_eq!(appends, 2);
    }

    #[test]
    fn bad_input_is_refused_before_any_call_with_every_field_named() {
        let err = prepare_messages(
            user("hi"),
            spec("openai/nope"),
            "openai/nope",
            Parameters::default(),
        )
        .unwrap_err();
        assert_eq!(err.violations[0].field, "model");
        let params = Parameters {
            temperature: Some(9.0),
            max_tokens: Some(0),
            ..Default::default()
        };
        let err = prepare_messages(
            vec![ChatMessage {
                role: 0,
                content: "x".into(),
            }],
            spec("mock/echo"),
            "mock/echo",
            params,
        )
        .unwrap_err();
        let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "parameters.temperature",
                "parameters.max_tokens",
                "messages[0].role"
            ]
        );
    }

    #[test]
    fn input_over_the_context_window_is_counted_and_refused() {
        let long = "word ".repeat(9_000);
        let err =
            prepare_messages(user(&long), spec("mock/slow"), "mock/slow", Parameters::default()).unwrap_err();
        assert!(
            err.violations[0].description.contains("takes at most 8000"),
            "{err:?}"
        );
        assert!(prepare_messages(user(&long), spec("mock/echo"), "mock/echo", Parameters::default()).is_ok());
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), ("h".to_owned(), true));
        assert_eq!(truncate("abc", 5), ("abc".to_owned(), false));
    }
}
