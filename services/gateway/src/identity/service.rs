//! Accounts: sign-up, login, refresh and logout, and the signing keys.
//!
//! Each operation appends identity events through the aggregates and keeps
//! the credentials (password hash, refresh-token hashes) in the store.
//! Answers never say whether an email exists (login) and never echo a secret.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use promptops_auth::roles::{self, Permission, Role};
use promptops_auth::tokens::{CachingVerifier, Claims, Jwks, KeyRing, SigningKey, Verifier};
use promptops_auth::{password, secrets};
use promptops_eventlog::aggregate::{ExecuteError, execute};
use promptops_eventlog::{AggregateRef, Context, EventLog, EventMetadata};
use promptops_platform::errors::{ErrorClass, FieldViolation, ServiceError};
use promptops_platform::revocation::RevocationFeed;
use promptops_proto::common::v1::{Actor, ActorKind};
use sqlx::AnyPool;
use uuid::Uuid;

use super::api_key::{ApiKeyCommand, ApiKeyError};
use super::events::{ApiKey, EmailClaim, Org, Session, User};
use super::org::{Actor as OrgActor, OrgCommand, OrgError};
use super::session::{RevokeReason, SessionCommand, SessionError, refresh_refused};
use super::throttle::Throttle;
use super::user::{UserCommand, UserError};
use super::{USERS_ORG, canonical_email, store, validate_email};

/// Token settings.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    /// Access-token lifetime, at most 15 minutes.
    pub access_ttl: Duration,
    pub keys: KeyPolicy,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "promptops".into(),
            audience: "promptops-api".into(),
            access_ttl: Duration::from_secs(900),
            keys: KeyPolicy::default(),
        }
    }
}

/// Signing-key rotation: a new key every `rotation`, published `lead`
/// before it signs (services fetch the JWKS at least every 5 minutes, and on
/// an unknown `kid`), the old one trusted `overlap` after it stops signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    pub rotation: Duration,
    pub lead: Duration,
    pub overlap: Duration,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            rotation: Duration::from_secs(30 * 24 * 3600),
            lead: Duration::from_secs(600),
            overlap: Duration::from_secs(24 * 3600),
        }
    }
}

/// The key ring for stored keys (oldest first) at `now` (Unix seconds).
pub fn ring_from(stored: Vec<SigningKey>, now: i64, policy: KeyPolicy) -> Option<KeyRing> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4);
    let (lead, overlap) = (secs(policy.lead), secs(policy.overlap));
    // The newest key old enough to sign; on a new install, the only key.
    let active_index = stored
        .iter()
        .rposition(|k| k.created_at() + lead <= now)
        .unwrap_or(0);
    let successor_created: Vec<Option<i64>> = (0..stored.len())
        .map(|i| stored.get(i + 1).map(SigningKey::created_at))
        .collect();
    let mut keys: Vec<Option<SigningKey>> = stored.into_iter().map(Some).collect();
    let mut ring = KeyRing::new(keys.get_mut(active_index)?.take()?);
    for (i, key) in keys.into_iter().enumerate() {
        let Some(key) = key else { continue };
        if i > active_index {
            ring.publish(key);
        } else if successor_created[i].is_some_and(|next| next + lead + overlap > now) {
            ring.rotate_back(key);
        }
    }
    Some(ring)
}

/// Where a request came from, for sessions, audit and throttling.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub address: String,
    pub user_agent: String,
}

/// What sign-up, login and refresh answer (OAuth-style field names).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user_id: String,
    pub org_id: String,
    pub role: String,
}

/// One of the caller's orgs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct OrgMembershipView {
    pub org_id: String,
    pub name: String,
    pub role: String,
}

/// The caller of `GET /api/v1/me`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct MeView {
    /// `user` or `api_key`.
    pub actor_kind: String,
    pub actor_id: String,
    /// Empty for an API key.
    pub email: String,
    pub display_name: String,
    /// The org of this credential.
    pub org_id: String,
    pub role: String,
    pub scopes: Vec<String>,
    /// Every org a user belongs to, oldest membership first (empty for an API key).
    pub orgs: Vec<OrgMembershipView>,
}

/// Why a login must wait (429 with `Retry-After`).
#[derive(Debug)]
pub struct Throttled(pub Duration);

#[derive(Debug)]
pub enum LoginError {
    Throttled(Throttled),
    Service(ServiceError),
}

impl From<ServiceError> for LoginError {
    fn from(err: ServiceError) -> Self {
        LoginError::Service(err)
    }
}

/// The identity service's state.
#[derive(Debug, Clone)]
pub struct Identity {
    log: EventLog,
    db: AnyPool,
    keys: Arc<RwLock<KeyRing>>,
    tokens: TokenConfig,
    throttle: Arc<Throttle>,
    /// One password hash or check per core at a time.
    hashing: HashingGate,
    verifier: Arc<RwLock<CachingVerifier>>,
    /// Revoked sessions: this replica's own at once, everyone's from events.
    revocations: RevocationFeed,
    /// API keys recently checked, by the SHA-256 of the presented secret.
    /// Dropped on revocation and rotation (events from any replica).
    api_keys: moka::sync::Cache<String, Principal>,
}

/// A verified caller of the HTTP API.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub org_id: String,
    pub actor_kind: ActorKind,
    /// The user id or the API key id.
    pub actor_id: String,
    pub role: Role,
    pub scopes: Vec<String>,
    /// The session of a user's access token.
    pub session_id: Option<String>,
}

impl Principal {
    /// Whether the caller's role and scopes both include `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        roles::allows(self.role, permission) && self.scopes.iter().any(|s| s == permission.scope())
    }

    pub fn require(&self, permission: Permission) -> Result<(), ServiceError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(ServiceError::new(
                ErrorClass::PermissionDenied,
                format!("this needs the {} permission", permission.scope()),
            ))
        }
    }

    fn metadata(&self) -> EventMetadata {
        metadata(self.actor_kind, &self.actor_id)
    }
}

/// An API key as shown to its org (never the secret after creation).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApiKeyView {
    pub key_id: String,
    pub name: String,
    pub role: String,
    pub scopes: Vec<String>,
    /// Unix seconds; absent = never.
    pub expires_at: Option<i64>,
    pub revoked: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    /// Only in the answer that created or rotated the key: shown once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&store::ApiKeyRecord> for ApiKeyView {
    fn from(r: &store::ApiKeyRecord) -> Self {
        Self {
            key_id: r.key_id.clone(),
            name: r.name.clone(),
            role: r.role.clone(),
            scopes: serde_json::from_str(&r.scopes).unwrap_or_default(),
            expires_at: (r.expires_at > 0).then_some(r.expires_at),
            revoked: r.revoked != 0,
            created_at_ms: r.created_at_ms,
            last_used_at_ms: (r.last_used_at_ms > 0).then_some(r.last_used_at_ms),
            secret: None,
        }
    }
}

