//! `/api/v1/members` and `/api/v1/invitations`.

use axum::Json;
use axum::extract::{Path, State};
use http::StatusCode;
use promptops_auth::roles::{Resource, Role};
use promptops_platform::errors::{FieldViolation, Problem, ServiceError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::authn::Authenticated;
use super::extract::ApiJson;
use crate::identity::service::{GrantView, InvitationView, MemberView};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InviteBody {
    pub email: String,
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleBody {
    pub role: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<MemberView>,
}

fn role(value: &str) -> Result<Role, ServiceError> {
    Role::parse(value).ok_or_else(|| {
        ServiceError::invalid(vec![FieldViolation::new(
            "role",
            "must be owner, admin, editor or viewer",
        )])
    })
}

/// The org's members.
#[utoipa::path(get, path = "/api/v1/members", tag = "members",
    responses((status = 200, description = "Members", body = MemberList)))]
pub async fn list_members(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
) -> Result<Json<MemberList>, ServiceError> {
    Ok(Json(MemberList {
        members: state.identity.list_members(&principal).await?,
    }))
}

/// Invite an address to the org with a role (below your own, unless you are an owner).
#[utoipa::path(post, path = "/api/v1/invitations", tag = "members", request_body = InviteBody,
    responses(
        (status = 201, description = "Invited", body = InvitationView),
        (status = 400, description = "Invalid email or role", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Your role cannot invite with that role", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn invite(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    ApiJson(body): ApiJson<InviteBody>,
) -> Result<(StatusCode, Json<InvitationView>), ServiceError> {
    let invited = state
        .identity
        .invite(&principal, &body.email, role(&body.role)?)
        .await?;
    Ok((StatusCode::CREATED, Json(invited)))
}

/// Accept an invitation sent to your address; then log in with its `org_id`.
#[utoipa::path(post, path = "/api/v1/orgs/{org_id}/invitations/{invitation_id}/accept", tag = "members",
    params(("org_id" = String, Path, description = "The inviting org"), ("invitation_id" = String, Path, description = "The invitation")),
    responses(
        (status = 204, description = "You are a member"),
        (status = 404, description = "No such invitation for your address", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn accept(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path((org_id, invitation_id)): Path<(String, String)>,
) -> Result<StatusCode, ServiceError> {
    state.identity.accept(&principal, &org_id, &invitation_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change a member's role; their sessions end.
#[utoipa::path(patch, path = "/api/v1/members/{user_id}", tag = "members", request_body = RoleBody,
    params(("user_id" = String, Path, description = "The member")),
    responses(
        (status = 204, description = "Changed"),
        (status = 403, description = "Not allowed for your role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn change_role(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> Result<StatusCode, ServiceError> {
    state
        .identity
        .change_role(&principal, &user_id, role(&body.role)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member (or leave, with your own id); their sessions end.
#[utoipa::path(delete, path = "/api/v1/members/{user_id}", tag = "members",
    params(("user_id" = String, Path, description = "The member")),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not allowed for your role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn remove_member(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state.identity.remove_member(&principal, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Log a member out everywhere in this org, at once.
#[utoipa::path(post, path = "/api/v1/members/{user_id}/logout", tag = "members",
    params(("user_id" = String, Path, description = "The member")),
    responses(
        (status = 204, description = "Every session of theirs is revoked"),
        (status = 403, description = "Needs sessions:manage", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn force_logout(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ServiceError> {
    state.identity.force_logout(&principal, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What a grant applies to: one of `folder` or `prompt_id`.
#[derive(Debug, Deserialize, ToSchema, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GrantTarget {
    /// A folder path: the grant covers it and everything below it.
    pub folder: Option<String>,
    /// One prompt.
    pub prompt_id: Option<String>,
}

impl GrantTarget {
    fn resource(&self) -> Result<Resource, ServiceError> {
        match (&self.folder, &self.prompt_id) {
            (Some(folder), None) => Ok(Resource::Folder(folder.trim_matches('/').to_owned())),
            (None, Some(id)) if uuid::Uuid::parse_str(id).is_ok() => Ok(Resource::Prompt(id.clone())),
            (None, Some(_)) => Err(ServiceError::invalid(vec![FieldViolation::new(
                "prompt_id",
                "must be a UUID",
            )])),
            _ => Err(ServiceError::invalid(vec![FieldViolation::new(
                "folder",
                "give exactly one of folder and prompt_id",
            )])),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pub folder: Option<String>,
    pub prompt_id: Option<String>,
    /// admin, editor or viewer (at most your own role).
    pub role: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GrantList {
    pub grants: Vec<GrantView>,
}

/// The org's resource-level grants.
#[utoipa::path(get, path = "/api/v1/grants", tag = "members",
    responses((status = 200, description = "Grants", body = GrantList)))]
pub async fn list_grants(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
) -> Result<Json<GrantList>, ServiceError> {
    Ok(Json(GrantList {
        grants: state.identity.list_grants(&principal).await?,
    }))
}

/// Give a member a role on a folder (and below) or a prompt, on top of their
/// org role: e.g. a viewer who edits one folder. Grants only add.
#[utoipa::path(put, path = "/api/v1/members/{user_id}/grants", tag = "members", request_body = GrantBody,
    params(("user_id" = String, Path, description = "The member")),
    responses(
        (status = 204, description = "Granted"),
        (status = 400, description = "Invalid target or role", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs members:manage; at most your own role", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such member", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn grant(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<StatusCode, ServiceError> {
    let target = GrantTarget {
        folder: body.folder,
        prompt_id: body.prompt_id,
    };
    state
        .identity
        .grant(&principal, &user_id, target.resource()?, role(&body.role)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Take a grant back.
#[utoipa::path(delete, path = "/api/v1/members/{user_id}/grants", tag = "members",
    params(("user_id" = String, Path, description = "The member"), GrantTarget),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such grant", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    Authenticated(principal, _credential): Authenticated,
    Path(user_id): Path<String>,
    super::extract::ApiQuery(target): super::extract::ApiQuery<GrantTarget>,
) -> Result<StatusCode, ServiceError> {
    state
        .identity
        .revoke_grant(&principal, &user_id, target.resource()?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
