//! Event-log benchmarks (a harness, not criterion: each figure is a rate or a
//! latency distribution over thousands of operations against real servers).
//!
//!     cargo bench --workspace --bench eventlog
//!
//! 1. Appends/s on JetStream, one at a time and pipelined (many in flight
//!    over one connection), and on the embedded log.
//! 2. Projection lag (event `occurred_at` → read-model commit) under a steady
//!    1,000 events/s: JetStream + PostgreSQL read model (production) and
//!    embedded + SQLite (the default). Reports p50 / p99 / max.
//!
//! 3. Idle append latency: one append every 2 ms (the writer woken for
//!    each), p50 / p99.
//!
//! `PROMPTOPS_BENCH=paced` runs only 3, `PROMPTOPS_BENCH=lag` only 2.
//! Each append figure is the median of 3 runs. Results go in docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use hdrhistogram::Histogram;
use promptops_eventlog::embedded::EmbeddedLog;
use promptops_eventlog::jetstream::{JetStreamLog, JetStreamOptions};
use promptops_eventlog::projection::{self, Projection, ProjectionRunner};
use promptops_eventlog::{
    AggregateRef, Context, EventDraft, EventLog, EventMetadata, Expected, RecordedEvent, envelope_for,
};
use promptops_testkit::{NatsServer, Postgres};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool};
use tokio_util::sync::CancellationToken;

const PAYLOAD: &[u8] = &[b'x'; 256];

fn event(run: u32, i: u32) -> (AggregateRef, promptops_eventlog::EventEnvelope) {
    let agg = AggregateRef::new(Context::Prompts, "bench", "prompt", format!("r{run}-{i}")).unwrap();
    let env = envelope_for(
        &agg,
        1,
        EventDraft::new("bench.v1.Happened", PAYLOAD.to_vec()),
        &EventMetadata::default(),
    );
    (agg, env)
}

async fn sequential(log: &EventLog, run: u32, n: u32) -> f64 {
    let started = Instant::now();
    for i in 0..n {
        let (agg, env) = event(run, i);
        log.append(&agg, Expected::NoEvents, &[env]).await.unwrap();
    }
    f64::from(n) / started.elapsed().as_secs_f64()
}

async fn pipelined(log: &EventLog, run: u32, n: u32, in_flight: usize) -> f64 {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let log = log.clone();
            async move {
                let (agg, env) = event(run, i);
                log.append(&agg, Expected::NoEvents, &[env]).await.unwrap();
            }
        })
        .buffer_unordered(in_flight)
        .collect::<()>()
        .await;
    f64::from(n) / started.elapsed().as_secs_f64()
}

/// The latency of one append at a time with `gap` between them (an idle
/// log: the writer is woken for each): p50 and p99 in µs.
async fn paced(log: &EventLog, run: u32, n: u32, gap: Duration) -> (f64, f64) {
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (agg, env) = event(run, i);
        let started = Instant::now();
        log.append(&agg, Expected::NoEvents, &[env]).await.unwrap();
        latencies.push(started.elapsed().as_secs_f64() * 1e6);
        tokio::time::sleep(gap).await;
    }
    latencies.sort_by(f64::total_cmp);
    (
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Notes each applied event; the visibility poller turns them into lags.
struct LagRecorder {
    applied: Arc<Mutex<VecDeque<(u64, i128)>>>,
}

impl Projection for LagRecorder {
    fn name(&self) -> &'static str {
        "lag"
    }

    async fn apply(&self, conn: &mut AnyConnection, event: &RecordedEvent) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO lag_rows (sequence) VALUES ($1)")
            .bind(i64::try_from(event.sequence).unwrap())
            .execute(&mut *conn)
            .await?;
        self.applied
            .lock()
            .unwrap()
            .push_back((event.sequence, event.occurred_at_unix_nanos()));
        Ok(())
    }

    async fn reset(&self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM lag_rows")
            .execute(&mut *conn)
            .await
            .map(|_| ())
    }
}

fn now_nanos() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos()
}

