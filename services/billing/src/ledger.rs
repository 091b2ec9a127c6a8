//! The usage ledger: one line per run, folded from the execution stream.
//!
//! A run's line is written when it starts (status `running`, with its
//! prompt, version, model and who ran it) and completed by its terminal
//! event (status, the answering model, tokens, the prices it was run at and
//! its cost); both are idempotent on the run, so a redelivered event changes
//! nothing and a line is never doubled. Only terminal lines are the ledger;
//! reconciliation ([`crate::reconcile`]) proves they match the log.
//!
//! Two more read models live here: the org's API keys (from the identity
//! stream: budgets and projects may only name keys that exist, and a key's
//! runs are attributed to the member who created it) and the budget
//! definitions (from the billing stream, for the alert checker).

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::{Migration, Placeholders, to_i64, to_u64};
use promptops_platform::paging::{ms_from_timestamp, timestamp_from_ms};
use promptops_proto::billing::v1::{BudgetSet, LedgerLine};
use promptops_proto::common::v1::{ActorKind, TokenPrices};
use promptops_proto::execution::v1::{
    ExecutionCancelled, ExecutionCompleted, ExecutionFailed, ExecutionStarted,
};
use prost::Message as _;
use sqlx::{AnyConnection, FromRow};

pub const PROJECTION: &str = "usage_ledger";
pub const DIRECTORY: &str = "billing_directory";

const STARTED: &str = "promptops.execution.v1.ExecutionStarted";
const COMPLETED: &str = "promptops.execution.v1.ExecutionCompleted";
const FAILED: &str = "promptops.execution.v1.ExecutionFailed";
const CANCELLED: &str = "promptops.execution.v1.ExecutionCancelled";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "projection checkpoints",
        statements: &[promptops_eventlog::projection::CHECKPOINT_TABLE],
    },
    Migration {
        version: 2,
        name: "usage ledger, API keys, budgets, alerts",
        statements: &[
            "CREATE TABLE ledger_lines (
                org_id TEXT NOT NULL,
                run_id TEXT NOT NULL,
                status TEXT NOT NULL,
                event_id TEXT NOT NULL,
                model TEXT NOT NULL,
                prompt_id TEXT NOT NULL,
                prompt_version BIGINT NOT NULL,
                user_id TEXT NOT NULL,
                api_key_id TEXT NOT NULL,
                input_tokens BIGINT NOT NULL,
                output_tokens BIGINT NOT NULL,
                cached_input_tokens BIGINT NOT NULL,
                cache_write_tokens BIGINT NOT NULL,
                input_price BIGINT NOT NULL,
                output_price BIGINT NOT NULL,
                cached_input_price BIGINT NOT NULL,
                cache_write_price BIGINT NOT NULL,
                priced BIGINT NOT NULL,
                cost_nano_usd BIGINT NOT NULL,
                estimated BIGINT NOT NULL,
                started_at_ms BIGINT NOT NULL,
                ended_at_ms BIGINT NOT NULL,
                day TEXT NOT NULL,
                PRIMARY KEY (org_id, run_id)
            )",
            "CREATE INDEX ledger_by_end ON ledger_lines (org_id, ended_at_ms, run_id)",
            "CREATE TABLE billing_api_keys (
                org_id TEXT NOT NULL,
                key_id TEXT NOT NULL,
                created_by TEXT NOT NULL,
                revoked BIGINT NOT NULL,
                PRIMARY KEY (org_id, key_id)
            )",
            "CREATE TABLE billing_budgets (
                org_id TEXT NOT NULL,
                budget_id TEXT NOT NULL,
                budget BYTEA NOT NULL,
                PRIMARY KEY (org_id, budget_id)
            )",
            "CREATE TABLE billing_projects (
                org_id TEXT NOT NULL,
                name TEXT NOT NULL,
                api_keys TEXT NOT NULL,
                PRIMARY KEY (org_id, name)
            )",
            "CREATE TABLE billing_alerts (
                alert_id TEXT NOT NULL PRIMARY KEY,
                org_id TEXT NOT NULL,
                kind TEXT NOT NULL,
                budget_id TEXT NOT NULL,
                percent BIGINT NOT NULL,
                day TEXT NOT NULL,
                message TEXT NOT NULL,
                event BYTEA NOT NULL,
                raised_at_ms BIGINT NOT NULL,
                published BIGINT NOT NULL
            )",
            "CREATE INDEX billing_alerts_newest ON billing_alerts (org_id, raised_at_ms)",
        ],
    },
];

