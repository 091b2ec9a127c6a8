//! The projection runner: folds a stream into read-model rows.
//!
//! The runner takes the events that have arrived (up to 256 at a time, at
//! most one batch per [`BATCH_WINDOW`]), opens one transaction, lets the
//! [`Projection`] write the rows of each, moves the
//! checkpoint `(projection, stream)` to the last in the same transaction,
//! commits, and only then acknowledges. So an event takes effect exactly once
//! even though delivery is at-least-once:
//!
//! - a redelivered event at or below the checkpoint is acknowledged and skipped;
//! - streams have no gaps (deletes are denied), so an event above
//!   `checkpoint + 1` means an earlier one is still in flight (e.g. awaiting
//!   redelivery after a crash): the runner recreates its consumer from the
//!   checkpoint instead of applying out of order;
//! - a failing handler is retried with backoff, never skipped.
//!
//! The checkpoint table is the truth; the durable consumer is a cursor that
//! can always be rebuilt from it. One runner per projection and stream is
//! active at a time, whatever the number of replicas: a runner applies
//! events only while it holds the pair's lease in `projection_leases`
//! (taken when free or expired, renewed every [`LEASE_RENEW`], expiring
//! after [`LEASE_TTL`]); the other replicas' runners wait to take over.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{AnyConnection, AnyPool};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::{ConsumerOptions, Context, EventLog, RecordedEvent, Start, StoreError};

/// A read model built from events.
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the durable consumer's name and the checkpoint key.
    fn name(&self) -> &'static str;

    /// Writes the rows for one event. Runs inside the runner's transaction;
    /// must not commit. An error rolls back and the event is retried.
    fn apply(
        &self,
        conn: &mut AnyConnection,
        event: &RecordedEvent,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Writes the rows for a contiguous run of events, in order (what the
    /// runner calls). By default [`apply`](Self::apply) for each, in a span
    /// of its own; a projection may write a batch in fewer statements.
    fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[&RecordedEvent],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send {
        async move {
            for event in events {
                let span = apply_span(self.name(), event);
                self.apply(&mut *conn, event).instrument(span).await?;
            }
            Ok(())
        }
    }

    /// Deletes every row of the read model (before a rebuild).
    fn reset(&self, conn: &mut AnyConnection) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

/// The checkpoint table; created by [`ensure_checkpoints`].
pub const CHECKPOINT_TABLE: &str = "CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projection TEXT NOT NULL,
    stream TEXT NOT NULL,
    position BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (projection, stream)
)";

/// The lease table (created by the runner when missing).
pub const LEASE_TABLE: &str = "CREATE TABLE IF NOT EXISTS projection_leases (
    projection TEXT NOT NULL,
    stream TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (projection, stream)
)";

/// How long a lease lasts without renewal: a replica that dies hands its
/// projections over after this.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews.
pub const LEASE_RENEW: Duration = Duration::from_secs(2);

/// Takes or renews the lease of `(projection, stream)` for `holder`: true
/// when it holds it now.
pub async fn take_lease(
    pool: &AnyPool,
    projection: &str,
    context: Context,
    holder: &str,
) -> Result<bool, sqlx::Error> {
    let now = unix_ms();
    let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "INSERT INTO projection_leases (projection, stream, holder, expires_at_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (projection, stream) DO UPDATE SET holder = $3, expires_at_ms = $4
         WHERE projection_leases.holder = $3 OR projection_leases.expires_at_ms < $5",
    )
    .bind(projection)
    .bind(context.stream_name())
    .bind(holder)
    .bind(now + ttl)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the lease up (at shutdown), so another replica takes over at once.
