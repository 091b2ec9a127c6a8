//! The identity store in the gateway's database.
//!
//! Two kinds of tables:
//! - read models folded from `EVT_IDENTITY` by [`IdentityProjection`]
//!   (`identity_users`, `identity_members`, `identity_sessions`);
//! - credentials, which never enter the log and are written by the command
//!   handlers: password hashes, refresh-token hashes and signing keys.

use promptops_eventlog::RecordedEvent;
use promptops_eventlog::aggregate::Aggregate as _;
use promptops_eventlog::projection::Projection;
use promptops_platform::db::{Migration, unix_ms};
use promptops_platform::paging::ms_from_timestamp;
use sqlx::{AnyConnection, AnyPool};

use super::events::{Org, Session, User};
use super::org::OrgEvent;
use super::session::SessionEvent;
use super::user::UserEvent;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "projection checkpoints",
        statements: &[promptops_eventlog::projection::CHECKPOINT_TABLE],
    },
    Migration {
        version: 2,
        name: "identity",
        statements: &[
            "CREATE TABLE identity_users (
                user_id TEXT PRIMARY KEY,
                email TEXT NOT NULL UNIQUE,
                display_name TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL
            )",
            "CREATE TABLE identity_orgs (
                org_id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                created_at_ms BIGINT NOT NULL
            )",
            "CREATE TABLE identity_members (
                org_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                role TEXT NOT NULL,
                joined_at_ms BIGINT NOT NULL,
                PRIMARY KEY (org_id, user_id)
            )",
            "CREATE INDEX identity_members_by_user ON identity_members (user_id, joined_at_ms)",
            "CREATE TABLE identity_sessions (
                session_id TEXT PRIMARY KEY,
                org_id TEXT NOT NULL,
                user_id TEXT NOT NULL,
                generation BIGINT NOT NULL,
                revoked_reason TEXT NOT NULL,
                started_at_ms BIGINT NOT NULL,
                last_refreshed_at_ms BIGINT NOT NULL,
                client_address TEXT NOT NULL,
                user_agent TEXT NOT NULL
            )",
            "CREATE TABLE credential_passwords (
                user_id TEXT PRIMARY KEY,
                hash TEXT NOT NULL,
                updated_at_ms BIGINT NOT NULL
            )",
            "CREATE TABLE credential_refresh_tokens (
                token_hash TEXT PRIMARY KEY,
                session_id TEXT NOT NULL,
                org_id TEXT NOT NULL,
                generation BIGINT NOT NULL,
                created_at_ms BIGINT NOT NULL
            )",
            "CREATE TABLE signing_keys (
                kid TEXT PRIMARY KEY,
                private_der BYTEA NOT NULL,
                created_at_ms BIGINT NOT NULL
            )",
        ],
    },
    Migration {
        version: 3,
        name: "api keys",
        statements: &[
            "CREATE TABLE credential_api_keys (
                key_id TEXT PRIMARY KEY,
                org_id TEXT NOT NULL,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                scopes TEXT NOT NULL,
                expires_at BIGINT NOT NULL,
                secret_hash TEXT NOT NULL,
                previous_hash TEXT NOT NULL,
                previous_valid_until BIGINT NOT NULL,
                revoked BIGINT NOT NULL,
                created_at_ms BIGINT NOT NULL,
                last_used_at_ms BIGINT NOT NULL
            )",
            "CREATE INDEX credential_api_keys_by_org ON credential_api_keys (org_id, created_at_ms)",
        ],
    },
];

pub const PROJECTION: &str = "identity_read_model";

/// Folds identity events into the identity read models.
#[derive(Debug, Default)]
pub struct IdentityProjection;

