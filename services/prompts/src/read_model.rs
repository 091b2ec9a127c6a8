//! The `prompt_catalog` read model: one row per prompt for browsing and
//! search, folded from the prompts stream by the projection runner.
//! (Reads of one prompt come from the log through [`crate::live`].)

use std::collections::BTreeMap;

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::Migration;
use promptops_platform::paging::{Cursor, ms_from_timestamp, split_page, timestamp_from_ms};
use promptops_platform::query::ListQuery;
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::prompts::v1::{Prompt, PromptVersion};
use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::diff::template_text;
use crate::domain::PromptEvent;
use crate::events::{AGGREGATE_TYPE, from_envelope};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    Migration {
        version: 2,
        name: "prompt catalog with versions, labels, tags and search",
        statements: &[
            "DROP TABLE prompts",
            "CREATE TABLE prompt_catalog (
            org_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            name TEXT NOT NULL,
            folder TEXT NOT NULL,
            description TEXT NOT NULL,
            tags TEXT NOT NULL,
            labels TEXT NOT NULL,
            latest_version BIGINT NOT NULL,
            archived BIGINT NOT NULL,
            search_details TEXT NOT NULL,
            search_template TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            created_by_kind BIGINT NOT NULL,
            created_by_id TEXT NOT NULL,
            updated_at_ms BIGINT NOT NULL,
            PRIMARY KEY (org_id, prompt_id)
        )",
            "CREATE INDEX prompt_catalog_newest_first ON prompt_catalog (org_id, created_at_ms, prompt_id)",
            "CREATE INDEX prompt_catalog_folder ON prompt_catalog (org_id, folder)",
            "CREATE TABLE prompt_tags (
            org_id TEXT NOT NULL,
            prompt_id TEXT NOT NULL,
            tag TEXT NOT NULL,
            PRIMARY KEY (org_id, tag, prompt_id)
        )",
        ],
    },
];

/// The projection's name: its consumer and checkpoint.
pub const PROJECTION: &str = "prompts_catalog";

#[derive(Debug, Default)]
pub struct CatalogProjection;

fn encode_err(e: impl std::error::Error + Send + Sync + 'static) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(e))
}

fn search_details(name: &str, description: &str, tags: &[String]) -> String {
    format!("{name}\n{description}\n{}", tags.join(" ")).to_lowercase()
}

fn search_template(version: Option<&PromptVersion>) -> String {
    version.map(template_text).unwrap_or_default().to_lowercase()
}

