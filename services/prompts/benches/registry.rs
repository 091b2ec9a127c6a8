//! The registry's read paths.
//!
//!     cargo bench --workspace --bench registry
//!
//! 1. Resolve by label in-process, from the replica's cache (what every
//!    gRPC / HTTP resolve does before encoding): the cache lookup, the label
//!    → version selection, and building the answer. 100,000 resolves after
//!    10,000 warm-up, each timed on its own.
//! 2. Listing and search over 10,000 prompts × 10 versions in the catalog
//!    read model (built by the real projection from 100,000 events), on
//!    SQLite and, when `initdb` is installed, on PostgreSQL: 200 queries per
//!    filter, p50 / p95.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "benchmark harness"
)]

use std::time::Instant;

use hdrhistogram::Histogram;
use promptops_eventlog::aggregate::execute;
use promptops_eventlog::embedded::EmbeddedLog;
use promptops_eventlog::projection::Projection;
use promptops_eventlog::{AggregateRef, Context, EventEnvelope, EventLog, EventMetadata, RecordedEvent};
use promptops_platform::config::DatabaseConfig;
use promptops_platform::paging::page_size;
use promptops_prompts::domain::{
    AddVersion, Authorship, CreatePrompt, MoveLabel, PromptCommand, VersionSource, prompt_id_for,
};
use promptops_prompts::events::{self, AGGREGATE_TYPE};
use promptops_prompts::grpc::{resolved, select};
use promptops_prompts::live::Live;
use promptops_prompts::read_model::{self, CatalogProjection, Filter};
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::prompts::v1::{
    PromptCreated, PromptVersion, Template, VersionCreated, VersionInput, template,
};
use prost::Message as _;

fn text(t: &str) -> VersionInput {
    VersionInput {
        template: Some(Template {
            kind: Some(template::Kind::Text(t.to_owned())),
        }),
        ..Default::default()
    }
}

fn report(name: &str, histogram: &Histogram<u64>, unit: &str) {
    let scale = if unit == "µs" { 1_000.0 } else { 1_000_000.0 };
    let at = |q: f64| histogram.value_at_quantile(q) as f64 / scale;
    println!(
        "{name:<52} p50={:.2}{unit} p95={:.2}{unit} p99={:.2}{unit} max={:.2}{unit}",
        at(0.5),
        at(0.95),
        at(0.99),
        histogram.max() as f64 / scale
    );
}

async fn resolve_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("events.db")).await.unwrap());
    let org = "acme";
    let id = prompt_id_for(org, "support", "greeting");
    let aggregate = AggregateRef::new(Context::Prompts, org, AGGREGATE_TYPE, &id).unwrap();
    let metadata = EventMetadata::default();
    let by = Authorship::default();
    let mut commands = vec![PromptCommand::Create(CreatePrompt {
        prompt_id: id.clone(),
        name: "greeting".into(),
        description: String::new(),
        folder: "support".into(),
        tags: vec!["email".into()],
        version: text("Hello {{name}}, version 1. ".repeat(20).as_str()),
        by: by.clone(),
    })];
    for v in 2..=10 {
        commands.push(PromptCommand::AddVersion(AddVersion {
            source: VersionSource::New(text(&format!("Hello {{{{name}}}}, version {v}. ").repeat(20))),
            expected_latest: 0,
            by: by.clone(),
        }));
    }
    commands.push(PromptCommand::MoveLabel(MoveLabel {
        label: "production".into(),
        version: 7,
        reason: String::new(),
        protected: false,
        may_move_protected: false,
    }));
    for command in commands {
        execute::<events::Prompt>(&log, &aggregate, command, &metadata)
            .await
            .unwrap();
    }
    let live = Live::new(log);
    live.snapshot(org, &id).await.unwrap();

    let mut select_only = Histogram::<u64>::new(3).unwrap();
    let mut with_answer = Histogram::<u64>::new(3).unwrap();
    for round in 0..110_000 {
        let started = Instant::now();
        let snapshot = live.snapshot(org, &id).await.unwrap();
        let (version, label) = select(&snapshot.state, "production", 0).unwrap();
        let selected = started.elapsed();
        assert_eq!(version.number, 7);
        let answer = resolved(&snapshot, version, label).unwrap();
        let built = started.elapsed();
        assert_eq!(answer.version.as_ref().map(|v| v.number), Some(7));
        if round >= 10_000 {
            select_only.record(selected.as_nanos().max(1) as u64).unwrap();
            with_answer.record(built.as_nanos().max(1) as u64).unwrap();
        }
    }
    report("resolve by label, cached: lookup + select", &select_only, "µs");
    report(
        "resolve by label, cached: + the answer (ETag, clone)",
        &with_answer,
        "µs",
    );
}

