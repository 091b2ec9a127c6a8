//! The embedded backend: the event log in one SQLite file, for the
//! single-process default. Same semantics as JetStream:
//!
//! - one sequence per stream, assigned in append order, never reused;
//! - appends deduplicated by event id (for ever, not only within a window)
//!   and checked against the aggregate's last sequence, all in one
//!   `BEGIN IMMEDIATE` transaction, so a multi-event append is atomic;
//! - rows are immutable: triggers refuse `UPDATE` and `DELETE`;
//! - durable consumers keep an acknowledgement floor in the `consumers`
//!   table; a new subscriber resumes after the floor, so events delivered but
//!   not acknowledged are delivered again.
//!
//! Subscribers are woken by appends in this process and poll for appends
//! made by other processes sharing the file.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promptops_proto::eventlog::v1::EventEnvelope;
use prost::Message as _;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::jetstream::decode;
use crate::log::{Acker, ConsumerOptions, Delivery, Start};
use crate::{AggregateRef, AppendError, Appended, Context, Expected, RecordedEvent, StoreError};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS events (
        stream TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        subject TEXT NOT NULL,
        event_id TEXT NOT NULL,
        payload BLOB NOT NULL,
        PRIMARY KEY (stream, sequence)
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (stream, event_id)",
    "CREATE INDEX IF NOT EXISTS events_subject ON events (subject, sequence)",
    "CREATE TRIGGER IF NOT EXISTS events_immutable_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is immutable'); END",
    "CREATE TRIGGER IF NOT EXISTS events_immutable_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'the event log is immutable'); END",
    "CREATE TABLE IF NOT EXISTS consumers (
        stream TEXT NOT NULL,
        name TEXT NOT NULL,
        ack_floor INTEGER NOT NULL,
        PRIMARY KEY (stream, name)
    )",
];

/// How often subscribers look for appends made by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
const FETCH_BATCH: i64 = 512;

#[derive(Clone, Debug)]
pub struct EmbeddedLog {
    pool: SqlitePool,
    appended: Arc<Appends>,
    writer: Writer,
}

/// Wakes the subscribers of a stream when it has new events (only
/// those: a subscriber of another stream would look for nothing).
#[derive(Debug, Default)]
struct Appends {
    by_stream: [Notify; Context::ALL.len()],
}

impl Appends {
    fn of(&self, context: Context) -> &Notify {
        let index = Context::ALL.iter().position(|c| *c == context).unwrap_or(0);
        &self.by_stream[index]
    }
}

/// A write waiting for the writer.
#[derive(Debug)]
enum WriteJob {
    Append(AppendJob),
    /// A durable consumer's new acknowledgement floor.
    Ack(AckJob),
}

#[derive(Debug)]
struct AckJob {
    stream: &'static str,
    consumer: String,
    floor: u64,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// What one job of a batch came to (sent once the batch is committed).
#[derive(Debug)]
enum Written {
    Append(Result<Appended, AppendError>),
    Ack,
}

/// One append waiting for the writer.
#[derive(Debug)]
struct AppendJob {
    aggregate: AggregateRef,
    expected: Expected,
    events: Vec<EventEnvelope>,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// Appends committed in one transaction, at most.
const MAX_BATCH: usize = 256;

/// How long a write waits for another process's lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Commits between two WAL checkpoints (each commit writes a few pages;
/// SQLite's own automatic checkpoint comes every 1,000 pages).
const CHECKPOINT_EVERY: u32 = 250;

/// The log's writes, all made by the writer thread (see [`write_queued`]):
/// it takes every write waiting and commits them together (group commit),
/// so under load one commit serves many and no tokio worker is held by
/// commits. WAL checkpoints, which can take milliseconds, run on a thread
/// of their own; writes wait only for the short tail of one (see
/// [`checkpoint_on_request`]).
#[derive(Clone, Debug)]
struct Writer {
    queue: mpsc::Sender<WriteJob>,
}

/// The writer's connection, shared with the checkpointer, which holds it
/// to keep writes out for the last frames of a checkpoint.
type WriterConnection = Arc<Mutex<rusqlite::Connection>>;

impl Writer {
    /// Starts the writer thread and the checkpointer for the log at `path`.
    fn start(path: &Path, appended: Arc<Appends>) -> Result<Self, StoreError> {
        let conn = writer_connection(path)?;
        let checkpointer = writer_connection(path)?;
        let (checkpoints, requests) = std::sync::mpsc::sync_channel(1);
        let (queue, jobs) = mpsc::channel(4 * MAX_BATCH);
        let conn: WriterConnection = Arc::new(Mutex::new(conn));
        let weak = Arc::downgrade(&conn);
        let cannot_start =
            |e: std::io::Error| StoreError::Unavailable(format!("cannot start the event log's writer: {e}"));
        // Neither thread is joined. The writer ends when the last handle of
        // the log is dropped (its channel closes), after answering every
        // write it has taken; the checkpointer ends with the writer.
        std::thread::Builder::new()
            .name("eventlog-checkpoint".into())
            .spawn(move || checkpoint_on_request(&checkpointer, &weak, &requests))
            .map_err(cannot_start)?;
        std::thread::Builder::new()
            .name("eventlog-writer".into())
            .spawn(move || write_queued(&conn, &appended, &checkpoints, jobs))
            .map_err(cannot_start)?;
        Ok(Self { queue })
    }

