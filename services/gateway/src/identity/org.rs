//! The org aggregate: a tenant, its members and their roles, invitations and
//! resource-level grants.
//!
//! Rules:
//! - managing members needs `members:manage` (owner, admin);
//! - a non-owner manages only members whose current and new roles are both
//!   below their own, and invites only below their own role;
//! - only owners grant, change or remove the owner role;
//! - an org always keeps at least one owner;
//! - grants never exceed the granting actor's role.

use std::collections::BTreeMap;

use promptops_auth::roles::{self, Permission, Role};
use promptops_platform::errors::FieldViolation;
use promptops_proto::identity::v1::{
    GrantAdded, GrantRemoved, MemberInvited, MemberJoined, MemberRemoved, MemberRoleChanged, OrgCreated,
    RetentionPolicySet,
};

use super::{canonical_email, role_from_pb, role_to_pb, validate_email};

pub const MAX_ORG_NAME_CHARS: usize = 100;

/// Audit retention an org may choose (days); 0 means the deployment's default.
pub const AUDIT_RETENTION_DAYS: std::ops::RangeInclusive<u32> = 30..=3650;
/// Run-payload retention an org may choose (days); 0 means the default.
pub const RUN_PAYLOAD_RETENTION_DAYS: std::ops::RangeInclusive<u32> = 1..=3650;

/// Who is acting, as the org knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub email: String,
    pub role: Role,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrgState {
    pub org: Option<OrgCreated>,
    pub members: BTreeMap<String, Role>,
    pub invitations: BTreeMap<String, Invitation>,
    /// (user, resource kind, resource) → role.
    pub grants: BTreeMap<(String, String, String), Role>,
    /// The retention policy (0s = the defaults).
    pub retention: RetentionPolicySet,
    pub version: u64,
}

