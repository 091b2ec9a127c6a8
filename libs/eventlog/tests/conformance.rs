//! One conformance suite, run against both backends: every test below runs
//! once on the embedded (SQLite) log and once on a real nats-server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "integration tests: a panic is a failed assertion"
)]

use std::time::Duration;

use promptops_eventlog::embedded::EmbeddedLog;
use promptops_eventlog::jetstream::{JetStreamLog, JetStreamOptions};
use promptops_eventlog::{
    AggregateRef, AppendError, ConsumerOptions, Context, EventDraft, EventEnvelope, EventLog, EventMetadata,
    Expected, Start, Subscription, envelope_for,
};
use promptops_testkit::NatsServer;

/// Keeps a backend's server or files alive for the duration of a test.
#[allow(dead_code, reason = "held only for its Drop")]
enum Guard {
    Dir(tempfile::TempDir),
    Nats(NatsServer),
}

async fn embedded() -> (EventLog, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap();
    (EventLog::Embedded(log), Guard::Dir(dir))
}

async fn jetstream() -> (EventLog, Guard) {
    let server = NatsServer::start().unwrap();
    let log = JetStreamLog::connect(&server.url(), &JetStreamOptions::default())
        .await
        .unwrap();
    (EventLog::JetStream(Box::new(log)), Guard::Nats(server))
}

fn prompt(id: &str) -> AggregateRef {
    AggregateRef::new(Context::Prompts, "org_a", "prompt", id).unwrap()
}

fn event(aggregate: &AggregateRef, version: u64, body: &str) -> EventEnvelope {
    envelope_for(
        aggregate,
        version,
        EventDraft::new("test.v1.Happened", body.as_bytes().to_vec()),
        &EventMetadata::default(),
    )
}

fn bodies(events: &[promptops_eventlog::RecordedEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| String::from_utf8(e.envelope.payload.clone()).unwrap())
        .collect()
}

async fn next_within(sub: &mut Subscription, timeout: Duration) -> Option<promptops_eventlog::Delivery> {
    tokio::time::timeout(timeout, sub.next())
        .await
        .ok()
        .map(|d| d.unwrap())
}

fn consumer(name: &str, start: Start) -> ConsumerOptions {
    ConsumerOptions {
        durable: name.into(),
        start,
        ack_wait: Duration::from_secs(1),
    }
}

