//! The budget check on the hot path: what `prepare` adds to a run when the
//! org has hard budgets: the cached account (moka), the run priced from the
//! price book, and admission against two hard budgets (the org's spend and
//! the API key's requests), then the settlement at the run's end. Credit is
//! taken once before measuring (a chunk covers every iteration), so this is
//! the path a run takes when its replica holds credit: no I/O at all.
//!
//! Measured per call with `Instant` on one task, and on four tasks of a
//! multi-threaded runtime contending for the same two meters.
//!
//! `cargo bench -p promptops-execution --bench budget_check`.
//! Results: docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark binary: failures abort, results are printed"
)]

use std::sync::Arc;
use std::time::Instant;

use promptops_account::account::{self, AccountCommand};
use promptops_eventlog::aggregate::execute;
use promptops_eventlog::embedded::EmbeddedLog;
use promptops_eventlog::{AggregateRef, Context, EventLog, EventMetadata};
use promptops_execution::accounts::Accounts;
use promptops_proto::billing::v1::{Budget, BudgetMetric, BudgetPeriod, BudgetScope};
use promptops_proto::common::v1::{Actor, ActorKind};

const ITERATIONS: u64 = 1_000_000;

fn budget(id: &str, scope: BudgetScope, target: &str, metric: BudgetMetric) -> AccountCommand {
    AccountCommand::SetBudget {
        budget: Budget {
            id: id.into(),
            name: id.into(),
            scope: scope as i32,
            target: target.into(),
            metric: metric as i32,
            period: BudgetPeriod::Month as i32,
            limit: i64::MAX / 4,
            hard: true,
            thresholds: vec![],
        },
        target_exists: true,
        baseline_period_start_ms: 0,
        baseline_used: 0,
    }
}

async fn check(accounts: &Accounts, actor: &Actor) -> std::time::Duration {
    let started = Instant::now();
    let state = accounts.org("org-bench").await.unwrap();
    let spec = Accounts::priced(
        &state,
        promptops_execution::models::find("mock/echo").unwrap().clone(),
        promptops_platform::db::unix_ms(),
    );
    let hold = accounts
        .admit("org-bench", &state, actor, 1_034, 1_551_000)
        .await
        .unwrap();
    std::hint::black_box(&spec);
    hold.settle(40, 11_000);
    started.elapsed()
}

async fn admission_only(
    accounts: &Accounts,
    state: &promptops_account::account::AccountState,
    actor: &Actor,
) -> std::time::Duration {
    let started = Instant::now();
    let hold = accounts
        .admit("org-bench", state, actor, 1_034, 1_551_000)
        .await
        .unwrap();
    hold.settle(40, 11_000);
    started.elapsed()
}

fn report(label: &str, histogram: &hdrhistogram::Histogram<u64>) {
    println!(
        "{label}: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns ({} checks)",
        histogram.value_at_quantile(0.5),
        histogram.value_at_quantile(0.99),
        histogram.value_at_quantile(0.999),
        histogram.max(),
        histogram.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::Embedded(EmbeddedLog::open(&dir.path().join("log.db")).await.unwrap());
        let aggregate = AggregateRef::new(
            Context::Billing,
            "org-bench",
            account::AGGREGATE_TYPE,
            account::AGGREGATE_ID,
        )
        .unwrap();
        for command in [
            budget("org-spend", BudgetScope::Org, "", BudgetMetric::Spend),
            budget(
                "key-requests",
                BudgetScope::ApiKey,
                "key-1",
                BudgetMetric::Requests,
            ),
        ] {
            execute::<account::Account>(&log, &aggregate, command, &EventMetadata::default())
                .await
                .unwrap();
        }
        let accounts = Arc::new(Accounts::new(log));
        let actor = Actor {
            kind: ActorKind::ApiKey as i32,
            id: "key-1".into(),
        };
        // Takes the credit (two appends) and warms the cache.
        for _ in 0..10_000 {
            check(&accounts, &actor).await;
        }
        let mut one = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for _ in 0..ITERATIONS {
            let took = check(&accounts, &actor).await;
            one.record(took.as_nanos() as u64).unwrap();
        }
        report("one task", &one);
        let state = accounts.org("org-bench").await.unwrap();
        let mut admit = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for _ in 0..ITERATIONS {
            admit
                .record(admission_only(&accounts, &state, &actor).await.as_nanos() as u64)
                .unwrap();
        }
        report("admission and settlement only (account in hand)", &admit);

        let tasks = tokio_util::task::TaskTracker::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let (accounts, actor, tx) = (accounts.clone(), actor.clone(), tx.clone());
            tasks.spawn(async move {
                let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
                for _ in 0..ITERATIONS / 4 {
                    h.record(check(&accounts, &actor).await.as_nanos() as u64)
                        .unwrap();
                }
                tx.send(h).unwrap();
            });
        }
        drop(tx);
        tasks.close();
        tasks.wait().await;
        let mut four = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        while let Some(h) = rx.recv().await {
            four.add(h).unwrap();
        }
        report("four tasks, the same two meters", &four);
    });
}
