//! What this replica knows live: prompt states cached in memory, kept fresh
//! by following the prompts stream, and the changes fanned out to watchers.
//!
//! - The cache holds each prompt's folded state, loaded from the event log
//!   (the source of truth, not the read model), so a resolve is a memory
//!   lookup. Every replica follows the stream from where it started; an event
//!   whose aggregate version is the next one for the cached state is folded
//!   into it, one already included is skipped, and anything else drops the
//!   entry. A write in this replica stores its resulting state if that is
//!   newer than the cached one. A load that raced with an event is not cached
//!   (a generation counter tells), so nothing stale stays. Each of these is
//!   one atomic compute on the entry.
//! - Watchers get each change as it is seen, after the cache has dropped the
//!   old state, so what they read next is the new state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::ops::compute::Op;
use promptops_eventlog::aggregate::load;
use promptops_eventlog::{AggregateRef, Context, EventLog, Start, StoreError};
use promptops_platform::errors::{FieldViolation, ServiceError};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::domain::{PromptEvent, PromptState};
use crate::events::{self, AGGREGATE_TYPE};

/// A prompt's state as of a log position.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: PromptState,
    /// The stream sequence of its last event.
    pub last_sequence: u64,
    pub created_at: Option<prost_types::Timestamp>,
}

/// One event of a prompt, as seen by this replica.
#[derive(Debug, Clone)]
pub struct Change {
    pub org_id: String,
    pub prompt_id: String,
    pub sequence: u64,
    pub event: PromptEvent,
}

type Key = (String, String);

#[derive(Debug)]
pub struct Live {
    log: EventLog,
    cache: moka::sync::Cache<Key, Arc<Snapshot>>,
    generation: AtomicU64,
    seen: watch::Sender<u64>,
    changes: broadcast::Sender<Arc<Change>>,
}

/// Roughly how many bytes of prompt states to keep.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn weight(snapshot: &Snapshot) -> u32 {
    let versions: usize = snapshot
        .state
        .versions
        .iter()
        .map(|v| prost::Message::encoded_len(v) + 64)
        .sum();
    u32::try_from(versions + 256).unwrap_or(u32::MAX)
}

