//! The audit trail projection and its queries.
//!
//! One entry per mutation event of every stream ([`crate::classify`]). The
//! projection runs once per stream (one consumer per stream: nats-server 2.9
//! has no multi-filter consumers), each with its own checkpoint, and chains
//! the entries per org and stream ([`crate::chain`]): the chain's head
//! (`audit_chains`) moves in the same transaction as the entry and the
//! checkpoint, so a replay yields the same rows and the same hashes.

use promptops_eventlog::projection::Projection;
use promptops_eventlog::{EventEnvelope, RecordedEvent};
use promptops_platform::db::{Migration, to_i64, to_u64};
use promptops_platform::errors::{FieldViolation, ServiceError};
use promptops_platform::paging::{Cursor, ms_from_timestamp, split_page, timestamp_from_ms};
use promptops_platform::query::ListQuery;
use promptops_proto::audit::v1::{AuditEntry, AuditFilter};
use promptops_proto::common::v1::{Actor, ActorKind, LogPosition};
use promptops_proto::identity::v1 as identity;
use sqlx::{AnyConnection, AnyPool, FromRow};

use crate::chain::{self, EntryContent, GENESIS, StoredEntry};
use crate::classify::{CANCELLED, FAILURE, SUCCESS, classify};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
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
    },
    // The chained trail replaces the first one: dropped and rebuilt by
    // replay (the checkpoint goes with it).
    Migration {
        version: 2,
        name: "hash-chained audit trail",
        statements: &[
            "DROP TABLE audit_entries",
            "DELETE FROM projection_checkpoints WHERE projection = 'audit_trail'",
            "CREATE TABLE audit_entries (
            org_id TEXT NOT NULL,
            chain TEXT NOT NULL,
            chain_sequence BIGINT NOT NULL,
            event_id TEXT NOT NULL UNIQUE,
            stream_sequence BIGINT NOT NULL,
            occurred_at_ms BIGINT NOT NULL,
            actor_kind BIGINT NOT NULL,
            actor_id TEXT NOT NULL,
            action TEXT NOT NULL,
            resource_type TEXT NOT NULL,
            resource_id TEXT NOT NULL,
            outcome TEXT NOT NULL,
            summary TEXT NOT NULL,
            summary_folded TEXT NOT NULL,
            correlation_id TEXT NOT NULL,
            trace_id TEXT NOT NULL,
            client_address TEXT NOT NULL,
            user_agent TEXT NOT NULL,
            previous_hash TEXT NOT NULL,
            hash TEXT NOT NULL,
            PRIMARY KEY (org_id, chain, chain_sequence)
        )",
            "CREATE INDEX audit_entries_by_time ON audit_entries (org_id, occurred_at_ms, event_id)",
            "CREATE INDEX audit_entries_by_actor ON audit_entries (org_id, actor_id, occurred_at_ms)",
            "CREATE INDEX audit_entries_by_action ON audit_entries (org_id, action, occurred_at_ms)",
            "CREATE INDEX audit_entries_by_resource ON audit_entries (org_id, resource_id, occurred_at_ms)",
            "CREATE TABLE audit_chains (
            org_id TEXT NOT NULL,
            chain TEXT NOT NULL,
            length BIGINT NOT NULL,
            head_hash TEXT NOT NULL,
            PRIMARY KEY (org_id, chain)
        )",
            "CREATE TABLE audit_checkpoints (
            org_id TEXT NOT NULL,
            chain TEXT NOT NULL,
            chain_sequence BIGINT NOT NULL,
            head_hash TEXT NOT NULL,
            signed_at_ms BIGINT NOT NULL,
            key_id TEXT NOT NULL,
            signature TEXT NOT NULL,
            PRIMARY KEY (org_id, chain, chain_sequence)
        )",
            // Who belongs to which org: failed logins (recorded per user) in
            // an org's compliance report.
            "CREATE TABLE audit_members (
            org_id TEXT NOT NULL,
            user_id TEXT NOT NULL,
            PRIMARY KEY (org_id, user_id)
        )",
        ],
    },
    Migration {
        version: 3,
        name: "audit retention per org",
        statements: &["CREATE TABLE audit_retention (
            org_id TEXT NOT NULL PRIMARY KEY,
            audit_days BIGINT NOT NULL,
            run_payload_days BIGINT NOT NULL
        )"],
    },
];

pub const PROJECTION: &str = "audit_trail";

