//! The compliance report for a period: what happened, who did it, the
//! privileged actions and security events one by one, and whether the chain
//! over the period is intact.

use promptops_platform::db::to_u64;
use promptops_platform::paging::timestamp_from_ms;
use promptops_proto::audit::v1::{ActionCount, ActorCount, AuditEntry, ComplianceReport};
use promptops_proto::common::v1::Actor;
use sqlx::AnyPool;

use crate::signing::Signer;
use crate::trail::{COLUMNS, EntryRow};

/// At most this many privileged actions and security events are listed.
pub const MAX_LISTED: usize = 1_000;

/// Actions that change who may do what, what runs in production, or how
/// long the trail is kept.
pub const PRIVILEGED_ACTIONS: &[&str] = &[
    "member.invited",
    "member.role.changed",
    "member.removed",
    "grant.added",
    "grant.removed",
    "api.key.created",
    "api.key.rotated",
    "api.key.revoked",
    "provider.set",
    "provider.removed",
    "model.set",
    "model.removed",
    "label.policy.set",
    "retention.policy.set",
];

/// Security events of org `$1` in `[$2, $3)`: failed logins (recorded per
/// user under `$4`, the pseudo-org) of its members, refresh-token reuse.
const SECURITY_EVENTS: &str = "WHERE occurred_at_ms >= $2 AND occurred_at_ms < $3
           AND ((org_id = $4 AND action = 'user.login.failed'
                 AND resource_id IN (SELECT user_id FROM audit_members WHERE org_id = $1))
                OR (org_id = $1 AND action = 'refresh.reuse.detected'))";

/// The pseudo-org of user-level events (registration, failed logins).
const USERS_ORG: &str = "_users";

pub async fn compliance_report(
    pool: &AnyPool,
    signer: &Signer,
    org_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<ComplianceReport, sqlx::Error> {
    let by_action: Vec<(String, i64)> = sqlx::query_as(
        "SELECT action, COUNT(*) FROM audit_entries
         WHERE org_id = $1 AND occurred_at_ms >= $2 AND occurred_at_ms < $3
         GROUP BY action ORDER BY COUNT(*) DESC, action",
    )
    .bind(org_id)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await?;
    let by_actor: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT actor_kind, actor_id, COUNT(*) FROM audit_entries
         WHERE org_id = $1 AND occurred_at_ms >= $2 AND occurred_at_ms < $3
         GROUP BY actor_kind, actor_id ORDER BY COUNT(*) DESC, actor_id",
    )
    .bind(org_id)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(pool)
    .await?;
    let listed = (MAX_LISTED + 1) as i64;
    let privileged_in: String = PRIVILEGED_ACTIONS
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut privileged: Vec<AuditEntry> = sqlx::query_as::<_, EntryRow>(&format!(
        "SELECT {COLUMNS} FROM audit_entries
         WHERE org_id = $1 AND occurred_at_ms >= $2 AND occurred_at_ms < $3
           AND (action IN ({privileged_in})
                OR (action IN ('label.moved', 'label.removed') AND summary LIKE '%\"production\"%'))
         ORDER BY occurred_at_ms, event_id LIMIT $4"
    ))
    .bind(org_id)
    .bind(from_ms)
    .bind(to_ms)
    .bind(listed)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(AuditEntry::from)
    .collect();
    let privileged_truncated = privileged.len() > MAX_LISTED;
    privileged.truncate(MAX_LISTED);
    // Failed logins are recorded per user; the org's are its members'.
    let mut security_events: Vec<AuditEntry> = sqlx::query_as::<_, EntryRow>(&format!(
        "SELECT {COLUMNS} FROM audit_entries {SECURITY_EVENTS} ORDER BY occurred_at_ms, event_id LIMIT $5"
    ))
    .bind(org_id)
    .bind(from_ms)
    .bind(to_ms)
    .bind(USERS_ORG)
    .bind(listed)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(AuditEntry::from)
    .collect();
    security_events.truncate(MAX_LISTED);
    let (failed_logins, reuse): (i64, i64) = sqlx::query_as(&format!(
        "SELECT
            COUNT(CASE WHEN action = 'user.login.failed' THEN 1 END),
            COUNT(CASE WHEN action = 'refresh.reuse.detected' THEN 1 END)
         FROM audit_entries {SECURITY_EVENTS}"
    ))
    .bind(org_id)
    .bind(from_ms)
    .bind(to_ms)
    .bind(USERS_ORG)
    .fetch_one(pool)
    .await?;
    let verification = crate::verify::verify_org(pool, signer, org_id, Some(from_ms), Some(to_ms)).await?;
    Ok(ComplianceReport {
        from: Some(timestamp_from_ms(from_ms)),
        to: Some(timestamp_from_ms(to_ms)),
        total_entries: by_action.iter().map(|(_, n)| to_u64(*n)).sum(),
        by_action: by_action
            .into_iter()
            .map(|(action, count)| ActionCount {
                action,
                count: to_u64(count),
            })
            .collect(),
        by_actor: by_actor
            .into_iter()
            .map(|(kind, id, count)| ActorCount {
                actor: Some(Actor {
                    kind: i32::try_from(kind).unwrap_or(0),
                    id,
                }),
                count: to_u64(count),
            })
            .collect(),
        privileged,
        privileged_truncated,
        failed_logins: to_u64(failed_logins),
        refresh_reuse_detected: to_u64(reuse),
        security_events,
        verification: Some(verification),
    })
}
