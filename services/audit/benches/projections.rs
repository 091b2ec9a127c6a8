//! Audit and analytics read models on SQLite and on a real PostgreSQL:
//!
//! 1. projection throughput: events through `Projection::apply` in
//!    transactions of 256 with the checkpoint, as the runner commits them
//!    (the log's own read cost is not in it);
//! 2. audit queries over 1,000,000 entries of one org with each filter;
//! 3. a 30-day dashboard (KPIs, top models) over dense buckets.
//!
//! `cargo bench -p promptops-audit --bench projections` (PostgreSQL is
//! skipped when `initdb` is missing; `PROJECTIONS_BACKEND=sqlite|postgres`
//! runs one). Results: docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: failures abort, results are printed"
)]

use std::time::{Duration, Instant};

use promptops_audit::analytics::query::{Slice, totals};
use promptops_audit::analytics::totals::Totals;
use promptops_audit::analytics::{Analytics, BucketRow};
use promptops_audit::trail::{AuditTrail, EntryFilter, list};
use promptops_eventlog::projection::Projection;
use promptops_eventlog::{Context, EventEnvelope, RecordedEvent};
use promptops_platform::config::DatabaseConfig;
use promptops_platform::paging::timestamp_from_ms;
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::execution::v1 as execution;
use promptops_proto::prompts::v1 as prompts;
use prost::Message as _;
use sqlx::AnyPool;

const DAY_MS: i64 = 86_400_000;
const START_MS: i64 = 1_790_000_000_000 / DAY_MS * DAY_MS;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn envelope(
    org: &str,
    event_type: &str,
    aggregate: (&str, &str),
    at_ms: i64,
    payload: Vec<u8>,
) -> EventEnvelope {
    EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.to_owned(),
        schema_version: 1,
        org_id: org.to_owned(),
        aggregate_type: aggregate.0.to_owned(),
        aggregate_id: aggregate.1.to_owned(),
        aggregate_version: 1,
        actor: Some(Actor {
            kind: ActorKind::User as i32,
            id: format!("user-{}", at_ms % 50),
        }),
        occurred_at: Some(timestamp_from_ms(at_ms)),
        correlation_id: uuid::Uuid::now_v7().to_string(),
        causation_id: String::new(),
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        payload,
        client_address: "203.0.113.7".into(),
        user_agent: "bench/1.0".into(),
    }
}

/// Applies events as the runner does: 256 per transaction, with the checkpoint.
async fn apply_all<P: Projection>(db: &AnyPool, projection: &P, events: &[RecordedEvent]) -> Duration {
    let started = Instant::now();
    for batch in events.chunks(256) {
        let mut tx = db.begin().await.unwrap();
        for event in batch {
            projection.apply(&mut tx, event).await.unwrap();
        }
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, stream, position, updated_at_ms) VALUES ($1, $2, $3, 0)
             ON CONFLICT (projection, stream) DO UPDATE SET position = $3",
        )
        .bind(projection.name())
        .bind(batch[0].context.stream_name())
        .bind(batch.last().unwrap().sequence as i64)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    started.elapsed()
}

fn audit_events(n: usize, rng: &mut Rng) -> Vec<RecordedEvent> {
    (0..n)
        .map(|i| {
            let org = format!("org{}", rng.below(10));
            let payload = prompts::LabelMoved {
                label: "production".into(),
                version: 2,
                previous_version: 1,
                reason: "release".into(),
                ..Default::default()
            }
            .encode_to_vec();
            RecordedEvent {
                context: Context::Prompts,
                sequence: i as u64 + 1,
                subject: String::new(),
                envelope: envelope(
                    &org,
                    "promptops.prompts.v1.LabelMoved",
                    ("prompt", &format!("p{}", rng.below(1000))),
                    START_MS + i as i64,
                    payload,
                ),
            }
        })
        .collect()
}

