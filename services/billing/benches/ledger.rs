//! The usage ledger's projection throughput on SQLite and on a real
//! PostgreSQL: runs (an `ExecutionStarted` and an `ExecutionCompleted`
//! each) through `Projection::apply_batch` in transactions of 256 events with the
//! checkpoint, as the runner commits them (the log's read cost is not in
//! it). Three rounds each; the median is reported.
//!
//! `cargo bench -p promptops-billing --bench ledger` (PostgreSQL is skipped
//! when `initdb` is missing; `LEDGER_RUNS` sets the runs per round, 20,000).
//! Results: docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: failures abort, results are printed"
)]

use std::time::{Duration, Instant};

use promptops_billing::ledger::UsageLedger;
use promptops_eventlog::projection::Projection;
use promptops_eventlog::{Context, EventEnvelope, RecordedEvent};
use promptops_platform::config::DatabaseConfig;
use promptops_platform::paging::timestamp_from_ms;
use promptops_proto::common::v1::{Actor, ActorKind, TokenPrices};
use promptops_proto::execution::v1 as execution;
use prost::Message as _;
use sqlx::AnyPool;

const START_MS: i64 = 1_796_169_600_000;

fn envelope(run_id: &str, event_type: &str, at_ms: i64, payload: Vec<u8>) -> EventEnvelope {
    EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        org_id: "org-bench".into(),
        aggregate_type: "run".into(),
        aggregate_id: run_id.to_owned(),
        aggregate_version: 1,
        actor: Some(Actor {
            kind: ActorKind::ApiKey as i32,
            id: format!("key-{}", at_ms % 7),
        }),
        occurred_at: Some(timestamp_from_ms(at_ms)),
        payload,
        ..EventEnvelope::default()
    }
}

/// `runs` runs, started and completed, from sequence `first` on.
fn runs(round: usize, runs: usize, first: u64) -> Vec<RecordedEvent> {
    let mut events = Vec::with_capacity(runs * 2);
    let mut sequence = first;
    for i in 0..runs {
        let run_id = format!("run-{round}-{i}");
        let at = START_MS + i as i64;
        let started = execution::ExecutionStarted {
            run_id: run_id.clone(),
            prompt_id: format!("prompt-{}", i % 20),
            prompt_version: 1 + (i % 3) as u64,
            model: "openai/gpt-4o".into(),
            input_tokens_counted: 500,
            ..Default::default()
        };
        let completed = execution::ExecutionCompleted {
            run_id: run_id.clone(),
            usage: Some(execution::Usage {
                input_tokens: 500,
                output_tokens: 200,
                cached_input_tokens: 100,
                ..Default::default()
            }),
            cost_nano_usd: 3_125_000,
            model: "openai/gpt-4o".into(),
            prices: Some(TokenPrices {
                input_per_mtok: 2_500_000,
                output_per_mtok: 10_000_000,
                cached_input_per_mtok: 1_250_000,
                cache_write_per_mtok: 0,
            }),
            ..Default::default()
        };
        for (event_type, payload, at) in [
            (
                "promptops.execution.v1.ExecutionStarted",
                started.encode_to_vec(),
                at,
            ),
            (
                "promptops.execution.v1.ExecutionCompleted",
                completed.encode_to_vec(),
                at + 1,
            ),
        ] {
            sequence += 1;
            events.push(RecordedEvent {
                context: Context::Execution,
                sequence,
                subject: format!("evt.execution.org-bench.run.{run_id}"),
                envelope: envelope(&run_id, event_type, at, payload),
            });
        }
    }
    events
}

async fn apply_all(db: &AnyPool, events: &[RecordedEvent]) -> Duration {
    let projection = UsageLedger;
    let started = Instant::now();
    for batch in events.chunks(256) {
        let mut tx = db.begin().await.unwrap();
        let events: Vec<&RecordedEvent> = batch.iter().collect();
        projection.apply_batch(&mut tx, &events).await.unwrap();
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, stream, position, updated_at_ms) VALUES ($1, $2, $3, 0)
             ON CONFLICT (projection, stream) DO UPDATE SET position = $3",
        )
        .bind(projection.name())
        .bind("EVT_EXECUTION")
        .bind(batch.last().unwrap().sequence as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    started.elapsed()
}

async fn bench(backend: &str, db: AnyPool, per_round: usize) {
    let mut rates = Vec::new();
    let mut first = 0;
    for round in 0..3 {
        let events = runs(round, per_round, first);
        first += events.len() as u64;
        let took = apply_all(&db, &events).await;
        rates.push(per_round as f64 / took.as_secs_f64());
    }
    let lines: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_lines WHERE status = 'completed'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(lines as usize, 3 * per_round);
    rates.sort_by(f64::total_cmp);
    println!(
        "{backend}: usage ledger {:.0} runs/s median of 3 rounds of {per_round} runs ({:.0} / {:.0} / {:.0}; 2 events a run, 256 events a transaction)",
        rates[1], rates[0], rates[1], rates[2]
    );
}

fn main() {
    let per_round: usize = std::env::var("LEDGER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = promptops_platform::db::open(
            &DatabaseConfig::Sqlite {
                data_dir: dir.path().to_owned(),
            },
            "billing",
            promptops_billing::MIGRATIONS,
        )
        .await
        .unwrap();
        bench("sqlite", sqlite, per_round).await;
        match promptops_testkit::Postgres::start() {
            Ok(pg) => {
                let url = pg.create_database("bench").unwrap();
                let db = promptops_platform::db::open(
                    &DatabaseConfig::Postgres { url },
                    "billing",
                    promptops_billing::MIGRATIONS,
                )
                .await
                .unwrap();
                bench("postgres", db, per_round).await;
            }
            Err(e) => println!("postgres: skipped ({e})"),
        }
    });
}