    /// Hands `job` to the writer thread, which commits and answers it.
    async fn write(&self, job: WriteJob) -> Result<(), StoreError> {
        self.queue
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the event log's writer has stopped".into()))
    }
}

/// Answers the jobs of a committed (or failed) batch, then wakes the
/// subscribers.
fn answer(appended: &Appends, batch: &mut Vec<WriteJob>, written: rusqlite::Result<Vec<Written>>) {
    metrics::histogram!("promptops_eventlog_group_commit_size").record(batch.len() as f64);
    let results = match written {
        Ok(results) => results,
        Err(err) => {
            let reason = format!("sqlite: {err}");
            for job in batch.drain(..) {
                let failure = StoreError::Unavailable(reason.clone());
                match job {
                    WriteJob::Append(job) => {
                        let _ = job.reply.send(Err(AppendError::Store(failure)));
                    }
                    WriteJob::Ack(job) => {
                        let _ = job.reply.send(Err(failure));
                    }
                }
            }
            return;
        }
    };
    // The appenders are answered first, the subscribers woken after: on a
    // busy machine a reply waiting behind the projections' fetches is
    // latency on every request.
    let woken: Vec<Context> = Context::ALL
        .into_iter()
        .filter(|context| {
            results
                .iter()
                .any(|r| matches!(r, Written::Append(Ok(a)) if !a.duplicate && a.context == *context))
        })
        .collect();
    for (job, result) in batch.drain(..).zip(results) {
        match (job, result) {
            (WriteJob::Append(job), Written::Append(result)) => {
                let _ = job.reply.send(result);
            }
            (WriteJob::Ack(job), _) => {
                let _ = job.reply.send(Ok(()));
            }
            (WriteJob::Append(job), Written::Ack) => {
                let _ = job
                    .reply
                    .send(Err(AppendError::Invalid("mismatched write".into())));
            }
        }
    }
    for context in woken {
        appended.of(context).notify_waiters();
    }
}

/// The writer thread: takes every write waiting (up to [`MAX_BATCH`]), does
/// them in one `BEGIN IMMEDIATE` transaction — each append checked on its
/// own, a refused one rolled back to its savepoint without touching the
/// others; acknowledgement floors moved — commits once and answers each.
/// Statements are prepared once and cached on the connection.
/// Every [`CHECKPOINT_EVERY`] commits it asks the checkpointer for one.
fn write_queued(
    conn: &Mutex<rusqlite::Connection>,
    appended: &Appends,
    checkpoints: &std::sync::mpsc::SyncSender<()>,
    mut jobs: mpsc::Receiver<WriteJob>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut commits = 0;
    while let Some(job) = jobs.blocking_recv() {
        batch.push(job);
        let mut conn = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let written = write_batch(&mut conn, &batch);
        drop(conn);
        let committed = written.is_ok();
        answer(appended, &mut batch, written);
        commits += u32::from(committed);
        if commits >= CHECKPOINT_EVERY {
            commits = 0;
            // Full: one is asked for already.
            let _ = checkpoints.try_send(());
        }
    }
}

/// The checkpointer thread, on a connection of its own. On each request a
/// passive WAL checkpoint copies what the WAL holds while writers go on;
/// then a second one, with writes held for its length, copies the few
/// frames committed meanwhile. The WAL is then wholly in the database file,
/// so the next write starts it again from the top instead of growing it.
/// The thread ends when the log's writer side is dropped.
fn checkpoint_on_request(
    conn: &rusqlite::Connection,
    writer: &std::sync::Weak<Mutex<rusqlite::Connection>>,
    requests: &std::sync::mpsc::Receiver<()>,
) {
    let checkpoint = || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        })
    };
    while requests.recv().is_ok() {
        let started = Instant::now();
        let bulk = checkpoint();
        let Some(writer) = writer.upgrade() else { return };
        let held = Instant::now();
        let writes = writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let rest = checkpoint();
        drop(writes);
        metrics::histogram!("promptops_eventlog_checkpoint_writes_held_seconds")
            .record(held.elapsed().as_secs_f64());
        match (bulk, rest) {
            (Ok((_, copied)), Ok((frames, rest))) => {
                tracing::debug!(copied, frames, rest, took = ?started.elapsed(), "event log checkpoint");
            }
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "event log checkpoint failed; tried again after the next commits");
            }
        }
    }
}