fn run_events(runs: usize, rng: &mut Rng) -> Vec<RecordedEvent> {
    let mut events = Vec::with_capacity(runs * 2);
    for i in 0..runs {
        let org = format!("org{}", rng.below(10));
        let run_id = format!("run{i}");
        let at = START_MS + rng.below(30 * DAY_MS as u64) as i64;
        let started = execution::ExecutionStarted {
            run_id: run_id.clone(),
            prompt_id: format!("prompt{}", rng.below(20)),
            prompt_version: 1 + rng.below(3),
            model: format!("openai/model{}", rng.below(3)),
            ..Default::default()
        };
        let completed = execution::ExecutionCompleted {
            run_id: run_id.clone(),
            usage: Some(execution::Usage {
                input_tokens: 100 + rng.below(900),
                output_tokens: 50 + rng.below(400),
                ..Default::default()
            }),
            cost_nano_usd: 1_000 + rng.below(100_000) as i64,
            latency_us: 20_000 + rng.below(2_000_000),
            time_to_first_token_us: 5_000 + rng.below(500_000),
            model: started.model.clone(),
            ..Default::default()
        };
        for (event_type, payload) in [
            ("promptops.execution.v1.ExecutionStarted", started.encode_to_vec()),
            (
                "promptops.execution.v1.ExecutionCompleted",
                completed.encode_to_vec(),
            ),
        ] {
            events.push(RecordedEvent {
                context: Context::Execution,
                sequence: events.len() as u64 + 1,
                subject: String::new(),
                envelope: envelope(&org, event_type, ("run", &run_id), at, payload),
            });
        }
    }
    events
}

const COLUMNS: &str = "org_id, chain, chain_sequence, event_id, stream_sequence, occurred_at_ms, actor_kind, actor_id, action, resource_type, resource_id, outcome, summary, correlation_id, trace_id, client_address, user_agent, previous_hash, hash, summary_folded";

/// One org's 1,000,000 entries over 90 days (bulk rows shaped as the
/// projection writes them; hashes are placeholders: queries do not read them).
async fn fill_audit(db: &AnyPool, total: usize) {
    const ACTIONS: [&str; 10] = [
        "execution.completed",
        "execution.completed",
        "execution.completed",
        "execution.failed",
        "version.created",
        "label.moved",
        "prompt.created",
        "session.started",
        "api.key.created",
        "member.role.changed",
    ];
    let mut rng = Rng(7);
    let rows_per_insert = 1_000;
    let mut done = 0;
    while done < total {
        let mut tx = db.begin().await.unwrap();
        for _ in 0..20 {
            let n = rows_per_insert.min(total - done);
            if n == 0 {
                break;
            }
            let mut sql = format!("INSERT INTO audit_entries ({COLUMNS}) VALUES ");
            let mut values = Vec::new();
            for r in 0..n {
                let base = r * 20;
                let ps: Vec<String> = (1..=20).map(|k| format!("${}", base + k)).collect();
                sql.push_str(&format!("{}({})", if r == 0 { "" } else { "," }, ps.join(",")));
                let i = done + r;
                let action = ACTIONS[rng.below(ACTIONS.len() as u64) as usize];
                values.push((i, action, rng.below(50), rng.below(5_000)));
            }
            let mut q = sqlx::query(&sql);
            for (i, action, actor, resource) in values {
                let summary = format!("run on openai/gpt-4o completed: {resource} tokens in, {actor} out");
                let outcome = if action == "execution.failed" {
                    "failure"
                } else {
                    "success"
                };
                q = q
                    .bind("bench")
                    .bind("EVT_EXECUTION")
                    .bind(i as i64 + 1)
                    .bind(format!("{:012}", i))
                    .bind(i as i64 + 1)
                    .bind(START_MS + (i as i64 * 90 * DAY_MS) / total as i64)
                    .bind(1_i64)
                    .bind(format!("user-{actor}"))
                    .bind(action)
                    .bind("run")
                    .bind(format!("resource-{resource}"))
                    .bind(outcome)
                    .bind(summary.clone())
                    .bind("c")
                    .bind("t")
                    .bind("")
                    .bind("")
                    .bind("0")
                    .bind("0")
                    .bind(summary.to_lowercase());
            }
            q.execute(&mut *tx).await.unwrap();
            done += n;
        }
        tx.commit().await.unwrap();
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn time_query<F, Fut>(iterations: usize, mut f: F) -> (Duration, Duration)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let started = Instant::now();
        f(i).await;
        samples.push(started.elapsed());
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.95))
}

