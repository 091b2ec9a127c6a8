//! Passwords: argon2id hashes (PHC strings) and the password policy.
//!
//! The policy follows NIST SP 800-63B: length matters, composition rules do
//! not. A password must have 12 to 128 characters, must not be one of the
//! most common passwords, must not contain the account's email name, and must
//! not be one character repeated. Every reason that applies is returned.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 128;

/// Passwords seen most often in breaches (lower-case); any password equal to
/// one of these, ignoring case, is refused.
const COMMON: &[&str] = &[
    "123456789012",
    "password1234",
    "qwertyuiopas",
    "111111111111",
    "000000000000",
    "123123123123",
    "passwordpassword",
    "iloveyou1234",
    "qwerty123456",
    "1q2w3e4r5t6y",
    "abc123abc123",
    "letmein12345",
    "welcome12345",
    "administrator",
    "changeme1234",
    "password123!",
    "qwertyuiop12",
    "monkey123456",
    "dragon123456",
    "football1234",
    "baseball1234",
    "sunshine1234",
    "princess1234",
    "trustno1trustno1",
    "1234567890ab",
    "zaq12wsxcde3",
    "1qaz2wsx3edc",
    "passw0rd1234",
    "p@ssw0rd1234",
    "superman1234",
];

/// Why a password is refused; each reason is a sentence for the user.
pub fn check_policy(password: &str, email: &str) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        reasons.push(format!("must have at least {MIN_CHARS} characters (has {chars})"));
    }
    if chars > MAX_CHARS {
        reasons.push(format!("must have at most {MAX_CHARS} characters"));
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        reasons.push("is one of the most common passwords".to_owned());
    }
    let name = email.split('@').next().unwrap_or_default().to_lowercase();
    if name.chars().count() >= 3 && lower.contains(&name) {
        reasons.push("must not contain your email name".to_owned());
    }
    let mut distinct = password.chars().collect::<Vec<_>>();
    distinct.sort_unstable();
    distinct.dedup();
    if !password.is_empty() && distinct.len() == 1 {
        reasons.push("must not be one character repeated".to_owned());
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons) }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// An argon2id hash of `password` with a fresh salt, as a PHC string.
pub fn hash(password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Whether `password` matches the stored PHC hash. A malformed hash never
/// matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A hash to verify against when the account does not exist, so that a
/// login for an unknown email costs as much as one for a known email.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("decoy password that never matches").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse battery staple").unwrap();
        let b = hash("correct horse battery staple").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify("correct horse battery staple", &a));
        assert!(!verify("correct horse battery stapl", &a));
        assert!(!verify("anything", "not a hash"));
        assert!(!verify("", decoy_hash()));
    }

    #[test]
    fn the_policy_names_every_reason() {
        assert!(check_policy("correct horse battery staple", "ada@example.com").is_ok());
        assert!(check_policy("ünïcødé-pässwörd", "ada@example.com").is_ok());
        let reasons = check_policy("short", "ada@example.com").unwrap_err();
        assert_eq!(reasons, ["must have at least 12 characters (has 5)"]);
        let reasons = check_policy("Password1234", "x@example.com").unwrap_err();
        assert_eq!(
            reasons,
            ["is one of the most common passwords"],
            "case does not matter"
        );
        let reasons = check_policy("P@ssw0rd1234", "x@example.com").unwrap_err();
        assert_eq!(reasons, ["is one of the most common passwords"]);
        let reasons = check_policy("my-name-is-lovelace!", "lovelace@example.com").unwrap_err();
        assert_eq!(reasons, ["must not contain your email name"]);
        let reasons = check_policy("aaaaaaaaaaaaaaaa", "x@example.com").unwrap_err();
        assert_eq!(reasons, ["must not be one character repeated"]);
        let reasons = check_policy(&"x".repeat(129), "x@example.com").unwrap_err();
        assert_eq!(reasons.len(), 2);
    }
}