/// On PostgreSQL, a trigram index turns a `text` search into an index
/// lookup instead of a scan of the org's entries. PostgreSQL-only (SQLite
/// scans the folded summaries, within target at a million entries) and
/// optional: without the `pg_trgm` extension (it ships with PostgreSQL;
/// creating it needs the CREATE privilege on the database) the same query
/// scans. Returns whether the index is there.
pub async fn create_postgres_text_index(pool: &AnyPool) -> bool {
    for statement in [
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "CREATE INDEX IF NOT EXISTS audit_entries_summary_trigrams ON audit_entries USING gin (summary_folded gin_trgm_ops)",
    ] {
        if let Err(e) = sqlx::query(statement).execute(pool).await {
            tracing::warn!(error = %e, statement, "no trigram index: text searches of the audit trail will scan");
            return false;
        }
    }
    true
}

#[derive(Debug, Default)]
pub struct AuditTrail;

impl Projection for AuditTrail {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        self.apply_batch(conn, &[event]).await
    }

    /// A batch in a few statements: each chain's head read once, the
    /// entries hashed in order in memory, written in multi-row inserts, and
    /// each head moved once (all in the runner's transaction).
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        append_entries(conn, events).await
    }

    /// A rebuild re-derives every chain from the log, so the checkpoints
    /// signed over the old rows go too; new ones are signed as it proceeds.
    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for table in [
            "audit_entries",
            "audit_chains",
            "audit_checkpoints",
            "audit_members",
        ] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

/// Rows per multi-row insert (× 20 columns, within both databases' limits
/// on bound parameters).
const ENTRIES_PER_STATEMENT: usize = 100;