/// Dense buckets: 3 models × 50 prompt versions, every day, every hour, and
/// every minute of the first and last 3 hours of the period.
async fn fill_buckets(db: &AnyPool) -> usize {
    let mut rng = Rng(11);
    let days = 31;
    let mut rows: Vec<BucketRow> = Vec::new();
    let mut sketch_row = |granularity: &str, start: i64, prompt: usize, model: usize, runs: u64| {
        let mut t = Totals {
            runs,
            completed: runs,
            input_tokens: runs * 500,
            output_tokens: runs * 200,
            cost_nano_usd: runs as i64 * 40_000,
            ..Totals::default()
        };
        for _ in 0..runs.min(200) {
            t.latency.add(20.0 + rng.below(2_000) as f64);
            t.ttft.add(5.0 + rng.below(500) as f64);
        }
        let e = t.encode().unwrap();
        BucketRow {
            granularity: granularity.to_owned(),
            bucket_start_ms: start,
            prompt_id: format!("prompt{}", prompt / 3),
            prompt_version: (prompt % 3) as i64 + 1,
            model: format!("openai/model{model}"),
            runs: runs as i64,
            completed: runs as i64,
            failed: 0,
            cancelled: 0,
            errors: e.errors,
            input_tokens: t.input_tokens as i64,
            output_tokens: t.output_tokens as i64,
            cached_input_tokens: 0,
            cost_nano_usd: t.cost_nano_usd,
            latency: e.latency,
            ttft: e.ttft,
        }
    };
    for prompt in 0..50 {
        for model in 0..3 {
            for d in 0..days {
                rows.push(sketch_row("day", START_MS + d * DAY_MS, prompt, model, 1_440));
            }
            for h in 0..days * 24 {
                rows.push(sketch_row("hour", START_MS + h * 3_600_000, prompt, model, 60));
            }
            for m in (0..180).chain((days * 1_440 - 180)..(days * 1_440)) {
                rows.push(sketch_row("minute", START_MS + m * 60_000, prompt, model, 1));
            }
        }
    }
    let total = rows.len();
    for chunk in rows.chunks(2_000) {
        let mut tx = db.begin().await.unwrap();
        for r in chunk {
            sqlx::query(
                "INSERT INTO analytics_buckets (org_id, granularity, bucket_start_ms, prompt_id, prompt_version, model,
                    runs, completed, failed, cancelled, errors, input_tokens, output_tokens, cached_input_tokens,
                    cost_nano_usd, latency, ttft)
                 VALUES ('dash', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(&r.granularity)
            .bind(r.bucket_start_ms)
            .bind(&r.prompt_id)
            .bind(r.prompt_version)
            .bind(&r.model)
            .bind(r.runs)
            .bind(r.completed)
            .bind(r.failed)
            .bind(r.cancelled)
            .bind(&r.errors)
            .bind(r.input_tokens)
            .bind(r.output_tokens)
            .bind(r.cached_input_tokens)
            .bind(r.cost_nano_usd)
            .bind(&r.latency)
            .bind(&r.ttft)
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }
    total
}

async fn bench(backend: &str, db: AnyPool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let events = audit_events(20_000, &mut rng);
    let took = apply_all(&db, &AuditTrail, &events).await;
    println!(
        "{backend}: audit_trail projection: {} events in {:.2} s = {:.0} events/s",
        events.len(),
        took.as_secs_f64(),
        events.len() as f64 / took.as_secs_f64()
    );
    let events = run_events(10_000, &mut rng);
    let took = apply_all(&db, &Analytics, &events).await;
    println!(
        "{backend}: analytics projection: {} events ({} runs) in {:.2} s = {:.0} events/s",
        events.len(),
        events.len() / 2,
        took.as_secs_f64(),
        events.len() as f64 / took.as_secs_f64()
    );

    let started = Instant::now();
    fill_audit(&db, 1_000_000).await;
    println!(
        "{backend}: filled 1,000,000 entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // As the audit service does hourly: fresh planner statistics.
    sqlx::query("ANALYZE audit_entries").execute(&db).await.unwrap();
    let week_from = START_MS + 40 * DAY_MS;
    let filters: Vec<(&str, EntryFilter)> = vec![
        ("no filter (newest 50)", EntryFilter::default()),
        (
            "7-day range",
            EntryFilter {
                from_ms: Some(week_from),
                to_ms: Some(week_from + 7 * DAY_MS),
                ..Default::default()
            },
        ),
        (
            "actor",
            EntryFilter {
                actor_id: "user-7".into(),
                ..Default::default()
            },
        ),
        (
            "action prefix",
            EntryFilter {
                action_prefix: "label.".into(),
                ..Default::default()
            },
        ),
        (
            "resource",
            EntryFilter {
                resource_id: "resource-4242".into(),
                ..Default::default()
            },
        ),
        (
            "outcome=failure",
            EntryFilter {
                outcome: "failure".into(),
                ..Default::default()
            },
        ),
        (
            "text in summary",
            EntryFilter {
                text: "4242 tokens".into(),
                ..Default::default()
            },
        ),
        (
            "actor + action + 30-day range",
            EntryFilter {
                actor_id: "user-3".into(),
                action_prefix: "execution.".into(),
                from_ms: Some(week_from),
                to_ms: Some(week_from + 30 * DAY_MS),
                ..Default::default()
            },
        ),
    ];
    for (name, filter) in &filters {
        let (p50, p95) = time_query(100, |_| async {
            let (page, _) = list(&db, "bench", filter, None, 50).await.unwrap();
            assert!(!page.is_empty(), "{name}");
        })
        .await;
        println!(
            "{backend}: audit query over 1M, {name}: p50 {:.2} ms, p95 {:.2} ms",
            ms(p50),
            ms(p95)
        );
    }

    let rows = fill_buckets(&db).await;
    let slice = |i: usize| Slice {
        org_id: "dash".into(),
        // Unaligned edges (minute rows at both ends), 30 days.
        from_ms: START_MS + 7 * 60_000 + (i as i64 % 5) * 60_000,
        to_ms: START_MS + 30 * DAY_MS + 53 * 60_000,
        ..Default::default()
    };
    let (p50, p95) = time_query(50, |i| {
        let db = db.clone();
        async move {
            let t = totals(&db, &slice(i)).await.unwrap();
            assert!(t.runs > 0);
        }
    })
    .await;
    println!(
        "{backend}: 30-day KPIs over {rows} bucket rows (150 prompt versions × models): p50 {:.1} ms, p95 {:.1} ms",
        ms(p50),
        ms(p95)
    );
    let (p50, p95) = time_query(50, |i| {
        let db = db.clone();
        async move {
            let groups = promptops_audit::analytics::query::grouped(&db, &slice(i), |r| r.model.clone())
                .await
                .unwrap();
            assert_eq!(groups.len(), 3);
        }
    })
    .await;
    println!(
        "{backend}: 30-day top models: p50 {:.1} ms, p95 {:.1} ms",
        ms(p50),
        ms(p95)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let migrations = promptops_audit::migrations();
        let sqlite = promptops_platform::db::open(
            &DatabaseConfig::Sqlite {
                data_dir: dir.path().to_owned(),
            },
            "audit",
            &migrations,
        )
        .await
        .unwrap();
        let only = std::env::var("PROJECTIONS_BACKEND").unwrap_or_default();
        if only != "postgres" {
            bench("sqlite", sqlite).await;
        }
        if only == "sqlite" {
            return;
        }
        match promptops_testkit::Postgres::start() {
            Ok(pg) => {
                let url = pg.create_database("bench").unwrap();
                let db =
                    promptops_platform::db::open(&DatabaseConfig::Postgres { url }, "audit", &migrations)
                        .await
                        .unwrap();
                println!(
                    "postgres: trigram index on summaries: {}",
                    promptops_audit::trail::create_postgres_text_index(&db).await
                );
                bench("postgres", db).await;
            }
            Err(e) => println!("postgres: skipped ({e})"),
        }
    });
}
