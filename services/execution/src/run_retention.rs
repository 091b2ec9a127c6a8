//! Retention of run payloads: after `run_payload_days` (the org's
//! `RetentionPolicySet`, else `PROMPTOPS_RUN_PAYLOAD_RETENTION_DAYS`, 90) a
//! finished run's output and variables are blanked in the run history; its
//! model, tokens, cost, latency and status stay (billing and analytics need
//! them). The policy arrives on the identity stream (`run_retention`
//! projection); the pruner runs at start and every
//! `PROMPTOPS_RUN_PAYLOAD_PRUNE_SECS` (3600). The event log is immutable
//! and keeps the payloads; a rebuild of the run history brings them back
//! until the next pass.

use std::time::Duration;

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::unix_ms;
use promptops_proto::execution::v1::RunStatus;
use promptops_proto::identity::v1::RetentionPolicySet;
use prost::Message as _;
use sqlx::{AnyConnection, AnyPool};
use tokio_util::sync::CancellationToken;

const DAY_MS: i64 = 86_400_000;

pub const PROJECTION: &str = "run_retention";

/// Follows each org's policy from the identity stream.
#[derive(Debug, Default)]
pub struct RetentionPolicies;

impl Projection for RetentionPolicies {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let envelope = &event.envelope;
        if envelope.event_type != "promptops.identity.v1.RetentionPolicySet" {
            return Ok(());
        }
        let Ok(policy) = RetentionPolicySet::decode(envelope.payload.as_slice()) else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO run_retention (org_id, days) VALUES ($1, $2) ON CONFLICT (org_id) DO UPDATE SET days = $2",
        )
        .bind(&envelope.org_id)
        .bind(i64::from(policy.run_payload_days))
        .execute(&mut *conn)
        .await
        .map(|_| ())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM run_retention")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

/// Blanks the payloads of finished runs past retention, as of `now_ms`.
/// Returns how many runs were pruned.
pub async fn prune(pool: &AnyPool, now_ms: i64, default_days: u32) -> Result<u64, sqlx::Error> {
    const BLANK: &str = "UPDATE runs SET output = '', variables = '{}', payload_pruned = 1
         WHERE payload_pruned = 0 AND status <> $1 AND created_at_ms < $2";
    let running = RunStatus::Running as i64;
    let mut pruned = 0;
    let chosen: Vec<(String, i64)> = sqlx::query_as("SELECT org_id, days FROM run_retention WHERE days > 0")
        .fetch_all(pool)
        .await?;
    for (org_id, days) in &chosen {
        pruned += sqlx::query(&format!("{BLANK} AND org_id = $3"))
            .bind(running)
            .bind(now_ms - days * DAY_MS)
            .bind(org_id)
            .execute(pool)
            .await?
            .rows_affected();
    }
    pruned += sqlx::query(&format!(
        "{BLANK} AND org_id NOT IN (SELECT org_id FROM run_retention WHERE days > 0)"
    ))
    .bind(running)
    .bind(now_ms - i64::from(default_days) * DAY_MS)
    .execute(pool)
    .await?
    .rows_affected();
    if pruned > 0 {
        metrics::counter!("run_payloads_pruned_total").increment(pruned);
    }
    Ok(pruned)
}

/// Prunes at start and then every `interval`, until shutdown.
pub async fn run_pruner(pool: AnyPool, default_days: u32, interval: Duration, shutdown: CancellationToken) {
    loop {
        match prune(&pool, unix_ms(), default_days).await {
            Ok(n) if n > 0 => tracing::info!(runs = n, "pruned run payloads past retention"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "run payload pruning failed; retrying next round"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use promptops_platform::config::DatabaseConfig;

    use super::*;

    #[tokio::test]
    async fn payloads_past_retention_are_blanked_and_the_rest_of_the_run_stays() {
        let dir = tempfile::tempdir().unwrap();
        let db = promptops_platform::db::open(
            &DatabaseConfig::Sqlite {
                data_dir: dir.path().to_owned(),
            },
            "execution",
            crate::MIGRATIONS,
        )
        .await
        .unwrap();
        let now = 1_800_000_000_000;
        let completed = RunStatus::Completed as i64;
        for (org, run, days_ago, status) in [
            ("a", "old", 100, completed),
            ("a", "new", 10, completed),
            ("a", "open", 100, RunStatus::Running as i64),
            ("b", "forty", 40, completed),
            ("b", "twenty", 20, completed),
        ] {
            sqlx::query(
                "INSERT INTO runs (org_id, run_id, status, prompt_id, prompt_version, label, model, output,
                    input_tokens, output_tokens, cached_input_tokens, estimated, cost_nano_usd, latency_us,
                    ttft_us, error, finish_reason, created_at_ms, actor_kind, actor_id, trace_id, variables)
                 VALUES ($1, $2, $3, '', 0, '', 'mock/echo', 'secret output', 5, 7, 0, 0, 42, 1, 1, '', '', $4, 1,
                    'u', '', '{\"name\":\"Ada\"}')",
            )
            .bind(org)
            .bind(run)
            .bind(status)
            .bind(now - days_ago * DAY_MS)
            .execute(&db)
            .await
            .unwrap();
        }
        sqlx::query("INSERT INTO run_retention (org_id, days) VALUES ('b', 30)")
            .execute(&db)
            .await
            .unwrap();
        assert_eq!(prune(&db, now, 90).await.unwrap(), 2);
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT run_id, output, variables, cost_nano_usd, payload_pruned FROM runs ORDER BY org_id, run_id",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let pruned: Vec<&str> = rows.iter().filter(|r| r.4 == 1).map(|r| r.0.as_str()).collect();
        assert_eq!(pruned, ["old", "forty"]);
        for row in &rows {
            assert_eq!(row.3, 42, "cost stays: {row:?}");
            if row.4 == 1 {
                assert_eq!((row.1.as_str(), row.2.as_str()), ("", "{}"));
            } else {
                assert_eq!(row.1, "secret output");
            }
        }
        assert_eq!(prune(&db, now, 90).await.unwrap(), 0, "nothing twice");
    }
}