pub async fn release_lease(
    pool: &AnyPool,
    projection: &str,
    context: Context,
    holder: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM projection_leases WHERE projection = $1 AND stream = $2 AND holder = $3")
        .bind(projection)
        .bind(context.stream_name())
        .bind(holder)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Creates the checkpoint table if it is missing (portable SQL).
pub async fn ensure_checkpoints(pool: &AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query(CHECKPOINT_TABLE).execute(pool).await.map(|_| ())
}

/// The position a projection has applied up to in one stream (0 = nothing).
pub async fn checkpoint(pool: &AnyPool, projection: &str, context: Context) -> Result<u64, sqlx::Error> {
    let position: Option<i64> = sqlx::query_scalar(
        "SELECT position FROM projection_checkpoints WHERE projection = $1 AND stream = $2",
    )
    .bind(projection)
    .bind(context.stream_name())
    .fetch_optional(pool)
    .await?;
    Ok(position.and_then(|p| u64::try_from(p).ok()).unwrap_or(0))
}

/// Waits until the projection has applied `position` of `context`'s stream,
/// at most `timeout`. Returns whether it got there. Reads the checkpoint
/// table, so it works whichever process runs the projection.
pub async fn wait_for_position(
    pool: &AnyPool,
    projection: &str,
    context: Context,
    position: u64,
    timeout: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if checkpoint(pool, projection, context).await? >= position {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Drops a projection's rows and checkpoints and its consumers, so that the
/// next run replays every stream from the start.
pub async fn reset<P: Projection>(
    log: &EventLog,
    pool: &AnyPool,
    projection: &P,
    contexts: &[Context],
) -> Result<(), ResetError> {
    for context in contexts {
        log.delete_consumer(*context, projection.name()).await?;
    }
    let mut tx = pool.begin().await?;
    projection.reset(&mut tx).await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(projection.name())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error(transparent)]
    Log(#[from] StoreError),
    #[error("read model: {0}")]
    Database(#[from] sqlx::Error),
}

/// Runs one projection over one stream until shutdown.
pub struct ProjectionRunner<P> {
    log: EventLog,
    pool: AnyPool,
    projection: Arc<P>,
    context: Context,
    ack_wait: Duration,
    batch_window: Duration,
}

impl<P: Projection> ProjectionRunner<P> {
    pub fn new(log: EventLog, pool: AnyPool, projection: Arc<P>, context: Context) -> Self {
        Self {
            log,
            pool,
            projection,
            context,
            ack_wait: Duration::from_secs(30),
            batch_window: BATCH_WINDOW,
        }
    }

    /// The least time from one transaction's start to the next
    /// ([`BATCH_WINDOW`] unless set).
    pub fn with_batch_window(mut self, batch_window: Duration) -> Self {
        self.batch_window = batch_window;
        self
    }

    /// How long JetStream waits for an ack before redelivering.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Applies events until `shutdown` is cancelled. Infrastructure errors
    /// are logged and retried with backoff; they never skip an event.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.projection.name();
        let stream = self.context.stream_name();
        let span = tracing::info_span!("projection", projection = name, stream);
        let holder = uuid::Uuid::now_v7().simple().to_string();
        async move {
            let mut backoff = Backoff::default();
            let mut allow_gap = false;
            if let Err(e) = sqlx::query(LEASE_TABLE).execute(&self.pool).await {
                tracing::warn!(error = %e, "creating the lease table");
            }
            while !shutdown.is_cancelled() {
                match take_lease(&self.pool, name, self.context, &holder).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Another replica runs it: wait to take over.
                        tokio::select! {
                            () = shutdown.cancelled() => break,
                            () = tokio::time::sleep(LEASE_RENEW) => continue,
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "projection lease unavailable; retrying");
                        if !backoff.wait(&shutdown).await {
                            break;
                        }
                        continue;
                    }
                }
                match self
                    .run_subscription(&shutdown, &mut backoff, allow_gap, &holder)
                    .await
                {
                    Ok(Resubscribe::Shutdown) => break,
                    Ok(Resubscribe::AfterGap) => allow_gap = true,
                    Ok(Resubscribe::LeaseLost) => {
                        allow_gap = false;
                        tracing::info!("projection lease lost; another replica runs it");
                    }
                    Err(err) => {
                        allow_gap = false;
                        tracing::warn!(error = %err, "projection interrupted; retrying");
                        if !backoff.wait(&shutdown).await {
                            break;
                        }
                    }
                }
            }
            if let Err(e) = release_lease(&self.pool, name, self.context, &holder).await {
                tracing::debug!(error = %e, "releasing the projection lease");
            }
            tracing::info!("projection stopped");
        }
        .instrument(span)
        .await;
    }

    async fn run_subscription(
        &self,
        shutdown: &CancellationToken,
        backoff: &mut Backoff,
        mut allow_gap: bool,
        holder: &str,
    ) -> Result<Resubscribe, StoreError> {
        let name = self.projection.name();
        let stream = self.context.stream_name();
        let mut position = checkpoint(&self.pool, name, self.context)
            .await
            .map_err(|e| StoreError::Unavailable(format!("read model: {e}")))?;
        let options = ConsumerOptions {
            durable: name.to_owned(),
            start: Start::After(position),
            ack_wait: self.ack_wait,
        };
        let mut subscription = self.log.subscribe(self.context, options).await?;
        tracing::debug!(position, "projection subscribed");
        let mut renew = tokio::time::interval(LEASE_RENEW);
        renew.tick().await;
        let mut applied_at: Option<tokio::time::Instant> = None;
        loop {
            if let Some(at) = applied_at.take() {
                // At most one transaction per window: under load the next
                // takes everything that arrived meanwhile, instead of a
                // transaction (and its round trips) for every append.
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(Resubscribe::Shutdown),
                    () = tokio::time::sleep_until(at + self.batch_window) => {}
                }
            }
            let deliveries = tokio::select! {
                () = shutdown.cancelled() => return Ok(Resubscribe::Shutdown),
                _ = renew.tick() => {
                    let held = take_lease(&self.pool, name, self.context, holder)
                        .await
                        .map_err(|e| StoreError::Unavailable(format!("projection lease: {e}")))?;
                    if held {
                        continue;
                    }
                    return Ok(Resubscribe::LeaseLost);
                }
                batch = subscription.next_batch(BATCH) => batch?,
            };
            // Sort the batch: already applied (skip), the contiguous run to
            // apply now, and whatever follows a gap.
            let mut done = Vec::new();
            let mut apply = Vec::new();
            let mut gap_at = None;
            for delivery in deliveries {
                let sequence = delivery.event.sequence;
                let expected = apply
                    .last()
                    .map_or(position, |d: &crate::Delivery| d.event.sequence)
                    + 1;
                if gap_at.is_some() {
                    // Left unacknowledged: redelivered after the resubscribe.
                } else if sequence < expected {
                    done.push(delivery);
                } else if sequence == expected || allow_gap {
                    if sequence != expected {
                        metrics::counter!("projection_gaps_total", "projection" => name, "stream" => stream)
                            .increment(1);
                        tracing::error!(
                            position,
                            sequence,
                            "the stream has a gap: events were removed from the log"
                        );
                    }
                    allow_gap = false;
                    apply.push(delivery);
                } else {
                    gap_at = Some(sequence);
                }
            }
            crate::Delivery::ack_all(done).await?;
            if !apply.is_empty() {
                let events: Vec<&RecordedEvent> = apply.iter().map(|d| &d.event).collect();
                applied_at = Some(tokio::time::Instant::now());
                match self.apply_with_retry(&events, position, shutdown).await {
                    Applied::Yes => {}
                    Applied::Shutdown => return Ok(Resubscribe::Shutdown),
                    // Another runner moved the checkpoint (a lease that
                    // expired under us): nothing of this batch was kept.
                    Applied::Stale => return Ok(Resubscribe::LeaseLost),
                }
                backoff.reset();
                if let Some(last) = apply.last() {
                    position = last.event.sequence;
                    record_lag(name, stream, &apply, last.pending);
                }
                if let Err(err) = crate::Delivery::ack_all(apply).await {
                    // The checkpoint already holds the effect; a redelivery is skipped.
                    tracing::debug!(error = %err, "ack failed");
                }
            }
            if let Some(sequence) = gap_at {
                tracing::info!(
                    position,
                    sequence,
                    "out-of-order delivery; recreating the consumer from the checkpoint"
                );
                drop(subscription);
                self.log.delete_consumer(self.context, name).await?;
                return Ok(Resubscribe::AfterGap);
            }
        }
    }

    /// Applies a contiguous run of events and moves the checkpoint from
    /// `from` to the last, in one transaction, retrying until it commits.
    async fn apply_with_retry(
        &self,
        events: &[&RecordedEvent],
        from: u64,
        shutdown: &CancellationToken,
    ) -> Applied {
        let mut backoff = Backoff::default();
        loop {
            match self.apply_once(events, from).await {
                Ok(true) => return Applied::Yes,
                Ok(false) => return Applied::Stale,
                Err(err) => {
                    metrics::counter!(
                        "projection_errors_total",
                        "projection" => self.projection.name(),
                        "stream" => self.context.stream_name()
                    )
                    .increment(1);
                    tracing::warn!(error = %err, first = events.first().map(|e| e.sequence), count = events.len(), "projection failed to apply events; retrying");
                    if !backoff.wait(shutdown).await {
                        return Applied::Shutdown;
                    }
                }
            }
        }
    }

    /// One transaction: the events' rows and the checkpoint moved from
    /// `from` (a compare-and-set: false, rolled back, when it is no longer
    /// at `from`).
    async fn apply_once(&self, events: &[&RecordedEvent], from: u64) -> Result<bool, sqlx::Error> {
        let Some(last) = events.last() else {
            return Ok(true);
        };
        let mut tx = self.pool.begin().await?;
        let span = tracing::debug_span!("apply batch", events = events.len());
        self.projection
            .apply_batch(&mut tx, events)
            .instrument(span)
            .await?;
        let position = i64::try_from(last.sequence).unwrap_or(i64::MAX);
        let moved = sqlx::query(
            "INSERT INTO projection_checkpoints (projection, stream, position, updated_at_ms)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (projection, stream) DO UPDATE SET position = $3, updated_at_ms = $4
             WHERE projection_checkpoints.position = $5",
        )
        .bind(self.projection.name())
        .bind(self.context.stream_name())
        .bind(position)
        .bind(unix_ms())
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        tx.commit().await.map(|()| true)
    }
}

