//! Roles, permissions, and the one matrix that relates them.
//!
//! The README prints [`markdown_matrix`]; a test keeps the two equal.

use std::fmt;

/// A member's role in an org, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Editor, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Read prompts, versions, labels, runs, datasets, dashboards.
    Read,
    /// Create and edit prompts, versions, datasets; run prompts and evaluations.
    Write,
    /// Move an unprotected label.
    MoveLabel,
    /// Move a protected label (e.g. `production`).
    MoveProtectedLabel,
    /// Archive and restore prompts.
    Archive,
    /// Invite members, change roles below one's own, remove members.
    ManageMembers,
    /// Create, rotate and revoke API keys.
    ManageApiKeys,
    /// Revoke other members' sessions (force logout).
    ManageSessions,
    /// Provider credentials, models, prices, budgets.
    ManageSettings,
    /// Read the audit trail and compliance reports.
    ReadAudit,
    /// Transfer ownership, delete the org, grant the owner role.
    ManageOrg,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::Read,
        Permission::Write,
        Permission::MoveLabel,
        Permission::MoveProtectedLabel,
        Permission::Archive,
        Permission::ManageMembers,
        Permission::ManageApiKeys,
        Permission::ManageSessions,
        Permission::ManageSettings,
        Permission::ReadAudit,
        Permission::ManageOrg,
    ];

    /// The scope name used in tokens and API keys, e.g. `prompts:write`.
    pub fn scope(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::MoveLabel => "labels:move",
            Permission::MoveProtectedLabel => "labels:move-protected",
            Permission::Archive => "archive",
            Permission::ManageMembers => "members:manage",
            Permission::ManageApiKeys => "api-keys:manage",
            Permission::ManageSessions => "sessions:manage",
            Permission::ManageSettings => "settings:manage",
            Permission::ReadAudit => "audit:read",
            Permission::ManageOrg => "org:manage",
        }
    }

    pub fn from_scope(scope: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.scope() == scope)
    }
}

/// The matrix: for each permission, whether owner, admin, editor, viewer
/// have it (in the order of [`Role::ALL`]).
const MATRIX: &[(Permission, [bool; 4])] = &[
    (Permission::Read, [true, true, true, true]),
    (Permission::Write, [true, true, true, false]),
    (Permission::MoveLabel, [true, true, true, false]),
    (Permission::MoveProtectedLabel, [true, true, false, false]),
    (Permission::Archive, [true, true, true, false]),
    (Permission::ManageMembers, [true, true, false, false]),
    (Permission::ManageApiKeys, [true, true, false, false]),
    (Permission::ManageSessions, [true, true, false, false]),
    (Permission::ManageSettings, [true, true, false, false]),
    (Permission::ReadAudit, [true, true, false, false]),
    (Permission::ManageOrg, [true, false, false, false]),
];

/// Whether `role` has `permission`.
pub fn allows(role: Role, permission: Permission) -> bool {
    let column = match role {
        Role::Owner => 0,
        Role::Admin => 1,
        Role::Editor => 2,
        Role::Viewer => 3,
    };
    MATRIX
        .iter()
        .find(|(p, _)| *p == permission)
        .is_some_and(|(_, roles)| roles[column])
}

/// The scopes a role implies.
pub fn scopes_of(role: Role) -> Vec<&'static str> {
    Permission::ALL
        .into_iter()
        .filter(|p| allows(role, *p))
        .map(Permission::scope)
        .collect()
}

/// The matrix as a Markdown table, as printed in the README.
pub fn markdown_matrix() -> String {
    let mut out =
        String::from("| permission (scope) | owner | admin | editor | viewer |\n|---|---|---|---|---|\n");
    for (permission, roles) in MATRIX {
        out.push_str(&format!("| `{}` |", permission.scope()));
        for allowed in roles {
            out.push_str(if *allowed { " ✔ |" } else { " — |" });
        }
        out.push('\n');
    }
    out
}

/// What a resource-level grant applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A folder path (`support/emails`) and everything below it.
    Folder(String),
    /// One prompt, by id.
    Prompt(String),
}

/// A role on one resource, given to one member on top of their org role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub resource: Resource,
    pub role: Role,
}

/// The role that applies to a prompt in `folder`: the strongest of the org
/// role and every grant on the prompt or on a folder containing it. Grants
/// only add; they never take away what the org role gives.
pub fn effective_role(org_role: Role, grants: &[Grant], prompt_id: &str, folder: &str) -> Role {
    grants
        .iter()
        .filter(|grant| match &grant.resource {
            Resource::Prompt(id) => id == prompt_id,
            Resource::Folder(path) => folder_contains(path, folder),
        })
        .map(|grant| grant.role)
        .fold(org_role, Ord::max)
}

/// Whether `folder` is `ancestor` or below it (segment-wise, so `a/b` does
/// not contain `a/bc`).
fn folder_contains(ancestor: &str, folder: &str) -> bool {
    let ancestor = ancestor.trim_matches('/');
    let folder = folder.trim_matches('/');
    ancestor.is_empty()
        || folder == ancestor
        || folder
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_is_in_the_matrix_once() {
        for permission in Permission::ALL {
            assert_eq!(
                MATRIX.iter().filter(|(p, _)| *p == permission).count(),
                1,
                "{permission:?}"
            );
            assert_eq!(Permission::from_scope(permission.scope()), Some(permission));
        }
    }

    #[test]
    fn stronger_roles_have_everything_weaker_roles_have() {
        for permission in Permission::ALL {
            for pair in Role::ALL.windows(2) {
                let (stronger, weaker) = (pair[0], pair[1]);
                assert!(
                    !allows(weaker, permission) || allows(stronger, permission),
                    "{weaker} has {permission:?} but {stronger} does not"
                );
            }
        }
        assert!(allows(Role::Viewer, Permission::Read));
        assert!(!allows(Role::Viewer, Permission::Write));
        assert!(!allows(Role::Editor, Permission::MoveProtectedLabel));
        assert!(!allows(Role::Admin, Permission::ManageOrg));
    }

    #[test]
    fn grants_add_to_the_org_role_on_their_resource_only() {
        let grants = [
            Grant {
                resource: Resource::Folder("support".into()),
                role: Role::Editor,
            },
            Grant {
                resource: Resource::Prompt("p-9".into()),
                role: Role::Admin,
            },
        ];
        assert_eq!(
            effective_role(Role::Viewer, &grants, "p-1", "support"),
            Role::Editor
        );
        assert_eq!(
            effective_role(Role::Viewer, &grants, "p-1", "support/emails"),
            Role::Editor
        );
        assert_eq!(
            effective_role(Role::Viewer, &grants, "p-1", "supportive"),
            Role::Viewer
        );
        assert_eq!(effective_role(Role::Viewer, &grants, "p-9", "sales"), Role::Admin);
        assert_eq!(
            effective_role(Role::Owner, &grants, "p-1", "support"),
            Role::Owner
        );
    }

    #[test]
    fn the_readme_prints_the_matrix_from_code() {
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&markdown_matrix()),
            "README.md's permission matrix differs from roles::markdown_matrix():\n{}",
            markdown_matrix()
        );
    }
}
