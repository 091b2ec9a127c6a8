//! Reconciliation: the ledger's lines against the log's terminal runs.
//!
//! The log is the truth. For a range (by the time a run ended) the org's
//! terminal events are read from `EVT_EXECUTION` up to its current end, the
//! ledger is given until it has applied that position, and the two sets are
//! compared run by run: a terminal run without a line is `missing`, a line
//! without a terminal run `extra`, a line whose cost differs from the run's
//! `cost`, and a line whose cost is not its tokens × its prices `price`.
//! Reading the stream costs O(stream): it is an audit, not a dashboard.

use std::collections::BTreeMap;
use std::time::Duration;

use promptops_eventlog::{Context, EventLog, Start};
use promptops_platform::paging::ms_from_timestamp;
use promptops_proto::billing::v1::{ReconcileGap, ReconcileResponse};
use promptops_proto::execution::v1::{ExecutionCancelled, ExecutionCompleted};
use prost::Message as _;
use sqlx::AnyPool;

use crate::ledger::{self, LineRow};

/// A terminal run as the log says: its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TerminalRun {
    pub cost_nano_usd: i64,
}

/// Compares the log's terminal runs with the ledger's lines (pure).
pub fn compare(
    runs: &BTreeMap<String, TerminalRun>,
    lines: &[LineRow],
    log_position: u64,
) -> ReconcileResponse {
    let mut gaps = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for line in lines {
        seen.insert(line.run_id.as_str());
        match runs.get(&line.run_id) {
            None => gaps.push(ReconcileGap {
                run_id: line.run_id.clone(),
                kind: "extra".into(),
                detail: format!("a {} line with no terminal run in the log", line.status),
            }),
            Some(run) if run.cost_nano_usd != line.cost_nano_usd => gaps.push(ReconcileGap {
                run_id: line.run_id.clone(),
                kind: "cost".into(),
                detail: format!(
                    "the line costs {} nano-USD, the run {}",
                    line.cost_nano_usd, run.cost_nano_usd
                ),
            }),
            Some(_) => {}
        }
        if let Some(prices) = line.prices() {
            let expected = promptops_account::prices::cost_nano_usd(&prices, line.tokens());
            if expected != line.cost_nano_usd {
                gaps.push(ReconcileGap {
                    run_id: line.run_id.clone(),
                    kind: "price".into(),
                    detail: format!(
                        "tokens × the line's prices are {expected} nano-USD, the line says {}",
                        line.cost_nano_usd
                    ),
                });
            }
        }
    }
    for run_id in runs.keys() {
        if !seen.contains(run_id.as_str()) {
            gaps.push(ReconcileGap {
                run_id: run_id.clone(),
                kind: "missing".into(),
                detail: "a terminal run in the log has no ledger line".into(),
            });
        }
    }
    ReconcileResponse {
        terminal_runs: runs.len() as u64,
        ledger_lines: lines.len() as u64,
        runs_cost_nano_usd: runs.values().map(|r| r.cost_nano_usd).sum(),
        ledger_cost_nano_usd: lines.iter().map(|l| l.cost_nano_usd).sum(),
        reconciled: gaps.is_empty(),
        gaps,
        log_position,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("the event log: {0}")]
    Log(#[from] promptops_eventlog::StoreError),
    #[error("the ledger: {0}")]
    Database(#[from] sqlx::Error),
}

/// The org's terminal runs ending in `[from_ms, to_ms)`, read from the log
/// up to `until` (inclusive).
pub async fn terminal_runs(
    log: &EventLog,
    org_id: &str,
    from_ms: i64,
    to_ms: i64,
    until: u64,
) -> Result<BTreeMap<String, TerminalRun>, ReconcileError> {
    let mut runs = BTreeMap::new();
    if until == 0 {
        return Ok(runs);
    }
    let mut tail = log.tail_from(Context::Execution, Start::Beginning).await?;
    loop {
        let batch = tail.next_batch(1_000).await?;
        let mut done = false;
        for delivery in batch {
            let event = delivery.event;
            if event.sequence >= until {
                done = true;
            }
            if event.sequence > until {
                break;
            }
            let e = &event.envelope;
            if e.org_id != org_id || e.aggregate_type != "run" {
                continue;
            }
            let at = ms_from_timestamp(e.occurred_at.as_ref());
            if at < from_ms || at >= to_ms {
                continue;
            }
            let cost = match e.event_type.as_str() {
                "promptops.execution.v1.ExecutionCompleted" => {
                    ExecutionCompleted::decode(e.payload.as_slice())
                        .map(|c| c.cost_nano_usd)
                        .unwrap_or_default()
                }
                "promptops.execution.v1.ExecutionCancelled" => {
                    ExecutionCancelled::decode(e.payload.as_slice())
                        .map(|c| c.cost_nano_usd)
                        .unwrap_or_default()
                }
                "promptops.execution.v1.ExecutionFailed" => 0,
                _ => continue,
            };
            runs.insert(e.aggregate_id.clone(), TerminalRun { cost_nano_usd: cost });
        }
        if done {
            return Ok(runs);
        }
    }
}

/// Reconciles the org's range; `None` when the ledger did not reach the
/// log's current end within `wait`.
pub async fn reconcile(
    log: &EventLog,
    db: &AnyPool,
    org_id: &str,
    from_ms: i64,
    to_ms: i64,
    wait: Duration,
) -> Result<Option<ReconcileResponse>, ReconcileError> {
    let until = log.last_sequence(Context::Execution).await?;
    let runs = terminal_runs(log, org_id, from_ms, to_ms, until).await?;
    let caught_up = promptops_eventlog::projection::wait_for_position(
        db,
        ledger::PROJECTION,
        Context::Execution,
        until,
        wait,
    )
    .await?;
    if !caught_up {
        return Ok(None);
    }
    let lines = ledger::lines_in(db, org_id, from_ms, to_ms).await?;
    Ok(Some(compare(&runs, &lines, until)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(run_id: &str, cost: i64, input: i64, priced: bool) -> LineRow {
        LineRow {
            run_id: run_id.into(),
            status: "completed".into(),
            event_id: String::new(),
            model: "mock/echo".into(),
            prompt_id: String::new(),
            prompt_version: 0,
            user_id: String::new(),
            api_key_id: String::new(),
            input_tokens: input,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            input_price: 1_000_000,
            output_price: 0,
            cached_input_price: 0,
            cache_write_price: 0,
            priced: i64::from(priced),
            cost_nano_usd: cost,
            estimated: 0,
            ended_at_ms: 0,
        }
    }

    #[test]
    fn every_kind_of_gap_is_named_and_an_exact_ledger_reconciles() {
        let runs: BTreeMap<String, TerminalRun> = [("a", 1_000), ("b", 2_000), ("c", 5)]
            .into_iter()
            .map(|(id, cost)| (id.to_owned(), TerminalRun { cost_nano_usd: cost }))
            .collect();
        // 1 input token at 1 USD per 1M = 1,000 nano-USD.
        let exact = [
            line("a", 1_000, 1, true),
            line("b", 2_000, 2, true),
            line("c", 5, 0, false),
        ];
        let ok = compare(&runs, &exact, 9);
        assert!(ok.reconciled, "{:?}", ok.gaps);
        assert_eq!((ok.terminal_runs, ok.ledger_lines), (3, 3));
        assert_eq!(ok.runs_cost_nano_usd, ok.ledger_cost_nano_usd);

        let broken = [
            line("a", 1_000, 1, true),
            line("b", 2_001, 2, true),
            line("x", 0, 0, false),
        ];
        let report = compare(&runs, &broken, 9);
        assert!(!report.reconciled);
        let kinds: Vec<(&str, &str)> = report
            .gaps
            .iter()
            .map(|g| (g.run_id.as_str(), g.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [("b", "cost"), ("b", "price"), ("x", "extra"), ("c", "missing")]
        );
    }
}
