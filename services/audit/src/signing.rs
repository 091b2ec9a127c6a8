//! Signed checkpoints of the chains' heads.
//!
//! A hash chain alone shows that rows were edited, removed or reordered —
//! unless whoever edited them recomputed every hash after the edit. A signed
//! checkpoint pins a chain's head `(sequence, hash)` at a moment with an
//! Ed25519 signature by a key that does not live in the database
//! (`PROMPTOPS_AUDIT_SIGNING_KEY`, or the file `PROMPTOPS_AUDIT_SIGNING_KEY_FILE`,
//! by default `<data dir>/audit-signing.key`, created on first start). A
//! rewritten chain then disagrees with a checkpoint it cannot forge.
//!
//! The service signs every chain whose head moved, every
//! `PROMPTOPS_AUDIT_CHECKPOINT_SECS` (60 s), and before pruning (retention).

use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use promptops_platform::config::{ConfigError, Env};
use promptops_platform::db::{to_u64, unix_ms};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::chain::{TrustedCheckpoint, hex};

/// Where the signing key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A 32-byte seed in hex.
    Value(String),
    File {
        path: PathBuf,
        create: bool,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Value(_) => f.write_str("Value(<redacted>)"),
            KeySource::File { path, create } => f
                .debug_struct("File")
                .field("path", path)
                .field("create", create)
                .finish(),
        }
    }
}

impl KeySource {
    pub fn from_env(env: &Env) -> Self {
        match (
            env.get("PROMPTOPS_AUDIT_SIGNING_KEY"),
            env.get("PROMPTOPS_AUDIT_SIGNING_KEY_FILE"),
        ) {
            (Some(value), _) => KeySource::Value(value.to_owned()),
            (None, Some(path)) => KeySource::File {
                path: path.into(),
                create: false,
            },
            (None, None) => KeySource::File {
                path: PathBuf::from(env.string("PROMPTOPS_DATA_DIR", "./data")).join("audit-signing.key"),
                create: true,
            },
        }
    }

    /// Loads the key (creating the default file on first use).
    pub fn load(&self) -> Result<Signer, ConfigError> {
        let (variable, hex_seed) = match self {
            KeySource::Value(value) => ("PROMPTOPS_AUDIT_SIGNING_KEY", value.trim().to_owned()),
            KeySource::File { path, create } => {
                let variable = "PROMPTOPS_AUDIT_SIGNING_KEY_FILE";
                match std::fs::read_to_string(path) {
                    Ok(text) => (variable, text.trim().to_owned()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && *create => {
                        let seed: [u8; 32] = rand::random();
                        let text = hex(&seed);
                        write_private(path, &text).map_err(|e| ConfigError {
                            variable: variable.into(),
                            value: path.display().to_string(),
                            reason: format!("cannot create the signing key: {e}"),
                        })?;
                        (variable, text)
                    }
                    Err(e) => {
                        return Err(ConfigError {
                            variable: variable.into(),
                            value: path.display().to_string(),
                            reason: format!("cannot read the signing key: {e}"),
                        });
                    }
                }
            }
        };
        let seed = parse_hex::<32>(&hex_seed).ok_or_else(|| ConfigError {
            variable: variable.into(),
            value: "<redacted>".into(),
            reason: "expected 64 hex digits (a 32-byte Ed25519 seed)".into(),
        })?;
        Ok(Signer::from_seed(&seed))
    }
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    std::io::Write::write_all(&mut file, text.as_bytes())
}

/// The checkpoint signer and verifier.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    public: VerifyingKey,
    key_id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("key_id", &self.key_id).finish()
    }
}

/// A checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CheckpointRow {
    pub chain_sequence: i64,
    pub head_hash: String,
    pub signed_at_ms: i64,
    pub key_id: String,
    pub signature: String,
}

impl Signer {
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key();
        let key_id = hex(&sha2::Digest::finalize(sha2::Digest::chain_update(
            sha2::Sha256::default(),
            public.as_bytes(),
        )))[..16]
            .to_owned();
        Self { key, public, key_id }
    }

    pub fn public_key_hex(&self) -> String {
        hex(self.public.as_bytes())
    }

    fn message(org_id: &str, chain: &str, sequence: i64, head_hash: &str, signed_at_ms: i64) -> Vec<u8> {
        format!("promptops.audit.checkpoint.v1\n{org_id}\n{chain}\n{sequence}\n{head_hash}\n{signed_at_ms}")
            .into_bytes()
    }

    pub fn sign(
        &self,
        org_id: &str,
        chain: &str,
        sequence: i64,
        head_hash: &str,
        signed_at_ms: i64,
    ) -> String {
        let signature = self
            .key
            .sign(&Self::message(org_id, chain, sequence, head_hash, signed_at_ms));
        hex(&signature.to_bytes())
    }

    /// Whether `row` carries this key's valid signature for `org_id`'s `chain`.
    pub fn verify(&self, org_id: &str, chain: &str, row: &CheckpointRow) -> bool {
        let Some(bytes) = parse_hex::<64>(&row.signature) else {
            return false;
        };
        row.key_id == self.key_id
            && self
                .public
                .verify(
                    &Self::message(
                        org_id,
                        chain,
                        row.chain_sequence,
                        &row.head_hash,
                        row.signed_at_ms,
                    ),
                    &Signature::from_bytes(&bytes),
                )
                .is_ok()
    }
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Signs the head of every chain that moved since its last checkpoint.
/// Returns how many checkpoints were written.
pub async fn sign_moved_heads(pool: &AnyPool, signer: &Signer) -> Result<usize, sqlx::Error> {
    let heads: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT c.org_id, c.chain, c.length, c.head_hash FROM audit_chains c
         WHERE c.length > COALESCE((SELECT MAX(k.chain_sequence) FROM audit_checkpoints k
                                    WHERE k.org_id = c.org_id AND k.chain = c.chain), 0)",
    )
    .fetch_all(pool)
    .await?;
    let now = unix_ms();
    let mut conn = pool.acquire().await?;
    for (org_id, chain, length, head_hash) in &heads {
        insert_checkpoint(&mut conn, signer, org_id, chain, *length, head_hash, now).await?;
    }
    if !heads.is_empty() {
        metrics::counter!("audit_checkpoints_signed_total").increment(heads.len() as u64);
    }
    Ok(heads.len())
}

