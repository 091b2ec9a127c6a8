//! Retention: pruning old entries without breaking the chain (and, on the
//! same schedule, refreshing the planner's statistics of the trail).
//!
//! Each org keeps its trail `audit_days` (its `RetentionPolicySet`, else
//! `PROMPTOPS_AUDIT_RETENTION_DAYS`, 365). Every
//! `PROMPTOPS_AUDIT_PRUNE_SECS` the pruner takes, per chain, the longest
//! prefix of entries older than that and, in one transaction:
//!
//! 1. verifies the prefix (from genesis, or from the signed checkpoint the
//!    previous pruning left) — a broken prefix is never pruned, so
//!    tampering cannot be laundered by retention;
//! 2. signs a checkpoint of the last pruned entry's hash;
//! 3. deletes the prefix.
//!
//! Verify then anchors the first remaining entry on that checkpoint: the
//! chain stays provable, only shorter. The event log itself is immutable and
//! keeps every event; a rebuild re-derives the pruned entries until the next
//! pass prunes them again.

use std::time::Duration;

use promptops_platform::db::{to_i64, to_u64, unix_ms};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::chain::Anchor;
use crate::signing::{self, Signer};

const DAY_MS: i64 = 86_400_000;

/// What one pass did, per chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub org_id: String,
    pub chain: String,
    /// Entries up to and including this sequence are gone.
    pub through: u64,
    pub deleted: u64,
}

/// The days `org_id` keeps its trail.
pub async fn audit_days(pool: &AnyPool, org_id: &str, default_days: u32) -> Result<(u32, bool), sqlx::Error> {
    let days: Option<i64> = sqlx::query_scalar("SELECT audit_days FROM audit_retention WHERE org_id = $1")
        .bind(org_id)
        .fetch_optional(pool)
        .await?;
    Ok(
        match days.and_then(|d| u32::try_from(d).ok()).filter(|d| *d > 0) {
            Some(days) => (days, false),
            None => (default_days, true),
        },
    )
}

/// The days `org_id` keeps run payloads (the execution service prunes them).
pub async fn run_payload_days(pool: &AnyPool, org_id: &str, default_days: u32) -> Result<u32, sqlx::Error> {
    let days: Option<i64> =
        sqlx::query_scalar("SELECT run_payload_days FROM audit_retention WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(pool)
            .await?;
    Ok(days
        .and_then(|d| u32::try_from(d).ok())
        .filter(|d| *d > 0)
        .unwrap_or(default_days))
}

/// How far each of `org_id`'s chains is pruned.
pub async fn pruned_through(pool: &AnyPool, org_id: &str) -> Result<Vec<(String, u64)>, sqlx::Error> {
    let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT c.chain, c.length, (SELECT MIN(e.chain_sequence) FROM audit_entries e
                                    WHERE e.org_id = c.org_id AND e.chain = c.chain)
         FROM audit_chains c WHERE c.org_id = $1 ORDER BY c.chain",
    )
    .bind(org_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(chain, length, first)| {
            let through = match first {
                Some(first) => to_u64(first) - 1,
                None => to_u64(length),
            };
            (through > 0).then_some((chain, through))
        })
        .collect())
}