/// A live session as listed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SessionView {
    pub session_id: String,
    pub user_id: String,
    pub started_at_ms: i64,
    pub last_refreshed_at_ms: i64,
    pub client_address: String,
    pub user_agent: String,
    /// Whether this is the session of the token making the request.
    pub current: bool,
}

const WRONG_CREDENTIALS: &str = "the email or password is wrong";
const BAD_REFRESH: &str = "the refresh token is not valid";

fn unavailable(err: impl std::fmt::Display) -> ServiceError {
    ServiceError::unavailable("the identity store", err)
}

fn exec_error<E>(err: ExecuteError<E>, domain: impl FnOnce(E) -> ServiceError) -> ServiceError {
    match err {
        ExecuteError::Domain(e) => domain(e),
        ExecuteError::Conflict => ServiceError::new(ErrorClass::Conflict, "changed concurrently; retry"),
        ExecuteError::Store(e) => ServiceError::unavailable("the event log", e),
        ExecuteError::Invalid(reason) => ServiceError::new(ErrorClass::Internal, reason),
    }
}

fn aggregate(org: &str, kind: &str, id: &str) -> Result<AggregateRef, ServiceError> {
    AggregateRef::new(Context::Identity, org, kind, id)
        .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))
}

/// The metadata of the gateway's own events, with the HTTP request's origin.
fn metadata(actor_kind: ActorKind, actor_id: &str) -> EventMetadata {
    let origin = promptops_platform::caller::Origin::current().unwrap_or_default();
    EventMetadata {
        client_address: origin.client_address,
        user_agent: origin.user_agent,
        ..promptops_platform::caller::event_metadata(Actor {
            kind: actor_kind as i32,
            id: actor_id.to_owned(),
        })
    }
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// How long a password check waits for a free core before it is refused.
const HASHING_WAIT: Duration = Duration::from_secs(5);

/// Why a password could not be hashed or checked now.
#[derive(Debug)]
pub enum Busy {
    /// Every core is hashing: try again after this.
    Wait(Duration),
    Failed(ServiceError),
}

impl Busy {
    /// 429 (RESOURCE_EXHAUSTED) for a wait, the error itself otherwise.
    pub fn into_service_error(self) -> ServiceError {
        match self {
            Busy::Wait(wait) => ServiceError::new(
                ErrorClass::ResourceExhausted,
                format!(
                    "too many sign-ins and sign-ups at once: try again in {} s",
                    wait.as_secs().max(1)
                ),
            ),
            Busy::Failed(err) => err,
        }
    }
}

/// At most one password hash or check per core at a time: argon2 is built
/// to be expensive, and unbounded a burst of sign-ins would take every core.
#[derive(Debug, Clone)]
pub struct HashingGate {
    permits: Arc<tokio::sync::Semaphore>,
    wait: Duration,
}

impl HashingGate {
    pub fn new(concurrent: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(concurrent.max(1))),
            wait,
        }
    }

    /// One per core, waiting up to [`HASHING_WAIT`] for a turn.
    pub fn per_core() -> Self {
        Self::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            HASHING_WAIT,
        )
    }

    /// Runs `f` on a blocking thread when a turn is free within the wait.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Busy::Wait(Duration::from_secs(1)))?
            .map_err(|_| {
                Busy::Failed(ServiceError::new(
                    ErrorClass::Unavailable,
                    "the gateway is stopping",
                ))
            })?;
        let outcome = blocking(f).await.map_err(Busy::Failed);
        drop(permit);
        outcome
    }
}

#[cfg(test)]
mod hashing_tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_gate_refuses_with_a_wait_instead_of_queueing_without_bound() {
        let gate = HashingGate::new(1, Duration::from_millis(50));
        let slow = gate.run(|| std::thread::sleep(Duration::from_millis(400)));
        let late = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            gate.run(|| ()).await
        };
        let (first, second) = tokio::join!(slow, late);
        assert!(first.is_ok());
        assert!(matches!(second, Err(Busy::Wait(_))));
        assert_eq!(
            Busy::Wait(Duration::from_secs(1)).into_service_error().class,
            ErrorClass::ResourceExhausted
        );
        assert!(
            gate.run(|| 7).await.is_ok_and(|n| n == 7),
            "free again afterwards"
        );
    }
}

/// Runs CPU-heavy password hashing off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("worker failed: {e}")))
}

