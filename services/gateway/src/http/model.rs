//! The JSON shapes of the HTTP API, with their OpenAPI schemas.

use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_proto::audit::v1::AuditEntry;
use promptops_proto::common::v1::{Actor, ActorKind, LogPosition};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Who did something.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ActorJson {
    /// `user`, `api_key` or `service`.
    pub kind: String,
    pub id: String,
}

impl From<Option<Actor>> for ActorJson {
    fn from(actor: Option<Actor>) -> Self {
        let actor = actor.unwrap_or_default();
        let kind = match ActorKind::try_from(actor.kind).unwrap_or(ActorKind::Unspecified) {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Service => "service",
            ActorKind::Unspecified => "unknown",
        };
        Self {
            kind: kind.to_owned(),
            id: actor.id,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryJson {
    pub event_id: String,
    pub occurred_at: String,
    pub actor: ActorJson,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub summary: String,
    pub correlation_id: String,
    pub trace_id: String,
    pub position: String,
    /// `success`, `failure` or `cancelled`.
    pub outcome: String,
    pub client_address: String,
    pub user_agent: String,
    /// The entry's place in its chain (one chain per org and stream).
    pub chain_sequence: u64,
    /// SHA-256 of the entry's content and `previous_hash`.
    pub hash: String,
    pub previous_hash: String,
}

impl From<AuditEntry> for AuditEntryJson {
    fn from(e: AuditEntry) -> Self {
        Self {
            event_id: e.event_id,
            occurred_at: rfc3339(e.occurred_at.as_ref()),
            actor: e.actor.into(),
            action: e.action,
            resource_type: e.resource_type,
            resource_id: e.resource_id,
            summary: e.summary,
            correlation_id: e.correlation_id,
            trace_id: e.trace_id,
            position: e.position.map(|p| format_position(&p)).unwrap_or_default(),
            outcome: e.outcome,
            client_address: e.client_address,
            user_agent: e.user_agent,
            chain_sequence: e.chain_sequence,
            hash: e.hash,
            previous_hash: e.previous_hash,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryListJson {
    pub entries: Vec<AuditEntryJson>,
    pub next_page_token: String,
}

/// `EVT_PROMPTS:42`
/// The media type of error answers, for the OpenAPI description.
pub const JSON_PROBLEMS: &str = "application/problem+json";

pub fn format_position(position: &LogPosition) -> String {
    format!("{}:{}", position.stream, position.sequence)
}

pub fn parse_position(value: Option<&str>) -> Result<Option<LogPosition>, ServiceError> {
    let Some(value) = value else { return Ok(None) };
    let invalid = || {
        ServiceError::invalid(vec![FieldViolation::new(
            "min_position",
            "expected STREAM:SEQUENCE as returned by a write, e.g. EVT_PROMPTS:42",
        )])
    };
    let (stream, sequence) = value.split_once(':').ok_or_else(invalid)?;
    let sequence = sequence.parse().map_err(|_| invalid())?;
    if stream.is_empty() {
        return Err(invalid());
    }
    Ok(Some(LogPosition {
        stream: stream.to_owned(),
        sequence,
    }))
}

pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return String::new() };
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// An error answered before reaching a service.
pub fn bad_request(field: &str, description: &str) -> ServiceError {
    ServiceError::invalid_field(field, description)
}

/// What the gateway answers for a failed upstream call.
pub fn upstream(status: &tonic::Status) -> ServiceError {
    let err = ServiceError::from_status(status);
    if err.class == ErrorClass::Unavailable || err.class == ErrorClass::Internal {
        tracing::warn!(code = ?status.code(), message = status.message(), "upstream call failed");
    }
    err
}
