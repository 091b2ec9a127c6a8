//! `PromptService` over gRPC: commands go through the aggregate to the log,
//! queries read the read model.

use promptops_auth::roles::Permission;
use promptops_eventlog::{
    AggregateRef, AppendError, Context, EventLog, EventMetadata, Expected, envelope_for,
};
use promptops_platform::authn::Authenticator;
use promptops_platform::caller::Caller;
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, page_size};
use promptops_platform::read_your_write;
use promptops_proto::common::v1::LogPosition;
use promptops_proto::prompts::v1::prompt_service_server::PromptService;
use promptops_proto::prompts::v1::{
    CreatePromptRequest, CreatePromptResponse, GetPromptRequest, ListPromptsRequest, ListPromptsResponse,
    Prompt,
};
use sqlx::AnyPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{CreatePrompt, PromptCommand, PromptError, PromptState, decide, evolve};
use crate::events::{AGGREGATE_TYPE, from_envelope, to_draft};
use crate::read_model::{self, PROJECTION};

/// How often a command is decided again after losing a concurrency race.
const CONFLICT_RETRIES: usize = 3;

#[derive(Debug, Clone)]
pub struct PromptsApi {
    log: EventLog,
    db: AnyPool,
    auth: Authenticator,
}

impl PromptsApi {
    pub fn new(log: EventLog, db: AnyPool, auth: Authenticator) -> Self {
        Self { log, db, auth }
    }

    /// The verified caller, who must have `permission`.
    async fn caller<T>(&self, request: &Request<T>, permission: Permission) -> Result<Caller, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        caller.require(permission)?;
        Ok(caller)
    }

    async fn load(&self, aggregate: &AggregateRef) -> Result<Loaded, ServiceError> {
        let history = self
            .log
            .read_aggregate(aggregate)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        let mut state = PromptState::default();
        let mut last_sequence = 0;
        let created_at = history.first().and_then(|e| e.envelope.occurred_at);
        for recorded in &history {
            let event = from_envelope(&recorded.envelope).map_err(|e| {
                ServiceError::new(ErrorClass::Internal, format!("prompt history unreadable: {e}"))
            })?;
            state = evolve(state, &event);
            last_sequence = recorded.sequence;
        }
        Ok(Loaded {
            state,
            last_sequence,
            created_at,
        })
    }

    /// Load → decide → append, again on a concurrency conflict.
    async fn handle(
        &self,
        caller: &Caller,
        aggregate: &AggregateRef,
        command: PromptCommand,
    ) -> Result<Loaded, ServiceError> {
        let metadata = EventMetadata {
            actor: Some(caller.actor.clone()),
            correlation_id: Uuid::now_v7().to_string(),
            causation_id: String::new(),
            traceparent: promptops_platform::telemetry::current_traceparent(),
        };
        for _ in 0..CONFLICT_RETRIES {
            let Loaded {
                state,
                last_sequence,
                created_at,
            } = self.load(aggregate).await?;
            let events = decide(&state, command.clone()).map_err(domain_error)?;
            let envelopes: Vec<_> = events
                .iter()
                .enumerate()
                .map(|(i, event)| {
                    envelope_for(
                        aggregate,
                        state.version + 1 + i as u64,
                        to_draft(event),
                        &metadata,
                    )
                })
                .collect();
            match self
                .log
                .append(aggregate, Expected::from_last_sequence(last_sequence), &envelopes)
                .await
            {
                Ok(appended) => {
                    let state = events.iter().fold(state, evolve);
                    return Ok(Loaded {
                        state,
                        last_sequence: appended.last_sequence,
                        created_at: created_at.or_else(|| envelopes.first().and_then(|e| e.occurred_at)),
                    });
                }
                Err(AppendError::Conflict { .. }) => continue,
                Err(AppendError::Invalid(reason)) => {
                    return Err(ServiceError::new(ErrorClass::Internal, reason));
                }
                Err(AppendError::Store(err)) => return Err(ServiceError::unavailable("the event log", err)),
            }
        }
        Err(ServiceError::new(
            ErrorClass::Conflict,
            "the prompt was changed concurrently; retry",
        ))
    }
}

/// An aggregate as loaded (or as left by a successful command).
#[derive(Debug)]
struct Loaded {
    state: PromptState,
    /// The stream sequence of its last event: the concurrency token.
    last_sequence: u64,
    /// When its first event happened.
    created_at: Option<prost_types::Timestamp>,
}

