//! Credentials, written once for every service.
//!
//! - [`tokens`]: JWT access tokens signed with EdDSA (Ed25519), a key ring
//!   with rotation and an overlap window, the JWKS document, and the
//!   verifier every service runs (algorithm pinned, `kid` required, issuer,
//!   audience, expiry and not-before checked);
//! - [`secrets`]: opaque refresh tokens and API keys — random, shown once,
//!   stored only as SHA-256 hashes, compared in constant time;
//! - [`password`]: argon2id hashing and the password policy;
//! - [`roles`]: roles, permissions and the one matrix that relates them, plus
//!   resource-level grants.
//!
//! Pure and synchronous: no I/O, so each piece is tested on its own. The
//! identity service stores what these produce; every service verifies with
//! them.

pub mod password;
pub mod roles;
pub mod secrets;
pub mod tokens;
