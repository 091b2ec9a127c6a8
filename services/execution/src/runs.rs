//! The `runs` read model: one row per run, folded from `EVT_EXECUTION`; the
//! history API reads it.

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::{Migration, decode_error, to_i64, to_u64};
use promptops_platform::paging::{Cursor, ms_from_timestamp, split_page, timestamp_from_ms};
use promptops_platform::query::ListQuery;
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::execution::v1::{
    Conversation, ConversationStarted, ExecutionCancelled, ExecutionCompleted, ExecutionFailed,
    ExecutionStarted, Run, RunStatus, TurnStarted, Usage,
};
use prost::Message as _;
use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::conversation;
use crate::events::{CANCELLED, COMPLETED, FAILED, STARTED};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "projection checkpoints",
        statements: &[promptops_eventlog::projection::CHECKPOINT_TABLE],
    },
    Migration {
        version: 2,
        name: "runs",
        statements: &[
            "CREATE TABLE runs (
                org_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                status BIGINT NOT NULL,
                prompt_id TEXT NOT NULL,
                prompt_version BIGINT NOT NULL,
                label TEXT NOT NULL,
                model TEXT NOT NULL,
                output TEXT NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cached_input_tokens BIGINT NOT NULL,
                estimated BIGINT NOT NULL,
                cost_nano_usd BIGINT NOT NULL,
                latency_us BIGINT NOT NULL,
                ttft_us BIGINT NOT NULL,
                error TEXT NOT NULL,
                finish_reason TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                actor_kind BIGINT NOT NULL,
                actor_id TEXT NOT NULL,
                trace_id TEXT NOT NULL,
                PRIMARY KEY (org_id, run_id)
            )",
            "CREATE INDEX runs_newest_first ON runs (org_id, created_at_ms, run_id)",
            "CREATE INDEX runs_by_prompt ON runs (org_id, prompt_id, prompt_version, created_at_ms)",
        ],
    },
    Migration {
        version: 3,
        name: "orgs with a model catalog",
        statements: &["CREATE TABLE catalog_orgs (org_id TEXT NOT NULL PRIMARY KEY)"],
    },
    Migration {
        version: 4,
        name: "conversations",
        statements: &[
            "CREATE TABLE conversations (
                org_id TEXT NOT NULL,
                conversation_id TEXT NOT NULL,
                title TEXT NOT NULL,
                model TEXT NOT NULL,
                turn_count BIGINT NOT NULL,
                actor_kind BIGINT NOT NULL,
                actor_id TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                updated_at_ms BIGINT NOT NULL,
                PRIMARY KEY (org_id, conversation_id)
            )",
            "CREATE INDEX conversations_newest_first ON conversations (org_id, created_at_ms, conversation_id)",
        ],
    },
    Migration {
        version: 5,
        name: "run variables",
        statements: &["ALTER TABLE runs ADD COLUMN variables TEXT NOT NULL DEFAULT '{}'"],
    },
    Migration {
        version: 6,
        name: "run payload retention",
        statements: &[
            "ALTER TABLE runs ADD COLUMN payload_pruned BIGINT NOT NULL DEFAULT 0",
            "CREATE TABLE run_retention (org_id TEXT NOT NULL PRIMARY KEY, days BIGINT NOT NULL)",
        ],
    },
];

pub const PROJECTION: &str = "runs";

#[derive(Debug, Default)]
pub struct RunsProjection;

/// The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
fn trace_id(traceparent: &str) -> &str {
    traceparent.split('-').nth(1).unwrap_or_default()
}

impl Projection for RunsProjection {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        self.apply_batch(conn, &[event]).await
    }

    /// A run started in the batch is inserted once with its end already
    /// applied, in multi-row inserts; ends of runs started earlier update
    /// their rows; catalog and conversation events are applied in order.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        apply_runs(conn, events).await
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM catalog_orgs")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM conversations")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM runs")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

/// A run's row as its start writes it (and, within a batch, its end).
#[derive(Debug)]
struct NewRun {
    org_id: String,
    row: RunRow,
}