impl Identity {
    /// Loads the signing keys (creating the first one on a new install).
    pub async fn open(log: EventLog, db: AnyPool, tokens: TokenConfig) -> Result<Self, ServiceError> {
        let ring = Self::load_ring(&db, &tokens, true).await?;
        let verifier = CachingVerifier::new(
            Verifier::new(&ring.jwks(), &tokens.issuer, &tokens.audience),
            100_000,
        );
        Ok(Self {
            log,
            db,
            keys: Arc::new(RwLock::new(ring)),
            tokens,
            throttle: Arc::new(Throttle::new(Duration::from_secs(15 * 60), 5, 30)),
            hashing: HashingGate::per_core(),
            verifier: Arc::new(RwLock::new(verifier)),
            revocations: RevocationFeed::new(),
            api_keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(60))
                .support_invalidation_closures()
                .build(),
        })
    }

    /// Follows identity events until `shutdown`: revoked sessions, and API
    /// keys revoked or rotated by any replica.
    pub async fn follow_revocations(&self, log: EventLog, shutdown: tokio_util::sync::CancellationToken) {
        self.revocations
            .follow(log, shutdown, |key_id| self.forget_api_key(key_id))
            .await;
    }

    /// Forgets cached checks of an API key (revoked or rotated anywhere).
    pub fn forget_api_key(&self, key_id: &str) {
        let key_id = key_id.to_owned();
        let _ = self
            .api_keys
            .invalidate_entries_if(move |_, principal| principal.actor_id == key_id);
    }

    async fn load_ring(db: &AnyPool, tokens: &TokenConfig, create: bool) -> Result<KeyRing, ServiceError> {
        let mut stored = store::signing_keys(db).await.map_err(unavailable)?;
        if stored.is_empty() && create {
            let key = SigningKey::generate(now_secs())
                .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
            store::store_signing_key(db, key.kid(), key.pkcs8_der(), key.created_at() * 1000)
                .await
                .map_err(unavailable)?;
            // Another replica may have raced us: use whatever is stored.
            stored = store::signing_keys(db).await.map_err(unavailable)?;
        }
        let mut loaded = Vec::new();
        for (kid, der, created_ms) in stored {
            loaded.push(
                SigningKey::from_pkcs8(&kid, created_ms / 1000, &der).map_err(|e| {
                    ServiceError::new(ErrorClass::Internal, format!("signing key {kid}: {e}"))
                })?,
            );
        }
        ring_from(loaded, now_secs(), tokens.keys)
            .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "no signing key"))
    }

    /// Creates the next key when the newest is older than the rotation
    /// period, then reloads the ring from the store (so replicas converge).
    pub async fn rotate_keys_if_due(&self) -> Result<(), ServiceError> {
        let newest = store::signing_keys(&self.db)
            .await
            .map_err(unavailable)?
            .last()
            .map(|(_, _, created_ms)| created_ms / 1000)
            .unwrap_or(0);
        let rotation = i64::try_from(self.tokens.keys.rotation.as_secs()).unwrap_or(i64::MAX / 4);
        if newest + rotation <= now_secs() {
            let key = SigningKey::generate(now_secs())
                .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
            store::store_signing_key(&self.db, key.kid(), key.pkcs8_der(), key.created_at() * 1000)
                .await
                .map_err(unavailable)?;
            tracing::info!(
                kid = key.kid(),
                "signing key created; it signs after the publication lead"
            );
        }
        let ring = Self::load_ring(&self.db, &self.tokens, false).await?;
        let verifier = CachingVerifier::new(
            Verifier::new(&ring.jwks(), &self.tokens.issuer, &self.tokens.audience),
            100_000,
        );
        if let Ok(mut keys) = self.keys.write() {
            *keys = ring;
        }
        if let Ok(mut slot) = self.verifier.write() {
            *slot = verifier;
        }
        Ok(())
    }

    /// How often [`rotate_keys_if_due`](Self::rotate_keys_if_due) should run.
    pub fn key_check_interval(&self) -> Duration {
        (self.tokens.keys.lead / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
    }

    pub fn jwks(&self) -> Jwks {
        self.keys.read().map(|ring| ring.jwks()).unwrap_or_default()
    }

    pub fn token_config(&self) -> &TokenConfig {
        &self.tokens
    }

    fn access_token(
        &self,
        user_id: &str,
        org_id: &str,
        role: Role,
        session_id: &str,
    ) -> Result<String, ServiceError> {
        let now = now_secs();
        let ttl = i64::try_from(self.tokens.access_ttl.as_secs()).unwrap_or(900);
        let claims = Claims {
            iss: self.tokens.issuer.clone(),
            aud: self.tokens.audience.clone(),
            sub: user_id.to_owned(),
            org: org_id.to_owned(),
            role: role.as_str().to_owned(),
            scopes: roles::scopes_of(role).into_iter().map(str::to_owned).collect(),
            jti: Uuid::now_v7().simple().to_string(),
            sid: session_id.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl,
        };
        self.keys
            .read()
            .map_err(|_| ServiceError::new(ErrorClass::Internal, "key ring poisoned"))?
            .sign(&claims)
            .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))
    }

    /// Starts a session in `org_id` and returns its first tokens.
    async fn start_session(
        &self,
        user_id: &str,
        org_id: &str,
        role: Role,
        client: &Client,
    ) -> Result<TokenResponse, ServiceError> {
        let session_id = Uuid::now_v7().simple().to_string();
        let started = execute::<Session>(
            &self.log,
            &aggregate(org_id, "session", &session_id)?,
            SessionCommand::Start {
                session_id: session_id.clone(),
                user_id: user_id.to_owned(),
                client_address: client.address.clone(),
                user_agent: client.user_agent.clone(),
            },
            &metadata(ActorKind::User, user_id),
        )
        .await
        .map_err(|e| exec_error(e, |e| ServiceError::new(ErrorClass::Internal, e.to_string())))?;
        // Read-your-write: the new session (and, after a sign-up, the account
        // and its org) is in the read model before the tokens are returned.
        self.settle(started.last_sequence).await?;
        self.tokens_for(user_id, org_id, role, &session_id, 0).await
    }

    async fn tokens_for(
        &self,
        user_id: &str,
        org_id: &str,
        role: Role,
        session_id: &str,
        generation: u64,
    ) -> Result<TokenResponse, ServiceError> {
        let (refresh_token, refresh_hash) = secrets::new_refresh_token();
        store::store_refresh_token(&self.db, &refresh_hash, session_id, org_id, generation)
            .await
            .map_err(unavailable)?;
        Ok(TokenResponse {
            access_token: self.access_token(user_id, org_id, role, session_id)?,
            refresh_token,
            token_type: "Bearer".into(),
            expires_in: self.tokens.access_ttl.as_secs(),
            user_id: user_id.to_owned(),
            org_id: org_id.to_owned(),
            role: role.as_str().to_owned(),
        })
    }

    /// Creates a user, an org with the user as owner, and a session.
    pub async fn signup(
        &self,
        email: &str,
        password_text: &str,
        display_name: &str,
        org_name: &str,
        client: &Client,
    ) -> Result<TokenResponse, ServiceError> {
        self.signup_into(email, password_text, display_name, org_name, None, client)
            .await
    }

    /// [`signup`](Self::signup), with a chosen org id (headless initialisation).
    pub async fn signup_into(
        &self,
        email: &str,
        password_text: &str,
        display_name: &str,
        org_name: &str,
        org_id: Option<&str>,
        client: &Client,
    ) -> Result<TokenResponse, ServiceError> {
        let email = canonical_email(email);
        let mut violations = Vec::new();
        if let Err(reason) = validate_email(&email) {
            violations.push(FieldViolation::new("email", reason));
        }
        if let Err(reasons) = password::check_policy(password_text, &email) {
            violations.extend(reasons.into_iter().map(|r| FieldViolation::new("password", r)));
        }
        let org_name = if org_name.trim().is_empty() {
            "My org"
        } else {
            org_name
        };
        if org_name.chars().count() > super::org::MAX_ORG_NAME_CHARS {
            violations.push(FieldViolation::new("org_name", "must be at most 100 characters"));
        }
        if !violations.is_empty() {
            return Err(ServiceError::invalid(violations));
        }

        let mut user_id = Uuid::now_v7().simple().to_string();
        let hash = {
            let password_text = password_text.to_owned();
            self.hashing
                .run(move || password::hash(&password_text))
                .await
                .map_err(Busy::into_service_error)?
        }
        .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?;
        store::store_password(&self.db, &user_id, &hash)
            .await
            .map_err(unavailable)?;

        // The email's claim keeps addresses unique. A claim whose sign-up
        // never finished (the store failed midway) is resumed by the same
        // person: the same address and password.
        let claim = aggregate(USERS_ORG, "email", &secrets::hash(&email)[..32])?;
        let meta = metadata(ActorKind::User, &user_id);
        match execute::<EmailClaim>(&self.log, &claim, user_id.clone(), &meta).await {
            Ok(_) => {}
            Err(ExecuteError::Domain(_)) => {
                let loaded = promptops_eventlog::aggregate::load::<EmailClaim>(&self.log, &claim)
                    .await
                    .map_err(|e| ServiceError::unavailable("the event log", e))?;
                let owner = loaded.state.user_id.unwrap_or_default();
                let resumable = store::memberships(&self.db, &owner)
                    .await
                    .map_err(unavailable)?
                    .is_empty()
                    && self.password_matches(&owner, password_text).await?;
                if !resumable {
                    return Err(ServiceError::new(
                        ErrorClass::AlreadyExists,
                        "an account with this email address exists: log in instead",
                    ));
                }
                user_id = owner;
            }
            Err(e) => {
                return Err(exec_error(e, |_| {
                    ServiceError::new(ErrorClass::Internal, "email claim")
                }));
            }
        }

        let user = aggregate(USERS_ORG, "user", &user_id)?;
        let registered = execute::<User>(
            &self.log,
            &user,
            UserCommand::Register {
                user_id: user_id.clone(),
                email: email.clone(),
                display_name: display_name.to_owned(),
            },
            &meta,
        )
        .await;
        match registered {
            Ok(_) | Err(ExecuteError::Domain(UserError::AlreadyExists)) => {}
            Err(e) => {
                return Err(exec_error(e, |e| match e {
                    UserError::Invalid(v) => ServiceError::invalid(v),
                    other => ServiceError::new(ErrorClass::Internal, other.to_string()),
                }));
            }
        }

        let org_id = org_id.map_or_else(|| Uuid::now_v7().simple().to_string(), str::to_owned);
        execute::<Org>(
            &self.log,
            &aggregate(&org_id, "org", &org_id)?,
            OrgCommand::Create {
                org_id: org_id.clone(),
                name: org_name.to_owned(),
                owner: OrgActor {
                    user_id: user_id.clone(),
                },
            },
            &meta,
        )
        .await
        .map_err(|e| {
            exec_error(e, |e| match e {
                super::org::OrgError::Invalid(v) => ServiceError::invalid(v),
                other => ServiceError::new(ErrorClass::Internal, other.to_string()),
            })
        })?;
        tracing::info!(%user_id, %org_id, "account created");
        self.start_session(&user_id, &org_id, Role::Owner, client).await
    }

    async fn password_matches(&self, user_id: &str, password_text: &str) -> Result<bool, ServiceError> {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT hash FROM credential_passwords WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&self.db)
                .await
                .map_err(unavailable)?;
        let Some(stored) = stored else { return Ok(false) };
        let password_text = password_text.to_owned();
        self.hashing
            .run(move || password::verify(&password_text, &stored))
            .await
            .map_err(Busy::into_service_error)
    }

    /// Email + password → a session in the chosen (or the first) org.
    pub async fn login(
        &self,
        email: &str,
        password_text: &str,
        org_id: Option<&str>,
        client: &Client,
    ) -> Result<TokenResponse, LoginError> {
        let email = canonical_email(email);
        let began = self
            .throttle
            .begin(&email, &client.address, Instant::now())
            .map_err(|wait| LoginError::Throttled(Throttled(wait)))?;
        let found = store::user_by_email(&self.db, &email)
            .await
            .map_err(unavailable)?;
        let (user_id, stored) = match found {
            Some(user) => (Some(user.user_id), user.hash),
            None => (None, password::decoy_hash().to_owned()),
        };
        let ok = {
            let password_text = password_text.to_owned();
            self.hashing
                .run(move || password::verify(&password_text, &stored))
                .await
                .map_err(|busy| LoginError::Service(busy.into_service_error()))?
        };
        let Some(user_id) = user_id.filter(|_| ok) else {
            // The attempt was counted as a failure when it began.
            if let Ok(Some(user)) = store::user_by_email(&self.db, &email).await {
                let failure = execute::<User>(
                    &self.log,
                    &aggregate(USERS_ORG, "user", &user.user_id)?,
                    UserCommand::RecordLoginFailure {
                        client_address: client.address.clone(),
                        reason: "wrong_password",
                    },
                    &metadata(ActorKind::Service, "gateway"),
                )
                .await;
                if failure.is_err() {
                    tracing::warn!("could not record a failed login");
                }
            }
            return Err(ServiceError::new(ErrorClass::Unauthenticated, WRONG_CREDENTIALS).into());
        };
        self.throttle.succeeded(&email, &client.address, began);
        let memberships = store::memberships(&self.db, &user_id)
            .await
            .map_err(unavailable)?;
        let chosen = match org_id {
            Some(wanted) => memberships
                .into_iter()
                .find(|(org, _)| org == wanted)
                .ok_or_else(|| {
                    ServiceError::new(ErrorClass::PermissionDenied, "you are not a member of that org")
                })?,
            None => memberships.into_iter().next().ok_or_else(|| {
                ServiceError::new(ErrorClass::PermissionDenied, "you are not a member of any org")
            })?,
        };
        let role = Role::parse(&chosen.1).unwrap_or(Role::Viewer);
        Ok(self.start_session(&user_id, &chosen.0, role, client).await?)
    }

    /// Whether anyone has signed up yet.
    pub async fn has_accounts(&self) -> Result<bool, ServiceError> {
        store::has_users(&self.db).await.map_err(unavailable)
    }

    /// Who the caller is: the user (or API key), the org and role of this
    /// credential, and every org the user belongs to (for an org switcher).
    pub async fn me(&self, principal: &Principal) -> Result<MeView, ServiceError> {
        let is_user = principal.actor_kind == ActorKind::User;
        let (email, display_name) = if is_user {
            store::user_profile(&self.db, &principal.actor_id)
                .await
                .map_err(unavailable)?
                .unwrap_or_default()
        } else {
            (String::new(), String::new())
        };
        let orgs = if is_user {
            store::memberships_named(&self.db, &principal.actor_id)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|(org_id, name, role)| OrgMembershipView { org_id, name, role })
                .collect()
        } else {
            Vec::new()
        };
        Ok(MeView {
            actor_kind: if is_user { "user" } else { "api_key" }.to_owned(),
            actor_id: principal.actor_id.clone(),
            email,
            display_name,
            org_id: principal.org_id.clone(),
            role: principal.role.as_str().to_owned(),
            scopes: principal.scopes.clone(),
            orgs,
        })
    }

    /// A signed-in user moves to another of their orgs: a new session there.
    /// The client then logs out of the old one.
    pub async fn switch_org(
        &self,
        principal: &Principal,
        org_id: &str,
        client: &Client,
    ) -> Result<TokenResponse, ServiceError> {
        if principal.actor_kind != ActorKind::User {
            return Err(ServiceError::new(
                ErrorClass::PermissionDenied,
                "only a signed-in user can switch orgs; an API key belongs to one org",
            ));
        }
        let role = store::memberships(&self.db, &principal.actor_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|(org, _)| org == org_id)
            .and_then(|(_, role)| Role::parse(&role))
            .ok_or_else(|| {
                ServiceError::new(ErrorClass::PermissionDenied, "you are not a member of that org")
            })?;
        self.start_session(&principal.actor_id, org_id, role, client)
            .await
    }

    /// A refresh token → new tokens; the presented one is spent.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenResponse, ServiceError> {
        let invalid = || ServiceError::new(ErrorClass::Unauthenticated, BAD_REFRESH);
        let record = store::refresh_token(&self.db, &secrets::hash(refresh_token))
            .await
            .map_err(unavailable)?
            .ok_or_else(invalid)?;
        let generation = u64::try_from(record.generation).unwrap_or(u64::MAX);
        let executed = execute::<Session>(
            &self.log,
            &aggregate(&record.org_id, "session", &record.session_id)?,
            SessionCommand::Refresh { generation },
            &metadata(ActorKind::Service, "gateway"),
        )
        .await
        .map_err(|e| {
            exec_error(e, |e: SessionError| {
                ServiceError::new(ErrorClass::Unauthenticated, e.to_string())
            })
        })?;
        if refresh_refused(&executed.events) {
            self.revocations.revoke_session(&record.session_id);
            tracing::warn!(session_id = %record.session_id, "refresh token reused: session revoked");
            return Err(ServiceError::new(
                ErrorClass::Unauthenticated,
                "this refresh token was already used: the session is revoked, log in again",
            ));
        }
        let user_id = executed
            .state
            .started
            .as_ref()
            .map(|s| s.user_id.clone())
            .ok_or_else(invalid)?;
        let role = store::memberships(&self.db, &user_id)
            .await
            .map_err(unavailable)?
            .into_iter()
            .find(|(org, _)| *org == record.org_id)
            .and_then(|(_, role)| Role::parse(&role))
            .ok_or_else(invalid)?;
        self.tokens_for(
            &user_id,
            &record.org_id,
            role,
            &record.session_id,
            executed.state.generation,
        )
        .await
    }

    /// Ends the session of a refresh token. Unknown tokens end nothing and
    /// are not reported (logout is idempotent).
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ServiceError> {
        let Some(record) = store::refresh_token(&self.db, &secrets::hash(refresh_token))
            .await
            .map_err(unavailable)?
        else {
            return Ok(());
        };
        match execute::<Session>(
            &self.log,
            &aggregate(&record.org_id, "session", &record.session_id)?,
            SessionCommand::Revoke {
                reason: RevokeReason::Logout,
            },
            &metadata(ActorKind::Service, "gateway"),
        )
        .await
        {
            Ok(_) | Err(ExecuteError::Domain(_)) => {
                self.revocations.revoke_session(&record.session_id);
                Ok(())
            }
            Err(e) => Err(exec_error(e, |_| {
                ServiceError::new(ErrorClass::Internal, "logout")
            })),
        }
    }
}