enum Applied {
    Yes,
    Stale,
    Shutdown,
}

enum Resubscribe {
    Shutdown,
    AfterGap,
    LeaseLost,
}

fn record_lag(projection: &'static str, stream: &'static str, applied: &[crate::Delivery], pending: u64) {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let labels = [("projection", projection), ("stream", stream)];
    let lag = metrics::histogram!("projection_lag_seconds", &labels);
    for delivery in applied {
        let occurred = delivery.event.occurred_at_unix_nanos();
        lag.record(((now - occurred).max(0) as f64) / 1e9);
    }
    if let Some(last) = applied.last() {
        metrics::gauge!("projection_position", &labels).set(last.event.sequence as f64);
    }
    metrics::gauge!("projection_pending_events", &labels).set(pending as f64);
    metrics::counter!("projection_events_applied_total", &labels).increment(applied.len() as u64);
}

/// A span for applying one event, continuing the trace that appended it.
fn apply_span(projection: &'static str, event: &RecordedEvent) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        "projection.apply",
        projection,
        stream = event.context.stream_name(),
        sequence = event.sequence,
        event_type = %event.envelope.event_type,
        event_id = %event.envelope.event_id,
    );
    if !event.envelope.traceparent.is_empty() {
        let carrier =
            std::collections::HashMap::from([("traceparent".to_owned(), event.envelope.traceparent.clone())]);
        let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
        let _ = span.set_parent(parent);
    }
    span
}

fn unix_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// Most events applied in one transaction.
const BATCH: usize = 256;

/// The least time from one transaction's start to the next: an idle
/// projection applies an event at once, a busy one in batches of what
/// arrived within the window (each transaction costs a fetch, a few
/// statements, a checkpoint and an ack, whatever its size).
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// Exponential backoff from 50 ms to 5 s.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    fn reset(&mut self) {
        *self = Self::default();
    }

    /// Sleeps for the current delay; false when shutdown came first.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(5));
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}