impl Live {
    pub fn new(log: EventLog) -> Arc<Self> {
        let (seen, _) = watch::channel(0);
        let (changes, _) = broadcast::channel(1024);
        Arc::new(Self {
            log,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_, v: &Arc<Snapshot>| weight(v))
                .build(),
            generation: AtomicU64::new(0),
            seen,
            changes,
        })
    }

    /// The prompt's state: from memory, or loaded from the log.
    pub async fn snapshot(&self, org_id: &str, prompt_id: &str) -> Result<Arc<Snapshot>, ServiceError> {
        let key = (org_id.to_owned(), prompt_id.to_owned());
        if let Some(hit) = self.cache.get(&key) {
            metrics::counter!("promptops_prompt_cache_total", "result" => "hit").increment(1);
            return Ok(hit);
        }
        metrics::counter!("promptops_prompt_cache_total", "result" => "miss").increment(1);
        let generation = self.generation.load(Ordering::Acquire);
        let aggregate = AggregateRef::new(Context::Prompts, org_id, AGGREGATE_TYPE, prompt_id)
            .map_err(|e| ServiceError::invalid(vec![FieldViolation::new("prompt_id", e.to_string())]))?;
        let loaded = load::<events::Prompt>(&self.log, &aggregate)
            .await
            .map_err(|e| ServiceError::unavailable("the event log", e))?;
        let snapshot = Arc::new(Snapshot {
            state: loaded.state,
            last_sequence: loaded.last_sequence,
            created_at: loaded.first_occurred_at,
        });
        // Only cache what no event raced with; missing prompts are not
        // cached, so a create elsewhere is seen at once.
        if snapshot.state.head.is_some() {
            let fresh = snapshot.clone();
            self.cache.entry(key).and_compute_with(|existing| {
                let newer = existing.is_none_or(|e| e.value().state.version < fresh.state.version);
                if newer && self.generation.load(Ordering::Acquire) == generation {
                    Op::Put(fresh)
                } else {
                    Op::Nop
                }
            });
        }
        Ok(snapshot)
    }

    /// After a write in this replica: keep its resulting state if the cache
    /// holds an older one (an absent entry is left absent: the tail may
    /// already have passed newer events).
    pub fn record_write(&self, org_id: &str, prompt_id: &str, snapshot: Snapshot) {
        let key = (org_id.to_owned(), prompt_id.to_owned());
        self.cache.entry(key).and_compute_with(|existing| match existing {
            Some(e) if e.value().state.version < snapshot.state.version => Op::Put(Arc::new(snapshot)),
            _ => Op::Nop,
        });
    }

    /// An event seen on the stream: fold it into the cached state when it is
    /// the next one, skip it when already included, else drop the entry.
    fn apply_seen(
        &self,
        org_id: &str,
        prompt_id: &str,
        aggregate_version: u64,
        sequence: u64,
        event: &PromptEvent,
    ) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let key = (org_id.to_owned(), prompt_id.to_owned());
        self.cache.entry(key).and_compute_with(|existing| match existing {
            Some(e) if e.value().state.version >= aggregate_version => Op::Nop,
            Some(e) if e.value().state.version + 1 == aggregate_version => {
                let current = e.into_value();
                Op::Put(Arc::new(Snapshot {
                    state: crate::domain::evolve(current.state.clone(), event),
                    last_sequence: sequence,
                    created_at: current.created_at,
                }))
            }
            Some(_) => Op::Remove,
            None => Op::Nop,
        });
    }

    /// The cached state only (for benchmarks and tests of the hot path).
    pub fn cached(&self, org_id: &str, prompt_id: &str) -> Option<Arc<Snapshot>> {
        self.cache.get(&(org_id.to_owned(), prompt_id.to_owned()))
    }

    /// Forgets a prompt's state (after a write, or when its event is seen).
    pub fn invalidate(&self, org_id: &str, prompt_id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(&(org_id.to_owned(), prompt_id.to_owned()));
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// Waits (at most `timeout`) until this replica has seen `sequence`.
    pub async fn wait_seen(&self, sequence: u64, timeout: Duration) -> bool {
        let mut seen = self.seen.subscribe();
        tokio::time::timeout(timeout, seen.wait_for(|&s| s >= sequence))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Follows the prompts stream from its current end until `shutdown`,
    /// reconnecting with backoff when the log goes away.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut after = loop {
            match self.log.last_sequence(Context::Prompts).await {
                Ok(last) => break last,
                Err(err) => {
                    tracing::warn!(error = %err, "prompts tail: cannot read the stream end; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        self.seen.send_replace(after);
        while !shutdown.is_cancelled() {
            match self.follow(after, &shutdown).await {
                Ok(()) => return,
                Err((last, err)) => {
                    after = last;
                    tracing::warn!(error = %err, after, "prompts tail interrupted; resuming");
                    // Anything may have changed while we were away.
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    self.cache.invalidate_all();
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        }
    }

    async fn follow(&self, mut after: u64, shutdown: &CancellationToken) -> Result<(), (u64, StoreError)> {
        let mut tail = self
            .log
            .tail_from(Context::Prompts, Start::After(after))
            .await
            .map_err(|e| (after, e))?;
        loop {
            let delivery = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                next = tail.next() => next.map_err(|e| (after, e))?,
            };
            let recorded = &delivery.event;
            after = recorded.sequence;
            let envelope = &recorded.envelope;
            if envelope.aggregate_type == AGGREGATE_TYPE {
                let decoded = events::from_envelope(envelope);
                match &decoded {
                    Ok(event) => self.apply_seen(
                        &envelope.org_id,
                        &envelope.aggregate_id,
                        envelope.aggregate_version,
                        recorded.sequence,
                        event,
                    ),
                    Err(_) => self.invalidate(&envelope.org_id, &envelope.aggregate_id),
                }
                if let Ok(event) = decoded {
                    // No receivers is fine.
                    let _ = self.changes.send(Arc::new(Change {
                        org_id: envelope.org_id.clone(),
                        prompt_id: envelope.aggregate_id.clone(),
                        sequence: recorded.sequence,
                        event,
                    }));
                }
            }
            self.seen.send_replace(recorded.sequence);
        }
    }
}

#[cfg(test)]
mod tests {
    use promptops_eventlog::embedded::EmbeddedLog;
    use promptops_proto::prompts::v1::{LabelMoved, PromptCreated, PromptVersion};

    use super::*;

    fn created() -> PromptEvent {
        PromptEvent::Created(PromptCreated {
            prompt_id: "p".into(),
            name: "n".into(),
            first_version: Some(PromptVersion {
                number: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn moved(version: u64) -> PromptEvent {
        PromptEvent::LabelMoved(LabelMoved {
            prompt_id: "p".into(),
            label: "production".into(),
            version,
            ..Default::default()
        })
    }

    fn snapshot(events: &[PromptEvent], last_sequence: u64) -> Snapshot {
        Snapshot {
            state: events.iter().fold(PromptState::default(), crate::domain::evolve),
            last_sequence,
            created_at: None,
        }
    }

    async fn live() -> (Arc<Live>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("e.db")).await.unwrap());
        (Live::new(log), dir)
    }

    #[tokio::test]
    async fn seen_events_fold_into_the_cached_state_only_when_next() {
        let (live, _dir) = live().await;
        live.cache
            .insert(("o".into(), "p".into()), Arc::new(snapshot(&[created()], 10)));
        // The next event (aggregate version 2) is folded in.
        live.apply_seen("o", "p", 2, 11, &moved(1));
        let cached = live.cached("o", "p").unwrap();
        assert_eq!((cached.state.version, cached.last_sequence), (2, 11));
        assert_eq!(cached.state.labels.get("production"), Some(&1));
        // One already included changes nothing.
        live.apply_seen("o", "p", 2, 11, &moved(1));
        assert_eq!(live.cached("o", "p").unwrap().state.version, 2);
        // A gap (version 4 after 2) drops the entry: the next read reloads.
        live.apply_seen("o", "p", 4, 15, &moved(1));
        assert!(live.cached("o", "p").is_none());
        // With no entry, nothing is cached from an event.
        live.apply_seen("o", "p", 5, 16, &moved(1));
        assert!(live.cached("o", "p").is_none());
    }

    #[tokio::test]
    async fn writes_replace_only_an_older_cached_state() {
        let (live, _dir) = live().await;
        live.record_write("o", "p", snapshot(&[created()], 1));
        assert!(live.cached("o", "p").is_none(), "an absent entry stays absent");
        live.cache.insert(
            ("o".into(), "p".into()),
            Arc::new(snapshot(&[created(), moved(1)], 2)),
        );
        live.record_write("o", "p", snapshot(&[created()], 1));
        assert_eq!(
            live.cached("o", "p").unwrap().state.version,
            2,
            "older write ignored"
        );
        live.record_write("o", "p", snapshot(&[created(), moved(1), moved(1)], 3));
        assert_eq!(live.cached("o", "p").unwrap().last_sequence, 3);
    }
}