/// Writes `batch` in one transaction; the outer error is the transaction's.
fn write_batch(conn: &mut rusqlite::Connection, batch: &[WriteJob]) -> rusqlite::Result<Vec<Written>> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let job = match job {
            WriteJob::Append(job) => job,
            WriteJob::Ack(ack) => {
                tx.prepare_cached(
                    "UPDATE consumers SET ack_floor = MAX(ack_floor, ?1) WHERE stream = ?2 AND name = ?3",
                )?
                .execute(rusqlite::params![to_i64(ack.floor), ack.stream, ack.consumer])?;
                results.push(Written::Ack);
                continue;
            }
        };
        let savepoint = job.events.len() > 1;
        if savepoint {
            tx.execute_batch("SAVEPOINT append")?;
        }
        let result = append_in(&tx, &job.aggregate, job.expected, &job.events)?;
        match (&result, savepoint) {
            (Err(AppendError::Conflict { .. }), true) => {
                tx.execute_batch("ROLLBACK TO append; RELEASE append")?;
            }
            (_, true) => tx.execute_batch("RELEASE append")?,
            _ => {}
        }
        results.push(Written::Append(result));
    }
    tx.commit()?;
    Ok(results)
}

/// One append inside the writer's transaction: deduplicated by event id,
/// checked against the aggregate's last sequence. The outer error is the
/// store's (it fails the whole batch); the inner one is this append's.
fn append_in(
    tx: &rusqlite::Transaction<'_>,
    aggregate: &AggregateRef,
    expected: Expected,
    events: &[EventEnvelope],
) -> rusqlite::Result<Result<Appended, AppendError>> {
    let stream = aggregate.context().stream_name();
    let subject = aggregate.subject();
    let mut expected_now = expected;
    let mut last_sequence = 0;
    let mut duplicate = true;
    let mut facts = tx.prepare_cached(
        "SELECT
            (SELECT sequence FROM events WHERE stream = ?1 AND event_id = ?2),
            (SELECT COALESCE(MAX(sequence), 0) FROM events WHERE subject = ?3),
            (SELECT COALESCE(MAX(sequence), 0) FROM events WHERE stream = ?1)",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO events (stream, sequence, subject, event_id, payload) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for event in events {
        // One statement for the three facts the append depends on.
        let (existing, subject_last, stream_last): (Option<i64>, i64, i64) = facts
            .query_row(rusqlite::params![stream, event.event_id, subject], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?;
        let sequence = if let Some(seq) = existing {
            to_u64(seq)
        } else {
            duplicate = false;
            if let Some(want) = expected_now.last_subject_sequence()
                && want != to_u64(subject_last)
            {
                return Ok(Err(AppendError::Conflict {
                    expected: expected_now,
                    actual: to_u64(subject_last),
                }));
            }
            let next = stream_last + 1;
            insert.execute(rusqlite::params![
                stream,
                next,
                subject,
                event.event_id,
                event.encode_to_vec()
            ])?;
            to_u64(next)
        };
        last_sequence = sequence;
        if expected_now != Expected::Any {
            expected_now = Expected::Sequence(sequence);
        }
    }
    Ok(Ok(Appended {
        context: aggregate.context(),
        last_sequence,
        duplicate,
    }))
}

/// The writer's own connection to the log file (the pool's has made it a
/// WAL file with its schema already).
fn writer_connection(path: &Path) -> Result<rusqlite::Connection, StoreError> {
    let open = || -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints are the checkpointer thread's (see `Writer`).
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(conn)
    };
    open().map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))
}

