//! Authentication in every service, written once.
//!
//! [`Authenticator::authenticate`] turns the `authorization: Bearer …`
//! metadata of a gRPC request into a verified [`Caller`]:
//!
//! - an access token is verified here, with the gateway's public keys
//!   (`PROMPTOPS_JWKS_URL`, fetched at start, every 5 minutes, and again when
//!   a token names a key not seen yet), through a cache of verified tokens;
//! - an API key is introspected through the gateway's `IdentityService`
//!   (`PROMPTOPS_GATEWAY_URL`), the answer cached for a minute;
//! - revocations arrive as identity events through a
//!   [`RevocationFeed`](crate::revocation::RevocationFeed): it revokes
//!   sessions (`SessionRevoked`) and drops cached API keys (`ApiKeyRevoked`,
//!   `ApiKeyRotated`). Requests wait (503) until the tail has caught up
//!   once after start, so a restart never forgets a revocation.
//!
//! Every refusal is the same UNAUTHENTICATED answer.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::upstream::Upstream;
use promptops_auth::roles::Role;
use promptops_auth::secrets;
use promptops_auth::tokens::{CachingVerifier, Jwks, TokenError, Verifier};
use promptops_eventlog::EventLog;
use promptops_proto::common::v1::ActorKind;
use promptops_proto::identity::v1::IntrospectCredentialRequest;
use promptops_proto::identity::v1::identity_service_client::IdentityServiceClient;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;

use crate::caller::Caller;
use crate::config::{ConfigError, Env, ServiceName};
use crate::errors::{ErrorClass, ServiceError};
use crate::revocation::RevocationFeed;

/// Where the keys and the introspection API are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub jwks_url: String,
    /// How often the JWKS is fetched again (`PROMPTOPS_JWKS_REFRESH_SECS`);
    /// must stay below the gateway's signing-key publication lead.
    pub jwks_refresh: Duration,
    pub issuer: String,
    pub audience: String,
    pub gateway_url: String,
    /// The secret services present when acting for a caller who is no
    /// longer connected (an evaluation run resumed after a restart):
    /// `PROMPTOPS_SERVICE_SECRET`, or the file `PROMPTOPS_SERVICE_SECRET_FILE`
    /// (default `$PROMPTOPS_DATA_DIR/service.secret`, created on first use).
    pub service_secret: ServiceSecretSource,
}

/// Where the service secret comes from; its value is never printed.
#[derive(Clone, PartialEq, Eq)]
pub enum ServiceSecretSource {
    Value(String),
    /// Read from the file; `create` makes one when it does not exist.
    File {
        path: std::path::PathBuf,
        create: bool,
    },
}

impl std::fmt::Debug for ServiceSecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceSecretSource::Value(_) => f.write_str("Value([redacted])"),
            ServiceSecretSource::File { path, create } => f
                .debug_struct("File")
                .field("path", path)
                .field("create", create)
                .finish(),
        }
    }
}

/// The prefix of a service credential: `pos_<secret>`.
pub const SERVICE_CREDENTIAL_PREFIX: &str = "pos_";
/// The metadata naming whom a service credential acts for:
/// `<org id> <actor kind> <actor id> <role> <scope,scope,…>`.
pub const ACT_AS_HEADER: &str = "x-promptops-act-as";
const SERVICE_SECRET_MIN_CHARS: usize = 32;

