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
use std::collections::{BTreeMap, HashMap};

use sqlx::{AnyConnection, FromRow, Row as _};

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

/// The dimensions of a run, from its `ExecutionStarted`.
#[derive(Debug, Clone)]
struct OpenRun {
    prompt_id: String,
    prompt_version: i64,
    model: String,
}

/// A run's end waiting to be counted.
struct End {
    org_id: String,
    run_id: String,
    totals: Totals,
    answered_by: String,
    at_ms: i64,
}

/// A bucket: org, granularity, start, prompt, version, model.
type BucketKey = (String, String, i64, String, i64, String);

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds a bucket's key columns, in table order.
fn bind_key<'q>(query: AnyQuery<'q>, key: &'q BucketKey) -> AnyQuery<'q> {
    let (org_id, granularity, start, prompt_id, prompt_version, model) = key;
    query
        .bind(org_id)
        .bind(granularity)
        .bind(*start)
        .bind(prompt_id)
        .bind(*prompt_version)
        .bind(model)
}

/// Rows per multi-row statement (× at most 17 columns, within both
/// databases' limits on bound parameters).
const ROWS_PER_STATEMENT: usize = 200;

impl Projection for Analytics {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        self.apply_batch(conn, &[event]).await
    }

    /// A batch in a few statements whatever its size: a run started and
    /// ended within the batch never touches `analytics_open_runs`; the
    /// open runs of earlier batches are read and deleted at once; each
    /// bucket the batch touches is read once and written once.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        apply_events(conn, events).await
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

async fn apply_events(conn: &mut AnyConnection, events: &[&RecordedEvent]) -> Result<(), sqlx::Error> {
    let mut opened: HashMap<(String, String), OpenRun> = HashMap::new();
    let mut counted: Vec<(OpenRun, End)> = Vec::new();
    let mut earlier: Vec<End> = Vec::new();
    for event in events {
        let envelope = &event.envelope;
        if envelope.event_type == "promptops.execution.v1.ExecutionStarted" {
            let Ok(started) = execution::ExecutionStarted::decode(envelope.payload.as_slice()) else {
                continue;
            };
            opened
                .entry((envelope.org_id.clone(), started.run_id))
                .or_insert(OpenRun {
                    prompt_id: started.prompt_id,
                    prompt_version: to_i64(started.prompt_version),
                    model: started.model,
                });
            continue;
        }
        let Some((run_id, totals, answered_by)) = end_of_run(envelope) else {
            continue;
        };
        let end = End {
            org_id: envelope.org_id.clone(),
            run_id,
            totals,
            answered_by,
            at_ms: ms_from_timestamp(envelope.occurred_at.as_ref()),
        };
        match opened.remove(&(end.org_id.clone(), end.run_id.clone())) {
            Some(open) => counted.push((open, end)),
            None => earlier.push(end),
        }
    }
    // Ends of runs started in earlier batches; an end without a start (or
    // a second end) finds nothing and counts nothing.
    let mut stored = take_open_runs(conn, &earlier).await?;
    for end in earlier {
        if let Some(open) = stored.remove(&(end.org_id.clone(), end.run_id.clone())) {
            counted.push((open, end));
        }
    }
    insert_open_runs(conn, opened).await?;
    let mut buckets: BTreeMap<BucketKey, Totals> = BTreeMap::new();
    for (open, end) in counted {
        let model = if end.answered_by.is_empty() {
            open.model
        } else {
            end.answered_by
        };
        for granularity in Granularity::ALL {
            let key = (
                end.org_id.clone(),
                granularity.as_str().to_owned(),
                granularity.floor(end.at_ms),
                open.prompt_id.clone(),
                open.prompt_version,
                model.clone(),
            );
            buckets.entry(key).or_default().merge(&end.totals);
        }
    }
    merge_buckets(conn, buckets).await
}