/// One pass over every chain, as of `now_ms`.
pub async fn prune(
    pool: &AnyPool,
    signer: &Signer,
    now_ms: i64,
    default_days: u32,
) -> Result<Vec<Pruned>, sqlx::Error> {
    // Every chain with its org's chosen days (NULL or 0: the default).
    let chains: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT c.org_id, c.chain, c.length, r.audit_days FROM audit_chains c
         LEFT JOIN audit_retention r ON r.org_id = c.org_id ORDER BY c.org_id, c.chain",
    )
    .fetch_all(pool)
    .await?;
    let mut done = Vec::new();
    for (org_id, chain_name, length, chosen) in chains {
        let days = chosen
            .and_then(|d| u32::try_from(d).ok())
            .filter(|d| *d > 0)
            .unwrap_or(default_days);
        let cutoff = now_ms - i64::from(days) * DAY_MS;
        let (first_present, first_kept): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MIN(chain_sequence), MIN(CASE WHEN occurred_at_ms >= $3 THEN chain_sequence END)
             FROM audit_entries WHERE org_id = $1 AND chain = $2",
        )
        .bind(&org_id)
        .bind(&chain_name)
        .bind(cutoff)
        .fetch_one(pool)
        .await?;
        let Some(first_present) = first_present.map(to_u64) else {
            continue;
        };
        let through = first_kept.map_or(to_u64(length), |k| to_u64(k) - 1);
        if through < first_present {
            continue;
        }
        match prune_chain(pool, signer, &org_id, &chain_name, first_present, through, now_ms).await? {
            Ok(deleted) => {
                metrics::counter!("audit_entries_pruned_total").increment(deleted);
                done.push(Pruned {
                    org_id,
                    chain: chain_name,
                    through,
                    deleted,
                });
            }
            Err(reason) => {
                metrics::counter!("audit_prune_refused_total").increment(1);
                tracing::error!(
                    org_id,
                    chain = chain_name,
                    reason,
                    "not pruning a chain that does not verify"
                );
            }
        }
    }
    Ok(done)
}

/// Verifies `first..=through`, signs `through`'s hash, deletes the prefix.
/// The inner error says why the prefix was not pruned.
async fn prune_chain(
    pool: &AnyPool,
    signer: &Signer,
    org_id: &str,
    chain_name: &str,
    first: u64,
    through: u64,
    now_ms: i64,
) -> Result<Result<u64, String>, sqlx::Error> {
    let anchor = if first == 1 {
        Anchor::Genesis
    } else {
        let (trusted, _) = signing::checkpoints(pool, signer, org_id, chain_name).await?;
        match trusted.into_iter().find(|(c, _)| c.chain_sequence == first - 1) {
            Some((c, _)) => Anchor::After {
                sequence: first - 1,
                hash: c.head_hash,
            },
            None => {
                return Ok(Err(format!(
                    "entries before {first} are gone without a signed checkpoint"
                )));
            }
        }
    };
    let walked = crate::verify::walk(pool, org_id, chain_name, anchor, first, through, &[], None).await?;
    if let Some(b) = walked.first_break {
        return Ok(Err(format!("entry {}: {}", b.chain_sequence, b.reason)));
    }
    let Some((_, last_hash)) = walked.last else {
        return Ok(Err(format!("entries {first}..{through} are missing")));
    };
    let mut tx = pool.begin().await?;
    signing::insert_checkpoint(
        &mut tx,
        signer,
        org_id,
        chain_name,
        to_i64(through),
        &last_hash,
        now_ms,
    )
    .await?;
    let deleted =
        sqlx::query("DELETE FROM audit_entries WHERE org_id = $1 AND chain = $2 AND chain_sequence <= $3")
            .bind(org_id)
            .bind(chain_name)
            .bind(to_i64(through))
            .execute(&mut *tx)
            .await?
            .rows_affected();
    tx.commit().await?;
    Ok(Ok(deleted))
}

