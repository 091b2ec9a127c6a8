//! `/api/v1/audit…` handlers and what every list handler shares.

use axum::Json;
use axum::extract::State;
use promptops_platform::caller::outgoing;
use promptops_platform::errors::{Problem, ServiceError};
use promptops_proto::audit::v1::ListAuditEntriesRequest;
use promptops_proto::common::v1::PageRequest;

use super::AppState;
use super::authn::Authenticated;
use super::extract::ApiQuery;
use super::model::{AuditEntryListJson, AuditParams, bad_request, parse_position, upstream};

pub fn page(page_size: Option<u32>, page_token: Option<String>) -> Result<PageRequest, ServiceError> {
    if page_size == Some(0) {
        return Err(bad_request("page_size", "must be between 1 and 200"));
    }
    Ok(PageRequest {
        page_size: page_size.unwrap_or(0),
        page_token: page_token.unwrap_or_default(),
    })
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