async fn append_and_read_back_in_order(log: EventLog) {
    let a = prompt("a");
    let b = prompt("b");
    let first = log
        .append(&a, Expected::NoEvents, &[event(&a, 1, "a1")])
        .await
        .unwrap();
    log.append(&b, Expected::NoEvents, &[event(&b, 1, "b1")])
        .await
        .unwrap();
    let second = log
        .append(
            &a,
            Expected::Sequence(first.last_sequence),
            &[event(&a, 2, "a2"), event(&a, 3, "a3")],
        )
        .await
        .unwrap();
    assert!(!second.duplicate);
    assert_eq!(second.last_sequence, 4);

    let events = log.read_aggregate(&a).await.unwrap();
    assert_eq!(bodies(&events), ["a1", "a2", "a3"]);
    assert_eq!(events.iter().map(|e| e.sequence).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(
        events
            .iter()
            .map(|e| e.envelope.aggregate_version)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(events.iter().all(|e| e.subject == "evt.prompts.org_a.prompt.a"));
    assert!(log.read_aggregate(&prompt("none")).await.unwrap().is_empty());
    assert_eq!(log.last_sequence(Context::Prompts).await.unwrap(), 4);
    assert_eq!(log.last_sequence(Context::Billing).await.unwrap(), 0);
}

async fn stale_expectation_is_a_typed_conflict(log: EventLog) {
    let a = prompt("a");
    let created = log
        .append(&a, Expected::NoEvents, &[event(&a, 1, "a1")])
        .await
        .unwrap();

    let err = log
        .append(&a, Expected::NoEvents, &[event(&a, 2, "x")])
        .await
        .unwrap_err();
    match err {
        AppendError::Conflict { expected, actual } => {
            assert_eq!(expected, Expected::NoEvents);
            assert_eq!(actual, created.last_sequence);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let err = log
        .append(&a, Expected::Sequence(99), &[event(&a, 2, "x")])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Conflict { actual, .. } if actual == created.last_sequence));

    log.append(
        &a,
        Expected::Sequence(created.last_sequence),
        &[event(&a, 2, "a2")],
    )
    .await
    .unwrap();
    assert_eq!(bodies(&log.read_aggregate(&a).await.unwrap()), ["a1", "a2"]);
}

async fn same_event_id_is_stored_once(log: EventLog) {
    let a = prompt("a");
    let original = event(&a, 1, "a1");
    let first = log
        .append(&a, Expected::NoEvents, std::slice::from_ref(&original))
        .await
        .unwrap();
    // A retried command: same event id, now-stale expectation. Dedupe wins.
    let retry = log
        .append(&a, Expected::NoEvents, std::slice::from_ref(&original))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.last_sequence, first.last_sequence);
    assert_eq!(log.read_aggregate(&a).await.unwrap().len(), 1);
}

async fn invalid_batches_write_nothing(log: EventLog) {
    let a = prompt("a");
    let b = prompt("b");
    let err = log
        .append(&a, Expected::Any, &[event(&a, 1, "a1"), event(&b, 1, "b1")])
        .await
        .unwrap_err();
    assert!(matches!(err, AppendError::Invalid(_)), "{err:?}");
    let err = log.append(&a, Expected::Any, &[]).await.unwrap_err();
    assert!(matches!(err, AppendError::Invalid(_)), "{err:?}");
    assert_eq!(log.last_sequence(Context::Prompts).await.unwrap(), 0);
}

/// Many appends at once (the embedded log commits them together): on each
/// aggregate exactly one of the racers expecting its last sequence wins, a
/// refused two-event append leaves neither event, and the winners all land.
async fn racing_appends_each_win_or_conflict_on_their_own(log: EventLog) {
    let aggregates: Vec<AggregateRef> = (0..8).map(|i| prompt(&format!("race{i}"))).collect();
    let racers = aggregates.iter().flat_map(|a| {
        let log = &log;
        (0..4).map(move |r| async move {
            let first = event(a, 1, &format!("{r}-1"));
            let second = event(a, 2, &format!("{r}-2"));
            (r, log.append(a, Expected::NoEvents, &[first, second]).await)
        })
    });
    let results = futures::future::join_all(racers).await;
    let winners = results.iter().filter(|(_, r)| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|(_, r)| matches!(r, Err(AppendError::Conflict { .. })))
        .count();
    assert_eq!((winners, conflicts), (8, 24), "{results:?}");
    for a in &aggregates {
        let stored = log.read_aggregate(a).await.unwrap();
        let bodies = bodies(&stored);
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        let racer = bodies[0].split('-').next().unwrap().to_owned();
        assert_eq!(bodies, [format!("{racer}-1"), format!("{racer}-2")]);
    }
    // Sequences are dense: nothing a loser wrote survived.
    assert_eq!(log.last_sequence(Context::Prompts).await.unwrap(), 16);
}

async fn append_five(log: &EventLog) {
    for (i, id) in ["a", "b", "a", "c", "b"].iter().enumerate() {
        let agg = prompt(id);
        log.append(&agg, Expected::Any, &[event(&agg, 1, &format!("e{}", i + 1))])
            .await
            .unwrap();
    }
}

async fn subscribe_from_start_and_from_checkpoint(log: EventLog) {
    append_five(&log).await;
    let mut all = log
        .subscribe(Context::Prompts, consumer("from_start", Start::Beginning))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let d = next_within(&mut all, Duration::from_secs(5))
            .await
            .expect("event");
        seen.push(d.event.sequence);
        d.ack().await.unwrap();
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);

    let mut after = log
        .subscribe(Context::Prompts, consumer("from_three", Start::After(3)))
        .await
        .unwrap();
    let d = next_within(&mut after, Duration::from_secs(5))
        .await
        .expect("event");
    assert_eq!(d.event.sequence, 4);
    assert_eq!(d.pending, 1);
    d.ack().await.unwrap();
    let d = next_within(&mut after, Duration::from_secs(5))
        .await
        .expect("event");
    assert_eq!(d.event.sequence, 5);
    assert_eq!(String::from_utf8(d.event.envelope.payload.clone()).unwrap(), "e5");
    d.ack().await.unwrap();

    // Other streams stay out of the consumer.
    let billing = AggregateRef::new(Context::Billing, "org_a", "budget", "x").unwrap();
    log.append(&billing, Expected::Any, &[event(&billing, 1, "bill")])
        .await
        .unwrap();
    assert!(
        next_within(&mut after, Duration::from_millis(500))
            .await
            .is_none()
    );
}