/// Prunes every `interval` until shutdown.
pub async fn run_pruner(
    pool: AnyPool,
    signer: Signer,
    default_days: u32,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match prune(&pool, &signer, unix_ms(), default_days).await {
            Ok(pruned) if !pruned.is_empty() => {
                tracing::info!(chains = pruned.len(), "pruned audit entries past retention")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "audit pruning failed; retrying next round"),
        }
        // Fresh planner statistics (SQLite never gathers them itself): the
        // filtered queries pick the actor / resource indexes.
        if let Err(e) = sqlx::query("ANALYZE audit_entries").execute(&pool).await {
            tracing::warn!(error = %e, "ANALYZE audit_entries failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use promptops_eventlog::projection::Projection as _;
    use promptops_eventlog::{Context, EventEnvelope, RecordedEvent};
    use promptops_platform::paging::timestamp_from_ms;
    use prost::Message as _;

    use super::*;
    use crate::trail::AuditTrail;

    async fn trail_with(days_ago: &[i64], now: i64) -> (AnyPool, tempfile::TempDir) {
        let (db, dir) = crate::test_database().await;
        let trail = Arc::new(AuditTrail);
        let mut tx = db.begin().await.unwrap();
        for (i, days) in days_ago.iter().enumerate() {
            let payload = promptops_proto::prompts::v1::PromptArchived::default().encode_to_vec();
            let event = RecordedEvent {
                context: Context::Prompts,
                sequence: i as u64 + 1,
                subject: String::new(),
                envelope: EventEnvelope {
                    event_id: format!("e{i}"),
                    event_type: "promptops.prompts.v1.PromptArchived".into(),
                    org_id: "acme".into(),
                    aggregate_type: "prompt".into(),
                    aggregate_id: "p".into(),
                    occurred_at: Some(timestamp_from_ms(now - days * DAY_MS)),
                    payload,
                    ..EventEnvelope::default()
                },
            };
            trail.apply(&mut tx, &event).await.unwrap();
        }
        tx.commit().await.unwrap();
        (db, dir)
    }

    #[tokio::test]
    async fn pruning_keeps_the_chain_provable_from_a_signed_checkpoint() {
        let now = 1_800_000_000_000;
        let signer = Signer::from_seed(&[3; 32]);
        let (db, _dir) = trail_with(&[400, 380, 370, 10, 5, 1], now).await;
        let pruned = prune(&db, &signer, now, 365).await.unwrap();
        assert_eq!(pruned.len(), 1);
        assert_eq!((pruned[0].through, pruned[0].deleted), (3, 3));
        let verified = crate::verify::verify_org(&db, &signer, "acme", None, None)
            .await
            .unwrap();
        assert!(verified.intact, "{verified:?}");
        assert_eq!(verified.entries_checked, 3);
        assert_eq!(
            pruned_through(&db, "acme").await.unwrap(),
            [("EVT_PROMPTS".to_owned(), 3)]
        );
        // A second pass has nothing to do.
        assert!(prune(&db, &signer, now, 365).await.unwrap().is_empty());
        // Without the checkpoint, the missing prefix is named.
        sqlx::query("DELETE FROM audit_checkpoints WHERE chain_sequence = 3")
            .execute(&db)
            .await
            .unwrap();
        let verified = crate::verify::verify_org(&db, &signer, "acme", None, None)
            .await
            .unwrap();
        assert!(!verified.intact);
        assert!(verified.first_break.unwrap().reason.contains("1..3 are missing"));
    }

    #[tokio::test]
    async fn an_org_policy_overrides_the_default_and_a_broken_prefix_is_never_pruned() {
        let now = 1_800_000_000_000;
        let signer = Signer::from_seed(&[3; 32]);
        let (db, _dir) = trail_with(&[100, 90, 80, 10], now).await;
        assert!(prune(&db, &signer, now, 365).await.unwrap().is_empty());
        sqlx::query(
            "INSERT INTO audit_retention (org_id, audit_days, run_payload_days) VALUES ('acme', 30, 0)",
        )
        .execute(&db)
        .await
        .unwrap();
        assert_eq!(audit_days(&db, "acme", 365).await.unwrap(), (30, false));
        sqlx::query("UPDATE audit_entries SET summary = 'forged' WHERE chain_sequence = 2")
            .execute(&db)
            .await
            .unwrap();
        assert!(
            prune(&db, &signer, now, 365).await.unwrap().is_empty(),
            "tampering is not laundered"
        );
        let remaining: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_entries")
            .fetch_one(&db)
            .await
            .unwrap();
        assert_eq!(remaining, 4);
    }
}
