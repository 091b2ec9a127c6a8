//! The analytics projection: execution events folded into time buckets per
//! org × prompt × version × model, at three granularities (minute, hour,
//! day) written together, so any range is answered from few rows
//! ([`cover`]).
//!
//! A bucket holds counts (runs, completed, failed by error class,
//! cancelled), tokens, cost, and two DDSketches (latency and time to first
//! token of completed runs, in ms, 1% relative error) that merge exactly:
//! percentiles over any set of buckets are true percentiles of the runs
//! within the sketch's error, never averages of percentiles.
//!
//! A run's dimensions come from its `ExecutionStarted` (kept in
//! `analytics_open_runs` until its end arrives; both are on the run's
//! subject, so in order); it is counted in the bucket of its end.

pub mod cover;
pub mod grpc;
pub mod query;
pub mod totals;

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::{Migration, to_i64};
use promptops_platform::paging::ms_from_timestamp;
use promptops_proto::execution::v1 as execution;
use prost::Message as _;
use sqlx::{AnyConnection, FromRow};

pub use cover::Granularity;
use totals::Totals;

pub const PROJECTION: &str = "analytics";

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 101,
    name: "analytics buckets",
    statements: &[
        promptops_eventlog::projection::CHECKPOINT_TABLE,
        "CREATE TABLE analytics_open_runs (
            org_id TEXT NOT NULL,
            run_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            prompt_version BIGINT NOT NULL,
            model TEXT NOT NULL,
            PRIMARY KEY (org_id, run_id)
        )",
        "CREATE TABLE analytics_buckets (
            org_id TEXT NOT NULL,
            granularity TEXT NOT NULL,
            bucket_start_ms BIGINT NOT NULL,
            prompt_id TEXT NOT NULL,
            prompt_version BIGINT NOT NULL,
            model TEXT NOT NULL,
            runs BIGINT NOT NULL,
            completed BIGINT NOT NULL,
            failed BIGINT NOT NULL,
            cancelled BIGINT NOT NULL,
            errors TEXT NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cached_input_tokens BIGINT NOT NULL,
            cost_nano_usd BIGINT NOT NULL,
            latency TEXT NOT NULL,
            ttft TEXT NOT NULL,
            PRIMARY KEY (org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model)
        )",
    ],
}];

/// The row of one bucket.
#[derive(Debug, Clone, FromRow)]
pub struct BucketRow {
    pub granularity: String,
    pub bucket_start_ms: i64,
    pub prompt_id: String,
    pub prompt_version: i64,
    pub model: String,
    pub runs: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub errors: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cost_nano_usd: i64,
    pub latency: String,
    pub ttft: String,
}

pub const BUCKET_COLUMNS: &str = "granularity, bucket_start_ms, prompt_id, prompt_version, model, runs, completed, failed, cancelled, errors, input_tokens, output_tokens, cached_input_tokens, cost_nano_usd, latency, ttft";

#[derive(Debug, Default)]
pub struct Analytics;

/// What one run's end adds to its buckets.
fn end_of_run(envelope: &promptops_eventlog::EventEnvelope) -> Option<(String, Totals, String)> {
    let p = envelope.payload.as_slice();
    let mut totals = Totals {
        runs: 1,
        ..Totals::default()
    };
    let (run_id, answered_by) = match envelope.event_type.as_str() {
        "promptops.execution.v1.ExecutionCompleted" => {
            let e = execution::ExecutionCompleted::decode(p).ok()?;
            let usage = e.usage.unwrap_or_default();
            totals.completed = 1;
            totals.input_tokens = usage.input_tokens;
            totals.output_tokens = usage.output_tokens;
            totals.cached_input_tokens = usage.cached_input_tokens;
            totals.cost_nano_usd = e.cost_nano_usd;
            totals.latency.add(e.latency_us as f64 / 1000.0);
            if e.time_to_first_token_us > 0 {
                totals.ttft.add(e.time_to_first_token_us as f64 / 1000.0);
            }
            (e.run_id, e.model)
        }
        "promptops.execution.v1.ExecutionFailed" => {
            let e = execution::ExecutionFailed::decode(p).ok()?;
            totals.failed = 1;
            let class = if e.error_class.is_empty() {
                "unknown".to_owned()
            } else {
                e.error_class
            };
            totals.errors.insert(class, 1);
            (e.run_id, String::new())
        }
        "promptops.execution.v1.ExecutionCancelled" => {
            let e = execution::ExecutionCancelled::decode(p).ok()?;
            let usage = e.usage.unwrap_or_default();
            totals.cancelled = 1;
            totals.input_tokens = usage.input_tokens;
            totals.output_tokens = usage.output_tokens;
            totals.cached_input_tokens = usage.cached_input_tokens;
            totals.cost_nano_usd = e.cost_nano_usd;
            (e.run_id, String::new())
        }
        _ => return None,
    };
    Some((run_id, totals, answered_by))
}