async fn live_subscribers_see_new_events(log: EventLog) {
    let mut sub = log
        .subscribe(Context::Prompts, consumer("live", Start::Beginning))
        .await
        .unwrap();
    let writer = log.clone();
    let append = async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let a = prompt("a");
        writer
            .append(&a, Expected::NoEvents, &[event(&a, 1, "late")])
            .await
            .unwrap();
    };
    let (delivery, ()) = tokio::join!(next_within(&mut sub, Duration::from_secs(5)), append);
    let delivery = delivery.expect("the live event");
    assert_eq!(delivery.event.sequence, 1);
}

async fn unacked_events_are_redelivered_after_the_consumer_dies(log: EventLog) {
    append_five(&log).await;
    {
        let mut sub = log
            .subscribe(Context::Prompts, consumer("worker", Start::Beginning))
            .await
            .unwrap();
        for expected in 1..=5 {
            let d = next_within(&mut sub, Duration::from_secs(5))
                .await
                .expect("event");
            assert_eq!(d.event.sequence, expected);
            if expected <= 2 {
                d.ack().await.unwrap();
            }
        }
        // The consumer dies here with 3, 4 and 5 unacknowledged.
    }
    let mut sub = log
        .subscribe(Context::Prompts, consumer("worker", Start::Beginning))
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..3 {
        let d = next_within(&mut sub, Duration::from_secs(10))
            .await
            .expect("a redelivery");
        again.push(d.event.sequence);
        d.ack().await.unwrap();
    }
    again.sort_unstable();
    assert_eq!(again, [3, 4, 5]);
    drop(sub);
    // Everything is acknowledged now: a restarted consumer gets nothing more.
    let mut sub = log
        .subscribe(Context::Prompts, consumer("worker", Start::Beginning))
        .await
        .unwrap();
    assert!(next_within(&mut sub, Duration::from_millis(1500)).await.is_none());
}

async fn a_new_consumer_replays_the_whole_stream(log: EventLog) {
    append_five(&log).await;
    for round in 0..2 {
        let name = format!("replay_{round}");
        let mut sub = log
            .subscribe(Context::Prompts, consumer(&name, Start::Beginning))
            .await
            .unwrap();
        let mut seen = Vec::new();
        for _ in 0..5 {
            let d = next_within(&mut sub, Duration::from_secs(5))
                .await
                .expect("event");
            seen.push(String::from_utf8(d.event.envelope.payload.clone()).unwrap());
            d.ack().await.unwrap();
        }
        assert_eq!(seen, ["e1", "e2", "e3", "e4", "e5"]);
    }
    // Deleting a consumer forgets its position: it replays from its start.
    log.delete_consumer(Context::Prompts, "replay_0").await.unwrap();
    log.delete_consumer(Context::Prompts, "never_existed")
        .await
        .unwrap();
    let mut sub = log
        .subscribe(Context::Prompts, consumer("replay_0", Start::Beginning))
        .await
        .unwrap();
    let d = next_within(&mut sub, Duration::from_secs(5))
        .await
        .expect("event");
    assert_eq!(d.event.sequence, 1);
}

