//! The API key aggregate: a named credential of an org with a role or a set
//! of scopes, an optional expiry, rotation with a grace period, revocation.

use promptops_auth::roles::{self, Permission, Role};
use promptops_platform::errors::FieldViolation;
use promptops_proto::identity::v1::{ApiKeyCreated, ApiKeyRevoked, ApiKeyRotated};

use super::{role_from_pb, role_to_pb};

pub const MAX_NAME_CHARS: usize = 100;
/// How long the secret before a rotation keeps working: long enough to roll
/// the new one out, short enough that a leaked key dies soon.
pub const ROTATION_GRACE_SECS: i64 = 24 * 60 * 60;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiKeyState {
    pub created: Option<ApiKeyCreated>,
    /// Until when (Unix seconds) the secret before the last rotation works.
    pub previous_valid_until: i64,
    pub revoked: bool,
    pub version: u64,
}

impl ApiKeyState {
    pub fn role(&self) -> Option<Role> {
        self.created.as_ref().and_then(|c| role_from_pb(c.role))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyEvent {
    Created(ApiKeyCreated),
    Rotated(ApiKeyRotated),
    Revoked(ApiKeyRevoked),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ApiKeyCommand {
    Create {
        key_id: String,
        name: String,
        /// The key's role; its scopes, when given, narrow it further.
        role: Role,
        scopes: Vec<String>,
        expires_at: Option<i64>,
        /// The creating member's role: a key never exceeds it.
        actor_role: Role,
        now: i64,
    },
    Rotate {
        actor_role: Role,
        now: i64,
    },
    Revoke {
        actor_role: Role,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("invalid API key request")]
    Invalid(Vec<FieldViolation>),
    #[error("the API key already exists")]
    AlreadyExists,
    #[error("no such API key")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
}

fn require_manage(actor_role: Role) -> Result<(), ApiKeyError> {
    if roles::allows(actor_role, Permission::ManageApiKeys) {
        Ok(())
    } else {
        Err(ApiKeyError::Forbidden(
            "your role does not allow managing API keys",
        ))
    }
}

pub fn decide(state: &ApiKeyState, command: ApiKeyCommand) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
    match command {
        ApiKeyCommand::Create {
            key_id,
            name,
            role,
            scopes,
            expires_at,
            actor_role,
            now,
        } => {
            require_manage(actor_role)?;
            if state.created.is_some() {
                return Err(ApiKeyError::AlreadyExists);
            }
            if role > actor_role {
                return Err(ApiKeyError::Forbidden(
                    "a key cannot have a stronger role than yours",
                ));
            }
            let mut violations = Vec::new();
            let name = name.trim().to_owned();
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                violations.push(FieldViolation::new(
                    "name",
                    format!("must be 1-{MAX_NAME_CHARS} characters"),
                ));
            }
            for (i, scope) in scopes.iter().enumerate() {
                match Permission::from_scope(scope) {
                    None => violations.push(FieldViolation::new(format!("scopes[{i}]"), "unknown scope")),
                    Some(permission) if !roles::allows(role, permission) => {
                        violations.push(FieldViolation::new(
                            format!("scopes[{i}]"),
                            format!("the key's role ({role}) does not include it"),
                        ))
                    }
                    Some(_) => {}
                }
            }
            if let Some(at) = expires_at
                && at <= now
            {
                violations.push(FieldViolation::new("expires_at", "must be in the future"));
            }
            if !violations.is_empty() {
                return Err(ApiKeyError::Invalid(violations));
            }
            Ok(vec![ApiKeyEvent::Created(ApiKeyCreated {
                key_id,
                name,
                role: role_to_pb(role) as i32,
                scopes,
                expires_at: expires_at.unwrap_or(0),
            })])
        }
        ApiKeyCommand::Rotate { actor_role, now } => {
            require_manage(actor_role)?;
            let created = state.created.as_ref().ok_or(ApiKeyError::NotFound)?;
            if state.revoked {
                return Err(ApiKeyError::NotFound);
            }
            Ok(vec![ApiKeyEvent::Rotated(ApiKeyRotated {
                key_id: created.key_id.clone(),
                previous_valid_until: now + ROTATION_GRACE_SECS,
            })])
        }
        ApiKeyCommand::Revoke { actor_role } => {
            require_manage(actor_role)?;
            let created = state.created.as_ref().ok_or(ApiKeyError::NotFound)?;
            if state.revoked {
                return Ok(Vec::new());
            }
            Ok(vec![ApiKeyEvent::Revoked(ApiKeyRevoked {
                key_id: created.key_id.clone(),
            })])
        }
    }
}

pub fn evolve(mut state: ApiKeyState, event: &ApiKeyEvent) -> ApiKeyState {
    match event {
        ApiKeyEvent::Created(created) => state.created = Some(created.clone()),
        ApiKeyEvent::Rotated(rotated) => state.previous_valid_until = rotated.previous_valid_until,
        ApiKeyEvent::Revoked(_) => state.revoked = true,
    }
    state.version += 1;
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn create(role: Role, scopes: &[&str], actor_role: Role) -> ApiKeyCommand {
        ApiKeyCommand::Create {
            key_id: "k1".into(),
            name: "ci deploys".into(),
            role,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            expires_at: Some(NOW + 3600),
            actor_role,
            now: NOW,
        }
    }

    fn created() -> ApiKeyState {
        let events = decide(
            &ApiKeyState::default(),
            create(Role::Editor, &["read", "write"], Role::Admin),
        )
        .unwrap();
        events.iter().fold(ApiKeyState::default(), evolve)
    }

    #[test]
    fn keys_never_exceed_their_creator_or_their_role() {
        let state = ApiKeyState::default();
        assert!(decide(&state, create(Role::Editor, &[], Role::Admin)).is_ok());
        assert!(matches!(
            decide(&state, create(Role::Owner, &[], Role::Admin)),
            Err(ApiKeyError::Forbidden(_))
        ));
        assert!(matches!(
            decide(&state, create(Role::Viewer, &[], Role::Editor)),
            Err(ApiKeyError::Forbidden(_))
        ));
        let Err(ApiKeyError::Invalid(v)) =
            decide(&state, create(Role::Viewer, &["write", "nope"], Role::Owner))
        else {
            panic!("expected Invalid");
        };
        assert_eq!(
            v.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
            ["scopes[0]", "scopes[1]"]
        );
        let mut past = create(Role::Viewer, &[], Role::Owner);
        if let ApiKeyCommand::Create { expires_at, .. } = &mut past {
            *expires_at = Some(NOW - 1);
        }
        assert!(matches!(decide(&state, past), Err(ApiKeyError::Invalid(_))));
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period() {
        let events = decide(
            &created(),
            ApiKeyCommand::Rotate {
                actor_role: Role::Admin,
                now: NOW,
            },
        )
        .unwrap();
        let state = events.iter().fold(created(), evolve);
        assert_eq!(state.previous_valid_until, NOW + ROTATION_GRACE_SECS);
    }

    #[test]
    fn revoked_keys_stay_revoked() {
        let events = decide(
            &created(),
            ApiKeyCommand::Revoke {
                actor_role: Role::Owner,
            },
        )
        .unwrap();
        let state = events.iter().fold(created(), evolve);
        assert!(state.revoked);
        assert_eq!(
            decide(
                &state,
                ApiKeyCommand::Revoke {
                    actor_role: Role::Owner
                }
            ),
            Ok(Vec::new())
        );
        assert_eq!(
            decide(
                &state,
                ApiKeyCommand::Rotate {
                    actor_role: Role::Owner,
                    now: NOW
                }
            ),
            Err(ApiKeyError::NotFound)
        );
        assert!(matches!(
            decide(
                &created(),
                ApiKeyCommand::Revoke {
                    actor_role: Role::Editor
                }
            ),
            Err(ApiKeyError::Forbidden(_))
        ));
    }
}
