//! The evaluation read model: one row per dataset and per evaluation run,
//! for the list APIs and for finding unfinished runs at start. Whole
//! datasets and runs are read from their aggregates.

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::{Migration, decode_error, to_i64, to_u64};
use promptops_platform::paging::{Cursor, ms_from_timestamp, split_page, timestamp_from_ms};
use promptops_platform::query::ListQuery;
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::evaluation::v1::{
    CaseScored, Dataset, DatasetCreated, DatasetVersionAdded, EvaluationRun, EvaluationRunFinished,
    EvaluationRunStarted, EvaluationRunStatus, ScorePoint,
};
use prost::Message as _;
use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::{datasets, evaluation_run};

pub const PROJECTION: &str = "evaluation";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "projection checkpoints",
        statements: &[promptops_eventlog::projection::CHECKPOINT_TABLE],
    },
    Migration {
        version: 2,
        name: "datasets and evaluation runs",
        statements: &[
            "CREATE TABLE datasets (
                org_id TEXT NOT NULL,
                dataset_id TEXT NOT NULL,
                name TEXT NOT NULL,
                description TEXT NOT NULL,
                version_count BIGINT NOT NULL,
                case_count BIGINT NOT NULL,
                actor_kind BIGINT NOT NULL,
                actor_id TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                PRIMARY KEY (org_id, dataset_id)
            )",
            "CREATE INDEX datasets_newest_first ON datasets (org_id, created_at_ms, dataset_id)",
            "CREATE TABLE evaluation_runs (
                org_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                name TEXT NOT NULL,
                dataset_id TEXT NOT NULL,
                dataset_version BIGINT NOT NULL,
                status BIGINT NOT NULL,
                total BIGINT NOT NULL,
                done BIGINT NOT NULL,
                failed BIGINT NOT NULL,
                actor_kind BIGINT NOT NULL,
                actor_id TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                PRIMARY KEY (org_id, run_id)
            )",
            "CREATE INDEX evaluation_runs_newest_first ON evaluation_runs (org_id, created_at_ms, run_id)",
            "CREATE INDEX evaluation_runs_by_status ON evaluation_runs (status)",
        ],
    },
    Migration {
        version: 3,
        name: "score history",
        statements: &[
            "CREATE TABLE evaluation_run_targets (
                org_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                target BIGINT NOT NULL,
                prompt_id TEXT NOT NULL,
                prompt_version BIGINT NOT NULL,
                model TEXT NOT NULL,
                PRIMARY KEY (org_id, run_id, target)
            )",
            "CREATE TABLE evaluation_scores (
                org_id TEXT NOT NULL,
                point_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                run_name TEXT NOT NULL,
                dataset_id TEXT NOT NULL,
                dataset_version BIGINT NOT NULL,
                prompt_id TEXT NOT NULL,
                prompt_version BIGINT NOT NULL,
                model TEXT NOT NULL,
                metric TEXT NOT NULL,
                count BIGINT NOT NULL,
                mean DOUBLE PRECISION NOT NULL,
                std_dev DOUBLE PRECISION NOT NULL,
                ci_low DOUBLE PRECISION NOT NULL,
                ci_high DOUBLE PRECISION NOT NULL,
                created_at_ms BIGINT NOT NULL,
                PRIMARY KEY (org_id, point_id)
            )",
            "CREATE INDEX evaluation_scores_by_prompt ON evaluation_scores (org_id, prompt_id, created_at_ms, point_id)",
        ],
    },
];

#[derive(Debug, Default)]
pub struct EvaluationProjection;

