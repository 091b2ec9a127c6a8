//! Conversations over the API: create, read, list, and send a message. A
//! message is run with the thread so far as context (through the same run
//! path as every execution, so it is recorded the same way); the turn's end
//! is recorded in the conversation by the run's task, before the final
//! chunk reaches the client.

use std::collections::HashMap;

use promptops_eventlog::aggregate::{self, ExecuteError, Executed};
use promptops_eventlog::{AggregateRef, Context, EventMetadata};
use promptops_platform::caller::Caller;
use promptops_platform::db::unix_ms;
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_proto::execution::v1::{
    Conversation as ConversationMessage, ConversationStarted, CreateConversationRequest, ExecuteChunk, Run,
    RunStatus, SendMessageRequest, TurnEnded, execute_chunk,
};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::accounts::Hold;
use crate::conversation::{self, Conversation, ConversationCommand, ConversationError, ConversationState};
use crate::events::retry_store_failures;
use crate::grpc::{ExecutionApi, MAX_RECORDED_OUTPUT_BYTES, Prepared, RunId, prepare_messages, truncate};

type RunOutcome = Result<(Run, u64), ServiceError>;

/// A turn recorded as started, ready to run.
#[derive(Debug)]
pub struct StartedTurn {
    prepared: Prepared,
    aggregate: AggregateRef,
    number: u32,
    run_id: String,
}

fn conversation_error(err: ExecuteError<ConversationError>) -> ServiceError {
    match err {
        ExecuteError::Domain(e @ ConversationError::NotFound) => {
            ServiceError::new(ErrorClass::NotFound, e.to_string())
        }
        ExecuteError::Domain(e @ ConversationError::Busy(_)) => {
            ServiceError::new(ErrorClass::Conflict, e.to_string())
        }
        ExecuteError::Domain(e @ ConversationError::Exists) => {
            ServiceError::new(ErrorClass::AlreadyExists, e.to_string())
        }
        ExecuteError::Domain(e @ ConversationError::Full) => {
            ServiceError::new(ErrorClass::FailedPrecondition, e.to_string())
        }
        ExecuteError::Conflict => ServiceError::new(
            ErrorClass::Conflict,
            "the conversation changed concurrently; retry",
        ),
        ExecuteError::Store(e) => ServiceError::unavailable("the event log", e),
        ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
    }
}

fn check_text(violations: &mut Vec<FieldViolation>, field: &str, text: &str, max_bytes: usize) {
    if text.len() > max_bytes {
        violations.push(FieldViolation::new(
            field,
            format!("is {} bytes; the limit is {max_bytes}", text.len()),
        ));
    }
}

