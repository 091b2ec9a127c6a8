//! Identity, owned by the gateway: users, orgs and their members, sessions
//! (refresh-token families) and API keys, as event-sourced aggregates on the
//! `EVT_IDENTITY` stream.
//!
//! This module holds the pure domain — `decide` and `evolve` per aggregate,
//! tested given-events / when-command / then-events. Secrets never enter an
//! event: password hashes, refresh-token and API-key hashes and signing keys
//! live in the identity store next to the read models.
//!
//! Subjects: users and email claims under the pseudo-org `_users`
//! (`evt.identity._users.user.<id>`, `evt.identity._users.email.<sha256>`);
//! everything else under its org (`evt.identity.<org>.org.<org>`,
//! `….session.<id>`, `….api_key.<id>`).
//!
//! Wiring (the HTTP API, the store, enforcement in every service) follows.

pub mod api_key;
pub mod events;
pub mod grpc;
pub mod org;
pub mod service;
pub mod session;
pub mod store;
pub mod throttle;
pub mod user;

pub use promptops_platform::caller::{role_from_pb, role_to_pb};

/// The pseudo-org under which user-level aggregates live.
pub const USERS_ORG: &str = "_users";

/// Checks the shape of an email address (RFC 5321 lengths, one `@`, a dotted
/// domain, no spaces); the address is proven by use, not by a regex.
pub fn validate_email(email: &str) -> Result<(), &'static str> {
    if email.len() > 254 {
        return Err("must be at most 254 characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must contain @");
    };
    if local.is_empty() || local.len() > 64 {
        return Err("must have 1-64 characters before @");
    }
    if domain.contains('@') {
        return Err("must contain one @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return Err("must have a domain like example.com after @");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces");
    }
    Ok(())
}

/// The canonical form of an email address (trimmed, lower-case), used for
/// uniqueness and lookups.
pub fn canonical_email(email: &str) -> String {
    email.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_for_shape() {
        for good in ["ada@example.com", "a.b+tag@sub.example.co.uk", "ünï@exämple.org"] {
            assert_eq!(validate_email(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "a da@example.com",
            "ada@example..com",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
        assert!(validate_email(&format!("{}@example.com", "a".repeat(65))).is_err());
        assert_eq!(canonical_email("  Ada@Example.COM "), "ada@example.com");
    }

    #[test]
    fn roles_round_trip_through_protobuf() {
        use promptops_auth::roles::Role;
        for role in Role::ALL {
            assert_eq!(role_from_pb(role_to_pb(role) as i32), Some(role));
        }
        assert_eq!(role_from_pb(0), None);
        assert_eq!(role_from_pb(99), None);
    }
}
