//! The hash chain: what makes the audit trail tamper-evident.
//!
//! Entries are chained per org and source stream (`EVT_PROMPTS`, …): the
//! projection reads each stream in its own order, so a rebuild by replay
//! yields the same chain, byte for byte. Each entry's hash is SHA-256 over a
//! length-prefixed encoding of every field it shows and the previous entry's
//! hash; the first entry of a chain follows [`GENESIS`].
//!
//! [`verify`] walks a chain segment and reports the first entry that does not
//! fit: content edited (hash mismatch), an entry removed (sequence gap or a
//! broken link), rows reordered (sequence or link mismatch), or a chain that
//! disagrees with a signed checkpoint of its head. Pure: no I/O.

use sha2::{Digest, Sha256};

/// The previous hash of every chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Everything an entry shows, in the order it is hashed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryContent {
    pub event_id: String,
    pub org_id: String,
    pub chain: String,
    pub chain_sequence: u64,
    pub stream_sequence: u64,
    pub occurred_at_ms: i64,
    pub actor_kind: i64,
    pub actor_id: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    pub outcome: String,
    pub summary: String,
    pub correlation_id: String,
    pub trace_id: String,
    pub client_address: String,
    pub user_agent: String,
}

/// The entry's hash (lowercase hex) given the previous entry's.
pub fn entry_hash(content: &EntryContent, previous_hash: &str) -> String {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(b"promptops.audit.v1");
    field(content.event_id.as_bytes());
    field(content.org_id.as_bytes());
    field(content.chain.as_bytes());
    field(&content.chain_sequence.to_be_bytes());
    field(&content.stream_sequence.to_be_bytes());
    field(&content.occurred_at_ms.to_be_bytes());
    field(&content.actor_kind.to_be_bytes());
    field(content.actor_id.as_bytes());
    field(content.action.as_bytes());
    field(content.resource_type.as_bytes());
    field(content.resource_id.as_bytes());
    field(content.outcome.as_bytes());
    field(content.summary.as_bytes());
    field(content.correlation_id.as_bytes());
    field(content.trace_id.as_bytes());
    field(content.client_address.as_bytes());
    field(content.user_agent.as_bytes());
    field(previous_hash.as_bytes());
    hex(&hasher.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// An entry as stored: its content and the two hashes beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub content: EntryContent,
    pub previous_hash: String,
    pub hash: String,
}

/// A signed statement that a chain's entry `chain_sequence` had `head_hash`.
/// Only checkpoints whose signature checked out are given to [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCheckpoint {
    pub chain_sequence: u64,
    pub head_hash: String,
}

/// Where a chain stops fitting together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub chain_sequence: u64,
    /// The entry at the break; empty when the entry there is missing.
    pub event_id: String,
    pub reason: String,
}

/// The outcome of checking one chain segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub first_break: Option<Break>,
}

/// What anchors the segment's first entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Anchor {
    /// The segment starts at the chain's first entry.
    Genesis,
    /// The segment starts after entry `sequence` (range queries, pruning),
    /// whose hash was `hash` (from a signed checkpoint, or the stored entry
    /// before the range).
    After { sequence: u64, hash: String },
}