impl ExecutionApi {
    fn conversation_ref(org_id: &str, id: &str) -> Result<AggregateRef, ServiceError> {
        if Uuid::parse_str(id).is_err() {
            return Err(ServiceError::invalid(vec![FieldViolation::new(
                "id",
                "must be a UUID",
            )]));
        }
        AggregateRef::new(Context::Execution, org_id, conversation::AGGREGATE_TYPE, id)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))
    }

    async fn load_conversation(
        &self,
        aggregate: &AggregateRef,
    ) -> Result<aggregate::Loaded<ConversationState>, ServiceError> {
        let loaded = aggregate::load::<Conversation>(&self.log, aggregate)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        if loaded.state.started.is_none() {
            return Err(ServiceError::new(
                ErrorClass::NotFound,
                format!("conversation {} not found", aggregate.aggregate_id()),
            ));
        }
        Ok(loaded)
    }

    /// Starts a conversation on a model the org can run.
    pub(crate) async fn create_conversation_for(
        &self,
        caller: &Caller,
        req: CreateConversationRequest,
    ) -> Result<ConversationMessage, ServiceError> {
        let mut violations = Vec::new();
        if req.title.chars().count() > conversation::MAX_TITLE_CHARS
            || req.title.chars().any(char::is_control)
        {
            violations.push(FieldViolation::new(
                "title",
                format!(
                    "at most {} characters, no control characters",
                    conversation::MAX_TITLE_CHARS
                ),
            ));
        }
        check_text(
            &mut violations,
            "system",
            &req.system,
            conversation::MAX_MESSAGE_BYTES,
        );
        if req.model.is_empty() {
            violations.push(FieldViolation::new("model", "required, e.g. mock/echo"));
        } else if self.models.resolve(&caller.org_id, &req.model).await?.is_none() {
            violations.push(FieldViolation::new(
                "model",
                format!(
                    "unknown model {:?}; GET /api/v1/models lists the models you can run",
                    req.model
                ),
            ));
        }
        if !violations.is_empty() {
            return Err(ServiceError::invalid(violations));
        }
        let id = Uuid::now_v7().to_string();
        let aggregate = Self::conversation_ref(&caller.org_id, &id)?;
        let started = ConversationStarted {
            title: req.title,
            model: req.model,
            system: req.system,
            created_by: Some(caller.actor.clone()),
        };
        let done = aggregate::execute::<Conversation>(
            &self.log,
            &aggregate,
            ConversationCommand::Start(started),
            &caller.event_metadata(),
        )
        .await
        .map_err(conversation_error)?;
        Ok(message_of(&id, &done.state, done.first_occurred_at))
    }

    /// The conversation with its turns.
    pub(crate) async fn conversation(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<ConversationMessage, ServiceError> {
        let aggregate = Self::conversation_ref(&caller.org_id, id)?;
        let loaded = self.load_conversation(&aggregate).await?;
        let mut message = message_of(id, &loaded.state, loaded.first_occurred_at);
        message.turns = loaded.state.turn_messages();
        Ok(message)
    }

    /// Checks the message against the thread (model, context window,
    /// parameters) and records the turn as started.
    pub(crate) async fn start_turn(
        &self,
        caller: &Caller,
        req: SendMessageRequest,
    ) -> Result<StartedTurn, ServiceError> {
        let mut violations = Vec::new();
        if req.content.is_empty() {
            violations.push(FieldViolation::new("content", "required"));
        }
        check_text(
            &mut violations,
            "content",
            &req.content,
            conversation::MAX_MESSAGE_BYTES,
        );
        if !violations.is_empty() {
            return Err(ServiceError::invalid(violations));
        }
        let aggregate = Self::conversation_ref(&caller.org_id, &req.conversation_id)?;
        let loaded = self.load_conversation(&aggregate).await?;
        let stale_after_ms =
            i64::try_from(crate::sweeper::abandon_after(self.run_timeout).as_millis()).unwrap_or(i64::MAX);
        // Refused before the model and context are prepared; the command
        // checks again against the state it appends to.
        if let Some(number) = loaded.state.busy_turn(unix_ms(), stale_after_ms) {
            return Err(conversation_error(ExecuteError::Domain(ConversationError::Busy(
                number,
            ))));
        }
        let model = if req.model.is_empty() {
            loaded.state.model.clone()
        } else {
            req.model.clone()
        };
        let spec = self.models.resolve(&caller.org_id, &model).await?;
        let context = loaded.state.context_for(&req.content);
        let (spec, messages, parameters, input_tokens) =
            prepare_messages(context, spec, &model, req.parameters.unwrap_or_default())?;
        let fallbacks = self.fallbacks(caller, &req.fallback_models, &[]).await?;
        let mut prepared = Prepared {
            spec,
            messages,
            parameters,
            prompt_id: String::new(),
            prompt_version: 0,
            label: String::new(),
            variables: HashMap::new(),
            input_tokens,
            fallbacks,
            hold: Hold::default(),
        };
        // A run over budget is refused before its turn begins.
        self.price_and_admit(caller, &mut prepared).await?;
        let run_id = Uuid::now_v7().to_string();
        let Executed { state, .. } = aggregate::execute_from::<Conversation>(
            &self.log,
            &aggregate,
            loaded,
            ConversationCommand::BeginTurn {
                content: req.content,
                model,
                run_id: run_id.clone(),
                now_ms: unix_ms(),
                stale_after_ms,
            },
            &caller.event_metadata(),
        )
        .await
        .map_err(conversation_error)?;
        let number = state.turns.last().map_or(0, |t| t.started.number);
        Ok(StartedTurn {
            prepared,
            aggregate,
            number,
            run_id,
        })
    }

    /// Runs the turn in the tracker. Its end is recorded in the
    /// conversation whatever happens to the client; streamed chunks pass
    /// through, but the final one waits for that record.
    pub(crate) fn spawn_turn(
        &self,
        caller: &Caller,
        turn: StartedTurn,
        chunks: Option<mpsc::Sender<Result<ExecuteChunk, tonic::Status>>>,
    ) -> tokio::task::JoinHandle<RunOutcome> {
        let asked = turn.prepared.spec.id.clone();
        let (run_tx, run_rx) = match &chunks {
            Some(_) => {
                let (tx, rx) = mpsc::channel(64);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let handle = self.spawn_run(caller, turn.prepared, run_tx, RunId::New(turn.run_id.clone()));
        let log = self.log.clone();
        let metadata = caller.event_metadata();
        self.runs.spawn(async move {
            let mut last = None;
            if let (Some(mut run_rx), Some(client)) = (run_rx, &chunks) {
                loop {
                    tokio::select! {
                        chunk = run_rx.recv() => match chunk {
                            None => break,
                            Some(chunk @ (Err(_) | Ok(ExecuteChunk { kind: Some(execute_chunk::Kind::Completed(_)) }))) => {
                                last = Some(chunk);
                            }
                            Some(chunk) => {
                                if client.send(chunk).await.is_err() {
                                    break;
                                }
                            }
                        },
                        () = client.closed() => break,
                    }
                }
                // Dropping `run_rx` here tells the run that the client is gone.
            }
            let outcome = handle
                .await
                .unwrap_or_else(|e| Err(ServiceError::new(ErrorClass::Internal, format!("run task failed: {e}"))));
            let ended = turn_ended(turn.number, &turn.run_id, &asked, &outcome);
            let recorded = record_turn_end(&log, &turn.aggregate, ended, &metadata).await;
            if let (Some(client), Some(last)) = (&chunks, last) {
                let _ = client.send(last).await;
            }
            match (outcome, recorded) {
                (Ok((run, ended_at)), Ok(turn_at)) => Ok((run, ended_at.max(turn_at))),
                (Ok(_), Err(err)) => Err(err),
                (Err(err), _) => Err(err),
            }
        })
    }
}

/// The conversation's end of a turn, from how its run ended.
fn turn_ended(number: u32, run_id: &str, asked: &str, outcome: &RunOutcome) -> TurnEnded {
    match outcome {
        Ok((run, _)) => TurnEnded {
            number,
            run_id: run_id.to_owned(),
            status: run.status,
            reply: truncate(&run.output, MAX_RECORDED_OUTPUT_BYTES).0,
            model: run.model.clone(),
            error: run.error.clone(),
        },
        Err(err) => TurnEnded {
            number,
            run_id: run_id.to_owned(),
            status: RunStatus::Failed as i32,
            reply: String::new(),
            model: asked.to_owned(),
            error: err.to_string(),
        },
    }
}

/// Records the turn's end; retried like a run's end: a turn must not stay open.
async fn record_turn_end(
    log: &promptops_eventlog::EventLog,
    aggregate: &AggregateRef,
    ended: TurnEnded,
    metadata: &EventMetadata,
) -> Result<u64, ServiceError> {
    let command = ConversationCommand::EndTurn(ended);
    retry_store_failures(
        "a turn's end",
        |err| matches!(err, ExecuteError::Store(_)),
        || aggregate::execute::<Conversation>(log, aggregate, command.clone(), metadata),
    )
    .await
    .map(|done| done.last_sequence)
    .map_err(|err| {
        metrics::counter!("promptops_turns_unrecorded_total").increment(1);
        conversation_error(err)
    })
}

fn message_of(
    id: &str,
    state: &ConversationState,
    created_at: Option<prost_types::Timestamp>,
) -> ConversationMessage {
    let started = state.started.clone().unwrap_or_default();
    let updated_at = state
        .turns
        .last()
        .map(|t| promptops_platform::paging::timestamp_from_ms(t.started.started_at_ms))
        .or(created_at);
    ConversationMessage {
        id: id.to_owned(),
        title: started.title,
        model: state.model.clone(),
        system: started.system,
        turns: Vec::new(),
        turn_count: u32::try_from(state.turns.len()).unwrap_or(u32::MAX),
        created_by: started.created_by,
        created_at,
        updated_at,
    }
}
