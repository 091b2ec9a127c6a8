//! The production backend: NATS JetStream.
//!
//! - One stream per [`Context`], created or updated idempotently at connect:
//!   file storage, `deny_delete` and `deny_purge` (the log is immutable),
//!   `allow_direct` for reading an aggregate's events with direct gets.
//! - Append: `Nats-Msg-Id = event_id` (deduplicated within the stream's
//!   duplicate window) and `Nats-Expected-Last-Subject-Sequence` (optimistic
//!   concurrency per aggregate subject). nats-server 2.9 has no atomic batch
//!   publish: the events of one append are published one after another, each
//!   expecting the previous one's sequence. A failure in the middle leaves a
//!   prefix in the log; retrying the same envelopes (same event ids) within
//!   the duplicate window completes it without duplicates. (The embedded log
//!   appends a batch atomically.)
//! - Consumers: durable pull consumers, one filter subject (the whole stream),
//!   explicit ack. Only features nats-server 2.9 has are used.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use promptops_proto::eventlog::v1::EventEnvelope;
use prost::Message as _;

use crate::log::{Acker, ConsumerOptions, Delivery, Start};
use crate::{AggregateRef, AppendError, Appended, Context, Expected, RecordedEvent, StoreError};

/// How the streams are created.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// Replicas per stream: 1 locally, 3 in a cluster.
    pub replicas: usize,
    /// How long a `Nats-Msg-Id` is remembered for deduplication.
    pub duplicate_window: Duration,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

#[derive(Clone, Debug)]
pub struct JetStreamLog {
    js: jetstream::Context,
}