/// `YYYY-MM-DD` (UTC) of a time in ms.
pub fn day_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let d = t.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The usage ledger over `EVT_EXECUTION`.
#[derive(Debug, Clone, Copy)]
pub struct UsageLedger;

/// What a terminal event says about a run.
struct Ended {
    status: &'static str,
    model: Option<String>,
    usage: promptops_proto::execution::v1::Usage,
    prices: Option<TokenPrices>,
    cost: i64,
}

fn ended(event_type: &str, payload: &[u8]) -> Option<Ended> {
    match event_type {
        COMPLETED => ExecutionCompleted::decode(payload).ok().map(|e| Ended {
            status: "completed",
            model: Some(e.model).filter(|m| !m.is_empty()),
            usage: e.usage.unwrap_or_default(),
            prices: e.prices,
            cost: e.cost_nano_usd,
        }),
        CANCELLED => ExecutionCancelled::decode(payload).ok().map(|e| Ended {
            status: "cancelled",
            model: None,
            usage: e.usage.unwrap_or_default(),
            prices: e.prices,
            cost: e.cost_nano_usd,
        }),
        FAILED => ExecutionFailed::decode(payload).ok().map(|_| Ended {
            status: "failed",
            model: None,
            usage: Default::default(),
            prices: None,
            cost: 0,
        }),
        _ => None,
    }
}

/// A run's start, as its line is first written.
struct Start {
    org_id: String,
    run_id: String,
    model: String,
    prompt_id: String,
    prompt_version: i64,
    user_id: String,
    api_key_id: String,
    input_tokens: i64,
    at_ms: i64,
}

/// A run's end, completing its line.
struct End {
    org_id: String,
    run_id: String,
    event_id: String,
    at_ms: i64,
    end: Ended,
}

enum Change {
    Start(Start),
    End(End),
}

fn change(event: &RecordedEvent) -> Result<Option<Change>, sqlx::Error> {
    let envelope = &event.envelope;
    if envelope.aggregate_type != "run" {
        return Ok(None);
    }
    let at_ms = ms_from_timestamp(envelope.occurred_at.as_ref());
    if envelope.event_type == STARTED {
        let started = ExecutionStarted::decode(envelope.payload.as_slice())
            .map_err(promptops_platform::db::decode_error)?;
        let actor = envelope.actor.clone().unwrap_or_default();
        let (user_id, api_key_id) = match actor.kind() {
            ActorKind::ApiKey => (String::new(), actor.id),
            ActorKind::User => (actor.id, String::new()),
            _ => (String::new(), String::new()),
        };
        return Ok(Some(Change::Start(Start {
            org_id: envelope.org_id.clone(),
            run_id: envelope.aggregate_id.clone(),
            model: started.model,
            prompt_id: started.prompt_id,
            prompt_version: to_i64(started.prompt_version),
            user_id,
            api_key_id,
            input_tokens: to_i64(started.input_tokens_counted),
            at_ms,
        })));
    }
    Ok(ended(&envelope.event_type, &envelope.payload).map(|end| {
        Change::End(End {
            org_id: envelope.org_id.clone(),
            run_id: envelope.aggregate_id.clone(),
            event_id: envelope.event_id.clone(),
            at_ms,
            end,
        })
    }))
}

const LINE_INSERT: &str =
    "INSERT INTO ledger_lines (org_id, run_id, status, event_id, model, prompt_id, prompt_version,
    user_id, api_key_id, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens,
    input_price, output_price, cached_input_price, cache_write_price, priced, cost_nano_usd,
    estimated, started_at_ms, ended_at_ms, day) VALUES ";

/// Rows per statement (at most 19 parameters each: within both databases'
/// limits on bound parameters).
const ROWS_PER_STATEMENT: usize = 500;