impl EmbeddedLog {
    /// Opens (creating if needed) the log file at `path`. Another process
    /// opening the same file at the same moment can hold the lock that
    /// switching to WAL needs: that is retried for a few seconds.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let mut attempt = 0;
        loop {
            match Self::open_once(path).await {
                Err(StoreError::Unavailable(reason)) if reason.contains("locked") && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                result => return result,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        for statement in SCHEMA {
            sqlx::query(statement).execute(&pool).await?;
        }
        let appended = Arc::new(Appends::default());
        let writer = Writer::start(path, Arc::clone(&appended))?;
        Ok(Self {
            pool,
            appended,
            writer,
        })
    }

    /// Appends through the log's [`Writer`], which commits whatever appends
    /// are waiting together in one transaction (group commit): under load
    /// one commit serves many appends; alone, an append waits for no one.
    pub(crate) async fn append(
        &self,
        aggregate: &AggregateRef,
        expected: Expected,
        events: &[EventEnvelope],
    ) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        let job = AppendJob {
            aggregate: aggregate.clone(),
            expected,
            events: events.to_vec(),
            reply,
        };
        self.writer.write(WriteJob::Append(job)).await?;
        answer.await.map_err(|_| {
            AppendError::Store(StoreError::Unavailable(
                "the event log's writer stopped before answering".into(),
            ))
        })?
    }

    pub(crate) async fn read_aggregate(
        &self,
        aggregate: &AggregateRef,
        after: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let context = aggregate.context();
        let rows = sqlx::query(
            "SELECT sequence, subject, payload FROM events WHERE subject = $1 AND sequence > $2 ORDER BY sequence",
        )
        .bind(aggregate.subject())
        .bind(to_i64(after))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| decode_row(context, row)).collect()
    }

    pub(crate) async fn subscribe(
        &self,
        context: Context,
        options: &ConsumerOptions,
    ) -> Result<EmbeddedSubscription, StoreError> {
        let stream = context.stream_name();
        let start_floor = match options.start {
            Start::Beginning => 0,
            Start::After(seq) => seq,
        };
        sqlx::query(
            "INSERT INTO consumers (stream, name, ack_floor) VALUES ($1, $2, $3) ON CONFLICT (stream, name) DO NOTHING",
        )
        .bind(stream)
        .bind(&options.durable)
        .bind(to_i64(start_floor))
        .execute(&self.pool)
        .await?;
        let floor: i64 =
            sqlx::query_scalar("SELECT ack_floor FROM consumers WHERE stream = $1 AND name = $2")
                .bind(stream)
                .bind(&options.durable)
                .fetch_one(&self.pool)
                .await?;
        let floor = to_u64(floor);
        Ok(EmbeddedSubscription {
            log: self.clone(),
            context,
            acks: Arc::new(AckState {
                durable: Some(options.durable.clone()),
                floor: Mutex::new(Floor {
                    floor,
                    acked: BTreeSet::new(),
                }),
            }),
            cursor: floor,
            buffer: VecDeque::new(),
        })
    }

    /// A subscription from the first event that keeps no consumer row.
    pub(crate) fn tail(&self, context: Context, start: Start) -> EmbeddedSubscription {
        let after = match start {
            Start::Beginning => 0,
            Start::After(seq) => seq,
        };
        EmbeddedSubscription {
            log: self.clone(),
            context,
            acks: Arc::new(AckState {
                durable: None,
                floor: Mutex::new(Floor {
                    floor: 0,
                    acked: BTreeSet::new(),
                }),
            }),
            cursor: after,
            buffer: VecDeque::new(),
        }
    }

    pub(crate) async fn delete_consumer(&self, context: Context, durable: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM consumers WHERE stream = $1 AND name = $2")
            .bind(context.stream_name())
            .bind(durable)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(crate) async fn last_sequence(&self, context: Context) -> Result<u64, StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(sequence), 0) FROM events WHERE stream = $1")
            .bind(context.stream_name())
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(last))
    }

    /// The underlying pool, for tests that try to tamper with the log.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// A consumer reading the stream after its acknowledgement floor.
#[derive(Debug)]
pub struct EmbeddedSubscription {
    log: EmbeddedLog,
    context: Context,
    acks: Arc<AckState>,
    /// The last sequence fetched into `buffer`.
    cursor: u64,
    buffer: VecDeque<(RecordedEvent, u64)>,
}