impl ServiceSecretSource {
    fn load(&self) -> Result<String, String> {
        let (secret, origin) = match self {
            ServiceSecretSource::Value(value) => {
                (value.trim().to_owned(), "PROMPTOPS_SERVICE_SECRET".to_owned())
            }
            ServiceSecretSource::File { path, create } => match std::fs::read_to_string(path) {
                Ok(text) => (text.trim().to_owned(), path.display().to_string()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound && *create => {
                    create_secret_file(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    (text.trim().to_owned(), path.display().to_string())
                }
                Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
            },
        };
        if secret.chars().count() < SERVICE_SECRET_MIN_CHARS {
            return Err(format!(
                "the service secret ({origin}) must have at least {SERVICE_SECRET_MIN_CHARS} characters"
            ));
        }
        Ok(secret)
    }
}

/// Writes a new random secret unless another process got there first.
fn create_secret_file(path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    // The file appears complete: written under another name, then linked.
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = options.open(&temporary)?;
    file.write_all(secrets::new_refresh_token().0.as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => Err(err),
        _ => Ok(()),
    }
}

impl AuthConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let http = env.socket_addr("PROMPTOPS_HTTP_ADDR", "127.0.0.1:8080")?;
        let host = if http.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            http.ip().to_string()
        };
        let default_jwks = format!("http://{host}:{}/.well-known/jwks.json", http.port());
        Ok(Self {
            jwks_url: env.http_url("PROMPTOPS_JWKS_URL", &default_jwks)?,
            jwks_refresh: env
                .seconds("PROMPTOPS_JWKS_REFRESH_SECS", 300)?
                .max(Duration::from_secs(1)),
            issuer: env.string("PROMPTOPS_AUTH_ISSUER", "promptops"),
            audience: env.string("PROMPTOPS_AUTH_AUDIENCE", "promptops-api"),
            gateway_url: ServiceName::Gateway.url(env)?,
            service_secret: match (
                env.get("PROMPTOPS_SERVICE_SECRET"),
                env.get("PROMPTOPS_SERVICE_SECRET_FILE"),
            ) {
                (Some(value), _) => ServiceSecretSource::Value(value.to_owned()),
                (None, Some(path)) => ServiceSecretSource::File {
                    path: path.into(),
                    create: false,
                },
                (None, None) => ServiceSecretSource::File {
                    path: std::path::PathBuf::from(env.string("PROMPTOPS_DATA_DIR", "./data"))
                        .join("service.secret"),
                    create: true,
                },
            },
        })
    }
}