async fn envelope_survives_the_round_trip(log: EventLog) {
    let a = prompt("a");
    let mut original = event(&a, 1, "payload");
    original.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into();
    original.correlation_id = "corr-1".into();
    log.append(&a, Expected::NoEvents, std::slice::from_ref(&original))
        .await
        .unwrap();
    let read = log.read_aggregate(&a).await.unwrap();
    assert_eq!(read[0].envelope, original);
}

async fn a_tail_reads_everything_and_follows(log: EventLog) {
    append_five(&log).await;
    let mut tail = log.tail(Context::Prompts).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let d = next_within(&mut tail, Duration::from_secs(5))
            .await
            .expect("event");
        seen.push(d.event.sequence);
        d.ack().await.unwrap();
    }
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    let a = prompt("z");
    log.append(&a, Expected::NoEvents, &[event(&a, 1, "late")])
        .await
        .unwrap();
    let d = next_within(&mut tail, Duration::from_secs(5))
        .await
        .expect("the live event");
    assert_eq!(d.event.sequence, 6);
    drop(tail);
    // Nothing was remembered: a new tail starts at the beginning again.
    let mut again = log.tail(Context::Prompts).await.unwrap();
    assert_eq!(
        next_within(&mut again, Duration::from_secs(5))
            .await
            .unwrap()
            .event
            .sequence,
        1
    );
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let (log, _guard) = super::embedded().await;
                    super::$test(log).await;
                }
            )*
        }
        mod jetstream_backend {
            $(
                #[tokio::test]
                async fn $test() {
                    let (log, _guard) = super::jetstream().await;
                    super::$test(log).await;
                }
            )*
        }
    };
}

conformance!(
    append_and_read_back_in_order,
    stale_expectation_is_a_typed_conflict,
    same_event_id_is_stored_once,
    invalid_batches_write_nothing,
    racing_appends_each_win_or_conflict_on_their_own,
    subscribe_from_start_and_from_checkpoint,
    live_subscribers_see_new_events,
    unacked_events_are_redelivered_after_the_consumer_dies,
    a_new_consumer_replays_the_whole_stream,
    envelope_survives_the_round_trip,
    a_tail_reads_everything_and_follows,
);

// Backend-specific proofs that the log is immutable.