/// Reads and deletes the open runs these ends close.
async fn take_open_runs(
    conn: &mut AnyConnection,
    ends: &[End],
) -> Result<HashMap<(String, String), OpenRun>, sqlx::Error> {
    let mut found = HashMap::new();
    for chunk in ends.chunks(ROWS_PER_STATEMENT) {
        let keys = promptops_platform::db::values_placeholders(conn, chunk.len(), 2);
        let select = format!(
            "SELECT org_id, run_id, prompt_id, prompt_version, model FROM analytics_open_runs
             WHERE (org_id, run_id) IN (VALUES {keys})"
        );
        let mut query = sqlx::query_as::<_, (String, String, String, i64, String)>(&select);
        for end in chunk {
            query = query.bind(&end.org_id).bind(&end.run_id);
        }
        for (org_id, run_id, prompt_id, prompt_version, model) in query.fetch_all(&mut *conn).await? {
            found.insert(
                (org_id, run_id),
                OpenRun {
                    prompt_id,
                    prompt_version,
                    model,
                },
            );
        }
        let delete = format!("DELETE FROM analytics_open_runs WHERE (org_id, run_id) IN (VALUES {keys})");
        let mut query = sqlx::query(&delete);
        for end in chunk {
            query = query.bind(&end.org_id).bind(&end.run_id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(found)
}

/// Keeps the runs still open at the end of the batch for their ends.
async fn insert_open_runs(
    conn: &mut AnyConnection,
    opened: HashMap<(String, String), OpenRun>,
) -> Result<(), sqlx::Error> {
    let opened: Vec<_> = opened.into_iter().collect();
    for chunk in opened.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO analytics_open_runs (org_id, run_id, prompt_id, prompt_version, model)
             VALUES {} ON CONFLICT (org_id, run_id) DO NOTHING",
            promptops_platform::db::values_placeholders(conn, chunk.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for ((org_id, run_id), open) in chunk {
            query = query
                .bind(org_id)
                .bind(run_id)
                .bind(&open.prompt_id)
                .bind(open.prompt_version)
                .bind(&open.model);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Adds each bucket's totals to its row: one read and one write per chunk
/// of buckets.
async fn merge_buckets(
    conn: &mut AnyConnection,
    buckets: BTreeMap<BucketKey, Totals>,
) -> Result<(), sqlx::Error> {
    let buckets: Vec<_> = buckets.into_iter().collect();
    for chunk in buckets.chunks(ROWS_PER_STATEMENT) {
        let select = format!(
            "SELECT org_id, {BUCKET_COLUMNS} FROM analytics_buckets
             WHERE (org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model) IN (VALUES {})",
            promptops_platform::db::values_placeholders(conn, chunk.len(), 6)
        );
        let mut query = sqlx::query(&select);
        for (key, _) in chunk {
            query = bind_key(query, key);
        }
        let mut existing = HashMap::new();
        for row in query.fetch_all(&mut *conn).await? {
            let org_id: String = row.try_get("org_id")?;
            let bucket = BucketRow::from_row(&row)?;
            let totals = Totals::from_row(&bucket).map_err(|e| sqlx::Error::Decode(e.into()))?;
            existing.insert(
                (
                    org_id,
                    bucket.granularity,
                    bucket.bucket_start_ms,
                    bucket.prompt_id,
                    bucket.prompt_version,
                    bucket.model,
                ),
                totals,
            );
        }
        let upsert = format!(
            "INSERT INTO analytics_buckets (org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model,
                runs, completed, failed, cancelled, errors, input_tokens, output_tokens, cached_input_tokens,
                cost_nano_usd, latency, ttft)
             VALUES {}
             ON CONFLICT (org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model) DO UPDATE SET
                runs = excluded.runs, completed = excluded.completed, failed = excluded.failed,
                cancelled = excluded.cancelled, errors = excluded.errors, input_tokens = excluded.input_tokens,
                output_tokens = excluded.output_tokens, cached_input_tokens = excluded.cached_input_tokens,
                cost_nano_usd = excluded.cost_nano_usd, latency = excluded.latency, ttft = excluded.ttft",
            promptops_platform::db::values_placeholders(conn, chunk.len(), 17)
        );
        let mut query = sqlx::query(&upsert);
        for (key, totals) in chunk {
            let mut merged = existing.remove(key).unwrap_or_default();
            merged.merge(totals);
            let encoded = merged.encode().map_err(|e| sqlx::Error::Encode(e.into()))?;
            query = bind_key(query, key)
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
                .bind(encoded.ttft);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use promptops_eventlog::{Context, EventEnvelope};
    use promptops_platform::paging::timestamp_from_ms;

    use super::*;

    fn event(sequence: u64, run: &str, event_type: &str, payload: Vec<u8>, at_ms: i64) -> RecordedEvent {
        RecordedEvent {
            context: Context::Execution,
            sequence,
            subject: String::new(),
            envelope: EventEnvelope {
                event_id: format!("e{sequence}"),
                event_type: format!("promptops.execution.v1.{event_type}"),
                org_id: if run.starts_with('b') { "beta" } else { "acme" }.into(),
                aggregate_type: "run".into(),
                aggregate_id: run.into(),
                occurred_at: Some(timestamp_from_ms(at_ms)),
                payload,
                ..EventEnvelope::default()
            },
        }
    }

    /// Runs of two orgs and two models over two minutes, ends interleaved
    /// with other runs' starts; a failed one, a cancelled one, a second end
    /// and an end without a start (neither counted).
    fn history() -> Vec<RecordedEvent> {
        let t0 = 1_800_000_000_000;
        let mut events = Vec::new();
        let mut push = |run: &str, event_type: &str, payload: Vec<u8>, at: i64| {
            let sequence = events.len() as u64 + 1;
            events.push(event(sequence, run, event_type, payload, at));
        };
        for i in 0..12_i64 {
            let run = if i % 4 == 3 {
                format!("b{i}")
            } else {
                format!("a{i}")
            };
            let model = if i % 2 == 0 { "mock/echo" } else { "openai/gpt-5" };
            let started = execution::ExecutionStarted {
                run_id: run.clone(),
                prompt_id: "p1".into(),
                prompt_version: 1 + (i as u64 % 2),
                model: model.into(),
                ..Default::default()
            };
            push(&run, "ExecutionStarted", started.encode_to_vec(), t0 + i * 10_000);
            let at = t0 + i * 10_000 + 500;
            match i % 6 {
                4 => push(
                    &run,
                    "ExecutionFailed",
                    execution::ExecutionFailed {
                        run_id: run.clone(),
                        error_class: "provider-error".into(),
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    at,
                ),
                5 => push(
                    &run,
                    "ExecutionCancelled",
                    execution::ExecutionCancelled {
                        run_id: run.clone(),
                        cost_nano_usd: 7,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                    at,
                ),
                _ => {
                    let completed = execution::ExecutionCompleted {
                        run_id: run.clone(),
                        model: model.into(),
                        cost_nano_usd: 1_000 + i,
                        latency_us: 1_000 * (i as u64 + 1),
                        time_to_first_token_us: 500,
                        ..Default::default()
                    };
                    push(&run, "ExecutionCompleted", completed.encode_to_vec(), at);
                    if i == 2 {
                        push(&run, "ExecutionCompleted", completed.encode_to_vec(), at + 1);
                    }
                }
            }
        }
        let orphan = execution::ExecutionCompleted {
            run_id: "a-orphan".into(),
            ..Default::default()
        };
        push("a-orphan", "ExecutionCompleted", orphan.encode_to_vec(), t0);
        events
    }

    async fn applied_in(batches: &[usize]) -> (Vec<(String, String, i64, String, i64, i64, i64)>, i64) {
        let (db, _dir) = crate::test_database().await;
        let events = history();
        let refs: Vec<&RecordedEvent> = events.iter().collect();
        let mut rest = refs.as_slice();
        let mut sizes = batches.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).min(rest.len());
            let (batch, after) = rest.split_at(size);
            let mut tx = db.begin().await.unwrap();
            Analytics.apply_batch(&mut tx, batch).await.unwrap();
            tx.commit().await.unwrap();
            rest = after;
        }
        let rows = sqlx::query_as(
            "SELECT org_id, granularity, bucket_start_ms, model, runs, failed + cancelled, cost_nano_usd
             FROM analytics_buckets ORDER BY org_id, granularity, bucket_start_ms, model, prompt_version",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let open: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM analytics_open_runs")
            .fetch_one(&db)
            .await
            .unwrap();
        (rows, open)
    }

    #[tokio::test]
    async fn a_batch_counts_exactly_what_one_event_at_a_time_counts() {
        let (one_by_one, open) = applied_in(&[1]).await;
        assert_eq!(open, 0, "every started run has ended");
        let runs: i64 = one_by_one.iter().filter(|r| r.1 == "day").map(|r| r.4).sum();
        assert_eq!(runs, 12, "a second end and an end without a start count nothing");
        for batches in [&[256][..], &[2], &[3, 1, 5], &[7]] {
            assert_eq!(
                applied_in(batches).await,
                (one_by_one.clone(), 0),
                "batches of {batches:?}"
            );
        }
    }
}