const JWKS_MIN_INTERVAL: Duration = Duration::from_secs(10);
const API_KEY_TTL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    http: reqwest::Client,
    verifier: RwLock<Option<CachingVerifier>>,
    fetched_at: Mutex<Option<Instant>>,
    revocations: RevocationFeed,
    api_keys: moka::sync::Cache<String, Caller>,
    identity: IdentityServiceClient<Upstream>,
    service_secret: std::sync::OnceLock<Result<String, String>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn refused() -> ServiceError {
    ServiceError::new(ErrorClass::Unauthenticated, "the credential is not valid")
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Result<Self, ServiceError> {
        let channel = Upstream::lazy(&config.gateway_url, Some(Duration::from_secs(10)))
            .map_err(|e| ServiceError::new(ErrorClass::Internal, format!("PROMPTOPS_GATEWAY_URL: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .map_err(|e| ServiceError::new(ErrorClass::Internal, e.to_string()))?,
                verifier: RwLock::new(None),
                fetched_at: Mutex::new(None),
                revocations: RevocationFeed::new(),
                api_keys: moka::sync::Cache::builder()
                    .max_capacity(100_000)
                    .time_to_live(API_KEY_TTL)
                    .support_invalidation_closures()
                    .build(),
                identity: IdentityServiceClient::new(channel),
                service_secret: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Starts the JWKS refresher and the revocation tail on `tasks`.
    pub fn start(&self, log: EventLog, tasks: &TaskTracker, shutdown: CancellationToken) {
        let this = self.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                if let Err(err) = this.refresh_keys(true).await {
                    tracing::warn!(error = %err, "cannot fetch the JWKS yet");
                }
                let wait = if this.has_keys() {
                    this.inner.config.jwks_refresh
                } else {
                    Duration::from_secs(1)
                };
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
        });
        let this = self.clone();
        let feed = self.inner.revocations.clone();
        tasks.spawn(async move { feed.follow(log, shutdown, |key_id| this.forget_key(key_id)).await });
    }

    fn has_keys(&self) -> bool {
        self.inner.verifier.read().map(|v| v.is_some()).unwrap_or(false)
    }

    /// `/readyz`: keys loaded and revocations caught up.
    pub fn check_ready(&self) -> Result<(), String> {
        if !self.has_keys() {
            return Err(format!("no signing keys from {} yet", self.inner.config.jwks_url));
        }
        if !self.inner.revocations.is_ready() {
            return Err("the revocation list is still catching up".into());
        }
        Ok(())
    }

    async fn refresh_keys(&self, force: bool) -> Result<(), String> {
        {
            let have_keys = self.has_keys();
            let mut fetched = self.inner.fetched_at.lock().map_err(|_| "poisoned".to_owned())?;
            // Without keys every request needs them: no rate limit then.
            if !force && have_keys && fetched.is_some_and(|at| at.elapsed() < JWKS_MIN_INTERVAL) {
                return Ok(());
            }
            *fetched = Some(Instant::now());
        }
        let jwks: Jwks = self
            .inner
            .http
            .get(&self.inner.config.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let verifier = CachingVerifier::new(
            Verifier::new(&jwks, &self.inner.config.issuer, &self.inner.config.audience),
            100_000,
        );
        if let Ok(mut slot) = self.inner.verifier.write() {
            *slot = Some(verifier);
        }
        Ok(())
    }

    fn verify_token(&self, token: &str) -> Result<Arc<promptops_auth::tokens::Claims>, TokenError> {
        let verifier = self
            .inner
            .verifier
            .read()
            .ok()
            .and_then(|v| v.clone())
            .ok_or(TokenError::UnknownKey)?;
        verifier.verify(token)
    }

    /// The verified caller of a request.
    pub async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, ServiceError> {
        let mut caller = self.verify_caller(metadata).await?;
        caller.origin = crate::caller::Origin::from_metadata(metadata);
        Ok(caller)
    }

    async fn verify_caller(&self, metadata: &MetadataMap) -> Result<Caller, ServiceError> {
        let credential = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ServiceError::new(
                    ErrorClass::Unauthenticated,
                    "send authorization: Bearer <access token or API key>",
                )
            })?;
        if !self.inner.revocations.is_ready() {
            return Err(ServiceError::new(
                ErrorClass::Unavailable,
                "starting: the revocation list is catching up",
            ));
        }
        // A service acting for a caller: the shared secret, and the caller
        // as they are now (a revoked key or a removed member is refused; a
        // lowered role applies).
        if let Some(secret) = credential.strip_prefix(SERVICE_CREDENTIAL_PREFIX) {
            return self.acting_service(secret, metadata);
        }
        if secrets::is_api_key(credential) {
            return self.introspect(credential).await;
        }
        let claims = match self.verify_token(credential) {
            Err(TokenError::UnknownKey) => {
                // A key rotated in, or none fetched yet: look again (rate-limited).
                let _ = self.refresh_keys(false).await;
                self.verify_token(credential)
            }
            other => other,
        }
        .map_err(|err| {
            tracing::debug!(%err, "access token refused");
            refused()
        })?;
        self.inner.revocations.check(&claims).map_err(|_| refused())?;
        let grants = self.inner.revocations.grants(&claims.org, &claims.sub);
        Ok(Caller::new(
            claims.org.clone(),
            ActorKind::User,
            claims.sub.clone(),
            Role::parse(&claims.role).ok_or_else(refused)?,
            claims.scopes.clone(),
        )
        .with_grants(grants))
    }

    /// The verified caller, if allowed `permission`, and the credential
    /// they presented (to pass on to other services as them).
    pub async fn authorize(
        &self,
        metadata: &MetadataMap,
        permission: promptops_auth::roles::Permission,
    ) -> Result<(Caller, String), ServiceError> {
        let caller = self.authenticate(metadata).await?;
        caller.require(permission)?;
        let credential = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' ').map(|(_, c)| c.trim().to_owned()))
            .unwrap_or_default();
        Ok((caller, credential))
    }

    fn service_secret(&self) -> Result<&str, ServiceError> {
        self.inner
            .service_secret
            .get_or_init(|| self.inner.config.service_secret.load())
            .as_deref()
            .map_err(|e| ServiceError::new(ErrorClass::Unavailable, e.clone()))
    }

    /// The credential this service presents to act for a caller (with
    /// [`crate::caller::acting_for`]).
    pub fn service_credential(&self) -> Result<String, ServiceError> {
        Ok(format!("{SERVICE_CREDENTIAL_PREFIX}{}", self.service_secret()?))
    }

    /// A service credential: the secret must match; the caller is the one
    /// the act-as metadata names.
    fn acting_service(&self, presented: &str, metadata: &MetadataMap) -> Result<Caller, ServiceError> {
        let secret = self.service_secret().map_err(|err| {
            tracing::warn!(%err, "a service credential was presented but no service secret is available");
            refused()
        })?;
        if !secrets::matches(presented, &secrets::hash(secret)) {
            return Err(refused());
        }
        let caller = metadata
            .get(ACT_AS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::caller::parse_act_as)
            .ok_or_else(refused)?;
        let feed = &self.inner.revocations;
        match ActorKind::try_from(caller.actor.kind) {
            Ok(ActorKind::ApiKey) if feed.is_key_revoked(&caller.actor.id) => Err(refused()),
            Ok(ActorKind::User) => {
                let current = feed
                    .member_role(&caller.org_id, &caller.actor.id)
                    .ok_or_else(refused)?;
                let grants = feed.grants(&caller.org_id, &caller.actor.id);
                let role = caller.role.min(current);
                Ok(Caller { role, ..caller }.with_grants(grants))
            }
            _ => Ok(caller),
        }
    }

    async fn introspect(&self, credential: &str) -> Result<Caller, ServiceError> {
        let key = secrets::hash(credential);
        if let Some(caller) = self.inner.api_keys.get(&key) {
            return Ok(caller);
        }
        let response = self
            .inner
            .identity
            .clone()
            .introspect_credential(IntrospectCredentialRequest {
                credential: credential.to_owned(),
            })
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unauthenticated => refused(),
                _ => ServiceError::unavailable("the identity service", status.message()),
            })?
            .into_inner();
        let role = crate::caller::role_from_pb(response.role).ok_or_else(refused)?;
        let kind = if response.actor_kind == "api_key" {
            ActorKind::ApiKey
        } else {
            ActorKind::User
        };
        let caller = Caller::new(response.org_id, kind, response.actor_id, role, response.scopes);
        self.inner.api_keys.insert(key, caller.clone());
        Ok(caller)
    }

    fn forget_key(&self, key_id: &str) {
        let key_id = key_id.to_owned();
        let _ = self
            .inner
            .api_keys
            .invalidate_entries_if(move |_, caller| caller.actor.id == key_id);
    }
}

