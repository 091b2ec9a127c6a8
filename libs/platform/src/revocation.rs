//! The revocation list and members' resource grants, kept fresh by identity
//! events.
//!
//! A [`RevocationFeed`] follows `EVT_IDENTITY` from its first event (a tail:
//! nothing is stored anywhere), records revoked sessions, tells its owner
//! when an API key was revoked or rotated so cached checks can be dropped,
//! and keeps each member's resource-level grants (`GrantAdded`,
//! `GrantRemoved`; a `MemberRemoved` drops them) for the
//! [`Caller`](crate::caller::Caller)s the `Authenticator` builds.
//! It is ready once it has caught up with the stream as it was at start, so
//! a restart never forgets a revocation. The gateway and every service's
//! `Authenticator` use the same feed; the gateway also records its own
//! revocations at once, before the event comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use promptops_auth::roles::{Grant, Resource};
use promptops_auth::tokens::{Claims, Revocations, TokenError};
use promptops_eventlog::{Context, EventEnvelope, EventLog};
use promptops_proto::identity::v1::{
    ApiKeyRevoked, ApiKeyRotated, GrantAdded, GrantRemoved, MemberJoined, MemberRemoved, MemberRoleChanged,
    SessionRevoked,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
pub struct RevocationFeed {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    revocations: RwLock<Revocations>,
    /// (org, user) → that member's grants.
    grants: RwLock<HashMap<(String, String), Vec<Grant>>>,
    /// (org, user) → that member's current role (absent: not a member).
    members: RwLock<HashMap<(String, String), promptops_auth::roles::Role>>,
    /// API keys revoked (ids).
    revoked_keys: RwLock<std::collections::HashSet<String>>,
    ready: AtomicBool,
}

impl RevocationFeed {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the feed has caught up with the stream once since start.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Records a revoked session (idempotent).
    pub fn revoke_session(&self, session_id: &str) {
        if let Ok(mut revocations) = self.inner.revocations.write() {
            revocations.revoke_session(session_id);
        }
    }

    /// The resource-level grants of `user_id` in `org_id`.
    pub fn grants(&self, org_id: &str, user_id: &str) -> Vec<Grant> {
        self.inner
            .grants
            .read()
            .ok()
            .and_then(|g| g.get(&(org_id.to_owned(), user_id.to_owned())).cloned())
            .unwrap_or_default()
    }

    fn set_grant(
        &self,
        org_id: &str,
        user_id: &str,
        resource: Resource,
        role: Option<promptops_auth::roles::Role>,
    ) {
        let Ok(mut grants) = self.inner.grants.write() else {
            return;
        };
        let list = grants.entry((org_id.to_owned(), user_id.to_owned())).or_default();
        list.retain(|g| g.resource != resource);
        if let Some(role) = role {
            list.push(Grant { resource, role });
        }
    }

    /// The current role of `user_id` in `org_id`; `None` when they are not
    /// (or no longer) a member.
    pub fn member_role(&self, org_id: &str, user_id: &str) -> Option<promptops_auth::roles::Role> {
        self.inner
            .members
            .read()
            .ok()?
            .get(&(org_id.to_owned(), user_id.to_owned()))
            .copied()
    }

    /// Whether the API key `key_id` was revoked.
    pub fn is_key_revoked(&self, key_id: &str) -> bool {
        self.inner
            .revoked_keys
            .read()
            .is_ok_and(|keys| keys.contains(key_id))
    }

    /// Marks the feed caught up (tests that feed it by hand).
    #[cfg(test)]
    pub(crate) fn mark_ready_for_tests(&self) {
        self.inner.ready.store(true, Ordering::Release);
    }

    pub(crate) fn set_member(&self, org_id: &str, user_id: &str, role: Option<promptops_auth::roles::Role>) {
        let Ok(mut members) = self.inner.members.write() else {
            return;
        };
        let key = (org_id.to_owned(), user_id.to_owned());
        match role {
            Some(role) => {
                members.insert(key, role);
            }
            None => {
                members.remove(&key);
            }
        }
    }

    /// `Err(Revoked)` when the token's session or user was revoked.
    pub fn check(&self, claims: &Claims) -> Result<(), TokenError> {
        self.inner
            .revocations
            .read()
            .map_err(|_| TokenError::Revoked)
            .and_then(|r| r.check(claims))
    }

    /// Follows the identity stream until `shutdown`, calling `key_changed`
    /// with the id of every API key revoked or rotated.
    pub async fn follow(&self, log: EventLog, shutdown: CancellationToken, key_changed: impl Fn(&str)) {
        loop {
            if let Err(err) = self.follow_once(&log, &shutdown, &key_changed).await {
                tracing::warn!(error = %err, "revocation tail interrupted; starting again");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn follow_once(
        &self,
        log: &EventLog,
        shutdown: &CancellationToken,
        key_changed: &impl Fn(&str),
    ) -> Result<(), String> {
        let caught_up_at = log
            .last_sequence(Context::Identity)
            .await
            .map_err(|e| e.to_string())?;
        if caught_up_at == 0 {
            self.inner.ready.store(true, Ordering::Release);
        }
        let mut tail = log.tail(Context::Identity).await.map_err(|e| e.to_string())?;
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                delivery = tail.next() => delivery.map_err(|e| e.to_string())?,
            };
            self.apply(&delivery.event.envelope, key_changed);
            if delivery.event.sequence >= caught_up_at {
                self.inner.ready.store(true, Ordering::Release);
            }
        }
    }

    fn apply(&self, envelope: &EventEnvelope, key_changed: &impl Fn(&str)) {
        use prost::Message as _;
        let payload = envelope.payload.as_slice();
        match envelope.event_type.as_str() {
            "promptops.identity.v1.SessionRevoked" => {
                if let Ok(revoked) = SessionRevoked::decode(payload) {
                    self.revoke_session(&revoked.session_id);
                }
            }
            "promptops.identity.v1.ApiKeyRevoked" => {
                if let Ok(revoked) = ApiKeyRevoked::decode(payload) {
                    if let Ok(mut keys) = self.inner.revoked_keys.write() {
                        keys.insert(revoked.key_id.clone());
                    }
                    key_changed(&revoked.key_id);
                }
            }
            "promptops.identity.v1.MemberJoined" => {
                if let Ok(joined) = MemberJoined::decode(payload) {
                    self.set_member(
                        &envelope.org_id,
                        &joined.user_id,
                        crate::caller::role_from_pb(joined.role),
                    );
                }
            }
            "promptops.identity.v1.MemberRoleChanged" => {
                if let Ok(changed) = MemberRoleChanged::decode(payload) {
                    self.set_member(
                        &envelope.org_id,
                        &changed.user_id,
                        crate::caller::role_from_pb(changed.to),
                    );
                }
            }
            "promptops.identity.v1.GrantAdded" => {
                if let Ok(added) = GrantAdded::decode(payload)
                    && let Some(resource) = resource(&added.resource_kind, &added.resource)
                {
                    let role = crate::caller::role_from_pb(added.role);
                    if role.is_some() {
                        self.set_grant(&envelope.org_id, &added.user_id, resource, role);
                    }
                }
            }
            "promptops.identity.v1.GrantRemoved" => {
                if let Ok(removed) = GrantRemoved::decode(payload)
                    && let Some(resource) = resource(&removed.resource_kind, &removed.resource)
                {
                    self.set_grant(&envelope.org_id, &removed.user_id, resource, None);
                }
            }
            "promptops.identity.v1.MemberRemoved" => {
                if let Ok(removed) = MemberRemoved::decode(payload) {
                    self.set_member(&envelope.org_id, &removed.user_id, None);
                    if let Ok(mut grants) = self.inner.grants.write() {
                        grants.remove(&(envelope.org_id.clone(), removed.user_id));
                    }
                }
            }
            "promptops.identity.v1.ApiKeyRotated" => {
                if let Ok(rotated) = ApiKeyRotated::decode(payload) {
                    key_changed(&rotated.key_id);
                }
            }
            _ => {}
        }
    }
}

fn resource(kind: &str, value: &str) -> Option<Resource> {
    match kind {
        "folder" => Some(Resource::Folder(value.to_owned())),
        "prompt" => Some(Resource::Prompt(value.to_owned())),
        _ => None,
    }
}