/// How a run ends.
enum End {
    Completed(ExecutionCompleted),
    Failed(ExecutionFailed),
    Cancelled(ExecutionCancelled),
}

impl End {
    fn decode(event_type: &str, payload: &[u8]) -> Result<Option<Self>, sqlx::Error> {
        Ok(match event_type {
            COMPLETED => Some(End::Completed(
                ExecutionCompleted::decode(payload).map_err(decode_error)?,
            )),
            FAILED => Some(End::Failed(
                ExecutionFailed::decode(payload).map_err(decode_error)?,
            )),
            CANCELLED => Some(End::Cancelled(
                ExecutionCancelled::decode(payload).map_err(decode_error)?,
            )),
            _ => None,
        })
    }

    fn run_id(&self) -> &str {
        match self {
            End::Completed(e) => &e.run_id,
            End::Failed(e) => &e.run_id,
            End::Cancelled(e) => &e.run_id,
        }
    }

    /// The end applied to a row not yet written (what [`Self::update`]
    /// does to a written one).
    fn apply_to(&self, row: &mut RunRow) {
        match self {
            End::Completed(done) => {
                let usage = done.usage.unwrap_or_default();
                row.status = RunStatus::Completed as i64;
                row.output.clone_from(&done.output);
                row.input_tokens = to_i64(usage.input_tokens);
                row.output_tokens = to_i64(usage.output_tokens);
                row.cached_input_tokens = to_i64(usage.cached_input_tokens);
                row.estimated = i64::from(usage.estimated);
                row.cost_nano_usd = done.cost_nano_usd;
                row.latency_us = to_i64(done.latency_us);
                row.ttft_us = to_i64(done.time_to_first_token_us);
                row.finish_reason.clone_from(&done.finish_reason);
                if !done.model.is_empty() {
                    row.model.clone_from(&done.model);
                }
            }
            End::Failed(failed) => {
                row.status = RunStatus::Failed as i64;
                row.error = format!("{}: {}", failed.error_class, failed.message);
                row.latency_us = to_i64(failed.latency_us);
            }
            End::Cancelled(cancelled) => {
                let usage = cancelled.usage.unwrap_or_default();
                row.status = RunStatus::Cancelled as i64;
                row.output.clone_from(&cancelled.partial_output);
                row.output_tokens = to_i64(usage.output_tokens);
                row.cost_nano_usd = cancelled.cost_nano_usd;
                row.latency_us = to_i64(cancelled.latency_us);
                row.estimated = i64::from(usage.estimated);
            }
        }
    }