/// The stream configuration of one context; exposed for tests and tooling.
pub fn stream_config(context: Context, options: &JetStreamOptions) -> stream::Config {
    stream::Config {
        name: context.stream_name().to_owned(),
        subjects: vec![context.stream_subjects()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: options.replicas,
        duplicate_window: options.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// Creates the stream, or updates it when its settings differ from
/// `wanted` — never an update that changes nothing: Debian's nats-server
/// 2.9.10 can crash (`stream.updateWithAdvisory`) when several processes
/// update the same stream at once, as every service did at start.
async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), String> {
    match js.get_stream(&wanted.name).await {
        Ok(mut stream) => {
            let current = stream.info().await.map_err(|e| e.to_string())?.config.clone();
            if !same_settings(&current, &wanted) {
                js.update_stream(wanted).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        // Missing (or not found in time): create it. A create that races
        // another process's succeeds when the settings are the same.
        Err(_) => js
            .create_stream(wanted)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// The settings `stream_config` chooses are the same in both.
fn same_settings(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects == wanted.subjects
        && current.storage == wanted.storage
        && current.retention == wanted.retention
        && current.num_replicas == wanted.num_replicas
        && current.duplicate_window == wanted.duplicate_window
        && current.deny_delete == wanted.deny_delete
        && current.deny_purge == wanted.deny_purge
        && current.allow_direct == wanted.allow_direct
}

impl JetStreamLog {
    /// Connects and makes sure every context's stream exists as configured.
    pub async fn connect(url: &str, options: &JetStreamOptions) -> Result<Self, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .name("promptops")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to NATS at {url}: {e}")))?;
        Self::from_client(client, options).await
    }

    pub async fn from_client(
        client: async_nats::Client,
        options: &JetStreamOptions,
    ) -> Result<Self, StoreError> {
        let js = jetstream::new(client);
        for context in Context::ALL {
            // A busy or just-started server may time out: try for ~30 s.
            let mut delay = Duration::from_millis(200);
            let mut attempt = 1;
            loop {
                match ensure_stream(&js, stream_config(context, options)).await {
                    Ok(_) => break,
                    Err(err) if attempt < 8 => {
                        tracing::warn!(stream = context.stream_name(), error = %err, attempt, "stream setup failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                        attempt += 1;
                    }
                    Err(err) => {
                        return Err(StoreError::Unavailable(format!(
                            "cannot create or update stream {}: {err}",
                            context.stream_name()
                        )));
                    }
                }
            }
        }
        Ok(Self { js })
    }

    /// The JetStream context, for tests and tooling.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    async fn stream(&self, context: Context) -> Result<stream::Stream<()>, StoreError> {
        self.js
            .get_stream_no_info(context.stream_name())
            .await
            .map_err(StoreError::unavailable)
    }

    pub(crate) async fn append(
        &self,
        aggregate: &AggregateRef,
        expected: Expected,
        events: &[EventEnvelope],
    ) -> Result<Appended, AppendError> {
        let subject = aggregate.subject();
        let mut expected_now = expected;
        let mut last_sequence = 0;
        let mut duplicate = true;
        for event in events {
            let mut publish = jetstream::message::PublishMessage::build()
                .payload(event.encode_to_vec().into())
                .message_id(&event.event_id);
            if let Some(seq) = expected_now.last_subject_sequence() {
                publish = publish.expected_last_subject_sequence(seq);
            }
            if !event.traceparent.is_empty() {
                publish = publish.header("traceparent", event.traceparent.as_str());
            }
            let ack = self
                .js
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| StoreError::unavailable(format!("publish to {subject}: {e}")))?
                .await;
            match ack {
                Ok(ack) => {
                    last_sequence = ack.sequence;
                    duplicate &= ack.duplicate;
                    if expected_now != Expected::Any {
                        expected_now = Expected::Sequence(ack.sequence);
                    }
                }
                Err(err) if err.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    let actual = self.last_subject_sequence(aggregate).await?;
                    return Err(AppendError::Conflict {
                        expected: expected_now,
                        actual,
                    });
                }
                Err(err) => {
                    return Err(StoreError::unavailable(format!("publish to {subject}: {err}")).into());
                }
            }
        }
        Ok(Appended {
            context: aggregate.context(),
            last_sequence,
            duplicate,
        })
    }

    async fn last_subject_sequence(&self, aggregate: &AggregateRef) -> Result<u64, StoreError> {
        let stream = self.stream(aggregate.context()).await?;
        match stream.get_last_raw_message_by_subject(&aggregate.subject()).await {
            Ok(message) => Ok(message.sequence),
            Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(err) => Err(StoreError::unavailable(err)),
        }
    }

    pub(crate) async fn read_aggregate(
        &self,
        aggregate: &AggregateRef,
        after: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let context = aggregate.context();
        let stream = self.stream(context).await?;
        let subject = aggregate.subject();
        let mut events = Vec::new();
        let mut next = after + 1;
        loop {
            match stream
                .direct_get_next_for_subject(subject.as_str(), Some(next))
                .await
            {
                Ok(message) => {
                    next = message.sequence + 1;
                    events.push(decode(
                        context,
                        message.sequence,
                        message.subject.to_string(),
                        &message.payload,
                    )?);
                }
                Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => return Ok(events),
                Err(err) => return Err(StoreError::unavailable(format!("read {subject}: {err}"))),
            }
        }
    }

    pub(crate) async fn subscribe(
        &self,
        context: Context,
        options: &ConsumerOptions,
    ) -> Result<JetStreamSubscription, StoreError> {
        let stream = self.stream(context).await?;
        let deliver_policy = match options.start {
            Start::Beginning | Start::After(0) => consumer::DeliverPolicy::All,
            Start::After(seq) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                &options.durable,
                consumer::pull::Config {
                    durable_name: Some(options.durable.clone()),
                    deliver_policy,
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: options.ack_wait,
                    max_ack_pending: 10_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| StoreError::unavailable(format!("consumer {}: {e}", options.durable)))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| StoreError::unavailable(format!("consumer {}: {e}", options.durable)))?;
        Ok(JetStreamSubscription {
            context,
            messages: Messages::Durable(Box::new(messages)),
        })
    }

    /// An ordered, ephemeral consumer from the first event: nothing is
    /// remembered on the server, nothing needs acknowledging.
    pub(crate) async fn tail(
        &self,
        context: Context,
        start: Start,
    ) -> Result<JetStreamSubscription, StoreError> {
        let stream = self.stream(context).await?;
        let deliver_policy = match start {
            Start::Beginning | Start::After(0) => consumer::DeliverPolicy::All,
            Start::After(seq) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            },
        };
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::unavailable(format!("ordered consumer: {e}")))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| StoreError::unavailable(format!("ordered consumer: {e}")))?;
        Ok(JetStreamSubscription {
            context,
            messages: Messages::Ordered(Box::new(messages)),
        })
    }

    pub(crate) async fn delete_consumer(&self, context: Context, durable: &str) -> Result<(), StoreError> {
        let stream = self.stream(context).await?;
        match stream.delete_consumer(durable).await {
            Ok(_) => Ok(()),
            Err(err) if err.to_string().contains("not found") => Ok(()),
            Err(err) => Err(StoreError::unavailable(format!(
                "delete consumer {durable}: {err}"
            ))),
        }
    }

    pub(crate) async fn last_sequence(&self, context: Context) -> Result<u64, StoreError> {
        let info = self
            .stream(context)
            .await?
            .get_info()
            .await
            .map_err(StoreError::unavailable)?;
        Ok(info.state.last_sequence)
    }
}

