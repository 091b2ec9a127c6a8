//! `/api/v1/prompts…`: the prompt registry over HTTP, translated to the
//! prompts service's gRPC API.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt as _};
use http::{HeaderMap, StatusCode, header};
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{ErrorClass, Problem, ServiceError};
use promptops_prompts::exchange::{self, MessageDoc, ModelDoc, VariableDoc, VersionDoc};
use promptops_proto::prompts::v1::{
    ArchivePromptRequest, CreatePromptRequest, CreateVersionRequest, DiffOp, DiffVersionsRequest,
    DocumentFormat, ExportPromptsRequest, GetLabelPolicyRequest, GetPromptRequest, ImportPromptsRequest,
    ListFoldersRequest, ListPromptsRequest, ListVersionsRequest, MoveLabelRequest, Prompt,
    PromptChangeResponse, PromptRef, PromptVersion, RemoveLabelRequest, RenderPromptRequest,
    ResolvePromptRequest, ResolvedPrompt, RestorePromptRequest, SetLabelPolicyRequest, UpdatePromptRequest,
    VersionInput, WatchRequest, render_prompt_response,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::api::page;
use super::authn::Authenticated;
use super::extract::{ApiJson, ApiQuery};
use super::model::{
    ActorJson, JSON_PROBLEMS, bad_request, format_position, parse_position, rfc3339, upstream,
};

// ---- JSON shapes ----------------------------------------------------------

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PromptJson {
    pub id: String,
    pub name: String,
    pub description: String,
    pub folder: String,
    pub tags: Vec<String>,
    pub latest_version: u64,
    /// Label → version number (`latest` is implicit and not listed).
    pub labels: BTreeMap<String, u64>,
    pub archived: bool,
    /// RFC 3339.
    pub created_at: String,
    pub created_by: ActorJson,
    pub updated_at: String,
}

impl From<Prompt> for PromptJson {
    fn from(p: Prompt) -> Self {
        Self {
            id: p.prompt_id,
            name: p.name,
            description: p.description,
            folder: p.folder,
            tags: p.tags,
            latest_version: p.latest_version,
            labels: p.labels.into_iter().collect(),
            archived: p.archived,
            created_at: rfc3339(p.created_at.as_ref()),
            created_by: p.created_by.into(),
            updated_at: rfc3339(p.updated_at.as_ref()),
        }
    }
}

/// One immutable version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionJson {
    /// The number and content (`template` or `messages`, `model`,
    /// `variables`, and the commit `message`).
    #[serde(flatten)]
    pub content: VersionDoc,
    pub author: ActorJson,
    pub created_at: String,
    /// The version this one copies (a rollback by copy), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<u64>,
}

impl From<PromptVersion> for VersionJson {
    fn from(v: PromptVersion) -> Self {
        Self {
            content: exchange::version_doc(&v, true),
            author: v.author.into(),
            created_at: rfc3339(v.created_at.as_ref()),
            copied_from: (v.copied_from != 0).then_some(v.copied_from),
        }
    }
}

/// The content of a new version.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionBody {
    /// A text template with `{{ variables }}` (`\{{` for a literal `{{`) …
    pub template: Option<String>,
    /// … or chat messages.
    pub messages: Option<Vec<MessageDoc>>,
    #[serde(default)]
    pub model: ModelDoc,
    /// Declared variables; when empty, the template's variables are taken as declared.
    #[serde(default)]
    pub variables: Vec<VariableDoc>,
    #[serde(default)]
    pub commit_message: String,
}

impl VersionBody {
    fn input(self, prefix: &str) -> Result<VersionInput, ServiceError> {
        let doc = VersionDoc {
            version: None,
            template: self.template,
            messages: self.messages,
            model: self.model,
            variables: self.variables,
            message: self.commit_message,
        };
        let input = exchange::version_input(&doc, prefix).map_err(ServiceError::invalid)?;
        Ok(input)
    }
}

