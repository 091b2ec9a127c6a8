//! Runs left open by a replica that stopped (killed, crashed, lost its node)
//! are closed here, so no run stays unrecorded.
//!
//! A run can take at most the run timeout; one still open at twice that is
//! abandoned: the sweeper appends `ExecutionFailed { error_class:
//! "abandoned" }` with the start's sequence as the expected one. If the
//! replica that owns the run ends it at the same moment, exactly one of the
//! two appends wins; the other sees a conflict and does nothing. Any replica
//! may sweep.

use std::time::Duration;

use promptops_eventlog::{AggregateRef, AppendError, Context, EventLog};
use promptops_platform::caller::event_metadata;
use promptops_platform::db::unix_ms;
use promptops_proto::common::v1::{Actor, ActorKind};
use promptops_proto::execution::v1::{ExecutionFailed, RunStatus};
use sqlx::AnyPool;
use tokio_util::sync::CancellationToken;

use crate::events::{AGGREGATE_TYPE, Recorder, Terminal};

#[derive(Debug, Clone)]
pub struct Sweeper {
    pub log: EventLog,
    pub db: AnyPool,
    /// A run open longer than this is abandoned.
    pub abandon_after: Duration,
}

/// How long after the run timeout an open run counts as abandoned: the
/// timeout again.
pub fn abandon_after(run_timeout: Duration) -> Duration {
    run_timeout * 2
}

impl Sweeper {
    /// Sweeps now and then every quarter of `abandon_after` (0.25-30 s).
    pub async fn run(self, shutdown: CancellationToken) {
        let every = (self.abandon_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
        loop {
            match self.sweep_once().await {
                Ok(0) => {}
                Ok(closed) => tracing::warn!(closed, "closed abandoned runs"),
                Err(err) => {
                    tracing::warn!(error = %err, "sweeping abandoned runs failed; trying again later")
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Closes the runs open longer than `abandon_after`; returns how many.
    pub async fn sweep_once(&self) -> Result<usize, String> {
        let cutoff = unix_ms() - i64::try_from(self.abandon_after.as_millis()).unwrap_or(i64::MAX);
        let open: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT org_id, run_id, created_at_ms FROM runs WHERE status = $1 AND created_at_ms < $2
             ORDER BY created_at_ms LIMIT 100",
        )
        .bind(RunStatus::Running as i64)
        .bind(cutoff)
        .fetch_all(&self.db)
        .await
        .map_err(|e| e.to_string())?;
        let mut closed = 0;
        for (org_id, run_id, created_at_ms) in open {
            let aggregate = AggregateRef::new(Context::Execution, &org_id, AGGREGATE_TYPE, &run_id)
                .map_err(|e| e.to_string())?;
            let events = self
                .log
                .read_aggregate(&aggregate)
                .await
                .map_err(|e| e.to_string())?;
            let [started] = events.as_slice() else {
                continue; // already ended; the read model will catch up
            };
            let metadata = event_metadata(Actor {
                kind: ActorKind::Service as i32,
                id: "execution".into(),
            });
            let recorder = Recorder::new(self.log.clone(), &org_id, &run_id, metadata)?;
            let open_for_ms = unix_ms() - created_at_ms;
            let failed = Terminal::Failed(ExecutionFailed {
                run_id: run_id.clone(),
                error_class: "abandoned".into(),
                message: format!(
                    "the run was still open after {} s: the replica running it stopped",
                    open_for_ms / 1000
                ),
                latency_us: u64::try_from(open_for_ms).unwrap_or(0) * 1000,
            });
            match recorder.ended(started.sequence, &failed).await {
                Ok(_) => {
                    metrics::counter!("promptops_runs_abandoned_total").increment(1);
                    closed += 1;
                }
                Err(AppendError::Conflict { .. }) => {} // its replica ended it after all
                Err(err) => return Err(err.to_string()),
            }
        }
        Ok(closed)
    }
}
