//! Opaque secrets: refresh tokens and API keys.
//!
//! Both are 256 random bits, shown to their owner once and stored only as a
//! SHA-256 hash (a fast hash is right here: the secrets are random, not
//! guessable like passwords). Comparison is constant-time.
//!
//! - Refresh token: `por_<43 base64url chars>`.
//! - API key: `pok_<key id>_<43 base64url chars>`. The key id (a UUIDv7
//!   without hyphens) finds the stored hash without scanning; the prefix makes
//!   a leaked key recognisable to secret scanners.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

pub const REFRESH_PREFIX: &str = "por_";
pub const API_KEY_PREFIX: &str = "pok_";

fn random_part() -> String {
    let mut bytes = [0_u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The hex SHA-256 of a secret: what is stored.
pub fn hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `secret` hashes to `stored`, in time independent of where they differ.
pub fn matches(secret: &str, stored: &str) -> bool {
    let computed = hash(secret);
    computed.len() == stored.len()
        && computed
            .bytes()
            .zip(stored.bytes())
            .fold(0_u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A new refresh token and its hash.
pub fn new_refresh_token() -> (String, String) {
    let token = format!("{REFRESH_PREFIX}{}", random_part());
    let stored = hash(&token);
    (token, stored)
}

/// A new API key: (key id, secret to show once, hash to store).
pub fn new_api_key() -> (String, String, String) {
    let key_id = uuid::Uuid::now_v7().simple().to_string();
    let secret = format!("{API_KEY_PREFIX}{key_id}_{}", random_part());
    let stored = hash(&secret);
    (key_id, secret, stored)
}

/// The key id inside an API key, if it has the API key shape. Headless
/// initialisation may supply its own secret: any `pok_<id>_<rest>` with a
/// 32-hex-digit id and at least 16 more characters is accepted.
pub fn api_key_id(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(API_KEY_PREFIX)?;
    let (id, random) = rest.split_once('_')?;
    let id_ok = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && random.len() >= 16).then_some(id)
}

/// Whether a bearer credential looks like an API key (rather than a JWT).
pub fn is_api_key(credential: &str) -> bool {
    credential.starts_with(API_KEY_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_stored_as_hashes() {
        let (a, a_hash) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert!(a.starts_with("por_") && a.len() == 4 + 43);
        assert_eq!(a_hash.len(), 64);
        assert!(!a_hash.contains(&a[4..]));
        assert!(matches(&a, &a_hash));
        assert!(!matches(&b, &a_hash));
        assert!(!matches(&a, "short"));
    }

    #[test]
    fn api_keys_carry_their_id() {
        let (id, secret, stored) = new_api_key();
        assert!(is_api_key(&secret));
        assert_eq!(api_key_id(&secret), Some(id.as_str()));
        assert!(matches(&secret, &stored));
        for bad in [
            "",
            "pok_",
            "pok_abc_def",
            "por_x",
            "pok_0123456789abcdef0123456789abcdef_short",
            "eyJhbGciOi.x.y",
        ] {
            assert_eq!(api_key_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn hashes_are_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