impl Projection for EvaluationProjection {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let envelope = &event.envelope;
        let payload = envelope.payload.as_slice();
        let org = envelope.org_id.as_str();
        let actor = envelope.actor.clone().unwrap_or_default();
        let at_ms = ms_from_timestamp(envelope.occurred_at.as_ref());
        match envelope.event_type.as_str() {
            datasets::CREATED => {
                let created = DatasetCreated::decode(payload).map_err(decode_error)?;
                sqlx::query(
                    "INSERT INTO datasets (org_id, dataset_id, name, description, version_count, case_count,
                        actor_kind, actor_id, created_at_ms)
                     VALUES ($1, $2, $3, $4, 0, 0, $5, $6, $7) ON CONFLICT (org_id, dataset_id) DO NOTHING",
                )
                .bind(org)
                .bind(&created.dataset_id)
                .bind(&created.name)
                .bind(&created.description)
                .bind(i64::from(actor.kind))
                .bind(&actor.id)
                .bind(at_ms)
                .execute(&mut *conn)
                .await?;
            }
            datasets::VERSION_ADDED => {
                let added = DatasetVersionAdded::decode(payload).map_err(decode_error)?;
                sqlx::query(
                    "UPDATE datasets SET version_count = $3, case_count = $4
                     WHERE org_id = $1 AND dataset_id = $2 AND version_count < $3",
                )
                .bind(org)
                .bind(&added.dataset_id)
                .bind(to_i64(added.version))
                .bind(to_i64(added.case_count))
                .execute(&mut *conn)
                .await?;
            }
            evaluation_run::STARTED => {
                let started = EvaluationRunStarted::decode(payload).map_err(decode_error)?;
                let total = started.case_ids.len() * started.targets.len();
                sqlx::query(
                    "INSERT INTO evaluation_runs (org_id, run_id, name, dataset_id, dataset_version, status, total,
                        done, failed, actor_kind, actor_id, created_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $9, $10) ON CONFLICT (org_id, run_id) DO NOTHING",
                )
                .bind(org)
                .bind(&started.run_id)
                .bind(&started.name)
                .bind(&started.dataset_id)
                .bind(to_i64(started.dataset_version))
                .bind(EvaluationRunStatus::Running as i64)
                .bind(to_i64(total as u64))
                .bind(i64::from(actor.kind))
                .bind(&actor.id)
                .bind(at_ms)
                .execute(&mut *conn)
                .await?;
                for (target, resolved) in started.targets.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO evaluation_run_targets (org_id, run_id, target, prompt_id, prompt_version, model)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (org_id, run_id, target) DO NOTHING",
                    )
                    .bind(org)
                    .bind(&started.run_id)
                    .bind(target as i64)
                    .bind(&resolved.prompt_id)
                    .bind(to_i64(resolved.prompt_version))
                    .bind(&resolved.model)
                    .execute(&mut *conn)
                    .await?;
                }
            }
            evaluation_run::CASE_SCORED => {
                let scored = CaseScored::decode(payload).map_err(decode_error)?;
                let failed = scored.result.as_ref().is_some_and(|r| !r.error.is_empty());
                sqlx::query(
                    "UPDATE evaluation_runs SET done = done + 1, failed = failed + $3 WHERE org_id = $1 AND run_id = $2",
                )
                .bind(org)
                .bind(&scored.run_id)
                .bind(i64::from(failed))
                .execute(&mut *conn)
                .await?;
            }
            evaluation_run::FINISHED => {
                let finished = EvaluationRunFinished::decode(payload).map_err(decode_error)?;
                sqlx::query("UPDATE evaluation_runs SET status = $3 WHERE org_id = $1 AND run_id = $2")
                    .bind(org)
                    .bind(&finished.run_id)
                    .bind(i64::from(finished.status))
                    .execute(&mut *conn)
                    .await?;
                if finished.status == EvaluationRunStatus::Completed as i32 {
                    record_scores(conn, org, &finished).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for table in [
            "datasets",
            "evaluation_runs",
            "evaluation_run_targets",
            "evaluation_scores",
        ] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

#[derive(Debug, FromRow)]
struct TargetRow {
    prompt_id: String,
    prompt_version: i64,
    model: String,
    run_name: String,
    dataset_id: String,
    dataset_version: i64,
    created_at_ms: i64,
}

/// One score point per aggregate of a completed run.
async fn record_scores(
    conn: &mut AnyConnection,
    org: &str,
    finished: &EvaluationRunFinished,
) -> Result<(), sqlx::Error> {
    for aggregate in &finished.aggregates {
        let target: Option<TargetRow> = sqlx::query_as(
            "SELECT t.prompt_id, t.prompt_version, t.model, r.name AS run_name, r.dataset_id, r.dataset_version,
                r.created_at_ms
             FROM evaluation_run_targets t JOIN evaluation_runs r ON r.org_id = t.org_id AND r.run_id = t.run_id
             WHERE t.org_id = $1 AND t.run_id = $2 AND t.target = $3",
        )
        .bind(org)
        .bind(&finished.run_id)
        .bind(i64::from(aggregate.target))
        .fetch_optional(&mut *conn)
        .await?;
        let Some(target) = target else { continue };
        let finished_at = if finished.finished_at_ms > 0 {
            finished.finished_at_ms
        } else {
            target.created_at_ms
        };
        sqlx::query(
            "INSERT INTO evaluation_scores (org_id, point_id, run_id, run_name, dataset_id, dataset_version,
                prompt_id, prompt_version, model, metric, count, mean, std_dev, ci_low, ci_high, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (org_id, point_id) DO NOTHING",
        )
        .bind(org)
        .bind(format!("{}/{}/{}", finished.run_id, aggregate.target, aggregate.metric))
        .bind(&finished.run_id)
        .bind(&target.run_name)
        .bind(&target.dataset_id)
        .bind(target.dataset_version)
        .bind(&target.prompt_id)
        .bind(target.prompt_version)
        .bind(&target.model)
        .bind(&aggregate.metric)
        .bind(to_i64(aggregate.count))
        .bind(aggregate.mean)
        .bind(aggregate.std_dev)
        .bind(aggregate.ci_low)
        .bind(aggregate.ci_high)
        .bind(finished_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

#[derive(Debug, FromRow)]
struct ScoreRow {
    point_id: String,
    run_id: String,
    run_name: String,
    dataset_id: String,
    dataset_version: i64,
    prompt_version: i64,
    model: String,
    metric: String,
    count: i64,
    mean: f64,
    std_dev: f64,
    ci_low: f64,
    ci_high: f64,
    created_at_ms: i64,
}

/// A page of a prompt's score points, newest first.
pub async fn score_history(
    pool: &AnyPool,
    org_id: &str,
    prompt_id: &str,
    prompt_version: Option<u64>,
    metric: Option<&str>,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<ScorePoint>, Option<Cursor>), sqlx::Error> {
    let mut q = ListQuery::new(
        "SELECT point_id, run_id, run_name, dataset_id, dataset_version, prompt_version, model, metric, count,
            mean, std_dev, ci_low, ci_high, created_at_ms FROM evaluation_scores WHERE org_id = $1"
            .to_owned(),
        org_id,
    );
    let p = q.bind(prompt_id.to_owned());
    q.push(&format!(" AND prompt_id = {p}"));
    if let Some(version) = prompt_version {
        let p = q.bind(to_i64(version));
        q.push(&format!(" AND prompt_version = {p}"));
    }
    if let Some(metric) = metric {
        let p = q.bind(metric.to_owned());
        q.push(&format!(" AND metric = {p}"));
    }
    q.newest_first_page("point_id", after, page_size);
    let rows: Vec<ScoreRow> = q.fetch_all::<ScoreRow>(pool).await?;
    let (rows, next) = split_page(rows, page_size, |r| Cursor {
        time_ms: r.created_at_ms,
        id: r.point_id.clone(),
    });
    let points = rows
        .into_iter()
        .map(|r| ScorePoint {
            run_id: r.run_id,
            run_name: r.run_name,
            dataset_id: r.dataset_id,
            dataset_version: to_u64(r.dataset_version),
            prompt_version: to_u64(r.prompt_version),
            model: r.model,
            metric: r.metric,
            count: to_u64(r.count),
            mean: r.mean,
            std_dev: r.std_dev,
            ci_low: r.ci_low,
            ci_high: r.ci_high,
            finished_at: Some(timestamp_from_ms(r.created_at_ms)),
        })
        .collect();
    Ok((points, next))
}

fn actor(kind: i64, id: String) -> Actor {
    Actor {
        kind: i32::try_from(kind).unwrap_or(ActorKind::Unspecified as i32),
        id,
    }
}

#[derive(Debug, FromRow)]
struct DatasetRow {
    dataset_id: String,
    name: String,
    description: String,
    actor_kind: i64,
    actor_id: String,
    created_at_ms: i64,
}

/// A page of an org's datasets (without versions), newest first.
pub async fn list_datasets(
    pool: &AnyPool,
    org_id: &str,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<Dataset>, Option<Cursor>), sqlx::Error> {
    let mut q = ListQuery::new(
        "SELECT dataset_id, name, description, actor_kind, actor_id, created_at_ms FROM datasets WHERE org_id = $1"
            .to_owned(),
        org_id,
    );
    q.newest_first_page("dataset_id", after, page_size);
    let rows: Vec<Dataset> = q
        .fetch_all::<DatasetRow>(pool)
        .await?
        .into_iter()
        .map(|r| Dataset {
            id: r.dataset_id,
            name: r.name,
            description: r.description,
            versions: Vec::new(),
            created_by: Some(actor(r.actor_kind, r.actor_id)),
            created_at: Some(timestamp_from_ms(r.created_at_ms)),
        })
        .collect();
    Ok(split_page(rows, page_size, |d| Cursor {
        time_ms: ms_from_timestamp(d.created_at.as_ref()),
        id: d.id.clone(),
    }))
}

#[derive(Debug, FromRow)]
struct RunRow {
    run_id: String,
    name: String,
    dataset_id: String,
    dataset_version: i64,
    status: i64,
    total: i64,
    done: i64,
    failed: i64,
    actor_kind: i64,
    actor_id: String,
    created_at_ms: i64,
}

/// A page of an org's evaluation runs (summaries), newest first.
pub async fn list_runs(
    pool: &AnyPool,
    org_id: &str,
    dataset_id: Option<&str>,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<EvaluationRun>, Option<Cursor>), sqlx::Error> {
    let mut q = ListQuery::new(
        "SELECT run_id, name, dataset_id, dataset_version, status, total, done, failed, actor_kind, actor_id,
            created_at_ms FROM evaluation_runs WHERE org_id = $1"
            .to_owned(),
        org_id,
    );
    if let Some(dataset_id) = dataset_id {
        let p = q.bind(dataset_id.to_owned());
        q.push(&format!(" AND dataset_id = {p}"));
    }
    q.newest_first_page("run_id", after, page_size);
    let rows: Vec<EvaluationRun> = q
        .fetch_all::<RunRow>(pool)
        .await?
        .into_iter()
        .map(|r| EvaluationRun {
            id: r.run_id,
            name: r.name,
            dataset_id: r.dataset_id,
            dataset_version: to_u64(r.dataset_version),
            status: i32::try_from(r.status).unwrap_or(0),
            total: to_u64(r.total),
            done: to_u64(r.done),
            failed: to_u64(r.failed),
            created_by: Some(actor(r.actor_kind, r.actor_id)),
            created_at: Some(timestamp_from_ms(r.created_at_ms)),
            ..Default::default()
        })
        .collect();
    Ok(split_page(rows, page_size, |r| Cursor {
        time_ms: ms_from_timestamp(r.created_at.as_ref()),
        id: r.id.clone(),
    }))
}

/// Every run still running, in any org: `(org_id, run_id)`.
pub async fn unfinished_runs(pool: &AnyPool) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT org_id, run_id FROM evaluation_runs WHERE status = $1 ORDER BY created_at_ms")
        .bind(EvaluationRunStatus::Running as i64)
        .fetch_all(pool)
        .await
}
