//! Who is calling: the verified caller of a gRPC request.
//!
//! Every service gets its [`Caller`] from the [`crate::authn::Authenticator`],
//! which verifies the `authorization: Bearer …` metadata itself: access
//! tokens against the gateway's JWKS, API keys through the gateway's
//! introspection API. The org always comes from the verified credential;
//! no request body or header names it.

use promptops_auth::roles::{self, Grant, Permission, Role};
use promptops_proto::common::v1::{Actor, ActorKind};
use tonic::metadata::MetadataValue;

use crate::errors::{ErrorClass, ServiceError};

#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub org_id: String,
    pub actor: Actor,
    pub role: Role,
    /// The credential's scopes (a subset of the role's).
    pub scopes: Vec<String>,
    /// A member's resource-level grants (none for API keys and services).
    pub grants: Vec<Grant>,
    /// Where the request came from, as the gateway saw it.
    pub origin: Origin,
}

/// The end client of a request: its address and User-Agent, as the gateway
/// saw them. Travels as `x-promptops-client-address` and
/// `x-promptops-user-agent` metadata on calls between services and lands in
/// the events the request causes (the audit trail shows it). Informational:
/// nothing is authorised by it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub client_address: String,
    pub user_agent: String,
}

pub const CLIENT_ADDRESS_HEADER: &str = "x-promptops-client-address";
pub const USER_AGENT_HEADER: &str = "x-promptops-user-agent";

/// The longest User-Agent kept.
const MAX_USER_AGENT: usize = 256;

tokio::task_local! {
    static ORIGIN: Origin;
}

impl Origin {
    /// Runs `future` with this origin: the gateway wraps each HTTP request
    /// in it, and [`outgoing`] passes it on.
    pub async fn scope<F: std::future::Future>(self, future: F) -> F::Output {
        ORIGIN.scope(self, future).await
    }

    /// `future` with the current origin, for a task spawned to finish a
    /// request (task-locals do not cross `spawn`).
    pub fn carried<F: std::future::Future>(future: F) -> impl std::future::Future<Output = F::Output> {
        Origin::current().unwrap_or_default().scope(future)
    }

    /// The origin of the request being handled, if any.
    pub fn current() -> Option<Origin> {
        ORIGIN.try_with(Clone::clone).ok()
    }

    /// From a gRPC request's metadata (empty fields when absent).
    pub fn from_metadata(metadata: &tonic::metadata::MetadataMap) -> Origin {
        let get = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Origin {
            client_address: get(CLIENT_ADDRESS_HEADER),
            user_agent: get(USER_AGENT_HEADER),
        }
    }

    /// Bounded and printable, so it fits in metadata and in an entry.
    pub fn new(client_address: &str, user_agent: &str) -> Origin {
        let printable = |s: &str, max: usize| {
            s.chars()
                .filter(|c| (' '..='~').contains(c))
                .take(max)
                .collect::<String>()
        };
        Origin {
            client_address: printable(client_address, 64),
            user_agent: printable(user_agent, MAX_USER_AGENT),
        }
    }
}

impl Caller {
    pub fn new(
        org_id: impl Into<String>,
        kind: ActorKind,
        id: impl Into<String>,
        role: Role,
        scopes: Vec<String>,
    ) -> Self {
        Self {
            org_id: org_id.into(),
            actor: Actor {
                kind: kind as i32,
                id: id.into(),
            },
            role,
            scopes,
            grants: Vec::new(),
            origin: Origin::default(),
        }
    }

    /// Who and what caused the events a command of this caller appends:
    /// [`event_metadata`] with the request's origin.
    pub fn event_metadata(&self) -> promptops_eventlog::EventMetadata {
        promptops_eventlog::EventMetadata {
            client_address: self.origin.client_address.clone(),
            user_agent: self.origin.user_agent.clone(),
            ..event_metadata(self.actor.clone())
        }
    }

    /// With a member's resource-level grants.
    pub fn with_grants(mut self, grants: Vec<Grant>) -> Self {
        self.grants = grants;
        self
    }

    /// Whether the caller may do `permission` to the prompt `prompt_id` in
    /// `folder`: their org role, raised by any grant on the prompt or on a
    /// folder containing it. (A grant gives a member that role's permissions
    /// there; API keys have no grants and keep their scopes.)
    pub fn can_on(&self, permission: Permission, prompt_id: &str, folder: &str) -> bool {
        if self.can(permission) {
            return true;
        }
        let effective = roles::effective_role(self.role, &self.grants, prompt_id, folder);
        effective > self.role && roles::allows(effective, permission)
    }