#[tokio::test]
async fn jetstream_streams_refuse_delete_and_purge() {
    let server = NatsServer::start().unwrap();
    let log = JetStreamLog::connect(&server.url(), &JetStreamOptions::default())
        .await
        .unwrap();
    let a = prompt("a");
    EventLog::JetStream(Box::new(log.clone()))
        .append(&a, Expected::NoEvents, &[event(&a, 1, "a1")])
        .await
        .unwrap();
    let stream = log.jetstream().get_stream("EVT_PROMPTS").await.unwrap();
    let config = &stream.cached_info().config;
    assert!(config.deny_delete && config.deny_purge);
    assert_eq!(config.storage, async_nats::jetstream::stream::StorageType::File);
    assert!(
        stream.delete_message(1).await.is_err(),
        "deleting a message must fail"
    );
    assert!(stream.purge().await.is_err(), "purging must fail");
    assert_eq!(
        EventLog::JetStream(Box::new(log.clone()))
            .read_aggregate(&a)
            .await
            .unwrap()
            .len(),
        1
    );

    // Connecting again (a second service starting) leaves the streams as they are.
    let again = JetStreamLog::connect(&server.url(), &JetStreamOptions::default())
        .await
        .unwrap();
    assert_eq!(
        EventLog::JetStream(Box::new(again))
            .last_sequence(Context::Prompts)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn embedded_rows_refuse_update_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap();
    let a = prompt("a");
    EventLog::Embedded(log.clone())
        .append(&a, Expected::NoEvents, &[event(&a, 1, "a1")])
        .await
        .unwrap();
    let update = sqlx::query("UPDATE events SET payload = x'00'")
        .execute(log.pool())
        .await;
    assert!(update.unwrap_err().to_string().contains("immutable"));
    let delete = sqlx::query("DELETE FROM events").execute(log.pool()).await;
    assert!(delete.unwrap_err().to_string().contains("immutable"));
    assert_eq!(EventLog::Embedded(log).read_aggregate(&a).await.unwrap().len(), 1);
}

/// Appends from many threads at once, which the embedded log's writer
/// commits in groups: every append is answered, each lands once, the racers
/// on one aggregate each win or conflict, and the sequences are dense.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_appends_from_many_threads_are_each_answered_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..16 {
        let log = log.clone();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..50 {
                // Each task its own aggregates, and one aggregate all race for.
                let aggregate = if i % 10 == 0 {
                    prompt("contended")
                } else {
                    prompt(&format!("t{task}-{i}"))
                };
                let envelope = event(&aggregate, 1, &format!("{task}-{i}"));
                outcomes.push(log.append(&aggregate, Expected::NoEvents, &[envelope]).await);
            }
            outcomes
        });
    }
    let outcomes = tokio::time::timeout(Duration::from_secs(60), tasks.join_all())
        .await
        .expect("an append was never answered");
    let outcomes: Vec<_> = outcomes.into_iter().flatten().collect();
    assert_eq!(outcomes.len(), 800);
    let mut sequences: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().map(|a| a.last_sequence))
        .collect();
    let conflicts = outcomes
        .iter()
        .filter(|o| matches!(o, Err(AppendError::Conflict { .. })))
        .count();
    // 16 × 45 own aggregates, one winner of the 80 racers for the contended one.
    assert_eq!((sequences.len(), conflicts), (721, 79), "{outcomes:?}");
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=721).collect::<Vec<u64>>());
    assert_eq!(log.last_sequence(Context::Prompts).await.unwrap(), 721);
    assert_eq!(log.read_aggregate(&prompt("contended")).await.unwrap().len(), 1);
}

/// Another process holding the file's write lock: an append made while
/// it does is not refused; the writer thread waits for the lock and
/// commits it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_append_waits_out_another_process_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = EventLog::Embedded(EmbeddedLog::open(&path).await.unwrap());
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let a = prompt("a");
    let append = {
        let log = log.clone();
        let a = a.clone();
        tokio::time::timeout(Duration::from_secs(20), async move {
            log.append(&a, Expected::NoEvents, &[event(&a, 1, "a1")]).await
        })
    };
    let held = std::time::Instant::now();
    let release = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        other.execute_batch("COMMIT").unwrap();
    });
    let appended = append.await.expect("the append was never answered").unwrap();
    assert!(
        held.elapsed() >= Duration::from_millis(300),
        "committed under another's lock"
    );
    assert_eq!(appended.last_sequence, 1);
    release.await.unwrap();
    assert_eq!(bodies(&log.read_aggregate(&a).await.unwrap()), vec!["a1"]);
}

/// The log's WAL file is checkpointed as appends go, so it stays small: it
/// does not grow with every commit until the process ends.
#[tokio::test]
async fn embedded_wal_is_checkpointed_while_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let log = EventLog::Embedded(EmbeddedLog::open(&path).await.unwrap());
    let body = "x".repeat(2_000);
    let wal_bytes = || std::fs::metadata(dir.path().join("events.db-wal")).map_or(0, |m| m.len());
    let mut largest = 0;
    for i in 0..3_000 {
        let aggregate = prompt(&format!("p{i}"));
        log.append(&aggregate, Expected::NoEvents, &[event(&aggregate, 1, &body)])
            .await
            .unwrap();
        largest = largest.max(wal_bytes());
    }
    // Unchecked, 3,000 commits of a 2 kB event make a WAL of about 30 MB.
    assert!(largest < 12_000_000, "the WAL grew to {largest} bytes");
    assert_eq!(log.last_sequence(Context::Prompts).await.unwrap(), 3_000);
}