impl Projection for Analytics {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let envelope = &event.envelope;
        if envelope.event_type == "promptops.execution.v1.ExecutionStarted" {
            let Ok(started) = execution::ExecutionStarted::decode(envelope.payload.as_slice()) else {
                return Ok(());
            };
            sqlx::query(
                "INSERT INTO analytics_open_runs (org_id, run_id, prompt_id, prompt_version, model)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (org_id, run_id) DO NOTHING",
            )
            .bind(&envelope.org_id)
            .bind(&started.run_id)
            .bind(&started.prompt_id)
            .bind(to_i64(started.prompt_version))
            .bind(&started.model)
            .execute(&mut *conn)
            .await?;
            return Ok(());
        }
        let Some((run_id, totals, answered_by)) = end_of_run(envelope) else {
            return Ok(());
        };
        let open: Option<(String, i64, String)> = sqlx::query_as(
            "SELECT prompt_id, prompt_version, model FROM analytics_open_runs WHERE org_id = $1 AND run_id = $2",
        )
        .bind(&envelope.org_id)
        .bind(&run_id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some((prompt_id, prompt_version, requested)) = open else {
            // An end without a start (or a second end): nothing to count.
            return Ok(());
        };
        sqlx::query("DELETE FROM analytics_open_runs WHERE org_id = $1 AND run_id = $2")
            .bind(&envelope.org_id)
            .bind(&run_id)
            .execute(&mut *conn)
            .await?;
        let model = if answered_by.is_empty() {
            requested
        } else {
            answered_by
        };
        let at = ms_from_timestamp(envelope.occurred_at.as_ref());
        for granularity in Granularity::ALL {
            let start = granularity.floor(at);
            let existing: Option<BucketRow> = sqlx::query_as(&format!(
                "SELECT {BUCKET_COLUMNS} FROM analytics_buckets
                 WHERE org_id = $1 AND granularity = $2 AND bucket_start_ms = $3
                   AND prompt_id = $4 AND prompt_version = $5 AND model = $6"
            ))
            .bind(&envelope.org_id)
            .bind(granularity.as_str())
            .bind(start)
            .bind(&prompt_id)
            .bind(prompt_version)
            .bind(&model)
            .fetch_optional(&mut *conn)
            .await?;
            let mut merged = match &existing {
                Some(row) => Totals::from_row(row).map_err(|e| sqlx::Error::Decode(e.into()))?,
                None => Totals::default(),
            };
            merged.merge(&totals);
            let encoded = merged.encode().map_err(|e| sqlx::Error::Encode(e.into()))?;
            sqlx::query(
                "INSERT INTO analytics_buckets (org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model,
                    runs, completed, failed, cancelled, errors, input_tokens, output_tokens, cached_input_tokens,
                    cost_nano_usd, latency, ttft)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
                 ON CONFLICT (org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model) DO UPDATE SET
                    runs = $7, completed = $8, failed = $9, cancelled = $10, errors = $11, input_tokens = $12,
                    output_tokens = $13, cached_input_tokens = $14, cost_nano_usd = $15, latency = $16, ttft = $17",
            )
            .bind(&envelope.org_id)
            .bind(granularity.as_str())
            .bind(start)
            .bind(&prompt_id)
            .bind(prompt_version)
            .bind(&model)
            .bind(to_i64(merged.runs))
            .bind(to_i64(merged.completed))
            .bind(to_i64(merged.failed))
            .bind(to_i64(merged.cancelled))
            .bind(encoded.errors)
            .bind(to_i64(merged.input_tokens))
            .bind(to_i64(merged.output_tokens))
            .bind(to_i64(merged.cached_input_tokens))
            .bind(merged.cost_nano_usd)
            .bind(encoded.latency)
            .bind(encoded.ttft)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for table in ["analytics_buckets", "analytics_open_runs"] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}
