//! The projection runner on both backends: each event takes effect exactly
//! once, failures are retried rather than skipped, restarts resume from the
//! checkpoint, and a rebuild from zero equals the incremental result.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use promptops_eventlog::embedded::EmbeddedLog;
use promptops_eventlog::jetstream::{JetStreamLog, JetStreamOptions};
use promptops_eventlog::projection::{self, Projection, ProjectionRunner};
use promptops_eventlog::{
    AggregateRef, Context, EventDraft, EventLog, EventMetadata, Expected, RecordedEvent, envelope_for,
};
use promptops_testkit::NatsServer;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool};
use tokio_util::sync::CancellationToken;

/// Records every applied event and counts the transactions (batches) it
/// was given; can be told to fail a number of times.
#[derive(Default)]
struct Recorder {
    failures_left: AtomicU32,
    batches: AtomicU32,
}

impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(sqlx::Error::Protocol("injected failure".into()));
        }
        sqlx::query("INSERT INTO applied (sequence, body) VALUES ($1, $2)")
            .bind(i64::try_from(event.sequence).unwrap())
            .bind(String::from_utf8(event.envelope.payload.clone()).unwrap())
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[&RecordedEvent],
    ) -> Result<(), sqlx::Error> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        for event in events {
            self.apply(&mut *conn, event).await?;
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM applied")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

async fn read_model(dir: &tempfile::TempDir) -> AnyPool {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}/read.db?mode=rwc", dir.path().display());
    let pool = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    projection::ensure_checkpoints(&pool).await.unwrap();
    // The primary key makes a double application fail loudly.
    sqlx::query("CREATE TABLE applied (sequence BIGINT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

async fn append(log: &EventLog, range: std::ops::Range<u32>) {
    for i in range {
        let agg = AggregateRef::new(Context::Prompts, "org", "prompt", format!("p{}", i % 7)).unwrap();
        let envelope = envelope_for(
            &agg,
            1,
            EventDraft::new("test.v1.Happened", format!("e{i}").into_bytes()),
            &EventMetadata::default(),
        );
        log.append(&agg, Expected::Any, &[envelope]).await.unwrap();
    }
}

async fn rows(pool: &AnyPool) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT sequence, body FROM applied ORDER BY sequence")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn wait_until_applied(pool: &AnyPool, position: u64) {
    let reached = projection::wait_for_position(
        pool,
        "recorder",
        Context::Prompts,
        position,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(reached, "the projection did not reach {position}");
}

fn start(
    log: &EventLog,
    pool: &AnyPool,
    recorder: &Arc<Recorder>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    start_with_window(log, pool, recorder, projection::BATCH_WINDOW)
}

fn start_with_window(
    log: &EventLog,
    pool: &AnyPool,
    recorder: &Arc<Recorder>,
    window: Duration,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let runner = ProjectionRunner::new(log.clone(), pool.clone(), Arc::clone(recorder), Context::Prompts)
        .with_ack_wait(Duration::from_secs(1))
        .with_batch_window(window);
    #[expect(clippy::disallowed_methods, reason = "the test awaits the handle")]
    let handle = tokio::spawn(runner.run(shutdown.clone()));
    (shutdown, handle)
}

async fn each_event_once_across_restarts_failures_and_rebuilds(log: EventLog) {
    let dir = tempfile::tempdir().unwrap();
    let pool = read_model(&dir).await;
    let recorder = Arc::new(Recorder::default());

    append(&log, 0..30).await;
    recorder.failures_left.store(3, Ordering::SeqCst);
    let (shutdown, handle) = start(&log, &pool, &recorder);
    wait_until_applied(&pool, 30).await;
    // Stop and start again while events keep coming: nothing twice, nothing lost.
    shutdown.cancel();
    handle.await.unwrap();
    append(&log, 30..60).await;
    let (shutdown, handle) = start(&log, &pool, &recorder);
    append(&log, 60..80).await;
    wait_until_applied(&pool, 80).await;
    shutdown.cancel();
    handle.await.unwrap();

    let incremental = rows(&pool).await;
    assert_eq!(incremental.len(), 80);
    let expected: Vec<(i64, String)> = (0..80).map(|i| (i64::from(i) + 1, format!("e{i}"))).collect();
    assert_eq!(incremental, expected);

    // Rebuild from zero: the same rows.
    projection::reset(&log, &pool, recorder.as_ref(), &[Context::Prompts])
        .await
        .unwrap();
    assert!(rows(&pool).await.is_empty());
    assert_eq!(
        projection::checkpoint(&pool, "recorder", Context::Prompts)
            .await
            .unwrap(),
        0
    );
    let (shutdown, handle) = start(&log, &pool, &recorder);
    wait_until_applied(&pool, 80).await;
    shutdown.cancel();
    handle.await.unwrap();
    assert_eq!(rows(&pool).await, incremental);
}

#[tokio::test]
async fn embedded_each_event_once_across_restarts_failures_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap());
    each_event_once_across_restarts_failures_and_rebuilds(log).await;
}

