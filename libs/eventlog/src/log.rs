//! [`EventLog`]: the one API every service uses, dispatching to the backend
//! chosen at start (`NATS_URL` set → JetStream, unset → embedded).

use std::time::Duration;

use promptops_proto::eventlog::v1::EventEnvelope;

use crate::embedded::{EmbeddedAcker, EmbeddedLog, EmbeddedSubscription};
use crate::jetstream::{JetStreamLog, JetStreamSubscription};
use crate::{AggregateRef, AppendError, Appended, Context, Expected, RecordedEvent, StoreError};

/// The event store. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub enum EventLog {
    JetStream(Box<JetStreamLog>),
    Embedded(EmbeddedLog),
}

/// Where a new durable consumer starts. An existing consumer keeps its own
/// position (its acknowledgements), whatever is asked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From the first event of the stream.
    Beginning,
    /// From the event after this stream sequence (a checkpoint).
    After(u64),
}

/// A durable consumer over one whole stream, with explicit acknowledgement.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The consumer's durable name; the same name resumes where it left off.
    pub durable: String,
    pub start: Start,
    /// How long a delivered event may stay unacknowledged before JetStream
    /// delivers it again. (The embedded log redelivers on resubscribe.)
    pub ack_wait: Duration,
}

impl ConsumerOptions {
    pub fn new(durable: impl Into<String>, start: Start) -> Self {
        Self {
            durable: durable.into(),
            start,
            ack_wait: Duration::from_secs(30),
        }
    }
}

impl EventLog {
    /// `jetstream` or `embedded`, for logs and `/readyz`.
    pub fn backend_name(&self) -> &'static str {
        match self {
            EventLog::JetStream(_) => "jetstream",
            EventLog::Embedded(_) => "embedded",
        }
    }

    /// Appends `events` to `aggregate` if its last event is where `expected`
    /// says. Events whose id is already in the log are not stored again.
    pub async fn append(
        &self,
        aggregate: &AggregateRef,
        expected: Expected,
        events: &[EventEnvelope],
    ) -> Result<Appended, AppendError> {
        crate::event::check_batch(aggregate, events)?;
        let started = std::time::Instant::now();
        let result = match self {
            EventLog::JetStream(log) => log.append(aggregate, expected, events).await,
            EventLog::Embedded(log) => log.append(aggregate, expected, events).await,
        };
        let outcome = match &result {
            Ok(appended) if appended.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(AppendError::Conflict { .. }) => "conflict",
            Err(_) => "error",
        };
        let labels = [
            ("stream", aggregate.context().stream_name()),
            ("outcome", outcome),
        ];
        metrics::counter!("eventlog_appends_total", &labels).increment(events.len() as u64);
        metrics::histogram!("eventlog_append_seconds", &labels).record(started.elapsed().as_secs_f64());
        result
    }

    /// Every event of one aggregate, in order.
    pub async fn read_aggregate(&self, aggregate: &AggregateRef) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read_aggregate_after(aggregate, 0).await
    }

    /// The aggregate's events after stream sequence `after`, in order: what
    /// a state known up to `after` is missing (usually nothing, one round trip).
    pub async fn read_aggregate_after(
        &self,
        aggregate: &AggregateRef,
        after: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        match self {
            EventLog::JetStream(log) => log.read_aggregate(aggregate, after).await,
            EventLog::Embedded(log) => log.read_aggregate(aggregate, after).await,
        }
    }

    /// Opens (creating if needed) a durable consumer over a whole stream.
    pub async fn subscribe(
        &self,
        context: Context,
        options: ConsumerOptions,
    ) -> Result<Subscription, StoreError> {
        match self {
            EventLog::JetStream(log) => Ok(Subscription::JetStream(Box::new(
                log.subscribe(context, &options).await?,
            ))),
            EventLog::Embedded(log) => Ok(Subscription::Embedded(log.subscribe(context, &options).await?)),
        }
    }

    /// Reads a whole stream from its first event and then follows it, with
    /// no consumer state kept anywhere (acknowledging does nothing). For
    /// in-memory views rebuilt at every start, e.g. a revocation list.
    pub async fn tail(&self, context: Context) -> Result<Subscription, StoreError> {
        self.tail_from(context, Start::Beginning).await
    }

    /// [`tail`](Self::tail) from a position: e.g. `Start::After(last)` to
    /// follow only what is appended from now on.
    pub async fn tail_from(&self, context: Context, start: Start) -> Result<Subscription, StoreError> {
        match self {
            EventLog::JetStream(log) => {
                Ok(Subscription::JetStream(Box::new(log.tail(context, start).await?)))
            }
            EventLog::Embedded(log) => Ok(Subscription::Embedded(log.tail(context, start))),
        }
    }

    /// Removes a durable consumer (its position is forgotten). Missing is fine.
    pub async fn delete_consumer(&self, context: Context, durable: &str) -> Result<(), StoreError> {
        match self {
            EventLog::JetStream(log) => log.delete_consumer(context, durable).await,
            EventLog::Embedded(log) => log.delete_consumer(context, durable).await,
        }
    }

    /// The sequence of the newest event in a stream (0 when empty).
    pub async fn last_sequence(&self, context: Context) -> Result<u64, StoreError> {
        match self {
            EventLog::JetStream(log) => log.last_sequence(context).await,
            EventLog::Embedded(log) => log.last_sequence(context).await,
        }
    }

    /// Succeeds when the backend answers; used by `/readyz`.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        self.last_sequence(Context::Prompts).await.map(|_| ())
    }
}

