//! The `/api/v1` handlers: translate HTTP to the services' gRPC APIs.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{ErrorClass, Problem, ServiceError};
use promptops_proto::audit::v1::ListAuditEntriesRequest;
use promptops_proto::common::v1::PageRequest;
use promptops_proto::prompts::v1::{CreatePromptRequest, GetPromptRequest, ListPromptsRequest};

use super::AppState;
use super::authn::Authenticated;
use super::extract::{ApiJson, ApiQuery};
use super::model::{
    AuditEntryListJson, AuditParams, CreatePromptBody, CreatedPromptJson, ListParams, PromptJson,
    PromptListJson, ReadParams, bad_request, format_position, parse_position, upstream,
};

fn page(page_size: Option<u32>, page_token: Option<String>) -> Result<PageRequest, ServiceError> {
    if page_size == Some(0) {
        return Err(bad_request("page_size", "must be between 1 and 200"));
    }
    Ok(PageRequest {
        page_size: page_size.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    })
}

/// Create a prompt with its version 1.
#[utoipa::path(
    post,
    path = "/api/v1/prompts",
    tag = "prompts",
    request_body = CreatePromptBody,
    responses(
        (status = 201, description = "Created", body = CreatedPromptJson),
        (status = 400, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the write permission", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Rate limit of your key or org; see Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already exists", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is unavailable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_prompt(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<CreatePromptBody>,
) -> Result<Response, ServiceError> {
    let request = CreatePromptRequest {
        name: body.name,
        description: body.description,
        folder: body.folder,
        tags: body.tags,
        template: body.template,
        request_id: body.request_id.unwrap_or_default(),
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    // A mutation runs to completion even if the client goes away, so no
    // request is left half done; the task tracker is drained at shutdown.
    let call = state
        .background
        .spawn(async move { client.create_prompt(grpc_request).await });
    let response = call
        .await
        .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("request task failed: {e}")))?
        .map_err(|status| upstream(&status))?
        .into_inner();
    let prompt = response
        .prompt
        .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "the prompts service returned no prompt"))?;
    let location = format!("/api/v1/prompts/{}", prompt.prompt_id);
    let body = CreatedPromptJson {
        prompt: prompt.into(),
        position: response.position.map(|p| format_position(&p)).unwrap_or_default(),
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// List prompts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/prompts",
    tag = "prompts",
    params(ListParams),
    responses(
        (status = 200, description = "A page of prompts", body = PromptListJson),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_prompts(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<PromptListJson>, ServiceError> {
    let page = page(params.page_size, params.page_token)?;
    if params.min_position.is_some() {
        return Err(bad_request(
            "min_position",
            "is only supported when reading one prompt",
        ));
    }
    let response = state
        .prompts
        .clone()
        .list_prompts(outgoing(&credential, ListPromptsRequest { page: Some(page) }))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(PromptListJson {
        prompts: response.prompts.into_iter().map(PromptJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

/// Read one prompt.
#[utoipa::path(
    get,
    path = "/api/v1/prompts/{prompt_id}",
    tag = "prompts",
    params(("prompt_id" = String, Path, description = "The prompt's id"), ReadParams),
    responses(
        (status = 200, description = "The prompt", body = PromptJson),
        (status = 400, description = "Invalid id or position", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such prompt in your org", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_prompt(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
    ApiQuery(params): ApiQuery<ReadParams>,
) -> Result<Json<PromptJson>, ServiceError> {
    let request = GetPromptRequest {
        prompt_id,
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let prompt = state
        .prompts
        .clone()
        .get_prompt(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(prompt.into()))
}

/// List audit entries of your org, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit/entries",
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "A page of audit entries", body = AuditEntryListJson),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_audit_entries(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditEntryListJson>, ServiceError> {
    let request = ListAuditEntriesRequest {
        page: Some(page(params.page_size, params.page_token)?),
        action_prefix: params.action_prefix.unwrap_or_default(),
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .audit
        .clone()
        .list_audit_entries(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(AuditEntryListJson {
        entries: response.entries.into_iter().map(Into::into).collect(),
        next_page_token: response.next_page_token,
    }))
}