#[tokio::test]
async fn jetstream_each_event_once_across_restarts_failures_and_rebuilds() {
    let server = NatsServer::start().unwrap();
    let log = JetStreamLog::connect(&server.url(), &JetStreamOptions::default())
        .await
        .unwrap();
    each_event_once_across_restarts_failures_and_rebuilds(EventLog::JetStream(Box::new(log))).await;
}

/// Two replicas run the same projection: one holds the lease and applies,
/// the other waits; when the first stops, the second takes over. Every
/// event once (the primary key fails a double application loudly).
async fn two_replicas_apply_each_event_once(log: EventLog) {
    let dir = tempfile::tempdir().unwrap();
    let pool = read_model(&dir).await;
    let recorder = Arc::new(Recorder::default());
    let (first, first_handle) = start(&log, &pool, &recorder);
    let (second, second_handle) = start(&log, &pool, &recorder);
    append(&log, 0..40).await;
    wait_until_applied(&pool, 40).await;
    let holders: Vec<String> =
        sqlx::query_scalar("SELECT holder FROM projection_leases WHERE projection = 'recorder'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(holders.len(), 1, "one lease for the pair");
    // The holder stops (it gives the lease up); the other takes over.
    first.cancel();
    first_handle.await.unwrap();
    append(&log, 40..70).await;
    wait_until_applied(&pool, 70).await;
    second.cancel();
    second_handle.await.unwrap();
    let expected: Vec<(i64, String)> = (0..70).map(|i| (i64::from(i) + 1, format!("e{i}"))).collect();
    assert_eq!(rows(&pool).await, expected);
}

#[tokio::test]
async fn embedded_two_replicas_apply_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap());
    two_replicas_apply_each_event_once(log).await;
}

#[tokio::test]
async fn jetstream_two_replicas_apply_each_event_once() {
    let server = NatsServer::start().unwrap();
    let log = JetStreamLog::connect(&server.url(), &JetStreamOptions::default())
        .await
        .unwrap();
    two_replicas_apply_each_event_once(EventLog::JetStream(Box::new(log))).await;
}

/// A busy projection starts at most one transaction per batch window:
/// appends arriving one by one, faster than that, are applied in fewer
/// transactions than there are events — and still each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_busy_projection_applies_at_most_one_batch_per_window() {
    const WINDOW: Duration = Duration::from_millis(20);
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap());
    let pool = read_model(&dir).await;
    let recorder = Arc::new(Recorder::default());
    let (shutdown, handle) = start_with_window(&log, &pool, &recorder, WINDOW);
    // Idle, an event is applied at once (well within a window).
    let idle = std::time::Instant::now();
    append(&log, 0..1).await;
    wait_until_applied(&pool, 1).await;
    let first_applied = idle.elapsed();

    let before = recorder.batches.load(Ordering::SeqCst);
    let clock = std::time::Instant::now();
    for i in 1..41 {
        append(&log, i..i + 1).await;
        // The runner has the other worker: this pauses the appends only.
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_until_applied(&pool, 41).await;
    let elapsed = clock.elapsed();
    let batches = recorder.batches.load(Ordering::SeqCst) - before;
    shutdown.cancel();
    handle.await.unwrap();

    // Transactions begin a window apart: however slow the machine, no more
    // than one per window of the time it took (and one to start with).
    let windows = elapsed.as_micros() / WINDOW.as_micros();
    assert!(
        u128::from(batches) <= windows + 1,
        "{batches} transactions for 40 appends in {elapsed:?}: more than one per {WINDOW:?}"
    );
    assert!(
        first_applied < Duration::from_secs(5),
        "an idle projection took {first_applied:?}"
    );
    let expected: Vec<(i64, String)> = (0..41).map(|i| (i64::from(i) + 1, format!("e{i}"))).collect();
    assert_eq!(rows(&pool).await, expected);
}
