//! The audit trail: one entry per event of every stream.
//!
//! The projection runs once per stream (one consumer per stream: nats-server
//! 2.9 has no multi-filter consumers), each with its own checkpoint, so a
//! rebuild replays each stream in its own order and yields the same rows.
//! Hash chaining, signed checkpoints, search and export come with the audit
//! issue; this is the projection they build on.

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::Migration;
use promptops_platform::paging::{Cursor, ms_from_timestamp, split_page, timestamp_from_ms};
use promptops_proto::audit::v1::AuditEntry;
use promptops_proto::common::v1::{Actor, LogPosition};
use sqlx::{AnyConnection, AnyPool, FromRow};

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "audit trail",
    statements: &[
        promptops_eventlog::projection::CHECKPOINT_TABLE,
        "CREATE TABLE audit_entries (
            event_id TEXT NOT NULL PRIMARY KEY,
            org_id TEXT NOT NULL,
            stream TEXT NOT NULL,
            stream_sequence BIGINT NOT NULL,
            occurred_at_ms BIGINT NOT NULL,
            actor_kind BIGINT NOT NULL,
            actor_id TEXT NOT NULL,
            action TEXT NOT NULL,
            resource_type TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            summary TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            trace_id TEXT NOT NULL
        )",
        "CREATE INDEX audit_entries_newest_first ON audit_entries (org_id, occurred_at_ms, event_id)",
    ],
}];

pub const PROJECTION: &str = "audit_trail";

#[derive(Debug, Default)]
pub struct AuditTrail;

impl Projection for AuditTrail {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let envelope = &event.envelope;
        let actor = envelope.actor.clone().unwrap_or_default();
        sqlx::query(
            "INSERT INTO audit_entries (event_id, org_id, stream, stream_sequence, occurred_at_ms,
                actor_kind, actor_id, action, resource_type, resource_id, summary, correlation_id, trace_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&envelope.event_id)
        .bind(&envelope.org_id)
        .bind(event.context.stream_name())
        .bind(i64::try_from(event.sequence).unwrap_or(i64::MAX))
        .bind(ms_from_timestamp(envelope.occurred_at.as_ref()))
        .bind(i64::from(actor.kind))
        .bind(&actor.id)
        .bind(action_of(&envelope.event_type))
        .bind(&envelope.aggregate_type)
        .bind(&envelope.aggregate_id)
        .bind(crate::summary::summarize(envelope))
        .bind(&envelope.correlation_id)
        .bind(trace_id_of(&envelope.traceparent))
        .execute(&mut *conn)
        .await
        .map(|_| ())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM audit_entries")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

/// `promptops.prompts.v1.PromptVersionCreated` → `prompt.version.created`.
pub fn action_of(event_type: &str) -> String {
    let name = event_type.rsplit('.').next().unwrap_or(event_type);
    let mut action = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                action.push('.');
            }
            action.extend(c.to_lowercase());
        } else {
            action.push(c);
        }
    }
    action
}

/// The trace id inside a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> String {
    traceparent.split('-').nth(1).unwrap_or_default().to_owned()
}

#[derive(Debug, FromRow)]
struct EntryRow {
    event_id: String,
    stream: String,
    stream_sequence: i64,
    occurred_at_ms: i64,
    actor_kind: i64,
    actor_id: String,
    action: String,
    resource_type: String,
    resource_id: String,
    summary: String,
    correlation_id: String,
    trace_id: String,
}

impl From<EntryRow> for AuditEntry {
    fn from(row: EntryRow) -> Self {
        AuditEntry {
            event_id: row.event_id,
            occurred_at: Some(timestamp_from_ms(row.occurred_at_ms)),
            actor: Some(Actor {
                kind: i32::try_from(row.actor_kind).unwrap_or(0),
                id: row.actor_id,
            }),
            action: row.action,
            resource_type: row.resource_type,
            resource_id: row.resource_id,
            summary: row.summary,
            correlation_id: row.correlation_id,
            trace_id: row.trace_id,
            position: Some(LogPosition {
                stream: row.stream,
                sequence: u64::try_from(row.stream_sequence).unwrap_or(0),
            }),
        }
    }
}

/// A page of `org_id`'s entries, newest first.
pub async fn list(
    pool: &AnyPool,
    org_id: &str,
    action_prefix: &str,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<AuditEntry>, Option<Cursor>), sqlx::Error> {
    const COLUMNS: &str = "event_id, stream, stream_sequence, occurred_at_ms, actor_kind, actor_id, action, resource_type, resource_id, summary, correlation_id, trace_id";
    // `substr` is a portable exact prefix match (LIKE would treat % and _ as
    // wildcards, and is case-insensitive on SQLite).
    let (after_ms, after_id) = after.map_or((i64::MAX, String::new()), |c| (c.time_ms, c.id.clone()));
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_entries
         WHERE org_id = $1 AND substr(action, 1, length($2)) = $2
           AND ($5 = 0 OR occurred_at_ms < $3 OR (occurred_at_ms = $3 AND event_id < $4))
         ORDER BY occurred_at_ms DESC, event_id DESC LIMIT $6"
    ))
    .bind(org_id)
    .bind(action_prefix)
    .bind(after_ms)
    .bind(after_id)
    .bind(i64::from(after.is_some()))
    .bind(i64::from(page_size) + 1)
    .fetch_all(pool)
    .await?;
    let entries: Vec<AuditEntry> = rows.into_iter().map(AuditEntry::from).collect();
    Ok(split_page(entries, page_size, |e| Cursor {
        time_ms: ms_from_timestamp(e.occurred_at.as_ref()),
        id: e.event_id.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_dotted_snake_case_of_the_event_name() {
        assert_eq!(action_of("promptops.prompts.v1.PromptCreated"), "prompt.created");
        assert_eq!(
            action_of("promptops.prompts.v1.PromptVersionCreated"),
            "prompt.version.created"
        );
        assert_eq!(action_of("Plain"), "plain");
    }

    #[test]
    fn trace_ids_come_from_traceparent() {
        assert_eq!(
            trace_id_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(trace_id_of(""), "");
    }
}
