//! Running a command against an event-sourced aggregate, written once:
//! load its events → fold with `evolve` → `decide` → append with the
//! expected sequence → on a concurrency conflict, load and decide again.

use crate::{
    AggregateRef, AppendError, EventDraft, EventEnvelope, EventLog, EventMetadata, Expected, StoreError,
    envelope_for,
};

/// A pure aggregate: state, events, commands and the two functions.
pub trait Aggregate {
    type State: Default + Clone + Send;
    type Event: Clone + Send + Sync;
    type Command: Clone + Send;
    type Error: Send;

    /// The aggregate type in subjects and envelopes, e.g. `org`.
    const TYPE: &'static str;

    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;
    /// The stored form of an event.
    fn encode(event: &Self::Event) -> EventDraft;
    /// An event read back; `None` for a type this aggregate does not know.
    fn decode(envelope: &EventEnvelope) -> Option<Self::Event>;
}

/// An aggregate as loaded.
#[derive(Debug, Clone)]
pub struct Loaded<S> {
    pub state: S,
    /// Events applied (the aggregate version).
    pub version: u64,
    /// Stream sequence of its last event: the concurrency token (0 = none).
    pub last_sequence: u64,
    /// When its first event happened (its creation).
    pub first_occurred_at: Option<prost_types::Timestamp>,
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Executed<S, E> {
    pub state: S,
    /// The events appended (empty when the command changed nothing).
    pub events: Vec<E>,
    /// Stream sequence of the aggregate's last event after the command.
    pub last_sequence: u64,
    /// When the aggregate's first event happened (its creation).
    pub first_occurred_at: Option<prost_types::Timestamp>,
}

/// Why a command did not take effect.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The aggregate refused the command.
    #[error("refused")]
    Domain(E),
    /// Still conflicting after retries.
    #[error("the aggregate kept changing concurrently")]
    Conflict,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("invalid append: {0}")]
    Invalid(String),
}

impl<S: Default> Loaded<S> {
    /// The state of an aggregate with no events yet.
    pub fn empty() -> Self {
        Self {
            state: S::default(),
            version: 0,
            last_sequence: 0,
            first_occurred_at: None,
        }
    }
}

/// Loads and folds an aggregate's events (unknown event types are skipped).
pub async fn load<A: Aggregate>(
    log: &EventLog,
    aggregate: &AggregateRef,
) -> Result<Loaded<A::State>, StoreError> {
    catch_up::<A>(log, aggregate, Loaded::empty()).await
}

/// Brings a state known up to `known.last_sequence` (e.g. from a cache) up
/// to date by folding only the events after it.
pub async fn catch_up<A: Aggregate>(
    log: &EventLog,
    aggregate: &AggregateRef,
    known: Loaded<A::State>,
) -> Result<Loaded<A::State>, StoreError> {
    let newer = log.read_aggregate_after(aggregate, known.last_sequence).await?;
    let Loaded {
        mut state,
        mut version,
        mut last_sequence,
        mut first_occurred_at,
    } = known;
    for recorded in &newer {
        if first_occurred_at.is_none() {
            first_occurred_at = recorded.envelope.occurred_at;
        }
        if let Some(event) = A::decode(&recorded.envelope) {
            state = A::evolve(state, &event);
        }
        version += 1;
        last_sequence = recorded.sequence;
    }
    Ok(Loaded {
        state,
        version,
        last_sequence,
        first_occurred_at,
    })
}

/// How many times a command is decided before a conflict is given up on.
pub const MAX_ATTEMPTS: u32 = 12;

/// Commands on one aggregate in this process, one at a time: concurrent
/// writers of a replica queue instead of racing (N racing writers need up
/// to N attempts for the last; [`MAX_ATTEMPTS`] is for other replicas).
/// Entries are weak, so an aggregate nobody writes costs nothing.
static WRITERS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, std::sync::Weak<tokio::sync::Mutex<()>>>>,
> = std::sync::LazyLock::new(Default::default);

fn writer_lock(subject: String) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    let mut writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lock) = writers.get(&subject).and_then(std::sync::Weak::upgrade) {
        return lock;
    }
    if writers.len() >= 1024 {
        writers.retain(|_, lock| lock.strong_count() > 0);
    }
    let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    writers.insert(subject, std::sync::Arc::downgrade(&lock));
    lock
}

/// Runs `command` against the aggregate. When another writer appended in
/// between (the expected sequence no longer matches), it waits a short,
/// jittered, growing time, loads again and decides again: up to
/// [`MAX_ATTEMPTS`] times. Each conflict counts in
/// `promptops_aggregate_conflicts_total{aggregate}`.
pub async fn execute<A: Aggregate>(
    log: &EventLog,
    aggregate: &AggregateRef,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<Executed<A::State, A::Event>, ExecuteError<A::Error>> {
    execute_from::<A>(log, aggregate, Loaded::empty(), command, metadata).await
}

/// [`execute`] starting from a state already known up to some position
/// (e.g. a cached snapshot): only newer events are read, before deciding
/// and again after each conflict.
pub async fn execute_from<A: Aggregate>(
    log: &EventLog,
    aggregate: &AggregateRef,
    known: Loaded<A::State>,
    command: A::Command,
    metadata: &EventMetadata,
) -> Result<Executed<A::State, A::Event>, ExecuteError<A::Error>> {
    let lock = writer_lock(aggregate.subject());
    let _one_writer_here = lock.lock().await;
    let mut known = known;
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
            metrics::counter!("promptops_aggregate_conflicts_total", "aggregate" => A::TYPE).increment(1);
            let ceiling_ms = (1_u64 << attempt.min(6)).min(50);
            let wait = rand::Rng::gen_range(&mut rand::thread_rng(), 0..=ceiling_ms * 1000);
            tokio::time::sleep(std::time::Duration::from_micros(wait)).await;
        }
        let loaded = catch_up::<A>(log, aggregate, known).await?;
        let events = A::decide(&loaded.state, command.clone()).map_err(ExecuteError::Domain)?;
        if events.is_empty() {
            return Ok(Executed {
                state: loaded.state,
                events,
                last_sequence: loaded.last_sequence,
                first_occurred_at: loaded.first_occurred_at,
            });
        }
        let envelopes: Vec<EventEnvelope> = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                envelope_for(
                    aggregate,
                    loaded.version + 1 + i as u64,
                    A::encode(event),
                    metadata,
                )
            })
            .collect();
        match log
            .append(
                aggregate,
                Expected::from_last_sequence(loaded.last_sequence),
                &envelopes,
            )
            .await
        {
            Ok(appended) => {
                let state = events.iter().fold(loaded.state, A::evolve);
                return Ok(Executed {
                    state,
                    events,
                    last_sequence: appended.last_sequence,
                    first_occurred_at: loaded
                        .first_occurred_at
                        .or_else(|| envelopes.first().and_then(|e| e.occurred_at)),
                });
            }
            Err(AppendError::Conflict { .. }) => {
                known = loaded;
                continue;
            }
            Err(AppendError::Store(err)) => return Err(ExecuteError::Store(err)),
            Err(AppendError::Invalid(reason)) => return Err(ExecuteError::Invalid(reason)),
        }
    }
    Err(ExecuteError::Conflict)
}
