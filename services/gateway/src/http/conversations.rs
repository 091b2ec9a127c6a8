//! `/api/v1/conversations`: multi-turn threads over the execution service.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{Problem, ServiceError};
use promptops_proto::execution::v1::{
    Conversation, CreateConversationRequest, GetConversationRequest, ListConversationsRequest,
    SendMessageRequest, Turn,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::page;
use super::authn::Authenticated;
use super::execution::{ExecutedJson, ParametersJson, executed_json, sse_of_chunks, status_name};
use super::extract::{ApiJson, ApiQuery};
use super::model::{ActorJson, JSON_PROBLEMS, parse_position, rfc3339, upstream};

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TurnJson {
    pub number: u32,
    /// The user's message.
    pub content: String,
    /// The answer (partial when cancelled, empty when failed).
    pub reply: String,
    /// The model that answered.
    pub model: String,
    pub run_id: String,
    /// `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    pub started_at: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationJson {
    pub id: String,
    pub title: String,
    /// The model of the next turn.
    pub model: String,
    pub system: String,
    pub turn_count: u32,
    /// Oldest first; empty in lists.
    pub turns: Vec<TurnJson>,
    pub created_by: ActorJson,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Turn> for TurnJson {
    fn from(t: Turn) -> Self {
        Self {
            number: t.number,
            content: t.content,
            reply: t.reply,
            model: t.model,
            run_id: t.run_id,
            status: status_name(t.status).to_owned(),
            started_at: rfc3339(t.started_at.as_ref()),
        }
    }
}

impl From<Conversation> for ConversationJson {
    fn from(c: Conversation) -> Self {
        Self {
            id: c.id,
            title: c.title,
            model: c.model,
            system: c.system,
            turn_count: c.turn_count,
            turns: c.turns.into_iter().map(TurnJson::from).collect(),
            created_by: c.created_by.into(),
            created_at: rfc3339(c.created_at.as_ref()),
            updated_at: rfc3339(c.updated_at.as_ref()),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConversationListJson {
    pub conversations: Vec<ConversationJson>,
    pub next_page_token: String,
}

/// Body of `POST /api/v1/conversations`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConversationBody {
    /// The model of its turns, e.g. `mock/echo`.
    pub model: String,
    #[serde(default)]
    pub title: String,
    /// Opens every turn's context.
    #[serde(default)]
    pub system: String,
}

/// Body of `POST /api/v1/conversations/{id}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    /// The user's message.
    pub content: String,
    /// Switches the conversation to this model from this turn on.
    pub model: Option<String>,
    #[serde(default)]
    pub parameters: ParametersJson,
    #[serde(default)]
    pub fallback_models: Vec<String>,
    /// Answer as server-sent events, as `POST /api/v1/executions` does.
    #[serde(default)]
    pub stream: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConversationsParams {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    pub min_position: Option<String>,
}

/// Start a conversation.
#[utoipa::path(post, path = "/api/v1/conversations", tag = "conversations", request_body = NewConversationBody,
    responses(
        (status = 201, description = "The conversation", body = ConversationJson),
        (status = 400, description = "Unknown model, title or system message too long", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn create_conversation(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<NewConversationBody>,
) -> Result<(StatusCode, Json<ConversationJson>), ServiceError> {
    let request = CreateConversationRequest {
        title: body.title,
        model: body.model,
        system: body.system,
    };
    let conversation = state
        .execution
        .clone()
        .create_conversation(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok((StatusCode::CREATED, Json(conversation.into())))
}

/// Your org's conversations, newest first (without their turns).
#[utoipa::path(get, path = "/api/v1/conversations", tag = "conversations", params(ConversationsParams),
    responses(
        (status = 200, description = "A page of conversations", body = ConversationListJson),
        (status = 400, description = "Invalid page size or token", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn list_conversations(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<ConversationsParams>,
) -> Result<Json<ConversationListJson>, ServiceError> {
    let request = ListConversationsRequest {
        page: Some(page(params.page_size, params.page_token)?),
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .execution
        .clone()
        .list_conversations(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(ConversationListJson {
        conversations: response
            .conversations
            .into_iter()
            .map(ConversationJson::from)
            .collect(),
        next_page_token: response.next_page_token,
    }))
}

/// One conversation with its turns.
#[utoipa::path(get, path = "/api/v1/conversations/{id}", tag = "conversations",
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation and its turns", body = ConversationJson),
        (status = 404, description = "No such conversation in your org", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn get_conversation(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ConversationJson>, ServiceError> {
    let conversation = state
        .execution
        .clone()
        .get_conversation(outgoing(&credential, GetConversationRequest { id }))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(conversation.into()))
}

/// Send the next message: answered with the whole thread as context; the
/// turn records the model that answered. With `"stream": true`, server-sent
/// events as for executions.
#[utoipa::path(post, path = "/api/v1/conversations/{id}/messages", tag = "conversations", request_body = MessageBody,
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The turn's recorded run (or an event stream)", body = ExecutedJson),
        (status = 400, description = "Empty or oversized message, unknown model, thread over the context window", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such conversation in your org", body = Problem, content_type = JSON_PROBLEMS),
        (status = 409, description = "The previous message is still being answered", body = Problem, content_type = JSON_PROBLEMS),
        (status = 503, description = "The provider failed (the turn is recorded as failed)", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn send_message(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MessageBody>,
) -> Result<Response, ServiceError> {
    let request = SendMessageRequest {
        conversation_id: id,
        content: body.content,
        model: body.model.unwrap_or_default(),
        parameters: Some(body.parameters.into()),
        fallback_models: body.fallback_models,
    };
    let mut client = state.execution.clone();
    if body.stream {
        let chunks = client
            .send_message_stream(outgoing(&credential, request))
            .await
            .map_err(|status| upstream(&status))?
            .into_inner();
        return Ok(sse_of_chunks(chunks));
    }
    let response = client
        .send_message(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(executed_json(response)?).into_response())
}