fn api_key_error(err: ApiKeyError) -> ServiceError {
    match err {
        ApiKeyError::Invalid(v) => ServiceError::invalid(v),
        ApiKeyError::AlreadyExists => ServiceError::new(ErrorClass::AlreadyExists, "the API key exists"),
        ApiKeyError::NotFound => ServiceError::new(ErrorClass::NotFound, "no such API key"),
        ApiKeyError::Forbidden(reason) => ServiceError::new(ErrorClass::PermissionDenied, reason),
    }
}

impl Identity {
    /// The caller behind a bearer credential: an access token or an API key.
    /// Every refusal is the same 401, whatever was wrong.
    pub async fn authenticate(&self, credential: &str) -> Result<Principal, ServiceError> {
        let refused = || ServiceError::new(ErrorClass::Unauthenticated, "the credential is not valid");
        if secrets::is_api_key(credential) {
            let digest = secrets::hash(credential);
            if let Some(principal) = self.api_keys.get(&digest) {
                return Ok(principal);
            }
            let key_id = secrets::api_key_id(credential).ok_or_else(refused)?;
            let key = store::api_key(&self.db, key_id)
                .await
                .map_err(unavailable)?
                .ok_or_else(refused)?;
            let now = now_secs();
            let current = secrets::matches(credential, &key.secret_hash);
            let previous = !key.previous_hash.is_empty()
                && secrets::matches(credential, &key.previous_hash)
                && now < key.previous_valid_until;
            let expired = key.expires_at > 0 && now >= key.expires_at;
            if key.revoked != 0 || expired || !(current || previous) {
                return Err(refused());
            }
            let role = Role::parse(&key.role).ok_or_else(refused)?;
            let mut scopes: Vec<String> = serde_json::from_str(&key.scopes).unwrap_or_default();
            if scopes.is_empty() {
                scopes = roles::scopes_of(role).into_iter().map(str::to_owned).collect();
            }
            if let Err(err) = store::touch_api_key(&self.db, &key.key_id, now * 1000).await {
                tracing::debug!(error = %err, "last-used time not recorded");
            }
            let principal = Principal {
                org_id: key.org_id,
                actor_kind: ActorKind::ApiKey,
                actor_id: key.key_id,
                role,
                scopes,
                session_id: None,
            };
            // An expiring key is not cached past its expiry.
            if key.expires_at == 0 || key.expires_at > now + 60 {
                self.api_keys.insert(digest, principal.clone());
            }
            return Ok(principal);
        }
        let verifier = self
            .verifier
            .read()
            .map_err(|_| ServiceError::new(ErrorClass::Internal, "verifier poisoned"))?
            .clone();
        let claims = verifier.verify(credential).map_err(|err| {
            tracing::debug!(%err, "access token refused");
            refused()
        })?;
        if !self.revocations.is_ready() {
            return Err(ServiceError::new(
                ErrorClass::Unavailable,
                "starting: the revocation list is catching up",
            ));
        }
        self.revocations.check(&claims).map_err(|_| refused())?;
        Ok(Principal {
            org_id: claims.org.clone(),
            actor_kind: ActorKind::User,
            actor_id: claims.sub.clone(),
            role: Role::parse(&claims.role).ok_or_else(refused)?,
            scopes: claims.scopes.clone(),
            session_id: Some(claims.sid.clone()),
        })
    }