impl OrgState {
    fn owners(&self) -> usize {
        self.members.values().filter(|r| **r == Role::Owner).count()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrgEvent {
    Created(OrgCreated),
    Invited(MemberInvited),
    Joined(MemberJoined),
    RoleChanged(MemberRoleChanged),
    Removed(MemberRemoved),
    GrantAdded(GrantAdded),
    GrantRemoved(GrantRemoved),
    RetentionSet(RetentionPolicySet),
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrgCommand {
    Create {
        org_id: String,
        name: String,
        owner: Actor,
    },
    Invite {
        actor: Actor,
        invitation_id: String,
        email: String,
        role: Role,
    },
    Accept {
        user_id: String,
        email: String,
        invitation_id: String,
    },
    ChangeRole {
        actor: Actor,
        user_id: String,
        role: Role,
    },
    Remove {
        actor: Actor,
        user_id: String,
    },
    Grant {
        actor: Actor,
        user_id: String,
        resource: roles::Resource,
        role: Role,
    },
    Revoke {
        actor: Actor,
        user_id: String,
        resource: roles::Resource,
    },
    /// Changes the fields given; the others stay.
    SetRetention {
        actor: Actor,
        audit_days: Option<u32>,
        run_payload_days: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrgError {
    #[error("invalid request")]
    Invalid(Vec<FieldViolation>),
    #[error("the org already exists")]
    AlreadyExists,
    /// No such org, or the actor is not a member: the same answer, so that
    /// outsiders learn nothing.
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    Conflict(&'static str),
}

fn forbidden(reason: &'static str) -> OrgError {
    OrgError::Forbidden(reason)
}

/// The acting member's role, or NotFound for non-members.
fn actor_role(state: &OrgState, actor: &Actor) -> Result<Role, OrgError> {
    if state.org.is_none() {
        return Err(OrgError::NotFound);
    }
    state
        .members
        .get(&actor.user_id)
        .copied()
        .ok_or(OrgError::NotFound)
}

fn require(role: Role, permission: Permission) -> Result<(), OrgError> {
    if roles::allows(role, permission) {
        Ok(())
    } else {
        Err(forbidden("your role does not allow this"))
    }
}

/// Whether `actor` may move a member from `current` to `new` (either may be
/// absent for invitations and removals).
fn may_manage(actor: Role, current: Option<Role>, new: Option<Role>) -> Result<(), OrgError> {
    if actor == Role::Owner {
        return Ok(());
    }
    let below = |r: Option<Role>| r.is_none_or(|r| r < actor);
    if below(current) && below(new) {
        Ok(())
    } else {
        Err(forbidden("you can only manage roles below your own"))
    }
}

fn resource_parts(resource: &roles::Resource) -> (String, String) {
    match resource {
        roles::Resource::Folder(path) => ("folder".to_owned(), path.trim_matches('/').to_owned()),
        roles::Resource::Prompt(id) => ("prompt".to_owned(), id.clone()),
    }
}

pub fn decide(state: &OrgState, command: OrgCommand) -> Result<Vec<OrgEvent>, OrgError> {
    match command {
        OrgCommand::Create { org_id, name, owner } => {
            if state.org.is_some() {
                return Err(OrgError::AlreadyExists);
            }
            let name = name.trim().to_owned();
            if name.is_empty()
                || name.chars().count() > MAX_ORG_NAME_CHARS
                || name.chars().any(char::is_control)
            {
                return Err(OrgError::Invalid(vec![FieldViolation::new(
                    "org_name",
                    format!("must be 1-{MAX_ORG_NAME_CHARS} characters without control characters"),
                )]));
            }
            Ok(vec![
                OrgEvent::Created(OrgCreated {
                    org_id,
                    name,
                    owner_user_id: owner.user_id.clone(),
                }),
                OrgEvent::Joined(MemberJoined {
                    user_id: owner.user_id,
                    role: role_to_pb(Role::Owner) as i32,
                    invitation_id: String::new(),
                }),
            ])
        }
        OrgCommand::Invite {
            actor,
            invitation_id,
            email,
            role,
        } => {
            let acting = actor_role(state, &actor)?;
            require(acting, Permission::ManageMembers)?;
            may_manage(acting, None, Some(role))?;
            validate_email(&email)
                .map_err(|reason| OrgError::Invalid(vec![FieldViolation::new("email", reason)]))?;
            let email = canonical_email(&email);
            if state.invitations.values().any(|i| i.email == email) {
                return Err(OrgError::Conflict(
                    "that address already has a pending invitation",
                ));
            }
            Ok(vec![OrgEvent::Invited(MemberInvited {
                invitation_id,
                email,
                role: role_to_pb(role) as i32,
            })])
        }
        OrgCommand::Accept {
            user_id,
            email,
            invitation_id,
        } => {
            if state.org.is_none() {
                return Err(OrgError::NotFound);
            }
            let invitation = state.invitations.get(&invitation_id).ok_or(OrgError::NotFound)?;
            if invitation.email != canonical_email(&email) {
                // Someone else's invitation: indistinguishable from none.
                return Err(OrgError::NotFound);
            }
            if state.members.contains_key(&user_id) {
                return Err(OrgError::Conflict("you are already a member"));
            }
            Ok(vec![OrgEvent::Joined(MemberJoined {
                user_id,
                role: role_to_pb(invitation.role) as i32,
                invitation_id,
            })])
        }
        OrgCommand::ChangeRole { actor, user_id, role } => {
            let acting = actor_role(state, &actor)?;
            require(acting, Permission::ManageMembers)?;
            let current = *state.members.get(&user_id).ok_or(OrgError::NotFound)?;
            may_manage(acting, Some(current), Some(role))?;
            if current == role {
                return Ok(Vec::new());
            }
            if current == Role::Owner && state.owners() == 1 {
                return Err(OrgError::Conflict("an org keeps at least one owner"));
            }
            Ok(vec![OrgEvent::RoleChanged(MemberRoleChanged {
                user_id,
                from: role_to_pb(current) as i32,
                to: role_to_pb(role) as i32,
            })])
        }
        OrgCommand::Remove { actor, user_id } => {
            let acting = actor_role(state, &actor)?;
            let current = *state.members.get(&user_id).ok_or(OrgError::NotFound)?;
            if actor.user_id != user_id {
                require(acting, Permission::ManageMembers)?;
                may_manage(acting, Some(current), None)?;
            }
            if current == Role::Owner && state.owners() == 1 {
                return Err(OrgError::Conflict("an org keeps at least one owner"));
            }
            Ok(vec![OrgEvent::Removed(MemberRemoved { user_id })])
        }
        OrgCommand::Grant {
            actor,
            user_id,
            resource,
            role,
        } => {
            let acting = actor_role(state, &actor)?;
            require(acting, Permission::ManageMembers)?;
            if !state.members.contains_key(&user_id) {
                return Err(OrgError::NotFound);
            }
            if role > acting {
                return Err(forbidden("a grant cannot exceed your own role"));
            }
            let (resource_kind, resource) = resource_parts(&resource);
            if resource.is_empty() {
                return Err(OrgError::Invalid(vec![FieldViolation::new(
                    "resource",
                    "must not be empty",
                )]));
            }
            Ok(vec![OrgEvent::GrantAdded(GrantAdded {
                user_id,
                resource_kind,
                resource,
                role: role_to_pb(role) as i32,
            })])
        }
        OrgCommand::Revoke {
            actor,
            user_id,
            resource,
        } => {
            let acting = actor_role(state, &actor)?;
            require(acting, Permission::ManageMembers)?;
            let (resource_kind, resource) = resource_parts(&resource);
            let key = (user_id.clone(), resource_kind.clone(), resource.clone());
            if !state.grants.contains_key(&key) {
                return Err(OrgError::NotFound);
            }
            Ok(vec![OrgEvent::GrantRemoved(GrantRemoved {
                user_id,
                resource_kind,
                resource,
            })])
        }
        OrgCommand::SetRetention {
            actor,
            audit_days,
            run_payload_days,
        } => {
            let acting = actor_role(state, &actor)?;
            require(acting, Permission::ManageSettings)?;
            let mut problems = Vec::new();
            for (field, value, range) in [
                ("audit_days", audit_days, AUDIT_RETENTION_DAYS),
                ("run_payload_days", run_payload_days, RUN_PAYLOAD_RETENTION_DAYS),
            ] {
                if let Some(days) = value
                    && days != 0
                    && !range.contains(&days)
                {
                    problems.push(FieldViolation::new(
                        field,
                        format!(
                            "must be between {} and {} (or 0 for the default)",
                            range.start(),
                            range.end()
                        ),
                    ));
                }
            }
            if !problems.is_empty() {
                return Err(OrgError::Invalid(problems));
            }
            let policy = RetentionPolicySet {
                audit_days: audit_days.unwrap_or(state.retention.audit_days),
                run_payload_days: run_payload_days.unwrap_or(state.retention.run_payload_days),
            };
            if policy == state.retention {
                return Ok(Vec::new());
            }
            Ok(vec![OrgEvent::RetentionSet(policy)])
        }
    }
}

pub fn evolve(mut state: OrgState, event: &OrgEvent) -> OrgState {
    match event {
        OrgEvent::Created(created) => state.org = Some(created.clone()),
        OrgEvent::Invited(invited) => {
            if let Some(role) = role_from_pb(invited.role) {
                state.invitations.insert(
                    invited.invitation_id.clone(),
                    Invitation {
                        email: invited.email.clone(),
                        role,
                    },
                );
            }
        }
        OrgEvent::Joined(joined) => {
            state.invitations.remove(&joined.invitation_id);
            if let Some(role) = role_from_pb(joined.role) {
                state.members.insert(joined.user_id.clone(), role);
            }
        }
        OrgEvent::RoleChanged(changed) => {
            if let Some(role) = role_from_pb(changed.to) {
                state.members.insert(changed.user_id.clone(), role);
            }
        }
        OrgEvent::Removed(removed) => {
            state.members.remove(&removed.user_id);
            state.grants.retain(|(user, _, _), _| *user != removed.user_id);
        }
        OrgEvent::GrantAdded(grant) => {
            if let Some(role) = role_from_pb(grant.role) {
                state.grants.insert(
                    (
                        grant.user_id.clone(),
                        grant.resource_kind.clone(),
                        grant.resource.clone(),
                    ),
                    role,
                );
            }
        }
        OrgEvent::GrantRemoved(grant) => {
            state.grants.remove(&(
                grant.user_id.clone(),
                grant.resource_kind.clone(),
                grant.resource.clone(),
            ));
        }
        OrgEvent::RetentionSet(policy) => state.retention = *policy,
    }
    state.version += 1;
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: &str) -> Actor {
        Actor { user_id: id.into() }
    }

    fn given(commands: Vec<OrgCommand>) -> OrgState {
        let mut state = OrgState::default();
        for command in commands {
            for event in decide(&state, command).unwrap() {
                state = evolve(state, &event);
            }
        }
        state
    }

    fn with_member(user: &str, role: Role, email: &str) -> Vec<OrgCommand> {
        vec![
            OrgCommand::Invite {
                actor: actor("owner"),
                invitation_id: format!("inv-{user}"),
                email: email.into(),
                role,
            },
            OrgCommand::Accept {
                user_id: user.into(),
                email: email.into(),
                invitation_id: format!("inv-{user}"),
            },
        ]
    }

    /// An org with an owner, an admin, an editor and a viewer.
    fn acme() -> OrgState {
        let mut commands = vec![OrgCommand::Create {
            org_id: "acme".into(),
            name: "Acme".into(),
            owner: actor("owner"),
        }];
        commands.extend(with_member("admin", Role::Admin, "admin@acme.test"));
        commands.extend(with_member("editor", Role::Editor, "editor@acme.test"));
        commands.extend(with_member("viewer", Role::Viewer, "viewer@acme.test"));
        given(commands)
    }

    #[test]
    fn creating_an_org_makes_its_creator_the_owner() {
        let state = acme();
        assert_eq!(state.members["owner"], Role::Owner);
        assert_eq!(state.members["viewer"], Role::Viewer);
        assert!(state.invitations.is_empty(), "accepted invitations are used up");
        let again = decide(
            &state,
            OrgCommand::Create {
                org_id: "acme".into(),
                name: "Acme".into(),
                owner: actor("x"),
            },
        );
        assert_eq!(again, Err(OrgError::AlreadyExists));
    }

    #[test]
    fn who_may_invite_whom() {
        let state = acme();
        let invite = |by: &str, role: Role| {
            decide(
                &state,
                OrgCommand::Invite {
                    actor: actor(by),
                    invitation_id: "i".into(),
                    email: "new@acme.test".into(),
                    role,
                },
            )
        };
        assert!(invite("owner", Role::Owner).is_ok());
        assert!(invite("admin", Role::Editor).is_ok());
        assert!(matches!(
            invite("admin", Role::Admin),
            Err(OrgError::Forbidden(_))
        ));
        assert!(matches!(
            invite("editor", Role::Viewer),
            Err(OrgError::Forbidden(_))
        ));
        assert!(matches!(
            invite("viewer", Role::Viewer),
            Err(OrgError::Forbidden(_))
        ));
        assert_eq!(
            invite("stranger", Role::Viewer),
            Err(OrgError::NotFound),
            "outsiders learn nothing"
        );
    }

    #[test]
    fn invitations_are_for_their_address_only() {
        let mut state = acme();
        let events = decide(
            &state,
            OrgCommand::Invite {
                actor: actor("owner"),
                invitation_id: "inv-9".into(),
                email: "Nine@Acme.test".into(),
                role: Role::Editor,
            },
        )
        .unwrap();
        state = events.iter().fold(state, evolve);
        let accept = |user: &str, email: &str| {
            decide(
                &state,
                OrgCommand::Accept {
                    user_id: user.into(),
                    email: email.into(),
                    invitation_id: "inv-9".into(),
                },
            )
        };
        assert_eq!(accept("u9", "other@acme.test"), Err(OrgError::NotFound));
        assert!(accept("u9", "nine@acme.test").is_ok());
        let duplicate = decide(
            &state,
            OrgCommand::Invite {
                actor: actor("owner"),
                invitation_id: "inv-10".into(),
                email: "nine@acme.test".into(),
                role: Role::Viewer,
            },
        );
        assert!(matches!(duplicate, Err(OrgError::Conflict(_))));
    }

    #[test]
    fn role_changes_respect_rank_and_keep_an_owner() {
        let state = acme();
        let change = |by: &str, user: &str, role: Role| {
            decide(
                &state,
                OrgCommand::ChangeRole {
                    actor: actor(by),
                    user_id: user.into(),
                    role,
                },
            )
        };
        assert!(change("admin", "viewer", Role::Editor).is_ok());
        assert!(matches!(
            change("admin", "viewer", Role::Admin),
            Err(OrgError::Forbidden(_))
        ));
        assert!(matches!(
            change("admin", "owner", Role::Viewer),
            Err(OrgError::Forbidden(_))
        ));
        assert!(matches!(
            change("editor", "viewer", Role::Editor),
            Err(OrgError::Forbidden(_))
        ));
        assert!(change("owner", "admin", Role::Owner).is_ok());
        assert!(matches!(
            change("owner", "owner", Role::Admin),
            Err(OrgError::Conflict(_))
        ));
        assert_eq!(
            change("owner", "viewer", Role::Viewer),
            Ok(Vec::new()),
            "no change, no event"
        );
        assert_eq!(change("owner", "ghost", Role::Viewer), Err(OrgError::NotFound));
    }

    #[test]
    fn members_leave_or_are_removed_but_the_last_owner_stays() {
        let state = acme();
        let remove = |by: &str, user: &str| {
            decide(
                &state,
                OrgCommand::Remove {
                    actor: actor(by),
                    user_id: user.into(),
                },
            )
        };
        assert!(remove("viewer", "viewer").is_ok(), "anyone may leave");
        assert!(remove("admin", "editor").is_ok());
        assert!(matches!(remove("admin", "owner"), Err(OrgError::Forbidden(_))));
        assert!(matches!(remove("editor", "viewer"), Err(OrgError::Forbidden(_))));
        assert!(matches!(remove("owner", "owner"), Err(OrgError::Conflict(_))));
    }

    #[test]
    fn grants_are_bounded_by_the_granting_role_and_go_with_the_member() {
        let state = acme();
        let grant = |by: &str, role: Role| {
            decide(
                &state,
                OrgCommand::Grant {
                    actor: actor(by),
                    user_id: "viewer".into(),
                    resource: roles::Resource::Folder("/support/".into()),
                    role,
                },
            )
        };
        assert!(matches!(grant("admin", Role::Owner), Err(OrgError::Forbidden(_))));
        assert!(matches!(
            grant("editor", Role::Editor),
            Err(OrgError::Forbidden(_))
        ));
        let events = grant("admin", Role::Editor).unwrap();
        let state = events.iter().fold(state, evolve);
        assert_eq!(
            state.grants[&("viewer".to_owned(), "folder".to_owned(), "support".to_owned())],
            Role::Editor
        );
        let removed = decide(
            &state,
            OrgCommand::Remove {
                actor: actor("owner"),
                user_id: "viewer".into(),
            },
        )
        .unwrap();
        let state = removed.iter().fold(state, evolve);
        assert!(state.grants.is_empty());
    }

    #[test]
    fn retention_needs_settings_permission_and_a_sane_range() {
        let owner = actor("owner");
        let state = given(vec![OrgCommand::Create {
            org_id: "o".into(),
            name: "O".into(),
            owner: owner.clone(),
        }]);
        let set = |actor: Actor, audit_days, run_payload_days| OrgCommand::SetRetention {
            actor,
            audit_days,
            run_payload_days,
        };
        let events = decide(&state, set(owner.clone(), Some(400), None)).unwrap();
        let policy = RetentionPolicySet {
            audit_days: 400,
            run_payload_days: 0,
        };
        assert_eq!(events, vec![OrgEvent::RetentionSet(policy)]);
        // A field not given keeps its value.
        let state = evolve(state, &events[0]);
        assert_eq!(
            decide(&state, set(owner.clone(), None, Some(30))).unwrap(),
            vec![OrgEvent::RetentionSet(RetentionPolicySet {
                run_payload_days: 30,
                ..policy
            })]
        );
        match decide(&state, set(owner.clone(), Some(5), Some(9999))) {
            Err(OrgError::Invalid(problems)) => {
                let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
                assert_eq!(fields, ["audit_days", "run_payload_days"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(&state, set(actor("stranger"), Some(400), None)),
            Err(OrgError::NotFound)
        );
        // Setting what is already set changes nothing.
        assert_eq!(decide(&state, set(owner, Some(400), None)).unwrap(), Vec::new());
    }
}