/// Lag as a reader sees it: from `occurred_at` until the checkpoint (read
/// through its own connection every millisecond) covers the event.
async fn projection_lag(
    log: EventLog,
    pool: AnyPool,
    reader: AnyPool,
    rate: u32,
    seconds: u32,
) -> (Histogram<u64>, Histogram<u64>) {
    projection::ensure_checkpoints(&pool).await.unwrap();
    sqlx::query("CREATE TABLE IF NOT EXISTS lag_rows (sequence BIGINT PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    let applied = Arc::new(Mutex::new(VecDeque::new()));
    let start_at = log.last_sequence(Context::Prompts).await.unwrap();
    let shutdown = CancellationToken::new();
    let runner = ProjectionRunner::new(
        log.clone(),
        pool.clone(),
        Arc::new(LagRecorder {
            applied: Arc::clone(&applied),
        }),
        Context::Prompts,
    );
    #[expect(clippy::disallowed_methods, reason = "awaited below")]
    let handle = tokio::spawn(runner.run(shutdown.clone()));
    // Let the runner catch up with the append benchmarks' events first.
    projection::wait_for_position(&pool, "lag", Context::Prompts, start_at, Duration::from_secs(600))
        .await
        .unwrap();
    applied.lock().unwrap().clear();

    let total = rate * seconds;
    let last = start_at + u64::from(total);
    let poller = {
        let applied = Arc::clone(&applied);
        async move {
            let mut lags = Histogram::<u64>::new(3).unwrap();
            loop {
                let seen = projection::checkpoint(&reader, "lag", Context::Prompts)
                    .await
                    .unwrap();
                let now = now_nanos();
                {
                    let mut applied = applied.lock().unwrap();
                    while applied.front().is_some_and(|(seq, _)| *seq <= seen) {
                        let (_, occurred) = applied.pop_front().unwrap();
                        lags.record(u64::try_from((now - occurred) / 1000).unwrap_or(0).max(1))
                            .unwrap();
                    }
                }
                if seen >= last {
                    return lags;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    let appender = async {
        let mut latency = Histogram::<u64>::new(3).unwrap();
        let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for i in 0..total {
            ticker.tick().await;
            let (agg, env) = event(9_999, i);
            let started = Instant::now();
            log.append(&agg, Expected::NoEvents, &[env]).await.unwrap();
            latency
                .record(u64::try_from(started.elapsed().as_micros()).unwrap_or(0).max(1))
                .unwrap();
        }
        latency
    };
    let (lags, append_latency) = tokio::join!(poller, appender);
    shutdown.cancel();
    handle.await.unwrap();
    (lags, append_latency)
}

fn report_lag(name: &str, (lag, append): &(Histogram<u64>, Histogram<u64>)) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name:<36} lag p50={:.2}ms p99={:.2}ms max={:.2}ms (n={}) | append p50={:.2}ms p99={:.2}ms",
        ms(lag, 0.5),
        ms(lag, 0.99),
        lag.max() as f64 / 1000.0,
        lag.len(),
        ms(append, 0.5),
        ms(append, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let runs = 3;
    let nats = NatsServer::start().unwrap();
    let js = EventLog::JetStream(Box::new(
        JetStreamLog::connect(&nats.url(), &JetStreamOptions::default())
            .await
            .unwrap(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let embedded = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap());

    let only = std::env::var("PROMPTOPS_BENCH").unwrap_or_default();
    if only.is_empty() || only == "paced" {
        println!("== one append every 2 ms (an idle log), 2,000 appends: latency");
        for (name, log) in [("jetstream", &js), ("embedded", &embedded)] {
            let (p50, p99) = paced(log, 900, 2_000, Duration::from_millis(2)).await;
            println!("{name:<44} p50 {p50:>6.0} µs   p99 {p99:>6.0} µs");
        }
    }
    if only == "paced" {
        return;
    }
    if only.is_empty() {
        println!("== appends/s (median of {runs} runs, 256-byte payloads, one event per append)");
        let mut run = 0;
        let measure = |name: &str, values: Vec<f64>| {
            println!(
                "{name:<44} {:>10.0}/s   (runs: {})",
                median(values.clone()),
                values
                    .iter()
                    .map(|v| format!("{v:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        };
        let mut values = Vec::new();
        for _ in 0..runs {
            run += 1;
            values.push(sequential(&js, run, 5_000).await);
        }
        measure("jetstream, one at a time", values);
        let mut values = Vec::new();
        for _ in 0..runs {
            run += 1;
            values.push(pipelined(&js, run, 50_000, 1_024).await);
        }
        measure("jetstream, pipelined (1024 in flight)", values);
        let mut values = Vec::new();
        for _ in 0..runs {
            run += 1;
            values.push(sequential(&embedded, run, 5_000).await);
        }
        measure("embedded, one at a time", values);
        let mut values = Vec::new();
        for _ in 0..runs {
            run += 1;
            values.push(pipelined(&embedded, run, 20_000, 64).await);
        }
        measure("embedded, concurrent (64 in flight)", values);
    }

    println!("== projection lag at 1,000 events/s for 10 s (occurred_at → read-model commit)");
    sqlx::any::install_default_drivers();
    let postgres = Postgres::start().unwrap();
    let url = postgres.create_database("bench").unwrap();
    let pg = AnyPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap();
    let pg_reader = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    report_lag(
        "jetstream → PostgreSQL read model",
        &projection_lag(js.clone(), pg, pg_reader, 1_000, 10).await,
    );
    let sqlite_url = format!("sqlite://{}/read.db?mode=rwc", dir.path().display());
    let sqlite = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&sqlite_url)
        .await
        .unwrap();
    let sqlite_reader = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&sqlite_url)
        .await
        .unwrap();
    report_lag(
        "embedded → SQLite read model",
        &projection_lag(embedded.clone(), sqlite, sqlite_reader, 1_000, 10).await,
    );
}
