//! Alerts: budget thresholds crossed and days of anomalous spend.
//!
//! Every `PROMPTOPS_BILLING_ALERT_SECS` the checker compares each budget's
//! settled use in its current period (from the ledger) with its thresholds,
//! and each org's spend today with its trailing baseline ([`anomaly`]). An
//! alert is written once (its id says what it reports) to `billing_alerts`,
//! then appended as an event to the org's `alerts` aggregate with an id
//! derived from the same, so a crash between the two appends it once.

use std::time::Duration;

use promptops_account::budget;
use promptops_eventlog::{
    AggregateRef, Context, EventDraft, EventLog, EventMetadata, Expected, envelope_for,
};
use promptops_platform::db::unix_ms;
use promptops_proto::billing::v1::{BudgetSet, BudgetThresholdCrossed, SpendAnomalyDetected};
use prost::Message as _;
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::ledger;

pub const THRESHOLD_CROSSED: &str = "promptops.billing.v1.BudgetThresholdCrossed";
pub const ANOMALY_DETECTED: &str = "promptops.billing.v1.SpendAnomalyDetected";

/// Days of history an anomaly is judged against.
pub const BASELINE_DAYS: usize = 14;
/// Fewer days with spend than this: no baseline, no anomaly.
pub const MIN_BASELINE_DAYS: usize = 7;
/// Below 0.10 USD a day nothing is anomalous.
pub const MIN_ANOMALOUS_NANO_USD: i64 = 100_000_000;

/// Whether `today` is far above the trailing days' spend: more than the
/// mean plus three standard deviations, and more than twice the mean.
pub fn anomaly(trailing: &[i64], today: i64) -> Option<(i64, i64)> {
    if trailing.len() < MIN_BASELINE_DAYS || today < MIN_ANOMALOUS_NANO_USD {
        return None;
    }
    let n = trailing.len() as f64;
    let mean = trailing.iter().map(|&d| d as f64).sum::<f64>() / n;
    let variance = trailing.iter().map(|&d| (d as f64 - mean).powi(2)).sum::<f64>() / n;
    let stddev = variance.sqrt();
    let today = today as f64;
    (today > mean + 3.0 * stddev && today > 2.0 * mean).then_some((mean as i64, stddev as i64))
}

fn alert_id(parts: &[&str]) -> uuid::Uuid {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(parts.join("\u{1f}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes)
}

/// Checks every budget and org once; returns how many alerts were raised.
pub async fn check(db: &AnyPool, now_ms: i64) -> Result<u64, sqlx::Error> {
    let mut raised = 0;
    let budgets: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT org_id, budget FROM billing_budgets")
        .fetch_all(db)
        .await?;
    for (org_id, payload) in budgets {
        let Ok(set) = BudgetSet::decode(payload.as_slice()) else {
            continue;
        };
        let Some(b) = set.budget else { continue };
        let start = budget::period_start_ms(b.period(), now_ms);
        let keys = crate::grpc::scope_keys(db, &org_id, &b).await?;
        let used = ledger::used(db, &org_id, b.metric(), keys.as_deref(), start).await?;
        for percent in budget::thresholds(&b) {
            if i128::from(used) * 100 < i128::from(b.limit) * i128::from(percent) {
                continue;
            }
            let id = alert_id(&[&org_id, "budget", &b.id, &start.to_string(), &percent.to_string()]);
            let event = BudgetThresholdCrossed {
                budget_id: b.id.clone(),
                budget_name: b.name.clone(),
                period_start_ms: start,
                percent,
                used,
                limit: b.limit,
                metric: b.metric,
            };
            let message = format!(
                "budget {:?} ({}) reached {percent}%: {used} of {}",
                b.id, b.name, b.limit
            );
            raised += insert(
                db,
                id,
                &org_id,
                "budget.threshold",
                &b.id,
                percent,
                "",
                &message,
                THRESHOLD_CROSSED,
                event.encode_to_vec(),
                now_ms,
            )
            .await?;
        }
    }
    let today = ledger::day_of(now_ms);
    let day_ms = 86_400_000;
    let since = now_ms - (BASELINE_DAYS as i64 + 1) * day_ms;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT org_id, day, CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT) FROM ledger_lines
         WHERE status <> 'running' AND ended_at_ms >= $1 GROUP BY org_id, day ORDER BY org_id, day",
    )
    .bind(since)
    .fetch_all(db)
    .await?;
    let mut by_org: std::collections::BTreeMap<String, Vec<(String, i64)>> = Default::default();
    for (org, day, spend) in rows {
        by_org.entry(org).or_default().push((day, spend));
    }
    for (org_id, days) in by_org {
        let spend_today = days.iter().find(|(d, _)| *d == today).map_or(0, |(_, s)| *s);
        let trailing: Vec<i64> = days
            .iter()
            .filter(|(d, _)| *d != today)
            .map(|(_, s)| *s)
            .collect();
        let Some((mean, stddev)) = anomaly(&trailing, spend_today) else {
            continue;
        };
        let event = SpendAnomalyDetected {
            day: today.clone(),
            spend_nano_usd: spend_today,
            baseline_mean_nano_usd: mean,
            baseline_stddev_nano_usd: stddev,
            baseline_days: trailing.len() as u32,
        };
        let message = format!(
            "spend on {today} is {spend_today} nano-USD, against a mean of {mean} (σ {stddev}) over {} days",
            trailing.len()
        );
        let id = alert_id(&[&org_id, "anomaly", &today]);
        raised += insert(
            db,
            id,
            &org_id,
            "spend.anomaly",
            "",
            0,
            &today,
            &message,
            ANOMALY_DETECTED,
            event.encode_to_vec(),
            now_ms,
        )
        .await?;
    }
    Ok(raised)
}