/// A pull consumer's message stream.
pub struct JetStreamSubscription {
    context: Context,
    messages: Messages,
}

enum Messages {
    Durable(Box<consumer::pull::Stream>),
    Ordered(Box<consumer::pull::Ordered>),
}

type Next = Option<Result<jetstream::Message, String>>;

impl Messages {
    async fn next(&mut self) -> Next {
        match self {
            Messages::Durable(stream) => stream.next().await.map(|r| r.map_err(|e| e.to_string())),
            Messages::Ordered(stream) => stream.next().await.map(|r| r.map_err(|e| e.to_string())),
        }
    }

    fn is_ordered(&self) -> bool {
        matches!(self, Messages::Ordered(_))
    }
}

impl std::fmt::Debug for JetStreamSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamSubscription")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl JetStreamSubscription {
    pub(crate) async fn next(&mut self) -> Result<Delivery, StoreError> {
        let message = self.messages.next().await;
        self.delivery(message)
    }

    /// A delivery that has already arrived, without waiting.
    pub(crate) fn next_buffered(&mut self) -> Option<Result<Delivery, StoreError>> {
        let message = futures::FutureExt::now_or_never(self.messages.next())?;
        Some(self.delivery(message))
    }

    fn delivery(&mut self, message: Next) -> Result<Delivery, StoreError> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(err)) => return Err(StoreError::unavailable(format!("consumer: {err}"))),
            None => return Err(StoreError::Unavailable("consumer closed".into())),
        };
        let (sequence, pending) = {
            let info = message.info().map_err(StoreError::unavailable)?;
            (info.stream_sequence, info.pending)
        };
        let ordered = self.messages.is_ordered();
        let (message, acker) = message.split();
        let event = decode(
            self.context,
            sequence,
            message.subject.to_string(),
            &message.payload,
        )?;
        Ok(Delivery {
            event,
            pending,
            acker: if ordered {
                Acker::None
            } else {
                Acker::JetStream(Box::new(acker))
            },
        })
    }
}

pub(crate) fn decode(
    context: Context,
    sequence: u64,
    subject: String,
    payload: &[u8],
) -> Result<RecordedEvent, StoreError> {
    let envelope = EventEnvelope::decode(payload).map_err(|e| StoreError::Corrupt {
        stream: context.stream_name().to_owned(),
        sequence,
        reason: e.to_string(),
    })?;
    Ok(RecordedEvent {
        context,
        sequence,
        subject,
        envelope,
    })
}
