//! Who is calling.
//!
//! Services read the caller from gRPC metadata: `x-promptops-org` and
//! `x-promptops-actor` (`user:<id>`, `api_key:<id>` or `service:<name>`).
//! Every read and write is scoped by `Caller::org_id`; no request body names
//! the org.
//!
//! Until identity lands (issue "Identity, tenants and access control"), the
//! gateway is the only component that sets these headers and it acts for the
//! single org `default`; services trust the metadata they receive. Identity
//! replaces this with a verified credential (JWT or API key) checked by each
//! service itself, behind this same type.

use promptops_proto::common::v1::{Actor, ActorKind};
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::errors::{ErrorClass, ServiceError};

pub const ORG_HEADER: &str = "x-promptops-org";
pub const ACTOR_HEADER: &str = "x-promptops-actor";

/// The org the gateway acts for until identity lands.
pub const DEFAULT_ORG: &str = "default";

#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub org_id: String,
    pub actor: Actor,
}

impl Caller {
    pub fn new(org_id: impl Into<String>, kind: ActorKind, id: impl Into<String>) -> Self {
        Self {
            org_id: org_id.into(),
            actor: Actor {
                kind: kind as i32,
                id: id.into(),
            },
        }
    }

    /// The caller named by incoming metadata; UNAUTHENTICATED when absent.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Self, ServiceError> {
        let header = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let org_id = header(ORG_HEADER).ok_or_else(|| {
            ServiceError::new(
                ErrorClass::Unauthenticated,
                format!("missing {ORG_HEADER} metadata"),
            )
        })?;
        if !is_valid_id(org_id) {
            return Err(ServiceError::new(
                ErrorClass::Unauthenticated,
                format!("{ORG_HEADER} is not a valid org id"),
            ));
        }
        let actor = header(ACTOR_HEADER).unwrap_or("service:unknown");
        let (kind, id) = actor.split_once(':').unwrap_or(("service", actor));
        let kind = match kind {
            "user" => ActorKind::User,
            "api_key" => ActorKind::ApiKey,
            "service" => ActorKind::Service,
            _ => {
                return Err(ServiceError::new(
                    ErrorClass::Unauthenticated,
                    format!("{ACTOR_HEADER} must be user:<id>, api_key:<id> or service:<name>"),
                ));
            }
        };
        Ok(Self::new(org_id, kind, id))
    }

    /// Writes the caller into outgoing metadata.
    pub fn write_to(&self, metadata: &mut MetadataMap) {
        let kind = match ActorKind::try_from(self.actor.kind).unwrap_or(ActorKind::Unspecified) {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Service | ActorKind::Unspecified => "service",
        };
        if let Ok(org) = MetadataValue::try_from(self.org_id.as_str()) {
            metadata.insert(ORG_HEADER, org);
        }
        if let Ok(actor) = MetadataValue::try_from(format!("{kind}:{}", self.actor.id)) {
            metadata.insert(ACTOR_HEADER, actor);
        }
    }
}

/// Builds an outgoing gRPC request carrying the caller and the current trace.
pub fn outgoing<T>(caller: &Caller, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    caller.write_to(request.metadata_mut());
    let mut headers = http::HeaderMap::new();
    crate::telemetry::inject_current(&mut headers);
    if let Some(value) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| MetadataValue::try_from(v).ok())
    {
        request.metadata_mut().insert("traceparent", value);
    }
    request
}

fn is_valid_id(value: &str) -> bool {
    value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_round_trips_through_metadata() {
        let caller = Caller::new("org_1", ActorKind::User, "u_42");
        let mut metadata = MetadataMap::new();
        caller.write_to(&mut metadata);
        assert_eq!(Caller::from_metadata(&metadata).unwrap(), caller);
    }

    #[test]
    fn missing_or_malformed_org_is_unauthenticated() {
        let err = Caller::from_metadata(&MetadataMap::new()).unwrap_err();
        assert_eq!(err.class, ErrorClass::Unauthenticated);
        let mut metadata = MetadataMap::new();
        metadata.insert(ORG_HEADER, MetadataValue::from_static("a.b"));
        assert_eq!(
            Caller::from_metadata(&metadata).unwrap_err().class,
            ErrorClass::Unauthenticated
        );
    }
}