#[cfg(test)]
mod tests {
    use promptops_auth::roles::Role;
    use promptops_proto::common::v1::ActorKind;

    use super::*;
    use crate::caller::{Caller, act_as};

    fn authenticator(dir: &std::path::Path) -> Authenticator {
        let config = AuthConfig {
            jwks_url: "http://127.0.0.1:9/jwks".into(),
            jwks_refresh: Duration::from_secs(60),
            issuer: "promptops".into(),
            audience: "promptops-api".into(),
            gateway_url: "http://127.0.0.1:9".into(),
            service_secret: ServiceSecretSource::File {
                path: dir.join("service.secret"),
                create: true,
            },
        };
        Authenticator::new(config).unwrap_or_else(|e| unreachable!("{e:?}"))
    }

    fn metadata(credential: &str, act_as: Option<&str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert(
            "authorization",
            format!("Bearer {credential}")
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        if let Some(text) = act_as {
            metadata.insert(ACT_AS_HEADER, text.parse().unwrap_or_else(|_| unreachable!()));
        }
        metadata
    }

    #[tokio::test]
    async fn service_credentials_act_for_the_named_caller_only_with_the_secret() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let auth = authenticator(dir.path());
        let credential = auth
            .service_credential()
            .unwrap_or_else(|e| unreachable!("{e:?}"));
        // A second process on the same data dir reads the same secret.
        assert_eq!(
            authenticator(dir.path()).service_credential().ok(),
            Some(credential.clone())
        );
        auth.inner.revocations.mark_ready_for_tests();
        auth.inner
            .revocations
            .set_member("org1", "ada", Some(Role::Admin));
        let ada = Caller::new("org1", ActorKind::User, "ada", Role::Editor, vec!["read".into()]);
        let text = act_as(&ada);

        let caller = auth.authenticate(&metadata(&credential, Some(&text))).await;
        assert_eq!(caller.ok(), Some(ada.clone()));
        // A lowered role applies at once; a removed member is refused.
        auth.inner
            .revocations
            .set_member("org1", "ada", Some(Role::Viewer));
        let lowered = auth.authenticate(&metadata(&credential, Some(&text))).await;
        assert_eq!(lowered.ok().map(|c| c.role), Some(Role::Viewer));
        auth.inner.revocations.set_member("org1", "ada", None);
        let removed = auth.authenticate(&metadata(&credential, Some(&text))).await;
        assert_eq!(removed.err().map(|e| e.class), Some(ErrorClass::Unauthenticated));
        for (credential, act_as) in [
            (format!("{credential}x"), Some(text.as_str())),
            (
                "pos_guess-guess-guess-guess-guess-guess".to_owned(),
                Some(text.as_str()),
            ),
            (credential.clone(), None),
            (credential.clone(), Some("org1 user ada emperor ")),
        ] {
            let refused = auth.authenticate(&metadata(&credential, act_as)).await;
            assert_eq!(
                refused.err().map(|e| e.class),
                Some(ErrorClass::Unauthenticated),
                "{act_as:?}"
            );
        }
    }

    #[test]
    fn a_short_secret_is_refused_and_never_printed() {
        let source = ServiceSecretSource::Value("too short".into());
        assert!(source.load().is_err_and(|e| e.contains("at least 32")));
        assert!(!format!("{source:?}").contains("too short"));
    }
}
