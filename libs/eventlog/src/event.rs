//! What goes into the log and what comes out of it.

use std::fmt;

use promptops_proto::common::v1::Actor;
use promptops_proto::eventlog::v1::EventEnvelope;
use uuid::Uuid;

use crate::{AggregateRef, Context};

/// The optimistic-concurrency expectation of an append: where the aggregate's
/// last event must be in its stream for the append to happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// The aggregate must have no events yet (it is being created).
    NoEvents,
    /// The aggregate's last event must be at this stream sequence.
    Sequence(u64),
    /// No check (for facts that cannot conflict).
    Any,
}

impl Expected {
    /// From the last sequence read for an aggregate (`0` = none).
    pub fn from_last_sequence(last: u64) -> Self {
        if last == 0 {
            Expected::NoEvents
        } else {
            Expected::Sequence(last)
        }
    }

    /// The value of `Nats-Expected-Last-Subject-Sequence`, if any.
    pub(crate) fn last_subject_sequence(self) -> Option<u64> {
        match self {
            Expected::NoEvents => Some(0),
            Expected::Sequence(seq) => Some(seq),
            Expected::Any => None,
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::NoEvents => f.write_str("no events"),
            Expected::Sequence(seq) => write!(f, "sequence {seq}"),
            Expected::Any => f.write_str("any"),
        }
    }
}

/// The outcome of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub context: Context,
    /// The stream sequence of the last appended event: the aggregate's new
    /// concurrency token, and the log position a reader can wait for.
    pub last_sequence: u64,
    /// True when every event was already in the log (a retried append).
    pub duplicate: bool,
}

/// An event as read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub context: Context,
    /// Position in the context's stream (1, 2, 3, ...).
    pub sequence: u64,
    pub subject: String,
    pub envelope: EventEnvelope,
}

impl RecordedEvent {
    /// Unix time of `occurred_at` in nanoseconds (0 when missing).
    pub fn occurred_at_unix_nanos(&self) -> i128 {
        self.envelope
            .occurred_at
            .as_ref()
            .map(|t| i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos))
            .unwrap_or(0)
    }
}

/// A new event before it is wrapped in its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub event_id: Uuid,
    /// Fully qualified protobuf name of the payload.
    pub event_type: String,
    pub payload: Vec<u8>,
}

impl EventDraft {
    /// A draft with a fresh UUIDv7 id.
    pub fn new(event_type: impl Into<String>, payload: Vec<u8>) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            payload,
        }
    }

    /// A draft whose id is given, e.g. derived from a client's idempotency
    /// key so that a retried command deduplicates in the log.
    pub fn with_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }
}

/// Who and what caused a batch of events; copied into each envelope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventMetadata {
    pub actor: Option<Actor>,
    pub correlation_id: String,
    pub causation_id: String,
    /// W3C `traceparent` of the operation appending the events.
    pub traceparent: String,
    /// The end client's address and User-Agent, when the gateway knew them.
    pub client_address: String,
    pub user_agent: String,
}

/// Wraps a draft in its envelope for `aggregate` at `aggregate_version`.
pub fn envelope_for(
    aggregate: &AggregateRef,
    aggregate_version: u64,
    draft: EventDraft,
    metadata: &EventMetadata,
) -> EventEnvelope {
    let now = time::OffsetDateTime::now_utc();
    EventEnvelope {
        event_id: draft.event_id.to_string(),
        event_type: draft.event_type,
        schema_version: 1,
        org_id: aggregate.org_id().to_owned(),
        aggregate_type: aggregate.aggregate_type().to_owned(),
        aggregate_id: aggregate.aggregate_id().to_owned(),
        aggregate_version,
        actor: metadata.actor.clone(),
        occurred_at: Some(prost_types::Timestamp {
            seconds: now.unix_timestamp(),
            nanos: i32::try_from(now.nanosecond()).unwrap_or(0),
        }),
        correlation_id: metadata.correlation_id.clone(),
        causation_id: metadata.causation_id.clone(),
        traceparent: metadata.traceparent.clone(),
        payload: draft.payload,
        client_address: metadata.client_address.clone(),
        user_agent: metadata.user_agent.clone(),
    }
}

/// Checks that every envelope belongs to `aggregate` before anything is written.
pub(crate) fn check_batch(
    aggregate: &AggregateRef,
    events: &[EventEnvelope],
) -> Result<(), crate::AppendError> {
    if events.is_empty() {
        return Err(crate::AppendError::Invalid("no events to append".into()));
    }
    for event in events {
        if event.org_id != aggregate.org_id()
            || event.aggregate_type != aggregate.aggregate_type()
            || event.aggregate_id != aggregate.aggregate_id()
        {
            return Err(crate::AppendError::Invalid(format!(
                "event {} belongs to {}/{}/{}, not to {}",
                event.event_id,
                event.org_id,
                event.aggregate_type,
                event.aggregate_id,
                aggregate.subject()
            )));
        }
        if Uuid::parse_str(&event.event_id).is_err() {
            return Err(crate::AppendError::Invalid(format!(
                "event id {:?} is not a UUID",
                event.event_id
            )));
        }
    }
    Ok(())
}
