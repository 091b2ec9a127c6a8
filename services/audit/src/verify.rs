//! Verifying an org's trail: every chain, in batches, against its head and
//! its signed checkpoints ([`crate::chain::verify`] does the checking).

use promptops_eventlog::Context;
use promptops_platform::db::to_u64;
use promptops_platform::paging::timestamp_from_ms;
use promptops_proto::audit::v1::{AuditBreak, ChainStatus, VerifyAuditTrailResponse};
use sqlx::AnyPool;

use crate::chain::{self, Anchor, TrustedCheckpoint};
use crate::signing::{self, Signer};

/// Entries read per batch.
const BATCH: u32 = 5_000;

/// Verifies `org_id`'s chains over entries with `from_ms <= occurred_at < to_ms`.
pub async fn verify_org(
    pool: &AnyPool,
    signer: &Signer,
    org_id: &str,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<VerifyAuditTrailResponse, sqlx::Error> {
    let mut response = VerifyAuditTrailResponse {
        intact: true,
        signing_public_key: signer.public_key_hex(),
        ..Default::default()
    };
    for context in Context::ALL {
        let chain_name = context.stream_name();
        let (status, checkpoints, broken) =
            verify_chain(pool, signer, org_id, chain_name, from_ms, to_ms).await?;
        response.entries_checked += status.entries_checked;
        response.checkpoints_checked += checkpoints;
        if let Some(broken) = broken
            && response.first_break.is_none()
        {
            response.intact = false;
            response.first_break = Some(broken);
        }
        if status.length > 0 || status.entries_checked > 0 {
            response.chains.push(status);
        }
    }
    Ok(response)
}

async fn verify_chain(
    pool: &AnyPool,
    signer: &Signer,
    org_id: &str,
    chain_name: &str,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
) -> Result<(ChainStatus, u64, Option<AuditBreak>), sqlx::Error> {
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT length, head_hash FROM audit_chains WHERE org_id = $1 AND chain = $2")
            .bind(org_id)
            .bind(chain_name)
            .fetch_optional(pool)
            .await?;
    let (trusted, forged) = signing::checkpoints(pool, signer, org_id, chain_name).await?;
    let mut status = ChainStatus {
        chain: chain_name.to_owned(),
        length: head.as_ref().map_or(0, |(l, _)| to_u64(*l)),
        head_hash: head.as_ref().map(|(_, h)| h.clone()).unwrap_or_default(),
        intact: true,
        ..Default::default()
    };
    if let Some((checkpoint, signed_at)) = trusted.last() {
        status.last_checkpoint_sequence = checkpoint.chain_sequence;
        status.last_checkpoint_at = Some(timestamp_from_ms(*signed_at));
    }
    let break_at = |chain_sequence: u64, event_id: String, reason: String| AuditBreak {
        chain: chain_name.to_owned(),
        chain_sequence,
        event_id,
        reason,
    };
    if let Some(sequence) = forged.first() {
        status.intact = false;
        let b = break_at(
            *sequence,
            String::new(),
            format!("the checkpoint at {sequence} does not carry a valid signature of this service's key"),
        );
        return Ok((status, 0, Some(b)));
    }
    // The sequences the range covers.
    let (first, last): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT MIN(chain_sequence), MAX(chain_sequence) FROM audit_entries
         WHERE org_id = $1 AND chain = $2 AND occurred_at_ms >= $3 AND occurred_at_ms < $4",
    )
    .bind(org_id)
    .bind(chain_name)
    .bind(from_ms.unwrap_or(i64::MIN))
    .bind(to_ms.unwrap_or(i64::MAX))
    .fetch_one(pool)
    .await?;
    let whole_chain = from_ms.is_none() && to_ms.is_none();
    let (first, last) = match (first, last) {
        (Some(f), Some(l)) => (to_u64(f), to_u64(l)),
        _ if whole_chain
            && status.length > 0
            && trusted
                .iter()
                .any(|(c, _)| c.chain_sequence == status.length && c.head_hash == status.head_hash) =>
        {
            // Pruned to the head, behind a signed checkpoint of it.
            return Ok((status, 1, None));
        }
        _ if whole_chain && status.length > 0 => {
            // Every row is gone although the head says there were some.
            status.intact = false;
            let b = break_at(
                1,
                String::new(),
                format!("entries 1..{} are missing", status.length),
            );
            return Ok((status, 0, Some(b)));
        }
        _ => return Ok((status, 0, None)),
    };
    // What the first entry must link to, and where checking starts.
    let entry_at = |sequence: u64| async move {
        let found = crate::trail::chain_entries(pool, org_id, chain_name, sequence, 1).await?;
        Ok::<_, sqlx::Error>(found.into_iter().find(|e| e.content.chain_sequence == sequence))
    };
    let checkpoint_at = |sequence: u64| {
        trusted
            .iter()
            .find(|(c, _)| c.chain_sequence == sequence)
            .map(|(c, _)| c.head_hash.clone())
    };
    let (anchor, first) = if first <= 1 {
        (Anchor::Genesis, 1)
    } else if let Some(previous) = entry_at(first - 1).await? {
        // A range that starts mid-chain: the entry before it anchors it.
        (
            Anchor::After {
                sequence: first - 1,
                hash: previous.hash,
            },
            first,
        )
    } else if let Some(hash) = checkpoint_at(first - 1) {
        // Pruned up to here, with a signed checkpoint of the head then.
        (
            Anchor::After {
                sequence: first - 1,
                hash,
            },
            first,
        )
    } else {
        // Missing without a checkpoint: checking from the start names them.
        (Anchor::Genesis, 1)
    };
    let end = if whole_chain {
        status.length.max(last)
    } else {
        last
    };
    let trusted: Vec<TrustedCheckpoint> = trusted.into_iter().map(|(c, _)| c).collect();
    // The whole chain is checked against its recorded head; a range must
    // reach its last entry.
    let head = head
        .as_ref()
        .filter(|_| whole_chain)
        .map(|(l, h)| (to_u64(*l), h.as_str()));
    let walked = walk(pool, org_id, chain_name, anchor, first, end, &trusted, head).await?;
    status.entries_checked = walked.entries_checked;
    let broken = walked.first_break.map(|b| {
        status.intact = false;
        break_at(b.chain_sequence, b.event_id, b.reason)
    });
    Ok((status, walked.checkpoints_checked, broken))
}