/// A live durable consumer. Dropping it stops delivery; events delivered but
/// not acknowledged are delivered again to the next subscriber.
#[derive(Debug)]
pub enum Subscription {
    JetStream(Box<JetStreamSubscription>),
    Embedded(EmbeddedSubscription),
}

impl Subscription {
    /// Waits for the next event.
    pub async fn next(&mut self) -> Result<Delivery, StoreError> {
        match self {
            Subscription::JetStream(sub) => sub.next().await,
            Subscription::Embedded(sub) => sub.next().await,
        }
    }

    /// Waits for the next event, then takes up to `max - 1` more that have
    /// already arrived: a batch to process in one transaction.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut batch = vec![self.next().await?];
        while batch.len() < max {
            let more = match self {
                Subscription::JetStream(sub) => sub.next_buffered().transpose()?,
                Subscription::Embedded(sub) => sub.next_buffered(),
            };
            match more {
                Some(delivery) => batch.push(delivery),
                None => break,
            }
        }
        Ok(batch)
    }
}

/// One delivered event; acknowledge it once its effects are stored.
#[derive(Debug)]
pub struct Delivery {
    pub event: RecordedEvent,
    /// Events in the stream after this one not yet delivered to the consumer.
    pub pending: u64,
    pub(crate) acker: Acker,
}

pub(crate) enum Acker {
    JetStream(Box<async_nats::jetstream::message::Acker>),
    Embedded(EmbeddedAcker),
    /// Deliveries of a tail: nothing to acknowledge.
    None,
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Acker::JetStream(_) => f.write_str("Acker::JetStream"),
            Acker::Embedded(acker) => acker.fmt(f),
            Acker::None => f.write_str("Acker::None"),
        }
    }
}

impl Delivery {
    /// Acknowledges the event: it will not be delivered to this consumer again.
    pub async fn ack(self) -> Result<(), StoreError> {
        match self.acker {
            Acker::JetStream(acker) => acker.ack().await.map_err(StoreError::unavailable),
            Acker::Embedded(acker) => acker.ack().await,
            Acker::None => Ok(()),
        }
    }

    /// Acknowledges deliveries of one subscription (one write on the
    /// embedded log; one ack message each on JetStream).
    pub async fn ack_all(deliveries: Vec<Delivery>) -> Result<(), StoreError> {
        let mut embedded = Vec::new();
        for delivery in deliveries {
            match delivery.acker {
                Acker::JetStream(acker) => acker.ack().await.map_err(StoreError::unavailable)?,
                Acker::Embedded(acker) => embedded.push(acker),
                Acker::None => {}
            }
        }
        EmbeddedAcker::ack_all(embedded).await
    }
}