impl Projection for IdentityProjection {
    fn name(&self) -> &'static str {
        PROJECTION
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        let envelope = &event.envelope;
        let at = ms_from_timestamp(envelope.occurred_at.as_ref());
        if let Some(UserEvent::Registered(user)) = User::decode(envelope) {
            sqlx::query(
                "INSERT INTO identity_users (user_id, email, display_name, created_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (user_id) DO NOTHING",
            )
            .bind(&user.user_id)
            .bind(&user.email)
            .bind(&user.display_name)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        } else if let Some(org_event) = Org::decode(envelope) {
            apply_org(conn, &envelope.org_id, at, org_event).await?;
        } else if let Some(session_event) = Session::decode(envelope) {
            apply_session(conn, &envelope.org_id, at, session_event).await?;
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        for table in [
            "identity_users",
            "identity_orgs",
            "identity_members",
            "identity_sessions",
        ] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

fn role_name(role: i32) -> String {
    super::role_from_pb(role)
        .map(|r| r.as_str().to_owned())
        .unwrap_or_default()
}

async fn apply_org(
    conn: &mut AnyConnection,
    org_id: &str,
    at: i64,
    event: OrgEvent,
) -> Result<(), sqlx::Error> {
    match event {
        OrgEvent::Created(created) => {
            sqlx::query(
                "INSERT INTO identity_orgs (org_id, name, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (org_id) DO NOTHING",
            )
            .bind(org_id)
            .bind(&created.name)
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        OrgEvent::Joined(joined) => {
            sqlx::query(
                "INSERT INTO identity_members (org_id, user_id, role, joined_at_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (org_id, user_id) DO UPDATE SET role = $3",
            )
            .bind(org_id)
            .bind(&joined.user_id)
            .bind(role_name(joined.role))
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        OrgEvent::RoleChanged(changed) => {
            sqlx::query("UPDATE identity_members SET role = $3 WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(&changed.user_id)
                .bind(role_name(changed.to))
                .execute(&mut *conn)
                .await?;
        }
        OrgEvent::Removed(removed) => {
            sqlx::query("DELETE FROM identity_members WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(&removed.user_id)
                .execute(&mut *conn)
                .await?;
        }
        OrgEvent::Invited(_)
        | OrgEvent::GrantAdded(_)
        | OrgEvent::GrantRemoved(_)
        | OrgEvent::RetentionSet(_) => {}
    }
    Ok(())
}

async fn apply_session(
    conn: &mut AnyConnection,
    org_id: &str,
    at: i64,
    event: SessionEvent,
) -> Result<(), sqlx::Error> {
    match event {
        SessionEvent::Started(started) => {
            sqlx::query(
                "INSERT INTO identity_sessions (session_id, org_id, user_id, generation, revoked_reason,
                    started_at_ms, last_refreshed_at_ms, client_address, user_agent)
                 VALUES ($1, $2, $3, 0, '', $4, $4, $5, $6) ON CONFLICT (session_id) DO NOTHING",
            )
            .bind(&started.session_id)
            .bind(org_id)
            .bind(&started.user_id)
            .bind(at)
            .bind(&started.client_address)
            .bind(&started.user_agent)
            .execute(&mut *conn)
            .await?;
        }
        SessionEvent::Refreshed(refreshed) => {
            sqlx::query(
                "UPDATE identity_sessions SET generation = $2, last_refreshed_at_ms = $3 WHERE session_id = $1",
            )
            .bind(&refreshed.session_id)
            .bind(i64::try_from(refreshed.generation).unwrap_or(i64::MAX))
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        SessionEvent::Revoked(revoked) => {
            sqlx::query("UPDATE identity_sessions SET revoked_reason = $2 WHERE session_id = $1")
                .bind(&revoked.session_id)
                .bind(&revoked.reason)
                .execute(&mut *conn)
                .await?;
        }
        SessionEvent::ReuseDetected(_) => {}
    }
    Ok(())
}

/// A user found by email, with the stored password hash.
#[derive(Debug, sqlx::FromRow)]
pub struct UserLogin {
    pub user_id: String,
    pub hash: String,
}

pub async fn user_by_email(db: &AnyPool, email: &str) -> Result<Option<UserLogin>, sqlx::Error> {
    sqlx::query_as(
        "SELECT u.user_id, p.hash FROM identity_users u JOIN credential_passwords p ON p.user_id = u.user_id
         WHERE u.email = $1",
    )
    .bind(email)
    .fetch_optional(db)
    .await
}

/// The user's orgs and roles, oldest membership first.
pub async fn memberships(db: &AnyPool, user_id: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT org_id, role FROM identity_members WHERE user_id = $1 ORDER BY joined_at_ms, org_id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

pub async fn store_password(db: &AnyPool, user_id: &str, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credential_passwords (user_id, hash, updated_at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET hash = $2, updated_at_ms = $3",
    )
    .bind(user_id)
    .bind(hash)
    .bind(unix_ms())
    .execute(db)
    .await
    .map(|_| ())
}

/// A refresh token as stored: which session and generation it belongs to.
#[derive(Debug, sqlx::FromRow)]
pub struct RefreshRecord {
    pub session_id: String,
    pub org_id: String,
    pub generation: i64,
}

pub async fn store_refresh_token(
    db: &AnyPool,
    token_hash: &str,
    session_id: &str,
    org_id: &str,
    generation: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO credential_refresh_tokens (token_hash, session_id, org_id, generation, created_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(session_id)
    .bind(org_id)
    .bind(i64::try_from(generation).unwrap_or(i64::MAX))
    .bind(unix_ms())
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn refresh_token(db: &AnyPool, token_hash: &str) -> Result<Option<RefreshRecord>, sqlx::Error> {
    sqlx::query_as(
        "SELECT session_id, org_id, generation FROM credential_refresh_tokens WHERE token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(db)
    .await
}

/// The stored signing keys, oldest first: (kid, PKCS#8 DER, created at ms).
pub async fn signing_keys(db: &AnyPool) -> Result<Vec<(String, Vec<u8>, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT kid, private_der, created_at_ms FROM signing_keys ORDER BY created_at_ms, kid")
        .fetch_all(db)
        .await
}

pub async fn store_signing_key(
    db: &AnyPool,
    kid: &str,
    der: &[u8],
    created_at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, private_der, created_at_ms) VALUES ($1, $2, $3) ON CONFLICT (kid) DO NOTHING",
    )
    .bind(kid)
    .bind(der)
    .bind(created_at_ms)
    .execute(db)
    .await
    .map(|_| ())
}

/// An API key as stored (the hashes, never the secrets).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRecord {
    pub key_id: String,
    pub org_id: String,
    pub name: String,
    pub role: String,
    /// JSON array.
    pub scopes: String,
    /// Unix seconds; 0 = never.
    pub expires_at: i64,
    pub secret_hash: String,
    pub previous_hash: String,
    pub previous_valid_until: i64,
    pub revoked: i64,
    pub created_at_ms: i64,
    pub last_used_at_ms: i64,
}

const API_KEY_COLUMNS: &str = "key_id, org_id, name, role, scopes, expires_at, secret_hash, previous_hash, previous_valid_until, revoked, created_at_ms, last_used_at_ms";

pub async fn insert_api_key(db: &AnyPool, key: &ApiKeyRecord) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO credential_api_keys ({API_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(&key.key_id)
    .bind(&key.org_id)
    .bind(&key.name)
    .bind(&key.role)
    .bind(&key.scopes)
    .bind(key.expires_at)
    .bind(&key.secret_hash)
    .bind(&key.previous_hash)
    .bind(key.previous_valid_until)
    .bind(key.revoked)
    .bind(key.created_at_ms)
    .bind(key.last_used_at_ms)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn api_key(db: &AnyPool, key_id: &str) -> Result<Option<ApiKeyRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {API_KEY_COLUMNS} FROM credential_api_keys WHERE key_id = $1"
    ))
    .bind(key_id)
    .fetch_optional(db)
    .await
}

pub async fn api_keys_of(db: &AnyPool, org_id: &str) -> Result<Vec<ApiKeyRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {API_KEY_COLUMNS} FROM credential_api_keys WHERE org_id = $1 ORDER BY created_at_ms DESC, key_id DESC"
    ))
    .bind(org_id)
    .fetch_all(db)
    .await
}

pub async fn rotate_api_key(
    db: &AnyPool,
    key_id: &str,
    new_hash: &str,
    previous_valid_until: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE credential_api_keys SET previous_hash = secret_hash, secret_hash = $2, previous_valid_until = $3
         WHERE key_id = $1",
    )
    .bind(key_id)
    .bind(new_hash)
    .bind(previous_valid_until)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn revoke_api_key(db: &AnyPool, key_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE credential_api_keys SET revoked = 1 WHERE key_id = $1")
        .bind(key_id)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn touch_api_key(db: &AnyPool, key_id: &str, now_ms: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE credential_api_keys SET last_used_at_ms = $2 WHERE key_id = $1 AND last_used_at_ms < $3",
    )
    .bind(key_id)
    .bind(now_ms)
    .bind(now_ms - 60_000)
    .execute(db)
    .await
    .map(|_| ())
}

/// A session as listed to its owner or an admin.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub session_id: String,
    pub user_id: String,
    pub started_at_ms: i64,
    pub last_refreshed_at_ms: i64,
    pub client_address: String,
    pub user_agent: String,
}

/// Live sessions of a user in an org, newest first.
pub async fn live_sessions(
    db: &AnyPool,
    org_id: &str,
    user_id: &str,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT session_id, user_id, started_at_ms, last_refreshed_at_ms, client_address, user_agent
         FROM identity_sessions WHERE org_id = $1 AND user_id = $2 AND revoked_reason = ''
         ORDER BY started_at_ms DESC, session_id DESC",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// The org and user of a session, if it exists.
pub async fn session_owner(db: &AnyPool, session_id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT org_id, user_id FROM identity_sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_optional(db)
        .await
}

/// A member as listed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub joined_at_ms: i64,
}

pub async fn members(db: &AnyPool, org_id: &str) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.user_id, u.email, u.display_name, m.role, m.joined_at_ms
         FROM identity_members m JOIN identity_users u ON u.user_id = m.user_id
         WHERE m.org_id = $1 ORDER BY m.joined_at_ms, m.user_id",
    )
    .bind(org_id)
    .fetch_all(db)
    .await
}

pub async fn user_email(db: &AnyPool, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT email FROM identity_users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// Live sessions of a user in an org (ids only).
pub async fn live_session_ids(db: &AnyPool, org_id: &str, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT session_id FROM identity_sessions WHERE org_id = $1 AND user_id = $2 AND revoked_reason = ''",
    )
    .bind(org_id)
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// The user's orgs with their names and the user's role, oldest membership first.
pub async fn memberships_named(
    db: &AnyPool,
    user_id: &str,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.org_id, o.name, m.role FROM identity_members m JOIN identity_orgs o ON o.org_id = m.org_id
         WHERE m.user_id = $1 ORDER BY m.joined_at_ms, m.org_id",
    )
    .bind(user_id)
    .fetch_all(db)
    .await
}

/// A user's email and display name.
pub async fn user_profile(db: &AnyPool, user_id: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT email, display_name FROM identity_users WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// Whether any account exists (an empty install shows its first-run screen).
pub async fn has_users(db: &AnyPool) -> Result<bool, sqlx::Error> {
    let found: Option<String> = sqlx::query_scalar("SELECT user_id FROM identity_users LIMIT 1")
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}