/// Signs and stores a checkpoint of `org_id`'s `chain` at `sequence` (kept
/// if one is already there).
pub async fn insert_checkpoint(
    conn: &mut sqlx::AnyConnection,
    signer: &Signer,
    org_id: &str,
    chain: &str,
    sequence: i64,
    head_hash: &str,
    signed_at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_checkpoints (org_id, chain, chain_sequence, head_hash, signed_at_ms, key_id, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (org_id, chain, chain_sequence) DO NOTHING",
    )
    .bind(org_id)
    .bind(chain)
    .bind(sequence)
    .bind(head_hash)
    .bind(signed_at_ms)
    .bind(&signer.key_id)
    .bind(signer.sign(org_id, chain, sequence, head_hash, signed_at_ms))
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// The checkpoints of one chain, split into the trusted ones and the
/// sequences of those whose signature does not check out.
pub async fn checkpoints(
    pool: &AnyPool,
    signer: &Signer,
    org_id: &str,
    chain: &str,
) -> Result<(Vec<(TrustedCheckpoint, i64)>, Vec<u64>), sqlx::Error> {
    let rows: Vec<CheckpointRow> = sqlx::query_as(
        "SELECT chain_sequence, head_hash, signed_at_ms, key_id, signature FROM audit_checkpoints
         WHERE org_id = $1 AND chain = $2 ORDER BY chain_sequence",
    )
    .bind(org_id)
    .bind(chain)
    .fetch_all(pool)
    .await?;
    let mut trusted = Vec::new();
    let mut forged = Vec::new();
    for row in rows {
        if signer.verify(org_id, chain, &row) {
            trusted.push((
                TrustedCheckpoint {
                    chain_sequence: to_u64(row.chain_sequence),
                    head_hash: row.head_hash,
                },
                row.signed_at_ms,
            ));
        } else {
            forged.push(to_u64(row.chain_sequence));
        }
    }
    Ok((trusted, forged))
}

/// Signs moved heads every `interval` until shutdown (and once more then).
pub async fn run_checkpoints(pool: AnyPool, signer: Signer, interval: Duration, shutdown: CancellationToken) {
    loop {
        let stop = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(interval) => false,
        };
        match sign_moved_heads(&pool, &signer).await {
            Ok(n) if n > 0 => tracing::debug!(checkpoints = n, "signed audit chain heads"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot sign audit checkpoints; retrying next round"),
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_field() {
        let signer = Signer::from_seed(&[7; 32]);
        let row = CheckpointRow {
            chain_sequence: 5,
            head_hash: "ab".repeat(32),
            signed_at_ms: 1_000,
            key_id: signer.key_id.clone(),
            signature: signer.sign("org", "EVT_PROMPTS", 5, &"ab".repeat(32), 1_000),
        };
        assert!(signer.verify("org", "EVT_PROMPTS", &row));
        assert!(!signer.verify("other", "EVT_PROMPTS", &row));
        assert!(!signer.verify("org", "EVT_IDENTITY", &row));
        for tampered in [
            CheckpointRow {
                chain_sequence: 6,
                ..row.clone()
            },
            CheckpointRow {
                head_hash: "cd".repeat(32),
                ..row.clone()
            },
            CheckpointRow {
                signed_at_ms: 1,
                ..row.clone()
            },
            CheckpointRow {
                signature: "00".repeat(64),
                ..row.clone()
            },
        ] {
            assert!(!signer.verify("org", "EVT_PROMPTS", &tampered));
        }
        let other = Signer::from_seed(&[8; 32]);
        assert!(!other.verify("org", "EVT_PROMPTS", &row));
    }

    #[test]
    fn keys_come_from_a_hex_seed() {
        let source = KeySource::Value("07".repeat(32));
        assert_eq!(source.load().unwrap().key_id, Signer::from_seed(&[7; 32]).key_id);
        assert!(KeySource::Value("xyz".into()).load().is_err());
        assert_eq!(
            format!("{:?}", KeySource::Value("secret".into())),
            "Value(<redacted>)"
        );
    }

    #[test]
    fn the_default_key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::File {
            path: dir.path().join("k"),
            create: true,
        };
        let first = source.load().unwrap().public_key_hex();
        assert_eq!(source.load().unwrap().public_key_hex(), first);
    }
}