    /// The end of a run written in an earlier batch.
    async fn update(&self, conn: &mut AnyConnection, org: &str) -> Result<(), sqlx::Error> {
        match self {
            End::Completed(done) => {
                let usage = done.usage.unwrap_or_default();
                sqlx::query(
                    "UPDATE runs SET status = $3, output = $4, input_tokens = $5, output_tokens = $6,
                        cached_input_tokens = $7, estimated = $8, cost_nano_usd = $9, latency_us = $10,
                        ttft_us = $11, finish_reason = $12,
                        model = CASE WHEN $13 = '' THEN model ELSE $13 END
                     WHERE org_id = $1 AND run_id = $2",
                )
                .bind(org)
                .bind(&done.run_id)
                .bind(RunStatus::Completed as i64)
                .bind(&done.output)
                .bind(to_i64(usage.input_tokens))
                .bind(to_i64(usage.output_tokens))
                .bind(to_i64(usage.cached_input_tokens))
                .bind(i64::from(usage.estimated))
                .bind(done.cost_nano_usd)
                .bind(to_i64(done.latency_us))
                .bind(to_i64(done.time_to_first_token_us))
                .bind(&done.finish_reason)
                .bind(&done.model)
                .execute(&mut *conn)
                .await?;
            }
            End::Failed(failed) => {
                sqlx::query(
                    "UPDATE runs SET status = $3, error = $4, latency_us = $5 WHERE org_id = $1 AND run_id = $2",
                )
                .bind(org)
                .bind(&failed.run_id)
                .bind(RunStatus::Failed as i64)
                .bind(format!("{}: {}", failed.error_class, failed.message))
                .bind(to_i64(failed.latency_us))
                .execute(&mut *conn)
                .await?;
            }
            End::Cancelled(cancelled) => {
                let usage = cancelled.usage.unwrap_or_default();
                sqlx::query(
                    "UPDATE runs SET status = $3, output = $4, output_tokens = $5, cost_nano_usd = $6,
                        latency_us = $7, estimated = $8
                     WHERE org_id = $1 AND run_id = $2",
                )
                .bind(org)
                .bind(&cancelled.run_id)
                .bind(RunStatus::Cancelled as i64)
                .bind(&cancelled.partial_output)
                .bind(to_i64(usage.output_tokens))
                .bind(cancelled.cost_nano_usd)
                .bind(to_i64(cancelled.latency_us))
                .bind(i64::from(usage.estimated))
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }
}

/// Rows per multi-row insert (× 22 columns, within both databases' limits
/// on bound parameters).
const RUNS_PER_STATEMENT: usize = 100;

async fn apply_runs(conn: &mut AnyConnection, events: &[&RecordedEvent]) -> Result<(), sqlx::Error> {
    let mut fresh: Vec<NewRun> = Vec::new();
    let mut index: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
    for event in events {
        let envelope = &event.envelope;
        let payload = envelope.payload.as_slice();
        let org = envelope.org_id.as_str();
        if envelope.aggregate_type == crate::catalog::AGGREGATE_TYPE {
            // The health checker visits every org with a catalog.
            sqlx::query("INSERT INTO catalog_orgs (org_id) VALUES ($1) ON CONFLICT (org_id) DO NOTHING")
                .bind(org)
                .execute(&mut *conn)
                .await?;
            continue;
        }
        if envelope.aggregate_type == conversation::AGGREGATE_TYPE {
            apply_conversation(conn, event).await?;
            continue;
        }
        if envelope.event_type == STARTED {
            let started = ExecutionStarted::decode(payload).map_err(decode_error)?;
            let key = (org.to_owned(), started.run_id.clone());
            if index.contains_key(&key) {
                continue;
            }
            let actor = envelope.actor.clone().unwrap_or_default();
            index.insert(key, fresh.len());
            fresh.push(NewRun {
                org_id: org.to_owned(),
                row: RunRow {
                    status: RunStatus::Running as i64,
                    prompt_version: to_i64(started.prompt_version),
                    input_tokens: to_i64(started.input_tokens_counted),
                    output_tokens: 0,
                    cached_input_tokens: 0,
                    estimated: 1,
                    cost_nano_usd: 0,
                    latency_us: 0,
                    ttft_us: 0,
                    output: String::new(),
                    error: String::new(),
                    finish_reason: String::new(),
                    created_at_ms: ms_from_timestamp(envelope.occurred_at.as_ref()),
                    actor_kind: i64::from(actor.kind),
                    actor_id: actor.id,
                    trace_id: trace_id(&envelope.traceparent).to_owned(),
                    variables: serde_json::to_string(&started.variables).unwrap_or_else(|_| "{}".to_owned()),
                    run_id: started.run_id,
                    prompt_id: started.prompt_id,
                    label: started.label,
                    model: started.model,
                },
            });
            continue;
        }
        let Some(end) = End::decode(&envelope.event_type, payload)? else {
            continue;
        };
        match index.get(&(org.to_owned(), end.run_id().to_owned())) {
            Some(&i) => end.apply_to(&mut fresh[i].row),
            None => end.update(conn, org).await?,
        }
    }
    for chunk in fresh.chunks(RUNS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO runs (org_id, run_id, status, prompt_id, prompt_version, label, model, output,
                input_tokens, output_tokens, cached_input_tokens, estimated, cost_nano_usd, latency_us,
                ttft_us, error, finish_reason, created_at_ms, actor_kind, actor_id, trace_id, variables)
             VALUES {} ON CONFLICT (org_id, run_id) DO NOTHING",
            promptops_platform::db::values_placeholders(conn, chunk.len(), 22)
        );
        let mut query = sqlx::query(&sql);
        for NewRun { org_id, row: run } in chunk {
            query = query
                .bind(org_id)
                .bind(&run.run_id)
                .bind(run.status)
                .bind(&run.prompt_id)
                .bind(run.prompt_version)
                .bind(&run.label)
                .bind(&run.model)
                .bind(&run.output)
                .bind(run.input_tokens)
                .bind(run.output_tokens)
                .bind(run.cached_input_tokens)
                .bind(run.estimated)
                .bind(run.cost_nano_usd)
                .bind(run.latency_us)
                .bind(run.ttft_us)
                .bind(&run.error)
                .bind(&run.finish_reason)
                .bind(run.created_at_ms)
                .bind(run.actor_kind)
                .bind(&run.actor_id)
                .bind(&run.trace_id)
                .bind(&run.variables);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// The conversations table follows its aggregate's events.
async fn apply_conversation(conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
    let envelope = &event.envelope;
    let payload = envelope.payload.as_slice();
    let at = ms_from_timestamp(envelope.occurred_at.as_ref());
    match envelope.event_type.as_str() {
        conversation::STARTED => {
            let started = ConversationStarted::decode(payload).map_err(decode_error)?;
            let actor = envelope.actor.clone().unwrap_or_default();
            sqlx::query(
                "INSERT INTO conversations (org_id, conversation_id, title, model, turn_count, actor_kind,
                    actor_id, created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, 0, $5, $6, $7, $7)
                 ON CONFLICT (org_id, conversation_id) DO NOTHING",
            )
            .bind(&envelope.org_id)
            .bind(&envelope.aggregate_id)
            .bind(&started.title)
            .bind(&started.model)
            .bind(i64::from(actor.kind))
            .bind(&actor.id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        conversation::TURN_STARTED => {
            let turn = TurnStarted::decode(payload).map_err(decode_error)?;
            sqlx::query(
                "UPDATE conversations SET model = $3, turn_count = $4, updated_at_ms = $5
                 WHERE org_id = $1 AND conversation_id = $2",
            )
            .bind(&envelope.org_id)
            .bind(&envelope.aggregate_id)
            .bind(&turn.model)
            .bind(i64::from(turn.number))
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        conversation::TURN_ENDED => {
            sqlx::query(
                "UPDATE conversations SET updated_at_ms = $3 WHERE org_id = $1 AND conversation_id = $2",
            )
            .bind(&envelope.org_id)
            .bind(&envelope.aggregate_id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        _ => {}
    }
    Ok(())
}

#[derive(Debug, FromRow)]
struct ConversationRow {
    conversation_id: String,
    title: String,
    model: String,
    turn_count: i64,
    actor_kind: i64,
    actor_id: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// A page of an org's conversations (without turns), newest first.
pub async fn list_conversations(
    pool: &AnyPool,
    org_id: &str,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<Conversation>, Option<Cursor>), sqlx::Error> {
    let mut q = ListQuery::new(
        "SELECT conversation_id, title, model, turn_count, actor_kind, actor_id, created_at_ms, updated_at_ms
         FROM conversations WHERE org_id = $1"
            .to_owned(),
        org_id,
    );
    q.newest_first_page("conversation_id", after, page_size);
    let conversations: Vec<Conversation> = q
        .fetch_all::<ConversationRow>(pool)
        .await?
        .into_iter()
        .map(|r| Conversation {
            id: r.conversation_id,
            title: r.title,
            model: r.model,
            turn_count: u32::try_from(r.turn_count).unwrap_or(0),
            created_by: Some(Actor {
                kind: i32::try_from(r.actor_kind).unwrap_or(ActorKind::Unspecified as i32),
                id: r.actor_id,
            }),
            created_at: Some(timestamp_from_ms(r.created_at_ms)),
            updated_at: Some(timestamp_from_ms(r.updated_at_ms)),
            ..Default::default()
        })
        .collect();
    Ok(split_page(conversations, page_size, |c| Cursor {
        time_ms: ms_from_timestamp(c.created_at.as_ref()),
        id: c.id.clone(),
    }))
}

#[derive(Debug, FromRow)]
struct RunRow {
    run_id: String,
    status: i64,
    prompt_id: String,
    prompt_version: i64,
    label: String,
    model: String,
    output: String,
    input_tokens: i64,
    output_tokens: i64,
    cached_input_tokens: i64,
    estimated: i64,
    cost_nano_usd: i64,
    latency_us: i64,
    ttft_us: i64,
    error: String,
    finish_reason: String,
    created_at_ms: i64,
    actor_kind: i64,
    actor_id: String,
    trace_id: String,
    variables: String,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Self {
        Run {
            run_id: r.run_id,
            status: i32::try_from(r.status).unwrap_or(0),
            prompt_id: r.prompt_id,
            prompt_version: to_u64(r.prompt_version),
            label: r.label,
            model: r.model,
            output: r.output,
            usage: Some(Usage {
                input_tokens: to_u64(r.input_tokens),
                output_tokens: to_u64(r.output_tokens),
                cached_input_tokens: to_u64(r.cached_input_tokens),
                estimated: r.estimated != 0,
                // The history keeps cache reads; the ledger keeps writes too.
                cache_write_input_tokens: 0,
            }),
            cost_nano_usd: r.cost_nano_usd,
            latency_us: to_u64(r.latency_us),
            time_to_first_token_us: to_u64(r.ttft_us),
            error: r.error,
            created_at: Some(timestamp_from_ms(r.created_at_ms)),
            actor: Some(Actor {
                kind: i32::try_from(r.actor_kind).unwrap_or(ActorKind::Unspecified as i32),
                id: r.actor_id,
            }),
            trace_id: r.trace_id,
            finish_reason: r.finish_reason,
            variables: serde_json::from_str(&r.variables).unwrap_or_default(),
        }
    }
}

const COLUMNS: &str =
    "run_id, status, prompt_id, prompt_version, label, model, output, input_tokens, output_tokens,
    cached_input_tokens, estimated, cost_nano_usd, latency_us, ttft_us, error, finish_reason, created_at_ms,
    actor_kind, actor_id, trace_id, variables";

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub prompt_id: Option<String>,
    pub prompt_version: Option<u64>,
    pub model: Option<String>,
    pub status: Option<RunStatus>,
}

pub async fn get(pool: &AnyPool, org_id: &str, run_id: &str) -> Result<Option<Run>, sqlx::Error> {
    let row: Option<RunRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM runs WHERE org_id = $1 AND run_id = $2"
    ))
    .bind(org_id)
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Run::from))
}

/// A page of runs, newest first.
pub async fn list(
    pool: &AnyPool,
    org_id: &str,
    filter: &RunFilter,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<Run>, Option<Cursor>), sqlx::Error> {
    let mut q = ListQuery::new(format!("SELECT {COLUMNS} FROM runs WHERE org_id = $1"), org_id);
    if let Some(prompt_id) = &filter.prompt_id {
        let p = q.bind(prompt_id.clone());
        q.push(&format!(" AND prompt_id = {p}"));
    }
    if let Some(version) = filter.prompt_version {
        let p = q.bind(to_i64(version));
        q.push(&format!(" AND prompt_version = {p}"));
    }
    if let Some(model) = &filter.model {
        let p = q.bind(model.clone());
        q.push(&format!(" AND model = {p}"));
    }
    if let Some(status) = filter.status {
        let p = q.bind(status as i64);
        q.push(&format!(" AND status = {p}"));
    }
    q.newest_first_page("run_id", after, page_size);
    let runs: Vec<Run> = q
        .fetch_all::<RunRow>(pool)
        .await?
        .into_iter()
        .map(Run::from)
        .collect();
    Ok(split_page(runs, page_size, |r| Cursor {
        time_ms: ms_from_timestamp(r.created_at.as_ref()),
        id: r.run_id.clone(),
    }))
}

#[cfg(test)]
mod batch_tests {
    use promptops_eventlog::{Context, EventEnvelope};
    use promptops_platform::config::DatabaseConfig;
    use promptops_platform::paging::timestamp_from_ms;

    use super::*;

    fn event(sequence: u64, run: &str, event_type: &str, payload: Vec<u8>) -> RecordedEvent {
        RecordedEvent {
            context: Context::Execution,
            sequence,
            subject: String::new(),
            envelope: EventEnvelope {
                event_id: format!("e{sequence}"),
                event_type: event_type.into(),
                org_id: "acme".into(),
                aggregate_type: crate::events::AGGREGATE_TYPE.into(),
                aggregate_id: run.into(),
                occurred_at: Some(timestamp_from_ms(1_800_000_000_000 + sequence as i64)),
                payload,
                ..EventEnvelope::default()
            },
        }
    }

    /// Nine runs: completed (one by a fallback), failed, cancelled, one
    /// still running; an end without a start changes nothing.
    fn history() -> Vec<RecordedEvent> {
        let mut events = Vec::new();
        let mut push = |run: &str, event_type: &str, payload: Vec<u8>| {
            let sequence = events.len() as u64 + 1;
            events.push(event(sequence, run, event_type, payload));
        };
        for i in 0..9_u64 {
            let run = format!("r{i}");
            let started = ExecutionStarted {
                run_id: run.clone(),
                model: "mock/echo".into(),
                input_tokens_counted: 10 + i,
                ..Default::default()
            };
            push(&run, STARTED, started.encode_to_vec());
            match i % 4 {
                0 => push(
                    &run,
                    COMPLETED,
                    ExecutionCompleted {
                        run_id: run.clone(),
                        output: format!("out {i}"),
                        model: if i == 4 { "mock/fast".into() } else { String::new() },
                        usage: Some(Usage {
                            input_tokens: 10 + i,
                            output_tokens: i,
                            ..Default::default()
                        }),
                        cost_nano_usd: 100 + i as i64,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
                1 => push(
                    &run,
                    FAILED,
                    ExecutionFailed {
                        run_id: run.clone(),
                        error_class: "provider-error".into(),
                        message: "boom".into(),
                        latency_us: 5,
                    }
                    .encode_to_vec(),
                ),
                2 => push(
                    &run,
                    CANCELLED,
                    ExecutionCancelled {
                        run_id: run.clone(),
                        partial_output: "par".into(),
                        cost_nano_usd: 3,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                ),
                _ => {}
            }
        }
        let orphan = ExecutionCompleted {
            run_id: "orphan".into(),
            ..Default::default()
        };
        push("orphan", COMPLETED, orphan.encode_to_vec());
        events
    }

    async fn rows_after(batch: usize) -> Vec<(String, i64, String, String, i64, i64, String)> {
        let dir = tempfile::tempdir().unwrap();
        let db = promptops_platform::db::open(
            &DatabaseConfig::Sqlite {
                data_dir: dir.path().to_owned(),
            },
            "execution",
            MIGRATIONS,
        )
        .await
        .unwrap();
        let events = history();
        let refs: Vec<&RecordedEvent> = events.iter().collect();
        for chunk in refs.chunks(batch) {
            let mut tx = db.begin().await.unwrap();
            RunsProjection.apply_batch(&mut tx, chunk).await.unwrap();
            tx.commit().await.unwrap();
        }
        sqlx::query_as(
            "SELECT run_id, status, model, output, input_tokens, cost_nano_usd, error FROM runs ORDER BY run_id",
        )
        .fetch_all(&db)
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_batch_writes_what_one_event_at_a_time_writes() {
        let one_by_one = rows_after(1).await;
        assert_eq!(one_by_one.len(), 9, "{one_by_one:?}");
        assert_eq!(one_by_one[4].2, "mock/fast", "the model that answered");
        assert_eq!(one_by_one[1].6, "provider-error: boom");
        assert_eq!(one_by_one[3].1, RunStatus::Running as i64);
        for batch in [2, 3, 64] {
            assert_eq!(rows_after(batch).await, one_by_one, "batches of {batch}");
        }
    }
}