/// What [`walk`] found.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    pub first_break: Option<chain::Break>,
    /// The last entry read: its sequence and hash.
    pub last: Option<(u64, String)>,
}

/// Checks entries `first..=end` of one chain from `anchor`, in batches:
/// each against the trusted checkpoints that fall in it (and the anchor's),
/// and the last against `head` when given; without `head`, entries missing
/// before `end` are a break too. Shared by verify and the pruner.
#[expect(clippy::too_many_arguments, reason = "one chain segment, named by its parts")]
pub(crate) async fn walk(
    pool: &AnyPool,
    org_id: &str,
    chain_name: &str,
    mut anchor: Anchor,
    first: u64,
    end: u64,
    trusted: &[TrustedCheckpoint],
    head: Option<(u64, &str)>,
) -> Result<Walked, sqlx::Error> {
    let mut walked = Walked::default();
    let mut next = first;
    while next <= end {
        let batch: Vec<_> = crate::trail::chain_entries(pool, org_id, chain_name, next, BATCH)
            .await?
            .into_iter()
            .filter(|e| e.content.chain_sequence <= end)
            .collect();
        let anchor_sequence = match &anchor {
            Anchor::Genesis => 0,
            Anchor::After { sequence, .. } => *sequence,
        };
        let batch_last = batch.last().map_or(anchor_sequence, |e| e.content.chain_sequence);
        let done = batch.len() < BATCH as usize || batch_last >= end;
        let in_batch: Vec<TrustedCheckpoint> = trusted
            .iter()
            .filter(|c| {
                (c.chain_sequence > anchor_sequence && c.chain_sequence <= batch_last)
                    || (c.chain_sequence == anchor_sequence && next == first)
            })
            .cloned()
            .collect();
        let verified = chain::verify(&batch, &anchor, &in_batch, head.filter(|_| done));
        walked.entries_checked += verified.entries_checked;
        walked.checkpoints_checked += verified.checkpoints_checked;
        if verified.first_break.is_some() {
            walked.first_break = verified.first_break;
            return Ok(walked);
        }
        let Some(last) = batch.last() else { break };
        walked.last = Some((last.content.chain_sequence, last.hash.clone()));
        anchor = Anchor::After {
            sequence: last.content.chain_sequence,
            hash: last.hash.clone(),
        };
        next = batch_last + 1;
        if done {
            break;
        }
    }
    let reached = walked.last.as_ref().map_or(first.saturating_sub(1), |(s, _)| *s);
    if head.is_none() && reached < end {
        walked.first_break = Some(chain::Break {
            chain_sequence: reached + 1,
            event_id: String::new(),
            reason: format!("entries {}..{end} are missing", reached + 1),
        });
    }
    Ok(walked)
}
