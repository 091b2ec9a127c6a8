//! Access tokens: JWTs signed with EdDSA (Ed25519).
//!
//! - [`KeyRing`] signs with its active key and publishes every key still
//!   trusted in the JWKS document (`/.well-known/jwks.json`). Rotation adds a
//!   new active key and keeps the previous ones for an overlap window (at
//!   least the longest token lifetime plus clock skew), so tokens signed just
//!   before a rotation keep working and no replica ever rejects a fresh one.
//! - [`Verifier`] is built from a JWKS document and checks, in this order:
//!   the header's algorithm is exactly `EdDSA` (so `none` and HS256-with-the-
//!   public-key are refused before any key is used), the `kid` is known, the
//!   signature, issuer, audience, expiry and not-before (30 s leeway), and a
//!   lifetime of at most 15 minutes.
//! - [`Revocations`] holds revoked sessions and users logged out by force, so
//!   a verified token can still be refused before it expires.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The longest an access token may live.
pub const MAX_LIFETIME_SECS: i64 = 15 * 60;
/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id, or the API key id for tokens minted for a key.
    pub sub: String,
    pub org: String,
    pub role: String,
    pub scopes: Vec<String>,
    /// Unique per token.
    pub jti: String,
    /// The session (refresh-token family) the token was issued in.
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// Why a token was refused. The messages are safe to show: they never echo
/// the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token must be signed with EdDSA")]
    Algorithm,
    #[error("the token names no signing key")]
    MissingKeyId,
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    WrongIssuer,
    #[error("the token is meant for another audience")]
    WrongAudience,
    #[error("the token lives longer than 15 minutes")]
    TooLong,
    #[error("the token's session was revoked")]
    Revoked,
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// One Ed25519 key pair with its id.
pub struct SigningKey {
    kid: String,
    created_at: i64,
    pkcs8: Vec<u8>,
    public: [u8; 32],
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key, created at `now` (Unix seconds).
    pub fn generate(now: i64) -> Result<Self, TokenError> {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let der = key
            .to_pkcs8_der()
            .map_err(|e| TokenError::Signing(e.to_string()))?
            .as_bytes()
            .to_vec();
        Self::from_pkcs8(&uuid::Uuid::now_v7().simple().to_string(), now, &der)
    }

    /// A stored key (its PKCS#8 DER private key).
    pub fn from_pkcs8(kid: &str, created_at: i64, der: &[u8]) -> Result<Self, TokenError> {
        let key =
            ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok(Self {
            kid: kid.to_owned(),
            created_at,
            pkcs8: der.to_vec(),
            public: key.verifying_key().to_bytes(),
            encoding: EncodingKey::from_ed_der(der),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn created_at(&self) -> i64 {
        self.created_at
    }

    /// The private key as PKCS#8 DER, to store (encrypted) and load again.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.public),
            kid: self.kid.clone(),
            alg: "EdDSA".into(),
            key_use: "sig".into(),
        }
    }
}

/// A public key in a JWKS document (RFC 8037 OKP key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub key_use: String,
}

/// The JWKS document.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The keys an issuer signs with: one active, the previous ones still
/// trusted, and upcoming ones already published (so that verifiers know a
/// key before the first token it signs).
#[derive(Debug)]
pub struct KeyRing {
    active: SigningKey,
    previous: Vec<SigningKey>,
    upcoming: Vec<SigningKey>,
}

impl KeyRing {
    pub fn new(active: SigningKey) -> Self {
        Self {
            active,
            previous: Vec::new(),
            upcoming: Vec::new(),
        }
    }

    /// Publishes `next` in the JWKS without signing with it yet.
    pub fn publish(&mut self, next: SigningKey) {
        self.upcoming.push(next);
    }

    pub fn active(&self) -> &SigningKey {
        &self.active
    }

    /// Makes `next` the signing key; the old one stays trusted.
    pub fn rotate(&mut self, next: SigningKey) {
        let old = std::mem::replace(&mut self.active, next);
        self.previous.insert(0, old);
    }

    /// Adds an older key to the trusted previous ones (loading a stored ring).
    pub fn rotate_back(&mut self, older: SigningKey) {
        self.previous.push(older);
    }