    pub async fn create_api_key(
        &self,
        principal: &Principal,
        name: &str,
        role: Role,
        scopes: Vec<String>,
        expires_at: Option<i64>,
    ) -> Result<ApiKeyView, ServiceError> {
        self.create_api_key_with(principal, name, role, scopes, expires_at, secrets::new_api_key())
            .await
    }

    /// Creates a key with a given (key id, secret, hash) — headless
    /// initialisation supplies its own secret.
    async fn create_api_key_with(
        &self,
        principal: &Principal,
        name: &str,
        role: Role,
        scopes: Vec<String>,
        expires_at: Option<i64>,
        (key_id, secret, hash): (String, String, String),
    ) -> Result<ApiKeyView, ServiceError> {
        principal.require(Permission::ManageApiKeys)?;
        let now = now_secs();
        let executed = execute::<ApiKey>(
            &self.log,
            &aggregate(&principal.org_id, "api_key", &key_id)?,
            ApiKeyCommand::Create {
                key_id: key_id.clone(),
                name: name.to_owned(),
                role,
                scopes: scopes.clone(),
                expires_at,
                actor_role: principal.role,
                now,
            },
            &principal.metadata(),
        )
        .await
        .map_err(|e| exec_error(e, api_key_error))?;
        let created = executed
            .state
            .created
            .ok_or_else(|| ServiceError::new(ErrorClass::Internal, "created key missing"))?;
        let record = store::ApiKeyRecord {
            key_id: key_id.clone(),
            org_id: principal.org_id.clone(),
            name: created.name,
            role: role.as_str().to_owned(),
            scopes: serde_json::to_string(&scopes).unwrap_or_else(|_| "[]".into()),
            expires_at: created.expires_at,
            secret_hash: hash,
            previous_hash: String::new(),
            previous_valid_until: 0,
            revoked: 0,
            created_at_ms: now * 1000,
            last_used_at_ms: 0,
        };
        store::insert_api_key(&self.db, &record)
            .await
            .map_err(unavailable)?;
        let mut view = ApiKeyView::from(&record);
        view.secret = Some(secret);
        Ok(view)
    }