/// Writes starts (a line `running`, with who ran it: for an API key, the
/// member who created it) and then ends (completing a `running` line, or
/// writing the line when its start is missing): two multi-row statements.
async fn write(conn: &mut AnyConnection, changes: Vec<Change>) -> Result<(), sqlx::Error> {
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for change in changes {
        match change {
            Change::Start(s) => starts.push(s),
            // One end per run (a second would be a second terminal event).
            Change::End(e) if seen.insert((e.org_id.clone(), e.run_id.clone())) => ends.push(e),
            Change::End(_) => {}
        }
    }
    for chunk in starts.chunks(ROWS_PER_STATEMENT) {
        let mut p = Placeholders::new(conn);
        let mut sql = String::from(LINE_INSERT);
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            // org, run, 'running', '', model, prompt, version; who ran it (the
            // key's creator, else the user); key, input tokens, … the start.
            let (org, run, model, prompt, version) = (p.param(), p.param(), p.param(), p.param(), p.param());
            let (key_org, key, user, api_key) = (p.param(), p.param(), p.param(), p.param());
            let (input, at) = (p.param(), p.param());
            sql.push_str(&format!(
                "({org}, {run}, 'running', '', {model}, {prompt}, {version},
                  COALESCE((SELECT created_by FROM billing_api_keys WHERE org_id = {key_org} AND key_id = {key}), {user}),
                  {api_key}, {input}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, {at}, 0, '')"
            ));
        }
        sql.push_str(" ON CONFLICT (org_id, run_id) DO NOTHING");
        let mut query = sqlx::query(&sql);
        for s in chunk {
            query = query
                .bind(&s.org_id)
                .bind(&s.run_id)
                .bind(&s.model)
                .bind(&s.prompt_id)
                .bind(s.prompt_version)
                .bind(&s.org_id)
                .bind(&s.api_key_id)
                .bind(&s.user_id)
                .bind(&s.api_key_id)
                .bind(s.input_tokens)
                .bind(s.at_ms);
        }
        query.execute(&mut *conn).await?;
    }
    for chunk in ends.chunks(ROWS_PER_STATEMENT) {
        let mut p = Placeholders::new(conn);
        let mut sql = String::from(LINE_INSERT);
        for i in 0..chunk.len() {
            if i > 0 {
                sql.push_str(", ");
            }
            // org, run, status, event, model; tokens ×4, prices ×4, priced,
            // cost, estimated; the end time (as start and end) and its day.
            let fields: Vec<String> = (0..19).map(|_| p.param()).collect();
            sql.push_str(&format!(
                "({}, '', 0, '', '', {})",
                fields[..5].join(", "),
                fields[5..].join(", ")
            ));
        }
        sql.push_str(
            " ON CONFLICT (org_id, run_id) DO UPDATE SET
                status = excluded.status, event_id = excluded.event_id,
                model = CASE WHEN excluded.model = '' THEN ledger_lines.model ELSE excluded.model END,
                input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,
                cached_input_tokens = excluded.cached_input_tokens, cache_write_tokens = excluded.cache_write_tokens,
                input_price = excluded.input_price, output_price = excluded.output_price,
                cached_input_price = excluded.cached_input_price, cache_write_price = excluded.cache_write_price,
                priced = excluded.priced, cost_nano_usd = excluded.cost_nano_usd, estimated = excluded.estimated,
                ended_at_ms = excluded.ended_at_ms, day = excluded.day
             WHERE ledger_lines.status = 'running'",
        );
        let mut query = sqlx::query(&sql);
        for e in chunk {
            let prices = e.end.prices.unwrap_or_default();
            let usage = &e.end.usage;
            query = query
                .bind(&e.org_id)
                .bind(&e.run_id)
                .bind(e.end.status)
                .bind(&e.event_id)
                .bind(e.end.model.clone().unwrap_or_default())
                .bind(to_i64(usage.input_tokens))
                .bind(to_i64(usage.output_tokens))
                .bind(to_i64(usage.cached_input_tokens))
                .bind(to_i64(usage.cache_write_input_tokens))
                .bind(prices.input_per_mtok)
                .bind(prices.output_per_mtok)
                .bind(prices.cached_input_per_mtok)
                .bind(prices.cache_write_per_mtok)
                .bind(i64::from(e.end.prices.is_some()))
                .bind(e.end.cost)
                .bind(i64::from(usage.estimated))
                .bind(e.at_ms)
                .bind(e.at_ms)
                .bind(day_of(e.at_ms));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Projection for UsageLedger {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        self.apply_batch(conn, &[event]).await
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        let mut changes = Vec::with_capacity(events.len());
        for event in events {
            if let Some(change) = change(event)? {
                changes.push(change);
            }
        }
        write(conn, changes).await
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM ledger_lines")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

/// The API keys (identity stream) and budget definitions (billing stream).
#[derive(Debug, Clone, Copy)]
pub struct Directory;

impl Projection for Directory {
    fn name(&self) -> &'static str {
        DIRECTORY
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let e = &event.envelope;
        match e.event_type.as_str() {
            "promptops.identity.v1.ApiKeyCreated" => {
                let created_by = e
                    .actor
                    .as_ref()
                    .filter(|a| a.kind() == ActorKind::User)
                    .map(|a| a.id.clone())
                    .unwrap_or_default();
                sqlx::query(
                    "INSERT INTO billing_api_keys (org_id, key_id, created_by, revoked) VALUES ($1, $2, $3, 0)
                     ON CONFLICT (org_id, key_id) DO NOTHING",
                )
                .bind(&e.org_id)
                .bind(&e.aggregate_id)
                .bind(created_by)
                .execute(&mut *conn)
                .await?;
            }
            "promptops.identity.v1.ApiKeyRevoked" => {
                sqlx::query("UPDATE billing_api_keys SET revoked = 1 WHERE org_id = $1 AND key_id = $2")
                    .bind(&e.org_id)
                    .bind(&e.aggregate_id)
                    .execute(&mut *conn)
                    .await?;
            }
            promptops_account::account::BUDGET_SET => {
                let set =
                    BudgetSet::decode(e.payload.as_slice()).map_err(promptops_platform::db::decode_error)?;
                let Some(budget) = &set.budget else { return Ok(()) };
                sqlx::query(
                    "INSERT INTO billing_budgets (org_id, budget_id, budget) VALUES ($1, $2, $3)
                     ON CONFLICT (org_id, budget_id) DO UPDATE SET budget = $3",
                )
                .bind(&e.org_id)
                .bind(&budget.id)
                .bind(e.payload.clone())
                .execute(&mut *conn)
                .await?;
            }
            promptops_account::account::PROJECT_SET => {
                let set = promptops_proto::billing::v1::ProjectSet::decode(e.payload.as_slice())
                    .map_err(promptops_platform::db::decode_error)?;
                sqlx::query(
                    "INSERT INTO billing_projects (org_id, name, api_keys) VALUES ($1, $2, $3)
                     ON CONFLICT (org_id, name) DO UPDATE SET api_keys = $3",
                )
                .bind(&e.org_id)
                .bind(&set.name)
                .bind(set.api_keys.join(","))
                .execute(&mut *conn)
                .await?;
            }
            promptops_account::account::PROJECT_REMOVED => {
                let removed = promptops_proto::billing::v1::ProjectRemoved::decode(e.payload.as_slice())
                    .map_err(promptops_platform::db::decode_error)?;
                sqlx::query("DELETE FROM billing_projects WHERE org_id = $1 AND name = $2")
                    .bind(&e.org_id)
                    .bind(&removed.name)
                    .execute(&mut *conn)
                    .await?;
            }
            promptops_account::account::BUDGET_REMOVED => {
                let removed = promptops_proto::billing::v1::BudgetRemoved::decode(e.payload.as_slice())
                    .map_err(promptops_platform::db::decode_error)?;
                sqlx::query("DELETE FROM billing_budgets WHERE org_id = $1 AND budget_id = $2")
                    .bind(&e.org_id)
                    .bind(&removed.budget_id)
                    .execute(&mut *conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM billing_api_keys")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM billing_projects")
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM billing_budgets")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

/// The API keys of the org's project `name` (empty when there is none).
pub async fn project_keys(db: &sqlx::AnyPool, org_id: &str, name: &str) -> Result<Vec<String>, sqlx::Error> {
    let keys: Option<String> =
        sqlx::query_scalar("SELECT api_keys FROM billing_projects WHERE org_id = $1 AND name = $2")
            .bind(org_id)
            .bind(name)
            .fetch_optional(db)
            .await?;
    Ok(keys
        .unwrap_or_default()
        .split(',')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Whether the org has the (unrevoked) API key.
pub async fn key_exists(db: &sqlx::AnyPool, org_id: &str, key_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT revoked FROM billing_api_keys WHERE org_id = $1 AND key_id = $2")
            .bind(org_id)
            .bind(key_id)
            .fetch_optional(db)
            .await?;
    Ok(found == Some(0))
}

#[derive(Debug, FromRow)]
pub struct LineRow {
    pub run_id: String,
    pub status: String,
    pub event_id: String,
    pub model: String,
    pub prompt_id: String,
    pub prompt_version: i64,
    pub user_id: String,
    pub api_key_id: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub input_price: i64,
    pub output_price: i64,
    pub cached_input_price: i64,
    pub cache_write_price: i64,
    pub priced: i64,
    pub cost_nano_usd: i64,
    pub estimated: i64,
    pub ended_at_ms: i64,
}

pub const LINE_COLUMNS: &str =
    "run_id, status, event_id, model, prompt_id, prompt_version, user_id, api_key_id,
    input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, input_price, output_price,
    cached_input_price, cache_write_price, priced, cost_nano_usd, estimated, ended_at_ms";

impl LineRow {
    pub fn prices(&self) -> Option<TokenPrices> {
        (self.priced != 0).then_some(TokenPrices {
            input_per_mtok: self.input_price,
            output_per_mtok: self.output_price,
            cached_input_per_mtok: self.cached_input_price,
            cache_write_per_mtok: self.cache_write_price,
        })
    }

    pub fn tokens(&self) -> promptops_account::prices::Tokens {
        promptops_account::prices::Tokens {
            input: to_u64(self.input_tokens),
            output: to_u64(self.output_tokens),
            cached_input: to_u64(self.cached_input_tokens),
            cache_write: to_u64(self.cache_write_tokens),
        }
    }

    pub fn into_message(self) -> LedgerLine {
        LedgerLine {
            prices: self.prices(),
            run_id: self.run_id,
            status: self.status,
            model: self.model,
            prompt_id: self.prompt_id,
            prompt_version: to_u64(self.prompt_version),
            user_id: self.user_id,
            api_key_id: self.api_key_id,
            input_tokens: to_u64(self.input_tokens),
            output_tokens: to_u64(self.output_tokens),
            cached_input_tokens: to_u64(self.cached_input_tokens),
            cost_nano_usd: self.cost_nano_usd,
            estimated: self.estimated != 0,
            ended_at: Some(timestamp_from_ms(self.ended_at_ms)),
            event_id: self.event_id,
        }
    }
}

/// The org's terminal lines ending in `[from_ms, to_ms)`, oldest first.
pub async fn lines_in(
    db: &sqlx::AnyPool,
    org_id: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<LineRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {LINE_COLUMNS} FROM ledger_lines
         WHERE org_id = $1 AND status <> 'running' AND ended_at_ms >= $2 AND ended_at_ms < $3
         ORDER BY ended_at_ms, run_id"
    ))
    .bind(org_id)
    .bind(from_ms)
    .bind(to_ms)
    .fetch_all(db)
    .await
}

/// A budget's settled use from `from_ms` on: spend (nano-USD), requests or
/// input + output tokens of the lines its scope covers (`keys`: the API
/// keys of a project or key budget; `None` for the whole org).
pub async fn used(
    db: &sqlx::AnyPool,
    org_id: &str,
    metric: promptops_proto::billing::v1::BudgetMetric,
    keys: Option<&[String]>,
    from_ms: i64,
) -> Result<i64, sqlx::Error> {
    use promptops_proto::billing::v1::BudgetMetric;
    let expression = match metric {
        BudgetMetric::Requests => "COUNT(*)",
        BudgetMetric::Tokens => "CAST(COALESCE(SUM(input_tokens + output_tokens), 0) AS BIGINT)",
        _ => "CAST(COALESCE(SUM(cost_nano_usd), 0) AS BIGINT)",
    };
    let mut sql = format!(
        "SELECT {expression} FROM ledger_lines WHERE org_id = $1 AND status <> 'running' AND ended_at_ms >= $2"
    );
    if let Some(keys) = keys {
        if keys.is_empty() {
            return Ok(0);
        }
        let placeholders: Vec<String> = (0..keys.len()).map(|i| format!("${}", i + 3)).collect();
        sql.push_str(&format!(" AND api_key_id IN ({})", placeholders.join(", ")));
    }
    let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(org_id).bind(from_ms);
    for key in keys.unwrap_or_default() {
        query = query.bind(key);
    }
    query.fetch_one(db).await
}

/// Drops the ledger and replays it from the first event of the execution
/// stream (the billing service stopped); returns the position replayed to.
pub async fn rebuild(
    log: &promptops_eventlog::EventLog,
    db: &sqlx::AnyPool,
) -> Result<u64, promptops_eventlog::projection::ResetError> {
    use promptops_eventlog::Context;
    promptops_eventlog::projection::reset(log, db, &UsageLedger, &[Context::Execution]).await?;
    let until = log.last_sequence(Context::Execution).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = promptops_eventlog::projection::ProjectionRunner::new(
        log.clone(),
        db.clone(),
        std::sync::Arc::new(UsageLedger),
        Context::Execution,
    );
    let caught_up = async {
        let reached = promptops_eventlog::projection::wait_for_position(
            db,
            PROJECTION,
            Context::Execution,
            until,
            std::time::Duration::from_secs(3600),
        )
        .await;
        stop.cancel();
        reached
    };
    let ((), reached) = tokio::join!(runner.run(stop.clone()), caught_up);
    reached?;
    Ok(until)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc() {
        assert_eq!(day_of(1_796_230_800_000), "2026-12-02");
        assert_eq!(day_of(1_796_169_599_999), "2026-12-01");
        assert_eq!(day_of(0), "1970-01-01");
    }
}