    /// Stops trusting previous keys replaced before `cutoff` (Unix seconds):
    /// call with `now - overlap`, the overlap at least the token lifetime.
    pub fn retire_before(&mut self, cutoff: i64, replaced_at: impl Fn(&SigningKey) -> i64) {
        self.previous.retain(|key| replaced_at(key) >= cutoff);
    }

    /// Every trusted key: active, upcoming, previous.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: std::iter::once(&self.active)
                .chain(&self.upcoming)
                .chain(&self.previous)
                .map(SigningKey::jwk)
                .collect(),
        }
    }

    /// Signs `claims` with the active key.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        if claims.exp - claims.nbf > MAX_LIFETIME_SECS || claims.exp <= claims.nbf {
            return Err(TokenError::TooLong);
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.active.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.active.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))
    }
}

/// Verifies access tokens against a JWKS document.
#[derive(Clone)]
pub struct Verifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// Trusts the Ed25519 keys of `jwks` (others are ignored) for tokens of
    /// `issuer` meant for `audience`.
    pub fn new(jwks: &Jwks, issuer: &str, audience: &str) -> Self {
        let keys = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519")
            .filter_map(|k| Some((k.kid.clone(), DecodingKey::from_ed_components(&k.x).ok()?)))
            .collect();
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Self { keys, validation }
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::MissingKeyId)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidEddsaKey => TokenError::BadSignature,
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::ImmatureSignature => TokenError::NotYetValid,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
                _ => TokenError::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.exp - claims.nbf > MAX_LIFETIME_SECS {
            return Err(TokenError::TooLong);
        }
        Ok(claims)
    }
}

/// Sessions and users whose tokens are refused before they expire. Kept
/// fresh by identity events (session revoked, member logged out by force).
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    sessions: HashSet<String>,
    /// (org, user) → tokens issued before this time (Unix seconds) are refused.
    users: HashMap<(String, String), i64>,
}

impl Revocations {
    pub fn revoke_session(&mut self, sid: &str) {
        self.sessions.insert(sid.to_owned());
    }

    pub fn revoke_user(&mut self, org: &str, user: &str, at: i64) {
        let entry = self.users.entry((org.to_owned(), user.to_owned())).or_insert(at);
        *entry = (*entry).max(at);
    }

    /// `Err(Revoked)` when the token's session or user was revoked.
    pub fn check(&self, claims: &Claims) -> Result<(), TokenError> {
        if self.sessions.contains(&claims.sid) {
            return Err(TokenError::Revoked);
        }
        match self.users.get(&(claims.org.clone(), claims.sub.clone())) {
            Some(at) if claims.iat <= *at => Err(TokenError::Revoked),
            _ => Ok(()),
        }
    }

    /// Forgets revocations whose tokens have all expired by `now`.
    pub fn prune(&mut self, now: i64) {
        self.users
            .retain(|_, at| *at + MAX_LIFETIME_SECS + LEEWAY_SECS as i64 > now);
    }
}

/// A [`Verifier`] that remembers tokens it has verified, until they expire.
///
/// Clients send the same access token with every request for up to 15
/// minutes; checking its signature once is enough. The cache key is the
/// token's SHA-256, the value its claims; expiry is checked on every hit, and
/// revocation is the caller's check (it must run per request).
#[derive(Clone)]
pub struct CachingVerifier {
    verifier: Verifier,
    cache: moka::sync::Cache<[u8; 32], std::sync::Arc<Claims>>,
}

impl std::fmt::Debug for CachingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingVerifier")
            .field("verifier", &self.verifier)
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl CachingVerifier {
    /// Remembers up to `capacity` tokens.
    pub fn new(verifier: Verifier, capacity: u64) -> Self {
        Self {
            verifier,
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(std::time::Duration::from_secs(
                    u64::try_from(MAX_LIFETIME_SECS).unwrap_or(900) + LEEWAY_SECS,
                ))
                .build(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<std::sync::Arc<Claims>, TokenError> {
        use sha2::Digest as _;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if let Some(claims) = self.cache.get(&key) {
            if claims.exp + LEEWAY_SECS as i64 >= now {
                return Ok(claims);
            }
            self.cache.invalidate(&key);
            return Err(TokenError::Expired);
        }
        let claims = std::sync::Arc::new(self.verifier.verify(token)?);
        self.cache.insert(key, std::sync::Arc::clone(&claims));
        Ok(claims)
    }
}