    pub async fn list_api_keys(&self, principal: &Principal) -> Result<Vec<ApiKeyView>, ServiceError> {
        principal.require(Permission::ManageApiKeys)?;
        let keys = store::api_keys_of(&self.db, &principal.org_id)
            .await
            .map_err(unavailable)?;
        Ok(keys.iter().map(ApiKeyView::from).collect())
    }

    /// A key of the principal's org, or 404 (keys of other orgs do not exist).
    async fn own_key(
        &self,
        principal: &Principal,
        key_id: &str,
    ) -> Result<store::ApiKeyRecord, ServiceError> {
        store::api_key(&self.db, key_id)
            .await
            .map_err(unavailable)?
            .filter(|k| k.org_id == principal.org_id)
            .ok_or_else(|| ServiceError::new(ErrorClass::NotFound, "no such API key"))
    }

    /// A new secret; the old one keeps working for the grace period.
    pub async fn rotate_api_key(
        &self,
        principal: &Principal,
        key_id: &str,
    ) -> Result<ApiKeyView, ServiceError> {
        principal.require(Permission::ManageApiKeys)?;
        let key = self.own_key(principal, key_id).await?;
        let executed = execute::<ApiKey>(
            &self.log,
            &aggregate(&principal.org_id, "api_key", key_id)?,
            ApiKeyCommand::Rotate {
                actor_role: principal.role,
                now: now_secs(),
            },
            &principal.metadata(),
        )
        .await
        .map_err(|e| exec_error(e, api_key_error))?;
        let secret = format!(
            "{}{}_{}",
            secrets::API_KEY_PREFIX,
            key.key_id,
            secrets::new_refresh_token()
                .0
                .trim_start_matches(secrets::REFRESH_PREFIX)
        );
        store::rotate_api_key(
            &self.db,
            key_id,
            &secrets::hash(&secret),
            executed.state.previous_valid_until,
        )
        .await
        .map_err(unavailable)?;
        self.forget_api_key(key_id);
        let mut view = ApiKeyView::from(&self.own_key(principal, key_id).await?);
        view.secret = Some(secret);
        Ok(view)
    }

    pub async fn revoke_api_key(&self, principal: &Principal, key_id: &str) -> Result<(), ServiceError> {
        principal.require(Permission::ManageApiKeys)?;
        self.own_key(principal, key_id).await?;
        execute::<ApiKey>(
            &self.log,
            &aggregate(&principal.org_id, "api_key", key_id)?,
            ApiKeyCommand::Revoke {
                actor_role: principal.role,
            },
            &principal.metadata(),
        )
        .await
        .map_err(|e| exec_error(e, api_key_error))?;
        store::revoke_api_key(&self.db, key_id)
            .await
            .map_err(unavailable)?;
        self.forget_api_key(key_id);
        Ok(())
    }

    /// The caller's own live sessions.
    pub async fn list_sessions(&self, principal: &Principal) -> Result<Vec<SessionView>, ServiceError> {
        if principal.actor_kind != ActorKind::User {
            return Err(ServiceError::new(
                ErrorClass::PermissionDenied,
                "API keys have no sessions",
            ));
        }
        let rows = store::live_sessions(&self.db, &principal.org_id, &principal.actor_id)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| SessionView {
                current: principal.session_id.as_deref() == Some(r.session_id.as_str()),
                session_id: r.session_id,
                user_id: r.user_id,
                started_at_ms: r.started_at_ms,
                last_refreshed_at_ms: r.last_refreshed_at_ms,
                client_address: r.client_address,
                user_agent: r.user_agent,
            })
            .collect())
    }

    /// Revokes one of the caller's sessions, or (with `sessions:manage`) any
    /// session in the org. Its access tokens stop working at once.
    pub async fn revoke_session(&self, principal: &Principal, session_id: &str) -> Result<(), ServiceError> {
        let not_found = || ServiceError::new(ErrorClass::NotFound, "no such session");
        let (org_id, user_id) = store::session_owner(&self.db, session_id)
            .await
            .map_err(unavailable)?
            .filter(|(org, _)| *org == principal.org_id)
            .ok_or_else(not_found)?;
        let own = principal.actor_kind == ActorKind::User && principal.actor_id == user_id;
        if !own {
            principal.require(Permission::ManageSessions)?;
        }
        let reason = if own {
            RevokeReason::Revoked
        } else {
            RevokeReason::Forced
        };
        execute::<Session>(
            &self.log,
            &aggregate(&org_id, "session", session_id)?,
            SessionCommand::Revoke { reason },
            &principal.metadata(),
        )
        .await
        .map_err(|e| exec_error(e, |_| not_found()))?;
        // Effective here at once; other replicas and services learn it from the event.
        self.revocations.revoke_session(session_id);
        Ok(())
    }
}

