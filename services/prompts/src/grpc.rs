//! `PromptService` over gRPC: commands go through the aggregate to the log,
//! queries read the read model.

use promptops_auth::roles::Permission;
use promptops_eventlog::aggregate::{ExecuteError, execute, load};
use promptops_eventlog::{AggregateRef, Context, EventLog};
use promptops_platform::authn::Authenticator;
use promptops_platform::caller::{Caller, event_metadata};
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

use crate::domain::{CreatePrompt, PromptCommand, PromptError};
use crate::events::{self, AGGREGATE_TYPE};
use crate::read_model::{self, PROJECTION};

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
}

fn exec_error(err: ExecuteError<PromptError>) -> ServiceError {
    match err {
        ExecuteError::Domain(e) => domain_error(e),
        ExecuteError::Conflict => {
            ServiceError::new(ErrorClass::Conflict, "the prompt was changed concurrently; retry")
        }
        ExecuteError::Store(e) => ServiceError::unavailable("the event log", e),
        ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
    }
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
        let metadata = event_metadata(caller.actor.clone());
        let executed = execute::<events::Prompt>(
            &self.log,
            &aggregate,
            PromptCommand::Create(command.clone()),
            &metadata,
        )
        .await;
        let (state, last_sequence, created_at) = match executed {
            Ok(done) => (done.state, done.last_sequence, done.first_occurred_at),
            Err(ExecuteError::Domain(PromptError::AlreadyExists(id))) if !req.request_id.is_empty() => {
                // A retry of the same request: answer as the first time if it
                // asked for the same prompt.
                let loaded = load::<events::Prompt>(&self.log, &aggregate)
                    .await
                    .map_err(|e| ServiceError::unavailable("the event log", e))?;
                let same = loaded.state.prompt.as_ref().is_some_and(|p| {
                    p.name == command.name
                        && p.template == command.template
                        && p.description == command.description
                });
                if !same {
                    return Err(domain_error(PromptError::AlreadyExists(id)).into());
                }
                (loaded.state, loaded.last_sequence, loaded.first_occurred_at)
            }
            Err(err) => return Err(exec_error(err).into()),
        };
        let created = state
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
            latest_version: state.version,
            created_at,
            created_by: Some(caller.actor),
        };
        Ok(Response::new(CreatePromptResponse {
            prompt: Some(prompt),
            position: Some(LogPosition {
                stream: Context::Prompts.stream_name().to_owned(),
                sequence: last_sequence,
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