    /// Whether the caller may do `permission` on some prompt: through their
    /// role, or through any grant. A request that can only succeed this way
    /// is refused before its body is even parsed when this is false.
    pub fn can_anywhere(&self, permission: Permission) -> bool {
        self.can(permission)
            || self
                .grants
                .iter()
                .any(|g| g.role > self.role && roles::allows(g.role, permission))
    }

    /// PERMISSION_DENIED unless the caller [`can_on`](Self::can_on).
    pub fn require_on(
        &self,
        permission: Permission,
        prompt_id: &str,
        folder: &str,
    ) -> Result<(), ServiceError> {
        if self.can_on(permission, prompt_id, folder) {
            Ok(())
        } else {
            Err(ServiceError::new(
                ErrorClass::PermissionDenied,
                format!(
                    "this needs the {} permission on this prompt (folder {folder:?})",
                    permission.scope()
                ),
            ))
        }
    }

    /// Whether both the role and the scopes include `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        roles::allows(self.role, permission) && self.scopes.iter().any(|s| s == permission.scope())
    }

    /// PERMISSION_DENIED unless the caller [`can`](Self::can).
    pub fn require(&self, permission: Permission) -> Result<(), ServiceError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(ServiceError::new(
                ErrorClass::PermissionDenied,
                format!("this needs the {} permission", permission.scope()),
            ))
        }
    }
}

/// Who and what caused the events a command appends: `actor`, a fresh
/// correlation id and the current trace.
pub fn event_metadata(actor: Actor) -> promptops_eventlog::EventMetadata {
    promptops_eventlog::EventMetadata {
        actor: Some(actor),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        causation_id: String::new(),
        traceparent: crate::telemetry::current_traceparent(),
        client_address: String::new(),
        user_agent: String::new(),
    }
}

/// A role as carried in protobuf messages.
pub fn role_to_pb(role: Role) -> promptops_proto::identity::v1::Role {
    use promptops_proto::identity::v1::Role as Pb;
    match role {
        Role::Owner => Pb::Owner,
        Role::Admin => Pb::Admin,
        Role::Editor => Pb::Editor,
        Role::Viewer => Pb::Viewer,
    }
}

/// A protobuf role number; `None` for unspecified or unknown values.
pub fn role_from_pb(role: i32) -> Option<Role> {
    use promptops_proto::identity::v1::Role as Pb;
    match Pb::try_from(role).ok()? {
        Pb::Owner => Some(Role::Owner),
        Pb::Admin => Some(Role::Admin),
        Pb::Editor => Some(Role::Editor),
        Pb::Viewer => Some(Role::Viewer),
        Pb::Unspecified => None,
    }
}

/// Builds an outgoing gRPC request carrying the caller's credential and the
/// current trace, for a service acting on behalf of its caller.
pub fn outgoing<T>(credential: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {credential}")) {
        request.metadata_mut().insert("authorization", value);
    }
    let mut headers = http::HeaderMap::new();
    crate::telemetry::inject_current(&mut headers);
    if let Some(value) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| MetadataValue::try_from(v).ok())
    {
        request.metadata_mut().insert("traceparent", value);
    }
    if let Some(origin) = Origin::current() {
        for (name, value) in [
            (CLIENT_ADDRESS_HEADER, origin.client_address),
            (USER_AGENT_HEADER, origin.user_agent),
        ] {
            if let Ok(value) = MetadataValue::try_from(value) {
                request.metadata_mut().insert(name, value);
            }
        }
    }
    request
}

/// The act-as metadata for `caller`: `<org> <kind> <actor id> <role> <scopes>`.
pub fn act_as(caller: &Caller) -> String {
    let kind = match ActorKind::try_from(caller.actor.kind) {
        Ok(ActorKind::User) => "user",
        Ok(ActorKind::ApiKey) => "api_key",
        _ => "service",
    };
    format!(
        "{} {kind} {} {} {}",
        caller.org_id,
        caller.actor.id,
        caller.role.as_str(),
        caller.scopes.join(",")
    )
}