fn domain_error(err: PromptError) -> ServiceError {
    match err {
        PromptError::Invalid(violations) => ServiceError::invalid(violations),
        PromptError::AlreadyExists(id) => {
            ServiceError::new(ErrorClass::AlreadyExists, format!("prompt {id} already exists"))
        }
    }
}

#[tonic::async_trait]
impl PromptService for PromptsApi {
    async fn create_prompt(
        &self,
        request: Request<CreatePromptRequest>,
    ) -> Result<Response<CreatePromptResponse>, Status> {
        let caller = self.caller(&request, Permission::Write).await?;
        let req = request.into_inner();
        // A client-chosen request id makes the create idempotent: it becomes
        // the prompt id, so a retry finds the prompt it created before.
        let prompt_id = if req.request_id.is_empty() {
            Uuid::now_v7().to_string()
        } else {
            Uuid::parse_str(&req.request_id)
                .map_err(|_| {
                    ServiceError::invalid(vec![FieldViolation::new("request_id", "must be a UUID")])
                })?
                .hyphenated()
                .to_string()
        };
        let aggregate = AggregateRef::new(Context::Prompts, &caller.org_id, AGGREGATE_TYPE, &prompt_id)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
        let command = CreatePrompt {
            prompt_id: prompt_id.clone(),
            name: req.name,
            description: req.description,
            folder: req.folder,
            tags: req.tags,
            template: req.template,
        };
        let loaded = match self
            .handle(&caller, &aggregate, PromptCommand::Create(command.clone()))
            .await
        {
            Ok(done) => done,
            Err(err) if err.class == ErrorClass::AlreadyExists && !req.request_id.is_empty() => {
                // A retry of the same request: answer as the first time if it
                // asked for the same prompt.
                let loaded = self.load(&aggregate).await?;
                let same = loaded.state.prompt.as_ref().is_some_and(|p| {
                    p.name == command.name
                        && p.template == command.template
                        && p.description == command.description
                });
                if !same {
                    return Err(err.into());
                }
                loaded
            }
            Err(err) => return Err(err.into()),
        };
        let created = loaded
            .state
            .prompt
            .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "created prompt missing from state"))?;
        tracing::info!(prompt_id = %created.prompt_id, org = %caller.org_id, "prompt created");
        let prompt = Prompt {
            prompt_id: created.prompt_id,
            name: created.name,
            description: created.description,
            folder: created.folder,
            tags: created.tags,
            template: created.template,
            latest_version: loaded.state.version,
            created_at: loaded.created_at,
            created_by: Some(caller.actor),
        };
        Ok(Response::new(CreatePromptResponse {
            prompt: Some(prompt),
            position: Some(LogPosition {
                stream: Context::Prompts.stream_name().to_owned(),
                sequence: loaded.last_sequence,
            }),
        }))
    }

    async fn get_prompt(&self, request: Request<GetPromptRequest>) -> Result<Response<Prompt>, Status> {
        let caller = self.caller(&request, Permission::Read).await?;
        let req = request.into_inner();
        if Uuid::parse_str(&req.prompt_id).is_err() {
            return Err(
                ServiceError::invalid(vec![FieldViolation::new("prompt_id", "must be a UUID")]).into(),
            );
        }
        read_your_write::wait_for(&self.db, PROJECTION, req.min_position.as_ref()).await?;
        let prompt = read_model::get(&self.db, &caller.org_id, &req.prompt_id)
            .await
            .map_err(|e| ServiceError::unavailable("the prompts database", e))?
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorClass::NotFound,
                    format!("prompt {} not found", req.prompt_id),
                )
            })?;
        Ok(Response::new(prompt))
    }

    async fn list_prompts(
        &self,
        request: Request<ListPromptsRequest>,
    ) -> Result<Response<ListPromptsResponse>, Status> {
        let caller = self.caller(&request, Permission::Read).await?;
        let page = request.into_inner().page.unwrap_or_default();
        let after = Cursor::decode(&page.page_token, "page_token")?;
        let (prompts, next) = read_model::list(
            &self.db,
            &caller.org_id,
            after.as_ref(),
            page_size(page.page_size),
        )
        .await
        .map_err(|e| ServiceError::unavailable("the prompts database", e))?;
        Ok(Response::new(ListPromptsResponse {
            prompts,
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }
}