/// Checks `entries` (one chain, ascending by sequence, as read from the
/// database) from `anchor` on, against the trusted checkpoints that fall in
/// the segment, and — when the segment runs to the chain's end — against the
/// recorded `head` (`(length, hash)`).
pub fn verify(
    entries: &[StoredEntry],
    anchor: &Anchor,
    checkpoints: &[TrustedCheckpoint],
    head: Option<(u64, &str)>,
) -> Verified {
    let mut result = Verified::default();
    let (mut expected_sequence, mut previous_hash) = match anchor {
        Anchor::Genesis => (1, GENESIS.to_owned()),
        Anchor::After { sequence, hash } => (sequence + 1, hash.clone()),
    };
    let first = expected_sequence;
    let mut by_sequence = std::collections::HashMap::new();
    for entry in entries {
        result.entries_checked += 1;
        let c = &entry.content;
        if c.chain_sequence != expected_sequence {
            let reason = if c.chain_sequence > expected_sequence {
                format!(
                    "entries {expected_sequence}..{} are missing",
                    c.chain_sequence - 1
                )
            } else {
                format!(
                    "out of order: sequence {} where {expected_sequence} was expected",
                    c.chain_sequence
                )
            };
            result.first_break = Some(Break {
                chain_sequence: expected_sequence,
                event_id: if c.chain_sequence > expected_sequence {
                    String::new()
                } else {
                    c.event_id.clone()
                },
                reason,
            });
            return result;
        }
        if entry.previous_hash != previous_hash {
            result.first_break = Some(Break {
                chain_sequence: c.chain_sequence,
                event_id: c.event_id.clone(),
                reason: "its previous hash does not match the entry before it (an entry was removed, replaced or moved)".into(),
            });
            return result;
        }
        let recomputed = entry_hash(c, &previous_hash);
        if recomputed != entry.hash {
            result.first_break = Some(Break {
                chain_sequence: c.chain_sequence,
                event_id: c.event_id.clone(),
                reason: "its content does not match its hash (the entry was edited)".into(),
            });
            return result;
        }
        by_sequence.insert(c.chain_sequence, (c.event_id.as_str(), entry.hash.as_str()));
        previous_hash = entry.hash.clone();
        expected_sequence += 1;
    }
    let last = expected_sequence - 1;
    for checkpoint in checkpoints {
        if checkpoint.chain_sequence < first || checkpoint.chain_sequence > last {
            if let Anchor::After { sequence, hash } = anchor
                && checkpoint.chain_sequence == *sequence
            {
                result.checkpoints_checked += 1;
                if checkpoint.head_hash != *hash {
                    result.first_break = Some(Break {
                        chain_sequence: *sequence + 1,
                        event_id: entries
                            .first()
                            .map(|e| e.content.event_id.clone())
                            .unwrap_or_default(),
                        reason: format!(
                            "the chain before this entry differs from the signed checkpoint at {sequence}"
                        ),
                    });
                    return result;
                }
            }
            continue;
        }
        result.checkpoints_checked += 1;
        let Some((event_id, hash)) = by_sequence.get(&checkpoint.chain_sequence) else {
            continue;
        };
        if *hash != checkpoint.head_hash {
            result.first_break = Some(Break {
                chain_sequence: checkpoint.chain_sequence,
                event_id: (*event_id).to_owned(),
                reason: format!(
                    "the chain up to here differs from its signed checkpoint (rewritten at or before sequence {})",
                    checkpoint.chain_sequence
                ),
            });
            return result;
        }
    }
    if let Some((length, head_hash)) = head {
        if length > last {
            result.first_break = Some(Break {
                chain_sequence: last + 1,
                event_id: String::new(),
                reason: format!(
                    "entries {}..{length} are missing (the chain's head is {length})",
                    last + 1
                ),
            });
        } else if length == last && length > 0 && previous_hash != head_hash {
            result.first_break = Some(Break {
                chain_sequence: last,
                event_id: by_sequence
                    .get(&last)
                    .map(|(id, _)| (*id).to_owned())
                    .unwrap_or_default(),
                reason: "the last entry does not match the chain's recorded head".into(),
            });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<StoredEntry> {
        let mut previous = GENESIS.to_owned();
        (1..=n)
            .map(|i| {
                let content = EntryContent {
                    event_id: format!("e{i}"),
                    org_id: "org".into(),
                    chain: "EVT_PROMPTS".into(),
                    chain_sequence: i,
                    stream_sequence: i * 2,
                    occurred_at_ms: 1_000 + i as i64,
                    action: "prompt.created".into(),
                    summary: format!("entry {i}"),
                    ..EntryContent::default()
                };
                let hash = entry_hash(&content, &previous);
                let entry = StoredEntry {
                    content,
                    previous_hash: previous.clone(),
                    hash: hash.clone(),
                };
                previous = hash;
                entry
            })
            .collect()
    }

    fn head(entries: &[StoredEntry]) -> Option<(u64, &str)> {
        entries
            .last()
            .map(|e| (e.content.chain_sequence, e.hash.as_str()))
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let entries = chain(5);
        let result = verify(&entries, &Anchor::Genesis, &[], head(&entries));
        assert_eq!(result.entries_checked, 5);
        assert_eq!(result.first_break, None);
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = chain(1).remove(0).content;
        let h = entry_hash(&base, GENESIS);
        let variants: Vec<EntryContent> = vec![
            EntryContent {
                event_id: "x".into(),
                ..base.clone()
            },
            EntryContent {
                org_id: "x".into(),
                ..base.clone()
            },
            EntryContent {
                chain: "x".into(),
                ..base.clone()
            },
            EntryContent {
                chain_sequence: 9,
                ..base.clone()
            },
            EntryContent {
                stream_sequence: 9,
                ..base.clone()
            },
            EntryContent {
                occurred_at_ms: 9,
                ..base.clone()
            },
            EntryContent {
                actor_kind: 9,
                ..base.clone()
            },
            EntryContent {
                actor_id: "x".into(),
                ..base.clone()
            },
            EntryContent {
                action: "x".into(),
                ..base.clone()
            },
            EntryContent {
                resource_type: "x".into(),
                ..base.clone()
            },
            EntryContent {
                resource_id: "x".into(),
                ..base.clone()
            },
            EntryContent {
                outcome: "x".into(),
                ..base.clone()
            },
            EntryContent {
                summary: "x".into(),
                ..base.clone()
            },
            EntryContent {
                correlation_id: "x".into(),
                ..base.clone()
            },
            EntryContent {
                trace_id: "x".into(),
                ..base.clone()
            },
            EntryContent {
                client_address: "x".into(),
                ..base.clone()
            },
            EntryContent {
                user_agent: "x".into(),
                ..base.clone()
            },
        ];
        for variant in variants {
            assert_ne!(entry_hash(&variant, GENESIS), h, "{variant:?}");
        }
        assert_ne!(entry_hash(&base, &"1".repeat(64)), h);
        // Length prefixes: moving a byte between fields changes the hash.
        let a = EntryContent {
            actor_id: "ab".into(),
            action: "c".into(),
            ..base.clone()
        };
        let b = EntryContent {
            actor_id: "a".into(),
            action: "bc".into(),
            ..base
        };
        assert_ne!(entry_hash(&a, GENESIS), entry_hash(&b, GENESIS));
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut entries = chain(5);
        entries[2].content.summary = "nothing to see".into();
        let broken = verify(&entries, &Anchor::Genesis, &[], head(&entries))
            .first_break
            .unwrap();
        assert_eq!(broken.event_id, "e3");
        assert!(broken.reason.contains("edited"), "{broken:?}");
    }

    #[test]
    fn a_removed_entry_is_named() {
        let mut entries = chain(5);
        entries.remove(1);
        let broken = verify(&entries, &Anchor::Genesis, &[], head(&entries))
            .first_break
            .unwrap();
        assert_eq!(broken.chain_sequence, 2);
        assert!(broken.reason.contains("2..2 are missing"), "{broken:?}");
    }

    #[test]
    fn reordered_entries_are_named() {
        let mut entries = chain(5);
        // Swap the content of rows 2 and 3, keeping their sequence numbers.
        let (a, b) = (entries[1].clone(), entries[2].clone());
        entries[1] = StoredEntry {
            content: EntryContent {
                chain_sequence: 2,
                ..b.content
            },
            ..b
        };
        entries[2] = StoredEntry {
            content: EntryContent {
                chain_sequence: 3,
                ..a.content
            },
            ..a
        };
        let broken = verify(&entries, &Anchor::Genesis, &[], head(&entries))
            .first_break
            .unwrap();
        assert_eq!(broken.event_id, "e3");
        assert_eq!(broken.chain_sequence, 2);
    }

    #[test]
    fn a_removed_tail_is_caught_by_the_head() {
        let entries = chain(5);
        let head_hash = entries[4].hash.clone();
        let broken = verify(&entries[..3], &Anchor::Genesis, &[], Some((5, &head_hash)))
            .first_break
            .unwrap();
        assert_eq!(broken.chain_sequence, 4);
    }

    #[test]
    fn a_rewritten_chain_is_caught_by_a_signed_checkpoint() {
        let original = chain(5);
        let checkpoint = TrustedCheckpoint {
            chain_sequence: 4,
            head_hash: original[3].hash.clone(),
        };
        // Edit entry 2 and recompute every hash after it: internally consistent.
        let mut rewritten = chain(5);
        rewritten[1].content.summary = "rewritten".into();
        let mut previous = rewritten[0].hash.clone();
        for entry in &mut rewritten[1..] {
            entry.previous_hash = previous.clone();
            entry.hash = entry_hash(&entry.content, &previous);
            previous = entry.hash.clone();
        }
        assert_eq!(
            verify(&rewritten, &Anchor::Genesis, &[], head(&rewritten)).first_break,
            None
        );
        let result = verify(&rewritten, &Anchor::Genesis, &[checkpoint], head(&rewritten));
        let broken = result.first_break.unwrap();
        assert_eq!(broken.chain_sequence, 4);
        assert_eq!(result.checkpoints_checked, 1);
    }

    #[test]
    fn a_pruned_chain_verifies_from_its_checkpoint() {
        let entries = chain(6);
        let anchor = Anchor::After {
            sequence: 3,
            hash: entries[2].hash.clone(),
        };
        let checkpoint = TrustedCheckpoint {
            chain_sequence: 3,
            head_hash: entries[2].hash.clone(),
        };
        let result = verify(&entries[3..], &anchor, &[checkpoint], head(&entries));
        assert_eq!(result.first_break, None);
        assert_eq!(result.entries_checked, 3);
        assert_eq!(result.checkpoints_checked, 1);
        // Without the anchor's entries the first remaining one must link to it.
        let wrong = Anchor::After {
            sequence: 3,
            hash: GENESIS.to_owned(),
        };
        assert!(
            verify(&entries[3..], &wrong, &[], head(&entries))
                .first_break
                .is_some()
        );
    }
}