impl EmbeddedSubscription {
    pub(crate) async fn next(&mut self) -> Result<Delivery, StoreError> {
        loop {
            if let Some(delivery) = self.next_buffered() {
                return Ok(delivery);
            }
            // Register for the wake-up before looking, so an append between
            // the look and the wait is not missed.
            let appends = Arc::clone(&self.log.appended);
            let appended = appends.of(self.context).notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if self.fetch().await? {
                continue;
            }
            tokio::select! {
                () = appended => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// A delivery that is already fetched, without waiting.
    pub(crate) fn next_buffered(&mut self) -> Option<Delivery> {
        let (event, pending) = self.buffer.pop_front()?;
        let sequence = event.sequence;
        Some(Delivery {
            event,
            pending,
            acker: Acker::Embedded(EmbeddedAcker {
                writer: self.log.writer.clone(),
                stream: self.context.stream_name(),
                acks: Arc::clone(&self.acks),
                sequence,
            }),
        })
    }

    async fn fetch(&mut self) -> Result<bool, StoreError> {
        let stream = self.context.stream_name();
        // The stream's end in the same statement: how many are pending.
        let rows = sqlx::query(
            "SELECT sequence, subject, payload,
                (SELECT COALESCE(MAX(sequence), 0) FROM events WHERE stream = $1) AS last
             FROM events WHERE stream = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        )
        .bind(stream)
        .bind(to_i64(self.cursor))
        .bind(FETCH_BATCH)
        .fetch_all(&self.log.pool)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(false);
        };
        let last = to_u64(first.try_get("last")?);
        for row in &rows {
            let event = decode_row(self.context, row)?;
            self.cursor = event.sequence;
            let pending = last.saturating_sub(event.sequence);
            self.buffer.push_back((event, pending));
        }
        Ok(true)
    }
}

#[derive(Debug)]
struct AckState {
    /// `None` for a tail: acknowledgements are not stored.
    durable: Option<String>,
    floor: Mutex<Floor>,
}

#[derive(Debug)]
struct Floor {
    /// Every sequence up to here is acknowledged.
    floor: u64,
    /// Acknowledged sequences above the floor (acks may come out of order).
    acked: BTreeSet<u64>,
}

/// Acknowledges one delivered event of an embedded subscription.
#[derive(Debug)]
pub struct EmbeddedAcker {
    writer: Writer,
    stream: &'static str,
    acks: Arc<AckState>,
    sequence: u64,
}

impl EmbeddedAcker {
    pub(crate) async fn ack(self) -> Result<(), StoreError> {
        if let Some(floor) = self.record()? {
            self.persist(floor).await?;
        }
        Ok(())
    }

    /// Acknowledges many deliveries of one subscription with one write.
    pub(crate) async fn ack_all(ackers: Vec<EmbeddedAcker>) -> Result<(), StoreError> {
        let mut last = None;
        for acker in ackers {
            if let Some(floor) = acker.record()? {
                last = Some((acker, floor));
            }
        }
        match last {
            Some((acker, floor)) => acker.persist(floor).await,
            None => Ok(()),
        }
    }

    /// Marks the sequence acknowledged in memory; returns the new floor if
    /// it moved.
    fn record(&self) -> Result<Option<u64>, StoreError> {
        let mut state = self
            .acks
            .floor
            .lock()
            .map_err(|_| StoreError::Unavailable("ack state poisoned".into()))?;
        if self.sequence <= state.floor {
            return Ok(None);
        }
        state.acked.insert(self.sequence);
        let before = state.floor;
        loop {
            let next = state.floor + 1;
            if !state.acked.remove(&next) {
                break;
            }
            state.floor = next;
        }
        Ok((state.floor > before).then_some(state.floor))
    }

    async fn persist(&self, floor: u64) -> Result<(), StoreError> {
        let Some(durable) = &self.acks.durable else {
            return Ok(());
        };
        // Through the writer: a write of its own would wait on the writer's
        // lock (SQLite's busy handler sleeps whole milliseconds).
        let (reply, answer) = oneshot::channel();
        let job = WriteJob::Ack(AckJob {
            stream: self.stream,
            consumer: durable.clone(),
            floor,
            reply,
        });
        self.writer.write(job).await?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the event log's writer stopped before answering".into()))?
    }
}

fn decode_row(context: Context, row: &sqlx::sqlite::SqliteRow) -> Result<RecordedEvent, StoreError> {
    let sequence: i64 = row.try_get("sequence")?;
    let subject: String = row.try_get("subject")?;
    let payload: Vec<u8> = row.try_get("payload")?;
    decode(context, to_u64(sequence), subject, &payload)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