/// A member as listed.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub display_name: String,
    pub role: String,
    pub joined_at_ms: i64,
}

/// A member's role on a folder or prompt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct GrantView {
    pub user_id: String,
    /// `folder` or `prompt`.
    pub resource_kind: String,
    /// The folder path or the prompt id.
    pub resource: String,
    pub role: String,
}

/// A pending invitation.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct InvitationView {
    pub invitation_id: String,
    pub org_id: String,
    pub email: String,
    pub role: String,
}

fn org_error(err: OrgError) -> ServiceError {
    match err {
        OrgError::Invalid(v) => ServiceError::invalid(v),
        OrgError::AlreadyExists => ServiceError::new(ErrorClass::AlreadyExists, "the org exists"),
        OrgError::NotFound => ServiceError::new(ErrorClass::NotFound, "not found"),
        OrgError::Forbidden(reason) => ServiceError::new(ErrorClass::PermissionDenied, reason),
        OrgError::Conflict(reason) => ServiceError::new(ErrorClass::FailedPrecondition, reason),
    }
}

impl Identity {
    /// Waits until the identity read model has applied `position`, so the
    /// next request sees the change (read-your-write).
    async fn settle(&self, position: u64) -> Result<(), ServiceError> {
        promptops_eventlog::projection::wait_for_position(
            &self.db,
            store::PROJECTION,
            Context::Identity,
            position,
            promptops_platform::read_your_write::TIMEOUT,
        )
        .await
        .map_err(unavailable)
        .map(|_| ())
    }

    /// Member management acts as a member: API keys are refused.
    fn member_actor(principal: &Principal) -> Result<OrgActor, ServiceError> {
        if principal.actor_kind == ActorKind::User {
            Ok(OrgActor {
                user_id: principal.actor_id.clone(),
            })
        } else {
            Err(ServiceError::new(
                ErrorClass::PermissionDenied,
                "managing members needs a user, not an API key",
            ))
        }
    }

    async fn org_command(&self, principal: &Principal, command: OrgCommand) -> Result<u64, ServiceError> {
        let executed = execute::<Org>(
            &self.log,
            &aggregate(&principal.org_id, "org", &principal.org_id)?,
            command,
            &principal.metadata(),
        )
        .await
        .map_err(|e| exec_error(e, org_error))?;
        self.settle(executed.last_sequence).await?;
        Ok(executed.last_sequence)
    }

    pub async fn list_members(&self, principal: &Principal) -> Result<Vec<MemberView>, ServiceError> {
        principal.require(Permission::Read)?;
        let rows = store::members(&self.db, &principal.org_id)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|r| MemberView {
                user_id: r.user_id,
                email: r.email,
                display_name: r.display_name,
                role: r.role,
                joined_at_ms: r.joined_at_ms,
            })
            .collect())
    }

    pub async fn invite(
        &self,
        principal: &Principal,
        email: &str,
        role: Role,
    ) -> Result<InvitationView, ServiceError> {
        principal.require(Permission::ManageMembers)?;
        let invitation_id = Uuid::now_v7().simple().to_string();
        self.org_command(
            principal,
            OrgCommand::Invite {
                actor: Self::member_actor(principal)?,
                invitation_id: invitation_id.clone(),
                email: email.to_owned(),
                role,
            },
        )
        .await?;
        Ok(InvitationView {
            invitation_id,
            org_id: principal.org_id.clone(),
            email: canonical_email(email),
            role: role.as_str().to_owned(),
        })
    }

    /// The signed-in user joins the org that invited their address.
    pub async fn accept(
        &self,
        principal: &Principal,
        org_id: &str,
        invitation_id: &str,
    ) -> Result<(), ServiceError> {
        let user = Self::member_actor(principal)?;
        let email = store::user_email(&self.db, &user.user_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ServiceError::new(ErrorClass::NotFound, "not found"))?;
        let executed = execute::<Org>(
            &self.log,
            &aggregate(org_id, "org", org_id)
                .map_err(|_| ServiceError::new(ErrorClass::NotFound, "not found"))?,
            OrgCommand::Accept {
                user_id: user.user_id,
                email,
                invitation_id: invitation_id.to_owned(),
            },
            &principal.metadata(),
        )
        .await
        .map_err(|e| exec_error(e, org_error))?;
        self.settle(executed.last_sequence).await?;
        Ok(())
    }

    /// Changes a member's role; their sessions end, so the new role applies
    /// from their next login.
    pub async fn change_role(
        &self,
        principal: &Principal,
        user_id: &str,
        role: Role,
    ) -> Result<(), ServiceError> {
        principal.require(Permission::ManageMembers)?;
        self.org_command(
            principal,
            OrgCommand::ChangeRole {
                actor: Self::member_actor(principal)?,
                user_id: user_id.to_owned(),
                role,
            },
        )
        .await?;
        self.end_sessions(principal, user_id).await
    }

    /// Sets how long the org's audit entries and run payloads are kept (0 =
    /// the default; a field not given stays); the audit and execution
    /// services learn it from the identity stream.
    pub async fn set_retention(
        &self,
        principal: &Principal,
        audit_days: Option<u32>,
        run_payload_days: Option<u32>,
    ) -> Result<u64, ServiceError> {
        principal.require(Permission::ManageSettings)?;
        self.org_command(
            principal,
            OrgCommand::SetRetention {
                actor: Self::member_actor(principal)?,
                audit_days,
                run_payload_days,
            },
        )
        .await
    }

    /// Gives a member `role` on a folder (and everything below it) or on one
    /// prompt, on top of their org role. Services see it through the
    /// identity stream (the `RevocationFeed`) within milliseconds.
    pub async fn grant(
        &self,
        principal: &Principal,
        user_id: &str,
        resource: roles::Resource,
        role: Role,
    ) -> Result<u64, ServiceError> {
        principal.require(Permission::ManageMembers)?;
        self.org_command(
            principal,
            OrgCommand::Grant {
                actor: Self::member_actor(principal)?,
                user_id: user_id.to_owned(),
                resource,
                role,
            },
        )
        .await
    }

    /// Takes a grant back.
    pub async fn revoke_grant(
        &self,
        principal: &Principal,
        user_id: &str,
        resource: roles::Resource,
    ) -> Result<u64, ServiceError> {
        principal.require(Permission::ManageMembers)?;
        self.org_command(
            principal,
            OrgCommand::Revoke {
                actor: Self::member_actor(principal)?,
                user_id: user_id.to_owned(),
                resource,
            },
        )
        .await
    }

    /// The org's resource-level grants.
    pub async fn list_grants(&self, principal: &Principal) -> Result<Vec<GrantView>, ServiceError> {
        principal.require(Permission::Read)?;
        let loaded = promptops_eventlog::aggregate::load::<Org>(
            &self.log,
            &aggregate(&principal.org_id, "org", &principal.org_id)?,
        )
        .await
        .map_err(unavailable)?;
        Ok(loaded
            .state
            .grants
            .into_iter()
            .map(|((user_id, resource_kind, resource), role)| GrantView {
                user_id,
                resource_kind,
                resource,
                role: role.as_str().to_owned(),
            })
            .collect())
    }

    /// Removes a member (or lets a member leave); their sessions end at once.
    pub async fn remove_member(&self, principal: &Principal, user_id: &str) -> Result<(), ServiceError> {
        self.org_command(
            principal,
            OrgCommand::Remove {
                actor: Self::member_actor(principal)?,
                user_id: user_id.to_owned(),
            },
        )
        .await?;
        self.end_sessions(principal, user_id).await
    }

    /// Forces a member out: every session of theirs in the org is revoked
    /// and their access tokens stop working at once.
    pub async fn force_logout(&self, principal: &Principal, user_id: &str) -> Result<(), ServiceError> {
        principal.require(Permission::ManageSessions)?;
        let is_member = store::memberships(&self.db, user_id)
            .await
            .map_err(unavailable)?
            .iter()
            .any(|(org, _)| *org == principal.org_id);
        if !is_member {
            return Err(ServiceError::new(ErrorClass::NotFound, "not found"));
        }
        self.end_sessions(principal, user_id).await
    }

    async fn end_sessions(&self, principal: &Principal, user_id: &str) -> Result<(), ServiceError> {
        let sessions = store::live_session_ids(&self.db, &principal.org_id, user_id)
            .await
            .map_err(unavailable)?;
        for session_id in sessions {
            execute::<Session>(
                &self.log,
                &aggregate(&principal.org_id, "session", &session_id)?,
                SessionCommand::Revoke {
                    reason: RevokeReason::Forced,
                },
                &principal.metadata(),
            )
            .await
            .map_err(|e| exec_error(e, |_| ServiceError::new(ErrorClass::Internal, "revoke session")))?;
            self.revocations.revoke_session(&session_id);
        }
        Ok(())
    }
}