/// A chain's head as the batch moves it: (length, head hash).
type Heads = std::collections::BTreeMap<(String, &'static str), (i64, String)>;

async fn append_entries(conn: &mut AnyConnection, events: &[&RecordedEvent]) -> Result<(), sqlx::Error> {
    let mut heads = Heads::new();
    let mut entries: Vec<(EntryContent, String, String)> = Vec::new();
    for event in events {
        let envelope = &event.envelope;
        track_members(conn, envelope).await?;
        track_retention(conn, envelope).await?;
        let Some(classified) = classify(envelope) else {
            continue;
        };
        let chain_name = event.context.stream_name();
        let key = (envelope.org_id.clone(), chain_name);
        if !heads.contains_key(&key) {
            let head: Option<(i64, String)> =
                sqlx::query_as("SELECT length, head_hash FROM audit_chains WHERE org_id = $1 AND chain = $2")
                    .bind(&envelope.org_id)
                    .bind(chain_name)
                    .fetch_optional(&mut *conn)
                    .await?;
            heads.insert(key.clone(), head.unwrap_or((0, GENESIS.to_owned())));
        }
        let Some((length, head_hash)) = heads.get_mut(&key) else {
            continue;
        };
        let actor = envelope.actor.clone().unwrap_or_default();
        let content = EntryContent {
            event_id: envelope.event_id.clone(),
            org_id: envelope.org_id.clone(),
            chain: chain_name.to_owned(),
            chain_sequence: to_u64(*length) + 1,
            stream_sequence: event.sequence,
            occurred_at_ms: ms_from_timestamp(envelope.occurred_at.as_ref()),
            actor_kind: i64::from(actor.kind),
            actor_id: actor.id,
            action: classified.action,
            resource_type: envelope.aggregate_type.clone(),
            resource_id: envelope.aggregate_id.clone(),
            outcome: classified.outcome.to_owned(),
            summary: classified.summary,
            correlation_id: envelope.correlation_id.clone(),
            trace_id: trace_id_of(&envelope.traceparent),
            client_address: classified.client_address,
            user_agent: classified.user_agent,
        };
        let hash = chain::entry_hash(&content, head_hash);
        let previous = std::mem::replace(head_hash, hash.clone());
        *length += 1;
        entries.push((content, previous, hash));
    }
    for chunk in entries.chunks(ENTRIES_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO audit_entries (org_id, chain, chain_sequence, event_id, stream_sequence, occurred_at_ms,
                actor_kind, actor_id, action, resource_type, resource_id, outcome, summary, correlation_id,
                trace_id, client_address, user_agent, previous_hash, hash, summary_folded)
             VALUES {}",
            promptops_platform::db::values_placeholders(conn, chunk.len(), 20)
        );
        let mut query = sqlx::query(&sql);
        for (content, previous_hash, hash) in chunk {
            query = query
                .bind(&content.org_id)
                .bind(&content.chain)
                .bind(to_i64(content.chain_sequence))
                .bind(&content.event_id)
                .bind(to_i64(content.stream_sequence))
                .bind(content.occurred_at_ms)
                .bind(content.actor_kind)
                .bind(&content.actor_id)
                .bind(&content.action)
                .bind(&content.resource_type)
                .bind(&content.resource_id)
                .bind(&content.outcome)
                .bind(&content.summary)
                .bind(&content.correlation_id)
                .bind(&content.trace_id)
                .bind(&content.client_address)
                .bind(&content.user_agent)
                .bind(previous_hash)
                .bind(hash)
                .bind(content.summary.to_lowercase());
        }
        query.execute(&mut *conn).await?;
    }
    for ((org_id, chain_name), (length, head_hash)) in &heads {
        sqlx::query(
            "INSERT INTO audit_chains (org_id, chain, length, head_hash) VALUES ($1, $2, $3, $4)
             ON CONFLICT (org_id, chain) DO UPDATE SET length = $3, head_hash = $4",
        )
        .bind(org_id)
        .bind(*chain_name)
        .bind(*length)
        .bind(head_hash)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn track_members(conn: &mut AnyConnection, envelope: &EventEnvelope) -> Result<(), sqlx::Error> {
    use prost::Message as _;
    let p = envelope.payload.as_slice();
    let (user_id, joined) = match envelope.event_type.as_str() {
        "promptops.identity.v1.MemberJoined" => match identity::MemberJoined::decode(p) {
            Ok(e) => (e.user_id, true),
            Err(_) => return Ok(()),
        },
        "promptops.identity.v1.MemberRemoved" => match identity::MemberRemoved::decode(p) {
            Ok(e) => (e.user_id, false),
            Err(_) => return Ok(()),
        },
        _ => return Ok(()),
    };
    let sql = if joined {
        "INSERT INTO audit_members (org_id, user_id) VALUES ($1, $2) ON CONFLICT (org_id, user_id) DO NOTHING"
    } else {
        "DELETE FROM audit_members WHERE org_id = $1 AND user_id = $2"
    };
    sqlx::query(sql)
        .bind(&envelope.org_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
}

async fn track_retention(conn: &mut AnyConnection, envelope: &EventEnvelope) -> Result<(), sqlx::Error> {
    use prost::Message as _;
    if envelope.event_type != "promptops.identity.v1.RetentionPolicySet" {
        return Ok(());
    }
    let Ok(policy) = identity::RetentionPolicySet::decode(envelope.payload.as_slice()) else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO audit_retention (org_id, audit_days, run_payload_days) VALUES ($1, $2, $3)
         ON CONFLICT (org_id) DO UPDATE SET audit_days = $2, run_payload_days = $3",
    )
    .bind(&envelope.org_id)
    .bind(i64::from(policy.audit_days))
    .bind(i64::from(policy.run_payload_days))
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// The trace id inside a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
pub fn trace_id_of(traceparent: &str) -> String {
    traceparent.split('-').nth(1).unwrap_or_default().to_owned()
}

pub const COLUMNS: &str = "org_id, chain, chain_sequence, event_id, stream_sequence, occurred_at_ms, actor_kind, actor_id, action, resource_type, resource_id, outcome, summary, correlation_id, trace_id, client_address, user_agent, previous_hash, hash";

#[derive(Debug, FromRow)]
pub struct EntryRow {
    org_id: String,
    chain: String,
    chain_sequence: i64,
    event_id: String,
    stream_sequence: i64,
    occurred_at_ms: i64,
    actor_kind: i64,
    actor_id: String,
    action: String,
    resource_type: String,
    resource_id: String,
    outcome: String,
    summary: String,
    correlation_id: String,
    trace_id: String,
    client_address: String,
    user_agent: String,
    previous_hash: String,
    hash: String,
}

impl From<EntryRow> for StoredEntry {
    fn from(row: EntryRow) -> Self {
        StoredEntry {
            content: EntryContent {
                event_id: row.event_id,
                org_id: row.org_id,
                chain: row.chain,
                chain_sequence: to_u64(row.chain_sequence),
                stream_sequence: to_u64(row.stream_sequence),
                occurred_at_ms: row.occurred_at_ms,
                actor_kind: row.actor_kind,
                actor_id: row.actor_id,
                action: row.action,
                resource_type: row.resource_type,
                resource_id: row.resource_id,
                outcome: row.outcome,
                summary: row.summary,
                correlation_id: row.correlation_id,
                trace_id: row.trace_id,
                client_address: row.client_address,
                user_agent: row.user_agent,
            },
            previous_hash: row.previous_hash,
            hash: row.hash,
        }
    }
}

impl From<StoredEntry> for AuditEntry {
    fn from(entry: StoredEntry) -> Self {
        let c = entry.content;
        AuditEntry {
            event_id: c.event_id,
            occurred_at: Some(timestamp_from_ms(c.occurred_at_ms)),
            actor: Some(Actor {
                kind: i32::try_from(c.actor_kind).unwrap_or(0),
                id: c.actor_id,
            }),
            action: c.action,
            resource_type: c.resource_type,
            resource_id: c.resource_id,
            summary: c.summary,
            correlation_id: c.correlation_id,
            trace_id: c.trace_id,
            position: Some(LogPosition {
                stream: c.chain,
                sequence: c.stream_sequence,
            }),
            outcome: c.outcome,
            client_address: c.client_address,
            user_agent: c.user_agent,
            chain_sequence: c.chain_sequence,
            hash: entry.hash,
            previous_hash: entry.previous_hash,
        }
    }
}

impl From<EntryRow> for AuditEntry {
    fn from(row: EntryRow) -> Self {
        StoredEntry::from(row).into()
    }
}

/// A validated [`AuditFilter`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub actor_kind: Option<i64>,
    pub actor_id: String,
    pub action_prefix: String,
    pub resource_type: String,
    pub resource_id: String,
    pub outcome: String,
    pub text: String,
}

const MAX_FILTER_TEXT: usize = 200;

impl EntryFilter {
    /// Every problem of `filter`, named by field under `prefix` (`filter.`).
    pub fn from_proto(filter: &AuditFilter, prefix: &str) -> Result<Self, ServiceError> {
        let mut problems = Vec::new();
        let time = |ts: Option<&prost_types::Timestamp>| ts.map(|t| ms_from_timestamp(Some(t)));
        let from_ms = time(filter.from.as_ref());
        let to_ms = time(filter.to.as_ref());
        if let (Some(from), Some(to)) = (from_ms, to_ms)
            && to <= from
        {
            problems.push(FieldViolation::new(
                format!("{prefix}to"),
                "must be after `from` (the range is from inclusive, to exclusive)",
            ));
        }
        let actor_kind = match ActorKind::try_from(filter.actor_kind) {
            Ok(ActorKind::Unspecified) => None,
            Ok(kind) => Some(kind as i64),
            Err(_) => {
                problems.push(FieldViolation::new(
                    format!("{prefix}actor_kind"),
                    "must be user, api_key or service",
                ));
                None
            }
        };
        for (field, value) in [
            ("actor_id", &filter.actor_id),
            ("action_prefix", &filter.action_prefix),
            ("resource_type", &filter.resource_type),
            ("resource_id", &filter.resource_id),
            ("text", &filter.text),
        ] {
            if value.len() > MAX_FILTER_TEXT {
                problems.push(FieldViolation::new(
                    format!("{prefix}{field}"),
                    format!("must be at most {MAX_FILTER_TEXT} bytes"),
                ));
            }
        }
        if !filter.outcome.is_empty() && ![SUCCESS, FAILURE, CANCELLED].contains(&filter.outcome.as_str()) {
            problems.push(FieldViolation::new(
                format!("{prefix}outcome"),
                "must be success, failure or cancelled",
            ));
        }
        if !problems.is_empty() {
            return Err(ServiceError::invalid(problems));
        }
        Ok(Self {
            from_ms,
            to_ms,
            actor_kind,
            actor_id: filter.actor_id.clone(),
            action_prefix: filter.action_prefix.clone(),
            resource_type: filter.resource_type.clone(),
            resource_id: filter.resource_id.clone(),
            outcome: filter.outcome.clone(),
            text: filter.text.clone(),
        })
    }

    /// `org_id`'s entries matching the filter, as a query to extend.
    fn query(&self, org_id: &str) -> ListQuery {
        let mut q = ListQuery::new(
            format!("SELECT {COLUMNS} FROM audit_entries WHERE org_id = $1"),
            org_id,
        );
        if let Some(from) = self.from_ms {
            let p = q.bind(from);
            q.push(&format!(" AND occurred_at_ms >= {p}"));
        }
        if let Some(to) = self.to_ms {
            let p = q.bind(to);
            q.push(&format!(" AND occurred_at_ms < {p}"));
        }
        if let Some(kind) = self.actor_kind {
            let p = q.bind(kind);
            q.push(&format!(" AND actor_kind = {p}"));
        }
        for (column, value) in [
            ("actor_id", &self.actor_id),
            ("resource_type", &self.resource_type),
            ("resource_id", &self.resource_id),
            ("outcome", &self.outcome),
        ] {
            if !value.is_empty() {
                let p = q.bind(value.clone());
                q.push(&format!(" AND {column} = {p}"));
            }
        }
        if !self.action_prefix.is_empty() {
            // An exact, case-sensitive, wildcard-free prefix test, read along
            // the newest-first index (a range on `action` would make the
            // planner sort every action after the prefix instead).
            let p = q.bind(self.action_prefix.clone());
            q.push(&format!(" AND substr(action, 1, length({p})) = {p}"));
        }
        if !self.text.is_empty() {
            // `summary_folded` is the summary lowercased when it was written.
            let pattern = format!("%{}%", escape_like(&self.text.to_lowercase()));
            let p = q.bind(pattern);
            q.push(&format!(" AND summary_folded LIKE {p} ESCAPE '\\'"));
        }
        q
    }
}

fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// A page of `org_id`'s entries matching `filter`, newest first.
pub async fn list(
    pool: &AnyPool,
    org_id: &str,
    filter: &EntryFilter,
    after: Option<&Cursor>,
    page_size: u32,
) -> Result<(Vec<AuditEntry>, Option<Cursor>), sqlx::Error> {
    let mut q = filter.query(org_id);
    q.newest_first_page_by("occurred_at_ms", "event_id", after, page_size);
    let rows: Vec<EntryRow> = q.fetch_all(pool).await?;
    let entries: Vec<AuditEntry> = rows.into_iter().map(AuditEntry::from).collect();
    Ok(split_page(entries, page_size, |e| Cursor {
        time_ms: ms_from_timestamp(e.occurred_at.as_ref()),
        id: e.event_id.clone(),
    }))
}

/// One batch of an export: entries matching `filter`, oldest first, after
/// `after` (`(occurred_at_ms, event_id)` of the last one sent).
pub async fn export_batch(
    pool: &AnyPool,
    org_id: &str,
    filter: &EntryFilter,
    after: Option<&(i64, String)>,
    limit: u32,
) -> Result<Vec<AuditEntry>, sqlx::Error> {
    let mut q = filter.query(org_id);
    if let Some((time, id)) = after {
        let t = q.bind(*time);
        let i = q.bind(id.clone());
        q.push(&format!(
            " AND (occurred_at_ms > {t} OR (occurred_at_ms = {t} AND event_id > {i}))"
        ));
    }
    let l = q.bind(i64::from(limit));
    q.push(&format!(" ORDER BY occurred_at_ms, event_id LIMIT {l}"));
    let rows: Vec<EntryRow> = q.fetch_all(pool).await?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// One chain's entries in `[from_sequence, ..)` (ascending), at most `limit`.
pub async fn chain_entries(
    pool: &AnyPool,
    org_id: &str,
    chain: &str,
    from_sequence: u64,
    limit: u32,
) -> Result<Vec<StoredEntry>, sqlx::Error> {
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_entries WHERE org_id = $1 AND chain = $2 AND chain_sequence >= $3
         ORDER BY chain_sequence LIMIT $4"
    ))
    .bind(org_id)
    .bind(chain)
    .bind(to_i64(from_sequence))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(StoredEntry::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_traceparent() {
        assert_eq!(
            trace_id_of("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(trace_id_of(""), "");
    }

    #[test]
    fn filters_name_every_problem() {
        let filter = AuditFilter {
            from: Some(timestamp_from_ms(2_000)),
            to: Some(timestamp_from_ms(1_000)),
            outcome: "maybe".into(),
            actor_kind: 42,
            text: "x".repeat(201),
            ..AuditFilter::default()
        };
        let err = EntryFilter::from_proto(&filter, "filter.").unwrap_err();
        let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            ["filter.to", "filter.actor_kind", "filter.text", "filter.outcome"]
        );
    }

    #[test]
    fn text_search_treats_wildcards_literally() {
        assert_eq!(escape_like("100%_off\\"), "100\\%\\_off\\\\");
    }
}