/// Body of `POST /api/v1/prompts`: the prompt and its version 1.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePromptBody {
    /// 1-200 characters, no `/`; unique in its folder.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Slash-separated folder path; empty for the root.
    #[serde(default)]
    pub folder: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub template: Option<String>,
    pub messages: Option<Vec<MessageDoc>>,
    #[serde(default)]
    pub model: ModelDoc,
    #[serde(default)]
    pub variables: Vec<VariableDoc>,
    #[serde(default)]
    pub commit_message: String,
    /// Optional UUID: retrying with it and the same content answers 201 again instead of 409.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// Answer of a change to a prompt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PromptChangeJson {
    pub prompt: PromptJson,
    /// Where the change landed in the log (`EVT_PROMPTS:42`); pass it as
    /// `min_position` to a read to see the change at once.
    pub position: String,
}

fn change_json(response: PromptChangeResponse) -> Result<PromptChangeJson, ServiceError> {
    Ok(PromptChangeJson {
        prompt: response
            .prompt
            .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "the prompts service returned no prompt"))?
            .into(),
        position: response.position.map(|p| format_position(&p)).unwrap_or_default(),
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedVersionJson {
    pub version: VersionJson,
    pub prompt: PromptJson,
    pub position: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PromptListJson {
    pub prompts: Vec<PromptJson>,
    /// Empty on the last page.
    pub next_page_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionListJson {
    pub versions: Vec<VersionJson>,
    pub next_page_token: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResolvedJson {
    pub prompt: PromptJson,
    pub version: VersionJson,
    /// The label it was resolved through (empty for a version number).
    pub label: String,
}

fn resolved_json(resolved: ResolvedPrompt) -> Result<ResolvedJson, ServiceError> {
    let missing = || {
        ServiceError::new(
            ErrorClass::Internal,
            "the prompts service returned an empty answer",
        )
    };
    Ok(ResolvedJson {
        prompt: resolved.prompt.ok_or_else(missing)?.into(),
        version: resolved.version.ok_or_else(missing)?.into(),
        label: resolved.label,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListPromptsParams {
    /// 1-200; default 50.
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
    /// Only this folder (and below it with `recursive=true`).
    pub folder: Option<String>,
    #[serde(default)]
    pub recursive: bool,
    /// Only prompts with this tag.
    pub tag: Option<String>,
    /// Case-insensitive text in the name, description, tags or latest template.
    pub q: Option<String>,
    #[serde(default)]
    pub include_archived: bool,
    /// Wait (up to 5 s) until the listing includes this position.
    pub min_position: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub page_size: Option<u32>,
    pub page_token: Option<String>,
}

/// Which prompt and version to resolve.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ResolveParams {
    /// The prompt's id …
    pub prompt_id: Option<String>,
    /// … or its folder and name.
    pub folder: Option<String>,
    pub name: Option<String>,
    /// A label (default `latest`) …
    pub label: Option<String>,
    /// … or a version number.
    pub version: Option<u64>,
    /// Wait (up to 5 s) until the answer includes this position.
    pub min_position: Option<String>,
}

impl ResolveParams {
    fn reference(&self) -> PromptRef {
        PromptRef {
            prompt_id: self.prompt_id.clone().unwrap_or_default(),
            folder: self.folder.clone().unwrap_or_default(),
            name: self.name.clone().unwrap_or_default(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePromptBody {
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVersionBody {
    pub template: Option<String>,
    pub messages: Option<Vec<MessageDoc>>,
    #[serde(default)]
    pub model: ModelDoc,
    #[serde(default)]
    pub variables: Vec<VariableDoc>,
    #[serde(default)]
    pub commit_message: String,
    /// Instead of content: copy this version as the newest (a rollback by copy).
    pub copy_from: Option<u64>,
    /// Refuse with 409 unless the latest version is this one.
    pub expected_latest: Option<u64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveLabelBody {
    pub version: u64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReasonParams {
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DiffLineJson {
    /// `equal`, `insert` or `delete`.
    pub op: String,
    pub text: String,
    /// 1-based; absent when the line is not on that side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_line: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FieldChangeJson {
    pub field: String,
    /// JSON values; empty when absent on that side.
    pub old: String,
    pub new: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DiffJson {
    pub from: u64,
    pub to: u64,
    /// The templates line by line (chat messages as `[role]` blocks).
    pub template: Vec<DiffLineJson>,
    pub model: Vec<FieldChangeJson>,
    pub variables: Vec<FieldChangeJson>,
    pub unified: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenderBody {
    /// A stored version: the prompt's id, or folder and name …
    pub prompt_id: Option<String>,
    pub folder: Option<String>,
    pub name: Option<String>,
    pub label: Option<String>,
    pub version: Option<u64>,
    /// … or an unsaved draft.
    pub draft: Option<VersionBody>,
    #[serde(default)]
    pub variables: HashMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RenderedJson {
    /// The rendered text (text templates) …
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// … or messages (chat templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageDoc>>,
    pub model: ModelDoc,
    /// The version rendered (0 for a draft).
    pub version: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// One prompt …
    pub prompt_id: Option<String>,
    /// … or a folder and everything below it (default: the whole org).
    pub folder: Option<String>,
    /// `json` (default) or `yaml`.
    pub format: Option<String>,
    /// Only the latest version of each prompt, unnumbered, without labels.
    #[serde(default)]
    pub latest_only: bool,
    #[serde(default)]
    pub include_archived: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportParams {
    /// Validate and plan only.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportActionJson {
    /// `create`, `version`, `update`, `label`, `archive` or `unchanged`.
    pub action: String,
    pub folder: String,
    pub name: String,
    pub prompt_id: String,
    pub detail: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportResultJson {
    pub dry_run: bool,
    pub actions: Vec<ImportActionJson>,
    pub position: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LabelPolicyJson {
    /// Only roles with `labels:move-protected` may move these.
    pub protected_labels: Vec<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WatchParams {
    pub prompt_id: Option<String>,
    pub folder: Option<String>,
    pub name: Option<String>,
    /// Comma-separated labels to follow (`latest` follows new versions); default `production`.
    pub labels: Option<String>,
}

// ---- helpers --------------------------------------------------------------

/// Runs a mutation to completion even if the client goes away, so no request
/// is left half done; the task tracker is drained at shutdown.
async fn in_background<T: Send + 'static>(
    state: &AppState,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
) -> Result<T, ServiceError> {
    state
        .background
        .spawn(promptops_platform::caller::Origin::carried(call))
        .await
        .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("request task failed: {e}")))?
        .map(tonic::Response::into_inner)
        .map_err(|status| upstream(&status))
}

fn document_format(value: Option<&str>) -> Result<DocumentFormat, ServiceError> {
    match value {
        None | Some("json") => Ok(DocumentFormat::Json),
        Some("yaml" | "yml") => Ok(DocumentFormat::Yaml),
        Some(_) => Err(bad_request("format", "must be json or yaml")),
    }
}

fn content_format(headers: &HeaderMap) -> Result<DocumentFormat, ServiceError> {
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    match mime {
        "application/json" => Ok(DocumentFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(DocumentFormat::Yaml),
        _ => Err(ServiceError::new(
            ErrorClass::UnsupportedMediaType,
            "send the document as application/json or application/yaml",
        )),
    }
}

// ---- handlers -------------------------------------------------------------

/// Create a prompt with its version 1.
#[utoipa::path(post, path = "/api/v1/prompts", tag = "prompts", request_body = CreatePromptBody,
    responses(
        (status = 201, description = "Created", body = PromptChangeJson),
        (status = 400, description = "Invalid input, every field named (templates with line:column)", body = Problem, content_type = JSON_PROBLEMS),
        (status = 401, description = "No valid credential", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "Needs the write permission", body = Problem, content_type = JSON_PROBLEMS),
        (status = 409, description = "A prompt with this name exists in the folder", body = Problem, content_type = JSON_PROBLEMS),
        (status = 413, description = "Body too large", body = Problem, content_type = JSON_PROBLEMS),
        (status = 415, description = "Not JSON", body = Problem, content_type = JSON_PROBLEMS),
        (status = 429, description = "Rate limit of your key or org; see Retry-After", body = Problem, content_type = JSON_PROBLEMS),
        (status = 503, description = "A dependency is unavailable", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn create_prompt(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<CreatePromptBody>,
) -> Result<Response, ServiceError> {
    let version = VersionBody {
        template: body.template,
        messages: body.messages,
        model: body.model,
        variables: body.variables,
        commit_message: body.commit_message,
    }
    .input("version")?;
    let request = CreatePromptRequest {
        name: body.name,
        description: body.description,
        folder: body.folder,
        tags: body.tags,
        version: Some(version),
        request_id: body.request_id.unwrap_or_default(),
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.create_prompt(grpc_request).await }).await?;
    let body = change_json(PromptChangeResponse {
        prompt: response.prompt,
        position: response.position,
    })?;
    let location = format!("/api/v1/prompts/{}", body.prompt.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// List and search prompts, newest first.
#[utoipa::path(get, path = "/api/v1/prompts", tag = "prompts", params(ListPromptsParams),
    responses(
        (status = 200, description = "A page of prompts", body = PromptListJson),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn list_prompts(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<ListPromptsParams>,
) -> Result<Json<PromptListJson>, ServiceError> {
    let request = ListPromptsRequest {
        page: Some(page(params.page_size, params.page_token)?),
        folder: params.folder,
        recursive: params.recursive,
        tag: params.tag.unwrap_or_default(),
        query: params.q.unwrap_or_default(),
        include_archived: params.include_archived,
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .prompts
        .clone()
        .list_prompts(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(PromptListJson {
        prompts: response.prompts.into_iter().map(PromptJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FoldersParams {
    #[serde(default)]
    pub include_archived: bool,
    /// Wait (up to 5 s) until the answer includes this position.
    pub min_position: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FolderCountJson {
    /// Slash-separated; empty for the root.
    pub folder: String,
    /// Prompts directly in this folder.
    pub prompts: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TagCountJson {
    pub tag: String,
    pub prompts: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FoldersJson {
    /// Sorted by path; at most 5,000.
    pub folders: Vec<FolderCountJson>,
    /// Sorted by name; at most 1,000.
    pub tags: Vec<TagCountJson>,
    /// More folders or tags exist than are listed.
    pub truncated: bool,
}

/// Every folder and tag in use, with how many prompts each holds: enough to
/// draw a folder tree and tag filters without listing every prompt.
#[utoipa::path(get, path = "/api/v1/prompts/folders", tag = "prompts", params(FoldersParams),
    responses(
        (status = 200, description = "Folders and tags", body = FoldersJson),
    ))]
pub async fn list_folders(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<FoldersParams>,
) -> Result<Json<FoldersJson>, ServiceError> {
    let request = ListFoldersRequest {
        include_archived: params.include_archived,
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let response = state
        .prompts
        .clone()
        .list_folders(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(FoldersJson {
        folders: response
            .folders
            .into_iter()
            .map(|f| FolderCountJson {
                folder: f.folder,
                prompts: f.prompts,
            })
            .collect(),
        tags: response
            .tags
            .into_iter()
            .map(|t| TagCountJson {
                tag: t.tag,
                prompts: t.prompts,
            })
            .collect(),
        truncated: response.truncated,
    }))
}

/// Read one prompt: details, labels and latest version number.
#[utoipa::path(get, path = "/api/v1/prompts/{prompt_id}", tag = "prompts",
    params(("prompt_id" = String, Path, description = "The prompt's id")),
    responses(
        (status = 200, description = "The prompt", body = PromptJson),
        (status = 400, description = "Invalid id", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt in your org", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn get_prompt(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
) -> Result<Json<PromptJson>, ServiceError> {
    let request = GetPromptRequest {
        prompt_id,
        min_position: None,
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

/// Change a prompt's description or tags (name and folder are its identity).
#[utoipa::path(patch, path = "/api/v1/prompts/{prompt_id}", tag = "prompts", request_body = UpdatePromptBody,
    params(("prompt_id" = String, Path, description = "The prompt's id")),
    responses(
        (status = 200, description = "Changed (or already so)", body = PromptChangeJson),
        (status = 400, description = "Invalid input", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn update_prompt(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
    ApiJson(body): ApiJson<UpdatePromptBody>,
) -> Result<Json<PromptChangeJson>, ServiceError> {
    let request = UpdatePromptRequest {
        prompt_id,
        description: body.description,
        set_tags: body.tags.is_some(),
        tags: body.tags.unwrap_or_default(),
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.update_prompt(grpc_request).await }).await?;
    Ok(Json(change_json(response)?))
}

/// Save a new version, or copy an old one as the newest (rollback by copy).
#[utoipa::path(post, path = "/api/v1/prompts/{prompt_id}/versions", tag = "prompts", request_body = CreateVersionBody,
    params(("prompt_id" = String, Path, description = "The prompt's id")),
    responses(
        (status = 201, description = "Saved", body = CreatedVersionJson),
        (status = 400, description = "Invalid template or configuration, with positions", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt", body = Problem, content_type = JSON_PROBLEMS),
        (status = 409, description = "The latest version is not `expected_latest`", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn create_version(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
    ApiJson(body): ApiJson<CreateVersionBody>,
) -> Result<Response, ServiceError> {
    let has_content = body.template.is_some() || body.messages.is_some();
    let version = if body.copy_from.is_some() && !has_content {
        None
    } else {
        Some(
            VersionBody {
                template: body.template,
                messages: body.messages,
                model: body.model,
                variables: body.variables,
                commit_message: body.commit_message,
            }
            .input("version")?,
        )
    };
    let request = CreateVersionRequest {
        prompt_id: prompt_id.clone(),
        version,
        copy_from: body.copy_from.unwrap_or(0),
        expected_latest: body.expected_latest.unwrap_or(0),
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.create_version(grpc_request).await }).await?;
    let missing = || {
        ServiceError::new(
            ErrorClass::Internal,
            "the prompts service returned an empty answer",
        )
    };
    let version: VersionJson = response.version.ok_or_else(missing)?.into();
    let location = format!(
        "/api/v1/prompts/{prompt_id}/versions/{}",
        version.content.version.unwrap_or(0)
    );
    let body = CreatedVersionJson {
        version,
        prompt: response.prompt.ok_or_else(missing)?.into(),
        position: response.position.map(|p| format_position(&p)).unwrap_or_default(),
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response())
}

/// A prompt's versions, newest first.
#[utoipa::path(get, path = "/api/v1/prompts/{prompt_id}/versions", tag = "prompts",
    params(("prompt_id" = String, Path, description = "The prompt's id"), PageParams),
    responses(
        (status = 200, description = "A page of versions", body = VersionListJson),
        (status = 404, description = "No such prompt", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn list_versions(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<VersionListJson>, ServiceError> {
    let request = ListVersionsRequest {
        prompt_id,
        page: Some(page(params.page_size, params.page_token)?),
    };
    let response = state
        .prompts
        .clone()
        .list_versions(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(VersionListJson {
        versions: response.versions.into_iter().map(VersionJson::from).collect(),
        next_page_token: response.next_page_token,
    }))
}

/// Resolve a prompt by id or by folder and name, at a label (default
/// `latest`) or version number. Answers `ETag`; send it back as
/// `If-None-Match` to get 304 while nothing changed.
#[utoipa::path(get, path = "/api/v1/prompts/resolve", tag = "prompts", params(ResolveParams),
    responses(
        (status = 200, description = "The version", body = ResolvedJson,
            headers(("ETag" = String, description = "Changes whenever the prompt changes"))),
        (status = 304, description = "Unchanged since the ETag in If-None-Match"),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt, label or version", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn resolve(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ResolveParams>,
) -> Result<Response, ServiceError> {
    let request = ResolvePromptRequest {
        prompt: Some(params.reference()),
        label: params.label.clone().unwrap_or_default(),
        version: params.version.unwrap_or(0),
        min_position: parse_position(params.min_position.as_deref())?,
    };
    let resolved = state
        .prompts
        .clone()
        .resolve_prompt(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let etag = resolved.etag.clone();
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "private, no-cache".to_owned()),
    ];
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().trim_start_matches("W/"))
        .any(|v| v == etag || v == "*");
    if matches {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    Ok((cache, Json(resolved_json(resolved)?)).into_response())
}

/// Point a label at a version (promote or roll back). Protected labels
/// (see `/api/v1/prompt-policy`) need `labels:move-protected`.
#[utoipa::path(put, path = "/api/v1/prompts/{prompt_id}/labels/{label}", tag = "prompts", request_body = MoveLabelBody,
    params(("prompt_id" = String, Path, description = "The prompt's id"), ("label" = String, Path, description = "e.g. production")),
    responses(
        (status = 200, description = "Moved (or already there)", body = PromptChangeJson),
        (status = 400, description = "Invalid label, or no such version", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "A protected label and your role may not move it", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn move_label(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path((prompt_id, label)): Path<(String, String)>,
    ApiJson(body): ApiJson<MoveLabelBody>,
) -> Result<Json<PromptChangeJson>, ServiceError> {
    let request = MoveLabelRequest {
        prompt_id,
        label,
        version: body.version,
        reason: body.reason,
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.move_label(grpc_request).await }).await?;
    Ok(Json(change_json(response)?))
}

/// Remove a label from a prompt.
#[utoipa::path(delete, path = "/api/v1/prompts/{prompt_id}/labels/{label}", tag = "prompts",
    params(("prompt_id" = String, Path, description = "The prompt's id"), ("label" = String, Path, description = "The label"), ReasonParams),
    responses(
        (status = 200, description = "Removed", body = PromptChangeJson),
        (status = 403, description = "A protected label", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt or label", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn remove_label(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path((prompt_id, label)): Path<(String, String)>,
    ApiQuery(params): ApiQuery<ReasonParams>,
) -> Result<Json<PromptChangeJson>, ServiceError> {
    let request = RemoveLabelRequest {
        prompt_id,
        label,
        reason: params.reason.unwrap_or_default(),
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.remove_label(grpc_request).await }).await?;
    Ok(Json(change_json(response)?))
}

/// Archive a prompt: hidden from lists, no new versions or label moves; still resolvable.
#[utoipa::path(post, path = "/api/v1/prompts/{prompt_id}/archive", tag = "prompts", request_body = ReasonBody,
    params(("prompt_id" = String, Path, description = "The prompt's id")),
    responses(
        (status = 200, description = "Archived", body = PromptChangeJson),
        (status = 403, description = "Needs the archive permission", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn archive_prompt(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Json<PromptChangeJson>, ServiceError> {
    let request = ArchivePromptRequest {
        prompt_id,
        reason: body.reason,
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.archive_prompt(grpc_request).await }).await?;
    Ok(Json(change_json(response)?))
}

/// Restore an archived prompt.
#[utoipa::path(post, path = "/api/v1/prompts/{prompt_id}/restore", tag = "prompts", request_body = ReasonBody,
    params(("prompt_id" = String, Path, description = "The prompt's id")),
    responses(
        (status = 200, description = "Restored", body = PromptChangeJson),
        (status = 404, description = "No such prompt", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn restore_prompt(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
    ApiJson(body): ApiJson<ReasonBody>,
) -> Result<Json<PromptChangeJson>, ServiceError> {
    let request = RestorePromptRequest {
        prompt_id,
        reason: body.reason,
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.restore_prompt(grpc_request).await }).await?;
    Ok(Json(change_json(response)?))
}

/// Diff two versions: template lines, model fields, variables.
#[utoipa::path(get, path = "/api/v1/prompts/{prompt_id}/diff", tag = "prompts",
    params(("prompt_id" = String, Path, description = "The prompt's id"), DiffParams),
    responses(
        (status = 200, description = "The differences", body = DiffJson),
        (status = 400, description = "No such version", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn diff(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    Path(prompt_id): Path<String>,
    ApiQuery(params): ApiQuery<DiffParams>,
) -> Result<Json<DiffJson>, ServiceError> {
    let request = DiffVersionsRequest {
        prompt_id,
        from_version: params.from,
        to_version: params.to,
    };
    let d = state
        .prompts
        .clone()
        .diff_versions(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let changes = |list: Vec<promptops_proto::prompts::v1::FieldChange>| {
        list.into_iter()
            .map(|c| FieldChangeJson {
                field: c.field,
                old: c.old_value,
                new: c.new_value,
            })
            .collect()
    };
    Ok(Json(DiffJson {
        from: d.from_version,
        to: d.to_version,
        template: d
            .template
            .into_iter()
            .map(|l| DiffLineJson {
                op: match DiffOp::try_from(l.op).unwrap_or(DiffOp::Unspecified) {
                    DiffOp::Insert => "insert",
                    DiffOp::Delete => "delete",
                    _ => "equal",
                }
                .to_owned(),
                text: l.text,
                old_line: (l.old_line != 0).then_some(l.old_line),
                new_line: (l.new_line != 0).then_some(l.new_line),
            })
            .collect(),
        model: changes(d.model),
        variables: changes(d.variables),
        unified: d.unified,
    }))
}

/// Render a stored version or a draft with variables, without running it.
#[utoipa::path(post, path = "/api/v1/prompts/render", tag = "prompts", request_body = RenderBody,
    responses(
        (status = 200, description = "The rendered template", body = RenderedJson),
        (status = 400, description = "Missing variables, each named (`variables.<name>`), or an invalid draft", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt, label or version", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn render(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<RenderBody>,
) -> Result<Json<RenderedJson>, ServiceError> {
    let draft = body.draft.map(|d| d.input("draft")).transpose()?;
    let request = RenderPromptRequest {
        prompt: Some(PromptRef {
            prompt_id: body.prompt_id.unwrap_or_default(),
            folder: body.folder.unwrap_or_default(),
            name: body.name.unwrap_or_default(),
        }),
        label: body.label.unwrap_or_default(),
        version: body.version.unwrap_or(0),
        draft,
        variables: body.variables,
    };
    let rendered = state
        .prompts
        .clone()
        .render_prompt(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let (text, messages) = match rendered.kind {
        Some(render_prompt_response::Kind::Text(text)) => (Some(text), None),
        Some(render_prompt_response::Kind::Chat(chat)) => (
            None,
            Some(
                chat.messages
                    .into_iter()
                    .map(|m| MessageDoc {
                        role: exchange::role_name(m.role).to_owned(),
                        content: m.content,
                    })
                    .collect(),
            ),
        ),
        None => (None, None),
    };
    Ok(Json(RenderedJson {
        text,
        messages,
        model: rendered.model.as_ref().map(ModelDoc::from).unwrap_or_default(),
        version: rendered.version,
    }))
}

/// Export one prompt or a folder as JSON or YAML (see the README for the format).
#[utoipa::path(get, path = "/api/v1/prompts/export", tag = "prompts", params(ExportParams),
    responses(
        (status = 200, description = "The document", content_type = "application/json"),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn export(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<ExportParams>,
) -> Result<Response, ServiceError> {
    let format = document_format(params.format.as_deref())?;
    let request = ExportPromptsRequest {
        prompt_id: params.prompt_id.unwrap_or_default(),
        folder: params.folder.unwrap_or_default(),
        format: format as i32,
        latest_only: params.latest_only,
        include_archived: params.include_archived,
    };
    let exported = state
        .prompts
        .clone()
        .export_prompts(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let content_type = if format == DocumentFormat::Yaml {
        "application/yaml"
    } else {
        "application/json"
    };
    Ok(([(header::CONTENT_TYPE, content_type)], exported.document).into_response())
}

/// Import a document (JSON or YAML, by Content-Type). Everything is
/// validated first and every problem reported with its path; nothing is
/// written unless the whole document is valid.
#[utoipa::path(post, path = "/api/v1/prompts/import", tag = "prompts", params(ImportParams),
    request_body(content = String, content_type = "application/yaml", description = "A promptops.prompts/v1 document"),
    responses(
        (status = 200, description = "Applied (or planned, on a dry run)", body = ImportResultJson),
        (status = 400, description = "Every problem, with its path (and line for syntax errors)", body = Problem, content_type = JSON_PROBLEMS),
        (status = 415, description = "Not JSON or YAML", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn import(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ImportParams>,
    body: String,
) -> Result<Json<ImportResultJson>, ServiceError> {
    let format = content_format(&headers)?;
    let request = ImportPromptsRequest {
        document: body,
        format: format as i32,
        dry_run: params.dry_run,
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let response = in_background(&state, async move { client.import_prompts(grpc_request).await }).await?;
    Ok(Json(ImportResultJson {
        dry_run: response.dry_run,
        actions: response
            .actions
            .into_iter()
            .map(|a| ImportActionJson {
                action: a.action,
                folder: a.folder,
                name: a.name,
                prompt_id: a.prompt_id,
                detail: a.detail,
            })
            .collect(),
        position: response.position.map(|p| format_position(&p)).unwrap_or_default(),
    }))
}

/// Server-sent events: the resolved version now (`initial: true`) and each
/// time a watched label moves. Event name `version`; data as `WatchEventJson`.
#[utoipa::path(get, path = "/api/v1/prompts/watch", tag = "prompts", params(WatchParams),
    responses(
        (status = 200, description = "An event stream", body = WatchEventJson, content_type = "text/event-stream"),
        (status = 400, description = "Invalid parameters", body = Problem, content_type = JSON_PROBLEMS),
        (status = 404, description = "No such prompt", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn watch(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiQuery(params): ApiQuery<WatchParams>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ServiceError> {
    let request = WatchRequest {
        prompt: Some(PromptRef {
            prompt_id: params.prompt_id.unwrap_or_default(),
            folder: params.folder.unwrap_or_default(),
            name: params.name.unwrap_or_default(),
        }),
        labels: params
            .labels
            .map(|l| {
                l.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let stream = state
        .prompts
        .clone()
        .watch(outgoing(&credential, request))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    let events = stream.map(|item| {
        let event = match item {
            Ok(event) => {
                let json = WatchEventJson {
                    label: event.label,
                    initial: event.initial,
                    position: event.position.map(|p| format_position(&p)).unwrap_or_default(),
                    resolved: event.resolved.and_then(|r| resolved_json(r).ok()),
                };
                Event::default()
                    .event("version")
                    .json_data(json)
                    .unwrap_or_else(|_| Event::default().event("error"))
            }
            Err(status) => Event::default()
                .event("error")
                .json_data(upstream(&status).to_problem())
                .unwrap_or_else(|_| Event::default().event("error")),
        };
        Ok::<_, Infallible>(event)
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WatchEventJson {
    /// The label that moved (`latest` for a new version).
    pub label: String,
    /// True for the state when the watch began.
    pub initial: bool,
    pub position: String,
    /// Absent when the label was removed.
    pub resolved: Option<ResolvedJson>,
}

/// The org's protected labels.
#[utoipa::path(get, path = "/api/v1/prompt-policy", tag = "prompts",
    responses((status = 200, description = "The policy", body = LabelPolicyJson)))]
pub async fn get_policy(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
) -> Result<Json<LabelPolicyJson>, ServiceError> {
    let policy = state
        .prompts
        .clone()
        .get_label_policy(outgoing(&credential, GetLabelPolicyRequest {}))
        .await
        .map_err(|status| upstream(&status))?
        .into_inner();
    Ok(Json(LabelPolicyJson {
        protected_labels: policy.protected_labels,
    }))
}

/// Set the org's protected labels (needs `settings:manage`).
#[utoipa::path(put, path = "/api/v1/prompt-policy", tag = "prompts", request_body = LabelPolicyJson,
    responses(
        (status = 200, description = "The new policy", body = LabelPolicyJson),
        (status = 400, description = "Invalid label names", body = Problem, content_type = JSON_PROBLEMS),
        (status = 403, description = "Needs settings:manage", body = Problem, content_type = JSON_PROBLEMS),
    ))]
pub async fn set_policy(
    State(state): State<AppState>,
    Authenticated(_caller, credential): Authenticated,
    ApiJson(body): ApiJson<LabelPolicyJson>,
) -> Result<Json<LabelPolicyJson>, ServiceError> {
    let request = SetLabelPolicyRequest {
        protected_labels: body.protected_labels,
    };
    let mut client = state.prompts.clone();
    let grpc_request = outgoing(&credential, request);
    let policy = in_background(&state, async move { client.set_label_policy(grpc_request).await }).await?;
    Ok(Json(LabelPolicyJson {
        protected_labels: policy.protected_labels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_bodies_need_exactly_one_template_kind() {
        let both = VersionBody {
            template: Some("x".into()),
            messages: Some(Vec::new()),
            ..Default::default()
        };
        let err = both.input("version").unwrap_err();
        assert_eq!(err.violations[0].field, "version.template");
        let neither = VersionBody::default().input("version").unwrap_err();
        assert_eq!(neither.violations[0].field, "version.template");
    }
}