/// Reads [`act_as`]'s text back (`None` when malformed).
pub fn parse_act_as(text: &str) -> Option<Caller> {
    let mut parts = text.split(' ');
    let (org, kind, id, role) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let scopes: Vec<String> = parts
        .next()
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if parts.next().is_some() || org.is_empty() || id.is_empty() {
        return None;
    }
    let kind = match kind {
        "user" => ActorKind::User,
        "api_key" => ActorKind::ApiKey,
        "service" => ActorKind::Service,
        _ => return None,
    };
    Some(Caller::new(org, kind, id, Role::parse(role)?, scopes))
}

/// An outgoing request made with this service's credential on behalf of
/// `caller` (see [`crate::authn::Authenticator::service_credential`]).
pub fn acting_for<T>(service_credential: &str, caller: &Caller, message: T) -> tonic::Request<T> {
    let mut request = outgoing(service_credential, message);
    if let Ok(value) = MetadataValue::try_from(act_as(caller)) {
        request.metadata_mut().insert(crate::authn::ACT_AS_HEADER, value);
    }
    request
}

/// An outgoing request on behalf of `caller`, who called with `credential`:
/// their own credential passed on, or — when it was a service credential —
/// the same acting-for pair passed on.
pub fn forward<T>(credential: &str, caller: &Caller, message: T) -> tonic::Request<T> {
    if credential.starts_with(crate::authn::SERVICE_CREDENTIAL_PREFIX) {
        acting_for(credential, caller, message)
    } else {
        outgoing(credential, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_as_round_trips_and_refuses_malformed_text() {
        let caller = Caller::new(
            "org1",
            ActorKind::ApiKey,
            "key1",
            Role::Editor,
            vec!["read".into(), "write".into()],
        );
        assert_eq!(parse_act_as(&act_as(&caller)), Some(caller));
        let no_scopes = Caller::new("org1", ActorKind::User, "u1", Role::Viewer, Vec::new());
        assert_eq!(parse_act_as(&act_as(&no_scopes)), Some(no_scopes));
        for bad in [
            "",
            "org1",
            "org1 user u1",
            "org1 robot u1 viewer ",
            "org1 user u1 king ",
            "org1 user u1 viewer read extra",
        ] {
            assert_eq!(parse_act_as(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn permissions_need_the_role_and_the_scope() {
        let editor = Caller::new(
            "o",
            ActorKind::User,
            "u",
            Role::Editor,
            vec!["read".into(), "write".into()],
        );
        assert!(editor.can(Permission::Write));
        assert!(!editor.can(Permission::ReadAudit));
        let narrowed = Caller::new("o", ActorKind::ApiKey, "k", Role::Admin, vec!["read".into()]);
        assert!(
            !narrowed.can(Permission::Write),
            "a key narrowed to read cannot write"
        );
        assert_eq!(
            narrowed.require(Permission::Write).unwrap_err().class,
            ErrorClass::PermissionDenied
        );
        let request = outgoing("tok", ());
        assert_eq!(request.metadata().get("authorization").unwrap(), "Bearer tok");
    }

    #[test]
    fn grants_raise_the_role_only_where_they_apply() {
        use promptops_auth::roles::Resource;
        let viewer =
            Caller::new("o", ActorKind::User, "u", Role::Viewer, vec!["read".into()]).with_grants(vec![
                Grant {
                    resource: Resource::Folder("team-a".into()),
                    role: Role::Editor,
                },
                Grant {
                    resource: Resource::Prompt("p9".into()),
                    role: Role::Admin,
                },
            ]);
        assert!(viewer.can_anywhere(Permission::Write), "through the folder grant");
        let bare = Caller::new("o", ActorKind::User, "u2", Role::Viewer, vec!["read".into()]);
        assert!(!bare.can_anywhere(Permission::Write));
        assert!(viewer.can_on(Permission::Write, "p1", "team-a"));
        assert!(viewer.can_on(Permission::Write, "p1", "team-a/deeper"));
        assert!(!viewer.can_on(Permission::Write, "p1", "team-ab"));
        assert!(!viewer.can_on(Permission::MoveProtectedLabel, "p1", "team-a"));
        assert!(viewer.can_on(Permission::MoveProtectedLabel, "p9", "elsewhere"));
        assert_eq!(
            viewer
                .require_on(Permission::Write, "p2", "team-b")
                .unwrap_err()
                .class,
            ErrorClass::PermissionDenied
        );
        // Grants never take away what the role and scopes give.
        let key = Caller::new("o", ActorKind::ApiKey, "k", Role::Editor, vec!["read".into()]);
        assert!(!key.can_on(Permission::Write, "p1", "team-a"));
    }
}
