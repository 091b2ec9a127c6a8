//! The `prompts` read model: one row per prompt, folded from the prompts
//! stream by the projection runner, and the queries the API answers from it.

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::Migration;
use promptops_platform::paging::{Cursor, ms_from_timestamp, split_page, timestamp_from_ms};
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::prompts::v1::Prompt;
use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::domain::PromptEvent;
use crate::events::from_envelope;

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "prompts read model",
    statements: &[
        promptops_eventlog::projection::CHECKPOINT_TABLE,
        "CREATE TABLE prompts (
            org_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            name TEXT NOT NULL,
            description TEXT NOT NULL,
            folder TEXT NOT NULL,
            tags TEXT NOT NULL,
            template TEXT NOT NULL,
            latest_version BIGINT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            created_by_kind BIGINT NOT NULL,
            created_by_id TEXT NOT NULL,
            PRIMARY KEY (org_id, prompt_id)
        )",
        "CREATE INDEX prompts_newest_first ON prompts (org_id, created_at_ms, prompt_id)",
    ],
}];

/// The projection's name: its consumer and checkpoint.
pub const PROJECTION: &str = "prompts_read_model";

#[derive(Debug, Default)]
pub struct PromptsProjection;

impl Projection for PromptsProjection {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let envelope = &event.envelope;
        let decoded = from_envelope(envelope).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        match decoded {
            PromptEvent::Created(created) => {
                let actor = envelope.actor.clone().unwrap_or_default();
                let tags =
                    serde_json::to_string(&created.tags).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                sqlx::query(
                    "INSERT INTO prompts (org_id, prompt_id, name, description, folder, tags, template,
                        latest_version, created_at_ms, created_by_kind, created_by_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (org_id, prompt_id) DO NOTHING",
                )
                .bind(&envelope.org_id)
                .bind(&created.prompt_id)
                .bind(&created.name)
                .bind(&created.description)
                .bind(&created.folder)
                .bind(tags)
                .bind(&created.template)
                .bind(1_i64)
                .bind(ms_from_timestamp(envelope.occurred_at.as_ref()))
                .bind(i64::from(actor.kind))
                .bind(&actor.id)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM prompts")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

#[derive(Debug, FromRow)]
struct PromptRow {
    prompt_id: String,
    name: String,
    description: String,
    folder: String,
    tags: String,
    template: String,
    latest_version: i64,
    created_at_ms: i64,
    created_by_kind: i64,
    created_by_id: String,
}

impl From<PromptRow> for Prompt {
    fn from(row: PromptRow) -> Self {
        Prompt {
            prompt_id: row.prompt_id,
            name: row.name,
            description: row.description,
            folder: row.folder,
            tags: serde_json::from_str(&row.tags).unwrap_or_default(),
            template: row.template,
            latest_version: u64::try_from(row.latest_version).unwrap_or(0),
            created_at: Some(timestamp_from_ms(row.created_at_ms)),
            created_by: Some(Actor {
                kind: i32::try_from(row.created_by_kind).unwrap_or(ActorKind::Unspecified as i32),
                id: row.created_by_id,
            }),
        }
    }
}

const COLUMNS: &str = "prompt_id, name, description, folder, tags, template, latest_version, created_at_ms, created_by_kind, created_by_id";

/// One prompt of `org_id`, if it exists there.
pub async fn get(pool: &AnyPool, org_id: &str, prompt_id: &str) -> Result<Option<Prompt>, sqlx::Error> {
    let row: Option<PromptRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM prompts WHERE org_id = $1 AND prompt_id = $2"
    ))
    .bind(org_id)
    .bind(prompt_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Prompt::from))
}

/// A page of `org_id`'s prompts, newest first, and the next page's cursor.
pub async fn list(
    pool: &AnyPool,
    org_id: &str,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<Prompt>, Option<Cursor>), sqlx::Error> {
    let limit = i64::from(page_size) + 1;
    let rows: Vec<PromptRow> = match after {
        None => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM prompts WHERE org_id = $1
                 ORDER BY created_at_ms DESC, prompt_id DESC LIMIT $2"
            ))
            .bind(org_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
        Some(cursor) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM prompts WHERE org_id = $1
                   AND (created_at_ms < $2 OR (created_at_ms = $2 AND prompt_id < $3))
                 ORDER BY created_at_ms DESC, prompt_id DESC LIMIT $4"
            ))
            .bind(org_id)
            .bind(cursor.time_ms)
            .bind(&cursor.id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        }
    };
    let prompts: Vec<Prompt> = rows.into_iter().map(Prompt::from).collect();
    Ok(split_page(prompts, page_size, |p| Cursor {
        time_ms: ms_from_timestamp(p.created_at.as_ref()),
        id: p.prompt_id.clone(),
    }))
}
