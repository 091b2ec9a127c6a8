//! Provider credentials at rest: envelope encryption with AES-256-GCM.
//!
//! - The **master key** (32 bytes) comes from `PROMPTOPS_MASTER_KEY` (base64)
//!   or `PROMPTOPS_MASTER_KEY_FILE`; on the embedded default without either,
//!   it is created once in `$PROMPTOPS_DATA_DIR/master.key` (mode 0600).
//! - Each org has a **data key**, generated at its first credential and
//!   stored only wrapped by the master key (in the org's catalog events).
//! - A credential is stored sealed by its org's data key, with a masked hint
//!   (`sk-…1234`) for display. The plaintext exists only in memory, in a
//!   [`Secret`] whose `Debug` prints `[redacted]`.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A key that encrypts other keys or credentials.
#[derive(Clone)]
pub struct Key256(Key<Aes256Gcm>);

impl std::fmt::Debug for Key256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key256([redacted])")
    }
}

/// A credential in memory.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Config(String),
    #[error("decryption failed: wrong key or tampered data")]
    Decrypt,
}

impl Key256 {
    pub fn generate() -> Self {
        Self(Aes256Gcm::generate_key(OsRng))
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != 32 {
            return Err(KeyError::Config(format!(
                "a key must be 32 bytes, not {}",
                bytes.len()
            )));
        }
        Ok(Self(*Key::<Aes256Gcm>::from_slice(bytes)))
    }

    /// `nonce ‖ ciphertext ‖ tag`.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        // Encryption with a fresh nonce and an in-memory buffer cannot fail.
        let ciphertext = cipher.encrypt(&nonce, plaintext).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend(ciphertext);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        if sealed.len() < 12 + 16 {
            return Err(KeyError::Decrypt);
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        Aes256Gcm::new(&self.0)
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| KeyError::Decrypt)
    }

    /// A data key wrapped by this (master) key.
    pub fn wrap(&self, data_key: &Key256) -> Vec<u8> {
        self.seal(data_key.0.as_slice())
    }

    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<Key256, KeyError> {
        Key256::from_bytes(&self.open(wrapped)?)
    }
}

/// The master key from the environment, or the embedded default's file.
pub fn master_key(env_value: Option<&str>, file: Option<&Path>, data_dir: &Path) -> Result<Key256, KeyError> {
    if let Some(value) = env_value {
        let bytes = STANDARD
            .decode(value.trim())
            .map_err(|_| KeyError::Config("PROMPTOPS_MASTER_KEY must be base64 of 32 bytes".into()))?;
        return Key256::from_bytes(&bytes)
            .map_err(|e| KeyError::Config(format!("PROMPTOPS_MASTER_KEY: {e}")));
    }
    let (path, create) = match file {
        Some(path) => (path.to_path_buf(), false),
        None => (data_dir.join("master.key"), true),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::Config(format!("{} must hold base64 of 32 bytes", path.display())))?;
            Key256::from_bytes(&bytes).map_err(|e| KeyError::Config(format!("{}: {e}", path.display())))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound && create => {
            let key = Key256::generate();
            std::fs::create_dir_all(data_dir).map_err(|e| KeyError::Config(e.to_string()))?;
            write_private(&path, &STANDARD.encode(key.0.as_slice()))
                .map_err(|e| KeyError::Config(format!("cannot write {}: {e}", path.display())))?;
            tracing::warn!(
                path = %path.display(),
                "created a master key for provider credentials; set PROMPTOPS_MASTER_KEY (or _FILE) in production"
            );
            Ok(key)
        }
        Err(err) => Err(KeyError::Config(format!("cannot read {}: {err}", path.display()))),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

/// `sk-…1234`: enough to recognise a key, never enough to use it.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() < 12 {
        return "…".to_owned();
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_tamper_detection() {
        let master = Key256::generate();
        let data = Key256::generate();
        let wrapped = master.wrap(&data);
        let unwrapped = master.unwrap_key(&wrapped).unwrap();
        let sealed = unwrapped.seal(b"sk-live-secret");
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "no plaintext in the sealed form"
        );
        assert_eq!(data.open(&sealed).unwrap(), b"sk-live-secret");
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(data.open(&tampered).is_err());
        assert!(
            Key256::generate().unwrap_key(&wrapped).is_err(),
            "another master key cannot unwrap"
        );
    }

    #[test]
    fn master_keys_come_from_the_environment_or_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let created = master_key(None, None, dir.path()).unwrap();
        let again = master_key(None, None, dir.path()).unwrap();
        assert_eq!(created.0, again.0, "the file is read back");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("master.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let encoded = STANDARD.encode([7_u8; 32]);
        assert!(master_key(Some(&encoded), None, dir.path()).is_ok());
        assert!(master_key(Some("short"), None, dir.path()).is_err());
        assert!(master_key(None, Some(&dir.path().join("missing")), dir.path()).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("sk-live-1234567890".into());
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(mask(secret.expose()), "sk-…7890");
        assert_eq!(mask("short"), "…");
    }
}