#[allow(clippy::too_many_arguments, reason = "one alert row, its columns")]
async fn insert(
    db: &AnyPool,
    id: uuid::Uuid,
    org_id: &str,
    kind: &str,
    budget_id: &str,
    percent: u32,
    day: &str,
    message: &str,
    event_type: &str,
    payload: Vec<u8>,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let mut event = event_type.as_bytes().to_vec();
    event.push(0);
    event.extend(payload);
    let done = sqlx::query(
        "INSERT INTO billing_alerts (alert_id, org_id, kind, budget_id, percent, day, message, event, raised_at_ms, published)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0) ON CONFLICT (alert_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(org_id)
    .bind(kind)
    .bind(budget_id)
    .bind(i64::from(percent))
    .bind(day)
    .bind(message)
    .bind(event)
    .bind(now_ms)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Appends the alerts not yet in the log; returns how many.
pub async fn publish(db: &AnyPool, log: &EventLog) -> Result<u64, String> {
    let pending: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT alert_id, org_id, event FROM billing_alerts WHERE published = 0 ORDER BY raised_at_ms",
    )
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    let mut published = 0;
    for (alert_id, org_id, stored) in pending {
        let Some(split) = stored.iter().position(|b| *b == 0) else {
            continue;
        };
        let event_type = String::from_utf8_lossy(&stored[..split]).into_owned();
        let payload = stored[split + 1..].to_vec();
        let aggregate =
            AggregateRef::new(Context::Billing, &org_id, "alerts", "org").map_err(|e| e.to_string())?;
        let id = uuid::Uuid::parse_str(&alert_id).map_err(|e| e.to_string())?;
        let metadata = EventMetadata {
            actor: Some(promptops_proto::common::v1::Actor {
                kind: promptops_proto::common::v1::ActorKind::Service as i32,
                id: "billing".into(),
            }),
            correlation_id: alert_id.clone(),
            ..EventMetadata::default()
        };
        let envelope = envelope_for(
            &aggregate,
            0,
            EventDraft::new(event_type, payload).with_id(id),
            &metadata,
        );
        log.append(&aggregate, Expected::Any, &[envelope])
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query("UPDATE billing_alerts SET published = 1 WHERE alert_id = $1")
            .bind(&alert_id)
            .execute(db)
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!("promptops_billing_alerts_total").increment(1);
        published += 1;
    }
    Ok(published)
}

/// Checks and publishes every `every` until shutdown.
pub async fn run(db: AnyPool, log: EventLog, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = check(&db, unix_ms()).await {
            tracing::warn!(error = %e, "checking budgets and spend");
        }
        if let Err(e) = publish(&db, &log).await {
            tracing::warn!(error = %e, "publishing alerts; retried next round");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USD: i64 = 1_000_000_000;

    #[test]
    fn a_day_far_above_a_steady_baseline_is_an_anomaly() {
        let steady = [USD, USD, USD * 11 / 10, USD * 9 / 10, USD, USD, USD];
        assert!(anomaly(&steady, 5 * USD).is_some());
        // Within the noise, or without enough history, or too small: not.
        assert!(anomaly(&steady, USD * 12 / 10).is_none());
        assert!(anomaly(&steady[..5], 5 * USD).is_none());
        let tiny = [1_000; 10];
        assert!(anomaly(&tiny, 50_000_000).is_none());
        // A noisy baseline needs a bigger jump.
        let noisy = [USD, 3 * USD, USD / 2, 4 * USD, USD, 2 * USD, USD / 4];
        assert!(anomaly(&noisy, 5 * USD).is_none());
    }

    #[test]
    fn alert_ids_are_stable_and_distinct() {
        assert_eq!(
            alert_id(&["o", "budget", "b", "1", "80"]),
            alert_id(&["o", "budget", "b", "1", "80"])
        );
        assert_ne!(
            alert_id(&["o", "budget", "b", "1", "80"]),
            alert_id(&["o", "budget", "b", "1", "100"])
        );
    }
}
