//! The service's own SQL database.
//!
//! PostgreSQL in production (`DATABASE_URL`), one schema per service; SQLite
//! files under `PROMPTOPS_DATA_DIR` by default. Repository code uses the
//! portable subset through sqlx's `Any` driver: TEXT, BIGINT, DOUBLE
//! PRECISION and BYTEA columns, `$n` placeholders, `ON CONFLICT` upserts.
//!
//! Migrations are numbered lists of statements kept in each service's code,
//! applied in order at start, each in its own transaction and recorded in
//! `schema_migrations`.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Executor as _};

use crate::config::DatabaseConfig;

/// One schema change.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the {service} database: {source}")]
    Connect {
        service: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("{0}")]
    Io(String),
}

/// Opens the database of `service` and applies its migrations.
pub async fn open(
    config: &DatabaseConfig,
    service: &str,
    migrations: &[Migration],
) -> Result<AnyPool, DbError> {
    sqlx::any::install_default_drivers();
    let connect_err = |source| DbError::Connect {
        service: service.to_owned(),
        source,
    };
    let pool = match config {
        DatabaseConfig::Postgres { url } => {
            // The schema must exist before connections select it.
            let setup = AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(connect_err)?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {service}"))
                .execute(&setup)
                .await
                .map_err(connect_err)?;
            setup.close().await;
            let search_path = format!("SET search_path TO {service}");
            AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(move |conn, _meta| {
                    let search_path = search_path.clone();
                    Box::pin(async move {
                        conn.execute(search_path.as_str()).await?;
                        Ok(())
                    })
                })
                .connect(url)
                .await
                .map_err(connect_err)?
        }
        DatabaseConfig::Sqlite { data_dir } => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| DbError::Io(format!("cannot create {}: {e}", data_dir.display())))?;
            let dir = data_dir
                .canonicalize()
                .map_err(|e| DbError::Io(format!("cannot resolve {}: {e}", data_dir.display())))?;
            let url = format!("sqlite://{}/{service}.db?mode=rwc", dir.display());
            // One connection: SQLite has one writer, and read models are
            // small; this avoids lock upgrades between concurrent writers.
            AnyPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(Duration::from_secs(30))
                .after_connect(|conn, _meta| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        Ok(())
                    })
                })
                .connect(&url)
                .await
                .map_err(connect_err)?
        }
    };
    migrate(&pool, migrations).await?;
    Ok(pool)
}

/// Applies the migrations not yet recorded, in version order.
pub async fn migrate(pool: &AnyPool, migrations: &[Migration]) -> Result<(), DbError> {
    let migration_err = |m: &Migration, source| DbError::Migration {
        version: m.version,
        name: m.name,
        source,
    };
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(|source| DbError::Migration {
        version: 0,
        name: "schema_migrations",
        source,
    })?;
    let mut ordered: Vec<&Migration> = migrations.iter().collect();
    ordered.sort_by_key(|m| m.version);
    for migration in ordered {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(pool)
                .await
                .map_err(|e| migration_err(migration, e))?;
        if applied.is_some() {
            continue;
        }
        let mut tx = pool.begin().await.map_err(|e| migration_err(migration, e))?;
        for statement in migration.statements {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| migration_err(migration, e))?;
        }
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(unix_ms())
            .execute(&mut *tx)
            .await
            .map_err(|e| migration_err(migration, e))?;
        tx.commit().await.map_err(|e| migration_err(migration, e))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
    }
    Ok(())
}

/// Succeeds when the database answers; used by `/readyz`.
pub async fn ping(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

/// Placeholders numbered in the order they appear, for statements built
/// in a loop: `$1, $2, …` on PostgreSQL, anonymous `?` on SQLite. (sqlx's
/// SQLite driver looks up each numbered parameter's name, and SQLite finds a
/// name by a linear scan: binding n numbered parameters costs n², which for
/// a few thousand took longer than the statement.) Values are bound in the
/// order their placeholders appear, so a value used twice is bound twice,
/// and a statement using these uses no other placeholders. Callers keep the
/// count within both databases' limits (PostgreSQL 65,535; SQLite 32,766).
#[derive(Debug)]
pub struct Placeholders {
    anonymous: bool,
    count: usize,
}

impl Placeholders {
    pub fn new(conn: &AnyConnection) -> Self {
        Self::for_backend(conn.backend_name() == "SQLite")
    }

    fn for_backend(anonymous: bool) -> Self {
        Self { anonymous, count: 0 }
    }

    /// The next placeholder.
    pub fn param(&mut self) -> String {
        self.count += 1;
        if self.anonymous {
            "?".to_owned()
        } else {
            format!("${}", self.count)
        }
    }

    /// `rows` tuples of `columns` placeholders each, comma-separated: a
    /// multi-row `VALUES` list or a row-value `IN` list.
    pub fn rows(&mut self, rows: usize, columns: usize) -> String {
        (0..rows)
            .map(|_| {
                let tuple: Vec<String> = (0..columns).map(|_| self.param()).collect();
                format!("({})", tuple.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The placeholders of a statement whose only parameters are one `VALUES`
/// (or row-value `IN`) list of `rows` × `columns` (see [`Placeholders`]).
pub fn values_placeholders(conn: &AnyConnection, rows: usize, columns: usize) -> String {
    Placeholders::new(conn).rows(rows, columns)
}

/// A count or sequence as a database integer (saturating).
pub fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A database integer back as a count or sequence (negative → 0).
pub fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A stored protobuf payload that does not decode, as a database error (a
/// projection's apply fails and is retried rather than skipping the event).
pub fn decode_error(e: prost::DecodeError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> i64 {
    i64::try_from(time_now_nanos() / 1_000_000).unwrap_or(0)
}

fn time_now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_order_or_anonymous() {
        assert_eq!(Placeholders::for_backend(false).rows(2, 2), "($1, $2), ($3, $4)");
        assert_eq!(Placeholders::for_backend(true).rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Placeholders::for_backend(false).rows(0, 3), "");
        let mut numbered = Placeholders::for_backend(false);
        numbered.rows(1, 2);
        assert_eq!(numbered.param(), "$3");
    }

    const MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            name: "things",
            statements: &["CREATE TABLE things (id TEXT PRIMARY KEY, n BIGINT NOT NULL)"],
        },
        Migration {
            version: 2,
            name: "more",
            statements: &["ALTER TABLE things ADD COLUMN label TEXT"],
        },
    ];

    #[tokio::test]
    async fn migrations_apply_once_and_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig::Sqlite {
            data_dir: dir.path().to_path_buf(),
        };
        let pool = open(&config, "svc", MIGRATIONS).await.unwrap();
        sqlx::query("INSERT INTO things (id, n, label) VALUES ('a', 1, 'x')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        // Opening again re-applies nothing (an ALTER twice would fail).
        let pool = open(&config, "svc", MIGRATIONS).await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 2);
        assert!(dir.path().join("svc.db").exists());
    }
}
