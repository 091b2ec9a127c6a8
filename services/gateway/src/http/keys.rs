//! `/api/v1/api-keys` and `/api/v1/sessions`.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use promptops_auth::roles::Role;
use promptops_platform::errors::{FieldViolation, Problem, ServiceError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::authn::Authenticated;
use super::extract::ApiJson;
use crate::identity::service::{ApiKeyView, SessionView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyBody {
    pub name: String,
    /// owner, admin, editor or viewer; at most your own role.
    pub role: String,
    /// Narrow the key to these scopes (each within its role); default: all
    /// of the role's scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Unix seconds; default: never.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

fn no_store(status: StatusCode, body: impl Serialize) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// Create an API key; its secret is in this answer only.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "auth", request_body = CreateApiKeyBody,
    responses(
        (status = 201, description = "Created; `secret` is shown once", body = ApiKeyView),
        (status = 400, description = "Invalid name, role, scopes or expiry", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid credential", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Your role cannot manage API keys or grant that role", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_api_key(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    ApiJson(body): ApiJson<CreateApiKeyBody>,
) -> Result<Response, ServiceError> {
    let role = Role::parse(&body.role).ok_or_else(|| {
        ServiceError::invalid(vec![FieldViolation::new(
            "role",
            "must be owner, admin, editor or viewer",
        )])
    })?;
    let view = state
        .identity
        .create_api_key(&principal, &body.name, role, body.scopes, body.expires_at)
        .await?;
    Ok(no_store(StatusCode::CREATED, view))
}

/// List the org's API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "auth",
    responses((status = 200, description = "The org's keys", body = ApiKeyList)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
) -> Result<Json<ApiKeyList>, ServiceError> {
    Ok(Json(ApiKeyList {
        api_keys: state.identity.list_api_keys(&principal).await?,
    }))
}

/// Rotate a key: a new secret now; the old one works for 24 hours more.
#[utoipa::path(post, path = "/api/v1/api-keys/{key_id}/rotate", tag = "auth",
    params(("key_id" = String, Path, description = "The key's id")),
    responses(
        (status = 200, description = "Rotated; the new `secret` is shown once", body = ApiKeyView),
        (status = 404, description = "No such key in your org", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn rotate_api_key(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(key_id): Path<String>,
) -> Result<Response, ServiceError> {
    let view = state.identity.rotate_api_key(&principal, &key_id).await?;
    Ok(no_store(StatusCode::OK, view))
}

/// Revoke a key: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{key_id}", tag = "auth",
    params(("key_id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key in your org", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state.identity.revoke_api_key(&principal, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Your live sessions in this org.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "auth",
    responses((status = 200, description = "Your sessions", body = SessionList)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
) -> Result<Json<SessionList>, ServiceError> {
    Ok(Json(SessionList {
        sessions: state.identity.list_sessions(&principal).await?,
    }))
}

/// Revoke a session (yours, or any in the org with `sessions:manage`).
#[utoipa::path(delete, path = "/api/v1/sessions/{session_id}", tag = "auth",
    params(("session_id" = String, Path, description = "The session's id")),
    responses(
        (status = 204, description = "Revoked: its tokens stop working at once"),
        (status = 404, description = "No such session in your org", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_session(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(session_id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state.identity.revoke_session(&principal, &session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