async fn replace_tags(
    conn: &mut AnyConnection,
    org_id: &str,
    prompt_id: &str,
    tags: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM prompt_tags WHERE org_id = $1 AND prompt_id = $2")
        .bind(org_id)
        .bind(prompt_id)
        .execute(&mut *conn)
        .await?;
    for tag in tags {
        sqlx::query(
            "INSERT INTO prompt_tags (org_id, prompt_id, tag) VALUES ($1, $2, $3)
             ON CONFLICT (org_id, tag, prompt_id) DO NOTHING",
        )
        .bind(org_id)
        .bind(prompt_id)
        .bind(tag)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Projection for CatalogProjection {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let envelope = &event.envelope;
        if envelope.aggregate_type != AGGREGATE_TYPE {
            return Ok(()); // e.g. the org's label policy
        }
        let decoded = from_envelope(envelope).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let org = envelope.org_id.as_str();
        let id = envelope.aggregate_id.as_str();
        let at = ms_from_timestamp(envelope.occurred_at.as_ref());
        match decoded {
            PromptEvent::Created(created) => {
                let state = crate::domain::evolve(Default::default(), &PromptEvent::Created(created.clone()));
                let actor = envelope.actor.clone().unwrap_or_default();
                let tags = serde_json::to_string(&created.tags).map_err(encode_err)?;
                sqlx::query(
                    "INSERT INTO prompt_catalog (org_id, prompt_id, name, folder, description, tags, labels,
                        latest_version, archived, search_details, search_template, created_at_ms,
                        created_by_kind, created_by_id, updated_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, '{}', 1, 0, $7, $8, $9, $10, $11, $9)
                     ON CONFLICT (org_id, prompt_id) DO NOTHING",
                )
                .bind(org)
                .bind(id)
                .bind(&created.name)
                .bind(&created.folder)
                .bind(&created.description)
                .bind(tags)
                .bind(search_details(&created.name, &created.description, &created.tags))
                .bind(search_template(state.latest()))
                .bind(at)
                .bind(i64::from(actor.kind))
                .bind(&actor.id)
                .execute(&mut *conn)
                .await?;
                replace_tags(conn, org, id, &created.tags).await?;
            }
            PromptEvent::VersionCreated(created) => {
                let number = created.version.as_ref().map_or(0, |v| v.number);
                sqlx::query(
                    "UPDATE prompt_catalog SET latest_version = $3, search_template = $4, updated_at_ms = $5
                     WHERE org_id = $1 AND prompt_id = $2 AND latest_version < $3",
                )
                .bind(org)
                .bind(id)
                .bind(i64::try_from(number).unwrap_or(i64::MAX))
                .bind(search_template(created.version.as_ref()))
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            PromptEvent::LabelMoved(_) | PromptEvent::LabelRemoved(_) => {
                let labels: Option<String> = sqlx::query_scalar(
                    "SELECT labels FROM prompt_catalog WHERE org_id = $1 AND prompt_id = $2",
                )
                .bind(org)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                let mut labels: BTreeMap<String, u64> = labels
                    .and_then(|l| serde_json::from_str(&l).ok())
                    .unwrap_or_default();
                match &decoded {
                    PromptEvent::LabelMoved(m) => {
                        labels.insert(m.label.clone(), m.version);
                    }
                    PromptEvent::LabelRemoved(r) => {
                        labels.remove(&r.label);
                    }
                    _ => {}
                }
                sqlx::query(
                    "UPDATE prompt_catalog SET labels = $3, updated_at_ms = $4 WHERE org_id = $1 AND prompt_id = $2",
                )
                .bind(org)
                .bind(id)
                .bind(serde_json::to_string(&labels).map_err(encode_err)?)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
            PromptEvent::DetailsChanged(changed) => {
                let name: Option<String> = sqlx::query_scalar(
                    "SELECT name FROM prompt_catalog WHERE org_id = $1 AND prompt_id = $2",
                )
                .bind(org)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
                sqlx::query(
                    "UPDATE prompt_catalog SET description = $3, tags = $4, search_details = $5, updated_at_ms = $6
                     WHERE org_id = $1 AND prompt_id = $2",
                )
                .bind(org)
                .bind(id)
                .bind(&changed.description)
                .bind(serde_json::to_string(&changed.tags).map_err(encode_err)?)
                .bind(search_details(
                    &name.unwrap_or_default(),
                    &changed.description,
                    &changed.tags,
                ))
                .bind(at)
                .execute(&mut *conn)
                .await?;
                replace_tags(conn, org, id, &changed.tags).await?;
            }
            PromptEvent::Archived(_) | PromptEvent::Restored(_) => {
                let archived = i64::from(matches!(decoded, PromptEvent::Archived(_)));
                sqlx::query(
                    "UPDATE prompt_catalog SET archived = $3, updated_at_ms = $4 WHERE org_id = $1 AND prompt_id = $2",
                )
                .bind(org)
                .bind(id)
                .bind(archived)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM prompt_tags").execute(&mut *conn).await?;
        sqlx::query("DELETE FROM prompt_catalog")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

#[derive(Debug, FromRow)]
struct CatalogRow {
    prompt_id: String,
    name: String,
    folder: String,
    description: String,
    tags: String,
    labels: String,
    latest_version: i64,
    archived: i64,
    created_at_ms: i64,
    created_by_kind: i64,
    created_by_id: String,
    updated_at_ms: i64,
}

impl From<CatalogRow> for Prompt {
    fn from(row: CatalogRow) -> Self {
        Prompt {
            prompt_id: row.prompt_id,
            name: row.name,
            description: row.description,
            folder: row.folder,
            tags: serde_json::from_str(&row.tags).unwrap_or_default(),
            labels: serde_json::from_str(&row.labels).unwrap_or_default(),
            latest_version: u64::try_from(row.latest_version).unwrap_or(0),
            archived: row.archived != 0,
            created_at: Some(timestamp_from_ms(row.created_at_ms)),
            created_by: Some(Actor {
                kind: i32::try_from(row.created_by_kind).unwrap_or(ActorKind::Unspecified as i32),
                id: row.created_by_id,
            }),
            updated_at: Some(timestamp_from_ms(row.updated_at_ms)),
        }
    }
}

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this folder (normalized), and below it when `recursive`.
    pub folder: Option<String>,
    pub recursive: bool,
    pub tag: Option<String>,
    /// Case-insensitive text in the name, description, tags or latest template.
    pub query: Option<String>,
    pub include_archived: bool,
}

/// `text` for a LIKE pattern with `\` as the escape.
fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// A page of `org_id`'s prompts matching `filter`, newest first, and the
/// next page's cursor.
pub async fn list(
    pool: &AnyPool,
    org_id: &str,
    filter: &Filter,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<Prompt>, Option<Cursor>), sqlx::Error> {
    let mut q = ListQuery::new(
        "SELECT prompt_id, name, folder, description, tags, labels, latest_version, archived, created_at_ms,
                created_by_kind, created_by_id, updated_at_ms
         FROM prompt_catalog c WHERE org_id = $1",
        org_id,
    );
    if !filter.include_archived {
        q.push(" AND archived = 0");
    }
    if let Some(folder) = &filter.folder {
        if !filter.recursive {
            let p = q.bind(folder.clone());
            q.push(&format!(" AND folder = {p}"));
        } else if !folder.is_empty() {
            let p = q.bind(folder.clone());
            let below = q.bind(format!("{}/%", like_escape(folder)));
            q.push(&format!(" AND (folder = {p} OR folder LIKE {below} ESCAPE '\\')"));
        }
    }
    if let Some(tag) = &filter.tag {
        let p = q.bind(tag.clone());
        q.push(&format!(
            " AND EXISTS (SELECT 1 FROM prompt_tags t WHERE t.org_id = c.org_id AND t.prompt_id = c.prompt_id AND t.tag = {p})"
        ));
    }
    if let Some(query) = &filter.query {
        let p = q.bind(format!("%{}%", like_escape(&query.to_lowercase())));
        q.push(&format!(
            " AND (search_details LIKE {p} ESCAPE '\\' OR search_template LIKE {p} ESCAPE '\\')"
        ));
    }
    q.newest_first_page("prompt_id", after, page_size);
    let rows: Vec<CatalogRow> = q.fetch_all(pool).await?;
    let prompts: Vec<Prompt> = rows.into_iter().map(Prompt::from).collect();
    Ok(split_page(prompts, page_size, |p| Cursor {
        time_ms: ms_from_timestamp(p.created_at.as_ref()),
        id: p.prompt_id.clone(),
    }))
}

/// The most folders and tags [`folders_and_tags`] returns.
pub const MAX_FOLDERS: usize = 5_000;
pub const MAX_TAGS: usize = 1_000;

/// Every folder and tag of `org_id`'s prompts with how many prompts each has
/// (folders: directly in it), sorted; and whether either list was cut short.
pub async fn folders_and_tags(
    pool: &AnyPool,
    org_id: &str,
    include_archived: bool,
) -> Result<(Vec<(String, i64)>, Vec<(String, i64)>, bool), sqlx::Error> {
    let archived = if include_archived {
        ""
    } else {
        " AND c.archived = 0"
    };
    let mut folders: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT c.folder, COUNT(*) FROM prompt_catalog c WHERE c.org_id = $1{archived}
         GROUP BY c.folder ORDER BY c.folder LIMIT {}",
        MAX_FOLDERS + 1
    ))
    .bind(org_id)
    .fetch_all(pool)
    .await?;
    let mut tags: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT t.tag, COUNT(*) FROM prompt_tags t JOIN prompt_catalog c
           ON c.org_id = t.org_id AND c.prompt_id = t.prompt_id
         WHERE t.org_id = $1{archived} GROUP BY t.tag ORDER BY t.tag LIMIT {}",
        MAX_TAGS + 1
    ))
    .bind(org_id)
    .fetch_all(pool)
    .await?;
    let truncated = folders.len() > MAX_FOLDERS || tags.len() > MAX_TAGS;
    folders.truncate(MAX_FOLDERS);
    tags.truncate(MAX_TAGS);
    Ok((folders, tags, truncated))
}

/// The ids of `org_id`'s prompts in `folder` and below (all when empty).
pub async fn ids_in_folder(
    pool: &AnyPool,
    org_id: &str,
    folder: &str,
    include_archived: bool,
) -> Result<Vec<String>, sqlx::Error> {
    let archived = if include_archived { "" } else { " AND archived = 0" };
    if folder.is_empty() {
        return sqlx::query_scalar(&format!(
            "SELECT prompt_id FROM prompt_catalog WHERE org_id = $1{archived} ORDER BY folder, name"
        ))
        .bind(org_id)
        .fetch_all(pool)
        .await;
    }
    sqlx::query_scalar(&format!(
        "SELECT prompt_id FROM prompt_catalog
         WHERE org_id = $1 AND (folder = $2 OR folder LIKE $3 ESCAPE '\\'){archived}
         ORDER BY folder, name"
    ))
    .bind(org_id)
    .bind(folder)
    .bind(format!("{}/%", like_escape(folder)))
    .fetch_all(pool)
    .await
}