fn envelope(org: &str, id: &str, event_type: &str, payload: Vec<u8>, at_ms: i64) -> EventEnvelope {
    EventEnvelope {
        event_id: uuid::Uuid::now_v7().to_string(),
        event_type: event_type.into(),
        org_id: org.into(),
        aggregate_type: AGGREGATE_TYPE.into(),
        aggregate_id: id.into(),
        actor: Some(Actor {
            kind: ActorKind::User as i32,
            id: "u1".into(),
        }),
        occurred_at: Some(prost_types::Timestamp {
            seconds: at_ms / 1000,
            nanos: ((at_ms % 1000) * 1_000_000) as i32,
        }),
        payload,
        ..Default::default()
    }
}

const PROMPTS: usize = 10_000;
const WORDS: [&str; 8] = [
    "refund",
    "greeting",
    "summary",
    "translate",
    "classify",
    "extract",
    "apology",
    "invoice",
];

async fn catalog(name: &str, config: DatabaseConfig) {
    let pool = promptops_platform::db::open(&config, "prompts", read_model::MIGRATIONS)
        .await
        .unwrap();
    let projection = CatalogProjection;
    let org = "acme";
    let mut sequence = 0;
    let started = Instant::now();
    for chunk in 0..PROMPTS / 500 {
        let mut tx = pool.begin().await.unwrap();
        for i in chunk * 500..(chunk + 1) * 500 {
            let folder = format!("team{}/area{}", i % 10, i % 100);
            let prompt_name = format!("{} prompt {i}", WORDS[i % WORDS.len()]);
            let id = prompt_id_for(org, &folder, &prompt_name);
            for v in 1..=10_u64 {
                sequence += 1;
                let version = PromptVersion {
                    number: v,
                    template: text(&format!(
                        "You handle {} requests, revision {v}. Customer: {{{{customer}}}}",
                        WORDS[(i + v as usize) % WORDS.len()]
                    ))
                    .template,
                    ..Default::default()
                };
                let (event_type, payload) = if v == 1 {
                    (
                        events::PROMPT_CREATED,
                        PromptCreated {
                            prompt_id: id.clone(),
                            name: prompt_name.clone(),
                            description: format!("Prompt number {i}"),
                            folder: folder.clone(),
                            tags: vec![format!("tag{}", i % 50)],
                            first_version: Some(version),
                            ..Default::default()
                        }
                        .encode_to_vec(),
                    )
                } else {
                    (
                        events::VERSION_CREATED,
                        VersionCreated {
                            prompt_id: id.clone(),
                            version: Some(version),
                        }
                        .encode_to_vec(),
                    )
                };
                let event = RecordedEvent {
                    context: Context::Prompts,
                    sequence,
                    subject: String::new(),
                    envelope: envelope(org, &id, event_type, payload, 1_700_000_000_000 + i as i64),
                };
                projection.apply(&mut tx, &event).await.unwrap();
            }
        }
        tx.commit().await.unwrap();
    }
    println!(
        "{name}: projected {sequence} events ({PROMPTS} prompts × 10 versions) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let filters: Vec<(&str, Filter)> = vec![
        ("first page, no filter", Filter::default()),
        (
            "one folder",
            Filter {
                folder: Some("team3/area13".into()),
                ..Default::default()
            },
        ),
        (
            "folder and below (1/10 of all)",
            Filter {
                folder: Some("team3".into()),
                recursive: true,
                ..Default::default()
            },
        ),
        (
            "tag (1/50 of all)",
            Filter {
                tag: Some("tag7".into()),
                ..Default::default()
            },
        ),
        (
            "text in name / template (`refund`)",
            Filter {
                query: Some("REFUND".into()),
                ..Default::default()
            },
        ),
        (
            "text matching one prompt (`prompt 9876`)",
            Filter {
                query: Some("prompt 9876".into()),
                ..Default::default()
            },
        ),
        (
            "text matching nothing (full scan)",
            Filter {
                query: Some("no such words".into()),
                ..Default::default()
            },
        ),
    ];
    for (label, filter) in filters {
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        for round in 0..220 {
            let started = Instant::now();
            let (page, _) = read_model::list(&pool, org, &filter, None, page_size(0))
                .await
                .unwrap();
            if round >= 20 {
                histogram
                    .record(started.elapsed().as_nanos().max(1) as u64)
                    .unwrap();
            }
            assert!(page.len() <= 50);
        }
        report(&format!("{name}: list, {label}"), &histogram, "ms");
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        resolve_in_process().await;
        let dir = tempfile::tempdir().unwrap();
        catalog(
            "SQLite",
            DatabaseConfig::Sqlite {
                data_dir: dir.path().to_path_buf(),
            },
        )
        .await;
        match promptops_testkit::Postgres::start() {
            Ok(postgres) => {
                let url = postgres.create_database("bench").unwrap();
                catalog("PostgreSQL", DatabaseConfig::Postgres { url }).await;
            }
            Err(err) => println!("PostgreSQL skipped: {err}"),
        }
    });
}