/// Headless initialisation (`PROMPTOPS_INIT_*`): what to create at first start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitConfig {
    pub org: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    pub api_key: Option<String>,
}

impl InitConfig {
    pub fn is_empty(&self) -> bool {
        self.email.is_none() && self.api_key.is_none()
    }
}

impl Identity {
    /// Creates the configured org, owner and owner API key unless they exist
    /// (idempotent: every start may run it).
    pub async fn initialise(&self, init: &InitConfig) -> Result<(), ServiceError> {
        let (Some(email), Some(password_text)) = (&init.email, &init.password) else {
            if init.api_key.is_some() || init.org.is_some() {
                return Err(ServiceError::new(
                    ErrorClass::InvalidArgument,
                    "PROMPTOPS_INIT_ORG and PROMPTOPS_INIT_API_KEY need PROMPTOPS_INIT_USER_EMAIL and PROMPTOPS_INIT_USER_PASSWORD",
                ));
            }
            return Ok(());
        };
        let email = canonical_email(email);
        let org_id = init.org.clone().unwrap_or_else(|| "default".to_owned());
        let user_id = match store::user_by_email(&self.db, &email)
            .await
            .map_err(unavailable)?
        {
            Some(user) => user.user_id,
            None => {
                let created = self
                    .signup_into(
                        &email,
                        password_text,
                        "",
                        &org_id,
                        Some(&org_id),
                        &Client::default(),
                    )
                    .await?;
                tracing::info!(org = %org_id, %email, "initial org and owner created");
                created.user_id
            }
        };
        let Some(secret) = &init.api_key else {
            return Ok(());
        };
        let key_id = secrets::api_key_id(secret)
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorClass::InvalidArgument,
                    "PROMPTOPS_INIT_API_KEY must look like pok_<32 hex digits>_<at least 16 characters>",
                )
            })?
            .to_owned();
        if store::api_key(&self.db, &key_id)
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Ok(());
        }
        let owner = Principal {
            org_id: org_id.clone(),
            actor_kind: ActorKind::User,
            actor_id: user_id,
            role: Role::Owner,
            scopes: roles::scopes_of(Role::Owner)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            session_id: None,
        };
        self.create_api_key_with(
            &owner,
            "initial owner key",
            Role::Owner,
            Vec::new(),
            None,
            (key_id, secret.clone(), secrets::hash(secret)),
        )
        .await?;
        tracing::info!(org = %org_id, "initial owner API key created");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(created_at: i64) -> SigningKey {
        let generated = SigningKey::generate(created_at).unwrap();
        SigningKey::from_pkcs8(&format!("k{created_at}"), created_at, generated.pkcs8_der()).unwrap()
    }

    fn kids(ring: &KeyRing) -> Vec<String> {
        ring.jwks().keys.into_iter().map(|k| k.kid).collect()
    }

    #[test]
    fn keys_are_published_before_they_sign_and_trusted_for_the_overlap_after() {
        let policy = KeyPolicy {
            rotation: Duration::from_secs(100),
            lead: Duration::from_secs(10),
            overlap: Duration::from_secs(50),
        };
        let ring = |now| ring_from(vec![key(0), key(100)], now, policy).unwrap();
        // k100 is published but k0 still signs.
        assert_eq!(ring(105).active().kid(), "k0");
        assert_eq!(kids(&ring(105)), ["k0", "k100"]);
        // k100 signs; k0 is still trusted.
        assert_eq!(ring(115).active().kid(), "k100");
        assert_eq!(kids(&ring(115)), ["k100", "k0"]);
        // After the overlap k0 is gone.
        assert_eq!(kids(&ring(200)), ["k100"]);
        // A fresh install signs with its only key at once.
        assert_eq!(
            ring_from(vec![key(1000)], 1000, policy).unwrap().active().kid(),
            "k1000"
        );
        assert!(ring_from(Vec::new(), 0, policy).is_none());
    }
}
